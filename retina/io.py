"""HDF5 files: models, stimuli and results.  Every write is atomic.

Model file schema, version 1 (``format = "retina-model"``)
-----------------------------------------------------------
Root attributes
    ``format`` "retina-model"; ``schema_version`` 1; ``retina_version``;
    ``created`` (ISO 8601, UTC); ``content_hash`` (SHA-256 of architecture and
    arrays, see :func:`model_hash`); ``history``, ``frame_height``,
    ``frame_width``, ``n_cells``, ``channels1``, ``channels2``.
``/weights/{w1,scale1,shift1,w2,scale2,shift2,w3,scale3,shift3}``
    float32 or float64 datasets with the shapes of :class:`retina.RetinaCNN`.
``/norm_stats`` attributes ``mean``, ``std``: the stimulus normalisation the
    model was trained with.
``/cells/ids``: one UTF-8 string per cell.
``/provenance``: attributes copied from ``model.metadata``.

Files are written to a temporary file in the target directory and renamed
into place, so a crash never leaves a half-written file under the final name.
No pickled objects are ever read or written.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ._version import __version__

__all__ = ["atomic_h5", "load_model", "load_stimulus", "model_hash", "save_model", "save_stimulus",
           "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
MODEL_FORMAT = "retina-model"
STIMULUS_FORMAT = "retina-stimulus"
_ARRAYS = ("w1", "scale1", "shift1", "w2", "scale2", "shift2", "w3", "scale3", "shift3")


@contextlib.contextmanager
def atomic_h5(path, **kwargs):
    """Open an HDF5 file for writing under a temporary name; rename it to ``path`` on success."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w", **kwargs) as f:
            yield f
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from collaborators
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _open_h5(path, what):
    """Open an existing HDF5 file for reading with clear errors."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {str(path)!r}")
    if path.is_dir():
        raise ValueError(f"{what} path must be an HDF5 file, got a directory: {str(path)!r}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{what} file {str(path)!r} is not a readable HDF5 file "
                         f"(truncated, corrupt or another format): {exc}") from None


def model_hash(model) -> str:
    """SHA-256 over the architecture and every parameter array (as float64, C order)."""
    h = hashlib.sha256()
    h.update(json.dumps({"frame_shape": list(model.frame_shape), "history": model.history}).encode())
    for name in _ARRAYS:
        a = np.ascontiguousarray(getattr(model, name), dtype="<f8")
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _attr_value(v):
    if isinstance(v, (str, int, float, bool, np.integer, np.floating)):
        return v
    return json.dumps(v, default=str)


def save_model(model, path, *, dtype=None):
    """Write ``model`` to ``path`` (HDF5, schema version 1), atomically.

    ``dtype`` (float32 or float64, default float64) is the storage type of the arrays.
    Returns the path.
    """
    import h5py

    dtype = np.dtype(np.float64 if dtype is None else dtype)
    with atomic_h5(path) as f:
        f.attrs.update({
            "format": MODEL_FORMAT, "schema_version": SCHEMA_VERSION, "retina_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "content_hash": model_hash(model), "history": model.history,
            "frame_height": model.frame_shape[0], "frame_width": model.frame_shape[1],
            "n_cells": model.n_cells, "channels1": model.shape1[0], "channels2": model.shape2[0],
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
            prov.attrs[str(k)] = _attr_value(v)
    return Path(path)


def _bundled_path(name):
    from importlib import resources
    return resources.files("retina") / "data" / f"{name}.h5"


def load_model(path, *, verify_hash=True):
    """Load a model written by :func:`save_model`.

    ``path`` may also be ``"default"`` for the bundled model.  Checks the
    format, the schema version, every array's presence, dtype and shape, and
    (unless ``verify_hash=False``) that the arrays match the stored content
    hash.  Raises ``FileNotFoundError`` or ``ValueError`` naming the problem.
    """
    from .model import RetinaCNN

    if isinstance(path, str) and path == "default":
        bundled = _bundled_path("default")
        if not bundled.is_file():
            raise FileNotFoundError("the bundled 'default' model is not part of this installation yet; "
                                    "pass the path of a model file (see `retina train`)")
        path = bundled
    with _open_h5(path, "model") as f:
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
        if "weights" not in f:
            raise ValueError(f"{str(path)!r} is malformed: group '/weights' is missing")
        arrays = {}
        for name in _ARRAYS:
            if name not in f["weights"]:
                raise ValueError(f"{str(path)!r} is malformed: dataset '/weights/{name}' is missing")
            ds = f["weights"][name]
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
    try:
        model = RetinaCNN(**arrays, frame_shape=frame_shape, norm_stats=norm, cell_ids=ids, metadata=meta)
    except ValueError as exc:
        raise ValueError(f"{str(path)!r} holds inconsistent model arrays: {exc}") from None
    if verify_hash and stored_hash is not None:
        if isinstance(stored_hash, bytes):
            stored_hash = stored_hash.decode()
        if model_hash(model) != stored_hash:
            raise ValueError(f"{str(path)!r} failed its content check: the arrays do not match the stored "
                             "content_hash (the file was modified or corrupted)")
    return model


# --------------------------------------------------------------------- stimuli
def save_stimulus(path, movie, *, params=None, events=None):
    """Write a movie ``(T, H, W)`` (dataset ``stimulus``) with its parameters and events, atomically."""
    movie = np.asarray(movie)
    with atomic_h5(path) as f:
        f.attrs.update({"format": STIMULUS_FORMAT, "schema_version": SCHEMA_VERSION,
                        "retina_version": __version__})
        f.create_dataset("stimulus", data=movie, chunks=True, compression="gzip", compression_opts=1)
        g = f.create_group("params")
        for k, v in (params or {}).items():
            g.attrs[str(k)] = _attr_value(v)
        ev = f.create_group("events")
        for k, v in (events or {}).items():
            ev.create_dataset(str(k), data=np.asarray(v))
    return Path(path)


def load_stimulus(path, *, dataset=None):
    """Read a movie from an HDF5 file.

    Looks for ``dataset`` if given, else ``stimulus``, then the deep-retina
    layouts ``test/stimulus`` and ``train/stimulus``.  Returns a float32 array
    ``(T, H, W)``.
    """
    with _open_h5(path, "stimulus") as f:
        keys = [dataset] if dataset else ["stimulus", "test/stimulus", "train/stimulus"]
        for k in keys:
            if k in f:
                ds = f[k]
                if ds.ndim != 3 or ds.dtype.kind not in "biuf":
                    raise ValueError(f"stimulus dataset {k!r} in {str(path)!r} must be a numeric (T, H, W) "
                                     f"array, got shape {ds.shape} and dtype {ds.dtype}")
                return np.asarray(ds[()], dtype=np.float32)
    raise ValueError(f"no stimulus dataset in {str(path)!r}: looked for {keys}")
