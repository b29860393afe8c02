"""Every CPU kernel against the float64 references of ``naive.py``."""

import numpy as np
import pytest
from conftest import relerr, tol

import naive
from retina.kernels import cpu

DTYPES = [np.float32, np.float64]
# (T, H, W, C, K, kh, kw): square/non-square frames, odd sizes, K != 40, one channel
SHAPES3 = [(12, 11, 11, 2, 5, 4, 4), (9, 13, 10, 3, 3, 5, 2), (7, 6, 9, 1, 7, 1, 3), (45, 20, 18, 2, 40, 6, 7)]
SHAPES2 = [(3, 2, 12, 12, 3, 5, 5), (1, 4, 9, 14, 2, 3, 6), (2, 1, 7, 5, 1, 1, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES3)
def test_corr3d_movie_direct_and_fft(rng, dtype, shape):
    t, h, wd, c, k, kh, kw = shape
    x = rng.standard_normal((t, h, wd)).astype(dtype)
    w = rng.standard_normal((c, k, kh, kw)).astype(dtype)
    ref = naive.corr3d_movie(x, w)
    out = np.full(ref.shape, np.nan, dtype)
    cpu.corr3d_movie(x, w, out)
    assert relerr(out, ref) < tol(dtype)
    for chunk in (1, 3, 1000):
        out = np.full(ref.shape, np.nan, dtype)
        cpu.corr3d_movie_fft(x, w, out, chunk=chunk)
        assert out.dtype == dtype
        assert relerr(out, ref) < tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES3)
def test_corr3d_movie_transpose(rng, dtype, shape):
    t, h, wd, c, k, kh, kw = shape
    w = rng.standard_normal((c, k, kh, kw)).astype(dtype)
    g = rng.standard_normal((t - k + 1, c, h - kh + 1, wd - kw + 1)).astype(dtype)
    ref = naive.corr3d_movie_transpose(g, w, t, h, wd)
    for f in (cpu.corr3d_movie_transpose, cpu.corr3d_movie_transpose_fft):
        out = np.full(ref.shape, np.nan, dtype)
        f(g, w, out)
        assert relerr(out, ref) < tol(dtype)
    # adjoint identity <corr(x), g> == <x, corr^T(g)>
    x = rng.standard_normal((t, h, wd))
    assert np.isclose(np.vdot(naive.corr3d_movie(x, w), g), np.vdot(x, ref), rtol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES3[:3])
def test_corr3d_movie_weight_grad(rng, dtype, shape):
    t, h, wd, c, k, kh, kw = shape
    x = rng.standard_normal((t, h, wd)).astype(dtype)
    g = rng.standard_normal((t - k + 1, c, h - kh + 1, wd - kw + 1)).astype(dtype)
    ref = naive.corr3d_movie_weight_grad(x, g, k, kh, kw)
    out = np.full(ref.shape, np.nan, dtype)
    cpu.corr3d_movie_weight_grad(x, g, out)
    assert relerr(out, ref) < tol(dtype)
    out_fft = np.full(ref.shape, np.nan, dtype)
    cpu.corr3d_movie_weight_grad_fft(x, g, out_fft)
    assert relerr(out_fft, ref) < 5 * tol(dtype)  # FFT rounding grows with the transform length
    # finite differences of L(w) = <corr(x, w), g> (linear, so central differences are exact up to rounding)
    w = rng.standard_normal((c, k, kh, kw))
    idx = tuple(rng.integers(0, s) for s in w.shape)
    e = np.zeros_like(w)
    e[idx] = 1e-3
    fd = (np.vdot(naive.corr3d_movie(x, w + e), g) - np.vdot(naive.corr3d_movie(x, w - e), g)) / 2e-3
    assert np.isclose(fd, ref[idx], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES2)
def test_corr2d_forward_transpose_weight_grad(rng, dtype, shape):
    n, ci, h, wd, co, kh, kw = shape
    x = rng.standard_normal((n, ci, h, wd)).astype(dtype)
    w = rng.standard_normal((co, ci, kh, kw)).astype(dtype)
    ref = naive.corr2d(x, w)
    out = np.full(ref.shape, np.nan, dtype)
    cpu.corr2d(x, w, out)
    assert relerr(out, ref) < tol(dtype)

    g = rng.standard_normal(ref.shape).astype(dtype)
    ref_t = naive.corr2d_transpose(g, w, h, wd)
    out_t = np.full(ref_t.shape, np.nan, dtype)
    cpu.corr2d_transpose(g, w, out_t)
    assert relerr(out_t, ref_t) < tol(dtype)
    assert np.isclose(np.vdot(ref, g), np.vdot(x.astype(float), ref_t), rtol=1e-9)

    ref_w = naive.corr2d_weight_grad(x, g, kh, kw)
    out_w = np.full(ref_w.shape, np.nan, dtype)
    cpu.corr2d_weight_grad(x, g, out_w)
    assert relerr(out_w, ref_w) < tol(dtype)
    idx = tuple(rng.integers(0, s) for s in w.shape)
    e = np.zeros(w.shape)
    e[idx] = 1e-3
    w64 = w.astype(float)
    fd = (np.vdot(naive.corr2d(x, w64 + e), g) - np.vdot(naive.corr2d(x, w64 - e), g)) / 2e-3
    assert np.isclose(fd, ref_w[idx], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_relu_and_dense(rng, dtype):
    z = rng.standard_normal((5, 3, 4, 6)).astype(dtype)
    sc = rng.standard_normal((3, 4, 6)).astype(dtype)
    sh = rng.standard_normal((3, 4, 6)).astype(dtype)
    out = np.full_like(z, np.nan)
    cpu.affine_relu(z, sc, sh, out)
    ref = np.maximum(sc.astype(float) * z + sh, 0)
    assert relerr(out, ref) < tol(dtype)
    assert (out == 0).any() and (out > 0).any()
    x = rng.standard_normal((7, 11)).astype(dtype)
    w = rng.standard_normal((3, 11)).astype(dtype)
    d = np.full((7, 3), np.nan, dtype)
    cpu.dense(x, w, d)
    assert relerr(d, x.astype(float) @ w.T.astype(float)) < tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES2)
def test_corr2d_fft_family(rng, dtype, shape):
    n, ci, h, wd, co, kh, kw = shape
    x = rng.standard_normal((n, ci, h, wd)).astype(dtype)
    w = rng.standard_normal((co, ci, kh, kw)).astype(dtype)
    ref = naive.corr2d(x, w)
    g = rng.standard_normal(ref.shape).astype(dtype)
    out = np.full(ref.shape, np.nan, dtype)
    cpu.corr2d_fft(x, w, out)
    assert relerr(out, ref) < 5 * tol(dtype)
    out_t = np.full(x.shape, np.nan, dtype)
    cpu.corr2d_transpose_fft(g, w, out_t)
    assert relerr(out_t, naive.corr2d_transpose(g, w, h, wd)) < 5 * tol(dtype)
    out_w = np.full(w.shape, np.nan, dtype)
    cpu.corr2d_weight_grad_fft(x, g, out_w)
    assert relerr(out_w, naive.corr2d_weight_grad(x, g, kh, kw)) < 5 * tol(dtype)
