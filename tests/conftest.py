import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RETINA_NO_PROGRESS", "1")

# The tests exercise the installed package, not the source tree beside them: ``python -m pytest`` puts the
# working directory first on sys.path, which would shadow the installed copy (and hide, say, a data file
# missing from the package).  An editable install (pip install -e .) still maps to the source tree;
# RETINA_TEST_SOURCE=1 tests the checkout itself (bench/gpu_check.sh, on a machine where nothing installs).
REPO = Path(__file__).resolve().parents[1]
if not os.environ.get("RETINA_TEST_SOURCE"):
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO]
try:
    import retina  # noqa: E402, F401
except ImportError as exc:
    raise ImportError(f"the tests need the installed package: pip install '.[test]' in {REPO} ({exc})") from None

from retina import RetinaCNN  # noqa: E402


@pytest.fixture
def rng(request):
    # fresh random inputs per test, reproducible from the test's name
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


def small_model(seed=0, *, n_cells=3, per_unit=True, frame=(17, 19), history=6, kernels=(5, 4),
                channels=(3, 4)):
    """A small random model with non-square frames and odd sizes."""
    return RetinaCNN.random(n_cells, seed, channels=channels, history=history, kernel_sizes=kernels,
                            frame_shape=frame, per_unit=per_unit)


@pytest.fixture(scope="session")
def tiny():
    return small_model()


def tol(dtype):
    return 2e-5 if np.dtype(dtype) == np.float32 else 1e-12


def relerr(a, b):
    """Largest absolute difference over the largest magnitude of ``b`` (complex arrays compared as complex)."""
    a, b = np.asarray(a), np.asarray(b)
    dt = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
    a, b = a.astype(dt), b.astype(dt)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


class KernelRunner:
    """A backend's kernel module called with NumPy arrays (the tests' lingua franca).

    On the GPU every NumPy argument is copied to the device, the kernel runs,
    and every array argument is copied back into the caller's array (outputs
    and in-place state alike), so one test body checks both backends.
    """

    def __init__(self, name, family="kernels"):
        from retina import _backend

        self.name = name
        self.backend = _backend.resolve(name)
        self.module = self.backend.family(family)

    def __getattr__(self, fname):
        f = getattr(self.module, fname)
        if self.name == "cpu":
            return f
        xp = self.backend.xp

        def call(*args, **kwargs):
            dev = [xp.asarray(a) if isinstance(a, np.ndarray)
                   else [xp.asarray(b) for b in a] if isinstance(a, list) and all(isinstance(b, np.ndarray) for b in a)
                   else a for a in args]     # lists of arrays: runs (inputs) or their outputs
            res = f(*dev, **kwargs)
            for a, d in zip(args, dev):
                if isinstance(a, np.ndarray):
                    a[...] = d.get()
                elif isinstance(a, list) and a is not d:
                    for b, e in zip(a, d):
                        b[...] = e.get()
            return res

        return call


def _gpu_reason():
    from retina import _backend

    return _backend._gpu_unavailable_reason()


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def kb(request):
    """The kernels of each backend (GPU cases skip where CuPy or a device is missing)."""
    if request.param == "gpu" and _gpu_reason() is not None:
        pytest.skip(f"no GPU: {_gpu_reason()}")
    return KernelRunner(request.param)
