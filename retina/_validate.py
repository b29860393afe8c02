"""Validation at the API boundary: clear errors naming the argument."""

from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def describe(a) -> str:
    """Short description of what was given, for error messages."""
    if isinstance(a, np.ndarray) or hasattr(a, "shape") and hasattr(a, "dtype"):
        return f"array of shape {tuple(a.shape)} and dtype {a.dtype}"
    return f"{type(a).__name__} {a!r}"[:120]


def compute_dtype(dtype, default=np.float32) -> np.dtype:
    """Normalise a compute dtype: float32 (default) or float64."""
    if dtype is None:
        return np.dtype(default)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def as_float_array(name, a, *, ndim=None, shape=None, dtype=None, xp=np, finite=True):
    """Convert ``a`` to a C-contiguous float array, checking ndim, shape and values.

    ``shape`` may hold ``None`` for free axes.  Raises ``ValueError`` naming
    ``name``, the expectation and what was given.
    """
    arr = a
    if not hasattr(arr, "dtype"):
        try:
            arr = np.asarray(arr)
        except Exception:
            raise ValueError(f"{name} must be a numeric array, got {describe(a)}") from None
    kind = np.dtype(arr.dtype).kind
    if kind not in "iuf":
        raise ValueError(f"{name} must be a real numeric array (float or int), got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got {describe(arr)}")
    if shape is not None:
        want = tuple(shape)
        if arr.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, arr.shape)):
            pretty = "(" + ", ".join("any" if w is None else str(w) for w in want) + ")"
            raise ValueError(f"{name} must have shape {pretty}, got {describe(arr)}")
    dt = np.dtype(dtype) if dtype is not None else (
        arr.dtype if arr.dtype in FLOAT_DTYPES else np.dtype(np.float64))
    arr = xp.ascontiguousarray(xp.asarray(arr, dtype=dt))
    if finite and arr.size and not bool(xp.isfinite(arr).all()):
        bad = int((~xp.isfinite(arr)).sum())
        raise ValueError(f"{name} must be finite, but {bad} of its {arr.size} values are NaN or inf")
    return arr


def check_int(name, value, *, minimum=None, maximum=None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value
