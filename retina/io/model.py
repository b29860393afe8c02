"""The model file: schema version 2 (``format = "retina-model"``).

Root attributes
    ``format`` "retina-model"; ``schema_version`` 2; ``retina_version``;
    ``created`` (ISO 8601, UTC); ``content_hash`` (SHA-256 of architecture and
    arrays, :func:`retina.model.content_hash`); ``history``, ``frame_height``,
    ``frame_width``, ``n_cells``, ``channels1``, ``channels2``;
    ``response_offset`` (bins between a window's newest frame and the bin it
    predicts) and ``input_units`` ("contrast" or "intensity": the units of
    ``norm_stats``).  Schema 1 files (before both) are read as
    ``response_offset`` 1 and ``input_units`` "contrast": every schema-1
    model was trained by :mod:`retina.train` on contrast-unit data, which
    pairs the window ``[i, i + history)`` with bin ``i + history``.
``/weights/{w1,scale1,shift1,w2,scale2,shift2,w3,scale3,shift3}``
    float32 or float64 datasets with the shapes of :class:`retina.RetinaCNN`.
``/norm_stats`` attributes ``mean``, ``std``: the stimulus normalisation the
    model was trained with (its input units, ``docs/units.md``).
``/cells/ids``: one UTF-8 string per cell.
``/provenance``: attributes copied from ``model.metadata``.

Written atomically; no pickled objects are ever read or written.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np

from .._version import __version__
from ..model import PARAM_NAMES, RetinaCNN, content_hash
from ._files import atomic_h5, attr_value, dataset, open_h5

__all__ = ["save_model", "load_model", "bundled_path", "BUNDLED_MODELS", "SCHEMA_VERSION", "MODEL_FORMAT"]

SCHEMA_VERSION = 2
MODEL_FORMAT = "retina-model"
_ARRAYS = PARAM_NAMES


def save_model(model: RetinaCNN, path: str | os.PathLike, *, dtype=None) -> Path:
    """Write ``model`` to ``path`` (HDF5, schema version 2), atomically.

    ``dtype`` (float32 or float64, default float64) is the storage type of the arrays.
    Returns the path.
    """
    import h5py

    dtype = np.dtype(np.float64 if dtype is None else dtype)
    with atomic_h5(path) as f:
        f.attrs.update({
            "format": MODEL_FORMAT, "schema_version": SCHEMA_VERSION, "retina_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "content_hash": content_hash(_as_stored(model, dtype)), "history": model.history,
            "frame_height": model.frame_shape[0], "frame_width": model.frame_shape[1],
            "n_cells": model.n_cells, "channels1": model.shape1[0], "channels2": model.shape2[0],
            "response_offset": int(model.response_offset), "input_units": model.input_units,
        })
        g = f.create_group("weights")
        for name in _ARRAYS:
            g.create_dataset(name, data=np.asarray(getattr(model, name), dtype=dtype))
        ns = f.create_group("norm_stats")
        ns.attrs["mean"] = model.norm_stats["mean"]
        ns.attrs["std"] = model.norm_stats["std"]
        f.create_group("cells").create_dataset("ids", data=np.array(model.cell_ids, dtype=object),
                                               dtype=h5py.string_dtype("utf-8"))
        prov = f.create_group("provenance")
        for k, v in model.metadata.items():
            prov.attrs[str(k)] = attr_value(v)
    return Path(path)


_MAX_ARRAY_BYTES = 1 << 30
"""Largest parameter array a model file may declare (1 GiB; the published models' largest is 0.6 MB)."""


def _declared_shapes(f, path):
    """Every parameter array's shape, from the root attributes and the layer-1/2 kernels' declared shapes,
    before any array is read: a crafted file cannot make the loader allocate what the architecture does not need."""
    try:
        h, w = int(f.attrs["frame_height"]), int(f.attrs["frame_width"])
        hist, n = int(f.attrs["history"]), int(f.attrs["n_cells"])
        c1, c2 = int(f.attrs["channels1"]), int(f.attrs["channels2"])
    except KeyError as exc:
        raise ValueError(f"{str(path)!r} is malformed: root attribute {exc} is missing") from None
    except (TypeError, ValueError):
        raise ValueError(f"{str(path)!r} is malformed: the architecture attributes are not integers") from None
    for name, v in (("frame_height", h), ("frame_width", w), ("history", hist), ("n_cells", n),
                    ("channels1", c1), ("channels2", c2)):
        if not 1 <= v <= 100_000:
            raise ValueError(f"{str(path)!r} is malformed: {name} = {v} is out of range")
    w1 = dataset(f, "weights/w1", path, "model", shape=(c1, hist, None, None), max_bytes=_MAX_ARRAY_BYTES)
    w2 = dataset(f, "weights/w2", path, "model", shape=(c2, c1, None, None), max_bytes=_MAX_ARRAY_BYTES)
    k1, k1w = w1.shape[2:]
    k2, k2w = w2.shape[2:]
    h1, w1_ = h - k1 + 1, w - k1w + 1
    h2, w2_ = h1 - k2 + 1, w1_ - k2w + 1
    if min(h1, w1_, h2, w2_) < 1:
        raise ValueError(f"{str(path)!r} is malformed: kernels {w1.shape[2:]} and {w2.shape[2:]} do not fit the "
                         f"frame ({h}, {w})")

    # scale/shift are per unit (c, h, w) or per channel (c, 1, 1): the spatial sizes are checked by RetinaCNN
    return {"w1": (c1, hist, k1, k1w), "w2": (c2, c1, k2, k2w), "scale1": (c1, None, None),
            "shift1": (c1, None, None), "scale2": (c2, None, None), "shift2": (c2, None, None),
            "w3": (n, c2 * h2 * w2_), "scale3": (n,), "shift3": (n,)}


class _Stored:
    """The arrays of ``model`` as a file of storage type ``dtype`` will give them back (for the content hash)."""

    def __init__(self, model, dtype):
        self.frame_shape, self.history = model.frame_shape, model.history
        for name in _ARRAYS:
            setattr(self, name, np.asarray(getattr(model, name), dtype))


def _as_stored(model, dtype):
    return model if np.dtype(dtype) == np.float64 else _Stored(model, dtype)


BUNDLED_MODELS = {
    "default": "trained on generic stimuli only (retina/recipes/generic.toml: natural movies, white noise, flicker, "
               "flickering bars), the seed with the lowest validation loss, never selected on a phenomenon "
               "(docs/emergence.md)",
    "tuned": "TUNED ON THE PHENOMENON PROTOCOLS (retina/recipes/tuned.toml: protocol-shaped streams, loss boosts "
             "after flashes and reversals, epochs selected on the phenomena): for demonstrating the analyses, not "
             "evidence that the phenomena emerge (docs/history.md)",
}
"""The models shipped with the package, by the name ``load_model`` takes, and what each one is."""


def bundled_path(name):
    """Where the bundled model ``name`` (a key of :data:`BUNDLED_MODELS`) lives in this installation."""
    from importlib import resources

    if name not in BUNDLED_MODELS:
        raise ValueError(f"name must be one of the bundled models {tuple(BUNDLED_MODELS)}, got {name!r}")
    return resources.files("retina") / "data" / f"{name}.h5"


def load_model(path: str | os.PathLike, *, verify_hash: bool = True) -> RetinaCNN:
    """Load a model written by :func:`save_model`, or import one of another toolkit's files.

    ``path`` may also name a bundled model (:data:`BUNDLED_MODELS`: ``"default"``, the generic-stimulus model;
    ``"tuned"``, the protocol-tuned one).  A torch-deep-retina
    checkpoint or deep-retina Keras weights are recognised by their first
    bytes and read by :func:`retina.io.importers.import_model` (never by
    executing the file).  Checks the
    format, the schema version, every array's presence, dtype and shape, and
    (unless ``verify_hash=False``) that the arrays match the stored content
    hash.  Raises ``FileNotFoundError`` or ``ValueError`` naming the problem.
    """
    import h5py

    if isinstance(path, str) and path in BUNDLED_MODELS:
        bundled = bundled_path(path)
        if not bundled.is_file():
            raise FileNotFoundError(f"the bundled {path!r} model is not part of this installation; "
                                    "pass the path of a model file (see `retina train`)")
        path = bundled
    from .importers import detect_format, import_model

    try:
        foreign = Path(path).is_file() and detect_format(path) != "retina"
    except ValueError:
        foreign = False      # not a format the importers know: the checks below say what is wrong
    if foreign:
        return import_model(path)
    with open_h5(path, "model") as f:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode()
        if fmt != MODEL_FORMAT:
            raise ValueError(f"{str(path)!r} is not a retina model file: attribute 'format' is {fmt!r}, "
                             f"expected {MODEL_FORMAT!r}")
        ver = f.attrs.get("schema_version")
        if ver is None or int(ver) < 1 or int(ver) > SCHEMA_VERSION:
            raise ValueError(f"{str(path)!r} has model schema_version {ver}; this retina "
                             f"({__version__}) reads versions 1..{SCHEMA_VERSION}")
        if "weights" not in f or not isinstance(f["weights"], h5py.Group):
            raise ValueError(f"{str(path)!r} is malformed: group '/weights' is missing")
        shapes = _declared_shapes(f, path)
        arrays = {}
        for name in _ARRAYS:
            ds = dataset(f, f"weights/{name}", path, "model", shape=shapes[name], max_bytes=_MAX_ARRAY_BYTES)
            if ds.dtype.kind != "f":
                raise ValueError(f"{str(path)!r} is malformed: '/weights/{name}' must be floating point, "
                                 f"got dtype {ds.dtype}")
            arrays[name] = ds[()]
        try:
            frame_shape = (int(f.attrs["frame_height"]), int(f.attrs["frame_width"]))
        except KeyError as exc:
            raise ValueError(f"{str(path)!r} is malformed: root attribute {exc} is missing") from None
        norm = dict(f["norm_stats"].attrs) if "norm_stats" in f else None
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["cells/ids"][()]] \
            if "cells/ids" in f else None
        meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f["provenance"].attrs.items()} \
            if "provenance" in f else {}
        stored_hash = f.attrs.get("content_hash")
        offset = int(f.attrs.get("response_offset", 1))
        units = f.attrs.get("input_units", "contrast")
        units = units.decode() if isinstance(units, bytes) else str(units)
    try:
        model = RetinaCNN(**arrays, frame_shape=frame_shape, norm_stats=norm, cell_ids=ids, metadata=meta,
                          input_units=units, response_offset=offset)
    except ValueError as exc:
        raise ValueError(f"{str(path)!r} holds inconsistent model arrays: {exc}") from None
    if verify_hash and stored_hash is None:
        raise ValueError(f"{str(path)!r} has no content_hash, so its arrays cannot be checked; load it with "
                         "verify_hash=False only to recover a file you trust")
    if verify_hash:
        if isinstance(stored_hash, bytes):
            stored_hash = stored_hash.decode()
        if content_hash(model) != stored_hash:
            raise ValueError(f"{str(path)!r} failed its content check: the arrays do not match the stored "
                             "content_hash (the file was modified or corrupted)")
    return model
