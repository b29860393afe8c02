"""Training a retina CNN without a framework: hand-written gradients, Adam, batch norm, checkpoints.

The network is the McIntosh BN-CNN of docs/spec.md section 2 in its training form::

    c1 = corr(movie, w1)                      (N, C1, H1, W1)
    z1 = g1 * (c1 - mean) / sqrt(var + eps) + b1  (batch norm per unit over the batch)
    h1 = relu(z1 + noise)                     (Gaussian noise, s.d. ``noise``, training only)
    c2 = corr(h1, w2); z2 = BN(c2); h2 = relu(z2 + noise)
    r  = softplus(w3 @ h2 + b3)               (Hz)

Loss: Poisson ``mean(r - y log r)`` plus ``l2 * (|w1|^2 + |w2|^2)``.  At
inference batch norm uses running statistics and folds into the model's
``scale``/``shift`` (:func:`to_model`), so the trained network is an ordinary
:class:`retina.RetinaCNN`.

Mini-batches are ``segments`` runs of consecutive windows at random places in
the training movie: layer 1 of a run is one FFT correlation over its frames,
never a window stack, and the layer-1 weight gradient of the whole batch one
inverse transform of the runs' summed spectral products.  The gradients use
the same kernel module as the forward pass and attribution
(``corr3d_movie_fft``, ``corr3d_runs_weight_grad_fft``, and ``corr2d`` with its
adjoint and weight gradient, by FFT for large kernels), on the CPU or the GPU
(``backend``); they are checked against finite differences in the tests.

Targets follow deep-retina: the window of frames ``[i, i + history)`` is
paired with the rate in bin ``i + history``.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import _backend
from ._progress import progress_bar
from ._validate import as_float_array, check_int
from ._version import __version__
from .model import _FFT2_MIN_TAPS, RetinaCNN

__all__ = ["TrainConfig", "TrainResult", "train", "init_params", "loss_and_grads", "to_model", "pairs"]

PARAMS = ("w1", "g1", "b1", "w2", "g2", "b2", "w3", "b3")
RUNNING = ("m1", "v1", "m2", "v2")
LAYERS = {"layer1": ("w1", "g1", "b1"), "layer2": ("w2", "g2", "b2"), "readout": ("w3", "b3")}


@dataclass
class TrainConfig:
    """Every setting of a training run (stored in checkpoints and model provenance)."""

    channels: tuple = (8, 8)
    kernel_sizes: tuple = (15, 11)
    history: int = 40
    epochs: int = 40
    epoch_windows: int = 30000
    batch: int = 500
    segments: int = 10
    """Runs of consecutive windows per batch (``batch / segments`` windows each)."""
    lr: float = 2e-3
    l2: float = 1e-3
    noise: float = 0.05
    bn_eps: float = 1e-3
    bn_momentum: float = 0.05
    val_fraction: float = 0.1
    lr_patience: int = 2
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    patience: int = 6
    seed: int = 0
    stream_weights: tuple = None
    """Share of the runs drawn from each training stream when ``train`` gets several movies
    (default: proportional to their lengths)."""
    stream_loss_weights: tuple = None
    """Weight of each stream's windows in the loss (default 1 each): white noise drives the
    rates far less than natural movies, so its errors need a larger weight to matter."""
    freeze: tuple = ()
    """Parameters left as they are (names of ``PARAMS``, or ``"layer1"``/``"layer2"``/``"readout"``
    for a layer's all), e.g. ``("layer1",)`` to fine-tune on new stimuli while keeping the first
    layer's filters, hence its channel types.  Batch-norm running statistics still follow the
    training data, so the folded ``scale``/``shift`` can change."""

    def validate(self):
        for name in ("history", "epochs", "epoch_windows", "batch", "segments", "lr_patience", "patience"):
            check_int(name, getattr(self, name), minimum=1)
        if self.batch % self.segments:
            raise ValueError(f"batch ({self.batch}) must be a multiple of segments ({self.segments})")
        for name in ("lr", "bn_eps", "min_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("l2", "noise"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not 0 < self.lr_factor < 1 or not 0 < self.bn_momentum <= 1:
            raise ValueError("lr_factor must be in (0, 1) and bn_momentum in (0, 1]")
        frozen = []
        for name in ([self.freeze] if isinstance(self.freeze, str) else list(self.freeze)):
            if name not in PARAMS and name not in LAYERS:
                raise ValueError(f"freeze: unknown parameter {name!r}; expected names from {PARAMS} or {tuple(LAYERS)}")
            frozen += [k for k in LAYERS.get(name, (name,)) if k not in frozen]
        self.freeze = tuple(frozen)
        self.channels = tuple(int(c) for c in self.channels)
        self.kernel_sizes = tuple(int(k) for k in self.kernel_sizes)
        for name in ("stream_weights", "stream_loss_weights"):
            if getattr(self, name) is not None:
                sw = [float(v) for v in getattr(self, name)]
                if not sw or min(sw) < 0 or sum(sw) <= 0:
                    raise ValueError(f"{name} must be non-negative with a positive sum, got {getattr(self, name)!r}")
                setattr(self, name, sw)
        return self


@dataclass
class TrainResult:
    """The trained model (best validation epoch), the per-epoch log and where the run stopped."""

    model: RetinaCNN
    history: list = field(default_factory=list)
    best_epoch: int = -1
    best_val_corr: float = float("nan")
    stopped: str = ""
    seconds: float = 0.0
    best_score: float = float("nan")
    """The ``score`` of the best epoch (its validation correlation when no ``score`` was given)."""


def pairs(n_frames, history):
    """Window starts ``i`` and target bins ``i + history`` for a movie of ``n_frames``."""
    i = np.arange(max(n_frames - history, 0))
    return i, i + history


# ------------------------------------------------------------------ parameters
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


def to_model(params, running, cfg, *, frame_shape, norm_stats=None, cell_ids=None, metadata=None):
    """Fold batch norm (running statistics) into ``scale``/``shift``: an inference :class:`RetinaCNN`."""
    f64 = {k: np.asarray(v, np.float64) for k, v in {**params, **running}.items()}
    scale1 = f64["g1"] / np.sqrt(f64["v1"] + cfg.bn_eps)
    scale2 = f64["g2"] / np.sqrt(f64["v2"] + cfg.bn_eps)
    n = f64["w3"].shape[0]
    return RetinaCNN(f64["w1"], scale1, f64["b1"] - f64["m1"] * scale1, f64["w2"], scale2,
                     f64["b2"] - f64["m2"] * scale2, f64["w3"], np.ones(n), f64["b3"], frame_shape=frame_shape,
                     norm_stats=norm_stats, cell_ids=cell_ids, metadata=metadata)


# ------------------------------------------------------------------ forward / backward
def _bn_forward(c, g, b, eps):
    mean = c.mean(0)
    var = c.var(0)
    inv = 1.0 / (var + eps) ** 0.5
    xhat = (c - mean) * inv
    return g * xhat + b, (xhat, inv, mean, var)


def _bn_backward(dz, g, cache):
    xhat, inv, _, _ = cache
    n = dz.shape[0]
    dg = (dz * xhat).sum(0)
    db = dz.sum(0)
    dx = g * dz
    dc = inv / n * (n * dx - dx.sum(0) - xhat * (dx * xhat).sum(0))
    return dc, dg, db


_NOISE_THREADS = 2
_noise_pool = None


def _standard_normal(rng, shape, dtype):
    """Standard normal draws of ``shape``, filled by two threads from two child streams of ``rng``.

    The split is fixed (two halves along the first axis, seeds drawn from
    ``rng``), so the numbers are the same on any machine; NumPy's generators
    release the GIL while filling, so on two cores this takes ~60 % of the
    time of one ``rng.standard_normal`` call (33 against 57 ms for the 5 M
    float32 draws of layer 1 in a 500-window batch).
    """
    global _noise_pool
    if _noise_pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _noise_pool = ThreadPoolExecutor(_NOISE_THREADS, thread_name_prefix="retina-noise")
    out = np.empty(shape, dtype)
    seeds = rng.integers(0, 2 ** 63, size=_NOISE_THREADS)
    parts = np.array_split(out, _NOISE_THREADS)

    def fill(i):
        np.random.Generator(np.random.PCG64(int(seeds[i]))).standard_normal(out=parts[i], dtype=dtype)
    list(_noise_pool.map(fill, range(_NOISE_THREADS)))
    return out


def _softplus(xp, u):
    return xp.logaddexp(0.0, u)


def _sigmoid(xp, u):
    return 0.5 * (1.0 + xp.tanh(0.5 * u))


def loss_and_grads(params, segments, targets, cfg, *, rng=None, kernels=None, want_grads=True,
                   sample_weights=None, backend=None):
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
        (``kernels=`` alone, a kernel module, is the older spelling.)

    Returns
    -------
    loss : float
    grads : dict (same keys as ``params``)
    stats : dict
        Batch means and variances of both layers (for the running averages)
        and the predicted rates.
    """
    be = backend if backend is not None else _backend.resolve("cpu")
    kern = kernels if kernels is not None else be.kernels
    xp, host = be.xp, be.to_host
    host_params = params
    params = {k: be.asarray(v) for k, v in params.items()}
    segments = [be.asarray(seg) for seg in segments]
    w1, w2, w3 = params["w1"], params["w2"], params["w3"]
    dt = w1.dtype  # float32 in training; float64 works too (gradient checks)

    def noise(shape):    # drawn on the host from ``rng`` (reproducible on either backend)
        z = _standard_normal(rng, shape, dt)
        z *= dt.type(cfg.noise)
        return be.asarray(z)
    c1_n, k = w1.shape[0], w1.shape[1]
    c1_parts, spectra, wcache = [], [], {}  # kernel spectrum shared by the runs, movie spectra reused below
    for seg in segments:
        n = seg.shape[0] - k + 1
        out = xp.empty((n, c1_n, seg.shape[1] - w1.shape[2] + 1, seg.shape[2] - w1.shape[3] + 1), dt)
        kern.corr3d_movie_fft(seg, w1, out, chunk=max(n, 1), cache=wcache, spectra=spectra)
        c1_parts.append(out)
    c1 = xp.concatenate(c1_parts)
    n_b = c1.shape[0]
    z1, bn1 = _bn_forward(c1, params["g1"], params["b1"], cfg.bn_eps)
    if rng is not None and cfg.noise > 0:
        z1 = z1 + noise(z1.shape)
    h1 = xp.ascontiguousarray(xp.maximum(z1, 0), dtype=dt)
    c2 = xp.empty((n_b,) + params["g2"].shape, dt)
    fft2 = w2.shape[2] * w2.shape[3] >= _FFT2_MIN_TAPS
    h1_spec = []                       # layer-2 input spectrum, reused by the weight gradient
    if fft2:
        kern.corr2d_fft(h1, w2, c2, spectra=h1_spec)
    else:
        kern.corr2d(h1, w2, c2)
    z2, bn2 = _bn_forward(c2, params["g2"], params["b2"], cfg.bn_eps)
    if rng is not None and cfg.noise > 0:
        z2 = z2 + noise(z2.shape)
    h2 = xp.maximum(z2, 0).astype(dt).reshape(n_b, -1)
    drive = h2 @ w3.T + params["b3"]
    r = _softplus(xp, drive.astype(xp.float64))
    y = be.asarray(targets, xp.float64)
    logr = xp.log(xp.maximum(r, 1e-8))
    n_out = r.size
    sw = xp.ones((len(r), 1)) if sample_weights is None else be.asarray(sample_weights, xp.float64)[:, None]
    loss = float((sw * (r - y * logr)).sum() / n_out + cfg.l2 * (xp.vdot(w1, w1) + xp.vdot(w2, w2)))
    stats = {"m1": host(bn1[2]), "v1": host(bn1[3]), "m2": host(bn2[2]), "v2": host(bn2[3]), "rates": host(r)}
    if not want_grads:
        return loss, None, stats
    dr = sw * (1.0 - y / xp.maximum(r, 1e-8)) / n_out
    dd = (dr * _sigmoid(xp, drive.astype(xp.float64))).astype(dt)
    grads = {"w3": dd.T @ h2, "b3": dd.sum(0)}
    dh2 = (dd @ w3).reshape(z2.shape) * (z2 > 0)
    dc2, grads["g2"], grads["b2"] = _bn_backward(dh2, params["g2"], bn2)
    dc2 = xp.ascontiguousarray(dc2, dt)
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
    dh1 *= z1 > 0
    dc1, grads["g1"], grads["b1"] = _bn_backward(dh1, params["g1"], bn1)
    dc1 = xp.ascontiguousarray(dc1, dt)
    gw1 = xp.empty_like(w1)
    bounds = np.cumsum([0] + [part.shape[0] for part in c1_parts])
    kern.corr3d_runs_weight_grad_fft(segments, [dc1[a:b] for a, b in zip(bounds[:-1], bounds[1:])], gw1,
                                     spectra=spectra)
    grads["w1"] = gw1 + dt.type(2 * cfg.l2) * w1
    grads = {k: host(v).astype(host_params[k].dtype, copy=False) for k, v in grads.items()}
    return loss, grads, stats


# ------------------------------------------------------------------ the loop
class _Adam:
    def __init__(self, params, lr, b1=0.9, b2=0.999, eps=1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for k, g in grads.items():
            self.m[k] *= self.b1
            self.m[k] += (1 - self.b1) * g
            self.v[k] *= self.b2
            self.v[k] += (1 - self.b2) * g * g
            params[k] -= (self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)).astype(np.float32)


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


def _save_checkpoint(path, cfg, params, running, best, adam, state):
    from .io import atomic_h5

    with atomic_h5(path) as f:
        f.attrs.update(format="retina-checkpoint", retina_version=__version__, config=json.dumps(asdict(cfg)),
                       state=json.dumps(state))
        for name, group in (("params", params), ("running", running), ("best", best), ("adam_m", adam.m),
                            ("adam_v", adam.v)):
            g = f.create_group(name)
            for k, v in group.items():
                g.create_dataset(k, data=v)
        f.attrs["adam_t"] = adam.t


def _load_checkpoint(path, cfg):
    import h5py

    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != "retina-checkpoint":
            raise ValueError(f"{str(path)!r} is not a retina training checkpoint")
        saved = json.loads(f.attrs["config"])
        # settings added to TrainConfig after the checkpoint was written take their defaults
        defaults = asdict(TrainConfig())

        def norm(v):
            return list(v) if isinstance(v, tuple) else v

        current = {k: norm(v) for k, v in asdict(cfg).items() if k != "epochs"}
        if {k: norm(saved.get(k, defaults[k])) for k in current} != current or set(saved) - set(defaults):
            raise ValueError(f"checkpoint {str(path)!r} was written with other settings: {saved}; "
                             "delete it or use the same settings")
        out = {name: {k: f[name][k][()] for k in f[name]} for name in ("params", "running", "best", "adam_m",
                                                                       "adam_v")}
        out["adam_t"] = int(f.attrs["adam_t"])
        out["state"] = json.loads(f.attrs["state"])
    return out


def _takes_keyword(fn, name):
    """Does the callable ``fn`` accept the keyword argument ``name``?"""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _frame_weights(frame_weights, xs, several):
    """Checked per-stream frame weights (a list with ``None`` for streams weighted 1), or ``None``."""
    if frame_weights is None:
        return None
    fws = list(frame_weights) if isinstance(frame_weights, (list, tuple)) else [frame_weights]
    if len(fws) != len(xs):
        raise ValueError(f"frame_weights lists {len(fws)} streams, the stimulus {len(xs)}")
    out = []
    for i, fw in enumerate(fws):
        if fw is None:
            out.append(None)
            continue
        name = f"frame_weights[{i}]" if several else "frame_weights"
        fw = as_float_array(name, fw, ndim=1, dtype=np.float64)
        if fw.shape[0] != xs[i].shape[0]:
            raise ValueError(f"{name} must have one weight per stimulus frame ({xs[i].shape[0]}), got {fw.shape[0]}")
        if not (np.isfinite(fw).all() and (fw >= 0).all()):
            raise ValueError(f"{name} must be finite and >= 0")
        out.append(fw)
    return out


def train(stimulus, rates, *, config=None, valid=None, checkpoint=None, norm_stats=None, cell_ids=None,
          progress=True, backend="cpu", max_epochs=None, init_from=None, score=None, frame_weights=None,
          **overrides):
    """Fit a CNN to a stimulus and firing rates.

    Parameters
    ----------
    stimulus : array (T, H, W), or a list of them
        z-scored movie (see :func:`retina.datasets.load_dataset`); several
        streams (e.g. natural movie and white noise) are sampled with
        ``config.stream_weights`` and no run crosses from one to the next.
    rates : array (T, n_cells), or a list of them
        Firing rates in Hz, aligned with the frames.
    config : TrainConfig, optional
        Settings; keyword ``overrides`` replace single fields (``epochs=5``...).
    valid : (stimulus, rates) or list of them, optional
        Validation data; default the last ``val_fraction`` of the movie.  With
        several sets (e.g. natural movie and white noise) the validation
        correlation is the mean of their mean per-cell correlations, so each
        stimulus class counts equally in model selection.
    checkpoint : path, optional
        Written atomically after every epoch; if it exists with the same
        settings, training resumes from it (same result as an uninterrupted run).
    max_epochs : int, optional
        Stop after this many epochs in this call (for tests of resumption).
    init_from : path, optional
        Start from the best parameters (and batch-norm statistics) of another
        run's checkpoint, e.g. to fine-tune with other settings; the
        architecture must match.
    score : callable, optional
        ``score(model, val_corr) -> float``, larger is better: selects the best
        epoch (and drives the plateau and early-stopping counters) in place of
        the validation correlation ``val_corr``, which is still logged.  E.g.
        ``val_corr`` minus a penalty when the model misses a known response
        property that the loss barely sees.  A ``score`` that accepts the
        keyword ``val_corrs`` also gets each validation set's mean per-cell
        correlation (a list in the order of ``valid``), so it need not
        predict a validation set again.
    frame_weights : array (T,), or a list of them (``None`` entries allowed), optional
        Loss weight of each frame's target, per stream (multiplying the
        stream's ``config.stream_loss_weights``): e.g. larger around events
        whose few frames the Poisson loss barely sees, such as the burst
        after a moving bar turns back.  Default 1 everywhere.
    backend : {"cpu", "gpu", "auto"}
        Where the forward and backward passes and the validation run.  On
        ``"gpu"`` each mini-batch is copied to the device and the CuPy kernels
        (:mod:`retina.kernels.gpu`, the same FFT algorithms) do the work; the
        data, the parameters and Adam stay on the host (the parameters are
        ~0.1 M numbers, a batch ~9 MB), so checkpoints and resumption are the
        same on both backends.

    Returns
    -------
    TrainResult
    """
    cfg = (TrainConfig(**overrides) if config is None else TrainConfig(**{**asdict(config), **overrides})).validate()
    be = _backend.resolve(backend)
    several = isinstance(stimulus, (list, tuple))
    xs = list(stimulus) if several else [stimulus]
    ys = list(rates) if isinstance(rates, (list, tuple)) else [rates]
    if len(xs) != len(ys):
        raise ValueError(f"stimulus and rates must list the same number of streams, got {len(xs)} and {len(ys)}")
    xs = [as_float_array(f"stimulus[{i}]" if several else "stimulus", a, ndim=3, dtype=np.float32)
          for i, a in enumerate(xs)]
    ys = [as_float_array(f"rates[{i}]" if several else "rates", a, ndim=2, dtype=np.float32)
          for i, a in enumerate(ys)]
    for i, (x, y) in enumerate(zip(xs, ys)):
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"rates must have one row per stimulus frame ({x.shape[0]}), got shape {y.shape}"
                             + (f" (stream {i})" if several else ""))
        if (y < 0).any():
            raise ValueError("rates must be >= 0 (Hz)")
        if x.shape[1:] != xs[0].shape[1:] or y.shape[1] != ys[0].shape[1]:
            raise ValueError("every stream must have the same frame shape and number of cells")
    for name in ("stream_weights", "stream_loss_weights"):
        if getattr(cfg, name) is not None and len(getattr(cfg, name)) != len(xs):
            raise ValueError(f"{name} has {len(getattr(cfg, name))} entries for {len(xs)} streams")
    loss_w = np.ones(len(xs)) if cfg.stream_loss_weights is None else np.asarray(cfg.stream_loss_weights)
    fws = _frame_weights(frame_weights, xs, several)
    if valid is None:
        if several:
            raise ValueError("pass valid=(stimulus, rates) when training on several streams")
        x, y = xs[0], ys[0]
        n_val = max(int(round(cfg.val_fraction * len(x))), cfg.history + 2)
        if len(x) - n_val < cfg.history + cfg.batch // cfg.segments:
            raise ValueError(f"the movie ({len(x)} frames) is too short for training with history {cfg.history}, "
                             f"batch runs of {cfg.batch // cfg.segments} windows and a validation split")
        vsets = [(x[-n_val:], y[-n_val:])]
        xs, ys = [x[:-n_val]], [y[:-n_val]]
    else:
        pairs_ = list(valid) if isinstance(valid, list) else [valid]
        vsets = []
        for i, pair in enumerate(pairs_):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError("valid must be (stimulus, rates) or a list of such pairs")
            tag = f"valid[{i}]" if isinstance(valid, list) else "valid"
            vsets.append((as_float_array(f"{tag}[0]", pair[0], ndim=3, dtype=np.float32),
                          as_float_array(f"{tag}[1]", pair[1], ndim=2, dtype=np.float32)))
    frame_shape = xs[0].shape[1:]
    run_len = cfg.batch // cfg.segments
    n_starts = np.array([len(x) - cfg.history - run_len + 1 for x in xs])
    if (n_starts < 1).any():
        raise ValueError(f"a training movie ({min(len(x) for x in xs)} frames) is shorter than one run of "
                         f"{run_len} windows")
    share = np.asarray(cfg.stream_weights if cfg.stream_weights is not None else n_starts, np.float64)
    share = share / share.sum()
    y_mean = float(sum(y.sum() for y in ys) / sum(y.size for y in ys))
    rng = np.random.default_rng(cfg.seed)
    params, running = init_params(cfg, ys[0].shape[1], frame_shape, mean_rate=y_mean, rng=rng)
    if init_from is not None:
        import h5py

        with h5py.File(init_from, "r") as f:
            if f.attrs.get("format") != "retina-checkpoint":
                raise ValueError(f"init_from: {str(init_from)!r} is not a retina training checkpoint")
            for group, target in ((PARAMS, params), (RUNNING, running)):
                for k in group:
                    if f["best"][k].shape != target[k].shape:
                        raise ValueError(f"init_from: {k} has shape {f['best'][k].shape}, this run needs "
                                         f"{target[k].shape}")
                    target[k] = f["best"][k][()].astype(np.float32)
    adam = _Adam(params, cfg.lr)
    best = {k: v.copy() for k, v in {**params, **running}.items()}
    state = {"epoch": 0, "lr": cfg.lr, "best_val": -np.inf, "best_epoch": -1, "bad": 0, "lr_bad": 0,
             "log": [], "rng": None, "seconds": 0.0}
    if checkpoint is not None and Path(checkpoint).exists():
        ck = _load_checkpoint(checkpoint, cfg)
        params, running, best = ck["params"], ck["running"], ck["best"]
        adam.m, adam.v, adam.t = ck["adam_m"], ck["adam_v"], ck["adam_t"]
        state = ck["state"]
        rng.bit_generator.state = state["rng"]
    adam.lr = state["lr"]
    meta = dict(trainer="retina.train", retina_version=__version__, config=json.dumps(asdict(cfg)))
    steps = max(cfg.epoch_windows // cfg.batch, 1)
    stopped = ""
    done_here = 0
    while state["epoch"] < cfg.epochs:
        if max_epochs is not None and done_here >= max_epochs:
            stopped = "max_epochs"
            break
        t0 = time.perf_counter()
        losses = []
        bar = progress_bar(range(steps), total=steps, desc=f"epoch {state['epoch'] + 1}/{cfg.epochs}",
                           unit="batch", enabled=progress)
        for _ in bar:
            streams = rng.choice(len(xs), cfg.segments, p=share) if len(xs) > 1 else np.zeros(cfg.segments, int)
            starts = rng.integers(0, n_starts[streams])
            segs = [xs[i][s:s + run_len + cfg.history - 1] for i, s in zip(streams, starts)]
            tgt = np.concatenate([ys[i][s + cfg.history:s + cfg.history + run_len] for i, s in zip(streams, starts)])
            sw = None if cfg.stream_loss_weights is None else np.repeat(loss_w[streams], run_len)
            if fws is not None:
                first = starts + cfg.history   # each run's first target frame
                fw = np.concatenate([np.ones(run_len) if fws[i] is None else fws[i][a:a + run_len]
                                     for i, a in zip(streams, first)])
                sw = fw if sw is None else sw * fw
            loss, grads, st = loss_and_grads(params, segs, tgt, cfg, rng=rng, backend=be, sample_weights=sw)
            if not np.isfinite(loss):
                raise FloatingPointError("the training loss became non-finite; lower lr")
            adam.step(params, {k: g for k, g in grads.items() if k not in cfg.freeze})
            mom = cfg.bn_momentum
            for k in RUNNING:
                running[k] = ((1 - mom) * running[k] + mom * st[k]).astype(np.float32)
            losses.append(loss)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        model = to_model(params, running, cfg, frame_shape=frame_shape, norm_stats=norm_stats, cell_ids=cell_ids,
                         metadata=meta)
        scores = [evaluate(model, xv, yv, backend=be.name) for xv, yv in vsets]
        val = float(np.mean([np.mean(c) for c, _ in scores]))  # each validation set counts equally
        vloss = float(np.mean([v for _, v in scores]))
        if score is None:
            chosen = val
        elif _takes_keyword(score, "val_corrs"):
            chosen = float(score(model, val, val_corrs=[float(np.mean(c)) for c, _ in scores]))
        else:
            chosen = float(score(model, val))
        state["epoch"] += 1
        state["seconds"] += time.perf_counter() - t0
        state["log"].append({"epoch": state["epoch"], "train_loss": float(np.mean(losses)), "val_loss": vloss,
                             "val_corr": val, "lr": adam.lr, "seconds": time.perf_counter() - t0})
        if score is not None:
            state["log"][-1]["score"] = chosen
        if progress:
            print(f"epoch {state['epoch']}: train loss {np.mean(losses):.4f}, val loss {vloss:.4f}, "
                  f"val corr {val:.3f}" + ("" if score is None else f", score {chosen:.3f}") + f", lr {adam.lr:.1e}",
                  flush=True)
        if chosen > state["best_val"]:
            state.update(best_val=chosen, best_epoch=state["epoch"], bad=0, lr_bad=0)
            best = {k: v.copy() for k, v in {**params, **running}.items()}
        else:
            state["bad"] += 1
            state["lr_bad"] += 1
            if state["lr_bad"] >= cfg.lr_patience and adam.lr > cfg.min_lr:
                adam.lr = max(adam.lr * cfg.lr_factor, cfg.min_lr)
                state["lr_bad"] = 0
        state["lr"] = adam.lr
        state["rng"] = rng.bit_generator.state
        if checkpoint is not None:
            _save_checkpoint(checkpoint, cfg, params, running, best, adam, state)
        done_here += 1
        if state["bad"] >= cfg.patience:
            stopped = "early stopping"
            break
    else:
        stopped = "epochs"
    bp = {k: best[k] for k in PARAMS}
    br = {k: best[k] for k in RUNNING}
    best_corr = state["log"][state["best_epoch"] - 1]["val_corr"] if state["best_epoch"] > 0 else float("nan")
    meta.update(best_epoch=state["best_epoch"], best_val_corr=best_corr)
    if score is not None:
        meta["best_score"] = state["best_val"]
    model = to_model(bp, br, cfg, frame_shape=frame_shape, norm_stats=norm_stats, cell_ids=cell_ids, metadata=meta)
    return TrainResult(model, state["log"], state["best_epoch"], best_corr, stopped, state["seconds"],
                       state["best_val"] if score is not None else best_corr)

