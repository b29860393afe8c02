"""Stimulus sweeps: one phenomenon over a grid of conditions, resumable, in one HDF5 file, on one process or a cluster.

:func:`sweep` calls a registered phenomenon (:mod:`retina.phenomena`) once per
point, keeps every point's measures, responses and (for CNNs) pooled
attributions and kept channels, and writes them to ``out`` as points finish:
the file grows as ``OUT.partial`` (one group per finished point, flushed) and
is renamed to ``OUT`` when the sweep is complete.  Rerunning an interrupted
sweep with the same settings skips the finished points.

What a sweep can range over:

* the phenomenon's parameters, as a Cartesian ``grid`` or as a list of
  ``conditions`` (non-Cartesian designs; :func:`read_conditions` reads them
  from CSV or JSON);
* several models: pass ``model`` as a dict ``name -> model`` (the points get a
  ``model`` axis);
* for the in-silico retina, its lesions (axis ``lesion``: ``"none"``, a lesion
  of :data:`retina.insilico.LESIONS` or several joined by ``+``) and its
  parameters (axes ``sim.<name>``, dotted for nested ones, e.g.
  ``sim.tau_membrane_ms`` or ``sim.bipolar.ONs.tau_rec_s``).

Each point's result keeps its measures, responses and reductions but not the
pruned network itself (about 2 MB per point; ``reduction.prune(model,
red.kept)`` rebuilds it).  With ``client=`` (a :class:`dask.distributed.Client`)
the points run on the cluster (:func:`retina.distributed.run_items`) and the driver writes them as
they finish; each point is computed by the same code as in-process, so the
arrays are identical.  ``shard=(i, n)`` runs every n-th point from the i-th
(for plain job arrays); :func:`merge_shards` joins the shard files.

    >>> res = sweep(model, "osr", {"periods": range(4, 21, 2), "intensity": [-1.0, -0.5]}, out="osr.h5")
    >>> res.table("osr_peak_mean")          # (9, 2) array over the grid
"""

from __future__ import annotations

import csv
import inspect
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import phenomena as P
from ._progress import progress_bar
from .io import atomic_h5, close_partial, finish_partial, open_partial
from .io._files import check_format, open_h5, text
from .io.results import (
    SCHEMA_VERSIONS,
    SWEEP_FORMAT,
    read_point_measures,
    read_sweep,
    write_sweep_point,
    write_sweep_tables,
)

__all__ = ["sweep", "SweepResult", "load_sweep", "merge_shards", "read_conditions", "SPECIAL_AXES"]

SPECIAL_AXES = ("model", "lesion", "sim.")
"""Point keys that choose the model rather than the stimulus: ``model``, ``lesion`` and ``sim.<parameter>``."""


@dataclass
class SweepResult:
    """The points and each point's measures (plain numbers), in point order.

    ``grid`` is the Cartesian grid (``None`` for a list of conditions); a
    point with a single stimulus condition also carries that condition's
    own measure (e.g. ``peak_ms`` of one flash), besides the phenomenon's summary.
    """

    phenomenon: str
    grid: dict | None
    points: list
    measures: list
    path: Path | None = None
    results: list = field(default_factory=list, repr=False)
    stats: dict = field(default_factory=dict, repr=False)

    @property
    def shape(self):
        if self.grid is None:
            return (len(self.points),)
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


def _is_special(key):
    return key in ("model", "lesion") or key.startswith("sim.")


# ----------------------------------------------------------------- conditions
def _cell(text_value):
    t = text_value.strip()
    if not t:
        raise ValueError("empty value")
    try:
        return json.loads(t)   # numbers, lists, quoted strings
    except json.JSONDecodeError:
        return t


def read_conditions(path) -> list[dict]:
    """A list of conditions (one dict of parameter values per point) from a CSV or JSON file.

    CSV: a header of parameter names, one row per point; a cell is read as
    JSON when it parses (``-0.5``, ``[4, 6]``) and as text otherwise
    (``A1``).  JSON: a list of objects, or ``{"conditions": [...]}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"conditions file {str(path)!r} does not exist")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"conditions file {str(path)!r} is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            data = data.get("conditions")
        if not isinstance(data, list) or not all(isinstance(c, dict) for c in data):
            raise ValueError(f"conditions file {str(path)!r} must hold a list of objects (one per point)")
        return data
    if path.suffix.lower() != ".csv":
        raise ValueError(f"conditions file must end in .csv or .json, got {str(path)!r}")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise ValueError(f"conditions file {str(path)!r} needs a header row and at least one condition")
    header = [h.strip() for h in rows[0]]
    out = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path.name} line {n}: {len(row)} values for {len(header)} columns {header}")
        try:
            out.append({h: _cell(c) for h, c in zip(header, row)})
        except ValueError as exc:
            raise ValueError(f"{path.name} line {n}: {exc}") from None
    return out


# ----------------------------------------------------------------- the model of a point
def _set_dotted(d, dotted, value):
    keys = dotted.split(".")
    node = d
    for k in keys[:-1]:
        if not isinstance(node, dict) or k not in node:
            raise ValueError(f"sim.{dotted}: the simulator has no parameter group {k!r}")
        node = node[k]
    if not isinstance(node, dict) or keys[-1] not in node:
        raise ValueError(f"sim.{dotted}: the simulator has no parameter {keys[-1]!r}")
    if isinstance(node[keys[-1]], (dict, list)):
        raise ValueError(f"sim.{dotted} is a group of parameters; name one of them")
    node[keys[-1]] = value


def _lesions(value):
    if value in (None, "", "none"):
        return []
    if not isinstance(value, str):
        raise ValueError(f"lesion values must be 'none', a lesion name or names joined by '+', got {value!r}")
    return value.split("+")


def model_for(models: dict, point: dict):
    """The model a point runs on: its ``model`` entry, with its ``lesion`` and ``sim.*`` entries applied."""
    from .insilico import InSilicoParams, InSilicoRetina

    name = point.get("model")
    if name is None:
        if len(models) != 1:
            raise ValueError(f"every point needs a 'model' entry naming one of {sorted(models)}")
        model = next(iter(models.values()))
    elif name not in models:
        raise ValueError(f"point {point}: model {name!r} is not one of {sorted(models)}")
    else:
        model = models[name]
    overrides = {k[4:]: v for k, v in point.items() if k.startswith("sim.")}
    lesion = _lesions(point.get("lesion"))
    if not overrides and "lesion" not in point:
        return model
    if not isinstance(model, InSilicoRetina):
        raise ValueError("the 'lesion' and 'sim.*' sweep axes apply to the in-silico retina only, "
                         f"not to a {type(model).__name__}")
    params = model.params.to_dict()
    for dotted, value in overrides.items():
        _set_dotted(params, dotted, value)
    return InSilicoRetina(InSilicoParams.from_dict(params), lesion=lesion or None, frame_shape=model.frame_shape,
                          block=model.block, positions=model.positions)


def _run_point(i, ph, points, models, options):
    """Point ``i``: the phenomenon on the point's model; returns ``(measures, result)`` (what the file keeps)."""
    point = points[i]
    kwargs = dict(options)
    for k, v in point.items():
        if not _is_special(k):
            kwargs[k] = [v] if k in ph.list_params and np.isscalar(v) else v
    res = ph.run(model_for(models, point), **kwargs)
    for red in getattr(res, "reduced", None) or []:
        red.pruned = None   # a copy of the network (~2 MB): rebuilt on demand by reduction.prune(model, red.kept)
    found = dict(res.per_condition[0]) if len(res.per_condition) == 1 else {}
    found.update(res.measures)  # one condition per point: its own measure first, then the summary
    m = {k: float(v) for k, v in found.items() if isinstance(v, (int, float, np.floating, np.integer))}
    return m, res


# ----------------------------------------------------------------- the sweep
def _points(grid, conditions, accepted, name):
    if (grid is None) == (conditions is None):
        raise ValueError("give exactly one of grid (a dict of parameter -> values) and conditions (a list of dicts)")
    if grid is not None:
        if not isinstance(grid, dict) or not grid:
            raise ValueError(f"grid must be a non-empty dict of parameter -> values, got {grid!r}")
        grid = {k: [_jsonable(v) for v in vals] for k, vals in grid.items()}
        for k, vals in grid.items():
            if not vals:
                raise ValueError(f"grid[{k!r}] is empty")
        points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    else:
        if not isinstance(conditions, (list, tuple)) or not conditions or \
                not all(isinstance(c, dict) and c for c in conditions):
            raise ValueError("conditions must be a non-empty list of non-empty dicts of parameter values")
        points = [{k: _jsonable(v) for k, v in c.items()} for c in conditions]
    for pt in points:
        for k in pt:
            if not _is_special(k) and k not in accepted:
                raise ValueError(f"{name}() has no parameter {k!r}; it takes {sorted(accepted)} "
                                 "(or the model axes 'model', 'lesion', 'sim.<parameter>')")
    return grid, points


def _check_shard(shard, n_points):
    if shard is None:
        return None
    try:
        i, n = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    if n > n_points:
        raise ValueError(f"shard count {n} exceeds the sweep's {n_points} points")
    return i, n


def sweep(model, phenomenon: str | P.Phenomenon, grid: dict | None = None, *, conditions: list | None = None,
          out: str | os.PathLike | None = None, progress: bool = False, client=None,
          shard: tuple[int, int] | None = None, **options) -> SweepResult:
    """Run ``phenomenon`` at every point of ``grid`` (or of ``conditions``); resumable when ``out`` is given.

    Parameters
    ----------
    model : RetinaCNN, InSilicoRetina or any object with ``rates(movie)``; or a dict name -> model
        A dict sweeps over the models too: every point gets a ``model`` entry
        (an axis of the grid, placed first, unless the grid or the conditions
        already name the models).
    phenomenon : str or Phenomenon
        A registered phenomenon (:data:`retina.phenomena.REGISTRY`).
    grid : dict of name -> sequence
        Keyword arguments of the phenomenon and the values to sweep, e.g.
        ``{"periods": range(2, 21), "intensity": np.linspace(-1, -0.1, 10)}``;
        also ``lesion`` and ``sim.<parameter>`` for the in-silico retina.
        List parameters (:attr:`retina.phenomena.Phenomenon.list_params`:
        ``periods``, ``intensities``, ``speeds``...) given as scalars are
        wrapped into one-condition lists.
    conditions : list of dict, optional
        Instead of ``grid``: the points themselves (non-Cartesian designs;
        see :func:`read_conditions`).
    out : path, optional
        HDF5 file of the sweep (written atomically; an existing
        ``OUT.partial`` from the same settings is resumed).
    client : dask.distributed.Client, optional
        Run the points on this cluster (the driver writes ``out``); the
        arrays are those of the in-process run.
    shard : (i, n), optional
        Run only points ``i, i + n, i + 2n, ...``; ``out`` is then one shard
        of the sweep (join the shards with :func:`merge_shards`).
    **options
        Fixed keyword arguments of the phenomenon (``n_steps``, ``explain``, ``cells``...).

    Returns
    -------
    SweepResult
    """
    from .distributed import check_client, run_items

    client = check_client(client)
    ph = P.get(phenomenon)
    phenomenon = ph.name
    models = dict(model) if isinstance(model, dict) else {None: model}
    if not models:
        raise ValueError("model must be a model or a non-empty dict of name -> model")
    if isinstance(model, dict):
        if not all(isinstance(k, str) and k for k in models):
            raise ValueError(f"model names must be non-empty strings, got {list(models)!r}")
        names_given = (grid is not None and "model" in grid) or (conditions is not None and
                                                                   all("model" in c for c in conditions))
        if not names_given:
            if grid is not None:
                grid = {"model": list(models), **grid}
            else:
                conditions = [{"model": name, **c} for name in models for c in (conditions or [])]
    accepted = set(inspect.signature(ph.run).parameters) - {"model"}
    for name in options:
        if name not in accepted:
            raise ValueError(f"{phenomenon}() has no parameter {name!r}; it takes {sorted(accepted)}")
    grid, points = _points(grid, conditions, accepted, phenomenon)
    def variant(pt):
        return json.dumps({k: v for k, v in pt.items() if _is_special(k)}, sort_keys=True)

    # every model variant is built once here: a bad lesion or parameter fails now, and so do cells out of range
    n_cells = {key: getattr(model_for(models, pt), "n_cells", None) for key, pt in
               {variant(pt): pt for pt in points}.items()}
    for pt in points:
        cells, n = pt.get("cells", options.get("cells")), n_cells[variant(pt)]
        if cells is None or n is None:
            continue
        idx = np.atleast_1d(np.asarray(cells))
        if idx.dtype.kind not in "iu" or idx.size == 0 or idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"cells must be indices of the model's {n} cells, got {cells!r}")
    shard = _check_shard(shard, len(points))
    mine = list(range(len(points))) if shard is None else list(range(shard[0], len(points), shard[1]))
    settings = dict(phenomenon=phenomenon, grid=grid, options=_jsonable(options),
                    model={str(k): _model_id(m) for k, m in models.items()} if isinstance(model, dict)
                    else _model_id(model), schema_version=SCHEMA_VERSIONS[SWEEP_FORMAT])
    if conditions is not None:
        settings["conditions"] = points
    if shard is not None:
        settings["shard"] = list(shard)

    f = None
    if out is not None:
        f, _ = open_partial(out, settings, fmt=SWEEP_FORMAT, schema_version=SCHEMA_VERSIONS[SWEEP_FORMAT],
                            attrs={"phenomenon": phenomenon})
    measures: dict[int, dict] = {}
    results: dict[int, object] = {}
    stats: dict = {}
    complete = False
    try:
        todo = []
        for i in mine:
            key = f"point{i:05d}"
            kept = _finished_point(f, key) if f is not None else None
            if kept is not None:
                measures[i] = kept
                results[i] = None
            else:
                todo.append(i)

        def finished(i, value):
            m, res = value
            measures[i], results[i] = m, res
            if f is not None:
                write_sweep_point(f, f"point{i:05d}", points[i], m, res)

        if client is None:
            for i in progress_bar(todo, total=len(todo), desc=f"sweep {phenomenon}", unit="point",
                                  enabled=progress):
                finished(i, _run_point(i, ph, points, models, options))
        else:
            stats = run_items(client, _run_point, todo, shared=(ph, points, models, options), on_result=finished,
                              label=lambda i: f"point {i} {points[i]}", desc=f"sweep {phenomenon}", unit="point",
                              progress=progress)
        if f is not None:
            if shard is None:
                write_sweep_tables(f, grid, [measures[i] for i in mine], None if grid is not None else points)
            else:
                f.attrs["shard"] = f"{shard[0]}/{shard[1]}"
        complete = True
    finally:
        if f is not None:
            if complete:
                f.close()
            else:
                close_partial(f, out)     # resumable; the output's lock is released
    path = finish_partial(out) if out is not None else None
    return SweepResult(phenomenon, grid if shard is None else None, [points[i] for i in mine],
                       [measures[i] for i in mine], path, [results[i] for i in mine], stats)


def _finished_point(f, key):
    """A point's measures if the partial file holds it complete and readable, else None (it is then redone:
    a run killed while writing it may have left it half-written)."""
    from .io import readable

    if key not in f:
        return None
    try:
        g = f[key]
        if not g.attrs.get("done", False):
            return None
        measures = read_point_measures(g)
        bad = []
        g.visititems(lambda name, obj: bad.append(name) if hasattr(obj, "dtype") and not readable(obj) else None)
        if bad:
            raise OSError(f"unreadable datasets {bad[:3]}")
        return measures
    except (OSError, KeyError, ValueError, RuntimeError):
        try:
            del f[key]
        except (OSError, KeyError, RuntimeError):
            pass
        return None


def load_sweep(path: str | os.PathLike) -> SweepResult:
    """Read a finished sweep file back as a :class:`SweepResult` (measures and grid; no arrays)."""
    settings, points, measures = read_sweep(path)
    grid = settings.get("grid") if "shard" not in settings else None
    return SweepResult(settings["phenomenon"], grid, points, measures, Path(path))


def merge_shards(out: str | os.PathLike, shards) -> SweepResult:
    """Join the shard files of one sweep (``shard=(i, n)`` for i = 0..n-1) into the complete sweep file ``out``.

    Every shard must come from the same settings (phenomenon, grid or
    conditions, options, models) and the shards must cover ``0..n-1``
    exactly once; the merged file is the one an unsharded run writes (same
    settings, same points, same arrays).
    """
    import h5py

    paths = [Path(s) for s in shards]
    if not paths:
        raise ValueError("shards must list at least one shard file")
    base: dict | None = None
    seen: dict[int, Path] = {}
    count = 0
    for p in paths:
        with open_h5(p, "sweep shard") as f:
            check_format(f, p, SWEEP_FORMAT, (2,))
            settings = json.loads(text(f.attrs["settings"]))
        if "shard" not in settings:
            raise ValueError(f"{str(p)!r} is a complete sweep, not a shard (it was not run with shard=(i, n))")
        i, n = settings.pop("shard")
        if base is None:
            base, count = settings, n
        elif settings != base or n != count:
            raise ValueError(f"{str(p)!r} belongs to another sweep (its settings differ from {str(paths[0])!r})")
        if i in seen:
            raise ValueError(f"shard {i}/{n} is given twice: {str(seen[i])!r} and {str(p)!r}")
        seen[i] = p
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise ValueError(f"the sweep has {count} shards; missing shard(s) {missing}")
    assert base is not None
    grid: dict = base.get("grid") or {}
    points = base.get("conditions") or [dict(zip(grid, c)) for c in itertools.product(*grid.values())]
    measures: list = [None] * len(points)
    from .io._files import settings_hash

    with atomic_h5(out) as g:
        g.attrs.update(format=SWEEP_FORMAT, schema_version=SCHEMA_VERSIONS[SWEEP_FORMAT],
                       settings_hash=settings_hash(base), settings=json.dumps(base, default=str),
                       phenomenon=base["phenomenon"])
        from ._version import __version__

        g.attrs["retina_version"] = __version__
        for i in sorted(seen):
            with h5py.File(seen[i], "r") as f:
                for key in f:
                    if key.startswith("point"):
                        j = int(key[5:])
                        f.copy(f[key], g, name=key)
                        measures[j] = read_point_measures(f[key])
        if any(m is None for m in measures):
            raise ValueError(f"the shards lack point(s) {[j for j, m in enumerate(measures) if m is None][:10]}")
        write_sweep_tables(g, grid or None, measures, None if grid else points)
    return load_sweep(out)
