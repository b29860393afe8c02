"""Every kernel of every backend against the float64 references of ``naive.py``.

The ``kb`` fixture runs each test on the CPU kernels and, where CuPy and a
CUDA device are present, on the GPU kernels (outputs poisoned with NaN first,
so an element a kernel forgets to write fails the test)."""

import naive
import numpy as np
import pytest
from conftest import KernelRunner, relerr, tol

from retina.insilico import _cpu as sim_cpu
from retina.kernels import cpu

DTYPES = [np.float32, np.float64]
# (T, H, W, C, K, kh, kw): square/non-square frames, odd sizes, K != 40, one channel
SHAPES3 = [(12, 11, 11, 2, 5, 4, 4), (9, 13, 10, 3, 3, 5, 2), (7, 6, 9, 1, 7, 1, 3), (45, 20, 18, 2, 40, 6, 7)]
SHAPES2 = [(3, 2, 12, 12, 3, 5, 5), (1, 4, 9, 14, 2, 3, 6), (2, 1, 7, 5, 1, 1, 2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES3)
def test_corr3d_movie_direct_and_fft(kb, rng, dtype, shape):
    t, h, wd, c, k, kh, kw = shape
    x = rng.standard_normal((t, h, wd)).astype(dtype)
    w = rng.standard_normal((c, k, kh, kw)).astype(dtype)
    ref = naive.corr3d_movie(x, w)
    out = np.full(ref.shape, np.nan, dtype)
    kb.corr3d_movie(x, w, out)
    assert relerr(out, ref) < tol(dtype)
    for chunk in (1, 3, 1000):
        out = np.full(ref.shape, np.nan, dtype)
        kb.corr3d_movie_fft(x, w, out, chunk=chunk)
        assert out.dtype == dtype
        assert relerr(out, ref) < tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES3)
def test_corr3d_movie_transpose(kb, rng, dtype, shape):
    t, h, wd, c, k, kh, kw = shape
    w = rng.standard_normal((c, k, kh, kw)).astype(dtype)
    g = rng.standard_normal((t - k + 1, c, h - kh + 1, wd - kw + 1)).astype(dtype)
    ref = naive.corr3d_movie_transpose(g, w, t, h, wd)
    for f in (kb.corr3d_movie_transpose, kb.corr3d_movie_transpose_fft):
        out = np.full(ref.shape, np.nan, dtype)
        f(g, w, out)
        assert relerr(out, ref) < tol(dtype)
    # adjoint identity <corr(x), g> == <x, corr^T(g)>
    x = rng.standard_normal((t, h, wd))
    assert np.isclose(np.vdot(naive.corr3d_movie(x, w), g), np.vdot(x, ref), rtol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_corr3d_movie_fft_channels_on_threads_are_the_serial_bits(rng, dtype):
    """The CPU spreads a chunk's channels over the threads (each channel's inverse single-threaded): the same
    bits as one thread, in several chunks, against the float64 reference."""
    from retina._threads import num_threads

    x = rng.standard_normal((30, 12, 11)).astype(dtype)
    w = rng.standard_normal((5, 6, 4, 3)).astype(dtype)
    got = {}
    for threads in (1, 2, 3):
        out = np.full((25, 5, 9, 9), np.nan, dtype)
        with num_threads(min(threads, _max_threads())):
            cpu.corr3d_movie_fft(x, w, out, chunk=11)
        got[threads] = out
    assert relerr(got[1], naive.corr3d_movie(x, w)) < 5 * tol(dtype)
    np.testing.assert_array_equal(got[2], got[1])
    np.testing.assert_array_equal(got[3], got[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fft2_blocks_on_threads_are_the_serial_bits(rng, monkeypatch, dtype):
    """Layer 2's blocks spread over the threads (the weight gradient summed in block order): the same bits as one
    thread, for the correlation, its transpose and the weight gradient, against the float64 references."""
    from retina._threads import num_threads
    from retina.kernels import _fft

    monkeypatch.setitem(_fft.BLOCK, np, 3)
    x = rng.standard_normal((11, 3, 12, 10)).astype(dtype)
    w = rng.standard_normal((4, 3, 5, 4)).astype(dtype)
    g = rng.standard_normal((11, 4, 8, 7)).astype(dtype)
    got = {}
    for threads in (1, 2):
        with num_threads(min(threads, _max_threads())):
            o, t, wg = np.empty((11, 4, 8, 7), dtype), np.empty_like(x), np.empty_like(w)
            cpu.corr2d_fft(x, w, o)
            cpu.corr2d_transpose_fft(g, w, t)
            cpu.corr2d_weight_grad_fft(x, g, wg)
            got[threads] = (o, t, wg)
    refs = (naive.corr2d(x, w), naive.corr2d_transpose(g, w, 12, 10), naive.corr2d_weight_grad(x, g, 5, 4))
    for a, b, ref in zip(got[1], got[2], refs):
        assert relerr(a, ref) < 5 * tol(dtype)
        np.testing.assert_array_equal(a, b)


def _max_threads():
    from numba import config

    return int(config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [1, 2])
def test_corr3d_runs_fft_is_each_run_on_its_own(kb, rng, dtype, threads):
    """Layer 1 of a training batch's runs (ragged lengths, one run a chunk): the same values as each run through
    ``corr3d_movie_fft`` (bit for bit on the CPU, threads or not), the float64 reference, and each run's
    spectrum handed on in run order."""
    from retina._threads import num_threads

    c, k, kh, kw = 3, 5, 4, 3
    runs = [rng.standard_normal((t, 9, 8)).astype(dtype) for t in (12, 7, 12, 5, 9)]
    w = rng.standard_normal((c, k, kh, kw)).astype(dtype)
    outs = [np.full((len(x) - k + 1, c, 9 - kh + 1, 8 - kw + 1), np.nan, dtype) for x in runs]
    spectra: list = []
    with num_threads(threads):
        kb.corr3d_runs_fft(runs, w, outs, cache={}, spectra=spectra)
    for x, o in zip(runs, outs):
        assert relerr(o, naive.corr3d_movie(x, w)) < 5 * tol(dtype)
    assert len(spectra) == len(runs)
    if kb.name == "cpu":
        for x, o, sp in zip(runs, outs, spectra):
            own: list = []
            one = np.empty_like(o)
            cpu.corr3d_movie_fft(x, w, one, chunk=len(one), spectra=own)
            np.testing.assert_array_equal(o, one)
            np.testing.assert_array_equal(sp, own[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES3[:3])
def test_corr3d_movie_weight_grad(kb, rng, dtype, shape):
    t, h, wd, c, k, kh, kw = shape
    x = rng.standard_normal((t, h, wd)).astype(dtype)
    g = rng.standard_normal((t - k + 1, c, h - kh + 1, wd - kw + 1)).astype(dtype)
    ref = naive.corr3d_movie_weight_grad(x, g, k, kh, kw)
    out = np.full(ref.shape, np.nan, dtype)
    kb.corr3d_movie_weight_grad(x, g, out)
    assert relerr(out, ref) < tol(dtype)
    out_fft = np.full(ref.shape, np.nan, dtype)
    kb.corr3d_movie_weight_grad_fft(x, g, out_fft)
    assert relerr(out_fft, ref) < 5 * tol(dtype)  # FFT rounding grows with the transform length
    # summed over runs of different lengths (two of one length share an inverse transform), with and
    # without the movies' spectra from the forward pass
    runs = [x, rng.standard_normal((t + 1, h, wd)).astype(dtype), rng.standard_normal(x.shape).astype(dtype)]
    grads = [g, rng.standard_normal((t - k + 2,) + g.shape[1:]).astype(dtype),
             rng.standard_normal(g.shape).astype(dtype)]
    ref_sum = sum(naive.corr3d_movie_weight_grad(xr, gr, k, kh, kw) for xr, gr in zip(runs, grads))
    spectra = []
    for xr in runs:
        kb.corr3d_movie_fft(xr, rng.standard_normal((c, k, kh, kw)).astype(dtype),
                            np.empty((len(xr) - k + 1, c, h - kh + 1, wd - kw + 1), dtype), chunk=len(xr),
                            spectra=spectra)
    for spec in (None, spectra):
        out_fft[:] = np.nan
        kb.corr3d_runs_weight_grad_fft(runs, grads, out_fft, spectra=spec)
        assert relerr(out_fft, ref_sum) < 5 * tol(dtype)
    if kb.name == "cpu":   # the runs go to the threads in pieces summed in order: the same bits on one thread
        from retina._threads import num_threads

        with num_threads(1):
            one = cpu.corr3d_runs_weight_grad_fft(runs, grads, np.empty_like(out_fft), spectra=spectra)
        np.testing.assert_array_equal(one, out_fft)
    # finite differences of L(w) = <corr(x, w), g> (linear, so central differences are exact up to rounding)
    w = rng.standard_normal((c, k, kh, kw))
    idx = tuple(rng.integers(0, s) for s in w.shape)
    e = np.zeros_like(w)
    e[idx] = 1e-3
    fd = (np.vdot(naive.corr3d_movie(x, w + e), g) - np.vdot(naive.corr3d_movie(x, w - e), g)) / 2e-3
    assert np.isclose(fd, ref[idx], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES2)
def test_corr2d_forward_transpose_weight_grad(kb, rng, dtype, shape):
    n, ci, h, wd, co, kh, kw = shape
    x = rng.standard_normal((n, ci, h, wd)).astype(dtype)
    w = rng.standard_normal((co, ci, kh, kw)).astype(dtype)
    ref = naive.corr2d(x, w)
    out = np.full(ref.shape, np.nan, dtype)
    kb.corr2d(x, w, out)
    assert relerr(out, ref) < tol(dtype)

    g = rng.standard_normal(ref.shape).astype(dtype)
    ref_t = naive.corr2d_transpose(g, w, h, wd)
    out_t = np.full(ref_t.shape, np.nan, dtype)
    kb.corr2d_transpose(g, w, out_t)
    assert relerr(out_t, ref_t) < tol(dtype)
    assert np.isclose(np.vdot(ref, g), np.vdot(x.astype(float), ref_t), rtol=1e-9)

    ref_w = naive.corr2d_weight_grad(x, g, kh, kw)
    out_w = np.full(ref_w.shape, np.nan, dtype)
    kb.corr2d_weight_grad(x, g, out_w)
    assert relerr(out_w, ref_w) < tol(dtype)
    idx = tuple(rng.integers(0, s) for s in w.shape)
    e = np.zeros(w.shape)
    e[idx] = 1e-3
    w64 = w.astype(float)
    fd = (np.vdot(naive.corr2d(x, w64 + e), g) - np.vdot(naive.corr2d(x, w64 - e), g)) / 2e-3
    assert np.isclose(fd, ref_w[idx], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_relu(kb, rng, dtype):
    z = rng.standard_normal((5, 3, 4, 6)).astype(dtype)
    sc = rng.standard_normal((3, 4, 6)).astype(dtype)
    sh = rng.standard_normal((3, 4, 6)).astype(dtype)
    out = np.full_like(z, np.nan)
    kb.affine_relu(z, sc, sh, out)
    ref = np.maximum(sc.astype(float) * z + sh, 0)
    assert relerr(out, ref) < tol(dtype)
    assert (out == 0).any() and (out > 0).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(500, 18, 5408), (7, 3, 11), (1, 1, 1)])
def test_dense_and_its_transpose_match_the_reference_and_not_the_thread_count(kb, rng, dtype, shape):
    """The readout ``x @ w.T`` and the gradient at its input ``d @ w`` (training's shapes among them)."""
    n_b, n, m = shape
    x = np.maximum(rng.standard_normal((n_b, m)), 0).astype(dtype)
    w = rng.standard_normal((n, m)).astype(dtype)
    d = rng.standard_normal((n_b, n)).astype(dtype)
    d[rng.random(d.shape) < 0.2] = 0                                  # zero gradients are skipped
    fwd, back = np.full((n_b, n), np.nan, dtype), np.full((n_b, m), np.nan, dtype)
    kb.dense(x, w, fwd)
    kb.dense_transpose(d, w, back)
    assert relerr(fwd, x.astype(float) @ w.T.astype(float)) < tol(dtype)
    assert relerr(back, d.astype(float) @ w.astype(float)) < tol(dtype)
    if kb.name == "cpu":   # each element summed in one order, whatever the thread count
        from retina._threads import num_threads

        with num_threads(1):
            np.testing.assert_array_equal(cpu.dense(x, w, np.empty_like(fwd)), fwd)
            np.testing.assert_array_equal(cpu.dense_transpose(d, w, np.empty_like(back)), back)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(500, 54, 5408), (7, 3, 300), (1, 1, 1)])
def test_dense_weight_grad_matches_the_reference_and_not_the_thread_count(kb, rng, dtype, shape):
    n_b, n, m = shape
    d = rng.standard_normal((n_b, n)).astype(dtype)
    d[rng.random(d.shape) < 0.2] = 0                                  # zero gradients are skipped
    x = np.maximum(rng.standard_normal((n_b, m)), 0).astype(dtype)
    out = np.full((n, m), np.nan, dtype)
    kb.dense_weight_grad(d, x, out)
    assert relerr(out, d.T.astype(float) @ x.astype(float)) < tol(dtype)
    if kb.name == "cpu":   # the same bits on one thread and on two: a seed trains alike on a Dask worker and here
        from retina._threads import num_threads

        with num_threads(1):
            one = cpu.dense_weight_grad(d, x, np.empty_like(out))
        np.testing.assert_array_equal(one, out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 3, 4, 5), (600, 2, 13, 11), (1, 4), (3, 300)])
def test_batch_norm_relu(kb, rng, dtype, shape):
    """The fused training batch norm (+ noise + ReLU): outputs against the float64 reference, with and without
    noise, on a batch whose mean is large against its spread (the one-pass variance must stay exact); more
    units than one block of the CPU kernel."""
    c = (rng.standard_normal(shape) * 0.5 + 30.0).astype(dtype)
    gamma = rng.uniform(0.5, 2.0, shape[1:]).astype(dtype)
    beta = rng.standard_normal(shape[1:]).astype(dtype)
    for noise in (np.empty(0, dtype), (0.05 * rng.standard_normal(shape)).astype(dtype)):
        outs = [np.full(shape[1:], np.nan, dtype), np.full(shape[1:], np.nan, dtype), np.full(shape, np.nan, dtype),
                np.full(shape, np.nan, dtype)]
        got = kb.batch_norm_relu(c, gamma, beta, noise, 1e-3, *outs)
        ref_out, ref_mean, ref_var, ref_xhat = naive.batch_norm_relu(c, gamma, beta, noise if noise.size else 0,
                                                                     1e-3)
        assert len(got) == 4
        assert relerr(outs[0], ref_mean) < tol(dtype)
        if shape[0] > 1:
            assert relerr(outs[1], ref_var) < 10 * tol(dtype)       # the variance of values near 30: cancellation
            assert relerr(outs[2], ref_xhat) < 100 * tol(dtype)     # relative to the spread of 0.5
            assert relerr(outs[3], ref_out) < 100 * tol(dtype)
        else:   # one sample: zero variance, xhat 0, out = relu(beta + noise)
            assert np.all(outs[1] == 0) and np.all(outs[2] == 0)
        assert np.all(outs[3] >= 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_relu_grad_against_finite_differences(kb, rng, dtype):
    """The adjoint of the fused batch norm against central differences of ``<dout, out(c)>`` (float64), and
    ``dgamma``, ``dbeta`` against their definitions; float32 against the float64 result."""
    shape = (9, 2, 3, 4)
    c = rng.standard_normal(shape)
    gamma, beta = rng.uniform(0.5, 2.0, shape[1:]), 0.3 * rng.standard_normal(shape[1:])
    noise = 0.05 * rng.standard_normal(shape)
    dout = rng.standard_normal(shape)
    eps = 1e-3

    def loss(cv):
        return float(np.vdot(dout, naive.batch_norm_relu(cv, gamma, beta, noise, eps)[0]))

    cast = [a.astype(dtype) for a in (c, gamma, beta, noise)]
    fwd = [np.empty(shape[1:], dtype), np.empty(shape[1:], dtype), np.empty(shape, dtype), np.empty(shape, dtype)]
    kb.batch_norm_relu(*cast[:4], eps, *fwd)
    grads = [np.full(shape, np.nan, dtype), np.full(shape[1:], np.nan, dtype), np.full(shape[1:], np.nan, dtype)]
    got = kb.batch_norm_relu_grad(dout.astype(dtype), fwd[3], fwd[2], cast[1], fwd[1], eps, *grads)
    assert len(got) == 3
    out, _, _, xhat = naive.batch_norm_relu(c, gamma, beta, noise, eps)
    dz = dout * (out > 0)
    assert relerr(grads[1], (dz * xhat).sum(axis=0)) < 10 * tol(dtype)
    assert relerr(grads[2], dz.sum(axis=0)) < 10 * tol(dtype)
    h = 1e-6
    fd = np.empty(shape)
    for idx in np.ndindex(*shape):
        e = np.zeros(shape)
        e[idx] = h
        fd[idx] = (loss(c + e) - loss(c - e)) / (2 * h)
    assert relerr(grads[0], fd) < (1e-6 if dtype == np.float64 else 1e-4)


def test_generic_batch_norm_equals_cpu(rng):
    """The array-module form the GPU runs (``_bn``) gives the CPU's fused loops' results, checked with NumPy."""
    from retina.kernels import _bn

    shape = (50, 3, 5, 4)
    c = rng.standard_normal(shape).astype(np.float32)
    gamma, beta = (rng.uniform(0.5, 2, shape[1:]).astype(np.float32) for _ in range(2))
    noise = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)

    def outs():
        return [np.empty(shape[1:], np.float32), np.empty(shape[1:], np.float32), np.empty(shape, np.float32),
                np.empty(shape, np.float32)]
    a, b = outs(), outs()
    cpu.batch_norm_relu(c, gamma, beta, noise, 1e-3, *a)
    _bn.batch_norm_relu(np, c, gamma, beta, noise, 1e-3, *b)
    for x, y in zip(a, b):
        assert relerr(x, y) < 1e-5
    ga = [np.empty(shape, np.float32), np.empty(shape[1:], np.float32), np.empty(shape[1:], np.float32)]
    gb = [np.empty_like(x) for x in ga]
    cpu.batch_norm_relu_grad(dout, a[3], a[2], gamma, a[1], 1e-3, *ga)
    _bn.batch_norm_relu_grad(np, dout, b[3], b[2], gamma, b[1], 1e-3, *gb)
    for x, y in zip(ga, gb):
        assert relerr(x, y) < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES2)
def test_corr2d_fft_family(kb, rng, dtype, shape):
    n, ci, h, wd, co, kh, kw = shape
    x = rng.standard_normal((n, ci, h, wd)).astype(dtype)
    w = rng.standard_normal((co, ci, kh, kw)).astype(dtype)
    ref = naive.corr2d(x, w)
    g = rng.standard_normal(ref.shape).astype(dtype)
    out = np.full(ref.shape, np.nan, dtype)
    kb.corr2d_fft(x, w, out)
    assert relerr(out, ref) < 5 * tol(dtype)
    out_t = np.full(x.shape, np.nan, dtype)
    kb.corr2d_transpose_fft(g, w, out_t)
    assert relerr(out_t, naive.corr2d_transpose(g, w, h, wd)) < 5 * tol(dtype)
    ref_w = naive.corr2d_weight_grad(x, g, kh, kw)
    out_w = np.full(w.shape, np.nan, dtype)
    kb.corr2d_weight_grad_fft(x, g, out_w)
    assert relerr(out_w, ref_w) < 5 * tol(dtype)
    # the forward's spectrum of x, handed to the weight gradient, gives the same result
    spectra = []
    kb.corr2d_fft(x, w, np.empty_like(out), spectra=spectra)
    assert len(spectra) == 1
    out_w[:] = np.nan
    kb.corr2d_weight_grad_fft(x, g, out_w, spectrum=spectra[0])
    assert relerr(out_w, ref_w) < 5 * tol(dtype)
    # and the spectrum of g from the transposed correlation
    g_spectra = []
    kb.corr2d_transpose_fft(g, w, out_t, spectra=g_spectra)
    out_w[:] = np.nan
    kb.corr2d_weight_grad_fft(x, g, out_w, spectrum=spectra[0], g_spectrum=g_spectra[0])
    assert relerr(out_w, ref_w) < 5 * tol(dtype)


@pytest.mark.parametrize("a_t,b_t", [(False, True), (False, False), (True, False)])
def test_channel_product_cpu_kernel_and_generic_matmul_agree(rng, monkeypatch, a_t, b_t):
    """The FFT correlations' per-frequency channel product ``out[p, r] = sum_q A[p, q] B[q, r]``: the CPU's
    Numba loop (``_fft.MIXERS``) and the batched matmul the GPU runs, against a complex128 einsum."""
    from retina.kernels import _fft

    c = lambda *s: (rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(np.complex64)  # noqa: E731
    A, B = c(6, 3, 5, 4), c(3, 2, 5, 4)          # (P, Q, h, w), (Q, R, h, w)
    a = A.transpose(1, 0, 2, 3).copy() if a_t else A
    b = B.transpose(1, 0, 2, 3).copy() if b_t else B
    ref = np.einsum("pqhw,qrhw->prhw", A.astype(np.complex128), B.astype(np.complex128))
    fast = _fft._mix(np, a, b, a_t=a_t, b_t=b_t)
    monkeypatch.delitem(_fft.MIXERS, np)
    generic = _fft._mix(np, a, b, a_t=a_t, b_t=b_t)
    for got in (fast, generic):
        assert got.shape == ref.shape and got.dtype == np.complex64
        assert relerr(got, ref) < 1e-5


@pytest.mark.parametrize("block", [None, 1, 2, 128])
def test_fft_correlations_blocked_and_whole_batch_agree_with_the_references(rng, monkeypatch, block):
    """The FFT paths as the CPU runs them (layer 2 in blocks of windows, layer 1 one channel at a time:
    ``_fft.BLOCK``) and as a backend without blocking runs them (whole batch, all channels), on batches of
    several blocks with ragged ends; the spectra handed on for the weight gradient are the whole batch's (the
    blocks' spectra in order, or one array)."""
    from retina.kernels import _fft

    if block is None:
        monkeypatch.delitem(_fft.BLOCK, np)
    else:
        monkeypatch.setitem(_fft.BLOCK, np, block)
    x, w = rng.standard_normal((5, 3, 9, 8)), rng.standard_normal((2, 3, 4, 3))
    ref = naive.corr2d(x, w)
    out, spec = np.full(ref.shape, np.nan), []
    cpu.corr2d_fft(x, w, out, spectra=spec)
    assert relerr(out, ref) < 1e-12
    blocks = spec[0] if isinstance(spec[0], list) else [spec[0]]   # the whole batch's, in blocks or as one
    assert sum(b.shape[0] for b in blocks) == 5 and len(blocks) == (1 if block is None else -(-5 // block))
    g = rng.standard_normal(ref.shape)
    back, gspec = np.full(x.shape, np.nan), []
    cpu.corr2d_transpose_fft(g, w, back, spectra=gspec)
    assert relerr(back, naive.corr2d_transpose(g, w, 9, 8)) < 1e-12
    wref = naive.corr2d_weight_grad(x, g, 4, 3)
    for kwargs in ({}, {"spectrum": spec[0], "g_spectrum": gspec[0]}):
        gw = np.full(w.shape, np.nan)
        cpu.corr2d_weight_grad_fft(x, g, gw, **kwargs)
        assert relerr(gw, wref) < 1e-12
    movie, w1 = rng.standard_normal((14, 10, 9)), rng.standard_normal((3, 5, 4, 3))
    ref1 = naive.corr3d_movie(movie, w1)
    for chunk in (4, 1000):
        out1 = np.full(ref1.shape, np.nan)
        cpu.corr3d_movie_fft(movie, w1, out1, chunk=chunk)
        assert relerr(out1, ref1) < 1e-12


def _pig_inputs(rng, dtype, secant, b=3, c1=3, h1=9, wd1=8, c2=2, kh=4, kw=3, n_cells=4, n_steps=7, combined=False):
    """Inputs of ``pig_conv_relu_dense``: 2 outputs over 3 of 4 cells, or (``combined``) one output over 5 of 6
    cells, which takes the kernel's combined-cells accumulation (``cpu.COMBINE_CELLS``)."""
    h2, wd2 = h1 - kh + 1, wd1 - kw + 1
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    alphas = (np.arange(n_steps) + 0.5) / n_steps
    bounds = np.arange(n_steps + 1) / n_steps if secant else np.empty(0)
    n_cells, cells, n_out = (6, np.array([0, 1, 2, 4, 5]), 1) if combined else (n_cells, np.array([0, 2, 3]), 2)
    assert (len(cells) >= cpu.COMBINE_CELLS * n_out) == combined
    return dict(z0=f(b, c1, h1, wd1), dz=f(b, c1, h1, wd1), alphas=alphas, weights=np.full(n_steps, 1 / n_steps),
                bounds=bounds,
                w2=f(c2, c1, kh, kw), scale2=f(c2, h2, wd2), shift2=f(c2, h2, wd2),
                v3=0.3 * f(n_cells, c2, h2, wd2), shift3=f(n_cells), cw=rng.standard_normal((n_out, len(cells))),
                cells=cells)


def _pig_outputs(args, dtype):
    b, c1, h1, wd1 = args["z0"].shape
    n_out, n_j = args["cw"].shape
    return dict(g1=np.full((b, n_out, c1, h1, wd1), np.nan, dtype),
                a2=np.full((b, n_out) + args["scale2"].shape, np.nan, dtype),
                r0=np.full((b, n_j), np.nan), r1=np.full((b, n_j), np.nan))


@pytest.mark.parametrize("combined", [False, True])
@pytest.mark.parametrize("secant", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_path_integration_equals_event_driven_kernel(kb, rng, dtype, secant, combined):
    """The GPU's data-parallel path integration (``_pig``: every path point evaluated in full, in blocks)
    gives the CPU's event-driven results, with per-cell or combined backward maps; checked with NumPy here and
    with each backend's kernel."""
    from retina.kernels import _pig

    args = _pig_inputs(rng, dtype, secant, combined=combined)
    ref = _pig_outputs(args, dtype)
    cpu.pig_conv_relu_dense(*args.values(), *ref.values(), True)
    got = _pig_outputs(args, dtype)
    _pig.pig_conv_relu_dense(np, cpu.corr2d, cpu.corr2d_transpose, *args.values(), *got.values(), True,
                             max_elements=500)  # several step blocks
    by_fft = _pig_outputs(args, dtype)   # layer 2 by FFT, as the GPU can run it (gpu.PIG_LAYER2)
    _pig.pig_conv_relu_dense(np, cpu.corr2d_fft, cpu.corr2d_transpose_fft, *args.values(), *by_fft.values(), True,
                             max_elements=500)
    back = _pig_outputs(args, dtype)
    kb.pig_conv_relu_dense(*args.values(), *back.values(), True)
    for k in ref:
        assert np.isfinite(ref[k]).all()
        assert relerr(got[k], ref[k]) < 10 * tol(dtype), k
        assert relerr(by_fft[k], ref[k]) < 10 * tol(dtype), k
        assert relerr(back[k], ref[k]) < 10 * tol(dtype), k


@pytest.mark.gpu
@pytest.mark.parametrize("secant", [False, True])
def test_gpu_path_integration_with_fft_layer2_equals_event_driven_kernel(kb, rng, monkeypatch, secant):
    """The GPU's path batch with layer 2 by cuFFT (``gpu.PIG_LAYER2 = "fft"``) against the CPU's kernel."""
    if kb.name == "cpu":
        pytest.skip("a GPU switch")
    from retina.kernels import gpu

    monkeypatch.setattr(gpu, "PIG_LAYER2", "fft")
    args = _pig_inputs(rng, np.float64, secant)
    ref = _pig_outputs(args, np.float64)
    cpu.pig_conv_relu_dense(*args.values(), *ref.values(), True)
    back = _pig_outputs(args, np.float64)
    kb.pig_conv_relu_dense(*args.values(), *back.values(), True)
    for k in ref:
        assert relerr(back[k], ref[k]) < 10 * tol(np.float64), k


@pytest.mark.parametrize("combined", [False, True])
@pytest.mark.parametrize("secant", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_path_integration_with_one_shared_baseline(kb, rng, dtype, secant, combined):
    """``z0`` of shape (1, ...) (a constant baseline: its start state computed once) gives the results of
    the same baseline repeated for every window, in the event-driven kernel, ``_pig`` and this backend."""
    from retina.kernels import _pig

    args = _pig_inputs(rng, dtype, secant, b=4, combined=combined)
    args["z0"] = np.repeat(args["z0"][:1], 4, axis=0)
    ref = _pig_outputs(args, dtype)
    cpu.pig_conv_relu_dense(*args.values(), *ref.values(), True)
    one = dict(args, z0=np.ascontiguousarray(args["z0"][:1]))
    runs = [lambda o: cpu.pig_conv_relu_dense(*one.values(), *o.values(), True),
            lambda o: _pig.pig_conv_relu_dense(np, cpu.corr2d, cpu.corr2d_transpose, *one.values(), *o.values(),
                                               True, max_elements=500),
            lambda o: kb.pig_conv_relu_dense(*one.values(), *o.values(), True)]
    for run in runs:
        got = _pig_outputs(args, dtype)
        run(got)
        for k in ref:
            assert np.isfinite(ref[k]).all()
            assert relerr(got[k], ref[k]) < 10 * tol(dtype), k


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_simulator_kernels_agree_with_cpu(kb, rng, dtype):
    """``bipolar_block`` / ``ganglion_block`` on this backend against the CPU kernels (random state)."""
    if kb.name == "cpu":
        pytest.skip("the CPU simulator kernels are checked against tests/naive.py in test_insilico.py")
    t, n_px, n_k, n_s, n_j = 30, 37, 3, 4, 5
    f = lambda *s: rng.uniform(0.1, 0.9, s).astype(dtype)  # noqa: E731
    s = rng.standard_normal((t, n_px)).astype(dtype)
    fixed = (rng.standard_normal(n_k).astype(dtype), f(n_k, 2), np.array([2, 4, 3], np.int64), f(n_k),
             0.1 * f(n_k), f(n_k), 0.1 * f(n_k))
    state = (f(n_k, 2, n_s, n_px), f(n_k, n_px))
    sk = KernelRunner(kb.name, "insilico")
    runs = []
    for run in (sim_cpu.bipolar_block, sk.bipolar_block):
        st = tuple(a.copy() for a in state)
        out = np.full((t, n_k, n_px), np.nan, dtype)
        run(s, *fixed, *st, out)
        runs.append((out,) + st)
    for a, b in zip(*runs):
        assert relerr(b, a) < 10 * tol(dtype)
    exc, inh = f(t, n_k, n_j), f(t, n_j)
    pars = (f(n_j, n_k), f(n_j), 0.1 * f(n_j), 50 * f(n_j), 2.0, 0.8, 0.7, 0.9, 0.05, 0.2, 0.3, 0.95)
    state = (f(n_j), f(n_j), f(n_k + 1, n_j), f(n_j))
    runs = []
    for run in (sim_cpu.ganglion_block, sk.ganglion_block):
        st = tuple(a.copy() for a in state)
        rates, parts = np.full((t, n_j), np.nan, dtype), np.full((t, n_k + 1, n_j), np.nan, dtype)
        run(exc, inh, *pars, *st, rates, parts)
        runs.append((rates, parts) + st)
    for a, b in zip(*runs):
        assert relerr(b, a) < 10 * tol(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_standard_normal_draws_are_normal_and_keyed_by_the_seed_alone(rng, dtype):
    """The training noise: equiprobable-bin chi-square against the normal CDF, the tail past the ziggurat's
    base (where a wrong table shows first), moments and lag-1 correlation (across block boundaries too); the same
    bits on one thread and two, in float32 the float64 draws rounded; another seed, other numbers."""
    from scipy import stats

    from retina._threads import num_threads

    n = 2_000_003                                    # not a whole number of blocks
    seed = int(rng.integers(0, 2 ** 63))
    z = cpu.standard_normal(seed, 1.0, np.full(n, np.nan))
    assert np.isfinite(z).all()
    edges = stats.norm.ppf(np.linspace(0, 1, 101))
    counts = np.histogram(z, edges)[0]
    chi2 = ((counts - n / 100) ** 2 / (n / 100)).sum()
    assert stats.chi2.sf(chi2, 99) > 1e-6, chi2
    r = 3.6541528853610088
    tail, expect = np.count_nonzero(np.abs(z) > r), 2 * stats.norm.sf(r) * n
    assert abs(tail - expect) < 6 * np.sqrt(expect), (tail, expect)
    far = np.concatenate([np.abs(v[np.abs(v) > r]) for v in (cpu.standard_normal(seed + i, 1.0, np.empty(4_000_000))
                                                             for i in range(1, 6))])
    assert stats.kstest(far, stats.truncnorm(r, np.inf).cdf).pvalue > 1e-6      # the tail's own shape
    assert abs(z.mean()) < 6 / np.sqrt(n) and abs(z.var() - 1) < 6 * np.sqrt(2 / n)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 6 / np.sqrt(n)
    block = cpu.NORMAL_BLOCK
    assert abs(np.corrcoef(z[:block], z[block:2 * block])[0, 1]) < 6 / np.sqrt(block)

    out = np.full((3, 5, block // 7), np.nan, dtype)            # any shape; scale applied before rounding
    cpu.standard_normal(seed, 0.05, out)
    np.testing.assert_array_equal(out.reshape(-1), (0.05 * z[:out.size]).astype(dtype))
    with num_threads(1):
        np.testing.assert_array_equal(cpu.standard_normal(seed, 0.05, np.empty_like(out)), out)
    other = cpu.standard_normal(seed ^ 1, 0.05, np.empty_like(out))
    assert np.count_nonzero(other == out) < out.size // 1000
    assert cpu.standard_normal(seed, 1.0, np.empty(0, dtype)).size == 0
