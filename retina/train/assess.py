"""Judging a trained model the way the bundled recipe does: held-out fit, channel types, phenomena, report.

Used by :mod:`retina.train.recipe`: the held-out test clips' correlation with
the simulator's noise-free rate beside the single-repeat Poisson ceiling; the
layer-1 channel types; each registered phenomenon measured on the CNN and on
the simulator (``Phenomenon.shows``), with latency also under held-out
protocols; and the selection score of stages that choose their epoch by the
phenomena (``select = "phenomena"``: selected, not predicted; the report says
which protocols were held out).
"""

from __future__ import annotations

import logging

import numpy as np

from .. import phenomena as P
from ..datasets import smooth_rate
from ..insilico import ROW, InSilicoParams, InSilicoRetina
from ..reduction import classify_channels
from .loss import evaluate

__all__ = ["noise_ceiling", "cell_positions", "phenomenon_cells", "phenomena_report", "latency_variants",
           "phenomena_score", "directions", "report_markdown", "LATENCY_VARIANTS", "REQUIRED_TYPES"]

log = logging.getLogger("retina.train")


def noise_ceiling(repeats, rate):
    """Mean over cells of the correlation of a single Poisson repeat (smoothed) with the true rate."""
    one = smooth_rate(repeats[:, 0, :])  # (cells, T)
    c = [np.corrcoef(one[j], rate[:, j])[0, 1] for j in range(rate.shape[1])]
    return np.array(c)


def cell_positions(params=None):
    """The grid mosaic and the dense row of ``ROW``, without repeats."""
    grid = (params or InSilicoParams.default()).mosaic
    mosaic = [(float(y), float(x)) for y in grid for x in grid]
    return mosaic + [p for p in ROW if p not in mosaic]


def phenomenon_cells(sim, name):
    """The simulator's cells a phenomenon is measured on (its ``cell_type``); bar protocols (``row``) take
    those of the dense row."""
    ph = P.get(name)
    return np.array([c.index for c in sim.cells
                     if c.type == ph.cell_type and (not ph.row or (c.y == 25 and 15 <= c.x <= 35))])


def _measure(name, responder, cells):
    ph = P.get(name)
    return ph.run(responder, cells=cells, explain=False, **ph.options_for(responder)).measures


def phenomena_report(model, sim):
    """Each phenomenon measured on the simulator and on the CNN, on the same cells.

    Full-field protocols use the mosaic cells; the bar protocols the dense row
    (the simulator's own population readout).
    """
    out = {}
    row = InSilicoRetina(sim.params, positions=ROW)
    for name, ph in P.REGISTRY.items():
        if ph.row:
            sim_measures = ph.run(row, explain=False, **ph.options_for(row)).measures
        else:
            sim_measures = _measure(name, sim, phenomenon_cells(sim, name))
        out[name] = {"simulator": sim_measures,
                     "cnn": _measure(name, P.CNNProbe(model, cells=sim.cells), phenomenon_cells(sim, name))}
    return out


LATENCY_VARIANTS = (   # held-out latency protocols: other flash strengths and onsets than phenomena.latency's,
    # all physical (nothing darker than black)
    dict(intensities=tuple(round(-0.04 * k, 2) for k in range(7, 26)), delay=70),           # -0.28 to -1 in 19
    dict(intensities=tuple(round(-v, 3) for v in np.geomspace(0.22, 0.97, 12)), delay=35),  # log-spaced
)


def latency_variants(model, sim):
    """Latency coding under the held-out protocols (no stage selects on them): simulator and CNN."""
    cells = phenomenon_cells(sim, "latency")
    out = []
    for kw in LATENCY_VARIANTS:
        m = {who: P.latency(obj, cells=cells, explain=False, **kw).measures
             for who, obj in (("simulator", sim), ("cnn", P.CNNProbe(model, cells=sim.cells)))}
        out.append({"protocol": kw, **m, **{f"{who}_shows_it": P.LATENCY.shows(m[who]) for who in m}})
    return out


REQUIRED_TYPES = ("OFF-fast", "ON-fast", "ON-slow")   # the bundled model's criteria: layer 1 must include these


def phenomena_score(sim, whitenoise=None, min_corr=0.8, wn_index=1):
    """Model selection that counts the issue's criteria: the validation correlation, less 1 per phenomenon the
    CNN misses and per required layer-1 channel type it lacks (a one-frame latency shift is invisible to the
    loss and to the correlation), and, given ``whitenoise`` (stimulus and rates), less 1 if the white-noise
    validation correlation is under ``min_corr`` (the bundled model's criterion is 0.8 on held-out white noise).  That
    correlation is ``train()``'s own for validation set ``wn_index`` (the recipe's white-noise set) when
    train passes ``val_corrs``; otherwise ``whitenoise`` is predicted."""
    cells = {name: phenomenon_cells(sim, name) for name in P.names()}

    def score(model, val_corr, val_corrs=None):
        cnn = P.CNNProbe(model, cells=sim.cells)
        measures = {name: _measure(name, cnn, cells[name]) for name in P.names()}
        log.info("  %s", ", ".join(f"{name} {ph.presence_measure} {measures[name][ph.presence_measure]:.3g}"
                                   for name, ph in P.REGISTRY.items()))
        missed = [name for name, ph in P.REGISTRY.items() if not ph.shows(measures[name])]
        types = {c["type"] for c in classify_channels(model)}
        missed += [t for t in REQUIRED_TYPES if t not in types]
        if whitenoise is not None:
            wn_corr = (val_corrs[wn_index] if val_corrs is not None
                       else float(evaluate(model, *whitenoise)[0].mean()))
            log.info("  white-noise validation correlation %.3f", wn_corr)
            if wn_corr < min_corr:
                missed.append("white noise")
        log.info("  criteria missed: %s", ", ".join(missed) or "none")
        return val_corr - len(missed)
    return score


def directions(phen):
    """Does the CNN show each phenomenon in the simulator's direction (``Phenomenon.shows``)?"""
    out = {}
    for name, ph in P.REGISTRY.items():
        sim, cnn = phen[name]["simulator"], phen[name]["cnn"]
        key = ph.presence_measure
        out[name] = {"measure": key, "simulator": sim[key], "cnn": cnn[key], "what": ph.shows.__doc__,
                     "simulator_shows_it": ph.shows(sim), "cnn_shows_it": ph.shows(cnn)}
    return out


def report_markdown(report, cell_ids):
    """The report as Markdown tables: per-cell correlations with the Poisson ceiling, channel types, phenomena."""
    streams = [k[5:] for k in report if k.startswith("test_")]
    lines = [f"# Report of the recipe {report.get('recipe', '')!r}", "",
             f"Recipe time {report['total_seconds'] / 60:.1f} min (simulation {report['simulate_seconds'] / 60:.1f}, "
             f"training {report['train_seconds'] / 60:.1f}); last stage's chosen epoch {report['best_epoch']} "
             f"(validation {report['best_val_corr']:.3f}).", "",
             "## Held-out test clips (new seeds): correlation with the simulator's noise-free rate", "",
             "Mean over cells, and the single-repeat ceiling (one smoothed Poisson repeat against the rate):", "",
             "| stream | CNN | ceiling |", "|---|---|---|"]
    for k in streams:
        t = report[f"test_{k}"]
        lines.append(f"| {k} | {t['mean_corr']:.3f} | {np.mean(t['single_repeat_ceiling_per_cell']):.3f} |")
    lines += ["", "Each cell (natural / white noise; ceiling in brackets):", "",
              "| cell | natural | white noise |", "|---|---|---|"]
    nat, wn = report["test_natural"], report["test_whitenoise"]
    for j, cid in enumerate(cell_ids):
        lines.append(f"| {cid} | {nat['corr_per_cell'][j]:.3f} ({nat['single_repeat_ceiling_per_cell'][j]:.2f}) | "
                     f"{wn['corr_per_cell'][j]:.3f} ({wn['single_repeat_ceiling_per_cell'][j]:.2f}) |")
    lines += ["", "## Layer-1 channel types (docs/spec.md section 5)", "",
              "| channel | polarity | time to peak (ms) | speed | type | kernel norm |", "|---|---|---|---|---|---|"]
    for c in report["channels"]:
        lines.append(f"| {c['channel']} | {c['polarity']} | {c['ttp_ms']:.0f} | {c['speed']} | {c['type']} | "
                     f"{c['norm']:.2f} |")
    lines += ["", "## Phenomena (docs/phenomena.md measures): simulator and CNN", "",
              "| phenomenon | measure | simulator | CNN | CNN goes the simulator's way |", "|---|---|---|---|---|"]
    for name, d in report["directions"].items():
        lines.append(f"| {name} | {d['measure']} | {d['simulator']:.3g} | {d['cnn']:.3g} | "
                     f"{'yes' if d['cnn_shows_it'] else 'NO'} |")
    for v in report.get("latency_variants", []):
        lines.append(f"| latency, held-out protocol {v['protocol']} | peak_delta_ms | "
                     f"{v['simulator']['peak_delta_ms']:.3g} | {v['cnn']['peak_delta_ms']:.3g} | "
                     f"{'yes' if v['cnn_shows_it'] else 'NO'} |")
    return "\n".join(lines) + "\n"
