"""Result files: rates, attributions, ``retina explain``'s results and sweeps, with labelled axes.

Every array's axes are HDF5 dimension scales with units where they have
them, so ``xarray.open_dataset(path, group=..., engine="h5netcdf")``, MATLAB's
``h5read`` or HDFView show named axes without this package.  The layouts are
documented in ``docs/formats.md``.
"""

from __future__ import annotations

import json

import numpy as np

from .._version import __version__
from ..units import FRAME_MS
from ._files import (
    atomic_h5,
    attr_value,
    axis,
    check_format,
    labelled,
    open_h5,
    text,
    write_labelled,
    write_scalars,
    write_table,
)

__all__ = ["save_rates", "save_attribution", "save_explain", "write_sweep_point", "write_sweep_tables",
           "read_sweep", "read_point_measures", "RATES_FORMAT", "ATTRIBUTION_FORMAT", "EXPLAIN_FORMAT",
           "SWEEP_FORMAT", "SCHEMA_VERSIONS"]

RATES_FORMAT = "retina-rates"
ATTRIBUTION_FORMAT = "retina-attribution"
EXPLAIN_FORMAT = "retina-explain"
SWEEP_FORMAT = "retina-sweep"
SCHEMA_VERSIONS = {RATES_FORMAT: 2, ATTRIBUTION_FORMAT: 2, EXPLAIN_FORMAT: 2, SWEEP_FORMAT: 2}
"""The schema version each result format is written in (version 1: before labelled axes)."""

_GZIP = dict(compression="gzip", compression_opts=1)


def _root(f, fmt, attrs=None):
    f.attrs.update(format=fmt, schema_version=SCHEMA_VERSIONS[fmt], retina_version=__version__)
    for k, v in (attrs or {}).items():
        f.attrs[k] = attr_value(v)


def _time_axis(group, n, start=0, name="time"):
    return axis(group, name, (start + np.arange(n)) * FRAME_MS, units="ms",
                long_name="time of the frame (row t = frame t of the stimulus)")


def _cell_axis(group, cells):
    return axis(group, "cell", np.asarray(cells), long_name="index of the model's cell")


# ------------------------------------------------------------------ rates
def save_rates(path, rates, *, window_frames, cell_ids, attrs=None):
    """Rates ``(windows, cells)`` in Hz over the axes ``window_frames`` (the frame each window is stamped
    at) and ``cell_ids``; ``attrs`` are root attributes (model, stimulus, history...)."""
    with atomic_h5(path) as f:
        _root(f, RATES_FORMAT, dict({"units": "Hz", "frame_ms": FRAME_MS}, **(attrs or {})))
        axis(f, "window_frames", np.asarray(window_frames), long_name="frame each window is time-stamped at")
        axis(f, "cell_ids", list(cell_ids))
        labelled(f, "rates", rates, ("window_frames", "cell_ids"), units="Hz")
    return path


# ------------------------------------------------------------------ attributions
def save_attribution(attr, path):
    """Write an :class:`retina.attribution.Attribution`: values, completeness errors and settings."""
    with atomic_h5(path) as f:
        _root(f, ATTRIBUTION_FORMAT)
        n_out = attr.delta.shape[1]
        axis(f, "window_frames", attr.window_frames, long_name="frame each window is time-stamped at")
        axis(f, "output", np.arange(n_out), long_name="attributed output (a cell or a weighted sum of cells)")
        axis(f, "model_cell", np.arange(attr.cell_weights.shape[1]))
        win = ("window_frames", "output")
        for name in ("delta", "response", "baseline_response"):
            labelled(f, name, getattr(attr, name), win, units="Hz", **_GZIP)
        labelled(f, "cell_weights", attr.cell_weights, ("output", "model_cell"))
        values = np.asarray(attr.values)
        if attr.layer == "input":
            dims = ("output",) + (None,) * (values.ndim - 1)
        else:
            axis(f, "channel", np.arange(values.shape[2]), long_name=f"{attr.layer} channel")
            dims = win + ("channel",) + (None,) * (values.ndim - 3)
        labelled(f, "values", values, dims, units="Hz", **_GZIP)
        if attr.per_window is not None:
            labelled(f, "per_window", attr.per_window, win + (None,) * (attr.per_window.ndim - 2), units="Hz",
                     **_GZIP)
        s = f.create_group("settings")
        for k in ("layer", "n_steps", "method", "path", "backend", "dtype", "history"):
            s.attrs[k] = getattr(attr, k)
        s.attrs["pool"] = "none" if attr.pool is None else ",".join(map(str, attr.pool))
        for k, v in attr.settings.items():
            s.attrs[k] = v
    return path


# ------------------------------------------------------------------ explain
def _condition(g, i, res, dtype=None):
    """Group ``conditionNN`` of ``g``: the condition's parameters (attributes) and its response over
    (time, cell), in ``dtype`` when given."""
    c = g.create_group(f"condition{i:02d}")
    for k, v in res.conditions[i].items():
        c.attrs[k] = attr_value(v)
    resp = np.asarray(res.responses[i], dtype)
    _time_axis(c, resp.shape[0])
    _cell_axis(c, res.cells)
    labelled(c, "response", resp, ("time", "cell"), units="Hz")
    return c


def _pooled(c, red, dtype=None):
    """A reduction's pooled attribution (labelled), kept channels and first attributed frame; returns the axes."""
    pooled = np.asarray(red.pooled, dtype)
    dims = _pooled_axes(c, pooled, red.start)
    labelled(c, "pooled_attribution", pooled, dims, units="Hz", **_GZIP)
    labelled(c, "kept_channels", np.asarray(red.kept), (None,))
    c.attrs["attribution_start_frame"] = int(red.start)
    return dims


def _condition_group(g, i, res):
    """One condition: its parameters, response over (time, cell), measure, events and window of interest."""
    c = _condition(g, i, res)
    write_scalars(c.create_group("measure"), res.per_condition[i])
    ev = c.create_group("events")
    for k, v in res.events[i].items():
        ev.create_dataset(k, data=np.asarray(v))
    if res.windows and res.windows[i] is not None:
        labelled(c, "window_of_interest", np.asarray(res.windows[i], np.int64) * FRAME_MS, (None,), units="ms")
    return c


def _pooled_axes(c, pooled, start):
    """Axes of pooled attributions ``(windows, outputs, C1[, W1])``: time from ``start``, output, channel, x."""
    _time_axis(c, pooled.shape[0], start=start, name="attributed_time")
    axis(c, "output", np.arange(pooled.shape[1]), long_name="attributed output (the analysed cells' mean)")
    axis(c, "channel", np.arange(pooled.shape[2]), long_name="layer-1 channel")
    if pooled.ndim == 4:
        axis(c, "x", np.arange(pooled.shape[3]), units="px", long_name="layer-1 column")
    return ("attributed_time", "output", "channel", "x")[:pooled.ndim]


def _reduction(c, red):
    """The reduced model of one condition: pooled attribution, kept channels, pruned response, fidelity."""
    dims = _pooled(c, red)
    for name in ("attribution_sum", "pruned_response"):
        a = getattr(red, name)
        if a is not None:
            labelled(c, name, np.asarray(a), dims[:2], units="Hz")
    write_scalars(c.create_group("fidelity"), red.fidelity)
    if red.effective_weights is not None and np.shape(red.effective_weights)[:2] == np.shape(red.pooled)[:2]:
        axis(c, "kept_channel", np.asarray(red.kept), long_name="kept layer-1 channel")
        labelled(c, "effective_weights", np.asarray(red.effective_weights), dims[:2] + ("kept_channel",),
                 long_name="effective weight A_c(t) / dz_c(t) of each kept channel")
    if red.channels:
        # one map per important channel: its attribution over time (and position, for bar protocols)
        kept = [int(ch["channel"]) for ch in red.channels]
        maps = np.asarray(red.pooled)[:, 0][:, kept]             # (time, kept[, x])
        axis(c, "important_channel", np.asarray(kept), long_name="important layer-1 channel, most important first")
        labelled(c, "channel_map", np.moveaxis(maps, 1, 0), ("important_channel", dims[0]) + dims[3:],
                 units="Hz", long_name="attribution of each important channel over time (and position)", **_GZIP)


def _recovery(g, rec, key):
    """The mechanism-recovery benchmark of one phenomenon (retina.recovery) as labelled data."""
    from ..recovery import MATCH_SCALES

    r = g.create_group("recovery")
    parts = list(rec["simulator"])
    axis(r, "part", parts, long_name="part of the simulated circuit (lesion name)")
    for what in ("simulator", "cnn"):
        for k in ("intact", "lesioned", "effect"):
            labelled(r, f"{what}_{k}", np.array([float(rec[what][p][k]) for p in parts]), ("part",))
    labelled(r, "agrees", np.array([bool(rec["agrees"][p]) for p in parts]), ("part",))
    labelled(r, "cnn_channels", np.array([json.dumps(rec["cnn"][p]["channels"]) for p in parts], object), ("part",),
             long_name="the layer-1 channels matched to the part (ablated together)")
    write_table(r.create_group("matches"), "channel",     # rows are the layer-1 channels, in order
                [dict(part=m["part"] or "", r2=m["r2"], lag_frames=m["lag"], downstream_sign=m.get("sign", 0),
                      scale=MATCH_SCALES[m["scale"]] if "scale" in m else "",
                      **{f"corr_{k}": v for k, v in m["corr"].items()}) for m in rec["matches"]])
    labelled(r, "null_permutation", np.asarray(rec["null_permutation"], np.float64), (None,))
    labelled(r, "null_untrained", np.asarray(rec["null_untrained"], np.float64), (None,))
    write_scalars(r, {"score": rec["score"], "null_max": rec["null_max"], "null_level": rec["null_level"],
                      "p_value": rec["p_value"], "truth_p": rec["truth_p"], "decisive": bool(rec["decisive"]),
                      "recovered": bool(rec["recovered"]), "power": rec.get("power", float("nan"))})
    r.attrs["verdict"] = rec["verdict"]
    r.attrs["key_measure"] = key
    f = rec["fidelity"]
    fg = g.create_group("fidelity")
    write_scalars(fg, {"window_corr": f["window_corr"], "shows": bool(f["shows"]),
                       "reproduces": bool(f["reproduces"]), "key_model": f["key_model"],
                       "key_simulator": f["key_simulator"]})
    write_table(fg, "condition", [dict(d["condition"], model=d["model"], simulator=d["simulator"])
                                  for d in f["per_condition"]])
    fg.attrs["measure"] = f["measure"]


def save_explain(path, results, report):
    """``retina explain``'s ``results.h5``: per phenomenon, the measures, conditions, responses,
    reductions, CNN channel-type shares, and (with ground truth) the simulator's shares, lesion effects,
    criteria and channel matches, all as labelled datasets."""
    meta = report.get("_meta", {})
    with atomic_h5(path) as f:
        _root(f, EXPLAIN_FORMAT, {k: v for k, v in meta.items() if isinstance(v, (str, int, float)) and v is not None})
        if "_overall" in report:
            o = report["_overall"]
            g = f.create_group("recovery_overall")
            write_scalars(g, {k: o[k] for k in ("score", "null_level", "p_value", "truth_p", "decisive", "recovered")}
                          | {"power": o.get("power", float("nan"))})
            labelled(g, "null_untrained", np.asarray(o["untrained"], np.float64), (None,))
            g.attrs["verdict"] = o["verdict"]
            g.attrs["phenomena"] = json.dumps(o["phenomena"])
        for name, res in results.items():
            e = report[name]
            g = f.create_group(name)
            write_scalars(g.create_group("measures", track_order=True), res.measures)
            _cell_axis(g, res.cells)
            write_table(g, "condition", [dict(c) for c in res.conditions])
            write_table(g.create_group("per_condition"), "condition", res.per_condition)
            write_labelled(g, "channel_type", e["cnn_type_shares"], "channel_type_share")
            if e.get("inhibitory_conv2"):
                write_table(g.create_group("inhibitory_conv2"), "channel_found", e["inhibitory_conv2"],
                            units={"delay_ms": "ms"})
            if e.get("ablated"):
                write_table(g.create_group("ablated"), "condition", e["ablated"])
            for i in range(len(res.conditions)):
                c = _condition_group(g, i, res)
                if i < len(res.reduced):
                    _reduction(c, res.reduced[i])
            if "truth" in e:
                t = g.create_group("truth")
                write_scalars(t.create_group("measures"), e["truth"]["measures"])
                write_labelled(t, "source", e["truth"]["shares"], "share")
                les = e["truth"]["lesions"]
                axis(t, "lesion", list(les))
                for k in ("value", "change"):
                    labelled(t, f"lesion_{k}", np.array([float(d[k]) for d in les.values()]), ("lesion",))
                t.attrs["key_measure"] = e["truth"]["key"]
            if "recovery" in e:
                _recovery(g, e["recovery"], e.get("truth", {}).get("key", ""))
            crit = e.get("criteria") or {}
            if crit:
                axis(g, "criterion", list(crit))
                labelled(g, "criterion_passed", np.array([bool(v) for v in crit.values()]), ("criterion",))
            if e.get("reduced_key"):
                rk = e["reduced_key"]
                write_scalars(g.create_group("reduced_model"), {k: v for k, v in rk.items() if k != "kept_channels"})
                g["reduced_model"]["kept_channels"] = np.asarray(rk["kept_channels"], np.int64)
    return path


# ------------------------------------------------------------------ sweeps
def write_sweep_point(f, key, point, measures, res):
    """One finished grid point of a sweep into the open partial file ``f`` (replaced if half-written)."""
    if key in f:
        del f[key]
    g = f.create_group(key)
    g.attrs["params"] = json.dumps(point)     # exact, for resuming; the scalars also as plain attributes
    for k, v in point.items():
        if np.isscalar(v):
            g.attrs[k] = v
    write_scalars(g.create_group("measures", track_order=True), measures)
    _cell_axis(g, res.cells)
    for j in range(len(res.responses)):
        c = _condition(g, j, res, np.float32)
        if j < len(res.reduced):
            _pooled(c, res.reduced[j], np.float32)
    g.attrs["done"] = True
    f.flush()


def write_sweep_tables(f, grid, measures, points=None):
    """The finished sweep's axes and one labelled array per measure (NaN where missing).

    A Cartesian ``grid``: one axis per parameter, arrays of the grid's shape.
    A list of conditions (``grid`` None, ``points`` given): one ``point`` axis,
    each parameter a labelled 1-D array along it.
    """
    t = f.require_group("measures")

    def values(vals):
        return np.asarray(vals) if all(np.isscalar(v) and not isinstance(v, str) for v in vals) \
            else [v if isinstance(v, str) else json.dumps(v) for v in vals]   # list values: their JSON text

    if grid is not None:
        dims = []
        for k, vals in grid.items():
            axis(t, k, values(vals))
            dims.append(k)
        shape = tuple(len(v) for v in grid.values())
    else:
        axis(t, "point", np.arange(len(points)))
        dims, shape = ["point"], (len(points),)
        for k in sorted({k for p in points for k in p}):
            col = [p.get(k, "") for p in points]
            vals = values(col)
            labelled(t, f"param_{k}", np.array(vals, dtype=object) if isinstance(vals, list) else vals, ("point",))
    keys = sorted({k for m in measures for k in m})
    for k in keys:
        vals = np.array([float(m.get(k, np.nan)) for m in measures]).reshape(shape)
        labelled(t, k, vals, tuple(dims))


def read_sweep(path):
    """A sweep file's ``(settings, points, measures)`` (schema 1 and 2)."""
    with open_h5(path, "sweep") as f:
        ver = check_format(f, path, SWEEP_FORMAT, (1, 2))
        settings = json.loads(text(f.attrs["settings"]))
        keys = sorted(k for k in f if k.startswith("point"))
        points = [json.loads(text(f[k].attrs["params"])) for k in keys]
        measures = [read_point_measures(f[k], ver) for k in keys]
    return settings, points, measures


def read_point_measures(g, version=SCHEMA_VERSIONS[SWEEP_FORMAT]):
    """A finished sweep point's measures (plain numbers, in the order they were written)."""
    if version == 1:
        return json.loads(text(g.attrs["measures"]))
    return {m: float(g["measures"][m][()]) for m in g["measures"]}
