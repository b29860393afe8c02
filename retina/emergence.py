"""Do the phenomena emerge?  Several CNNs trained on generic stimuli, judged on held-out protocols.

The paper's first claim is that a CNN fitted to responses to generic stimuli
*develops* the retina's predictive phenomena without being trained on them.
One model is no evidence, so this module judges a set of models (independent
seeds of one recipe, ``retina recipe generic --seed S``) the same way and says
what they share.  Everything is defined in ``docs/emergence.md``; in short, per
model (:func:`assess_model`):

1. **Fit**: the correlation with the simulator's noise-free rate on the
   recipe's held-out test clips (natural movies, white noise, ...), read from
   the ``report.json`` the recipe wrote beside the model.
2. **Emergence**: each phenomenon's held-out protocol
   (:attr:`retina.phenomena.Phenomenon.held_out`: protocol values no training
   stream, selection, default or test uses) run on the model and on its
   simulator, judged at the thresholds of ``docs/recovery.md``
   (:meth:`~retina.phenomena.Phenomenon.judge_model`).  The simulator's own
   verdict on the same checks is reported beside it: a model cannot be asked
   to pass where its ground truth does not.
3. **Mechanism**: the recovery benchmark (:func:`retina.recovery.recover`:
   sign-aware intervention scores, permutation and untrained nulls, fidelity
   gate) and the **dominant functional part** (:func:`dominant`): the part
   whose matched channels' ablation changes the key measure most, with the
   sign of that change.

Across models (:func:`summarise`): per phenomenon, the fraction of models that
meet every check; among those, how many are recovered, and how many agree on
the dominant part with each other and with the simulator.  The pass mark the
project aims for (:data:`AGREEMENT_SHARE`, :data:`RECOVERED_SCORE`,
:data:`PASS_NULL_LEVEL`): at least 4 of 5 models agree with each other and
with the simulator, with a recovery score of at least 0.7 against a null level
of at most 0.2.  A phenomenon that emerges in no model is the finding, and is
reported as such.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from . import phenomena as P
from .recovery import PARTS, RECOVERED_SCORE, recover, simulator_effects

__all__ = ["assess_model", "summarise", "report_markdown", "dominant", "simulator_reference", "emergence",
           "against_circuits",
           "AGREEMENT_SHARE", "PASS_NULL_LEVEL", "DOMINANT_MIN_EFFECT"]

log = logging.getLogger(__name__)

AGREEMENT_SHARE = 0.8       # at least 4 of 5 models agree with each other and with the simulator ...
PASS_NULL_LEVEL = 0.2       # ... recovered (score >= RECOVERED_SCORE) against a null level of at most 0.2
DOMINANT_MIN_EFFECT = 0.2   # a dominant part must change the key measure by >= 20 % of the phenomenon's size
CACHE_VERSION = 1           # the layout of a cached assessment (models/<hash>.json); another version is redone


def dominant(effects) -> str | None:
    """The dominant functional part of ``effects`` (``{part: {"effect": e}}``, as
    :func:`retina.recovery.simulator_effects` and :func:`retina.recovery.cnn_effects` return): the part whose
    removal changes the key measure most, written with the sign of the change (``"ONs-"``: removing ON-slow
    lowers it).  ``None`` when no removal reaches :data:`DOMINANT_MIN_EFFECT`."""
    best, size = None, DOMINANT_MIN_EFFECT
    for part, d in effects.items():
        e = float(d["effect"])
        if np.isfinite(e) and abs(e) >= size:
            best, size = f"{part}{'+' if e > 0 else '-'}", abs(e)
    return best


def simulator_reference(sim, names=None) -> dict:
    """What every model judged against ``sim`` shares, run once: per phenomenon the simulator's held-out result
    and its own verdict on the held-out checks, its default-protocol result and its lesion effects over
    :data:`retina.recovery.PARTS`."""
    out = {}
    for name in (P.names() if names is None else names):
        ph = P.get(name)
        base = ph.simulator(sim)
        res = ph.run(base, **ph.options_for(base))
        held = ph.held_out_result(sim)
        out[name] = dict(held_out=held, checks=ph.judge(held, held) if ph.judge is not None else [], result=res,
                         effects=simulator_effects(name, sim, intact=res, parts=PARTS))
    return out


def _fit(model_path) -> dict | None:
    report = Path(model_path).with_name("report.json") if model_path is not None else None
    if report is None or not report.exists():
        return None
    from .train.recipe import seed_summary

    return seed_summary(json.loads(report.read_text()))


def _check(c) -> dict:
    return dict(name=c.name, description=c.description, value=float(c.value), low=float(c.low),
                high=float(c.high), passed=c.passed)


def assess_model(model, sim=None, *, names=None, n_untrained=3, reference=None, path=None) -> dict:
    """Judge one model: fit, emergence on the held-out protocols, recovery and dominant part per phenomenon.

    Parameters
    ----------
    model : RetinaCNN
        A model fitted to the in-silico retina.
    sim : InSilicoRetina, optional
        The ground truth (default: the simulator the model records,
        :func:`retina.insilico.simulator_of`).
    names : sequence of str, optional
        Phenomena (default every registered one).
    n_untrained : int
        Untrained CNNs of the model's shape in the recovery null.
    reference : dict, optional
        :func:`simulator_reference` of ``sim``, to share between models.
    path : str or Path, optional
        The model's file; a ``report.json`` beside it gives the fit.

    Returns
    -------
    dict
        ``model`` (file, recipe, seed, commit), ``fit`` and ``phenomena``:
        per name the held-out ``checks``, ``emerges`` (every check passed),
        ``simulator_passes``, the recovery benchmark's verdict and numbers,
        and the model's and simulator's ``dominant`` parts.
    """
    from .insilico import simulator_name, simulator_of

    sim = simulator_of(model, sim)
    names = P.names() if names is None else tuple(names)
    reference = reference if reference is not None else simulator_reference(sim, names)
    meta = model.metadata or {}
    seed = meta.get("seed")
    out: dict = dict(model=dict(path=None if path is None else str(path), recipe=meta.get("recipe_name"),
                                seed=None if seed is None else int(seed), git_commit=meta.get("git_commit"),
                                content_hash=model.content_hash(), simulator=simulator_name(sim.params)),
                     fit=_fit(path), phenomena={})
    recs = recover(model, names, sim, n_untrained=n_untrained,
                   sim_results={n: reference[n]["result"] for n in names},
                   sim_effects={n: reference[n]["effects"] for n in names})
    for name in names:
        ph = P.get(name)
        checks = ph.judge_model(model, sim, sim_result=reference[name]["held_out"])
        sim_checks = reference[name]["checks"]
        r = recs[name]
        out["phenomena"][name] = dict(
            checks=[_check(c) for c in checks], emerges=bool(checks) and all(c.passed for c in checks),
            simulator_passes=bool(sim_checks) and all(c.passed for c in sim_checks),
            simulator_checks=[_check(c) for c in sim_checks],
            recovery=dict(score=r.score, null_level=r.null_level, p_value=r.p_value, decisive=r.decisive,
                          recovered=r.recovered, verdict=r.verdict, fidelity=r.fidelity,
                          cnn={p: r.cnn[p]["effect"] for p in PARTS},
                          simulator={p: r.simulator[p]["effect"] for p in PARTS}),
            dominant=dominant(r.cnn), simulator_dominant=dominant(r.simulator))
        log.info("%s: emerges %s, %s", name, out["phenomena"][name]["emerges"], r.verdict)
    return out


def summarise(assessments) -> dict:
    """Pool :func:`assess_model`'s results over models: per phenomenon, how many models meet every held-out check,
    and among those how many pass fidelity, are recovered, and agree on the dominant part (with each other: the
    most common part; with the simulator: the simulator's part); whether the project's pass mark is met."""
    assessments = list(assessments)
    n = len(assessments)
    names = list(dict.fromkeys(k for a in assessments for k in a["phenomena"]))
    out: dict = dict(n_models=n, phenomena={}, fit={}, best_by_validation=None)
    fits = [a["fit"] for a in assessments if a.get("fit")]
    losses = [(a["fit"]["validation_loss"], a["model"]["path"]) for a in assessments
              if a.get("fit") and np.isfinite(a["fit"].get("validation_loss", np.nan))]
    if losses:
        out["best_by_validation"] = min(losses)[1]
    for key in dict.fromkeys(k for f in fits for k in f):
        vals = np.array([f[key] for f in fits if key in f], float)
        out["fit"][key] = dict(mean=float(vals.mean()), min=float(vals.min()), max=float(vals.max()))
    for name in names:
        rows = [a["phenomena"][name] for a in assessments if name in a["phenomena"]]
        shown = [r for r in rows if r["emerges"]]
        sim_dom = rows[0]["simulator_dominant"] if rows else None
        doms = Counter(r["dominant"] for r in shown)
        common, n_common = (doms.most_common(1)[0] if doms else (None, 0))
        recovered = [r for r in shown if r["recovery"]["recovered"]]
        passing = [r for r in shown if r["dominant"] == sim_dom and sim_dom is not None
                   and r["recovery"]["score"] >= RECOVERED_SCORE
                   and r["recovery"]["null_level"] <= PASS_NULL_LEVEL]
        checks = {c["name"]: sum(c2["passed"] for r in rows for c2 in r["checks"] if c2["name"] == c["name"])
                  for c in (rows[0]["checks"] if rows else [])}
        out["phenomena"][name] = dict(
            n_models=len(rows), emerges=len(shown), share=len(shown) / max(len(rows), 1), checks_passed=checks,
            simulator_passes=bool(rows and rows[0]["simulator_passes"]),
            reproduces=sum(bool((r["recovery"]["fidelity"] or {}).get("reproduces")) for r in shown),
            recovered=len(recovered), simulator_dominant=sim_dom, most_common_dominant=common,
            agree_with_each_other=n_common, agree_with_simulator=sum(r["dominant"] == sim_dom for r in shown),
            pass_mark=len(passing) >= AGREEMENT_SHARE * len(rows) if rows else False,
            scores=[r["recovery"]["score"] for r in rows], null_levels=[r["recovery"]["null_level"] for r in rows])
    out["against_circuits"] = against_circuits(assessments)
    return out


def against_circuits(assessments) -> dict:
    """Each model's mechanism scored against every circuit its set was trained on (``docs/emergence.md``).

    When the models come from more than one simulator (for example generic seeds and seeds of a counterfactual
    circuit, :data:`retina.insilico.COUNTERFACTUALS`), each model's ablation effects per phenomenon are scored
    (:func:`retina.recovery.score`, with the permutation p-value) against each simulator's lesion effects.  A
    benchmark that can tell circuits apart scores a model higher against its own circuit than against the
    others; ``prefers_own`` counts the models that do.  Only the phenomena every circuit in the set claims
    (a counterfactual claims its named ones) are compared.  Returns ``{}`` for a single circuit.
    """
    from .insilico import COUNTERFACTUALS
    from .recovery import p_value, permutation_null, score

    assessments = list(assessments)
    labels = [a["model"].get("simulator") or "?" for a in assessments]
    if len(set(labels)) < 2:
        return {}
    circuits: dict = {}
    for a, label in zip(assessments, labels):
        circuits.setdefault(label, {n: r["recovery"]["simulator"] for n, r in a["phenomena"].items()})
    claimed = [n for n in dict.fromkeys(k for a in assessments for k in a["phenomena"])
               if all(n in COUNTERFACTUALS[c]["phenomena"] for c in circuits if c in COUNTERFACTUALS)
               and all(n in effects for effects in circuits.values())]
    out: dict = {}
    for name in claimed:
        rows = []
        for a, own in zip(assessments, labels):
            if name not in a["phenomena"]:
                continue
            cnn = {p: {"effect": v} for p, v in a["phenomena"][name]["recovery"]["cnn"].items()}
            scores = {}
            for label, effects in circuits.items():
                truth = {p: {"effect": v} for p, v in effects[name].items()}
                value, _ = score(truth, cnn)
                scores[label] = dict(score=value, p_value=p_value(value, permutation_null(truth, cnn)))
            others = [v["score"] for k, v in scores.items() if k != own and np.isfinite(v["score"])]
            mine = scores[own]["score"]
            rows.append(dict(model=a["model"]["path"], seed=a["model"]["seed"], circuit=own, scores=scores,
                             dominant=a["phenomena"][name]["dominant"],
                             prefers_own=bool(np.isfinite(mine) and others and mine > max(others))))
        out[name] = dict(circuits=list(circuits), rows=rows, prefers_own=sum(r["prefers_own"] for r in rows),
                         n_models=len(rows),
                         simulator_dominant={c: dominant({p: {"effect": v} for p, v in e[name].items()})
                                             for c, e in circuits.items()})
    return out


def _f(v, fmt=".2f"):
    return "-" if v is None or np.isnan(v) else format(v, fmt)


def report_markdown(assessments, summary=None) -> str:
    """A readable report of :func:`assess_model` results (one row per model) and their :func:`summarise`."""
    assessments = list(assessments)
    summary = summary or summarise(assessments)
    n = summary["n_models"]
    lines = ["# Do the phenomena emerge?", "",
             f"{n} model{'s' if n != 1 else ''}, each judged on the held-out protocols at the thresholds of "
             "docs/recovery.md (definitions: docs/emergence.md).", "",
             "## Fit (held-out test clips, correlation with the simulator's noise-free rate)", "",
             "| model | seed | " + " | ".join(summary["fit"]) + " |",
             "|---|---|" + "---|" * len(summary["fit"])]
    for a in assessments:
        f = a.get("fit") or {}
        lines.append(f"| {Path(a['model']['path'] or '?').parent.name} | {a['model']['seed']} | "
                     + " | ".join(_f(f.get(k), ".3f") for k in summary["fit"]) + " |")
    if summary.get("best_by_validation"):
        lines += ["", f"Lowest validation loss (the recipe's own selection data): {summary['best_by_validation']}"]
    lines += ["", "## Per phenomenon", "",
              "| phenomenon | emerges | each check | simulator passes | reproduces (fidelity) | recovered | "
              "dominant part (simulator) | agree with each other | agree with simulator | pass mark |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary["phenomena"].items():
        each = ", ".join(f"{c} {k}/{s['n_models']}" for c, k in s["checks_passed"].items())
        sim = "yes" if s["simulator_passes"] else "no"
        lines.append(f"| {name} | {s['emerges']}/{s['n_models']} | {each} | {sim} | "
                     f"{s['reproduces']}/{s['emerges']} | {s['recovered']}/{s['emerges']} | "
                     f"{s['simulator_dominant']} | {s['agree_with_each_other']} ({s['most_common_dominant']}) | "
                     f"{s['agree_with_simulator']} | {'met' if s['pass_mark'] else 'not met'} |")
    for name, c in (summary.get("against_circuits") or {}).items():
        lines += ["", f"## {name}: each model against each circuit", "",
                  "Recovery score (permutation p) of the model's ablation effects against each simulator's lesion "
                  f"effects; {c['prefers_own']} of {c['n_models']} models score higher against their own circuit "
                  "than against every other.", "",
                  "| model | seed | trained on | dominant part | " + " | ".join(
                      f"vs {k} ({c['simulator_dominant'][k]})" for k in c["circuits"]) + " | prefers own |",
                  "|---|---|---|---|" + "---|" * len(c["circuits"]) + "---|"]
        for r in c["rows"]:
            cells = " | ".join(f"{_f(r['scores'][k]['score'])} ({_f(r['scores'][k]['p_value'], '.2g')})"
                               for k in c["circuits"])
            lines.append(f"| {Path(r['model'] or '?').parent.name} | {r['seed']} | {r['circuit']} | {r['dominant']} | "
                         f"{cells} | {'yes' if r['prefers_own'] else 'no'} |")
    lines += ["", "## Each model", ""]
    for a in assessments:
        lines.append(f"### {a['model']['path']} (seed {a['model']['seed']})")
        lines.append("")
        for name, r in a["phenomena"].items():
            checks = "; ".join(f"{c['name']} {_f(c['value'], '.3g')} [{_f(c['low'], '.3g')}, {_f(c['high'], '.3g')}]"
                               f" {'pass' if c['passed'] else 'FAIL'}" for c in r["checks"])
            rec = r["recovery"]
            lines.append(f"- **{name}**: {'emerges' if r['emerges'] else 'does not emerge'} ({checks}); "
                         f"dominant part {r['dominant']} (simulator {r['simulator_dominant']}); recovery "
                         f"score {_f(rec['score'])}, null level {_f(rec['null_level'])}: {rec['verdict']}")
        lines.append("")
    return "\n".join(lines)


def emergence(models, out=None, *, sim=None, names=None, n_untrained=3, progress=False) -> dict:
    """Judge every model in ``models`` (paths or loaded models) and pool them (:func:`summarise`).

    With ``out`` (a folder), each model's assessment is kept in
    ``out/models/<content hash>.json`` as soon as it is done (an interrupted
    run resumes), and ``emergence.json`` and ``emergence.md`` are written
    atomically at the end.  Models judged against the same simulator share its
    runs (:func:`simulator_reference`).  Returns ``{"models": [...], "summary": {...}}``.
    """
    from ._progress import progress_bar
    from .insilico import simulator_name, simulator_of
    from .io import atomic_text, load_model

    names = P.names() if names is None else tuple(P.get(n).name for n in names)
    folder = Path(out) if out is not None else None
    if folder is not None:
        (folder / "models").mkdir(parents=True, exist_ok=True)
    refs: dict = {}
    results = []
    for item in progress_bar(list(models), desc="models", unit="model", enabled=progress):
        path = None
        if isinstance(item, (str, Path)):
            model = load_model(str(item))
            path = Path(item) if Path(item).is_file() else None
        else:
            model = item
        cache = folder / "models" / f"{model.content_hash()[:16]}.json" if folder is not None else None
        if cache is not None and cache.exists():
            done = json.loads(cache.read_text())
            if (done.get("version") == CACHE_VERSION and done.get("names") == list(names)
                    and done.get("n_untrained") == n_untrained):
                if "simulator" not in done["assessment"]["model"]:   # judged before the name was recorded
                    done["assessment"]["model"]["simulator"] = simulator_name(simulator_of(model, sim).params)
                results.append(done["assessment"])
                continue
        truth = simulator_of(model, sim)
        key = json.dumps(truth.params.to_dict(), sort_keys=True, default=float)
        if key not in refs:
            refs[key] = simulator_reference(truth, names)
        a = assess_model(model, truth, names=names, n_untrained=n_untrained, reference=refs[key], path=path)
        if cache is not None:
            atomic_text(cache, json.dumps(dict(version=CACHE_VERSION, names=list(names), n_untrained=n_untrained,
                                               assessment=a),
                                          indent=1, default=float))
        results.append(a)
    summary = summarise(results)
    if folder is not None:
        atomic_text(folder / "emergence.json", json.dumps(dict(models=results, summary=summary), indent=1,
                                                           default=float))
        atomic_text(folder / "emergence.md", report_markdown(results, summary))
    return dict(models=results, summary=summary)
