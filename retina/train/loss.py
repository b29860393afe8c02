"""The training network's forward pass, Poisson loss and hand-written gradients; parameters and folding.

Training form of the McIntosh BN-CNN (``docs/spec.md`` section 2)::

    c1 = corr(movie, w1)                          (N, C1, H1, W1)
    z1 = g1 * (c1 - mean) / sqrt(var + eps) + b1  (batch norm per unit over the batch)
    h1 = relu(z1 + noise)                         (Gaussian noise, s.d. ``noise``, training only)
    c2 = corr(h1, w2); z2 = BN(c2); h2 = relu(z2 + noise)
    r  = softplus(w3 @ h2 + b3)                   (Hz)

Loss: Poisson ``mean(r - y log r)`` plus ``l2 * (|w1|^2 + |w2|^2)``.  At
inference batch norm uses running statistics and folds into the model's
``scale``/``shift`` (:func:`to_model`).  Layer 1 of a run of consecutive
windows is one FFT correlation over its frames, and the layer-1 weight
gradient of the whole batch one inverse transform of the runs' summed
spectral products, with the same kernel module as inference and attribution.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _backend
from ..model import _FFT2_MIN_TAPS, RetinaCNN

__all__ = ["init_params", "to_model", "loss_and_grads", "evaluate", "pairs"]


def pairs(n_frames, history):
    """Window starts ``i`` and target bins ``i + history`` for a movie of ``n_frames``."""
    i = np.arange(max(n_frames - history, 0))
    return i, i + history


def init_params(cfg, n_cells, frame_shape, *, mean_rate=5.0, rng=None):
    """He-initialised conv kernels, identity batch norm, small readout, softplus bias at ``mean_rate``."""
    rng = np.random.default_rng(cfg.seed) if rng is None else rng
    (c1, c2), (k1, k2) = cfg.channels, cfg.kernel_sizes
    h, w = frame_shape
    s1 = (c1, h - k1 + 1, w - k1 + 1)
    s2 = (c2, s1[1] - k2 + 1, s1[2] - k2 + 1)
    if min(s2[1:]) < 1:
        raise ValueError(f"kernel_sizes {cfg.kernel_sizes} do not fit frames of {frame_shape}")
    f32 = np.float32
    p = {
        "w1": (rng.standard_normal((c1, cfg.history, k1, k1)) * math.sqrt(2.0 / (cfg.history * k1 * k1))).astype(f32),
        "g1": np.ones(s1, f32), "b1": np.zeros(s1, f32),
        "w2": (rng.standard_normal((c2, c1, k2, k2)) * math.sqrt(2.0 / (c1 * k2 * k2))).astype(f32),
        "g2": np.ones(s2, f32), "b2": np.zeros(s2, f32),
        "w3": (rng.standard_normal((n_cells, int(np.prod(s2)))) * 0.1 / math.sqrt(np.prod(s2))).astype(f32),
        "b3": np.full(n_cells, math.log(math.expm1(max(mean_rate, 1e-3))), f32),
    }
    running = {"m1": np.zeros(s1, f32), "v1": np.ones(s1, f32), "m2": np.zeros(s2, f32), "v2": np.ones(s2, f32)}
    return p, running


def to_model(params, running, cfg, *, frame_shape, norm_stats=None, cell_ids=None, metadata=None,
             input_units="contrast"):
    """Fold batch norm (running statistics) into ``scale``/``shift``: an inference :class:`RetinaCNN`.

    Training pairs the window ``[i, i + history)`` with bin ``i + history``
    (:mod:`.sampling`), so the model's ``response_offset`` is 1.
    """
    f64 = {k: np.asarray(v, np.float64) for k, v in {**params, **running}.items()}
    scale1 = f64["g1"] / np.sqrt(f64["v1"] + cfg.bn_eps)
    scale2 = f64["g2"] / np.sqrt(f64["v2"] + cfg.bn_eps)
    n = f64["w3"].shape[0]
    return RetinaCNN(f64["w1"], scale1, f64["b1"] - f64["m1"] * scale1, f64["w2"], scale2,
                     f64["b2"] - f64["m2"] * scale2, f64["w3"], np.ones(n), f64["b3"], frame_shape=frame_shape,
                     norm_stats=norm_stats, cell_ids=cell_ids, metadata=metadata, input_units=input_units,
                     response_offset=1)


def _bn_relu(kern, xp, c, g, b, noise, cfg):
    """``relu(BN(c) + noise)`` by the backend's fused kernel (``noise`` like ``c``, or empty for none); returns
    the output and ``(mean, var, xhat, out)`` for the running statistics and the gradient."""
    dt = c.dtype
    cache = kern.batch_norm_relu(c, g, b, noise, cfg.bn_eps, xp.empty(g.shape, dt), xp.empty(g.shape, dt),
                                 xp.empty_like(c), xp.empty_like(c))
    return cache[3], cache


def _bn_relu_grad(kern, xp, dout, g, cache, cfg):
    """Gradients ``(dc, dgamma, dbeta)`` of :func:`_bn_relu` from ``dout``, the gradient at its output."""
    _, var, xhat, out = cache
    dt = dout.dtype
    return kern.batch_norm_relu_grad(xp.ascontiguousarray(dout), out, xhat, g, var, cfg.bn_eps,
                                     xp.empty_like(dout), xp.empty(g.shape, dt), xp.empty(g.shape, dt))


def _softplus(xp, u):
    return xp.logaddexp(0.0, u)


def _sigmoid(xp, u):
    return 0.5 * (1.0 + xp.tanh(0.5 * u))


def loss_and_grads(params, segments, targets, cfg, *, rng=None, want_grads=True, sample_weights=None,
                   backend=None):
    """Poisson loss and its gradient for one mini-batch.

    Parameters
    ----------
    params : dict of float32 arrays
        ``w1, g1, b1, w2, g2, b2, w3, b3``.
    segments : list of arrays (L_j + history - 1, H, W)
        Runs of frames; run ``j`` holds ``L_j`` consecutive windows.
    targets : array (N, n_cells)
        Rates paired with the windows (``N = sum L_j``), in run order.
    rng : numpy Generator, optional
        Source of the hidden-layer noise (none when ``None`` or ``cfg.noise == 0``).
    sample_weights : array (N,), optional
        Weight of each window in the Poisson loss (default 1).
    backend : retina._backend.Backend, optional
        Where the work runs (default the CPU).  The inputs and outputs are
        host (numpy) arrays either way: on the GPU the batch and the
        parameters are copied to the device, the kernels of
        :mod:`retina.kernels.gpu` run there, and the gradients come back.

    Returns
    -------
    loss : float
    grads : dict (same keys as ``params``)
    stats : dict
        Batch means and variances of both layers (for the running averages)
        and the predicted rates.
    """
    be = backend if backend is not None else _backend.resolve("cpu")
    kern = be.kernels
    xp, host = be.xp, be.to_host
    host_params = params
    params = {k: be.asarray(v) for k, v in params.items()}
    segments = [be.asarray(seg) for seg in segments]
    w1, w2, w3 = params["w1"], params["w2"], params["w3"]
    dt = w1.dtype  # float32 in training; float64 works too (gradient checks)

    host_kernels = _backend.resolve("cpu").kernels

    def noise(shape):    # drawn on the host from ``rng`` (the same on either backend) just before use; empty: none
        if rng is None or cfg.noise <= 0:
            return xp.empty(0, dt)
        seed = int(rng.integers(0, 2 ** 63))
        return be.asarray(host_kernels.standard_normal(seed, cfg.noise, np.empty(shape, dt)))
    c1_n, k = w1.shape[0], w1.shape[1]
    bounds = np.cumsum([0] + [seg.shape[0] - k + 1 for seg in segments])   # each run's windows in the batch
    n_b = int(bounds[-1])
    c1 = xp.empty((n_b, c1_n, segments[0].shape[1] - w1.shape[2] + 1, segments[0].shape[2] - w1.shape[3] + 1), dt)
    spectra, wcache = [], {}  # kernel spectrum shared by the runs, movie spectra reused below
    kern.corr3d_runs_fft(segments, w1, [c1[a:b] for a, b in zip(bounds[:-1], bounds[1:])], cache=wcache,
                         spectra=spectra)
    h1, bn1 = _bn_relu(kern, xp, c1, params["g1"], params["b1"], noise(c1.shape), cfg)
    c2 = xp.empty((n_b,) + params["g2"].shape, dt)
    fft2 = w2.shape[2] * w2.shape[3] >= _FFT2_MIN_TAPS
    h1_spec = []                       # layer-2 input spectrum, reused by the weight gradient
    if fft2:
        kern.corr2d_fft(h1, w2, c2, spectra=h1_spec)
    else:
        kern.corr2d(h1, w2, c2)
    h2, bn2 = _bn_relu(kern, xp, c2, params["g2"], params["b2"], noise(c2.shape), cfg)
    h2 = h2.reshape(n_b, -1)
    drive = kern.dense(h2, w3, xp.empty((n_b, w3.shape[0]), dt)) + params["b3"]
    r = _softplus(xp, drive.astype(xp.float64))
    y = be.asarray(targets, xp.float64)
    logr = xp.log(xp.maximum(r, 1e-8))
    n_out = r.size
    sw = xp.ones((len(r), 1)) if sample_weights is None else be.asarray(sample_weights, xp.float64)[:, None]
    loss = float((sw * (r - y * logr)).sum() / n_out + cfg.l2 * (xp.vdot(w1, w1) + xp.vdot(w2, w2)))
    stats = {"m1": host(bn1[0]), "v1": host(bn1[1]), "m2": host(bn2[0]), "v2": host(bn2[1]), "rates": host(r)}
    if not want_grads:
        return loss, None, stats
    dr = sw * (1.0 - y / xp.maximum(r, 1e-8)) / n_out
    dd = (dr * _sigmoid(xp, drive.astype(xp.float64))).astype(dt)
    grads = {"w3": kern.dense_weight_grad(dd, h2, xp.empty_like(w3)), "b3": dd.sum(0)}
    dh2 = kern.dense_transpose(dd, w3, xp.empty_like(h2)).reshape(c2.shape)
    dc2, grads["g2"], grads["b2"] = _bn_relu_grad(kern, xp, dh2, params["g2"], bn2, cfg)
    gw2 = xp.empty_like(w2)
    dh1 = xp.empty_like(h1)
    if fft2:   # both layer-2 gradients share the spectra of h1 (from the forward) and of dc2
        dc2_spec = []
        kern.corr2d_transpose_fft(dc2, w2, dh1, spectra=dc2_spec)
        kern.corr2d_weight_grad_fft(h1, dc2, gw2, spectrum=h1_spec[0], g_spectrum=dc2_spec[0])
    else:
        kern.corr2d_transpose(dc2, w2, dh1)
        kern.corr2d_weight_grad(h1, dc2, gw2)
    grads["w2"] = gw2 + dt.type(2 * cfg.l2) * w2
    dc1, grads["g1"], grads["b1"] = _bn_relu_grad(kern, xp, dh1, params["g1"], bn1, cfg)
    gw1 = xp.empty_like(w1)
    kern.corr3d_runs_weight_grad_fft(segments, [dc1[a:b] for a, b in zip(bounds[:-1], bounds[1:])], gw1,
                                     spectra=spectra)
    grads["w1"] = gw1 + dt.type(2 * cfg.l2) * w1
    grads = {k: host(v).astype(host_params[k].dtype, copy=False) for k, v in grads.items()}
    return loss, grads, stats


def _correlations(pred, y):
    pc = pred - pred.mean(0)
    yc = y - y.mean(0)
    den = np.sqrt((pc ** 2).sum(0) * (yc ** 2).sum(0))
    return np.where(den > 0, (pc * yc).sum(0) / np.where(den > 0, den, 1), 0.0)


def evaluate(model, stimulus, rates, *, backend="cpu"):
    """Per-cell correlation of ``model``'s prediction with ``rates`` (deep-retina pairing) and the Poisson loss."""
    pred = np.asarray(model.predict(stimulus, backend=backend, batch=2048), np.float64)[:-1]   # long: FFT layer 2
    y = np.asarray(rates, np.float64)[model.history:]
    loss = float((pred - y * np.log(np.maximum(pred, 1e-8))).mean())
    return _correlations(pred, y), loss


