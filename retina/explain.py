"""The main job: explain a retina model's phenomena and check them against the simulator's truth.

:func:`explain` runs every registered phenomenon (:data:`retina.phenomena.REGISTRY`:
the OSR, latency coding, motion reversal and motion anticipation) on a CNN,
attributing and reducing each; runs the same protocols on the in-silico
retina with its exact pathway attribution and lesions (``docs/insilico.md``);
matches the CNN's important channel types to the simulator's pathways; and
writes one HDF5 file, one PNG per phenomenon (with the ``plot`` extra) and a
plain-text summary table.  Nothing here is specific to one phenomenon.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import phenomena as P
from ._progress import progress_bar
from ._version import __version__
from .insilico import InSilicoRetina
from .io import atomic_text, save_explain
from .model import RetinaCNN

__all__ = ["explain", "ground_truth", "cnn_shares", "channel_matches", "criteria", "TYPE_TO_PATHWAY"]

TYPE_TO_PATHWAY = {"OFF-fast": "OFF", "ON-fast": "ONf", "ON-slow": "ONs", "OFF-slow": "OFF",
                   "ON-intermediate": "ONf", "OFF-intermediate": "OFF"}
"""Which simulator pathway a CNN channel type stands for (``docs/phenomena.md``, ground truth)."""
SOURCES = ("OFF", "ONf", "ONs", "A1")
MATCH_SHARE = 0.2
"""A recovered channel matches when its pathway carries at least this share of the simulator's positive attribution."""


def _shares(values, sources):
    """Share of positive attribution per source (``values (..., n_sources)`` summed over the rest)."""
    pos = np.clip(values, 0, None).reshape(-1, values.shape[-1]).sum(0)
    tot = pos.sum()
    return {s: float(v / tot) if tot > 0 else 0.0 for s, v in zip(sources, pos)}


def ground_truth(name, sim=None, *, result=None):
    """The simulator's mechanism for one phenomenon: pathway attribution shares and lesion effects.

    Returns ``{"measures", "shares", "lesions", "key"}``: the phenomenon's
    measures on the simulator, the share of positive exact attribution
    (``docs/insilico.md``) of each source (OFF, ONf, ONs, A1) in the
    phenomenon's windows of interest averaged over conditions, and the change
    of the key measure when each relevant part is removed.
    """
    ph = P.get(name)
    sim = ph.simulator(sim)
    kw = ph.options_for(sim)
    res = result or ph.run(sim, **kw)
    vals = []
    for i in range(len(res.conditions)):
        attr = sim.attribution(res.stimulus(i).movie)[:, res.cells]  # (T, cells, 4)
        lo, hi = res.windows[i]
        vals.append(attr[lo:hi].mean(1))
    shares = _shares(np.concatenate(vals), SOURCES)
    key = ph.key_measure
    lesions = {}
    for les in ph.lesions:
        other = InSilicoRetina(sim.params, lesion=les, positions=sim.positions)
        m = ph.run(other, **kw).measures
        lesions[les] = {"value": m[key], "change": m[key] - res.measures[key]}
    return {"measures": res.measures, "shares": shares, "lesions": lesions, "key": key}


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
    attribution), ``match`` (the pathway carries >= :data:`MATCH_SHARE` in the simulator).
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
        out.append(dict(d, pathway=pw, truth_share=ts, match=ts >= MATCH_SHARE))
    return out


def _pathway_shares(type_shares):
    out = {p: 0.0 for p in ("OFF", "ONf", "ONs")}
    for t, s in type_shares.items():
        out[TYPE_TO_PATHWAY.get(t, "OFF")] += s
    return out


def criteria(name, type_shares, truth, result):
    """The phenomenon's mechanism criteria (:attr:`retina.phenomena.Phenomenon.mechanism`) and whether the
    dominant pathway matches the simulator's."""
    ph = P.get(name)
    ps = _pathway_shares(type_shares)
    c = dict(ph.mechanism(ps, type_shares, result)) if ph.mechanism is not None else {}
    top_truth = max((s for s in ("OFF", "ONf", "ONs")), key=lambda s: truth["shares"][s])
    top_cnn = max(ps, key=ps.get)
    c[f"dominant pathway matches the simulator ({top_truth})"] = top_cnn == top_truth
    return c


def explain(model: RetinaCNN, out_dir: str | os.PathLike, *, sim: InSilicoRetina | None = None,
            phenomena: Sequence[str] | None = None, n_steps: int = 25, share: float = 0.9, figures: bool = True,
            progress: bool = False, truth: bool = True, context_ms: float | None = P.CONTEXT_MS) -> dict:
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
    truth_note = "compared with the in-silico retina"
    if truth:
        why = _no_truth_reason(model, sim)
        if why:
            truth, truth_note = False, f"no ground truth: {why}"
    else:
        truth_note = "no ground truth: not asked for"
    report = {}
    results = {}
    t_start = time.time()
    phenomena = P.names() if phenomena is None else tuple(phenomena)
    for name in progress_bar(list(phenomena), desc="explain", unit="phenomenon", enabled=progress):
        t0 = time.time()
        ph = P.get(name)
        probe = P.CNNProbe(model)
        res = ph.run(probe, n_steps=n_steps, share=share, context_ms=context_ms, **ph.options_for(probe))
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
            entry["criteria"] = criteria(name, shares, gt, res)
            entry["matches"] = channel_matches(res, gt)
        entry["seconds"] = time.time() - t0
        report[name] = entry
    report["_meta"] = {"seconds": time.time() - t_start, "retina_version": __version__,
                       "model_hash": model.content_hash(), "n_steps": n_steps, "share": share,
                       "context_ms": context_ms, "truth": truth_note}
    save_explain(out / "results.h5", results, report)
    atomic_text(out / "summary.txt", summary_table(report))
    report["_meta"]["figures"] = _figures(results, out) if figures else "not asked for"
    return report


def _no_truth_reason(model, sim) -> str:
    """Why the simulator is not this model's ground truth ('' when it is): only a model fitted to the in-silico
    retina's cells (its metadata names their types and positions) can be checked against its circuit."""
    meta = getattr(model, "metadata", {}) or {}
    if "cell_types" not in meta or "cell_positions" not in meta:
        source = meta.get("source_format") or meta.get("trainer") or "unknown"
        return (f"the model was not trained on the in-silico retina (its metadata names no simulated cells; "
                f"source: {source}); phenomena, attributions and reductions are reported without a comparison")
    if tuple(model.frame_shape) != tuple(sim.frame_shape):
        return f"the model's frame {tuple(model.frame_shape)} is not the simulator's {tuple(sim.frame_shape)}"
    return ""


def _figures(results, out):
    """Draw one PNG per phenomenon; returns what happened, in words."""
    from .plotting import available, phenomenon_figure

    missing = available()
    if missing:   # said in the returned report (and by the command line), not raised: the results stand
        return f"skipped: {missing}"
    for name, res in results.items():
        phenomenon_figure(res, out / f"{name}.png")
    return "written"


def summary_table(report):
    """Plain-text table: phenomenon, measure, important channels and types, fidelity, ground-truth match."""
    lines = [f"{'phenomenon':<13} {'measure':<34} {'important channel types (share of +IG)':<46} "
             f"{'fidelity (pruned corr)':<22} ground truth", "-" * 150]
    names = [n for n in P.names() if n in report] + [n for n in report if n not in P.REGISTRY and n[:1] != "_"]
    for name in names:
        e = report[name]
        key = P.get(name).key_measure if name in P.REGISTRY else e.get("truth", {}).get("key", "")
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
    for name in names:
        if "criteria" in report[name]:
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
    note = report.get("_meta", {}).get("truth")
    if note and note.startswith("no ground truth") and note != "no ground truth: not asked for":
        lines.append(note)
    lines.append(f"took {report.get('_meta', {}).get('seconds', float('nan')):.0f} s")
    return "\n".join(lines) + "\n"

