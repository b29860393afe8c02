import os

import numpy as np
import pytest

os.environ.setdefault("RETINA_NO_PROGRESS", "1")

from retina import RetinaCNN  # noqa: E402


@pytest.fixture
def rng(request):
    # fresh random inputs per test, reproducible from the test's name
    seed = abs(hash(request.node.nodeid)) % (2**32)
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
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))
