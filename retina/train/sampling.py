"""Training data: the streams and validation sets checked, and mini-batches of runs drawn from them.

A mini-batch is ``segments`` runs of ``batch / segments`` consecutive windows,
each from one stream (chosen with ``stream_weights``) at a random start; no
run crosses from one stream to the next.  Targets follow deep-retina: the
window of frames ``[i, i + history)`` is paired with the rate in bin
``i + history``.  Each target's loss weight is its stream's
``stream_loss_weights`` times its frame's ``frame_weights``.
"""

from __future__ import annotations

import numpy as np

from .._validate import as_float_array
from ..io.dataset import CompactMovie

__all__ = ["prepare", "RunSampler", "check_frame_weights"]


def prepare(stimulus, rates, valid, cfg, frame_weights=None):
    """Check the training streams, frame weights and validation sets: ``(xs, ys, vsets, frame_weights)``.

    Streams come back as float32 arrays (a :class:`~retina.io.dataset.CompactMovie`
    stays compact) and validation sets as float32 arrays; without ``valid``
    the last ``val_fraction`` of a single stream validates.
    """
    several = isinstance(stimulus, (list, tuple))
    xs = list(stimulus) if several else [stimulus]
    ys = list(rates) if isinstance(rates, (list, tuple)) else [rates]
    if len(xs) != len(ys):
        raise ValueError(f"stimulus and rates must list the same number of streams, got {len(xs)} and {len(ys)}")
    xs = [a if isinstance(a, CompactMovie) else   # sampled as it is: decoded run by run
          as_float_array(f"stimulus[{i}]" if several else "stimulus", a, ndim=3, dtype=np.float32)
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
    fws = check_frame_weights(frame_weights, xs, several)
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
    return xs, ys, vsets, fws


class RunSampler:
    """Draws mini-batches from the training streams ``xs``/``ys`` (float32 or compact, checked by :func:`prepare`)."""

    def __init__(self, xs, ys, cfg, frame_weights=None):
        self.xs, self.ys, self.cfg = xs, ys, cfg
        self.run_len = cfg.batch // cfg.segments
        self.n_starts = np.array([len(x) - cfg.history - self.run_len + 1 for x in xs])
        if (self.n_starts < 1).any():
            raise ValueError(f"a training movie ({min(len(x) for x in xs)} frames) is shorter than one run of "
                             f"{self.run_len} windows")
        share = np.asarray(cfg.stream_weights if cfg.stream_weights is not None else self.n_starts, np.float64)
        self.share = share / share.sum()
        self.loss_w = np.ones(len(xs)) if cfg.stream_loss_weights is None else np.asarray(cfg.stream_loss_weights)
        self.frame_weights = frame_weights

    def draw(self, rng):
        """One mini-batch: ``(runs of frames, targets (N, cells), sample weights (N,) or None)``."""
        cfg, run_len, xs, ys = self.cfg, self.run_len, self.xs, self.ys
        streams = rng.choice(len(xs), cfg.segments, p=self.share) if len(xs) > 1 else np.zeros(cfg.segments, int)
        starts = rng.integers(0, self.n_starts[streams])
        segs = [np.asarray(xs[i][s:s + run_len + cfg.history - 1]) for i, s in zip(streams, starts)]
        tgt = np.concatenate([ys[i][s + cfg.history:s + cfg.history + run_len] for i, s in zip(streams, starts)])
        sw = None if cfg.stream_loss_weights is None else np.repeat(self.loss_w[streams], run_len)
        if self.frame_weights is not None:
            fws = self.frame_weights
            first = starts + cfg.history   # each run's first target frame
            fw = np.concatenate([np.ones(run_len) if fws[i] is None else fws[i][a:a + run_len]
                                 for i, a in zip(streams, first)])
            sw = fw if sw is None else sw * fw
        return segs, tgt, sw


def check_frame_weights(frame_weights, xs, several):
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
