"""The one dispatch point between the science modules and the kernel backends."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np

BACKENDS = ("auto", "cpu", "gpu")

FAMILIES = {
    "kernels": {"cpu": "retina.kernels.cpu", "gpu": "retina.kernels.gpu"},
    "insilico": {"cpu": "retina.insilico._cpu", "gpu": "retina.insilico._gpu"},
}
"""Kernel families and their module per backend: the network's kernels (no science) and the simulator's loops.
A new backend adds one module per family here; a new family (another simulator...) adds one entry."""


@dataclass(frozen=True)
class Backend:
    """A kernel module together with its array module (numpy or cupy)."""

    name: str
    xp: ModuleType
    kernels: ModuleType

    def asarray(self, a, dtype=None):
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_host(self, a):
        return a.get() if hasattr(a, "get") else np.asarray(a)

    def family(self, name):
        """This backend's module of the kernel family ``name`` (:data:`FAMILIES`)."""
        return importlib.import_module(FAMILIES[name][self.name])


def _is_device_array(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(a) -> ModuleType:
    """The array module an array belongs to: ``cupy`` for a device array, else ``numpy``."""
    return importlib.import_module("cupy") if _is_device_array(a) else np


@functools.lru_cache(maxsize=1)
def _gpu_unavailable_reason() -> str | None:
    try:
        cupy = importlib.import_module("cupy")
    except Exception as exc:  # ImportError, or a broken CUDA install
        return f"CuPy could not be imported ({exc}); install the 'gpu' extra: pip install 'retina[gpu]'"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy found no CUDA device"
    except Exception as exc:
        return f"CuPy found no usable CUDA device ({exc})"
    try:
        importlib.import_module("retina.kernels.gpu")
    except ImportError as exc:
        return f"the GPU kernels are not available in this build ({exc})"
    return None


def resolve(backend: str = "auto", *arrays) -> Backend:
    """Pick the kernel backend for a call.

    ``"cpu"`` always works.  ``"gpu"`` needs CuPy and a CUDA device and raises
    ``RuntimeError`` saying which is missing.  ``"auto"`` follows the data: a
    CuPy input runs on the GPU; otherwise the GPU is used when it is
    available, else the CPU.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cpu":
        if any(_is_device_array(a) for a in arrays):
            raise ValueError("backend='cpu' was asked for, but an input is a CuPy (device) array; "
                             "pass numpy arrays or use backend='gpu'")
        from .kernels import cpu
        return Backend("cpu", np, cpu)
    reason = _gpu_unavailable_reason()
    if backend == "gpu" or any(_is_device_array(a) for a in arrays):
        if reason is not None:
            raise RuntimeError(f"backend='gpu' is not available: {reason}")
    if reason is None:
        import cupy

        from .kernels import gpu
        return Backend("gpu", cupy, gpu)
    from .kernels import cpu
    return Backend("cpu", np, cpu)
