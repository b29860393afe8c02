"""Straightforward float64 references (scipy.signal), used by the benchmarks to check fast results.

Slow on purpose: one window at a time, every path step a full forward and
backward pass, exactly as an autograd user would compute it.  The test suite
checks these against its own independent references.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import convolve, correlate

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


def _grad_z1(model, z1, cell):
    r, z2, u = _head(model, z1)
    g_z2 = (model.scale3[cell] / (1 + np.exp(-u[cell]))) * model.w3[cell].reshape(z2.shape) * (z2 > 0)
    g_c2 = g_z2 * model.scale2
    g_h1 = np.stack([sum(convolve(g_c2[o], model.w2[o, c], mode="full") for o in range(g_c2.shape[0]))
                     for c in range(z1.shape[0])])
    return g_h1 * (z1 > 0)


def conductance_conv1(model, movie, window, cell, n_steps=50):
    """Midpoint layer-1 conductance of one window and cell, zero baseline: (C1, H1, W1)."""
    movie = np.asarray(movie, np.float64)
    z_s = _z1(model, movie[window:window + model.history])
    z_0 = np.broadcast_to(model.shift1, z_s.shape)
    acc = np.zeros_like(z_s)
    for k in range(n_steps):
        a = (k + 0.5) / n_steps
        acc += _grad_z1(model, z_0 + a * (z_s - z_0), cell) / n_steps
    return (z_s - z_0) * acc


def input_ig(model, movie, window, cell, n_steps=50):
    """Midpoint input IG of one window and cell, zero baseline: (history, H, W)."""
    movie = np.asarray(movie, np.float64)
    win = movie[window:window + model.history]
    acc = np.zeros_like(win)
    for k in range(n_steps):
        a = (k + 0.5) / n_steps
        g_z1 = _grad_z1(model, _z1(model, a * win), cell) * model.scale1
        acc += sum(convolve(g_z1[c][None], model.w1[c], mode="full") for c in range(g_z1.shape[0])) / n_steps
    return win * acc
