"""The CUDA kernels' logic checked on the CPU (no GPU needed): ``cuda_host.cpp`` compiles the very
``.cu`` sources as host C++ with one-thread blocks; each kernel must match the float64 references on
random inputs and write every output element (outputs are poisoned with NaN first)."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import naive
import numpy as np
import pytest
from conftest import relerr

from retina.insilico import _cpu as sim_cpu

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler")
    so = tmp_path_factory.mktemp("cuda_host") / "cuda_host.so"
    subprocess.run([cxx, "-std=c++17", "-O1", "-shared", "-fPIC", "-o", str(so), str(HERE / "cuda_host.cpp")],
                   check=True, capture_output=True)
    return ctypes.CDLL(str(so))


def _call(lib, name, *args):
    conv = []
    for a in args:
        if isinstance(a, np.ndarray):
            assert a.flags.c_contiguous
            conv.append(a.ctypes.data_as(ctypes.c_void_p))
        elif isinstance(a, float):
            conv.append(ctypes.c_double(a))
        else:
            conv.append(ctypes.c_int(int(a)))
    getattr(lib, name)(*conv)


def test_layer2_kernels(lib, rng):
    n, ci, h, wd, co, kh, kw = 3, 2, 9, 11, 4, 4, 3
    ho, wo = h - kh + 1, wd - kw + 1
    x = rng.standard_normal((n, ci, h, wd))
    w = rng.standard_normal((co, ci, kh, kw))
    g = rng.standard_normal((n, co, ho, wo))
    out = np.full((n, co, ho, wo), np.nan)
    _call(lib, "h_corr2d_fwd", x, w, out, n, ci, h, wd, co, kh, kw, ho, wo)
    assert relerr(out, naive.corr2d(x, w)) < 1e-12
    out = np.full(x.shape, np.nan)
    _call(lib, "h_corr2d_t", g, w, out, n, ci, h, wd, co, kh, kw, ho, wo)
    assert relerr(out, naive.corr2d_transpose(g, w, h, wd)) < 1e-12
    out = np.full(w.shape, np.nan)
    _call(lib, "h_corr2d_wgrad", x, g, out, n, ci, h, wd, co, kh, kw, ho, wo)
    assert relerr(out, naive.corr2d_weight_grad(x, g, kh, kw)) < 1e-12


def test_layer1_movie_kernels(lib, rng):
    t, h, wd, c, k, kh, kw = 14, 10, 12, 3, 5, 4, 3
    n, ho, wo = t - k + 1, h - kh + 1, wd - kw + 1
    x = rng.standard_normal((t, h, wd))
    w = rng.standard_normal((c, k, kh, kw))
    g = rng.standard_normal((n, c, ho, wo))
    out = np.full((n, c, ho, wo), np.nan)
    _call(lib, "h_corr3d_movie_fwd", x, w, out, t, h, wd, c, k, kh, kw, ho, wo)
    assert relerr(out, naive.corr3d_movie(x, w)) < 1e-12
    out = np.full(x.shape, np.nan)
    _call(lib, "h_corr3d_movie_t", g, w, out, n, c, k, kh, kw, ho, wo, h, wd)
    assert relerr(out, naive.corr3d_movie_transpose(g, w, t, h, wd)) < 1e-12
    out = np.full(w.shape, np.nan)
    _call(lib, "h_corr3d_movie_wgrad", x, g, out, n, c, k, kh, kw, ho, wo, h, wd)
    assert relerr(out, naive.corr3d_movie_weight_grad(x, g, k, kh, kw)) < 1e-12


def test_simulator_kernels(lib, rng):
    t, n_px, n_k, n_s, n_j = 25, 13, 3, 4, 5
    u = lambda *s: rng.uniform(0.1, 0.9, s)  # noqa: E731
    s = rng.standard_normal((t, n_px))
    fixed = (rng.standard_normal(n_k), u(n_k, 2), np.array([2, 4, 3], np.int64), u(n_k), 0.1 * u(n_k), u(n_k),
             0.1 * u(n_k))
    state = (u(n_k, 2, n_s, n_px), u(n_k, n_px))
    ref_state = tuple(a.copy() for a in state)
    ref = np.full((t, n_k, n_px), np.nan)
    sim_cpu.bipolar_block(s, *fixed, *ref_state, ref)
    out = np.full_like(ref, np.nan)
    _call(lib, "h_bipolar_block", s, *fixed, *state, out, t, n_px, n_k, n_s)
    assert relerr(out, ref) < 1e-12
    for a, b in zip(state, ref_state):
        assert relerr(a, b) < 1e-12
    exc, inh = u(t, n_k, n_j), u(t, n_j)
    pars = (u(n_j, n_k), u(n_j), 0.1 * u(n_j), 50 * u(n_j))
    scal = (2.0, 0.8, 0.7, 0.9, 0.05, 0.2, 0.3, 0.95)
    state = (u(n_j), u(n_j), u(n_k + 1, n_j), u(n_j))
    ref_state = tuple(a.copy() for a in state)
    ref = (np.full((t, n_j), np.nan), np.full((t, n_k + 1, n_j), np.nan))
    sim_cpu.ganglion_block(exc, inh, *pars, *scal, *ref_state, *ref)
    got = (np.full((t, n_j), np.nan), np.full((t, n_k + 1, n_j), np.nan))
    _call(lib, "h_ganglion_block", exc, inh, *pars, *scal, *state, *got, t, n_k, n_j)
    for a, b in zip(got + state, ref + ref_state):
        assert relerr(a, b) < 1e-12
