"""The kernel contract: what every backend module of a kernel family offers.

Each kernel takes C-contiguous arrays of one float dtype, writes into the
caller's output array(s), and returns them (:data:`RETURNS`): the same names,
parameters and return convention on every backend.  ``cpu.py`` and ``gpu.py``
(and the simulator's ``retina/insilico/_cpu.py``, ``_gpu.py``) check
themselves against it when imported (:func:`check`); the tests also check the
GPU modules' source without importing CuPy, so the contract holds in CI.  A
new backend is one module per family that passes :func:`check`.
"""

from __future__ import annotations

import inspect

__all__ = ["CONTRACT", "RETURNS", "check", "signature_of"]

_FFT = ("*", "workers")
CONTRACT = {
    "kernels": {
        "corr2d": ("x", "w", "out"),
        "corr2d_transpose": ("g", "w", "out"),
        "corr2d_weight_grad": ("x", "g", "out"),
        "corr2d_fft": ("x", "w", "out") + _FFT + ("spectra",),
        "corr2d_transpose_fft": ("g", "w", "out") + _FFT + ("spectra",),
        "corr2d_weight_grad_fft": ("x", "g", "out") + _FFT + ("spectrum", "g_spectrum"),
        "corr3d_movie": ("x", "w", "out"),
        "corr3d_movie_transpose": ("g", "w", "out"),
        "corr3d_movie_weight_grad": ("x", "g", "out"),
        "corr3d_movie_fft": ("x", "w", "out", "*", "chunk", "workers", "cache", "spectra"),
        "corr3d_runs_fft": ("xs", "w", "outs", "*", "workers", "cache", "spectra"),
        "corr3d_movie_transpose_fft": ("g", "w", "out") + _FFT,
        "corr3d_movie_weight_grad_fft": ("x", "g", "out") + _FFT + ("spectrum",),
        "corr3d_runs_weight_grad_fft": ("xs", "gs", "out") + _FFT + ("spectra",),
        "affine_relu": ("z", "scale", "shift", "out"),
        "batch_norm_relu": ("c", "gamma", "beta", "noise", "eps", "mean", "var", "xhat", "out"),
        "batch_norm_relu_grad": ("dout", "out", "xhat", "gamma", "var", "eps", "dc", "dgamma", "dbeta"),
        "dense": ("x", "w", "out"),
        "dense_transpose": ("d", "w", "out"),
        "dense_weight_grad": ("d", "x", "out"),
        "pig_conv_relu_dense": ("z0", "dz", "alphas", "weights", "bounds", "w2", "scale2", "shift2", "v3", "shift3",
                                "cw", "cells", "g1", "a2", "r0", "r1", "want_a2"),
    },
    "insilico": {
        "bipolar_block": ("s", "drive", "decay", "n_stages", "a2", "theta", "rec", "use", "cascade", "pool", "out"),
        "ganglion_block": ("exc", "inh", "w", "w_inh", "theta", "r_max", "beta", "e_inh", "e_mem", "rec_inh",
                           "use_inh", "theta_inh", "gc_gain", "e_gc", "state_inh", "state_dep", "state_u", "state_gc",
                           "rates", "parts"),
    },
}
"""Per family, each kernel's parameters in order (``"*"``: the keyword-only ones follow)."""

RETURNS = {"pig_conv_relu_dense": ("g1", "a2", "r0", "r1"), "batch_norm_relu": ("mean", "var", "xhat", "out"),
           "batch_norm_relu_grad": ("dc", "dgamma", "dbeta"), "ganglion_block": ("rates", "parts")}
"""The output arrays a kernel returns (every other kernel returns ``out``)."""


def signature_of(fn):
    """A function's parameters as in :data:`CONTRACT` (a Numba dispatcher's Python function is read)."""
    fn = getattr(fn, "py_func", fn)
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY and "*" not in out:
            out.append("*")
        out.append(p.name)
    return tuple(out)


def check(module, family):
    """Raise ``ImportError`` naming every kernel of ``family`` that ``module`` lacks or declares otherwise."""
    problems = []
    for name, params in CONTRACT[family].items():
        fn = getattr(module, name, None)
        if fn is None:
            problems.append(f"{name} is missing")
        elif signature_of(fn) != params:
            problems.append(f"{name}{signature_of(fn)} should take {params}")
    if problems:
        raise ImportError(f"{module.__name__} breaks the kernel contract: " + "; ".join(problems))
