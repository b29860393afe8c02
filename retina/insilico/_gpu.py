"""The simulator's hot loops on the GPU (CuPy): twins of :mod:`retina.insilico._cpu`.

The CUDA source ``cuda/insilico.cu`` beside this file is compiled on first use
with the package's kernel compiler (:func:`retina.kernels.gpu.compile_kernel`).
Importing this module needs CuPy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cupy as cp

from ..kernels import _contract
from ..kernels.gpu import _THREADS, _grid, _i, compile_kernel

__all__ = ["bipolar_block", "ganglion_block"]

SOURCE = Path(__file__).with_name("cuda") / "insilico.cu"
_NAMES = ("bipolar_block", "ganglion_block")


def bipolar_block(s, drive, decay, n_stages, a2, theta, rec, use, cascade, pool, out):
    """GPU twin of :func:`retina.insilico._cpu.bipolar_block` (one thread per pathway x pixel)."""
    t_len, n_px = s.shape
    n_k = drive.shape[0]
    f = compile_kernel(SOURCE, _NAMES, "bipolar_block", s.dtype)
    f(_grid(n_k * n_px), (_THREADS,), (s, drive, decay, cp.asarray(n_stages, cp.int64), a2, theta, rec, use,
                                       cascade, pool, out) + _i(t_len, n_px, n_k, cascade.shape[2]))
    return out


def ganglion_block(exc, inh, w, w_inh, theta, r_max, beta, e_inh, e_mem, rec_inh, use_inh, theta_inh, gc_gain, e_gc,
                   state_inh, state_dep, state_u, state_gc, rates, parts):
    """GPU twin of :func:`retina.insilico._cpu.ganglion_block` (one thread per cell)."""
    t_len, n_k, n_j = exc.shape
    ft = exc.dtype.type
    scalars = tuple(ft(v) for v in (beta, e_inh, e_mem, rec_inh, use_inh, theta_inh, gc_gain, e_gc))
    f = compile_kernel(SOURCE, _NAMES, "ganglion_block", exc.dtype)
    f(_grid(n_j), (_THREADS,), (exc, inh, w, w_inh, theta, r_max) + scalars
      + (state_inh, state_dep, state_u, state_gc, rates, parts) + _i(t_len, n_k, n_j))
    return rates, parts


_contract.check(sys.modules[__name__], "insilico")
