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
from ._validate import check_int
from ._version import __version__
from .insilico import SIMULATOR_KEY, InSilicoRetina, simulator_of
from .io import atomic_text, save_explain
from .model import RetinaCNN
from .recovery import (
    FIDELITY_MIN_CORR,
    NEAR_COPY_FACTOR,
    PARTS,
    key_value,
    overall,
    recover,
    relevant,
    simulator_effects,
)

__all__ = ["explain", "ground_truth", "cnn_shares", "criteria", "reduced_key_fraction", "TYPE_TO_PATHWAY",
           "N_UNTRAINED"]

TYPE_TO_PATHWAY = {"OFF-fast": "OFF", "ON-fast": "ONf", "ON-slow": "ONs", "OFF-slow": "OFF",
                   "ON-intermediate": "ONf", "OFF-intermediate": "OFF"}
"""The simulator pathway a channel *type label* names; used only by the paper's descriptive criteria.  The
ground-truth verdict matches channels by what they do (:mod:`retina.recovery`)."""
SOURCES = ("OFF", "ONf", "ONs", "A1")
N_UNTRAINED = 3
"""Untrained CNNs of the model's shape scored beside it every time (the untrained null)."""


def _shares(values, sources):
    """Share of absolute attribution per source (``values (..., n_sources)`` summed over the rest): negative
    contributions (the amacrine's inhibition) count by their size."""
    mag = np.abs(values).reshape(-1, values.shape[-1]).sum(0)
    tot = mag.sum()
    return {s: float(v / tot) if tot > 0 else 0.0 for s, v in zip(sources, mag)}


def ground_truth(name, sim=None, *, result=None, effects=None):
    """The simulator's mechanism for one phenomenon: attribution shares and lesion effects.

    Returns ``{"measures", "shares", "lesions", "key"}``: the phenomenon's
    measures on the simulator, each source's (OFF, ONf, ONs, A1) share of the
    absolute exact attribution (``docs/insilico.md``) in the windows of
    interest, and for each of the phenomenon's lesions the key measure
    (``value``), its change and its relative effect (:mod:`retina.recovery`).
    ``effects`` (:func:`retina.recovery.simulator_effects` covering those
    lesions) reuses lesion runs already made.
    """
    ph = P.get(name)
    sim = ph.simulator(sim)
    res = result or ph.run(sim, **ph.options_for(sim))
    vals = []
    for i in range(len(res.conditions)):
        attr = sim.attribution(res.stimulus(i).movie)[:, res.cells]  # (T, cells, 4)
        lo, hi = res.windows[i]
        vals.append(attr[lo:hi].mean(1))
    shares = _shares(np.concatenate(vals), SOURCES)
    eff = effects if effects is not None else simulator_effects(name, sim, intact=res, parts=ph.lesions)
    lesions = {p: {"value": eff[p]["lesioned"], "change": eff[p]["lesioned"] - eff[p]["intact"],
                   "effect": eff[p]["effect"]} for p in ph.lesions}
    return {"measures": res.measures, "shares": shares, "lesions": lesions, "key": ph.key_measure}


def cnn_shares(result):
    """Share of absolute pooled layer-1 attribution per channel type, in each condition's window."""
    per_type = {}
    total = 0.0
    for red in result.reduced:
        lo, hi = red.window
        vals = red.pooled[lo:hi]
        if vals.ndim == 4:
            vals = vals.sum(-1)
        mag = np.abs(vals).sum(axis=(0, 1))
        types = [t["type"] for t in red.types]
        for c, v in enumerate(mag):
            per_type[types[c]] = per_type.get(types[c], 0.0) + float(v)
        total += float(mag.sum())
    return {k: v / total if total > 0 else 0.0 for k, v in sorted(per_type.items(), key=lambda kv: -kv[1])}


def _pathway_shares(type_shares):
    out = {p: 0.0 for p in ("OFF", "ONf", "ONs")}
    for t, s in type_shares.items():
        out[TYPE_TO_PATHWAY.get(t, "OFF")] += s
    return out


def criteria(name, type_shares, result):
    """The paper's descriptive criteria for the phenomenon (:attr:`retina.phenomena.Phenomenon.mechanism`),
    read from channel type labels and the CNN's own ablations.  They describe the CNN; they are not the
    ground-truth verdict (:mod:`retina.recovery`)."""
    ph = P.get(name)
    return dict(ph.mechanism(_pathway_shares(type_shares), type_shares, result)) if ph.mechanism is not None else {}


def reduced_key_fraction(model, name, result):
    """How much of the phenomenon the reduced model keeps: the network pruned to the channels kept in any
    condition, run on the protocol, ``(K_reduced - K_absent) / (K_full - K_absent)`` of the key measure."""
    from .reduction import prune

    ph = P.get(name)
    kept = sorted({int(c) for red in result.reduced for c in red.kept})
    if not result.reduced:
        return {"kept_channels": [], "key_full": float("nan"), "key_reduced": float("nan"), "fraction": float("nan")}
    probe = P.CNNProbe(model)
    pruned = P.CNNProbe(prune(model, kept, baseline=model.grey), cells=probe.cells)
    full = key_value(ph, result)
    red = key_value(ph, ph.run(pruned, explain=False, **ph.options_for(pruned)))
    size = full - ph.absent_value
    frac = float((red - ph.absent_value) / size) if abs(size) > 1e-9 else float("nan")
    return {"kept_channels": kept, "key_full": full, "key_reduced": red, "fraction": frac}


def explain(model: RetinaCNN, out_dir: str | os.PathLike, *, sim: InSilicoRetina | None = None,
            phenomena: Sequence[str] | None = None, n_steps: int = 25, share: float = 0.9, figures: bool = True,
            progress: bool = False, truth: bool = True, context_ms: float | None = P.CONTEXT_MS,
            n_untrained: int = N_UNTRAINED) -> dict:
    """Run the phenomena on ``model``, judge its mechanisms against the simulator, write results to ``out_dir``.

    For each phenomenon: the measures, attribution, reduction (channel types,
    effective weights, the fraction of the phenomenon the reduced model
    keeps) and the paper's descriptive criteria; with ground truth (a model
    fitted to the in-silico retina's cells), fidelity against the simulator
    and the mechanism-recovery benchmark with its nulls
    (:func:`retina.recovery.recover`, ``n_untrained`` untrained CNNs).
    Files: ``results.h5``, ``<phenomenon>.png`` (with the ``plot`` extra) and
    ``summary.txt``.  ``context_ms`` is the response attributed either side of
    each window of interest (None: whole movies; see :mod:`retina.phenomena`).
    """
    n_untrained = check_int("n_untrained", n_untrained, minimum=0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim_source = "given" if sim is not None else (
        "recorded by the model" if SIMULATOR_KEY in (model.metadata or {}) else "the shipped calibration")
    sim = simulator_of(model, sim)
    truth_note = f"compared with the in-silico retina ({sim_source})"
    if truth:
        why = _no_truth_reason(model, sim)
        if why:
            truth, truth_note = False, f"no ground truth: {why}"
    else:
        truth_note = "no ground truth: not asked for"
    report = {}
    results, sim_results, sim_effects = {}, {}, {}
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
                 "reduced_key": reduced_key_fraction(model, name, res),
                 "inhibitory_conv2": res.inhibitory,
                 "ablated": res.ablated_measures, "ablated_conv1": res.params.get("ablated_conv1", []),
                 "criteria": criteria(name, shares, res)}
        if truth:
            base = ph.simulator(sim)
            sres = sim_results[name] = ph.run(base, **ph.options_for(base))
            # every lesion once: the recovery benchmark's parts and the phenomenon's own (e.g. "linear")
            eff = simulator_effects(name, sim, intact=sres, parts=tuple(dict.fromkeys(PARTS + tuple(ph.lesions))))
            sim_effects[name] = {p: eff[p] for p in PARTS}
            entry["truth"] = ground_truth(name, sim, result=sres, effects=eff)
        entry["seconds"] = time.time() - t0
        report[name] = entry
    rec_seconds = 0.0
    if truth and results:
        t0 = time.time()
        rec = recover(model, tuple(results), sim, n_untrained=n_untrained, model_results=results,
                      sim_results=sim_results, sim_effects=sim_effects)
        for name, r in rec.items():
            report[name]["recovery"] = r.as_dict()
        report["_overall"] = overall(list(rec.values()))
        rec_seconds = time.time() - t0
    report["_meta"] = {"seconds": time.time() - t_start, "recovery_seconds": rec_seconds,
                       "retina_version": __version__, "model_hash": model.content_hash(), "n_steps": n_steps,
                       "share": share, "context_ms": context_ms, "truth": truth_note, "n_untrained": n_untrained,
                       "model_description": str((model.metadata or {}).get("description", ""))}
    save_explain(out / "results.h5", results, report)
    atomic_text(out / "summary.txt", summary_table(report))
    report["_meta"]["figures"] = _figures(results, out, report) if figures else "not asked for"
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


def _figures(results, out, report=None):
    """Draw one PNG per phenomenon (model beside simulator, recovery beside the channels); returns what
    happened, in words."""
    from .plotting import available, phenomenon_figure

    missing = available()
    if missing:   # said in the returned report (and by the command line), not raised: the results stand
        return f"skipped: {missing}"
    for name, res in results.items():
        phenomenon_figure(res, out / f"{name}.png", entry=(report or {}).get(name))
    return "written"


def _fmt(v, spec=".3g"):
    return format(v, spec) if isinstance(v, (int, float)) and np.isfinite(v) else "n/a"


def summary_table(report):
    """Plain text: per phenomenon, fidelity against the simulator, the recovery verdict with its nulls, the
    reduction, and the paper's descriptive criteria."""
    names = [n for n in P.names() if n in report] + [n for n in report if n not in P.REGISTRY and n[:1] != "_"]
    lines = []
    description = report.get("_meta", {}).get("model_description")
    if description:
        lines += [f"model: {description}", ""]
    if "_overall" in report:
        o = report["_overall"]
        lines += [f"mechanism recovery over the reproduced phenomena: {o['verdict']}"]
        if np.isfinite(o.get("power", float("nan"))):
            lines.append(_power_line("  its power", o["power"]))
        lines.append("")
    lines += [f"{'phenomenon':<13} {'key measure: model':<30} {'simulator':<12} {'reproduced':<11} "
             f"{'mechanism (recovery score vs nulls)':<48} reduced model keeps", "-" * 140]
    for name in names:
        e = report[name]
        key = P.get(name).key_measure if name in P.REGISTRY else e.get("truth", {}).get("key", "")
        meas = f"{key} = {_fmt(e['measures'].get(key, float('nan')))}"
        rk = e.get("reduced_key", {}).get("fraction", float("nan"))
        sim_v, repro, mech = "", "", "no ground truth"
        if "recovery" in e:
            r = e["recovery"]
            f = r["fidelity"]
            sim_v = _fmt(f["key_simulator"])
            repro = "yes" if f["reproduces"] else "NO"
            mech = ("no claim (not reproduced)" if not f["reproduces"] else
                    f"undecidable ({_fmt(r['score'], '.2f')})" if not r["decisive"] else
                    f"{'RECOVERED' if r['recovered'] else 'not recovered'} {_fmt(r['score'], '.2f')} "
                    f"vs null {_fmt(r['null_level'], '.2f')}")
        lines.append(f"{name:<13} {meas:<30} {sim_v:<12} {repro:<11} {mech:<48} {_fmt(100 * rk, '.0f')} %")
    for name in names:
        e = report[name]
        lines += ["", f"{name}:"]
        if "recovery" in e:
            r = e["recovery"]
            f = r["fidelity"]
            lines.append(f"  fidelity: shows it {'yes' if f['shows'] else 'no'}; response in the windows of interest "
                         f"correlates {f['window_corr']:.2f} with the simulator's (needs >= {FIDELITY_MIN_CORR:g})")
            lines.append(f"  {f['measure']} per condition (model / simulator): " + ", ".join(
                f"{_fmt(d['model'])}/{_fmt(d['simulator'])}" for d in f["per_condition"]))
            lines.append(f"  verdict: {r['verdict']}")
            lines.append(f"  {'part':<11} {'simulator lesion':>17} {'CNN channels ablated':>22} {'':>4} channels")
            for part, d in r["simulator"].items():
                c = r["cnn"][part]
                rel = "" if relevant(d["effect"]) else " (does not matter)"
                lines.append(f"  {part:<11} {_fmt(100 * d['effect'], '+.0f'):>16}% "
                             f"{_fmt(100 * c['effect'], '+.0f'):>21}% {'ok' if r['agrees'][part] else '--':>4} "
                             f"{c['channels']}{rel}")
            perm = r["null_permutation"]
            lines.append(f"  nulls: label permutations median "
                         f"{_fmt(float(np.median(perm)) if perm else float('nan'), '.2f')} (max "
                         f"{_fmt(max(perm) if perm else float('nan'), '.2f')}); untrained CNNs "
                         + (", ".join(_fmt(v, ".2f") for v in r["null_untrained"]) or "none")
                         + f"; permutation p = {_fmt(r['p_value'], '.3f')} (the truth's own p = "
                         f"{_fmt(r['truth_p'], '.3f')})")
            if "power" in r:
                lines.append(_power_line("  power", r["power"]))
            lines.append("  channels by function (R^2; downstream sign; scale): " + ", ".join(
                f"{m['channel']}->{m['part'] or '-'} ({m['r2']:.2f}; {'+-'[m.get('sign', 1) < 0]}"
                f"{_match_scale(m)})" for m in r["matches"]))
        rk = e.get("reduced_key")
        if rk and rk["kept_channels"]:
            lines.append(f"  reduced model (channels {rk['kept_channels']}): key measure {_fmt(rk['key_reduced'])} "
                         f"of {_fmt(rk['key_full'])} ({_fmt(100 * rk['fraction'], '.0f')} % kept)")
        types = ", ".join(f"{t} {v:.0%}" for t, v in list(e["cnn_type_shares"].items())[:4])
        if types:
            lines.append(f"  channel types by |IG|: {types}")
        if "truth" in e:
            lines.append("  simulator |attribution| shares: " + ", ".join(
                f"{k} {v:.0%}" for k, v in e["truth"]["shares"].items()))
        if e.get("criteria"):
            lines.append("  the paper's descriptive criteria (type labels; not the verdict):")
            for k, v in e["criteria"].items():
                lines.append(f"    [{'x' if v else ' '}] {k}")
        for d in e.get("inhibitory_conv2", []):
            lines.append(f"  CNN inhibitory layer-2 channel {d['channel']}: {d['share']:.0%} of |IG|, "
                         f"{d['delay_ms']:+.0f} ms after the excitation peak ({d['conditions']} conditions)")
    lines.append("")
    note = report.get("_meta", {}).get("truth")
    if note and note != "no ground truth: not asked for":
        lines.append(note)
    lines.append(f"took {report.get('_meta', {}).get('seconds', float('nan')):.0f} s")
    return "\n".join(lines) + "\n"


def _power_line(label, power):
    """The summary's line for a verdict's power (:func:`retina.recovery.verdict_power`)."""
    return (f"{label}: near-copies of the truth (each effect off by a factor of about {NEAR_COPY_FACTOR:g}) are "
            f"called recovered in {_fmt(100 * power, '.0f')} % of draws")


def _match_scale(m):
    """'; pixel' or '; ganglion': the spatial scale a channel was matched at (empty for older results)."""
    from .recovery import MATCH_SCALES

    return f"; {MATCH_SCALES[m['scale']]}" if "scale" in m else ""
