"""Stimulus sweeps: one phenomenon over a grid of stimulus parameters, resumable, in one HDF5 file.

:func:`sweep` calls a registered phenomenon (:mod:`retina.phenomena`) once per grid
point (the Cartesian product of ``grid``), keeps every point's measures,
responses and (for CNNs) pooled attributions and kept channels, and writes
them to ``out`` as it goes: the file grows as ``OUT.partial`` (one group per
finished point, flushed) and is renamed to ``OUT`` when the sweep is complete.
Rerunning an interrupted sweep with the same model, phenomenon, grid and
options skips the finished points.

    >>> res = sweep(model, "osr", {"periods": range(4, 21, 2), "intensity": [-1.0, -0.5]}, out="osr.h5")
    >>> res.table("osr_peak_mean")          # (9, 2) array over the grid
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import phenomena as P
from ._progress import progress_bar
from .io import finish_partial, open_partial
from .io.results import (
    SCHEMA_VERSIONS,
    SWEEP_FORMAT,
    read_point_measures,
    read_sweep,
    write_sweep_point,
    write_sweep_tables,
)

__all__ = ["sweep", "SweepResult", "load_sweep"]


@dataclass
class SweepResult:
    """The grid and each point's measures (plain numbers), in grid order.

    A point with a single stimulus condition also carries that condition's own
    measure (e.g. ``peak_ms`` of one flash), besides the phenomenon's summary.
    """

    phenomenon: str
    grid: dict
    points: list
    measures: list
    path: Path | None = None
    results: list = field(default_factory=list, repr=False)

    @property
    def shape(self):
        return tuple(len(v) for v in self.grid.values())

    def table(self, key):
        """One measure over the grid: an array of shape :attr:`shape` (NaN where a point lacks it)."""
        vals = [float(m.get(key, np.nan)) if isinstance(m.get(key, np.nan), (int, float)) else np.nan
                for m in self.measures]
        return np.array(vals).reshape(self.shape)


def _jsonable(v):
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, (range, tuple, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def _model_id(model):
    return model.content_hash() if hasattr(model, "content_hash") else type(model).__name__ + json.dumps(
        getattr(getattr(model, "params", None), "to_dict", lambda: {})(), sort_keys=True, default=str)


def sweep(model, phenomenon: str | P.Phenomenon, grid: dict, *, out: str | os.PathLike | None = None,
          progress: bool = False, **options) -> SweepResult:
    """Run ``phenomenon`` at every point of ``grid``; resumable when ``out`` is given.

    Parameters
    ----------
    model : RetinaCNN or any object with ``rates(movie)``
    phenomenon : str or Phenomenon
        A registered phenomenon (:data:`retina.phenomena.REGISTRY`).
    grid : dict of name -> sequence
        Keyword arguments of the phenomenon and the values to sweep, e.g.
        ``{"periods": range(2, 21), "intensity": np.linspace(-1, -0.1, 10)}``.
        List parameters (:attr:`retina.phenomena.Phenomenon.list_params`:
        ``periods``, ``intensities``, ``speeds``...) given as scalars are
        wrapped into one-condition lists.
    out : path, optional
        HDF5 file of the sweep (written atomically; an existing
        ``OUT.partial`` from the same settings is resumed).
    **options
        Fixed keyword arguments of the phenomenon (``n_steps``, ``explain``, ``cells``...).

    Returns
    -------
    SweepResult
    """
    ph = P.get(phenomenon)
    phenomenon, fn = ph.name, ph.run
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"grid must be a non-empty dict of parameter -> values, got {grid!r}")
    accepted = set(inspect.signature(fn).parameters) - {"model"}
    for name in list(grid) + list(options):
        if name not in accepted:
            raise ValueError(f"{phenomenon}() has no parameter {name!r}; it takes {sorted(accepted)}")
    grid = {k: [_jsonable(v) for v in vals] for k, vals in grid.items()}
    for k, vals in grid.items():
        if not vals:
            raise ValueError(f"grid[{k!r}] is empty")
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    settings = dict(phenomenon=phenomenon, grid=grid, options=_jsonable(options), model=_model_id(model),
                    schema_version=SCHEMA_VERSIONS[SWEEP_FORMAT])

    f = None
    if out is not None:
        f, _ = open_partial(out, settings, fmt=SWEEP_FORMAT, schema_version=SCHEMA_VERSIONS[SWEEP_FORMAT],
                            attrs={"phenomenon": phenomenon})
    measures: list = []
    results: list = []
    try:
        for i in progress_bar(range(len(points)), total=len(points), desc=f"sweep {phenomenon}", unit="point",
                              enabled=progress):
            key = f"point{i:05d}"
            if f is not None and key in f and f[key].attrs.get("done", False):
                measures.append(read_point_measures(f[key]))
                results.append(None)
                continue
            kwargs = dict(options)
            for k, v in points[i].items():
                kwargs[k] = [v] if k in ph.list_params and np.isscalar(v) else v
            res = fn(model, **kwargs)
            found = dict(res.per_condition[0]) if len(res.per_condition) == 1 else {}
            found.update(res.measures)  # one condition per point: its own measure first, then the summary
            m = {k: float(v) for k, v in found.items() if isinstance(v, (int, float, np.floating, np.integer))}
            measures.append(m)
            results.append(res)
            if f is not None:
                write_sweep_point(f, key, points[i], m, res)
        if f is not None:
            write_sweep_tables(f, grid, measures)
    finally:
        if f is not None:
            f.close()
    path = None
    if out is not None:
        path = finish_partial(out)
    return SweepResult(phenomenon, grid, points, measures, path, results)


def load_sweep(path: str | os.PathLike) -> SweepResult:
    """Read a finished sweep file back as a :class:`SweepResult` (measures and grid; no arrays)."""
    settings, points, measures = read_sweep(path)
    return SweepResult(settings["phenomenon"], settings["grid"], points, measures, Path(path))
