"""Resuming a run: the checkpoint written after every epoch, checked against the run's settings.

The file layout is :mod:`retina.io.checkpoint`'s; this module knows what a
training run keeps in it and which settings must match to resume.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ..io.checkpoint import load_best, load_checkpoint, save_checkpoint
from .config import PARAMS, RUNNING, TrainConfig

__all__ = ["save", "resume", "init_from"]


def save(path, cfg, params, running, best, adam, state):
    """Write the run's whole state after an epoch (atomically)."""
    save_checkpoint(path, config=asdict(cfg), state=state, adam_t=adam.t, params=params, running=running,
                    best=best, adam_m=adam.m, adam_v=adam.v)


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def resume(path, cfg):
    """A checkpoint's contents, refused when it was written with other settings (``epochs`` may differ;
    settings added since take their defaults)."""
    ck = load_checkpoint(path)
    saved, defaults = ck["config"], asdict(TrainConfig())
    current = {k: _norm(v) for k, v in asdict(cfg).items() if k != "epochs"}
    if {k: _norm(saved.get(k, defaults[k])) for k in current} != current or set(saved) - set(defaults):
        raise ValueError(f"checkpoint {str(path)!r} was written with other settings: {saved}; "
                         "delete it or use the same settings")
    return ck


def init_from(path, params, running):
    """Replace ``params`` and ``running`` (in place) by another run's best epoch; the shapes must match."""
    try:
        best = load_best(path, PARAMS + RUNNING)
    except ValueError as exc:
        raise ValueError(f"init_from: {exc}") from None
    for target in (params, running):
        for k in target:
            if best[k].shape != target[k].shape:
                raise ValueError(f"init_from: {k} has shape {best[k].shape}, this run needs {target[k].shape}")
            target[k] = best[k].astype(np.float32)
