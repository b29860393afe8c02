"""Simulated training and test sets in the deep-retina layout (``docs/formats.md``; :mod:`retina.io.dataset`).

:func:`simulate_dataset` runs the in-silico retina over generated stimuli of
one kind (:data:`KINDS`) and writes the layout chunk by chunk, atomically
(``PATH.partial`` then rename) and resumably (a rerun with the same settings
continues after the last finished chunk), with each frame's stimulus events
(:data:`EVENTS`).  :func:`load_dataset` (from :mod:`retina.io.dataset`) reads
it, or a recording in the same layout.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ._validate import check_int
from ._version import __version__
from .insilico import InSilicoRetina
from .io import close_partial, finish_partial, open_partial
from .io.dataset import DATASET_FORMAT, Dataset, create_layout, decode_uint8, encode_uint8, load_dataset
from .io.dataset import SCHEMA_VERSION as DATASET_SCHEMA
from .stimuli import bar_motion, bar_noise, flash_sequence, full_field_noise, natural_movie, white_noise
from .units import DT

__all__ = ["Dataset", "load_dataset", "simulate_dataset", "simulated_params", "simulator_provenance", "encode_uint8",
           "decode_uint8", "frame_events", "KINDS", "EVENTS"]

KINDS = {"naturalscene": "natural-like movie (docs/insilico.md section 3)",
         "whitenoise": "binary checkerboard, 1 px checks, +-0.35 contrast",
         "fullfield": "full-field Gaussian flicker, s.d. 0.35 contrast, 20 ms frames",
         "bars": "flickering 2 px bars spanning all rows, binary +-0.35 contrast, 20 ms frames",
         "motion": "moving bars (stimuli.bar_motion): 1-4 px, +-0.3..1 contrast, 0.02-0.6 px/frame, some reversing",
         "flashes": "full-field flashes from grey (stimuli.flash_sequence): 1-4 frames, +-0.05..1 contrast"}


def simulated_params(attrs):
    """The in-silico parameters a ``retina simulate`` file records in its ``settings`` attribute (None if none)."""
    try:
        return json.loads(attrs.get("settings", "{}")).get("params")
    except (TypeError, ValueError, AttributeError):
        return None


def simulator_provenance(dataset, cells=None) -> dict:
    """Model metadata for a fit to a simulated dataset (``retina simulate``): the cells' types and positions and
    the simulator's parameters (:data:`retina.insilico.SIMULATOR_KEY`), so that ``retina explain`` compares the
    model with the simulator it was fitted to.  ``cells``: the indices of the cells fitted (default all).
    Empty for other files (a lab recording)."""
    from .insilico import SIMULATOR_KEY

    attrs = getattr(dataset, "attrs", None) or {}
    if attrs.get("generator") != "retina simulate":
        return {}
    out = {}
    for k in ("cell_types", "cell_positions"):
        if k in attrs:
            values = json.loads(str(attrs[k]))
            out[k] = json.dumps(values if cells is None else [values[int(i)] for i in cells])
    params = simulated_params(attrs)
    if params:
        out[SIMULATOR_KEY] = json.dumps(params)
    return out


def smooth_rate(counts, sigma_ms=10.0):
    """Spike counts ``(..., T)`` to a rate in Hz smoothed by a Gaussian of ``sigma_ms``.

    The same smoothing as deep-retina's ``firing_rate_10ms``.
    """
    return gaussian_filter1d(np.asarray(counts, np.float64), sigma_ms / (DT * 1e3), axis=-1, mode="nearest") / DT


# ------------------------------------------------------------------ simulating
_GENERATORS = {
    "naturalscene": (natural_movie, {}),
    "fullfield": (full_field_noise, dict(contrast=0.35, hold=2)),
    "bars": (bar_noise, dict(contrast=0.35, width=2, hold=2)),
    "motion": (bar_motion, {}),
    "flashes": (flash_sequence, {}),
    "whitenoise": (white_noise, dict(contrast=0.35, binary=True)),
}


def _stimulus(kind, n_frames, seed, frame_shape, options=None):
    fn, defaults = _GENERATORS[kind]
    return fn(n_frames, frame_shape=frame_shape, seed=seed, **{**defaults, **(options or {})})


def _movie(kind, n_frames, seed, frame_shape, options=None):
    return _stimulus(kind, n_frames, seed, frame_shape, options).movie


EVENTS: dict[str, dict[str, Any]] = {
    "motion": {"bar_center": np.float32, "bar_velocity": np.float32, "reversal": np.int8},
    "flashes": {"flash_onset": np.int8, "flash_contrast": np.float32},
    "naturalscene": {"saccade": np.int8, "object_motion": np.int8},
}
"""The per-frame events each dataset kind stores under ``SPLIT/events`` (kinds not listed store none)."""


def frame_events(kind, stim):
    """A generated stimulus' events as per-frame arrays (the layout of ``SPLIT/events``).

    ``motion``: ``bar_center`` (px, NaN in the gaps), ``bar_velocity``
    (px/frame), ``reversal`` (1 on the first frame after a bar turns back);
    ``flashes``: ``flash_onset`` (1 on each flash's first frame) and
    ``flash_contrast`` (its signed contrast there, NaN elsewhere);
    ``naturalscene``: ``saccade`` (1 where the view jumps) and
    ``object_motion`` (1 during translating-object epochs).
    """
    n, ev = len(stim.movie), stim.events
    if kind == "motion":
        centre, vel = np.asarray(ev["center"], np.float64), np.asarray(ev["velocity"], np.float64)
        inside = ~np.isnan(centre)
        turn = np.zeros(n, np.int8)
        turn[1:] = (np.sign(vel[1:]) * np.sign(vel[:-1]) < 0) & inside[1:] & inside[:-1]
        return {"bar_center": centre.astype(np.float32), "bar_velocity": vel.astype(np.float32), "reversal": turn}
    if kind == "flashes":
        onset = np.zeros(n, np.int8)
        contrast = np.full(n, np.nan, np.float32)
        frames = np.asarray(ev["flash_frames"], np.int64)
        onset[frames] = 1
        contrast[frames] = ev["intensity"]
        return {"flash_onset": onset, "flash_contrast": contrast}
    if kind == "naturalscene":
        saccade, objects = np.zeros(n, np.int8), np.zeros(n, np.int8)
        saccade[np.asarray(ev["saccade_frames"], np.int64)] = 1
        for a, b in np.asarray(ev["object_frames"], np.int64).reshape(-1, 2):
            objects[a:b] = 1
        return {"saccade": saccade, "object_motion": objects}
    return {}


def _check_options(kind, options):
    """Stimulus options must be keyword arguments of the kind's generator (not its length, shape or seed)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"stimulus_options must be a dict of generator arguments, got {type(options).__name__}")
    fn = _GENERATORS[kind][0]
    allowed = set(inspect.signature(fn).parameters) - {"n_frames", "frame_shape", "seed"}
    bad = sorted(set(options) - allowed)
    if bad:
        raise ValueError(f"stimulus_options {bad} are not arguments of {fn.__name__} (kind {kind!r}); "
                         f"allowed: {sorted(allowed)}")
    opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
    _movie(kind, 2, 0, (4, 4), opts)  # the generator validates the values now, not mid-run
    return opts


def _seed(*keys):
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def _save_state(g, state):
    for k, v in state.items():
        if k in g:
            g[k][...] = v
        else:
            g.create_dataset(k, data=v)


@dataclass
class _SimJob:
    """What a chunk of a simulated dataset needs (sent once to each worker of a cluster)."""

    kind: str
    seed: int
    frame_shape: tuple
    options: dict
    sim: InSilicoRetina
    chunk: int
    n_train: int
    clip: int
    repeats: int


def _train_piece(i, job):
    """Training chunk ``i``'s stateless part: stimulus bytes, the simulator's drive and the events."""
    n = min(job.chunk, job.n_train - i * job.chunk)
    st = _stimulus(job.kind, n, _seed(job.seed, 0, i), job.frame_shape, job.options)
    u8 = encode_uint8(st.movie)
    return u8, job.sim.drive(decode_uint8(u8)), frame_events(job.kind, st)


def _test_piece(i, job):
    """Test clip ``i``, whole: stimulus bytes, rates from the grey-adapted state, events and repeats' spikes."""
    st = _stimulus(job.kind, job.clip, _seed(job.seed, 2, i), job.frame_shape, job.options)
    u8 = encode_uint8(st.movie)
    rate = job.sim.rates(decode_uint8(u8))
    counts = np.random.default_rng(_seed(job.seed, 3, i)).poisson(rate.T[:, None, :] * DT,
                                                                   (job.sim.n_cells, job.repeats, job.clip))
    return u8, rate, frame_events(job.kind, st), counts


def simulate_dataset(path: str | os.PathLike, kind: str = "naturalscene", *, retina: InSilicoRetina | None = None,
                     train_minutes: float = 60.0, test_clips: int = 30, clip_s: float = 10.0, repeats: int = 20,
                     chunk_s: float = 60.0, seed: int = 0, stimulus_options: dict | None = None,
                     progress: bool = False, client=None) -> Path:
    """Simulate a training and test set and write it in the deep-retina layout.

    Parameters
    ----------
    path : str or Path
        Output file (written as ``PATH.partial``, renamed when complete).
    kind : {"naturalscene", "whitenoise", "fullfield", "bars", "motion", "flashes"}
        Stimulus class (``docs/insilico.md`` section 3).
    retina : InSilicoRetina, optional
        The simulator (default: the calibrated one).
    train_minutes : float
        Length of the continuous training stream.
    test_clips, clip_s, repeats : int, float, int
        Held-out test set: ``test_clips`` clips of ``clip_s`` seconds, each
        simulated from the grey-adapted state with ``repeats`` Poisson repeats.
    chunk_s : float
        Seconds simulated and written per step; the unit of resumption.
    seed : int
        Stimuli and spikes follow from it.
    stimulus_options : dict, optional
        Keyword arguments for the kind's generator in :mod:`retina.stimuli`
        (e.g. ``{"speeds": (0.02, 0.25)}`` for ``"motion"``), over the
        kind's defaults; recorded in the file's settings.
    client : dask.distributed.Client, optional
        Make the chunks on the cluster: each training chunk's stimulus and
        the simulator's stateless first stage (:meth:`InSilicoRetina.drive`),
        and each test clip whole.  The training stream is one continuous
        recording, so this process integrates its state chunk by chunk in
        order and writes everything: the file is identical to the
        in-process one.

    Returns
    -------
    Path
        The finished file.
    """
    from .distributed import check_client, map_in_order

    client = check_client(client)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {tuple(KINDS)}, got {kind!r}")
    options = _check_options(kind, stimulus_options)
    sim = retina if retina is not None else InSilicoRetina()
    if not isinstance(sim, InSilicoRetina):
        raise ValueError(f"retina must be an InSilicoRetina, got {type(sim).__name__}")
    for name, value, top in (("train_minutes", train_minutes, 100_000.0), ("clip_s", clip_s, 3_600.0),
                             ("chunk_s", chunk_s, 3_600.0)):
        if not (isinstance(value, (int, float)) and np.isfinite(value) and 0 < value <= top):
            raise ValueError(f"{name} must be a finite number in (0, {top:g}], got {value!r}")
    test_clips = check_int("test_clips", test_clips, minimum=0, maximum=100_000)
    repeats = check_int("repeats", repeats, minimum=1, maximum=100_000)
    check_int("seed", seed, minimum=0)
    chunk = max(1, int(round(chunk_s / DT)))
    clip = max(1, int(round(clip_s / DT)))
    n_train = int(round(train_minutes * 60 / DT))
    n_test = test_clips * clip
    n_cells = sim.n_cells
    h, w = sim.frame_shape
    from ._resources import check_disk, check_memory

    # per chunk: the movie (float64), the drive and the simulator's pathway outputs; a test clip's repeats
    check_memory(chunk * h * w * 8 * 3 + clip * n_cells * repeats * 8 * 2 + clip * h * w * 8 * 3,
                 f"simulating {kind} in chunks of {chunk} frames ({repeats} repeats per test clip)")
    frame_bytes = h * w + n_cells * 10          # uint8 pixels; int16 counts, float32 rate and smoothed rate
    check_disk(path, (n_train + n_test) * frame_bytes + n_test * n_cells * repeats * 2,
               f"the {kind} dataset ({n_train + n_test} frames)")
    settings: dict[str, Any] = dict(
        kind=kind, train_frames=n_train, test_clips=test_clips, clip_frames=clip, repeats=repeats, chunk_frames=chunk,
        seed=int(seed), params=sim.params.to_dict(), lesion=list(sim.lesion), frame_shape=[h, w],
        positions=[list(q) for q in sim.positions], retina_version=__version__)
    if options:
        settings["stimulus_options"] = options
    settings["events"] = sorted(EVENTS.get(kind, {}))
    attrs = dict(generator="retina simulate", kind=kind, cell_types=json.dumps(sim.cell_types),
                 cell_positions=json.dumps([[c.y, c.x] for c in sim.cells]))
    f, created = open_partial(path, settings, fmt=DATASET_FORMAT, schema_version=DATASET_SCHEMA, attrs=attrs)
    if not created and not _heal(f, chunk, n_train, clip, n_cells):
        # the training stream's state cannot be trusted: start the file afresh (same settings, same bytes)
        close_partial(f, path)
        from .io import partial_path

        partial_path(path).unlink()
        f, created = open_partial(path, settings, fmt=DATASET_FORMAT, schema_version=DATASET_SCHEMA, attrs=attrs)
    if created:
        create_layout(f, {"train": n_train, "test": n_test}, (h, w), n_cells, repeats, EVENTS.get(kind, {}))
        f.create_group("_resume").attrs.update(train_done=0, test_done=0)
        _save_state(f["_resume"].create_group("state"), sim.initial_state())
    job = _SimJob(kind, int(seed), (h, w), options, sim, chunk, n_train, clip, repeats)
    complete = False
    try:
        res = f["_resume"]
        state = {k: res["state"][k][()] for k in res["state"]}
        g_train, g_test = f["train"], f["test"]

        def commit_train(i, piece):
            t0 = i * chunk
            u8, drive, events = piece
            n = len(u8)
            rate = sim.run(None, state=state, drive=drive)[0]
            for k, v in events.items():
                g_train["events"][k][t0:t0 + n] = v
            counts = np.random.default_rng(_seed(seed, 1, i)).poisson(rate * DT)
            g_train["stimulus"][t0:t0 + n] = u8
            g_train["response/rate"][:, t0:t0 + n] = rate.T
            g_train["response/binned"][:, t0:t0 + n] = counts.T
            _save_state(res["state"], state)
            res.attrs["train_done"] = i + 1
            f.flush()

        def commit_test(i, piece):
            t0 = i * clip
            u8, rate, events, counts = piece
            for k, v in events.items():
                g_test["events"][k][t0:t0 + clip] = v
            g_test["stimulus"][t0:t0 + clip] = u8
            g_test["response/rate"][:, t0:t0 + clip] = rate.T
            g_test["response/binned"][:, t0:t0 + clip] = counts[:, 0]
            g_test["response/firing_rate_10ms"][:, t0:t0 + clip] = smooth_rate(counts.mean(1))
            for j in range(n_cells):
                g_test["repeats"][f"cell{j:02d}"][:, t0:t0 + clip] = counts[j]
            res.attrs["test_done"] = i + 1
            f.flush()

        n_chunks = -(-n_train // chunk)
        map_in_order(client, _train_piece, range(int(res.attrs["train_done"]), n_chunks), shared=(job,),
                     commit=commit_train, label=lambda i: f"chunk {i}", desc=f"{kind} train", unit="chunk",
                     progress=progress)
        map_in_order(client, _test_piece, range(int(res.attrs["test_done"]), test_clips), shared=(job,),
                     commit=commit_test, label=lambda i: f"clip {i}", desc=f"{kind} test", unit="clip",
                     progress=progress)
        # the training rate is smoothed over the whole stream at the end (no seams at chunk borders)
        tr = f["train/response"]
        tr["firing_rate_10ms"][...] = smooth_rate(tr["binned"][()]).astype(np.float32)
        del f["_resume"]
        complete = True
    finally:
        if complete:
            f.close()
        else:
            close_partial(f, path)   # resumable; the output's lock is released
    return finish_partial(path)


def _heal(f, chunk, n_train, clip, n_cells) -> bool:
    """Check what a resumed partial file says is done really reads back (a kill mid-write can leave chunks
    that do not).  Test clips found unreadable are redone (their counter is lowered); an unreadable training
    chunk or state means the stream must start again (returns False)."""
    from .io import readable

    try:
        res = f["_resume"]
        done = int(res.attrs["train_done"])
        for k in res["state"]:
            if not readable(res["state"][k]):
                return False
        g = f["train"]
        for i in range(done):
            t0, t1 = i * chunk, min((i + 1) * chunk, n_train)
            regions = [(g["stimulus"], np.s_[t0:t1]), (g["response/rate"], np.s_[:, t0:t1]),
                       (g["response/binned"], np.s_[:, t0:t1])]
            regions += [(g["events"][k], np.s_[t0:t1]) for k in g["events"]] if "events" in g else []
            if not all(readable(ds, r) for ds, r in regions):
                return False
        g = f["test"]
        for i in range(int(res.attrs["test_done"])):
            t0, t1 = i * clip, (i + 1) * clip
            regions = [(g["stimulus"], np.s_[t0:t1]), (g["response/rate"], np.s_[:, t0:t1]),
                       (g["response/binned"], np.s_[:, t0:t1]), (g["response/firing_rate_10ms"], np.s_[:, t0:t1])]
            regions += [(g["repeats"][k], np.s_[:, t0:t1]) for k in g["repeats"]]
            if not all(readable(ds, r) for ds, r in regions):
                res.attrs["test_done"] = i
                break
        return True
    except (OSError, KeyError, ValueError, RuntimeError):
        return False
