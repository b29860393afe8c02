"""An ensemble: one model per seed, same data and settings, trained in this process or on a Dask cluster.

:func:`train_ensemble` calls :func:`retina.train.train` once per seed.  With
``client=`` the stimulus and rates go to every worker once and each seed is
one task; the driver writes each model as soon as it is trained (``out``), so
an interrupted ensemble resumes with the finished seeds kept: a seed whose
model file exists with the same settings is read back, not retrained.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from .._validate import check_int
from .config import TrainConfig, TrainResult
from .loop import train

__all__ = ["train_ensemble", "seed_path"]

log = logging.getLogger("retina.train")


def seed_path(pattern, seed: int) -> Path:
    """The file of one seed: ``pattern`` with ``{seed}`` filled in, or ``-seed<N>`` added before its suffix."""
    pattern = str(pattern)
    if "{seed}" in pattern:
        return Path(pattern.replace("{seed}", str(seed)))
    p = Path(pattern)
    return p.with_name(f"{p.stem}-seed{seed}{p.suffix or '.h5'}")


def _check_seeds(seeds):
    try:
        seeds = [check_int("seeds[i]", s, minimum=0) for s in seeds]
    except TypeError:
        raise ValueError(f"seeds must be a sequence of non-negative integers, got {seeds!r}") from None
    if not seeds:
        raise ValueError("seeds must list at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    return seeds


def _fit(seed, stimulus, rates, config, kwargs):
    return train(stimulus, rates, config=config, seed=seed, **kwargs)


def _data_hash(*arrays) -> str:
    """SHA-256 over the training data (arrays or lists of arrays): a kept model must come from the same data."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        for part in (a if isinstance(a, (list, tuple)) else [a]):
            arr = np.ascontiguousarray(part)
            h.update(str((arr.dtype.str, arr.shape)).encode())
            h.update(arr.data)   # the buffer itself: no copy of a large movie
    return h.hexdigest()


def _finished(path, cfg, data):
    """The model at ``path`` if it was trained with exactly ``cfg`` on ``data`` (else None)."""
    from ..io import load_model

    if not path.exists():
        return None
    try:
        model = load_model(path)
    except (ValueError, OSError):
        return None
    if model.metadata.get("config") != json.dumps(asdict(cfg)) or model.metadata.get("ensemble_data") != data:
        return None
    return model


def train_ensemble(stimulus, rates, seeds, *, config: TrainConfig | None = None, out=None, client=None,
                   progress: bool = False, metadata: dict | None = None, **kwargs) -> list[TrainResult]:
    """Train one model per seed on the same data; returns the :class:`TrainResult` of each seed, in seed order.

    Parameters
    ----------
    stimulus, rates, config
        As for :func:`retina.train.train` (the config's ``seed`` is replaced by each seed).
    seeds : sequence of int
        Distinct seeds: each sets the initial weights, the mini-batch draws and the noise.
    out : str or Path, optional
        Where the models go: a pattern with ``{seed}`` (``models/seed{seed}.h5``),
        or a file name that gets ``-seed<N>`` before its suffix.  Written by this
        process, atomically, as each seed finishes; an existing file trained
        with the same settings is kept and read back instead of retraining.
    metadata : dict, optional
        Added to every model's metadata (provenance such as the data file).
    client : dask.distributed.Client, optional
        Train the seeds in parallel on the cluster (one task per seed; the
        data is sent to each worker once).  Each seed gives the same model as
        in this process.
    **kwargs
        Passed to :func:`retina.train.train` (``valid``, ``norm_stats``,
        ``cell_ids``, ``frame_weights``, ``max_epochs``...; not ``checkpoint``:
        each seed's model file is its unit of resumption).

    Returns
    -------
    list of TrainResult
        Seeds read back from ``out`` have the model only (empty ``history``).
    """
    from ..distributed import check_client, run_items

    client = check_client(client)
    seeds = _check_seeds(seeds)
    if "seed" in kwargs or "checkpoint" in kwargs:
        raise ValueError("train_ensemble takes the seeds as seeds=[...] and keeps no checkpoint; "
                         f"got {sorted(set(kwargs) & {'seed', 'checkpoint'})}")
    base = TrainConfig() if config is None else config
    data = _data_hash(stimulus, rates) if out is not None else ""
    results: dict[int, TrainResult] = {}
    todo = []
    for s in seeds:
        cfg = TrainConfig(**{**asdict(base), "seed": s}).validate()
        model = _finished(seed_path(out, s), cfg, data) if out is not None else None
        if model is not None:
            log.info("seed %d: kept %s", s, seed_path(out, s))
            results[s] = TrainResult(model, [], int(model.metadata.get("best_epoch", -1)),
                                     float(model.metadata.get("best_val_corr", float("nan"))), "kept")
        else:
            todo.append(s)

    def done(seed, res):
        results[seed] = res
        res.model.metadata.update(metadata or {})
        if out is not None:
            res.model.metadata["ensemble_data"] = data
            res.model.save(seed_path(out, seed))
        log.info("seed %d: best epoch %d, validation correlation %.3f", seed, res.best_epoch, res.best_val_corr)

    if client is None:
        for s in todo:
            done(s, _fit(s, stimulus, rates, base, dict(kwargs, progress=progress)))
    else:
        run_items(client, _fit, todo, shared=(stimulus, rates, base, kwargs), on_result=done,
                  label=lambda s: f"seed {s}", desc="ensemble", unit="seed", progress=progress, max_batch=1)
    return [results[s] for s in seeds]
