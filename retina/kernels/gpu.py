"""CuPy GPU kernels: the twins of :mod:`retina.kernels.cpu`, same names, signatures and semantics.

* Direct correlations (layer 1 over movies, layer 2, their adjoints and weight
  gradients) are raw CUDA kernels, kept as a readable source beside this file
  (``cuda/conv.cu``) and compiled by CuPy (NVRTC) on first use, per float type
  (:func:`compile_kernel`, which the simulator's kernels use too).
* FFT correlations run the same algorithm as the CPU (:mod:`retina.kernels._fft`)
  on cuFFT through ``cupyx.scipy.fft``.
* ``dense`` is cuBLAS; ``affine_relu`` an elementwise kernel; the training batch norm
  (``batch_norm_relu`` and its gradient) CuPy array operations (:mod:`retina.kernels._bn`).
* ``pig_conv_relu_dense`` evaluates every path point of a block of windows at
  once (:mod:`retina.kernels._pig`): one batched layer-2 forward and one
  backward launch per block instead of the CPU's event-driven loop.

Every function takes C-contiguous CuPy arrays of one float dtype (float32 or
float64) and writes into the caller's ``out``; nothing is copied to the host.
Importing this module needs CuPy; :func:`retina._backend.resolve` decides
whether it can be used.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import cupy as cp
import cupyx.scipy.fft as cfft

from . import _bn, _contract, _fft, _pig

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
    "SOURCES",
    "compile_kernel",
]

SOURCES = Path(__file__).with_name("cuda")
_THREADS = 256
_REDUCE_THREADS = 256  # power of two (block_sum in conv.cu)
_CTYPE = {"float32": "float", "float64": "double"}
_CONV = ("corr2d_fwd", "corr2d_t", "corr2d_wgrad", "corr3d_movie_fwd", "corr3d_movie_t", "corr3d_movie_wgrad")


@functools.cache
def _module(path, names):
    exprs = [f"{k}<{t}>" for k in names for t in _CTYPE.values()]
    return cp.RawModule(code=Path(path).read_text(), options=("-std=c++14",), name_expressions=exprs)


def compile_kernel(path, names, name, dtype):
    """The templated kernel ``name<float|double>`` of the CUDA source ``path`` (declaring ``names``),
    compiled by NVRTC on first use for the float type of ``dtype``."""
    ctype = _CTYPE.get(cp.dtype(dtype).name)
    if ctype is None:
        raise TypeError(f"GPU kernels take float32 or float64 arrays, got {cp.dtype(dtype).name}")
    return _module(str(path), tuple(names)).get_function(f"{name}<{ctype}>")


def _kernel(source, name, dtype):
    return compile_kernel(SOURCES / source, _CONV, name, dtype)


def _grid(total):
    return (max(1, min((int(total) + _THREADS - 1) // _THREADS, 65535 * 32)),)


def _i(*vals):
    return tuple(cp.int32(v) for v in vals)


# ------------------------------------------------------------------ layer 2
def corr2d(x, w, out):
    """Batched valid 2-D correlation: x (N, Ci, H, W), w (Co, Ci, kh, kw) -> out (N, Co, Ho, Wo)."""
    n, ci, h, wd = x.shape
    co, _, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    _kernel("conv.cu", "corr2d_fwd", x.dtype)(_grid(out.size), (_THREADS,),
                                              (x, w, out) + _i(n, ci, h, wd, co, kh, kw, ho, wo))
    return out


def corr2d_transpose(g, w, out):
    """Adjoint of ``corr2d``: g (N, Co, Ho, Wo), w (Co, Ci, kh, kw) -> out (N, Ci, H, W)."""
    n, co, ho, wo = g.shape
    ci, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    h, wd = out.shape[2], out.shape[3]
    _kernel("conv.cu", "corr2d_t", g.dtype)(_grid(out.size), (_THREADS,),
                                            (g, w, out) + _i(n, ci, h, wd, co, kh, kw, ho, wo))
    return out


def corr2d_weight_grad(x, g, out):
    """Weight gradient of ``corr2d`` summed over the batch -> out (Co, Ci, kh, kw) (double accumulation)."""
    n, ci, h, wd = x.shape
    co, ho, wo = g.shape[1], g.shape[2], g.shape[3]
    kh, kw = out.shape[2], out.shape[3]
    _kernel("conv.cu", "corr2d_wgrad", x.dtype)((out.size,), (_REDUCE_THREADS,),
                                                (x, g, out) + _i(n, ci, h, wd, co, kh, kw, ho, wo))
    return out


# ------------------------------------------------------------------ layer 1
def corr3d_movie(x, w, out):
    """Direct valid 3-D correlation of a movie: x (T, H, W), w (C, K, kh, kw) -> out (T-K+1, C, Ho, Wo)."""
    t, h, wd = x.shape
    c, k, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    _kernel("conv.cu", "corr3d_movie_fwd", x.dtype)(_grid(out.size), (_THREADS,),
                                                    (x, w, out) + _i(t, h, wd, c, k, kh, kw, ho, wo))
    return out


def corr3d_movie_transpose(g, w, out):
    """Adjoint of ``corr3d_movie``: g (N, C, Ho, Wo), w (C, K, kh, kw) -> out (N+K-1, H, W)."""
    n, c, ho, wo = g.shape
    k, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    h, wd = out.shape[1], out.shape[2]
    _kernel("conv.cu", "corr3d_movie_t", g.dtype)(_grid(out.size), (_THREADS,),
                                                  (g, w, out) + _i(n, c, k, kh, kw, ho, wo, h, wd))
    return out


def corr3d_movie_weight_grad(x, g, out):
    """Weight gradient of ``corr3d_movie`` summed over windows -> out (C, K, kh, kw)."""
    h, wd = x.shape[1], x.shape[2]
    n, c, ho, wo = g.shape
    k, kh, kw = out.shape[1], out.shape[2], out.shape[3]
    _kernel("conv.cu", "corr3d_movie_wgrad", x.dtype)((out.size,), (_REDUCE_THREADS,),
                                                      (x, g, out) + _i(n, c, k, kh, kw, ho, wo, h, wd))
    return out


# ------------------------------------------------------------------ FFT paths (cuFFT, shared algorithm)
def _aligned(x):
    """``x``, or a copy of it where cuFFT would refuse it as a real-to-complex input: a view (a slice of a movie)
    whose start is not aligned to the complex element (8 bytes for float32, 16 for float64)."""
    return x if x.data.ptr % (2 * x.dtype.itemsize) == 0 else x.copy()


class _CuFFT:
    """``cupyx.scipy.fft`` for the shared algorithm of :mod:`retina.kernels._fft`, its real inputs aligned."""

    irfftn, irfft2, irfft, fft, ifft = cfft.irfftn, cfft.irfft2, cfft.irfft, cfft.fft, cfft.ifft

    @staticmethod
    def rfft(x, *args, **kwargs):
        return cfft.rfft(_aligned(x), *args, **kwargs)

    @staticmethod
    def rfftn(x, *args, **kwargs):
        return cfft.rfftn(_aligned(x), *args, **kwargs)

    @staticmethod
    def rfft2(x, *args, **kwargs):
        return cfft.rfft2(_aligned(x), *args, **kwargs)


def corr3d_movie_fft(x, w, out, *, chunk=512, workers=None, cache=None, spectra=None):
    """``corr3d_movie`` by FFT (see the CPU twin); ``workers`` is accepted and ignored."""
    return _fft.corr3d_movie_fft(cp, _CuFFT, {}, x, w, out, chunk, cache, spectra)


def corr3d_runs_fft(xs, w, outs, *, workers=None, cache=None, spectra=None):
    """Several runs by FFT, one after the other (see the CPU twin)."""
    return _fft.corr3d_runs_fft(cp, _CuFFT, {}, xs, w, outs, cache, spectra)


def corr3d_movie_transpose_fft(g, w, out, *, workers=None):
    return _fft.corr3d_movie_transpose_fft(cp, _CuFFT, {}, g, w, out)


def corr3d_movie_weight_grad_fft(x, g, out, *, workers=None, spectrum=None):
    return _fft.corr3d_movie_weight_grad_fft(cp, _CuFFT, {}, x, g, out, spectrum)


def corr3d_runs_weight_grad_fft(xs, gs, out, *, workers=None, spectra=None):
    return _fft.corr3d_runs_weight_grad_fft(cp, _CuFFT, {}, xs, gs, out, spectra)


def corr2d_fft(x, w, out, *, workers=None, spectra=None):
    return _fft.corr2d_fft(cp, _CuFFT, {}, x, w, out, spectra)


def corr2d_transpose_fft(g, w, out, *, workers=None, spectra=None):
    return _fft.corr2d_transpose_fft(cp, _CuFFT, {}, g, w, out, spectra)


def corr2d_weight_grad_fft(x, g, out, *, workers=None, spectrum=None, g_spectrum=None):
    return _fft.corr2d_weight_grad_fft(cp, _CuFFT, {}, x, g, out, spectrum, g_spectrum)


# ------------------------------------------------------------------ pointwise and dense
_affine_relu = cp.ElementwiseKernel("T z, T scale, T shift", "T out",
                                    "T v = scale * z + shift; out = v > 0 ? v : (T)0", "retina_affine_relu")


def batch_norm_relu(c, gamma, beta, noise, eps, mean, var, xhat, out):
    """Training-mode batch norm, noise and ReLU (:func:`retina.kernels.cpu.batch_norm_relu`), by CuPy array
    operations (:mod:`retina.kernels._bn`)."""
    mean, var, xhat, out = _bn.batch_norm_relu(cp, c, gamma, beta, noise, eps, mean, var, xhat, out)
    return mean, var, xhat, out


def batch_norm_relu_grad(dout, out, xhat, gamma, var, eps, dc, dgamma, dbeta):
    """The adjoint of :func:`batch_norm_relu` (:func:`retina.kernels.cpu.batch_norm_relu_grad`)."""
    dc, dgamma, dbeta = _bn.batch_norm_relu_grad(cp, dout, out, xhat, gamma, var, eps, dc, dgamma, dbeta)
    return dc, dgamma, dbeta


def affine_relu(z, scale, shift, out):
    """out = max(scale * z + shift, 0); scale/shift broadcast over the leading (batch) axis."""
    _affine_relu(z, scale, shift, out)
    return out


def dense(x, w, out):
    """out (N, n) = x (N, D) @ w (n, D).T through cuBLAS."""
    cp.matmul(x, w.T, out=out)
    return out


def dense_transpose(d, w, out):
    """out (N, D) = d (N, n) @ w (n, D) through cuBLAS (the gradient at a dense layer's input)."""
    cp.matmul(d, w, out=out)
    return out


def dense_weight_grad(d, x, out):
    """out (n, D) = d (N, n).T @ x (N, D) through cuBLAS (the readout's weight gradient)."""
    cp.matmul(d.T, x, out=out)
    return out


PIG_LAYER2 = "direct"
"""How :func:`pig_conv_relu_dense` correlates layer 2 for its path batch: ``"direct"`` (the CUDA kernels of
``cuda/conv.cu``, measured on an H200: about 5 TFLOP/s, ``bench/RESULTS.md``) or ``"fft"`` (cuFFT through
:mod:`retina.kernels._fft`; about 10x fewer operations for 11x11 kernels, not yet measured on a GPU).  Both are
tested against the CPU's event-driven kernel."""


def pig_conv_relu_dense(z0, dz, alphas, weights, bounds, w2, scale2, shift2, v3, shift3, cw, cells,
                        g1, a2, r0, r1, want_a2):
    """Path-integrated gradients of the layer-2/readout head; see :func:`retina.kernels.cpu.pig_conv_relu_dense`.

    Host arrays among the small arguments (``alphas``, ``weights``, ``bounds``, ``cw``,
    ``cells``, ``r0``, ``r1``) are accepted; ``r0``/``r1`` are filled in place
    whichever side they live on.
    """
    d0, d1 = cp.empty(r0.shape, cp.float64), cp.empty(r1.shape, cp.float64)
    fwd, adj = (corr2d_fft, corr2d_transpose_fft) if PIG_LAYER2 == "fft" else (corr2d, corr2d_transpose)
    _pig.pig_conv_relu_dense(cp, fwd, adj, z0, dz, cp.asarray(alphas), cp.asarray(weights),
                             cp.asarray(bounds), w2,
                             scale2, shift2, v3, shift3, cp.asarray(cw), cp.asarray(cells), g1, a2, d0, d1,
                             bool(want_a2))
    for dst, src in ((r0, d0), (r1, d1)):
        dst[...] = src if isinstance(dst, cp.ndarray) else src.get()
    return g1, a2, r0, r1


_contract.check(sys.modules[__name__], "kernels")
