"""The deep-retina dataset layout (``format = "deep-retina"``, schema 1): its reader and its skeleton.

Layout (one file per stimulus class, as the Baccus lab's ``naturalscene.h5`` and
``whitenoise.h5``), with ``T`` frames of 10 ms and ``n`` cells::

    /train/stimulus                    (T, H, W) uint8: contrast c = (value - 127.5) / 127.5
    /train/time                        (T,) seconds
    /train/response/binned             (n, T) spike counts per bin
    /train/response/firing_rate_10ms   (n, T) counts smoothed by a 10 ms Gaussian, in Hz
    /train/response/rate               (n, T) the simulator's noise-free rate (ground truth)
    /train/events/NAME                 (T,) per-frame stimulus events (:data:`retina.datasets.EVENTS`)
    /test/...                          the same for the held-out clips, and
    /test/repeats/cellNN               (repeats, T) spike counts of each repeat (noise ceilings)

:func:`load_dataset` reads this layout whether :func:`retina.datasets.simulate_dataset`
wrote it or the lab's pipeline did (any numeric stimulus dtype; ``rate``,
``repeats`` and ``events`` optional) and z-scores the stimulus as deep-retina
does; :func:`create_layout` makes the empty skeleton the simulator fills.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..units import DT

__all__ = ["Dataset", "CompactMovie", "load_dataset", "uint8_stats", "create_layout", "encode_uint8",
           "decode_uint8", "DATASET_FORMAT", "SCHEMA_VERSION"]

DATASET_FORMAT = "deep-retina"
SCHEMA_VERSION = 1


def encode_uint8(movie):
    """Contrast in [-1, 1] to uint8 (values outside are clipped): ``round(127.5 + 127.5 c)``."""
    return np.clip(np.rint(127.5 + 127.5 * np.asarray(movie, np.float64)), 0, 255).astype(np.uint8)


def decode_uint8(u8):
    """Inverse of :func:`encode_uint8`: float32 contrast."""
    return ((np.asarray(u8, np.float32) - 127.5) / 127.5).astype(np.float32)


def uint8_stats(codes):
    """Mean and s.d. of the contrasts :func:`decode_uint8` gives ``codes``, exactly, from their histogram.

    Counted in integers and summed with :func:`math.fsum`, so the result does
    not depend on the movie's length or on how it is split into blocks.
    """
    import math

    flat = np.asarray(codes).reshape(-1)
    counts = np.zeros(256, np.float64)
    for s in range(0, flat.size, 1 << 24):   # blocks: bincount widens to intp
        counts += np.bincount(flat[s:s + (1 << 24)], minlength=256)
    n = counts.sum()
    values = decode_uint8(np.arange(256, dtype=np.uint8)).astype(np.float64)
    mean = math.fsum(counts * values) / n
    var = math.fsum(counts * (values - mean) ** 2) / n
    return mean, math.sqrt(var)


class CompactMovie:
    """A z-scored (T, H, W) float32 movie held as its file's uint8 codes.

    A stimulus stored as ``uint8-contrast`` takes 256 values, so its z-scored
    frames are a table lookup.  The movie keeps one byte a pixel, a quarter of
    the float32 array, and decodes the frames it is asked for, bit for bit as
    :func:`load_dataset` decodes the whole movie.  A step-1 slice of the first
    axis is a view (still compact); any other index, and ``np.asarray(movie)``,
    gives float32.  Training (:func:`retina.train.train`) samples such a
    movie directly.

    Parameters
    ----------
    codes : ndarray (T, H, W) uint8
    table : ndarray (256,) float32
        The z-scored value of each code.
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, codes, table):
        codes, table = np.asarray(codes), np.asarray(table)
        if codes.dtype != np.uint8 or codes.ndim != 3:
            raise ValueError(f"codes must be a (T, H, W) uint8 array, got dtype {codes.dtype} and shape "
                             f"{codes.shape}")
        if table.shape != (256,) or table.dtype != np.float32:
            raise ValueError(f"table must be a (256,) float32 array, got dtype {table.dtype} and shape "
                             f"{table.shape}")
        self.codes, self.table = codes, table

    @property
    def shape(self):
        return self.codes.shape

    @property
    def nbytes(self):
        return self.codes.nbytes

    def __len__(self):
        return len(self.codes)

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1):
            return CompactMovie(self.codes[key], self.table)
        return np.take(self.table, self.codes[key])

    def __array__(self, dtype=None, copy=None):
        out = np.take(self.table, self.codes)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self):
        return f"CompactMovie(shape={self.shape}, {self.nbytes / 2**20:.1f} MiB as uint8)"


@dataclass
class Dataset:
    """One split of a recording: z-scored stimulus and responses.

    Attributes
    ----------
    stimulus : ndarray (T, H, W) float32 or CompactMovie
        z-scored with ``stats`` (a :class:`CompactMovie` when loaded with
        ``compact=True``).
    rates : ndarray (T, n_cells) float32
        The response used for fitting (``firing_rate_10ms`` unless asked otherwise).
    binned : ndarray (T, n_cells) or None
        Spike counts.
    repeats : ndarray (n_cells, repeats, T) or None
        Spike counts of each repeat (test split).
    true_rate : ndarray (T, n_cells) or None
        The simulator's noise-free rate, when the file has it.
    stats : dict
        ``mean`` and ``std`` used to z-score the stimulus.
    attrs : dict
        The file's root attributes.
    events : dict
        Per-frame stimulus events stored with the data (``SPLIT/events``,
        :func:`frame_events`), e.g. ``flash_onset``; empty when the file has none.
    units : {"contrast", "intensity"}
        The units ``stats`` are in: ``"contrast"`` when the file's stimulus is
        marked ``encoding="uint8-contrast"`` (this package's simulations),
        else ``"intensity"`` (a lab file's raw values).
    """

    stimulus: np.ndarray | CompactMovie
    rates: np.ndarray
    binned: np.ndarray | None = None
    repeats: np.ndarray | None = None
    true_rate: np.ndarray | None = None
    stats: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)
    units: str = "contrast"

    @property
    def n_cells(self):
        return self.rates.shape[1]

    def __len__(self):
        return len(self.stimulus)


def read_movie(ds, what, block=20000):
    """A (T, H, W) numeric dataset as float32, read block by block; ``encoding="uint8-contrast"`` is decoded."""
    if ds.ndim != 3 or ds.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be a numeric (T, H, W) array, got shape {ds.shape} and dtype {ds.dtype}")
    out = np.empty(ds.shape, np.float32)
    contrast = stimulus_units(ds) == "contrast"
    for s in range(0, ds.shape[0], block):
        blk = ds[s:s + block]
        out[s:s + block] = decode_uint8(blk) if contrast else blk
    return out


def _read_stimulus(g, path, split):
    return read_movie(g["stimulus"], f"{path}: '{split}/stimulus'")


def stimulus_units(ds) -> str:
    """``"contrast"`` for a stimulus dataset marked ``encoding="uint8-contrast"``, else ``"intensity"``."""
    enc = ds.attrs.get("encoding")
    enc = enc.decode() if isinstance(enc, bytes) else enc
    return "contrast" if enc == "uint8-contrast" else "intensity"


def load_dataset(path: str | os.PathLike, split: str = "train", *, response: str = "firing_rate_10ms",
                 cells: Sequence[int] | str | None = None, norm_stats: dict | tuple | None = None,
                 nskip: int = 0, compact: bool = False) -> Dataset:
    """Read one split of a deep-retina-layout file and z-score its stimulus.

    Parameters
    ----------
    path : str or Path
        An HDF5 file in the layout above.
    split : {"train", "test"}
    response : str
        Dataset under ``SPLIT/response`` to fit: ``"firing_rate_10ms"`` (default)
        or any other ``firing_rate_*`` the file has (rates in Hz, e.g. the
        5/10/20 ms smoothings of the public recordings), ``"binned"`` (counts
        per bin, converted to Hz) or ``"rate"`` (the simulator's ground truth).
    cells : sequence of int or "all", optional
        Cell indices to keep (default, or ``"all"``: every cell).
    nskip : int
        Frames dropped at the start of the split, stimulus and responses
        alike (the retina adapting to the stimulus), as deep-retina's ``nskip``.
    norm_stats : dict or (mean, std), optional
        Stimulus statistics; default the split's own mean and s.d. (as
        deep-retina), pass the training split's for the test split.  The
        statistics of a ``uint8-contrast`` stimulus are computed exactly from
        its histogram (:func:`uint8_stats`).
    compact : bool
        Keep a ``uint8-contrast`` stimulus as its codes, a :class:`CompactMovie`
        of one byte a pixel that decodes frames as they are read (the same
        float32 values), instead of a float32 array four times its size: for
        training sets that would not fit in memory otherwise.

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, missing keys, mismatched lengths, NaN or negative rates:
        each named, before any training starts.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset file at {str(path)!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(cells, str):
        if cells != "all":
            raise ValueError(f"cells must be a sequence of cell indices or 'all', got {cells!r}")
        cells = None
    from .._validate import check_int

    nskip = check_int("nskip", nskip, minimum=0)
    if not (response in ("binned", "rate") or response.startswith("firing_rate_")):
        raise ValueError(f"response must be 'binned', 'rate' or a 'firing_rate_*' dataset, got {response!r}")
    from .._resources import check_memory
    from ._files import open_h5

    f = open_h5(path, "dataset")          # a regular, self-contained HDF5 file
    with f:
        if split not in f:
            raise ValueError(f"{str(path)!r} has no '{split}' group (found {sorted(f.keys())})")
        g = f[split]
        for key in ("stimulus", "response"):
            if key not in g:
                raise ValueError(f"{str(path)!r} is missing '{split}/{key}'")
        if response not in g["response"]:
            raise ValueError(f"{str(path)!r} has no '{split}/response/{response}' (found "
                             f"{sorted(g['response'].keys())})")
        st = g["stimulus"]
        if not isinstance(st, h5py.Dataset) or st.shape is None or st.ndim != 3:
            raise ValueError(f"{str(path)!r}: '{split}/stimulus' must be a (T, H, W) dataset")
        units = stimulus_units(st)
        coded = units == "contrast" and st.dtype == np.uint8   # decoded through a 256-entry table
        if compact and not coded:
            raise ValueError(f"compact=True needs a uint8 stimulus marked encoding='uint8-contrast'; "
                             f"{str(path)!r}: '{split}/stimulus' has dtype {st.dtype} and units {units!r}")
        pixels = int(np.prod(st.shape, dtype=np.float64))
        check_memory(pixels * (1 if compact else 5 if coded else 8), f"reading '{split}/stimulus' {st.shape}")
        stim = st[()] if coded else _read_stimulus(g, path, split)
        resp = np.asarray(g["response"][response][()], np.float64)
        if resp.ndim == 1:
            resp = resp[None]
        if resp.ndim != 2 or resp.shape[1] != len(stim):
            raise ValueError(f"{str(path)!r}: '{split}/response/{response}' must be (n_cells, T) with T = "
                             f"{len(stim)} stimulus frames, got shape {resp.shape}")
        binned = np.asarray(g["response"]["binned"][()]) if "binned" in g["response"] else None
        true_rate = np.asarray(g["response"]["rate"][()], np.float32) if "rate" in g["response"] else None
        repeats = None
        if "repeats" in g:
            names = sorted(g["repeats"].keys())
            repeats = np.stack([np.asarray(g["repeats"][k][()]) for k in names])
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        events = {}
        if "events" in g:
            for k in g["events"]:
                ev = g["events"][k]
                if ev.shape != (len(stim),):
                    raise ValueError(f"{str(path)!r}: '{split}/events/{k}' must have one value per stimulus frame "
                                     f"({len(stim)}), got shape {ev.shape}")
                events[k] = ev[()]
    if nskip:
        if nskip >= len(stim) - 1:
            raise ValueError(f"nskip={nskip} leaves nothing of the {len(stim)} frames of '{split}'")
        stim, resp = stim[nskip:], resp[:, nskip:]
        binned = binned[:, nskip:] if binned is not None else None
        true_rate = true_rate[:, nskip:] if true_rate is not None else None
        repeats = repeats[..., nskip:] if repeats is not None else None
        events = {k: v[nskip:] for k, v in events.items()}
    if response == "binned":
        resp = resp / DT
    if not np.isfinite(resp).all():
        bad = np.argwhere(~np.isfinite(resp))[0]
        raise ValueError(f"{str(path)!r}: '{split}/response/{response}' has {int((~np.isfinite(resp)).sum())} "
                         f"NaN/inf values (first at cell {bad[0]}, bin {bad[1]})")
    if (resp < 0).any():
        bad = np.argwhere(resp < 0)[0]
        raise ValueError(f"{str(path)!r}: '{split}/response/{response}' has negative rates (first "
                         f"{resp[tuple(bad)]:.3g} at cell {bad[0]}, bin {bad[1]})")
    if not coded and not np.isfinite(stim).all():
        raise ValueError(f"{str(path)!r}: '{split}/stimulus' has NaN/inf values")
    if cells is not None:
        idx = np.atleast_1d(np.asarray(cells, np.int64))
        if idx.size == 0 or idx.min() < 0 or idx.max() >= resp.shape[0]:
            raise ValueError(f"cells must index the file's {resp.shape[0]} cells, got {idx.tolist()}")
        resp = resp[idx]
        binned = binned[idx] if binned is not None else None
        true_rate = true_rate[idx] if true_rate is not None else None
        repeats = repeats[idx] if repeats is not None else None
    if norm_stats is None and coded:
        mean, std = uint8_stats(stim)
        stats = {"mean": mean, "std": std + 1e-7}
    elif norm_stats is None:
        stats = {"mean": float(stim.mean(dtype=np.float64)), "std": float(stim.std(dtype=np.float64)) + 1e-7}
    elif isinstance(norm_stats, dict):
        stats = {"mean": float(norm_stats["mean"]), "std": float(norm_stats["std"])}
    else:
        stats = {"mean": float(norm_stats[0]), "std": float(norm_stats[1])}
    if not stats["std"] > 0:
        raise ValueError(f"the stimulus s.d. must be > 0, got {stats['std']}")
    if coded:   # the same float32 operations as below, on the 256 codes
        table = decode_uint8(np.arange(256, dtype=np.uint8))
        table -= np.float32(stats["mean"])
        table /= np.float32(stats["std"])
        stim = CompactMovie(stim, table) if compact else np.take(table, stim)
    else:
        stim -= np.float32(stats["mean"])
        stim /= np.float32(stats["std"])
    return Dataset(stim, np.ascontiguousarray(resp.T, np.float32),
                   None if binned is None else np.ascontiguousarray(binned.T),
                   repeats, None if true_rate is None else np.ascontiguousarray(true_rate.T), stats, attrs, events,
                   units)


def create_layout(f, splits, frame_shape, n_cells, repeats, events):
    """The empty layout in the open file ``f``: ``splits`` maps ``"train"``/``"test"`` to frame counts;
    ``events`` maps event names to dtypes (one per-frame array each); the test split gets ``repeats``."""
    h, w = frame_shape
    for split, n in splits.items():
        g = f.create_group(split)
        ds = g.create_dataset("stimulus", (n, h, w), np.uint8, chunks=(min(n, 500), h, w) if n else None,
                              compression="gzip" if n else None, compression_opts=1 if n else None)
        ds.attrs["encoding"] = "uint8-contrast"
        g.create_dataset("time", data=np.arange(n) * DT)
        r = g.create_group("response")
        r.create_dataset("binned", (n_cells, n), np.int16)
        r.create_dataset("firing_rate_10ms", (n_cells, n), np.float32)
        r.create_dataset("rate", (n_cells, n), np.float32)
        ev = g.create_group("events")
        for k, dt in events.items():
            ev.create_dataset(k, (n,), dt, fillvalue=np.nan if dt == np.float32 else 0)
    rep = f["test"].create_group("repeats")
    for j in range(n_cells):
        rep.create_dataset(f"cell{j:02d}", (repeats, splits["test"]), np.int16)
