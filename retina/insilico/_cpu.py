"""The simulator's hot loops on the CPU (Numba): the bipolar pathways and the amacrine/ganglion dynamics.

Dispatched like the package's other kernels (:func:`retina._backend.resolve`,
family ``"insilico"``); :mod:`retina.insilico._gpu` holds the CuPy twins with
the same signatures.  State arrays are updated in place so that a long movie
streams through in blocks; each kernel returns its output array.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numba import njit, prange

from ..kernels import _contract

__all__ = ["bipolar_block", "ganglion_block"]

_JIT: dict[str, Any] = dict(cache=True, nogil=True)


@njit(parallel=True, **_JIT)
def bipolar_block(s, drive, decay, n_stages, a2, theta, rec, use, cascade, pool, out):
    """Bipolar pathways over a block of frames: gamma-cascade filters, rectification, depression.

    ``s``: ``(T, P)`` centre-surround input at ``P`` pixels.  Per pathway ``k``
    (``K`` of them): ``drive[k]`` (sign x gain), ``decay[k, 0:2]`` = per-frame
    factors ``exp(-dt / tau)`` of the two gamma cascades, ``n_stages[k]``
    first-order stages each (at most ``cascade.shape[2]``), ``a2[k]`` weight of
    the second gamma, ``theta[k]`` threshold, ``rec[k] = exp(-dt / tau_rec)``,
    ``use[k] = U * dt``.  ``cascade``: ``(K, 2, S, P)`` filter state;
    ``pool``: ``(K, P)`` vesicle pool ``R``.  Writes ``out``: ``(T, K, P)`` the
    release ``b = N * R`` (``R`` after recovery, before this frame's depletion).
    """
    t_len, n_px = s.shape
    n_k = drive.shape[0]
    for p in prange(n_px):
        for k in range(n_k):
            e1 = decay[k, 0]
            e2 = decay[k, 1]
            ns = n_stages[k]
            for t in range(t_len):
                x1 = s[t, p]
                x2 = x1
                for i in range(ns):
                    y1 = e1 * cascade[k, 0, i, p] + (1.0 - e1) * x1
                    y2 = e2 * cascade[k, 1, i, p] + (1.0 - e2) * x2
                    cascade[k, 0, i, p] = y1
                    cascade[k, 1, i, p] = y2
                    x1 = y1
                    x2 = y2
                v = drive[k] * (x1 - a2[k] * x2) - theta[k]
                n = v if v > 0.0 else 0.0
                r = 1.0 - (1.0 - pool[k, p]) * rec[k]
                out[t, k, p] = n * r
                pool[k, p] = r * np.exp(-use[k] * n)
    return out


@njit(**_JIT)
def ganglion_block(exc, inh, w, w_inh, theta, r_max, beta, e_inh, e_mem, rec_inh, use_inh, theta_inh, gc_gain, e_gc,
                   state_inh, state_dep, state_u, state_gc, rates, parts):
    """Amacrine and ganglion-cell dynamics over a block of frames, for ``J`` cells.

    ``exc``: ``(T, K, J)`` release of each bipolar pathway pooled by each
    cell's Gaussian; ``inh``: ``(T, J)`` OFF release pooled by the amacrine's
    Gaussian.  Per cell: ``w (J, K)`` pathway weights, ``w_inh`` amacrine
    weight, ``theta`` threshold, ``r_max`` peak rate.  Scalars: softplus
    sharpness ``beta``, per-frame low-pass factors ``e_inh`` (amacrine),
    ``e_mem`` (membrane), ``rec_inh = exp(-dt / tau_rec)`` and
    ``use_inh = U * dt`` of the amacrine synapse, the amacrine's threshold
    ``theta_inh`` (its release is ``max(a - theta_inh, 0)``), Berry gain control
    ``gc_gain`` (0: off) with factor ``e_gc``.  State (in place):
    ``state_inh (J,)`` low-passed amacrine drive, ``state_dep (J,)`` its
    synaptic resource, ``state_u (K + 1, J)`` membrane potential split by
    pathway (the last row is the amacrine's, negative), ``state_gc (J,)``.
    Writes ``rates (T, J)`` in Hz and ``parts (T, K + 1, J)``, the split
    membrane potential (its sum over axis 1 is the membrane potential).
    """
    t_len, n_k, n_j = exc.shape
    for t in range(t_len):
        for j in range(n_j):
            a = e_inh * state_inh[j] + (1.0 - e_inh) * inh[t, j]
            state_inh[j] = a
            ap = a - theta_inh if a > theta_inh else 0.0
            nr = 1.0 - (1.0 - state_dep[j]) * rec_inh
            amacrine = ap * nr
            state_dep[j] = nr * np.exp(-use_inh * ap)
            u = 0.0
            for k in range(n_k):
                uk = e_mem * state_u[k, j] + (1.0 - e_mem) * w[j, k] * exc[t, k, j]
                state_u[k, j] = uk
                parts[t, k, j] = uk
                u += uk
            ua = e_mem * state_u[n_k, j] - (1.0 - e_mem) * w_inh[j] * amacrine
            state_u[n_k, j] = ua
            parts[t, n_k, j] = ua
            u += ua
            x = beta * (u - theta[j])
            sp = x + np.log1p(np.exp(-x)) if x > 0.0 else np.log1p(np.exp(x))
            r = r_max[j] * sp / beta
            if gc_gain > 0.0:
                g = state_gc[j]
                r = r / (1.0 + g * g * g * g)
                state_gc[j] = e_gc * g + (1.0 - e_gc) * gc_gain * r
            rates[t, j] = r
    return rates, parts


_contract.check(sys.modules[__name__], "insilico")
