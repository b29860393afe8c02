"""The file mechanics every format shares: atomic writes, resumable partial files, labelled axes, reading.

* :func:`atomic_h5` and :func:`atomic_text`: write under a temporary name in
  the target directory, ``fsync``, rename into place: a crash never leaves a
  half-written file under the final name.
* :func:`open_partial` / :func:`finish_partial`: the one resumable output.  A
  long run writes ``PATH.partial`` tagged with the hash of its settings; a
  rerun with the same settings reopens it and continues, other settings start
  afresh; the finished file is renamed to ``PATH``.
* :func:`labelled`: a dataset whose axes are HDF5 dimension scales (with
  ``units``), so xarray (``engine="h5netcdf"``), MATLAB or HDFView users see
  named, labelled axes without this package.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .._version import __version__

__all__ = ["atomic_h5", "atomic_text", "atomic_file", "open_h5", "check_regular_file", "check_self_contained",
           "dataset", "open_partial", "finish_partial", "close_partial", "lock_output", "unlock_output", "readable",
           "partial_path", "settings_hash", "labelled", "axis", "write_scalars", "write_labelled", "write_table",
           "attr_value", "text", "check_format"]


def _publish(tmp, path):
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from collaborators
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_orphans(path: Path) -> None:
    """Remove temporary files of ``path`` left by writers that were killed (their process is gone)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:].split(".")
        if parts and parts[0].startswith("pid") and parts[0][3:].isdigit() and not _alive(int(parts[0][3:])):
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def _temporary(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_orphans(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path):
    """A temporary path next to ``path`` to write any file to; renamed to ``path`` on success, removed on failure."""
    with _temporary(path) as tmp:
        yield tmp


@contextlib.contextmanager
def atomic_h5(path, **kwargs):
    """Open an HDF5 file for writing under a temporary name; rename it to ``path`` on success."""
    import h5py

    with _temporary(path) as tmp:
        with h5py.File(tmp, "w", **kwargs) as f:
            yield f


def atomic_text(path, content):
    """Write ``content`` (str) to ``path`` atomically."""
    with _temporary(path) as tmp:
        Path(tmp).write_text(content)
    return Path(path)


MAX_OBJECTS = 100_000
"""Most groups and datasets a file this package reads may hold (a guard against crafted files)."""


def check_regular_file(path, what):
    """``path`` must be an existing regular file (not a directory, FIFO, device or socket: those hang or lie)."""
    import stat

    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {str(path)!r}") from None
    except OSError as exc:
        raise ValueError(f"{what} file {str(path)!r} cannot be examined: {exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{what} path must be an HDF5 file, got a directory: {str(path)!r}")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} path {str(path)!r} is not a regular file (a FIFO, device or socket): refused")
    return path


def check_self_contained(f, path, what):
    """Refuse a file whose contents come from elsewhere: external or soft links, virtual datasets, datasets
    with external raw storage.  Every byte a loader reads must be in this file."""
    import h5py

    count = 0
    stack = [f]
    while stack:
        g = stack.pop()
        for name in g:
            count += 1
            if count > MAX_OBJECTS:
                raise ValueError(f"{what} file {str(path)!r} holds more than {MAX_OBJECTS} objects: refused")
            link = g.get(name, getlink=True)
            full = f"{g.name.rstrip('/')}/{name}"
            if isinstance(link, h5py.ExternalLink):
                raise ValueError(f"{what} file {str(path)!r} links {full!r} to another file "
                                 f"({link.filename}:{link.path}): external links are refused")
            if isinstance(link, h5py.SoftLink):
                raise ValueError(f"{what} file {str(path)!r} has a soft link {full!r} -> {link.path!r}: links "
                                 "are refused (this package never writes them)")
            obj = g.get(name)
            if isinstance(obj, h5py.Group):
                stack.append(obj)
            elif isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    raise ValueError(f"{what} file {str(path)!r}: dataset {full!r} is virtual (its data live in "
                                     "other files): refused")
                if obj.external:
                    raise ValueError(f"{what} file {str(path)!r}: dataset {full!r} keeps its data in external "
                                     f"files {[e[0] for e in obj.external][:3]}: refused")


def open_h5(path, what, *, strict=True):
    """Open an existing HDF5 file for reading, with errors naming ``what`` and the path.

    ``strict`` (default): refuse special files and files whose data come from
    elsewhere (:func:`check_self_contained`).
    """
    import h5py

    path = check_regular_file(path, what)
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise ValueError(f"{what} file {str(path)!r} is not a readable HDF5 file "
                         f"(truncated, corrupt or another format): {exc}") from None
    if strict:
        try:
            check_self_contained(f, path, what)
        except BaseException:
            f.close()
            raise
    return f


def dataset(f, key, path, what, *, shape=None, max_bytes=1 << 31):
    """The dataset ``key`` of an open file, checked before any read: a dataset (not a group), with a shape,
    numeric, of the expected ``shape`` (``None`` entries free) and no larger than ``max_bytes``."""
    import h5py

    obj = f.get(key)
    if obj is None:
        raise ValueError(f"{what} file {str(path)!r} is malformed: '/{key}' is missing")
    if not isinstance(obj, h5py.Dataset):
        raise ValueError(f"{what} file {str(path)!r} is malformed: '/{key}' must be a dataset, got a "
                         f"{type(obj).__name__}")
    if obj.shape is None or obj.dtype.kind not in "biuf":
        raise ValueError(f"{what} file {str(path)!r} is malformed: '/{key}' must be a numeric array, got dtype "
                         f"{obj.dtype} and shape {obj.shape}")
    if shape is not None and (len(shape) != obj.ndim or any(w is not None and w != g for w, g in
                                                            zip(shape, obj.shape))):
        want = "(" + ", ".join("any" if w is None else str(w) for w in shape) + ")"
        raise ValueError(f"{what} file {str(path)!r} is malformed: '/{key}' must have shape {want}, declares "
                         f"{obj.shape}")
    nbytes = int(np.prod(obj.shape, dtype=np.float64)) * obj.dtype.itemsize
    if nbytes > max_bytes:
        raise ValueError(f"{what} file {str(path)!r}: '/{key}' declares {nbytes / 1e9:.3g} GB, more than the "
                         f"{max_bytes / 1e9:.3g} GB allowed for it")
    return obj


def text(v):
    """An attribute value as ``str`` when it is text (h5py may hand back bytes)."""
    return v.decode() if isinstance(v, bytes) else v


def check_format(f, path, expected, versions):
    """Check a file's ``format`` attribute and ``schema_version`` (1 when absent); returns the version."""
    fmt = text(f.attrs.get("format"))
    if fmt != expected:
        raise ValueError(f"{str(path)!r} is not a {expected} file: attribute 'format' is {fmt!r}")
    ver = int(f.attrs.get("schema_version", 1))
    if ver not in versions:
        raise ValueError(f"{str(path)!r} has {expected} schema_version {ver}; this retina ({__version__}) reads "
                         f"versions {min(versions)}..{max(versions)}")
    return ver


def attr_value(v):
    """A value HDF5 can hold as an attribute: numbers and strings as they are, anything else as JSON."""
    if isinstance(v, (str, int, float, bool, np.integer, np.floating, np.bool_)):
        return v
    return json.dumps(v, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ------------------------------------------------------------------ resumable outputs
def partial_path(path):
    path = Path(path)
    return path.with_name(path.name + ".partial")


def settings_hash(settings):
    """SHA-256 of the settings (JSON, sorted keys): what a partial file must match to be resumed."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


_LOCKS: dict[str, object] = {}


def lock_output(path):
    """Take the lock of output ``path`` (``PATH.lock``, an advisory ``flock``): one writer per output.

    A second run on the same output, in this or another process, is refused
    with a clear error; the lock dies with its process, so a killed run
    never leaves a stale one.  Released by :func:`unlock_output`.
    """
    import fcntl

    key = str(Path(path).resolve())
    if key in _LOCKS:
        raise RuntimeError(f"output {str(path)!r} is already being written by this process")
    lock = Path(key + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise RuntimeError(f"output {str(path)!r} is being written by another run (lock {str(lock)!r} is held); "
                           "wait for it to finish, or choose another output") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    _LOCKS[key] = fh
    return lock


def unlock_output(path):
    """Release the lock taken by :func:`lock_output` (no-op when not held) and remove the lock file."""
    import fcntl

    key = str(Path(path).resolve())
    fh = _LOCKS.pop(key, None)
    if fh is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(key + ".lock")
    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    fh.close()


def open_partial(path, settings, *, fmt, schema_version, attrs=None):
    """Open the resumable output ``PATH.partial`` for ``settings``: ``(file, created)``.

    Takes the output's lock first (:func:`lock_output`: a concurrent run on
    the same output is refused, never interleaved).  An existing partial file
    written with the same settings (its ``settings_hash``) is reopened for
    appending (``created`` False); one with other settings, or unreadable, is
    replaced by a new file carrying ``format``, ``schema_version``,
    ``retina_version``, ``settings_hash``, ``settings`` (JSON, for
    provenance) and ``attrs``.  Close it with :func:`close_partial` (or
    finish it with :func:`finish_partial`), which releases the lock.
    """
    import h5py

    partial = partial_path(path)
    partial.parent.mkdir(parents=True, exist_ok=True)
    lock_output(path)
    try:
        digest = settings_hash(settings)
        if partial.exists():
            try:
                f = h5py.File(partial, "a")
            except OSError:
                f = None
            if f is not None:
                try:
                    same = text(f.attrs.get("settings_hash")) == digest
                except (OSError, KeyError):
                    same = False
                if same:
                    return f, False
                f.close()
            partial.unlink()
        f = h5py.File(partial, "w")
        f.attrs.update(format=fmt, schema_version=schema_version, retina_version=__version__,
                       settings_hash=digest, settings=json.dumps(settings, default=str))
        for k, v in (attrs or {}).items():
            f.attrs[k] = attr_value(v)
        f.flush()
        return f, True
    except BaseException:
        unlock_output(path)
        raise


def close_partial(f, path):
    """Close an unfinished partial file (it stays resumable) and release the output's lock."""
    try:
        if f is not None and f.id.valid:
            f.close()
    finally:
        unlock_output(path)


def finish_partial(path):
    """Rename the completed ``PATH.partial`` (closed) to ``PATH``, durably, and release the lock; returns ``PATH``."""
    try:
        _publish(partial_path(path), Path(path))
    finally:
        unlock_output(path)
    return Path(path)


def readable(obj, region=None) -> bool:
    """Whether a dataset (or a region of it) reads back: a run killed mid-write can leave chunks that do not."""
    try:
        obj[region if region is not None else ()]
        return True
    except (OSError, ValueError, KeyError, RuntimeError):
        return False


# ------------------------------------------------------------------ labelled axes
def axis(group, name, values, *, units=None, long_name=None):
    """The dimension-scale dataset ``name`` of ``group`` (created from ``values`` on first use)."""
    import h5py

    if name in group:
        return group[name]
    values = np.asarray(values)
    if values.dtype.kind in "US" or values.dtype == object:
        ds = group.create_dataset(name, data=np.array([str(v) for v in values], dtype=object),
                                  dtype=h5py.string_dtype("utf-8"))
    else:
        ds = group.create_dataset(name, data=values)
    ds.make_scale(name)
    if units:
        ds.attrs["units"] = units
    if long_name:
        ds.attrs["long_name"] = long_name
    return ds


def labelled(group, name, data, dims, *, units=None, long_name=None, **kwargs):
    """Write ``data`` as dataset ``name`` whose axes are the dimension scales ``dims`` (names of datasets
    made by :func:`axis` in the same group, or ``None`` for an unlabelled axis)."""
    import h5py

    data = np.asarray(data)
    if len(dims) != data.ndim:
        raise ValueError(f"{name}: {len(dims)} axis names for {data.ndim} axes")
    if data.dtype.kind in "US" or data.dtype == object:
        ds = group.create_dataset(name, data=np.array(data, dtype=object), dtype=h5py.string_dtype("utf-8"))
    else:
        ds = group.create_dataset(name, data=data.astype(np.int8) if data.dtype == bool else data, **kwargs)
    for i, d in enumerate(dims):
        if d is not None:
            ds.dims[i].attach_scale(group[d])
    if units:
        ds.attrs["units"] = units
    if long_name:
        ds.attrs["long_name"] = long_name
    return ds


def write_scalars(group, values, *, units=None):
    """Scalar datasets, one per plain number of ``values`` (``units``: a name -> unit mapping)."""
    units = units or {}
    for k, v in values.items():
        if isinstance(v, (bool, np.bool_)):
            group.create_dataset(k, data=np.int8(v))
        elif isinstance(v, (int, float, np.integer, np.floating)):
            ds = group.create_dataset(k, data=v)
            if k in units:
                ds.attrs["units"] = units[k]


def write_labelled(group, dim, mapping, name, *, units=None):
    """A mapping label -> number as a labelled 1-D dataset ``name`` over the dimension ``dim``."""
    axis(group, dim, list(mapping))
    return labelled(group, name, np.array([float(v) for v in mapping.values()]) if mapping else np.zeros(0),
                    (dim,), units=units)


def write_table(group, dim, records, *, units=None):
    """Records (dicts with the same keys) as columns over the dimension ``dim`` (its scale: the row number)."""
    units = units or {}
    axis(group, dim, np.arange(len(records)))
    keys = list(records[0]) if records else []
    for k in keys:
        col = [r.get(k) for r in records]
        if all(isinstance(v, (bool, np.bool_)) for v in col):
            data = np.array(col, bool)
        elif all(isinstance(v, (int, float, np.integer, np.floating)) for v in col):
            data = np.array(col, np.float64 if any(isinstance(v, (float, np.floating)) for v in col) else np.int64)
        else:
            data = np.array([v if isinstance(v, str) else json.dumps(v, default=_json_default) for v in col], object)
        labelled(group, k, data, (dim,), units=units.get(k))
