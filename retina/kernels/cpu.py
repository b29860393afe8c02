"""Numba CPU kernels.

Pure array operations, no science: every function takes C-contiguous arrays of
one floating dtype (float32 or float64) and writes into a caller-provided
output, so the caller controls memory.  Validation happens at the public API
boundary, never here.  Conventions:

* "corr" is cross-correlation with "valid" padding and stride 1.
* A *movie* is ``(T, H, W)``; a 3-D correlation of a movie with ``w`` of shape
  ``(C, K, kh, kw)`` gives ``(T - K + 1, C, H - kh + 1, W - kw + 1)``: one
  output per window of ``K`` consecutive frames, without building the window
  stack.
* Inner loops run over a *flattened row-major* span of the input
  ("wide" layout): for output row length ``Wo`` and input row length ``W``,
  ``out[y, x]`` lives at ``y * W + x`` of a span of length ``(Ho - 1) * W + Wo``.
  Every tap then is one long contiguous axpy that LLVM vectorises; the
  ``W - Wo`` junk columns per row are computed and dropped.

The FFT path of the movie correlation uses ``scipy.fft`` (pocketfft).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import scipy.fft as sfft
from numba import njit, prange

from .._threads import get_num_threads, run_chunks
from . import _contract, _fft

__all__ = [
    "affine_relu",
    "batch_norm_relu",
    "batch_norm_relu_grad",
    "corr2d",
    "corr2d_transpose",
    "corr2d_weight_grad",
    "corr2d_fft",
    "corr2d_transpose_fft",
    "corr2d_weight_grad_fft",
    "corr3d_movie",
    "corr3d_movie_fft",
    "corr3d_runs_fft",
    "corr3d_movie_transpose",
    "corr3d_movie_transpose_fft",
    "corr3d_movie_weight_grad",
    "corr3d_movie_weight_grad_fft",
    "corr3d_runs_weight_grad_fft",
    "dense",
    "dense_transpose",
    "dense_weight_grad",
    "pig_conv_relu_dense",
    "standard_normal",
]

_JIT: dict[str, Any] = dict(cache=True, nogil=True)


# --------------------------------------------------------------------------
# single-sample building blocks (serial; called inside parallel loops)
# --------------------------------------------------------------------------
@njit(**_JIT)
def _corr2d_one(x, w, out):
    """out[o] = sum_c corr(x[c], w[o, c]); x (Ci, H, W), out (Co, Ho, Wo)."""
    ci_n, h, wd = x.shape
    co_n, _, kh, kw = w.shape
    ho, wo = out.shape[1], out.shape[2]
    span = (ho - 1) * wd + wo
    xf = x.reshape(ci_n, h * wd)
    acc = np.zeros((co_n, span), dtype=out.dtype)
    for c in range(ci_n):
        for u in range(kh):
            for v in range(kw):
                off = u * wd + v
                xs = xf[c, off:off + span]      # 1-D slices keep indices provably >= 0,
                for o in range(co_n):           # so LLVM vectorises the axpy
                    wv = w[o, c, u, v]
                    a = acc[o]
                    for p in range(span):
                        a[p] += wv * xs[p]
    for o in range(co_n):   # element loops, not slice copies: those compile a formatted shape error
        for y in range(ho):
            for x in range(wo):
                out[o, y, x] = acc[o, y * wd + x]


@njit(**_JIT)
def _corr2d_t_one(g, w, out):
    """Adjoint of ``_corr2d_one`` w.r.t. x: out (Ci, H, W) = corr^T(g (Co, Ho, Wo))."""
    co_n, ho, wo = g.shape
    _, ci_n, kh, kw = w.shape
    h, wd = out.shape[1], out.shape[2]
    span = (ho - 1) * wd + wo
    gw = np.zeros((co_n, span), dtype=out.dtype)
    for o in range(co_n):
        for y in range(ho):
            for x in range(wo):
                gw[o, y * wd + x] = g[o, y, x]
    out[:] = 0
    of = out.reshape(ci_n, h * wd)
    for c in range(ci_n):
        for u in range(kh):
            for v in range(kw):
                off = u * wd + v
                dst = of[c, off:off + span]
                for o in range(co_n):
                    wv = w[o, c, u, v]
                    src = gw[o]
                    for p in range(span):
                        dst[p] += wv * src[p]


# --------------------------------------------------------------------------
# 2-D correlation over a batch (layer 2)
# --------------------------------------------------------------------------
@njit(parallel=True, **_JIT)
def corr2d(x, w, out):
    """Batched valid 2-D correlation.

    x (N, Ci, H, W), w (Co, Ci, kh, kw) -> out (N, Co, H-kh+1, W-kw+1).
    """
    for n in prange(x.shape[0]):
        _corr2d_one(x[n], w, out[n])
    return out


@njit(parallel=True, **_JIT)
def corr2d_transpose(g, w, out):
    """Gradient of ``corr2d`` w.r.t. its input (the transposed correlation).

    g (N, Co, Ho, Wo), w (Co, Ci, kh, kw) -> out (N, Ci, Ho+kh-1, Wo+kw-1).
    """
    for n in prange(g.shape[0]):
        _corr2d_t_one(g[n], w, out[n])
    return out


@njit(parallel=True, fastmath=True, **_JIT)
def corr2d_weight_grad(x, g, out):
    """Gradient of ``corr2d`` w.r.t. its weights, summed over the batch.

    x (N, Ci, H, W), g (N, Co, Ho, Wo) -> out (Co, Ci, kh, kw).
    """
    n_b, ci_n, h, wd = x.shape
    co_n, ho, wo = g.shape[1], g.shape[2], g.shape[3]
    kh, kw = out.shape[2], out.shape[3]
    span = (ho - 1) * wd + wo
    for oc in prange(co_n * ci_n):
        o = oc // ci_n
        c = oc % ci_n
        gw = np.zeros(span, dtype=out.dtype)
        acc = np.zeros((kh, kw), dtype=np.float64)
        for n in range(n_b):
            for y in range(ho):
                for xx in range(wo):
                    gw[y * wd + xx] = g[n, o, y, xx]
            xf = x[n, c].reshape(h * wd)
            for u in range(kh):
                for v in range(kw):
                    off = u * wd + v
                    xs = xf[off:off + span]
                    s = 0.0
                    for p in range(span):
                        s += gw[p] * xs[p]
                    acc[u, v] += s
        for u in range(kh):
            for v in range(kw):
                out[o, c, u, v] = acc[u, v]
    return out


# --------------------------------------------------------------------------
# 3-D (time x space) correlation over a whole movie (layer 1)
# --------------------------------------------------------------------------
@njit(parallel=True, **_JIT)
def corr3d_movie(x, w, out):
    """Direct valid 3-D correlation of a movie, one output per window.

    x (T, H, W), w (C, K, kh, kw) -> out (T-K+1, C, H-kh+1, W-kw+1), with
    ``out[n, c] = sum_{tau,u,v} x[n+tau, y+u, x+v] * w[c, tau, u, v]``.
    """
    t_n, h, wd = x.shape
    c_n, k_n, kh, kw = w.shape
    n_win, ho, wo = out.shape[0], out.shape[2], out.shape[3]
    span = (ho - 1) * wd + wo
    xf = x.reshape(t_n, h * wd)
    for nc in prange(n_win * c_n):
        n = nc // c_n
        c = nc % c_n
        acc = np.zeros(span, dtype=out.dtype)
        for tau in range(k_n):
            fr = xf[n + tau]
            for u in range(kh):
                for v in range(kw):
                    wv = w[c, tau, u, v]
                    off = u * wd + v
                    xs = fr[off:off + span]
                    for p in range(span):
                        acc[p] += wv * xs[p]
        for y in range(ho):
            for xx in range(wo):
                out[n, c, y, xx] = acc[y * wd + xx]
    return out


@njit(parallel=True, **_JIT)
def corr3d_movie_transpose(g, w, out):
    """Adjoint of ``corr3d_movie``: accumulate window gradients onto frames.

    g (N, C, Ho, Wo), w (C, K, kh, kw) -> out (N+K-1, Ho+kh-1, Wo+kw-1).
    Parallel over output frames, so no two threads write the same frame.
    """
    n_win, c_n, ho, wo = g.shape
    k_n, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    t_n, h, wd = out.shape
    span = (ho - 1) * wd + wo
    for t in prange(t_n):
        of = out[t].reshape(h * wd)
        of[:] = 0
        gw = np.zeros(span, dtype=out.dtype)
        for tau in range(k_n):
            n = t - tau
            if n < 0 or n >= n_win:
                continue
            for c in range(c_n):
                for y in range(ho):
                    for xx in range(wo):
                        gw[y * wd + xx] = g[n, c, y, xx]
                for u in range(kh):
                    for v in range(kw):
                        wv = w[c, tau, u, v]
                        off = u * wd + v
                        dst = of[off:off + span]
                        for p in range(span):
                            dst[p] += wv * gw[p]
    return out


@njit(parallel=True, fastmath=True, **_JIT)
def corr3d_movie_weight_grad(x, g, out):
    """Gradient of ``corr3d_movie`` w.r.t. its weights, summed over windows.

    x (T, H, W), g (T-K+1, C, Ho, Wo) -> out (C, K, kh, kw).
    """
    t_n, h, wd = x.shape
    n_win, c_n, ho, wo = g.shape
    k_n, kh, kw = out.shape[1], out.shape[2], out.shape[3]
    span = (ho - 1) * wd + wo
    xf = x.reshape(t_n, h * wd)
    for ct in prange(c_n * k_n):
        c = ct // k_n
        tau = ct % k_n
        gw = np.zeros(span, dtype=out.dtype)
        acc = np.zeros((kh, kw), dtype=np.float64)
        for n in range(n_win):
            for y in range(ho):
                for xx in range(wo):
                    gw[y * wd + xx] = g[n, c, y, xx]
            fr = xf[n + tau]
            for u in range(kh):
                for v in range(kw):
                    off = u * wd + v
                    xs = fr[off:off + span]
                    s = 0.0
                    for p in range(span):
                        s += gw[p] * xs[p]
                    acc[u, v] += s
        for u in range(kh):
            for v in range(kw):
                out[c, tau, u, v] = acc[u, v]
    return out


def _kw(workers):
    return {"workers": workers or get_num_threads()}


def corr3d_movie_fft(x, w, out, *, chunk=512, workers=None, cache=None, spectra=None):
    """``corr3d_movie`` by FFT over (time, y, x), chunked along time.

    Circular correlation of a block of length ``L`` equals the valid linear
    correlation on its first ``L - K + 1`` outputs, so chunks overlap by
    ``K - 1`` frames and no padding beyond a fast FFT length is needed.
    Cost per frame: ``C + 1`` real 3-D FFTs instead of ``C*K*kh*kw`` MACs per
    output pixel.  ``cache`` (a dict owned by the caller, keyed by FFT shape)
    keeps the kernel spectra between calls with the same ``w``; ``spectra``
    (a list) receives the movie's spectrum of each chunk, for reuse by
    :func:`corr3d_movie_weight_grad_fft`.  (Algorithm shared with the GPU:
    :mod:`retina.kernels._fft`.)
    """
    parallel, kw_each = _threaded(workers)
    return _fft.corr3d_movie_fft(np, sfft, _kw(workers), x, w, out, chunk, cache, spectra, parallel, kw_each)


def corr3d_runs_fft(xs, w, outs, *, workers=None, cache=None, spectra=None):
    """:func:`corr3d_movie_fft` of several runs: movie ``xs[j]`` (``T_j`` frames) into ``outs[j]``
    (``T_j - K + 1`` windows), each run one chunk; ``spectra`` receives each run's spectrum in run order.

    With more than one thread the runs are spread over the threads, each
    run's transforms single-threaded (its spectra stay in one core's cache);
    the values are the same as one run after the other.
    """
    parallel, kw_each = _threaded(workers) if len(xs) > 1 else (None, None)
    return _fft.corr3d_runs_fft(np, sfft, _kw(workers), xs, w, outs, cache, spectra, parallel, kw_each)


def corr3d_movie_transpose_fft(g, w, out, *, workers=None):
    """``corr3d_movie_transpose`` by FFT: a full 3-D convolution summed over channels."""
    return _fft.corr3d_movie_transpose_fft(np, sfft, _kw(workers), g, w, out)


def corr3d_movie_weight_grad_fft(x, g, out, *, workers=None, spectrum=None):
    """``corr3d_movie_weight_grad`` by FFT: the correlation of the movie with the window gradients.

    ``out[c, tau, u, v] = sum_{n,y,x} x[n+tau, y+u, x+v] g[n, c, y, x]``; with
    the FFT length at least the movie's, the circular correlation has no
    wrap-around at these lags, so the result is exact.  ``spectrum``: the
    movie's spectrum from :func:`corr3d_movie_fft` (same movie, one chunk).
    """
    return _fft.corr3d_movie_weight_grad_fft(np, sfft, _kw(workers), x, g, out, spectrum)


def corr3d_runs_weight_grad_fft(xs, gs, out, *, workers=None, spectra=None):
    """:func:`corr3d_movie_weight_grad_fft` summed over runs: movies ``xs[j]`` with window gradients ``gs[j]``.

    The runs' spectral products are summed before the inverse transform (one
    per FFT shape rather than one per run).  ``spectra``: the movies' spectra
    from :func:`corr3d_movie_fft`, one per run (each run one chunk).  With more
    than one thread the runs go to the threads in pieces of
    :data:`retina.kernels._fft.RUNS_PER_PIECE`, summed in piece order: the
    same bits on any thread count.
    """
    parallel, kw_each = _threaded(workers) if len(xs) > 1 else (None, None)
    return _fft.corr3d_runs_weight_grad_fft(np, sfft, _kw(workers), xs, gs, out, spectra, parallel, kw_each)


# --------------------------------------------------------------------------
# layer 2 by 2-D FFT (batched over windows): ~10x fewer FLOPs than direct for 11x11 kernels
# --------------------------------------------------------------------------
@njit(fastmath=True, **_JIT)
def _mix_rows(lo, hi, a, b, a_t, b_t, out):
    """Rows ``lo:hi`` of the per-frequency channel product ``out[p, r] = sum_q A[p, q] * B[q, r]`` (``A`` is
    ``a``, or with ``a_t`` ``a`` with its first two axes swapped; likewise ``B``), frequencies innermost."""
    r_n = out.shape[1]
    q_n = a.shape[0] if a_t else a.shape[1]
    f_n = out.shape[2] * out.shape[3]
    af = a.reshape(a.shape[0], a.shape[1], f_n)
    bf = b.reshape(b.shape[0], b.shape[1], f_n)
    of = out.reshape(out.shape[0], r_n, f_n)
    for p in range(lo, hi):
        o = of[p]
        o[:] = 0
        for q in range(q_n):
            av = af[q, p] if a_t else af[p, q]
            for r in range(r_n):
                bv = bf[r, q] if b_t else bf[q, r]
                orow = o[r]
                for f in range(f_n):
                    orow[f] += av[f] * bv[f]


def _mix_spectra(a, b, a_t, b_t, out, threads=None):
    """The FFT correlations' channel product on the CPU (registered in :data:`retina.kernels._fft.MIXERS`): a
    loop with the frequencies innermost, about 2x faster than NumPy's batched matmul over strided matrices;
    on at most ``threads`` threads."""
    run_chunks(out.shape[0], lambda lo, hi: _mix_rows(lo, hi, a, b, a_t, b_t, out), threads=threads)
    return out


_fft.MIXERS[np] = _mix_spectra
_fft.BLOCK[np] = 64


def _threaded(workers):
    """``(parallel, kw_each)`` for the shared FFT algorithm: its pieces (layer-1 channels, layer-2 blocks) over the
    kernel threads, each piece's transforms single-threaded so its data stay in one core's cache (layer 1 of a
    537-window chunk 58 -> 48 ms, layer 2 21 -> 17 ms, quiet 2-core EPYC); ``(None, None)`` on one thread."""
    threads = workers or get_num_threads()
    if threads > 1:
        return (lambda n, fn: run_chunks(n, fn, threads=threads)), {"workers": 1}
    return None, None


def corr2d_fft(x, w, out, *, workers=None, spectra=None):
    """``corr2d`` by FFT: x (N, Ci, H, W), w (Co, Ci, kh, kw) -> out (N, Co, Ho, Wo).

    ``spectra`` (a list) receives the spectrum of ``x``, for reuse by
    :func:`corr2d_weight_grad_fft` (same ``x``): one array, or the list of its
    blocks' spectra where the batch is transformed in blocks (:data:`_fft.BLOCK`).
    """
    return _fft.corr2d_fft(np, sfft, _kw(workers), x, w, out, spectra, *_threaded(workers))


def corr2d_transpose_fft(g, w, out, *, workers=None, spectra=None):
    """``corr2d_transpose`` by FFT: g (N, Co, Ho, Wo), w (Co, Ci, kh, kw) -> out (N, Ci, H, W).

    ``spectra`` (a list) receives the spectrum of ``g``, for reuse by
    :func:`corr2d_weight_grad_fft` (``g_spectrum``).
    """
    return _fft.corr2d_transpose_fft(np, sfft, _kw(workers), g, w, out, spectra, *_threaded(workers))


def corr2d_weight_grad_fft(x, g, out, *, workers=None, spectrum=None, g_spectrum=None):
    """``corr2d_weight_grad`` by FFT: x (N, Ci, H, W), g (N, Co, Ho, Wo) -> out (Co, Ci, kh, kw).

    ``spectrum``: the spectrum of ``x`` from :func:`corr2d_fft` (``spectra``);
    ``g_spectrum``: that of ``g`` from :func:`corr2d_transpose_fft`.
    """
    return _fft.corr2d_weight_grad_fft(np, sfft, _kw(workers), x, g, out, spectrum, g_spectrum, *_threaded(workers))


# --------------------------------------------------------------------------
# pointwise and dense
# --------------------------------------------------------------------------
@njit(**_JIT)
def _affine_relu_rows(lo, hi, zf, sc, sh, of):
    """Rows ``lo:hi`` of :func:`affine_relu` on 2-D views ``(N, M)``."""
    for n in range(lo, hi):
        for i in range(sc.shape[0]):
            v = sc[i] * zf[n, i] + sh[i]
            of[n, i] = v if v > 0 else 0


def affine_relu(z, scale, shift, out):
    """out = max(scale * z + shift, 0); z, out (N, ...), scale/shift the trailing shape.

    Rows handed out to the kernel threads as they free up (a Numba ``prange`` split them evenly, so a core
    shared with another process held up the whole pass: 2.2x slower under one competing process).
    """
    n_b, m = z.shape[0], scale.size
    zf, of = z.reshape(n_b, m), out.reshape(n_b, m)
    sc, sh = scale.reshape(m), shift.reshape(m)
    run_chunks(n_b, lambda lo, hi: _affine_relu_rows(lo, hi, zf, sc, sh, of))
    return out


@njit(**_JIT)
def _bn_relu_units(lo, hi, c, gamma, beta, noise, eps, mean, var, xhat, out):
    """Units ``lo:hi`` of :func:`batch_norm_relu` (2-D views ``(N, M)``): two passes over the batch along
    contiguous row slices, statistics in float64 about the first row (a shift that keeps the one-pass
    variance exact to rounding)."""
    n_b = c.shape[0]
    m_n = hi - lo
    s1 = np.zeros(m_n)
    s2 = np.zeros(m_n)
    c0 = c[0, lo:hi]
    for n in range(n_b):
        row = c[n, lo:hi]
        for m in range(m_n):
            d = np.float64(row[m]) - c0[m]
            s1[m] += d
            s2[m] += d * d
    inv = np.empty(m_n, dtype=c.dtype)
    mu = np.empty(m_n, dtype=c.dtype)
    for m in range(m_n):
        a = s1[m] / n_b
        mean[lo + m] = c0[m] + a
        var[lo + m] = max(s2[m] / n_b - a * a, 0.0)
        mu[m] = mean[lo + m]
        inv[m] = 1.0 / np.sqrt(np.float64(var[lo + m]) + eps)
    g = gamma[lo:hi]
    b = beta[lo:hi]
    for n in range(n_b):
        row = c[n, lo:hi]
        xr = xhat[n, lo:hi]
        orow = out[n, lo:hi]
        for m in range(m_n):
            xr[m] = (row[m] - mu[m]) * inv[m]
        if noise.shape[0] > 0:
            nr = noise[n, lo:hi]
            for m in range(m_n):
                z = g[m] * xr[m] + b[m] + nr[m]
                orow[m] = z if z > 0 else 0
        else:
            for m in range(m_n):
                z = g[m] * xr[m] + b[m]
                orow[m] = z if z > 0 else 0


@njit(**_JIT)
def _bn_relu_grad_units(lo, hi, dout, out, xhat, gamma, var, eps, dc, dgamma, dbeta):
    """Units ``lo:hi`` of :func:`batch_norm_relu_grad` (2-D views ``(N, M)``), along contiguous row slices,
    sums in float64."""
    n_b = dout.shape[0]
    m_n = hi - lo
    zero = dout.dtype.type(0)
    sg = np.zeros(m_n)
    sb = np.zeros(m_n)
    for n in range(n_b):
        d = dout[n, lo:hi]
        o = out[n, lo:hi]
        x = xhat[n, lo:hi]
        for m in range(m_n):
            dz = d[m] if o[m] > 0 else zero
            sg[m] += dz * x[m]
            sb[m] += dz
    k = np.empty(m_n, dtype=dc.dtype)      # dc = k * dz - kb - xhat * kg
    kb = np.empty(m_n, dtype=dc.dtype)
    kg = np.empty(m_n, dtype=dc.dtype)
    for m in range(m_n):
        i = lo + m
        dgamma[i] = sg[m]
        dbeta[i] = sb[m]
        f = gamma[i] / np.sqrt(np.float64(var[i]) + eps) / n_b
        k[m] = f * n_b
        kb[m] = f * sb[m]
        kg[m] = f * sg[m]
    for n in range(n_b):
        d = dout[n, lo:hi]
        o = out[n, lo:hi]
        x = xhat[n, lo:hi]
        r = dc[n, lo:hi]
        for m in range(m_n):
            dz = d[m] if o[m] > 0 else zero
            r[m] = k[m] * dz - kb[m] - x[m] * kg[m]


def batch_norm_relu(c, gamma, beta, noise, eps, mean, var, xhat, out):
    """Training-mode batch norm, noise and ReLU in two passes (:mod:`retina.kernels._bn` has the maths).

    c : (N, ...) pre-activations; gamma, beta : the trailing shape (per unit); noise : like ``c``, or an
    empty array for none; eps : float.  Outputs: mean, var (the trailing shape; the batch statistics),
    xhat (like ``c``; the normalised input, kept for the gradient), out (like ``c``; the ReLU's output).
    """
    n_b = c.shape[0]
    m_n = c.size // max(n_b, 1)
    args = (c.reshape(n_b, m_n), gamma.reshape(m_n), beta.reshape(m_n),
            noise.reshape(n_b, m_n) if noise.size else noise.reshape(0, 0), float(eps), mean.reshape(m_n),
            var.reshape(m_n), xhat.reshape(n_b, m_n), out.reshape(n_b, m_n))
    run_chunks(m_n, lambda lo, hi: _bn_relu_units(lo, hi, *args))
    return mean, var, xhat, out


def batch_norm_relu_grad(dout, out, xhat, gamma, var, eps, dc, dgamma, dbeta):
    """The adjoint of :func:`batch_norm_relu`: from ``dout`` (like ``out``) the gradients ``dc`` (like ``c``)
    and ``dgamma``, ``dbeta`` (the trailing shape).  ``out``, ``xhat``, ``var`` come from the forward."""
    n_b = dout.shape[0]
    m_n = dout.size // max(n_b, 1)
    args = (dout.reshape(n_b, m_n), out.reshape(n_b, m_n), xhat.reshape(n_b, m_n), gamma.reshape(m_n),
            var.reshape(m_n), float(eps), dc.reshape(n_b, m_n), dgamma.reshape(m_n), dbeta.reshape(m_n))
    run_chunks(m_n, lambda lo, hi: _bn_relu_grad_units(lo, hi, *args))
    return dc, dgamma, dbeta


@njit(fastmath=True, **_JIT)
def _dense_rows(lo, hi, x, w, out):
    """Rows ``lo:hi`` of ``out = x @ w.T``: one dot product of length D per element."""
    for b in range(lo, hi):
        xb = x[b]
        for i in range(w.shape[0]):
            wi = w[i]
            acc = out.dtype.type(0)
            for j in range(xb.shape[0]):
                acc += xb[j] * wi[j]
            out[b, i] = acc


def dense(x, w, out):
    """out (N, n) = x (N, D) @ w (n, D).T, rows shared by the threads.

    Not through BLAS: OpenBLAS's threads spin for a while after each call and took cores from the kernels that
    follow (a training step 10 % slower on 2 cores); here each element is one dot product in a fixed order,
    the same bits on any thread count.
    """
    run_chunks(x.shape[0], lambda lo, hi: _dense_rows(lo, hi, x, w, out))
    return out


@njit(fastmath=True, **_JIT)
def _dense_transpose_rows(lo, hi, d, w, out):
    """Rows ``lo:hi`` of ``out = d @ w``: each row a sum of ``w``'s rows, in order."""
    for b in range(lo, hi):
        o = out[b]
        o[:] = 0
        for i in range(w.shape[0]):
            v = d[b, i]
            if v != 0:
                wi = w[i]
                for j in range(o.shape[0]):
                    o[j] += v * wi[j]


def dense_transpose(d, w, out):
    """out (N, D) = d (N, n) @ w (n, D): the gradient at a dense layer's input (rows shared by the threads, the
    same bits on any thread count; not through BLAS, see :func:`dense`)."""
    run_chunks(d.shape[0], lambda lo, hi: _dense_transpose_rows(lo, hi, d, w, out))
    return out


@njit(fastmath=False, **_JIT)
def _dense_weight_grad_cols(lo, hi, d, x, out):
    """Columns ``lo:hi`` of ``out = d.T @ x``, each element summed over the batch in order."""
    out[:, lo:hi] = 0
    for b in range(d.shape[0]):
        xb = x[b, lo:hi]
        for i in range(d.shape[1]):
            v = d[b, i]
            if v != 0:
                o = out[i, lo:hi]
                for j in range(hi - lo):
                    o[j] += v * xb[j]


def dense_weight_grad(d, x, out):
    """out (n, D) = d (N, n).T @ x (N, D): the readout's weight gradient over a batch of N.

    Each element is summed over the batch in one fixed order, whatever the thread count (BLAS splits this
    long-K product differently with 1 and 2 threads, so a seed trained on a 1-thread Dask worker differed from
    the same seed trained here); threads share the columns.
    """
    cols = out.shape[1]
    block = 256
    run_chunks(-(-cols // block), lambda lo, hi: _dense_weight_grad_cols(lo * block, min(hi * block, cols), d, x,
                                                                          out))
    return out


# --------------------------------------------------------------------------
# path-integrated gradients through conv -> ReLU -> dense -> softplus
# --------------------------------------------------------------------------
@njit(**_JIT)
def _copy_flat(src, dst):
    """``dst[:] = src`` for 1-D arrays of one length (a loop: a slice copy compiles a formatted shape error)."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


@njit(**_JIT)
def _sigmoid(u):
    if u >= 0:
        return 1.0 / (1.0 + np.exp(-u))
    e = np.exp(u)
    return e / (1.0 + e)


@njit(**_JIT)
def _softplus(u):
    if u > 0:
        return u + np.log1p(np.exp(-u))
    return np.log1p(np.exp(u))


@njit(**_JIT)
def _transpose(src, n_rows, dst):
    """``dst`` = the transpose of ``src`` read as a row-major ``(n_rows, len // n_rows)`` matrix, both flat."""
    n_cols = src.shape[0] // n_rows
    for r in range(n_rows):
        for c in range(n_cols):
            dst[c * n_rows + r] = src[r * n_cols + c]


@njit(**_JIT)
def _to_last(src, c_n, dst):
    """``dst`` (flat ``(H, W, C)``) = ``src`` (flat ``(C, H, W)``): one map from channels-first to channels-last."""
    _transpose(src, c_n, dst)


@njit(**_JIT)
def _to_first(src, c_n, dst):
    """``dst`` (flat ``(C, H, W)``) = ``src`` (flat ``(H, W, C)``): the inverse of :func:`_to_last`."""
    _transpose(src, src.shape[0] // c_n, dst)


@njit(**_JIT)
def _column_run(x, kw, wd2, c2):
    """The layer-2 columns ``xo = x - v`` (``0 <= v < kw``, ``0 <= xo < W2``) that layer-1 column ``x`` reaches,
    as one channels-last run: its first column, its start in a row of the v-reversed weights ``w2s`` (see
    :func:`_apply_switches`) and its length."""
    xlo = max(0, x - kw + 1)
    xhi = min(wd2 - 1, x)
    return xlo, (xlo - x + kw - 1) * c2, (xhi - xlo + 1) * c2


@njit(**_JIT)
def _switch_events(z0f, dzf, m1, pts, ev, order, start):
    """Sort the layer-1 units by the first path point at which their ReLU switches.

    The kernel visits the points ``pts`` (non-decreasing) in order.  A unit's state ``z0 + a*dz > 0`` is
    monotonic in ``a`` (also in floating point), so it switches at most once, at the first visit ``e`` where
    it differs from ``m1`` (the state at ``a = 0``), found by bisection with the very predicate the path
    evaluates.  On return ``order[start[e]:start[e + 1]]`` are the units that switch at visit ``e``; the units
    switching at consecutive visits are contiguous in ``order``.
    """
    n_e = pts.shape[0]
    start[:] = 0
    last = pts[n_e - 1]
    for i in range(z0f.shape[0]):
        s = m1[i]
        if (z0f[i] + last * dzf[i] > 0) == s:
            ev[i] = n_e                                   # never switches
            continue
        lo, hi = 0, n_e - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if (z0f[i] + pts[mid] * dzf[i] > 0) != s:
                hi = mid
            else:
                lo = mid + 1
        ev[i] = lo
        start[lo + 1] += 1
    for e in range(n_e):
        start[e + 1] += start[e]
    fill = start[:n_e].copy()
    for i in range(z0f.shape[0]):
        e = ev[i]
        if e < n_e:
            order[fill[e]] = i
            fill[e] += 1


@njit(**_JIT)
def _apply_switches(lo, hi, order, z0f, dzf, m1, mf, p, q, w2s, c1, wd1, c2, h2, wd2):
    """Switch the layer-1 units ``order[lo:hi]`` (see :func:`_switch_events`), keeping
    ``corr(relu(z(a)), w2) = P + a*Q`` and ``mf`` (the units' ReLU slopes, 0/1).

    Channels-last: ``z0f``, ``dzf``, ``m1``, ``mf`` are flat ``(H1, W1, C1)`` and ``p``, ``q`` flat
    ``(H2, W2, C2)``; ``w2s[c, u, v * C2 + o] = w2[o, c, u, kw - 1 - v]``, so a switching unit changes each
    layer-2 row it reaches by one contiguous axpy of up to ``kw * C2`` elements.
    """
    kh = w2s.shape[1]
    kw = w2s.shape[2] // c2
    row2 = wd2 * c2
    for t in range(lo, hi):
        i = order[t]
        on = not m1[i]
        m1[i] = on
        mf[i] = 1.0 if on else 0.0
        vz = z0f[i] if on else -z0f[i]
        vd = dzf[i] if on else -dzf[i]
        c = i % c1
        rem = i // c1
        y = rem // wd1
        xlo, s0, n = _column_run(rem - y * wd1, kw, wd2, c2)
        for u in range(max(0, y - h2 + 1), min(kh, y + 1)):      # the layer-2 rows y - u
            d0 = (y - u) * row2 + xlo * c2
            src = w2s[c, u, s0:s0 + n]
            dp = p[d0:d0 + n]
            dq = q[d0:d0 + n]
            for k in range(n):
                dp[k] += src[k] * vz
                dq[k] += src[k] * vd


@njit(fastmath={"reassoc"}, **_JIT)
def _readout(h2f, vsel, shift3, cells, u):
    """``u[j] = vsel[j] . h2f + shift3[cells[j]]`` (the dot product reassociated, so it vectorises)."""
    for jj in range(vsel.shape[0]):
        s = 0.0
        for i in range(h2f.shape[0]):
            s += vsel[jj, i] * h2f[i]
        u[jj] = s + shift3[cells[jj]]


@njit(**_JIT)
def _pig_start(z0, w2, scale2, shift2, v3, cells, p, graw):
    """The path's start, which depends on the baseline only: ``p = corr(relu(z0), w2)`` and the backward
    maps ``graw[j] = corr2^T(v3_j * scale2 * [layer-2 unit on])`` of the involved cells (none when ``graw``
    has no rows: the combined-cells accumulation of :func:`_pig_windows` does without them).  Channels-first."""
    c1, h1, wd1 = z0.shape
    c2, h2, wd2 = scale2.shape
    n2 = c2 * h2 * wd2
    hz = np.empty((c1, h1, wd1), dtype=p.dtype)
    hzf = hz.reshape(c1 * h1 * wd1)
    z0f = z0.reshape(c1 * h1 * wd1)
    for i in range(hzf.shape[0]):
        hzf[i] = z0f[i] if z0f[i] > 0 else 0
    _corr2d_one(hz, w2, p)
    pf = p.reshape(n2)
    s2f = scale2.reshape(n2)
    b2f = shift2.reshape(n2)
    gtmp = np.empty((c2, h2, wd2), dtype=p.dtype)
    gtf = gtmp.reshape(n2)
    for jj in range(graw.shape[0]):
        vf = v3[cells[jj]].reshape(n2)
        for i in range(n2):
            gtf[i] = vf[i] * s2f[i] if s2f[i] * pf[i] + b2f[i] > 0 else 0
        _corr2d_t_one(gtmp, w2, graw[jj])


@njit(**_JIT)
def _corr2d_t_point(g, w2s, c, y, x, c2, h2, wd2):
    """``corr2^T(g)[c, y, x]`` (see :func:`_corr2d_t_one`) at one layer-1 unit, for a channels-last layer-2
    map ``g`` (flat ``(H2, W2, C2)``; ``w2s`` as in :func:`_apply_switches`): ``C2 * kh * kw`` products."""
    kh = w2s.shape[1]
    xlo, s0, n = _column_run(x, w2s.shape[2] // c2, wd2, c2)
    s = 0.0
    for u in range(max(0, y - h2 + 1), min(kh, y + 1)):
        d0 = ((y - u) * wd2 + xlo) * c2
        src = w2s[c, u]
        for k in range(n):
            s += g[d0 + k] * src[s0 + k]
    return s


@njit(**_JIT)
def _pig_windows(start, stop, z0s, dzs, alphas, weights, bounds, pts, w2, w2s, w2t, scale2, shift2, v3, s2f, b2f,
                 vsel, shift3, cw, cells, g1s, a2s, r0s, r1s, want_a2, p0, graw0, shared, combined):
    """Windows ``start:stop`` of ``pig_conv_relu_dense`` (see there), one after the other: a thread's share.

    Window ``b`` starts from ``z0s[b % len(z0s)]``; with ``shared`` the start state ``p0``, ``graw0``
    (:func:`_pig_start` of the common baseline, channels-last) is copied instead of computed.  ``pts`` are
    the path points in the order the loop visits them (see :func:`pig_conv_relu_dense`); each window first
    sorts its layer-1 units by the visit at which they switch (:func:`_switch_events`), so a step touches
    only the units that switch in it.

    The path state is held channels-last (``(H, W, C)``: ``w2s``, ``w2t``, ``s2f``, ``b2f`` and ``vsel`` are
    the layer-2 weights, affine and readout in that layout, see :func:`pig_conv_relu_dense`), so that every
    sparse update (a layer-1 switch into ``P``, ``Q``; a layer-2 slope change into a backward map) is a few
    contiguous axpys of ``kw * C`` elements rather than ``C * kh`` strided runs of ``kw``.  Inputs and outputs
    stay channels-first.

    Two ways to accumulate ``g1 = sum_k w_k sum_j cw[o, j] sigma_k[j] mf_k * corr2^T(v3_j * s2 * slope2_k)``:

    * per cell (``combined`` False): each involved cell ``j`` keeps its backward map ``graw[j]``, updated where
      a layer-2 slope changes (``C1*kh*kw`` per cell and change), and every step adds every map
      (``n_j * n1``);
    * combined (``combined`` True, for many cells per output): the sum is linear in the layer-2 map, so each
      output keeps ``R = sum_k w_k * s2 * slope2_k * V_k`` with ``V_k = sum_j cw[o, j] sigma_k[j] v3_j``
      (``n_j * n2`` per step), and ``C_k = corr2^T(R_k)``.  A layer-1 unit's ``mf`` changes at most a few
      times, so its g1 is a sum over segments of ``mf * (C_end - C_start)``: ``C`` is evaluated at that
      unit alone when it changes (``C2*kh*kw``) and once everywhere at the end.  No per-cell maps.
    """
    nz = z0s.shape[0]
    c1, h1, wd1 = z0s.shape[1], z0s.shape[2], z0s.shape[3]
    c2, _, kh, kw = w2.shape
    h2, wd2 = scale2.shape[1], scale2.shape[2]
    n_out = cw.shape[0]
    n_j = cells.shape[0]
    n1 = c1 * h1 * wd1
    n2 = c2 * h2 * wd2
    row1 = wd1 * c1
    kwc1 = kw * c1
    dt = g1s.dtype
    secant = bounds.shape[0] > 0
    n_g = 0 if combined else n_j
    n_c = n_out if combined else 0
    n_a = n_out if want_a2 else 0

    # one set of buffers per thread, reused window after window (channels-last unless marked)
    z0f = np.empty(n1, dtype=dt)
    dzf = np.empty(n1, dtype=dt)
    m1 = np.empty(n1, dtype=np.bool_)
    n_v = 2 if secant else 1                           # visits per step: the node (and the cell's right end)
    ev = np.empty(n1, dtype=np.int64)
    order = np.empty(n1, dtype=np.int64)
    evs = np.empty(pts.shape[0] + 1, dtype=np.int64)   # order[evs[e]:evs[e + 1]] switch at visit e
    hd = np.empty((c1, h1, wd1), dtype=dt)             # channels-first: the change of the layer-2 input
    pcf = np.empty((c2, h2, wd2), dtype=dt)            # channels-first scratch
    gcf = np.empty((0 if shared else n_g, c1, h1, wd1), dtype=dt)
    p = np.empty(n2, dtype=dt)
    q = np.empty(n2, dtype=dt)
    graw = np.empty((n_g, n1), dtype=dt)               # raw backward maps corr2^T(v3_j * scale2 * slope2)
    gl = np.empty((n_out, n1), dtype=dt)               # this window's g1
    al = np.empty((n_a, n2), dtype=dt)                 # this window's a2
    sl2 = np.empty(n2, dtype=dt)        # layer-2 ReLU slope each backward map uses (0/1 at a node, or secant)
    new2 = np.empty(n2, dtype=dt)
    zb = np.empty(n2, dtype=dt)         # layer-2 pre-activation at the left boundary
    h2f = np.empty(n2, dtype=dt)
    dh2 = np.empty(n2, dtype=dt)        # this step's increment of each layer-2 output
    u = np.empty(n_j, dtype=np.float64)
    sig = np.empty(n_j, dtype=np.float64)
    mf = np.empty(n1, dtype=dt)
    rmf = np.empty((n_c, n2), dtype=np.float64)        # combined: R per output
    gacc = np.empty((n_c, n1), dtype=np.float64)       # combined: g1 of the closed segments
    mark = np.empty((n_c, n1), dtype=np.float64)       # combined: C where each open segment began
    mcur = np.empty(n1, dtype=dt)                      # combined: mf of each open segment
    vtmp = np.empty(n2, dtype=np.float64)
    rcf = np.empty((c2, h2, wd2), dtype=np.float64)    # combined, channels-first: R of one output
    cfull = np.empty((c1, h1, wd1), dtype=np.float64)  # combined, channels-first: corr2^T(R)
    for b in range(start, stop):   # (lo and hi below are a quadrature cell's bounds)
        z0c, dzc = z0s[b % nz], dzs[b]
        g1f = g1s[b].reshape(n_out, n1)
        r0, r1 = r0s[b], r1s[b]

        # state at a = 0
        z0cf = z0c.reshape(n1)
        dzcf = dzc.reshape(n1)
        hdf = hd.reshape(n1)
        for i in range(n1):
            hdf[i] = dzcf[i] if z0cf[i] > 0 else 0
        _to_last(z0cf, c1, z0f)
        _to_last(dzcf, c1, dzf)
        for i in range(n1):
            m1[i] = z0f[i] > 0
            mf[i] = 1.0 if m1[i] else 0.0
            mcur[i] = mf[i]                  # combined: every segment opens at a = 0
        _switch_events(z0f, dzf, m1, pts, ev, order, evs)
        if shared:
            _copy_flat(p0, p)
            if not combined:
                _copy_flat(graw0.reshape(n_g * n1), graw.reshape(n_g * n1))
        else:
            _pig_start(z0c, w2, scale2, shift2, v3, cells, pcf, gcf)
            _to_last(pcf.reshape(n2), c2, p)
            for jj in range(n_g):
                _to_last(gcf[jj].reshape(n1), c1, graw[jj])
        _corr2d_one(hd, w2, pcf)
        _to_last(pcf.reshape(n2), c2, q)

        for i in range(n2):
            z = s2f[i] * p[i] + b2f[i]
            zb[i] = z
            sl2[i] = 1.0 if z > 0 else 0.0
            h2f[i] = z if z > 0 else 0
        _readout(h2f, vsel, shift3, cells, u)
        for jj in range(n_j):
            r0[jj] = _softplus(u[jj])

        gl[:] = 0
        al[:] = 0
        rmf[:] = 0
        gacc[:] = 0
        mark[:] = 0
        for k in range(alphas.shape[0]):
            a = alphas[k]
            wk = weights[k]
            e = k * n_v
            if secant and k > 0:     # the previous cell's switching units: back to 0/1 slopes
                for t in range(evs[e - n_v], evs[e]):
                    mf[order[t]] = 1.0 if m1[order[t]] else 0.0
            _apply_switches(evs[e], evs[e + 1], order, z0f, dzf, m1, mf, p, q, w2s, c1, wd1, c2, h2, wd2)
            for i in range(n2):
                z = s2f[i] * (p[i] + a * q[i]) + b2f[i]
                on = z > 0
                h2f[i] = z if on else 0
                if not secant:
                    new2[i] = 1.0 if on else 0.0
                    dh2[i] = wk * s2f[i] * q[i] if on else 0
            _readout(h2f, vsel, shift3, cells, u)
            for jj in range(n_j):
                sig[jj] = _sigmoid(u[jj])
            if secant:
                # exact increments over the node's cell [lo, hi]: ReLU slopes become secants
                lo = bounds[k]
                hi = bounds[k + 1]
                _apply_switches(evs[e + 1], evs[e + 2], order, z0f, dzf, m1, mf, p, q, w2s, c1, wd1, c2, h2,
                                wd2)
                for i in range(n2):
                    zr = s2f[i] * (p[i] + hi * q[i]) + b2f[i]
                    zl = zb[i]
                    d = (zr if zr > 0 else 0) - (zl if zl > 0 else 0)
                    dh2[i] = d
                    new2[i] = d / (zr - zl) if zr != zl else (1.0 if zr > 0 else 0.0)
                    zb[i] = zr
                for t in range(evs[e], evs[e + 2]):   # switched inside the cell: the fraction of it spent on
                    i = order[t]
                    zl = z0f[i] + lo * dzf[i]
                    zr = z0f[i] + hi * dzf[i]
                    mf[i] = ((zr if zr > 0 else 0) - (zl if zl > 0 else 0)) / (zr - zl)
            if combined:   # close the segment of every unit whose mf changes, at C_{k-1}
                for t in range(evs[max(e - n_v, 0)] if secant else evs[e], evs[e + n_v]):
                    i = order[t]
                    if mf[i] != mcur[i]:
                        c = i % c1
                        rem = i // c1
                        y = rem // wd1
                        for o in range(n_out):
                            cv = _corr2d_t_point(rmf[o], w2s, c, y, rem - y * wd1, c2, h2, wd2)
                            gacc[o, i] += mcur[i] * (cv - mark[o, i])
                            mark[o, i] = cv
                        mcur[i] = mf[i]
                # and add this step to R (and the layer-2 conductance), with the cells summed first
                for o in range(n_out):
                    vtmp[:] = 0
                    for jj in range(n_j):
                        cs = cw[o, jj] * sig[jj]
                        if cs == 0:
                            continue
                        vs = vsel[jj]
                        for i in range(n2):
                            vtmp[i] += cs * vs[i]
                    rd = rmf[o]
                    for i in range(n2):
                        rd[i] += wk * s2f[i] * new2[i] * vtmp[i]
                    if want_a2:
                        a2d = al[o]
                        for i in range(n2):
                            a2d[i] += vtmp[i] * dh2[i]
                continue
            # backward maps: update only the layer-2 units whose slope changed, one row of kw*C1 at a time
            for i in range(n2):
                ds = new2[i] - sl2[i]
                if ds != 0:
                    sl2[i] = new2[i]
                    o = i % c2
                    rem = i // c2
                    yo = rem // wd2
                    d0 = yo * row1 + (rem - yo * wd2) * c1
                    for jj in range(n_j):
                        gv = ds * vsel[jj, i] * s2f[i]
                        gj = graw[jj]
                        for uu in range(kh):
                            src = w2t[o, uu]
                            dst = gj[d0 + uu * row1:d0 + uu * row1 + kwc1]
                            for t in range(kwc1):
                                dst[t] += gv * src[t]
            for o in range(n_out):
                for jj in range(n_j):
                    if cw[o, jj] == 0:
                        continue
                    cs = cw[o, jj] * sig[jj]
                    cf = wk * cs
                    gsrc = graw[jj]
                    gdst = gl[o]
                    for i in range(n1):             # vectorised: masked axpy
                        gdst[i] += cf * mf[i] * gsrc[i]
                    if want_a2:
                        a2d = al[o]
                        vs = vsel[jj]
                        for i in range(n2):
                            a2d[i] += cs * vs[i] * dh2[i]
        if combined:   # close every segment at C_K = corr2^T(R) and write g1
            cff = cfull.reshape(n1)
            hw1 = h1 * wd1
            for o in range(n_out):
                _to_first(rmf[o], c2, rcf.reshape(n2))
                _corr2d_t_one(rcf, w2, cfull)
                for i in range(n1):
                    c = i % c1
                    j = c * hw1 + i // c1
                    g1f[o, j] = gacc[o, i] + mcur[i] * (cff[j] - mark[o, i])
        else:
            for o in range(n_out):
                _to_first(gl[o], c1, g1f[o])
        if want_a2:
            a2f = a2s[b].reshape(n_out, n2)
            for o in range(n_out):
                _to_first(al[o], c2, a2f[o])
        # a = 1
        n_e = pts.shape[0]
        _apply_switches(evs[n_e - 1], evs[n_e], order, z0f, dzf, m1, mf, p, q, w2s, c1, wd1, c2, h2, wd2)
        for i in range(n2):
            z = s2f[i] * (p[i] + q[i]) + b2f[i]
            h2f[i] = z if z > 0 else 0
        _readout(h2f, vsel, shift3, cells, u)
        for jj in range(n_j):
            r1[jj] = _softplus(u[jj])


COMBINE_CELLS = 4
"""``pig_conv_relu_dense`` accumulates over the cells combined (no per-cell backward maps, see
:func:`_pig_windows`) when the involved cells number at least this many per output."""


def _channels_last(a):
    """``(..., C, H, W)`` -> C-contiguous ``(..., H, W, C)``."""
    return np.ascontiguousarray(np.moveaxis(a, -3, -1))


def pig_conv_relu_dense(z0, dz, alphas, weights, bounds, w2, scale2, shift2, v3, shift3, cw, cells,
                        g1, a2, r0, r1, want_a2):
    """Path-integrated gradients of ``r = softplus(v3 . relu(scale2*corr(relu(z), w2)+shift2) + shift3)``
    along the straight path ``z(a) = z0 + a*dz`` of the pre-activation ``z``.

    Parameters (one row of the batch per window; ``B`` windows):
    z0, dz : (B, C1, H1, W1) pre-ReLU layer-1 activity at the baseline and its change; ``z0`` may
        be (1, C1, H1, W1), one baseline shared by every window (a constant baseline stimulus),
        whose start state (``corr(relu(z0))`` and the backward maps) is then computed once.
    alphas, weights : (K,) quadrature nodes in [0, 1] (increasing) and weights.
    bounds : (K+1,) or (0,)
        Each node's quadrature cell ``[bounds[k], bounds[k+1]]`` (``bounds[0] = 0``,
        ``bounds[K] = 1``, ``bounds[k+1] - bounds[k] = weights[k]``, the node inside
        its cell): every ReLU derivative at node ``k`` is replaced by the ReLU's
        secant slope over the cell, so a kink between two nodes costs no
        quadrature error.  Empty: ReLU derivatives at the nodes (plain rule).
    w2 : (C2, C1, kh, kw); scale2, shift2 : (C2, H2, W2) per unit.
    v3 : (n_cells, C2, H2, W2) readout weights already multiplied by the per-cell scale;
    shift3 : (n_cells,).
    cw : (n_out, J) output weights over the involved cells ``cells`` (J,) (indices into v3).
    Outputs:
    g1 : (B, n_out, C1, H1, W1) ``sum_k weights_k * d out_o / d z(a_k)``, so that
        ``dz * g1`` is the layer-1 conductance;
    a2 : (B, n_out, C2, H2, W2) layer-2 conductance (written when ``want_a2``);
    r0, r1 : (B, J) cell rates at a = 0 and a = 1.

    The path is piecewise linear: every layer-1 unit is affine in ``a`` and
    switches its ReLU at most once, so the layer-2 input ``corr(h1(a))`` is kept
    as ``P + a*Q`` and updated only where a unit switches; likewise the
    backward map through layer 2 is updated only where a layer-2 unit's slope
    changes.  Per step the work is O(units), not O(convolution); results
    equal a full forward/backward per step up to rounding.  With many cells
    per output (:data:`COMBINE_CELLS`) the backward maps are combined over
    the cells instead of kept per cell (:func:`_pig_windows`).

    With secant slopes the layer-1 conductance of node ``k`` is
    ``dout/dh1 . (h1(hi) - h1(lo))`` through layer-2 slopes
    ``(h2(hi) - h2(lo)) / (z2(hi) - z2(lo))``: summed over units it telescopes
    to ``sigma(u(a_k)) * (u(hi) - u(lo))``, so the completeness error is only
    the readout's smooth curvature (O(K^-2)) instead of the ReLU kinks' O(1/K).
    """
    shared = z0.shape[0] == 1 and dz.shape[0] > 1
    combined = cells.shape[0] >= COMBINE_CELLS * cw.shape[0]
    dt = g1.dtype
    c2, c1, kh, kw = w2.shape
    n_g = 0 if combined else cells.shape[0]
    # the path points in the order the kernel visits them: each node (and, with secants, its cell's right end),
    # then a = 1
    n_v = 2 if bounds.shape[0] > 0 else 1
    pts = np.empty(alphas.shape[0] * n_v + 1)
    pts[0:-1:n_v] = alphas
    if n_v == 2:
        pts[1:-1:2] = bounds[1:]
    pts[-1] = 1.0
    if np.any(np.diff(pts) < -1e-12):
        raise ValueError("pig_conv_relu_dense: the quadrature nodes must increase and lie in their cells, in [0, 1]")
    pts = np.maximum.accumulate(pts)   # a node a rounding error left of its cell's start is visited at the start
    # the layer-2 operands channels-last (see _pig_windows); w2s with its columns reversed
    w2s = np.ascontiguousarray(w2[:, :, :, ::-1].transpose(1, 2, 3, 0)).reshape(c1, kh, kw * c2)
    w2t = _channels_last(w2).reshape(c2, kh, kw * c1)
    s2f, b2f = (_channels_last(a).reshape(-1) for a in (scale2, shift2))
    vsel = _channels_last(v3[cells]).reshape(cells.shape[0], -1)
    p0 = np.empty(scale2.size, dtype=dt)
    graw0 = np.empty((n_g, z0[0].size), dtype=dt)
    if shared:  # one baseline for every window (a constant stimulus): its start state is computed once
        pc = np.empty(scale2.shape, dtype=dt)
        gc = np.empty((n_g,) + z0.shape[1:], dtype=dt)
        _pig_start(z0[0], w2, scale2, shift2, v3, cells, pc, gc)
        p0 = _channels_last(pc).reshape(-1)
        graw0 = _channels_last(gc).reshape(n_g, z0[0].size)

    def windows(lo, hi):
        _pig_windows(lo, hi, z0, dz, alphas, weights, bounds, pts, w2, w2s, w2t, scale2, shift2, v3, s2f, b2f, vsel,
                     shift3, cw, cells, g1, a2, r0, r1, bool(want_a2), p0, graw0, shared, combined)

    run_chunks(dz.shape[0], windows)
    return g1, a2, r0, r1


# --------------------------------------------------------------------------
# Gaussian noise: a counter-based stream per block, ziggurat sampling
# --------------------------------------------------------------------------
_NORMAL_LAYERS = 256
_NORMAL_R = 3.6541528853610088       # right edge of the base layer (Marsaglia & Tsang's ziggurat, 256 layers)
_NORMAL_AREA = 4.92867323399e-3      # area of each layer
NORMAL_BLOCK = 4096
"""Draws per block of :func:`standard_normal`: block ``b`` of ``out`` comes from its own stream, keyed by the
seed and ``b`` alone, so the numbers do not depend on the thread count or the order blocks are filled in."""


def _ziggurat_tables(n=_NORMAL_LAYERS, r=_NORMAL_R, v=_NORMAL_AREA):
    """Thresholds ``k`` (on 52-bit integers), widths ``w`` and densities ``f`` of the normal ziggurat's layers.

    Layer 0 is the base (the rectangle of width ``v / f(r)``, whose part past
    ``r`` stands for the tail); layer ``i >= 1`` spans ``[0, x_i]`` with
    ``x_{n-1} = r`` and ``x_i (f(x_{i-1}) - f(x_i)) = v`` upwards.  A draw
    ``u < k[i]`` lies wholly under the density and is accepted at once.
    """
    m = 2.0 ** 52
    k, w, f = np.zeros(n, np.uint64), np.zeros(n), np.zeros(n)
    dens = lambda x: np.exp(-0.5 * x * x)  # noqa: E731
    x_hi = r
    q = v / dens(r)
    k[0] = np.uint64(r / q * m)
    w[0], w[n - 1] = q / m, r / m
    f[0], f[n - 1] = 1.0, dens(r)
    for i in range(n - 2, 0, -1):
        x = np.sqrt(-2.0 * np.log(v / x_hi + dens(x_hi)))
        k[i + 1] = np.uint64(x / x_hi * m)
        x_hi = x
        f[i], w[i] = dens(x), x / m
    return k, w, f


_ZIG_K, _ZIG_W, _ZIG_F = _ziggurat_tables()
_U64 = np.uint64


@njit(inline="always")
def _splitmix(state):
    """SplitMix64: the next state and its 64 output bits."""
    state = state + _U64(0x9E3779B97F4A7C15)
    z = state
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return state, z ^ (z >> _U64(31))


@njit(**_JIT)
def _normal_blocks(lo, hi, seed, scale, out, k, w, f):
    """``out[b * NORMAL_BLOCK : (b + 1) * NORMAL_BLOCK] = scale * N(0, 1)`` for blocks ``lo <= b < hi``."""
    n = out.shape[0]
    inv_r = 1.0 / _NORMAL_R
    unit = 2.0 ** -53
    for b in range(lo, hi):
        # the block's stream starts at a hashed point of the sequence: the mixed output of seed ^ f(b)
        _, state = _splitmix(_U64(seed) ^ (_U64(b) * _U64(0xD1B54A32D192ED03)))
        for i in range(b * NORMAL_BLOCK, min(n, (b + 1) * NORMAL_BLOCK)):
            while True:
                state, bits = _splitmix(state)
                layer = np.intp(bits & _U64(0xFF))
                negative = (bits >> _U64(8)) & _U64(1)
                u = bits >> _U64(12)              # 52 bits, independent of the layer and the sign
                x = np.float64(np.int64(u)) * w[layer]
                if u < k[layer]:
                    break
                if layer == 0:                    # the tail past r (Marsaglia's exponential method)
                    while True:
                        state, b1 = _splitmix(state)
                        state, b2 = _splitmix(state)
                        xx = -inv_r * np.log((np.float64(np.int64(b1 >> _U64(11))) + 1.0) * unit)
                        yy = -np.log((np.float64(np.int64(b2 >> _U64(11))) + 1.0) * unit)
                        if yy + yy > xx * xx:
                            break
                    x = _NORMAL_R + xx
                    break
                state, b1 = _splitmix(state)       # the wedge: accept under the density
                y = f[layer] + np.float64(np.int64(b1 >> _U64(11))) * unit * (f[layer - 1] - f[layer])
                if y < np.exp(-0.5 * x * x):
                    break
            out[i] = scale * (-x if negative else x)


def standard_normal(seed, scale, out):
    """Fill ``out`` (any shape, C-contiguous float32 or float64) with ``scale`` times standard normal draws.

    ``seed`` (an integer in ``[0, 2**64)``) keys every block of
    :data:`NORMAL_BLOCK` draws, each from its own SplitMix64 stream turned
    normal by a 256-layer ziggurat (Marsaglia & Tsang, with the layer, the
    sign and the abscissa taken from separate bits, as Doornik advises).
    The same seed gives the same numbers on any number of threads.  Not a
    contract kernel: the trainer draws its noise on the host for every
    backend, so a model trains the same on the CPU and the GPU.
    """
    flat = out.reshape(-1)
    n_blocks = -(-flat.shape[0] // NORMAL_BLOCK)
    run_chunks(n_blocks, lambda lo, hi: _normal_blocks(lo, hi, int(seed), float(scale), flat, _ZIG_K, _ZIG_W,
                                                       _ZIG_F))
    return out


_contract.check(sys.modules[__name__], "kernels")
