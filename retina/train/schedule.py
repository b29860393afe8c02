"""Model selection, plateau learning-rate decay and early stopping, as one small state machine.

The state is a plain dict (it goes into checkpoints): ``lr``, ``best_val``
(the best epoch's score, larger is better), ``best_epoch``, ``bad`` (epochs
since the best) and ``lr_bad`` (epochs since the best or the last decay).
"""

from __future__ import annotations

__all__ = ["initial_state", "update", "should_stop"]


def initial_state(cfg):
    """The schedule's state before the first epoch."""
    return {"lr": cfg.lr, "best_val": float("-inf"), "best_epoch": -1, "bad": 0, "lr_bad": 0}


def update(state, score, epoch, cfg):
    """Record epoch ``epoch``'s ``score``: returns True when it is the best so far.

    Otherwise the patience counters grow, and after ``lr_patience`` epochs
    without improvement the learning rate falls by ``lr_factor`` (not below
    ``min_lr``).
    """
    if score > state["best_val"]:
        state.update(best_val=score, best_epoch=epoch, bad=0, lr_bad=0)
        return True
    state["bad"] += 1
    state["lr_bad"] += 1
    if state["lr_bad"] >= cfg.lr_patience and state["lr"] > cfg.min_lr:
        state["lr"] = max(state["lr"] * cfg.lr_factor, cfg.min_lr)
        state["lr_bad"] = 0
    return False


def should_stop(state, cfg):
    """Early stopping: ``patience`` epochs without a better score."""
    return state["bad"] >= cfg.patience
