"""The training loop: a short composition of the parts in this package.

:func:`train` checks the data (:mod:`.sampling`), initialises or resumes
(:mod:`.checkpoint`), and per epoch draws mini-batches, takes Adam steps on
the hand-written gradients (:mod:`.loss`, :mod:`.optim`), validates, and lets
the schedule (:mod:`.schedule`) pick the best epoch, decay the learning rate
and stop early.  Progress goes to a progress bar and to ``logging``.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import _backend
from .._progress import progress_bar
from .._version import __version__
from . import checkpoint as ckpt
from . import schedule
from .config import PARAMS, RUNNING, TrainConfig, TrainResult
from .loss import evaluate, init_params, loss_and_grads, to_model
from .optim import Adam
from .sampling import RunSampler, prepare

__all__ = ["train"]

log = logging.getLogger("retina.train")


def _takes_keyword(fn, name):
    """Does the callable ``fn`` accept the keyword argument ``name``?"""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _epoch(sampler, params, running, adam, cfg, rng, be, steps, desc, progress):
    """One epoch of Adam steps; returns the mean training loss."""
    losses = []
    bar = progress_bar(range(steps), total=steps, desc=desc, unit="batch", enabled=progress)
    for _ in bar:
        segs, tgt, sw = sampler.draw(rng)
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
    return float(np.mean(losses))


def _validate(model, vsets, score, be):
    """Validation correlation (each set counts equally), loss, and the selection score."""
    scores = [evaluate(model, xv, yv, backend=be.name) for xv, yv in vsets]
    val = float(np.mean([np.mean(c) for c, _ in scores]))
    vloss = float(np.mean([v for _, v in scores]))
    if score is None:
        chosen = val
    elif _takes_keyword(score, "val_corrs"):
        chosen = float(score(model, val, val_corrs=[float(np.mean(c)) for c, _ in scores]))
    else:
        chosen = float(score(model, val))
    return val, vloss, chosen


def train(stimulus, rates, *, config: TrainConfig | None = None, valid=None, checkpoint=None,
          norm_stats: dict | None = None, cell_ids=None, progress: bool = False, backend: str = "cpu",
          max_epochs: int | None = None, init_from=None, score=None, frame_weights=None,
          input_units: str = "contrast", **overrides) -> TrainResult:
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
    init_from : path or dict, optional
        Start from the best parameters (and batch-norm statistics) of another
        run's checkpoint, e.g. to fine-tune with other settings; the
        architecture must match.  A dict (name -> array, names from
        :data:`retina.train.PARAMS`) sets those parameters only, e.g. planted
        layer-1 filters kept with ``freeze=("w1",)``.
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
    input_units : {"contrast", "intensity"}
        The units ``norm_stats`` are in (:attr:`retina.datasets.Dataset.units`),
        recorded in the model.
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
    xs, ys, vsets, fws = prepare(stimulus, rates, valid, cfg, frame_weights)
    sampler = RunSampler(xs, ys, cfg, fws)
    frame_shape = xs[0].shape[1:]
    y_mean = float(sum(y.sum() for y in ys) / sum(y.size for y in ys))
    rng = np.random.default_rng(cfg.seed)
    params, running = init_params(cfg, ys[0].shape[1], frame_shape, mean_rate=y_mean, rng=rng)
    if isinstance(init_from, dict):
        for k, v in init_from.items():
            if k not in params:
                raise ValueError(f"init_from: unknown parameter {k!r}; expected names from {tuple(params)}")
            v = np.asarray(v, np.float32)
            if v.shape != params[k].shape:
                raise ValueError(f"init_from: {k} has shape {v.shape}, this run needs {params[k].shape}")
            params[k] = v.copy()
    elif init_from is not None:
        ckpt.init_from(init_from, params, running)
    adam = Adam(params, cfg.lr)
    best = {k: v.copy() for k, v in {**params, **running}.items()}
    state = dict(schedule.initial_state(cfg), epoch=0, log=[], rng=None, seconds=0.0, stopped="")
    if checkpoint is not None and Path(checkpoint).exists():
        ck = ckpt.resume(checkpoint, cfg)
        params, running, best = ck["params"], ck["running"], ck["best"]
        adam.m, adam.v, adam.t = ck["adam_m"], ck["adam_v"], ck["adam_t"]
        state = dict({"stopped": ""}, **ck["state"])
        rng.bit_generator.state = state["rng"]
    adam.lr = state["lr"]
    meta = dict(trainer="retina.train", retina_version=__version__, config=json.dumps(asdict(cfg)))
    steps = max(cfg.epoch_windows // cfg.batch, 1)

    def model_of(p, r, **extra):
        return to_model(p, r, cfg, frame_shape=frame_shape, norm_stats=norm_stats, cell_ids=cell_ids,
                        metadata=dict(meta, **extra), input_units=input_units)

    stopped, done_here = state["stopped"], 0
    while not stopped and state["epoch"] < cfg.epochs:
        if max_epochs is not None and done_here >= max_epochs:
            stopped = "max_epochs"
            break
        t0 = time.perf_counter()
        train_loss = _epoch(sampler, params, running, adam, cfg, rng, be, steps,
                            f"epoch {state['epoch'] + 1}/{cfg.epochs}", progress)
        val, vloss, chosen = _validate(model_of(params, running), vsets, score, be)
        state["epoch"] += 1
        state["seconds"] += time.perf_counter() - t0
        entry = {"epoch": state["epoch"], "train_loss": train_loss, "val_loss": vloss, "val_corr": val,
                 "lr": adam.lr, "seconds": time.perf_counter() - t0}
        if score is not None:
            entry["score"] = chosen
        state["log"].append(entry)
        log.info("epoch %d: train loss %.4f, val loss %.4f, val corr %.3f%s, lr %.1e", state["epoch"], train_loss,
                 vloss, val, "" if score is None else f", score {chosen:.3f}", adam.lr)
        if schedule.update(state, chosen, state["epoch"], cfg):
            best = {k: v.copy() for k, v in {**params, **running}.items()}
        adam.lr = state["lr"]
        state["rng"] = rng.bit_generator.state
        done_here += 1
        if schedule.should_stop(state, cfg):
            stopped = state["stopped"] = "early stopping"
        if checkpoint is not None:
            ckpt.save(checkpoint, cfg, params, running, best, adam, state)
    if not stopped:
        stopped = "epochs"
    best_corr = state["log"][state["best_epoch"] - 1]["val_corr"] if state["best_epoch"] > 0 else float("nan")
    extra = dict(best_epoch=state["best_epoch"], best_val_corr=best_corr)
    if score is not None:
        extra["best_score"] = state["best_val"]
    model = model_of({k: best[k] for k in PARAMS}, {k: best[k] for k in RUNNING}, **extra)
    return TrainResult(model, state["log"], state["best_epoch"], best_corr, stopped, state["seconds"],
                       state["best_val"] if score is not None else best_corr)
