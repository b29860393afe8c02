"""The main job: explain a retina model's four phenomena and check them against the simulator's truth.

:func:`explain` runs OSR, latency coding, motion reversal and motion
anticipation on a CNN (attributing and reducing each), runs the same protocols
on the in-silico retina with its exact pathway attribution and lesions
(``insilico.md`` section 4), matches the CNN's important channel types to the
simulator's pathways, and writes one HDF5 file, one PNG per phenomenon and a
plain-text summary table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from . import phenomena as P
from ._progress import progress_bar
from ._version import __version__
from .insilico import ROW, InSilicoRetina

__all__ = ["explain", "ground_truth", "cnn_shares", "channel_matches", "TYPE_TO_PATHWAY", "PHENOMENA"]

PHENOMENA = ("osr", "latency", "reversal", "anticipation")
TYPE_TO_PATHWAY = {"OFF-fast": "OFF", "ON-fast": "ONf", "ON-slow": "ONs", "OFF-slow": "OFF",
                   "ON-intermediate": "ONf", "OFF-intermediate": "OFF"}
"""Which simulator pathway a CNN channel type stands for (``insilico.md`` section 4)."""
SOURCES = ("OFF", "ONf", "ONs", "A1")
LESION_OF = {"osr": ("ONs", "OFF", "ONf", "A1"), "latency": ("depression", "A1"),
             "reversal": ("ONf", "A1", "depression"), "anticipation": ("linear", "A1", "depression")}
KEY_MEASURE = {"osr": "osr_peak_mean", "latency": "peak_delta_ms", "reversal": "mean_ratio",
               "anticipation": "offset_px_0.08"}


def _window(name, result, i):
    ev = result.events[i]
    if name == "osr":
        om = int(ev["omitted_frame"])
        return om, om + 45
    if name == "latency":
        f = int(ev["flash_frames"][0])
        return f, f + 15
    if name == "reversal":
        rev = int(ev["reversal_frame"])
        return rev + 15, rev + 40
    r = result.responses[i].mean(1)
    t = int(np.nanargmax(r))
    return max(t - 30, 0), t + 10


def _shares(values, sources):
    """Share of positive attribution per source (``values (..., n_sources)`` summed over the rest)."""
    pos = np.clip(values, 0, None).reshape(-1, values.shape[-1]).sum(0)
    tot = pos.sum()
    return {s: float(v / tot) if tot > 0 else 0.0 for s, v in zip(sources, pos)}


def ground_truth(name, sim=None, *, result=None):
    """The simulator's mechanism for one phenomenon: pathway attribution shares and lesion effects.

    Returns ``{"measures", "shares", "lesions"}``: the phenomenon's measures on
    the simulator, the share of positive exact attribution (``insilico.md``
    section 4) of each source (OFF, ONf, ONs, A1) in the phenomenon's window
    averaged over conditions, and the change of the key measure when each
    relevant part is removed.
    """
    sim = sim or InSilicoRetina()
    bar = name in ("reversal", "anticipation")
    if bar:
        sim = InSilicoRetina(sim.params, positions=ROW)
    kw = {"flash_positions": ()} if name == "anticipation" else {}
    fn = getattr(P, name)
    res = result or fn(sim, **kw)
    vals = []
    for i, ev in enumerate(res.events):
        st_movie = _movie(name, res.conditions[i], res.params, sim.frame_shape)
        attr = sim.attribution(st_movie)[:, res.cells]  # (T, cells, 4)
        lo, hi = _window(name, res, i)
        vals.append(attr[lo:hi].mean(1))
    shares = _shares(np.concatenate(vals), SOURCES)
    key = KEY_MEASURE[name]
    lesions = {}
    for les in LESION_OF[name]:
        other = InSilicoRetina(sim.params, lesion=les, positions=sim.positions)
        m = fn(other, **kw).measures
        lesions[les] = {"value": m[key], "change": m[key] - res.measures[key]}
    return {"measures": res.measures, "shares": shares, "lesions": lesions, "key": key}


def _movie(name, cond, params, frame_shape):
    from . import stimuli as S

    if name == "osr":
        return S.flash_train(params["n_flashes"], cond["period"], intensity=params["intensity"],
                             duration=params["duration"], frame_shape=frame_shape).movie
    if name == "latency":
        return S.flash(cond["intensity"], duration=params["duration"], frame_shape=frame_shape).movie
    if name == "reversal":
        return S.moving_bar(cond["speed"], width=params["width"], intensity=params["intensity"],
                            start=params["start"], reverse_at=cond["reverse_at"], post=50,
                            frame_shape=frame_shape).movie
    return S.moving_bar(cond["speed"], width=params["width"], intensity=params["intensity"],
                        frame_shape=frame_shape).movie


def cnn_shares(result):
    """Share of positive pooled layer-1 attribution per channel type, in each condition's window."""
    per_type = {}
    total = 0.0
    for red in result.reduced:
        lo, hi = red.window
        vals = red.pooled[lo:hi]
        if vals.ndim == 4:
            vals = vals.sum(-1)
        pos = np.clip(vals, 0, None).sum(axis=(0, 1))
        types = [t["type"] for t in red.types]
        for c, v in enumerate(pos):
            per_type[types[c]] = per_type.get(types[c], 0.0) + float(v)
        total += float(pos.sum())
    return {k: v / total if total > 0 else 0.0 for k, v in sorted(per_type.items(), key=lambda kv: -kv[1])}


def channel_matches(result, truth):
    """Each recovered channel (kept in any condition) paired with the simulator pathway its type stands for.

    Returns a list, most important first, of ``channel``, ``type``, ``share``
    (mean share of pooled |IG| over the conditions), ``pathway`` and
    ``truth_share`` (that pathway's share of the simulator's positive
    attribution), ``match`` (the pathway carries >= 20 % in the simulator).
    """
    acc = {}
    for red in result.reduced:
        for ch in red.channels:
            d = acc.setdefault(ch["channel"], dict(channel=int(ch["channel"]), type=ch["type"], share=0.0))
            d["share"] += ch["share"] / len(result.reduced)
    out = []
    for d in sorted(acc.values(), key=lambda d: -d["share"]):
        pw = TYPE_TO_PATHWAY.get(d["type"], "OFF")
        ts = float(truth["shares"].get(pw, 0.0))
        out.append(dict(d, pathway=pw, truth_share=ts, match=ts >= 0.2))
    return out


def _pathway_shares(type_shares):
    out = {p: 0.0 for p in ("OFF", "ONf", "ONs")}
    for t, s in type_shares.items():
        out[TYPE_TO_PATHWAY.get(t, "OFF")] += s
    return out


def _criteria(name, cnn, truth, result):
    """The pass criteria of ``insilico.md`` section 4 that can be checked from layer-1 attributions."""
    ps = _pathway_shares(cnn)
    c = {}
    if name == "osr":
        c["slow ON carries >= 50% of positive IG after the omission"] = ps["ONs"] >= 0.5
        c["OFF share < 20% after the omission"] = ps["OFF"] < 0.2
        m = result.measures
        full, red = m.get("osr_peak_mean"), m.get("reduced_osr_peak_mean")
        if red is not None:
            c["reduced model keeps >= 70% of the OSR"] = red >= 0.7 * full
        if "ablated_on_slow_osr_amplitude" in m:
            c["ablating the slow-ON channels removes >= 70% of the OSR"] = (
                m["ablated_on_slow_osr_amplitude"] <= 0.3 * m["osr_amplitude"])
    elif name == "latency":
        c["OFF-fast >= 80% of layer-1 IG"] = cnn.get("OFF-fast", 0.0) >= 0.8
        c["a delayed (20-60 ms) inhibitory layer-2 term"] = any(20 <= d["delay_ms"] <= 60 for d in result.inhibitory)
        full, abl = result.measures.get("peak_delta_ms"), result.measures.get("ablated_inhibition_peak_delta_ms")
        if abl is not None:
            c["ablating the inhibitory layer-2 channels cuts the latency shift by >= 50%"] = abl <= 0.5 * full
    elif name == "reversal":
        c["fast ON >= 40% of IG in the burst window"] = ps["ONf"] >= 0.4
        if "ablated_on_fast_mean_ratio" in result.measures:
            c["ablating fast ON removes the burst (ratio < 1)"] = result.measures["ablated_on_fast_mean_ratio"] < 1
    else:
        c["OFF carries the anticipation response"] = ps["OFF"] >= 0.5
        full, abl = result.measures.get("offset_px_0.08"), result.measures.get("ablated_inhibition_offset_px_0.08")
        if abl is not None:
            c["ablating the inhibitory units shifts the 0.08 px/frame offset by >= +1.5 px"] = abl - full >= 1.5
    top_truth = max((s for s in ("OFF", "ONf", "ONs")), key=lambda s: truth["shares"][s])
    top_cnn = max(ps, key=ps.get)
    c[f"dominant pathway matches the simulator ({top_truth})"] = top_cnn == top_truth
    return c


def explain(model, out_dir, *, sim=None, phenomena=PHENOMENA, n_steps=25, share=0.9, figures=True,
            progress=True, truth=True, context_ms=P.CONTEXT_MS):
    """Run the four phenomena on ``model``, compare with the simulator, write results to ``out_dir``.

    Returns a dict per phenomenon: measures, channel-type shares, reduced-model
    fidelity, ground truth and pass criteria.  Files: ``results.h5``,
    ``<phenomenon>.png`` (with the ``plot`` extra) and ``summary.txt``.
    ``context_ms`` is the response attributed either side of each window of
    interest (None: whole movies; see :mod:`retina.phenomena`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = sim or InSilicoRetina()
    report = {}
    results = {}
    t_start = time.time()
    for name in progress_bar(list(phenomena), desc="explain", unit="phenomenon", enabled=progress):
        t0 = time.time()
        fn = getattr(P, name)
        kw = {"flash_positions": ()} if name == "anticipation" else {}
        probe = P.CNNProbe(model)
        if name in ("reversal", "anticipation") and probe.cells is None:
            kw = {}
        res = fn(probe, n_steps=n_steps, share=share, context_ms=context_ms, **kw)
        results[name] = res
        shares = cnn_shares(res)
        entry = {"measures": res.measures, "cnn_type_shares": shares,
                 "important_channels": [[dict((k, v) for k, v in ch.items() if k != "filter")
                                         for ch in red.channels] for red in res.reduced],
                 "fidelity": [red.fidelity for red in res.reduced],
                 "inhibitory_conv2": res.inhibitory,
                 "ablated": res.ablated_measures, "ablated_conv1": res.params.get("ablated_conv1", [])}
        if truth:
            gt = ground_truth(name, sim)
            entry["truth"] = gt
            entry["criteria"] = _criteria(name, shares, gt, res)
            entry["matches"] = channel_matches(res, gt)
        entry["seconds"] = time.time() - t0
        report[name] = entry
    report["_meta"] = {"seconds": time.time() - t_start, "retina_version": __version__,
                       "model_hash": model.content_hash(), "n_steps": n_steps, "share": share,
                       "context_ms": context_ms}
    _write_h5(out / "results.h5", results, report)
    (out / "summary.txt").write_text(summary_table(report))
    if figures:
        try:
            from .plotting import phenomenon_figure
        except ImportError:
            pass
        else:
            for name, res in results.items():
                phenomenon_figure(res, out / f"{name}.png")
    return report


def _write_h5(path, results, report):
    from .io import atomic_h5

    with atomic_h5(path) as f:
        f.attrs.update(format="retina-explain", retina_version=__version__,
                       report=json.dumps(report, default=_json_default))
        for name, res in results.items():
            g = f.create_group(name)
            g.attrs["measures"] = json.dumps(res.measures, default=_json_default)
            g.create_dataset("cells", data=np.asarray(res.cells))
            for i, cond in enumerate(res.conditions):
                c = g.create_group(f"condition{i:02d}")
                c.attrs["params"] = json.dumps(cond, default=_json_default)
                c.attrs["measure"] = json.dumps(res.per_condition[i], default=_json_default)
                c.create_dataset("response", data=res.responses[i])
                for k, v in res.events[i].items():
                    c.create_dataset(f"events/{k}", data=np.asarray(v))
                if i < len(res.reduced):
                    red = res.reduced[i]
                    c.create_dataset("pooled_attribution", data=red.pooled, compression="gzip",
                                     compression_opts=1)
                    c.create_dataset("kept_channels", data=red.kept)
                    c.create_dataset("attribution_sum", data=red.attribution_sum)
                    if red.pruned_response is not None:
                        c.create_dataset("pruned_response", data=red.pruned_response)
                    c.attrs["fidelity"] = json.dumps(red.fidelity, default=_json_default)
                    c.attrs["attribution_start_frame"] = int(red.start)
                    c.attrs["window_of_interest"] = np.asarray(red.window, np.int64)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    return str(o)


def summary_table(report):
    """Plain-text table: phenomenon, measure, important channels and types, fidelity, ground-truth match."""
    lines = [f"{'phenomenon':<13} {'measure':<34} {'important channel types (share of +IG)':<46} "
             f"{'fidelity (pruned corr)':<22} ground truth", "-" * 150]
    for name in PHENOMENA:
        if name not in report:
            continue
        e = report[name]
        key = KEY_MEASURE[name]
        meas = f"{key} = {e['measures'].get(key, float('nan')):.3g}"
        types = ", ".join(f"{t} {s:.0%}" for t, s in list(e["cnn_type_shares"].items())[:3])
        fid = [f.get("pruned_corr", float("nan")) for f in e["fidelity"]]
        fid_s = f"{np.nanmean(fid):.3f}" if fid else "n/a"
        gt = ""
        if "truth" in e:
            ts = e["truth"]["shares"]
            gt = "sim " + ", ".join(f"{k} {v:.0%}" for k, v in ts.items())
            passed = sum(bool(v) for v in e["criteria"].values())
            gt += f"; criteria {passed}/{len(e['criteria'])}"
        lines.append(f"{name:<13} {meas:<34} {types:<46} {fid_s:<22} {gt}")
    for name in PHENOMENA:
        if name in report and "criteria" in report[name]:
            lines.append("")
            lines.append(f"{name}:")
            for k, v in report[name]["criteria"].items():
                lines.append(f"  [{'x' if v else ' '}] {k}")
            for d in report[name].get("matches", []):
                lines.append(f"  channel {d['channel']} {d['type']:<15} {d['share']:>4.0%} of |IG|  ->  simulator "
                             f"{d['pathway']:<3} ({d['truth_share']:.0%} of its +IG) "
                             f"{'match' if d['match'] else 'no match'}")
            for d in report[name].get("inhibitory_conv2", []):
                lines.append(f"  CNN inhibitory layer-2 channel {d['channel']}: {d['share']:.0%} of |IG|, "
                             f"{d['delay_ms']:+.0f} ms after the excitation peak ({d['conditions']} conditions)")
            for les, d in report[name]["truth"]["lesions"].items():
                lines.append(f"  simulator without {les}: {report[name]['truth']['key']} "
                             f"{d['value']:.3g} (change {d['change']:+.3g})")
    lines.append("")
    lines.append(f"took {report.get('_meta', {}).get('seconds', float('nan')):.0f} s")
    return "\n".join(lines) + "\n"

