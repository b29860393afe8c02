"""Reading PyTorch checkpoint files without PyTorch and without executing anything they name.

A ``torch.save`` file is a pickle: a program for Python's pickle machine that
may name any importable callable.  :func:`read_torch_checkpoint` runs it on a
:class:`pickle.Unpickler` whose ``find_class`` resolves only an explicit
allow-list (:data:`ALLOWED`): containers, NumPy's own scalar/array/dtype
reconstructors, and PyTorch's tensor-rebuild functions and storage markers,
each mapped to a small function of this module that builds NumPy arrays.
Every other global becomes an inert placeholder class: it is never imported,
and calling it only records its arguments.  The caller gets the loaded object
and the names of the placeholders, and refuses a file whose contents it
needs came from one.

Both layouts are read: the zip archive of torch >= 1.6 (``*/data.pkl`` plus
one stored entry per storage) and the legacy stream (magic number, protocol,
system info, the pickle, the storage keys, then each storage's bytes).  Sizes
are checked against the bytes actually present before anything is allocated.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

__all__ = ["read_torch_checkpoint", "Inert", "TorchFileError", "ALLOWED", "MAX_BYTES"]

MAX_BYTES = 2 << 30
"""Largest checkpoint (bytes) read: far above the published models (under 1 MB)."""

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class TorchFileError(ValueError):
    """A checkpoint file that cannot be read safely (the message names the file and the reason)."""


class Inert:
    """An object from a global outside the allow-list: holds what the pickle passed to it, does nothing."""

    _global = "?"

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<inert {self._global}>"


_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    """A storage marker (``torch.FloatStorage``...): only its element type matters."""

    def __init__(self, name):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    def __init__(self, data: np.ndarray):
        self.data = data


def _rebuild_tensor(storage, offset, size, stride, *rest):
    """``torch._utils._rebuild_tensor_v2``: a strided view of a storage, copied into a NumPy array."""
    if not isinstance(storage, _Storage):
        raise TorchFileError(f"a tensor refers to {type(storage).__name__}, not a storage")
    try:
        offset = int(offset)
        size = tuple(int(s) for s in size)
        stride = tuple(int(s) for s in stride)
    except (TypeError, ValueError):
        raise TorchFileError("a tensor has a malformed offset, size or stride") from None
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise TorchFileError(f"a tensor has an invalid layout: offset {offset}, size {size}, stride {stride}")
    data = storage.data
    if 0 in size:
        return np.zeros(size, data.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= data.size:
        raise TorchFileError(f"a tensor of size {size} reaches element {last} of a storage of {data.size}: "
                             "the file is truncated or corrupt")
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(data[offset:], shape=size, strides=tuple(s * item for s in stride))
    return np.array(view)


def _rebuild_parameter(data, *rest):
    return data


def _ordered_dict(*args):
    return OrderedDict(*args)


def _encode(text, encoding="utf-8"):
    """``_codecs.encode``, as NumPy scalars pickle their bytes: only latin-1 text is accepted."""
    if not isinstance(text, str) or encoding != "latin1":
        raise TorchFileError(f"_codecs.encode is allowed for latin1 text only, got {encoding!r}")
    return text.encode("latin1")


def _scalar(dtype, data):
    """``numpy.core.multiarray.scalar``: a NumPy scalar from its dtype and bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
        raise TorchFileError("a NumPy scalar in the file has an unsupported dtype or payload")
    if len(data) != dtype.itemsize:
        raise TorchFileError(f"a NumPy scalar of dtype {dtype} has {len(data)} bytes, expected {dtype.itemsize}")
    return np.frombuffer(bytes(data), dtype=dtype)[0]


def _dtype(spec, align=False, copy=False):
    dt = np.dtype(spec)
    if dt.hasobject:
        raise TorchFileError("object dtypes are not read from checkpoint files")
    return np.dtype(spec, bool(align), bool(copy))


def _reconstruct(cls, shape, typecode):
    """``numpy.core.multiarray._reconstruct(ndarray, ...)``, then ``__setstate__``: plain arrays only."""
    if cls is not np.ndarray:
        raise TorchFileError(f"only plain NumPy arrays are read, got a {getattr(cls, '__name__', cls)!r}")
    return _SafeArray()


class _SafeArray:
    """Collects an ndarray's pickled state and becomes a real array once it is complete."""

    def __setstate__(self, state):
        try:
            version, shape, dtype, fortran, raw = state
        except (TypeError, ValueError):
            raise TorchFileError("a NumPy array in the file has a malformed state") from None
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(raw, (bytes, bytearray, str)):
            raise TorchFileError("a NumPy array in the file has an object dtype or a non-byte payload")
        if isinstance(raw, str):
            raw = raw.encode("latin1")
        shape = tuple(int(s) for s in shape)
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if need != len(raw):
            raise TorchFileError(f"a NumPy array of shape {shape} and dtype {dtype} has {len(raw)} bytes, "
                                 f"expected {need}")
        arr = np.frombuffer(bytes(raw), dtype=dtype).reshape(shape, order="F" if fortran else "C")
        self.array = np.array(arr)


ALLOWED = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _encode,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    **{("torch", name): None for name in _STORAGE_DTYPES},
}
"""The globals a checkpoint may name, and what each becomes here (``None``: a storage marker)."""


def _materialise(obj, depth=0):
    """Replace the array stand-ins by arrays, through containers (placeholders are left as they are)."""
    if depth > 100:
        raise TorchFileError("the checkpoint nests containers more than 100 deep")
    if isinstance(obj, _SafeArray):
        if not hasattr(obj, "array"):
            raise TorchFileError("a NumPy array in the file has no data")
        return obj.array
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialise(v, depth + 1)
        return out
    if isinstance(obj, list):
        return [_materialise(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_materialise(v, depth + 1) for v in obj)
    return obj


def _nothing(*args):
    return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh, storages, probe=False):
        super().__init__(fh)
        self._storages, self._probe = storages, probe
        self.unknown: set[str] = set()

    def find_class(self, module, name):
        key = (module, name)
        if key in ALLOWED:
            target = ALLOWED[key]
            if target is None:
                return _StorageType(name)
            if self._probe and target in (_rebuild_tensor, _rebuild_parameter):
                return _nothing   # the first pass of a legacy file only learns the storages
            return target
        self.unknown.add(f"{module}.{name}")
        return type(name, (Inert,), {"_global": f"{module}.{name}", "__module__": "retina.io.torch_pickle"})

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchFileError(f"unsupported persistent id {str(pid)[:80]!r}")
        stype, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(stype, _StorageType):
            raise TorchFileError(f"storage {key!r} has an unsupported type")
        return self._storages(key, stype.dtype, numel)


def _load_pickle(data_fh, storages, path, probe=False):
    up = _Unpickler(data_fh, storages, probe)
    try:
        obj = up.load()
    except TorchFileError as exc:
        raise TorchFileError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError, KeyError,
            struct.error, RecursionError, MemoryError) as exc:
        raise TorchFileError(f"{path}: not a readable checkpoint pickle ({type(exc).__name__}: {exc})") from None
    try:
        return _materialise(obj), sorted(up.unknown)
    except TorchFileError as exc:
        raise TorchFileError(f"{path}: {exc}") from None


def _check_numel(key, numel, dtype, available):
    try:
        numel = int(numel)
    except (TypeError, ValueError):
        raise TorchFileError(f"storage {key!r} declares a non-integer size") from None
    if numel < 0 or numel * np.dtype(dtype).itemsize > available:
        raise TorchFileError(f"storage {key!r} declares {numel} elements ({numel * np.dtype(dtype).itemsize} "
                             f"bytes) but the file holds {available} bytes for it: truncated or corrupt")
    return numel


def _read_zip(path, raw):
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
        names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise TorchFileError(f"{path}: a damaged zip archive ({exc})") from None
    pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pkl) != 1:
        raise TorchFileError(f"{path}: a zip archive without exactly one data.pkl (not a torch checkpoint)")
    prefix = pkl[0][: -len("data.pkl")]
    order = "<"
    if prefix + "byteorder" in names:
        bo = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if bo not in ("little", "big"):
            raise TorchFileError(f"{path}: the archive's byteorder record is {bo!r}, expected 'little' or 'big'")
        order = "<" if bo == "little" else ">"
    infos = {i.filename: i for i in zf.infolist()}
    cache: dict[str, np.ndarray] = {}

    def storage(key, dtype, numel):
        name = f"{prefix}data/{key}"
        info = infos.get(name)
        if info is None:
            raise TorchFileError(f"storage {key!r} is missing from the archive")
        if info.file_size > len(raw) or info.compress_size > len(raw):
            raise TorchFileError(f"storage {key!r} declares {info.file_size} bytes in a {len(raw)}-byte file")
        numel = _check_numel(key, numel, dtype, info.file_size)
        if key not in cache:
            try:
                data = zf.read(name)
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise TorchFileError(f"storage {key!r} cannot be read ({exc})") from None
            dt = np.dtype(dtype).newbyteorder(order)
            usable = len(data) - len(data) % dt.itemsize
            cache[key] = np.frombuffer(data[:usable], dtype=dt).astype(np.dtype(dtype).newbyteorder("="))
        arr = cache[key]
        if arr.size < numel:
            raise TorchFileError(f"storage {key!r} holds {arr.size} elements, fewer than its declared {numel}")
        return _Storage(arr[:numel])

    try:
        data_pkl = zf.read(pkl[0])
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise TorchFileError(f"{path}: data.pkl cannot be read ({exc})") from None
    return _load_pickle(io.BytesIO(data_pkl), storage, path)


class _Plain(pickle.Unpickler):
    """For the legacy header and key list: plain data only."""

    def find_class(self, module, name):
        raise TorchFileError(f"the legacy header names {module}.{name}; plain data expected")


def _skip_pickle(fh, path):
    """Advance ``fh`` past one pickle without building anything (``pickletools`` walks its opcodes)."""
    import pickletools

    try:
        for op, _arg, _pos in pickletools.genops(fh):
            if op.name == "STOP":
                return
    except Exception as exc:
        raise TorchFileError(f"{path}: the checkpoint pickle is malformed ({exc})") from None
    raise TorchFileError(f"{path}: the checkpoint pickle has no end")


def _read_legacy(path, raw):
    """The legacy stream: header, the pickle, the storage keys, then per storage an int64 count and its bytes.

    The bytes come after the pickle, so the pickle is read twice: once with
    stand-in storages to learn each storage's element type and size (no
    tensor is built), once with the storages filled in.
    """
    fh = io.BytesIO(raw)
    try:
        magic = _Plain(fh).load()
        protocol = _Plain(fh).load()
        info = _Plain(fh).load()
    except TorchFileError as exc:
        raise TorchFileError(f"{path}: {exc}") from None
    except Exception:
        raise TorchFileError(f"{path}: neither a zip archive nor a legacy torch checkpoint") from None
    if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
        raise TorchFileError(f"{path}: not a torch checkpoint (magic {str(magic)[:40]!r}, protocol {protocol!r})")
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise TorchFileError(f"{path}: the legacy checkpoint's system info does not say little-endian "
                             f"({str(info)[:80]!r}); only little-endian legacy files are read")
    start = fh.tell()
    _skip_pickle(fh, path)
    try:
        keys = _Plain(fh).load()
    except Exception:
        raise TorchFileError(f"{path}: the list of storages after the pickle is missing or corrupt") from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TorchFileError(f"{path}: the list of storages after the pickle is malformed")
    area = fh.tell()

    types: dict[str, np.dtype] = {}
    wanted: dict[str, int] = {}

    def note(key, dtype, numel):
        types.setdefault(key, np.dtype(dtype))
        wanted[key] = max(wanted.get(key, 0), _check_numel(key, numel, dtype, len(raw)))
        return None

    fh.seek(start)
    _load_pickle(fh, note, path, probe=True)
    fh.seek(area)
    data: dict[str, np.ndarray] = {}
    for key in keys:
        head = fh.read(8)
        if len(head) != 8:
            raise TorchFileError(f"{path}: truncated before storage {key!r}")
        (count,) = struct.unpack("<q", head)
        if key not in types:
            raise TorchFileError(f"{path}: storage {key!r} is not referred to by the pickle")
        dt = types[key]
        count = _check_numel(key, count, dt, len(raw) - fh.tell())
        if count < wanted[key]:
            raise TorchFileError(f"{path}: storage {key!r} holds {count} elements, fewer than its declared "
                                 f"{wanted[key]}")
        data[key] = np.frombuffer(fh.read(count * dt.itemsize), dtype=dt.newbyteorder("<")).astype(dt)
    missing = sorted(set(types) - set(data))
    if missing:
        raise TorchFileError(f"{path}: storages {missing[:5]} are referred to but not stored: truncated")
    fh.seek(start)
    return _load_pickle(fh, lambda key, dtype, numel: _Storage(data[key][:int(numel)]), path)


def read_torch_checkpoint(path) -> tuple[object, list[str]]:
    """The object a ``torch.save`` file holds, with tensors as NumPy arrays, and the globals it named
    outside the allow-list (each became an inert placeholder).

    Raises :class:`TorchFileError` (a ``ValueError``) naming the file and the
    problem for anything it cannot read safely.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {str(p)!r}")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise TorchFileError(f"{p}: {size} bytes is larger than the {MAX_BYTES}-byte limit for checkpoints")
    raw = p.read_bytes()
    if raw[:4] == b"PK\x03\x04":
        return _read_zip(p, raw)
    return _read_legacy(p, raw)
