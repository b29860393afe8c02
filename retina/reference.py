"""Straightforward float64 references (scipy.signal), used by the benchmarks to check fast results.

Slow on purpose: one window at a time, every path step a full forward and
backward pass, exactly as an autograd user would compute it.  The test suite
checks these against its own independent references.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import convolve, correlate

from .units import DT

__all__ = ["forward", "conductance_conv1", "input_ig"]


def _z1(model, window):
    return model.scale1 * np.stack([correlate(window, k, mode="valid")[0] for k in model.w1]) + model.shift1


def _head(model, z1):
    h1 = np.maximum(z1, 0)
    c2 = np.stack([sum(correlate(h1[c], model.w2[o, c], mode="valid") for c in range(h1.shape[0]))
                   for o in range(model.w2.shape[0])])
    z2 = model.scale2 * c2 + model.shift2
    u = model.scale3 * (model.w3 @ np.maximum(z2, 0).ravel()) + model.shift3
    return np.logaddexp(0, u), z2, u


def forward(model, movie, windows):
    """Rates of the given window indices, ``(len(windows), n_cells)``."""
    movie = np.asarray(movie, np.float64)
    return np.stack([_head(model, _z1(model, movie[i:i + model.history]))[0] for i in windows])


def _secant(zl, zr):
    """The ReLU's slope over [zl, zr]: its secant, or its derivative where zl == zr."""
    span = zr - zl
    d = np.maximum(zr, 0) - np.maximum(zl, 0)
    return np.where(span == 0, zr > 0, d / np.where(span == 0, 1.0, span))


def _grad_z1(model, z1, cell, cell_ends=None):
    """d r_cell / d z1 at ``z1``; with ``cell_ends = (z1_lo, z1_hi)`` every ReLU derivative is the
    ReLU's secant slope between the two ends (the ``kinks="secant"`` rule)."""
    r, z2, u = _head(model, z1)
    if cell_ends is None:
        slope1, slope2 = z1 > 0, z2 > 0
    else:
        lo, hi = cell_ends
        slope1 = _secant(lo, hi)
        slope2 = _secant(_head(model, lo)[1], _head(model, hi)[1])
    g_z2 = (model.scale3[cell] / (1 + np.exp(-u[cell]))) * model.w3[cell].reshape(z2.shape) * slope2
    g_c2 = g_z2 * model.scale2
    g_h1 = np.stack([sum(convolve(g_c2[o], model.w2[o, c], mode="full") for o in range(g_c2.shape[0]))
                     for c in range(z1.shape[0])])
    return g_h1 * slope1


def _path_grad(model, z_0, z_s, cell, n_steps, kinks):
    """Midpoint path average of d r / d z1 along z_0 -> z_s."""
    acc = np.zeros_like(z_s)
    for k in range(n_steps):
        a = (k + 0.5) / n_steps
        ends = None
        if kinks == "secant":
            ends = (z_0 + (k / n_steps) * (z_s - z_0), z_0 + ((k + 1) / n_steps) * (z_s - z_0))
        acc += _grad_z1(model, z_0 + a * (z_s - z_0), cell, ends) / n_steps
    return acc


def conductance_conv1(model, movie, window, cell, n_steps=50, kinks="secant"):
    """Midpoint layer-1 conductance of one window and cell, zero baseline: (C1, H1, W1)."""
    movie = np.asarray(movie, np.float64)
    z_s = _z1(model, movie[window:window + model.history])
    z_0 = np.broadcast_to(model.shift1, z_s.shape)
    return (z_s - z_0) * _path_grad(model, z_0, z_s, cell, n_steps, kinks)


def input_ig(model, movie, window, cell, n_steps=50, kinks="secant"):
    """Midpoint input IG of one window and cell, zero baseline: (history, H, W)."""
    movie = np.asarray(movie, np.float64)
    win = movie[window:window + model.history]
    z_s = _z1(model, win)
    z_0 = np.broadcast_to(model.shift1, z_s.shape)
    g_z1 = _path_grad(model, z_0, z_s, cell, n_steps, kinks) * model.scale1
    return win * sum(convolve(g_z1[c][None], model.w1[c], mode="full") for c in range(g_z1.shape[0]))


def insilico_rates(sim, movie):
    """The simulator's rates with its two Numba kernels replaced by plain numpy loops over time (float64).

    Uses the simulator's own centre-surround stage and pooling weights; checks
    the compiled dynamics (filters, rectification, depression, amacrine,
    membrane, output) on a slice.
    """
    from scipy.signal import lfilter

    p = sim.params
    dt = DT
    s = sim._centre_surround(np.asarray(movie, np.float64))
    st = sim.initial_state()
    b = np.empty((len(s), 3, s.shape[1]))
    for k in range(3):
        y = []
        for i in range(2):
            e = sim._decay[k, i]
            x = s
            for _ in range(sim._stages[k]):
                x = lfilter([1 - e], [1, -e], x, axis=0)
            y.append(x)
        n = np.maximum(sim._drive[k] * (y[0] - sim._a2[k] * y[1]) - sim._theta[k], 0)
        pool = st["pool"][k].copy()
        for t in range(len(s)):
            pool = 1 - (1 - pool) * sim._rec[k]
            b[t, k] = n[t] * pool
            pool = pool * np.exp(-sim._use[k] * n[t])
    exc = np.einsum("tkp,pj->tkj", b, sim._wg)
    inh = b[:, 0] @ sim._wa
    e_a, e_m = np.exp(-dt * 1e3 / p.tau_amacrine_ms), np.exp(-dt * 1e3 / p.tau_membrane_ms)
    rec_a = np.exp(-dt / p.tau_rec_amacrine_s)
    a, dep, u = st["amacrine"].copy(), st["amacrine_resource"].copy(), st["membrane"].copy()
    rates = np.empty((len(s), sim.n_cells))
    for t in range(len(s)):
        a = e_a * a + (1 - e_a) * inh[t]
        ap = np.maximum(a - p.theta_amacrine, 0)
        dep = 1 - (1 - dep) * rec_a
        amac = ap * dep
        dep = dep * np.exp(-p.U_amacrine * dt * ap)
        u[:3] = e_m * u[:3] + (1 - e_m) * sim._w.T * exc[t]
        u[3] = e_m * u[3] - (1 - e_m) * sim._w_inh * amac
        rates[t] = sim.output(u.sum(0))
    return rates


def train_loss(params, segments, targets, cfg):
    """The training-mode Poisson loss (batch-norm batch statistics, no noise) by einsum in float64."""
    from numpy.lib.stride_tricks import sliding_window_view as swv

    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    c1 = np.concatenate([np.einsum("nyxtuv,ctuv->ncyx", swv(np.asarray(s, np.float64), p["w1"].shape[1:]),
                                   p["w1"]) for s in segments])

    def bn(c, g, b):
        return g * (c - c.mean(0)) / np.sqrt(c.var(0) + cfg.bn_eps) + b

    h1 = np.maximum(bn(c1, p["g1"], p["b1"]), 0)
    c2 = np.einsum("nbyxuv,cbuv->ncyx", swv(h1, p["w2"].shape[2:], axis=(2, 3)), p["w2"])
    h2 = np.maximum(bn(c2, p["g2"], p["b2"]), 0)
    r = np.logaddexp(0, h2.reshape(len(h2), -1) @ p["w3"].T + p["b3"])
    y = np.asarray(targets, np.float64)
    return float((r - y * np.log(np.maximum(r, 1e-8))).mean() + cfg.l2 * ((p["w1"] ** 2).sum() + (p["w2"] ** 2).sum()))
