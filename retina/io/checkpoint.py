"""The training checkpoint: schema version 1 (``format = "retina-checkpoint"``).

Root attributes: ``format``, ``schema_version``, ``retina_version``,
``config`` (the training settings, JSON), ``state`` (epoch, learning rate,
early-stopping counters, the per-epoch log and the random generator's state,
JSON), ``adam_t`` (Adam's step count).  Groups ``params``, ``running``
(batch-norm running statistics), ``best`` (parameters and statistics of the
best epoch so far), ``adam_m``, ``adam_v``: one float32 dataset per
parameter.  Written atomically after every epoch; files without
``schema_version`` (written before it existed) read as version 1.
"""

from __future__ import annotations

import json

from .._version import __version__
from ._files import atomic_h5, check_format, open_h5, text

__all__ = ["save_checkpoint", "load_checkpoint", "load_best", "CHECKPOINT_FORMAT", "SCHEMA_VERSION"]

CHECKPOINT_FORMAT = "retina-checkpoint"
SCHEMA_VERSION = 1
GROUPS = ("params", "running", "best", "adam_m", "adam_v")


def save_checkpoint(path, *, config, state, adam_t, **groups):
    """Write a checkpoint: ``config`` and ``state`` (JSON-able dicts), ``adam_t`` and the array groups."""
    missing = set(GROUPS) - set(groups)
    if missing:
        raise ValueError(f"a checkpoint needs the groups {GROUPS}; missing {sorted(missing)}")
    with atomic_h5(path) as f:
        f.attrs.update(format=CHECKPOINT_FORMAT, schema_version=SCHEMA_VERSION, retina_version=__version__,
                       config=json.dumps(config), state=json.dumps(state), adam_t=int(adam_t))
        for name in GROUPS:
            g = f.create_group(name)
            for k, v in groups[name].items():
                g.create_dataset(k, data=v)
    return path


def load_checkpoint(path):
    """Read a checkpoint: ``{"config", "state", "adam_t", "params", "running", "best", "adam_m", "adam_v"}``."""
    with open_h5(path, "checkpoint") as f:
        check_format(f, path, CHECKPOINT_FORMAT, (1,))
        out = {name: {k: f[name][k][()] for k in f[name]} for name in GROUPS}
        out["config"] = json.loads(text(f.attrs["config"]))
        out["state"] = json.loads(text(f.attrs["state"]))
        out["adam_t"] = int(f.attrs["adam_t"])
    return out


def load_best(path, names):
    """The best epoch's arrays ``names`` of a checkpoint (to start another run from them)."""
    with open_h5(path, "checkpoint") as f:
        check_format(f, path, CHECKPOINT_FORMAT, (1,))
        missing = [k for k in names if k not in f["best"]]
        if missing:
            raise ValueError(f"checkpoint {str(path)!r} lacks the arrays {missing}")
        return {k: f["best"][k][()] for k in names}
