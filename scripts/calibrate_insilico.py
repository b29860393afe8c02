"""Calibrate the in-silico retina against the tests of insilico.md section 2.

Searches the knobs of insilico.md section 6 ({tau1, a2, U, tau_rec} of the
bipolar pathways; the amacrine's tau, U and tau_rec; pathway and amacrine
weights; ganglion thresholds) with an elitist evolution strategy from the
spec's starting values.  Score = sum of the normalised violations of the
signature tests (intact and lesioned); 0 means every test passes.  r_max is
then scaled so that natural-movie mean rates land in 3-10 Hz.  The best set is
written to retina/data/insilico.json (and the search log next to it).

    python scripts/calibrate_insilico.py --generations 60 --seed 0

Reproducible from --seed; the shipped JSON records the seed and score.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time

import numpy as np

os.environ.setdefault("RETINA_NO_PROGRESS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from retina import phenomena as P  # noqa: E402
from retina import stimuli as S  # noqa: E402
from retina.insilico import ROW, InSilicoParams, InSilicoRetina  # noqa: E402

# The latency protocol the simulator was calibrated with: flashes -0.1 to -1 and the peak of every flash.
# phenomena.latency now follows the spec (-0.15 to -3, rates under 3 Hz ignored, for the peak too); with
# min_rate=0 the peaks are read as at calibration, the centre of mass also counting the sub-3-Hz rates.
CALIBRATION_LATENCY = dict(intensities=(-0.1, -0.2, -0.35, -0.5, -0.75, -1.0), min_rate=0.0)

# (path, low, high, log-scale)
KNOBS = [
    ("bipolar.OFF.tau1_ms", 15, 50, True), ("bipolar.OFF.a2", 0.1, 0.95, False),
    ("bipolar.OFF.U", 0.5, 60, True), ("bipolar.OFF.tau_rec_s", 0.1, 3, True),
    ("bipolar.ONf.tau1_ms", 12, 50, True), ("bipolar.ONf.a2", 0.1, 0.95, False),
    ("bipolar.ONf.U", 0.5, 60, True), ("bipolar.ONf.tau_rec_s", 0.1, 3, True),
    ("bipolar.ONs.tau1_ms", 15, 90, True), ("bipolar.ONs.a2", 0.1, 1.0, False),
    ("bipolar.ONs.U", 0.5, 60, True), ("bipolar.ONs.tau_rec_s", 0.1, 3, True),
    ("tau_amacrine_ms", 20, 300, True), ("U_amacrine", 0.5, 60, True), ("tau_rec_amacrine_s", 0.1, 3, True),
    ("ganglion.OFF.w_OFF", 0.3, 3, True), ("ganglion.OFF.w_ONf", 0.05, 4, True),
    ("ganglion.OFF.w_A1", 0.1, 5, True), ("ganglion.OFF.theta", -0.1, 0.3, False),
    ("ganglion.OSR.w_OFF", 0.02, 2, True), ("ganglion.OSR.w_ONf", 0.02, 2, True),
    ("ganglion.OSR.w_ONs", 0.2, 5, True), ("ganglion.OSR.w_A1", 0.05, 5, True),
    ("ganglion.OSR.theta", -0.2, 0.3, False),
]


def _get(p, path):
    obj = p
    for part in path.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _set(p, path, value):
    parts = path.split(".")
    obj = p
    for part in parts[:-1]:
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    setattr(obj, parts[-1], float(value))


def encode(p):
    z = []
    for path, lo, hi, log in KNOBS:
        v = float(np.clip(_get(p, path), lo, hi))
        z.append((np.log(v) - np.log(lo)) / (np.log(hi) - np.log(lo)) if log else (v - lo) / (hi - lo))
    return np.array(z)


def decode(z, base):
    p = base.copy()
    for zi, (path, lo, hi, log) in zip(np.clip(z, 0, 1), KNOBS):
        _set(p, path, np.exp(np.log(lo) + zi * (np.log(hi) - np.log(lo))) if log else lo + zi * (hi - lo))
    return p


def hinge(x):
    return float(max(0.0, x)) if np.isfinite(x) else 5.0


def evaluate(p):
    """Score (0 = every test passes) and the measures behind it."""
    m = {}
    v = {}
    try:
        sim = InSilicoRetina(p)
        o = P.osr(sim)
        fast = [c for c in o.per_condition if c["period_ms"] <= 125]
        m["osr_slope"] = o.measures["slope"]
        m["osr_min_ratio"] = min(c["ratio"] for c in fast)
        m["osr_latency_sd"] = o.measures["latency_sd_ms"]
        m["osr_peak"] = o.measures["osr_peak_mean"]
        v["osr_ratio"] = hinge((3 - m["osr_min_ratio"]) / 3)
        v["osr_slope"] = hinge(max(0.8 - m["osr_slope"], m["osr_slope"] - 1.2) / 0.2)
        v["osr_sd"] = 0.3 * hinge((m["osr_latency_sd"] - 25) / 25)
        o2 = P.osr(InSilicoRetina(p, lesion="ONs"))
        m["osr_peak_noONs"] = o2.measures["osr_peak_mean"]
        v["osr_lesion"] = hinge((m["osr_peak_noONs"] - 0.5 * m["osr_peak"]) / max(m["osr_peak"], 1e-9))

        lat = P.latency(sim, **CALIBRATION_LATENCY)
        m["lat_delta"] = lat.measures["peak_delta_ms"]
        m["lat_com_delta"] = lat.measures["com_delta_ms"]
        v["lat_mono"] = hinge(lat.measures["peak_violations"] / 5) + hinge(lat.measures["com_violations"] / 5)
        v["lat_delta"] = hinge((10 - m["lat_delta"]) / 10)
        for les, key in (("depression", "nodep"), ("A1", "noA1"), ("linear", "linear")):
            ll = P.latency(InSilicoRetina(p, lesion=les), **CALIBRATION_LATENCY)
            m[f"lat_delta_{key}"] = ll.measures["peak_delta_ms"]
            m[f"lat_com_delta_{key}"] = ll.measures["com_delta_ms"]
        v["lat_lesion"] = (0.5 * hinge((m["lat_delta_nodep"] - 0.6 * m["lat_delta"]) / 10)
                           + 0.5 * hinge(m["lat_com_delta_noA1"] / 5)
                           + 0.5 * hinge((abs(m["lat_delta_linear"]) - 3) / 5))

        row = InSilicoRetina(p, positions=ROW)  # bar protocols read out a dense row of cells
        a = P.anticipation(row, flash_positions=())
        offs = [a.measures[f"offset_px_{s:g}"] for s in (0.04, 0.08, 0.16)]
        m.update({f"ant_offset_{s:g}": o_ for s, o_ in zip((0.04, 0.08, 0.16), offs)})
        al = P.anticipation(InSilicoRetina(p, lesion="linear", positions=ROW), speeds=(0.08,), flash_positions=())
        m["ant_offset_linear_0.08"] = al.measures["offset_px_0.08"]
        v["ant_sign"] = sum(hinge(o_ / 1.0) for o_ in offs)
        v["ant_order"] = hinge((offs[0] - offs[1]) / 0.5) + hinge((offs[1] - offs[2]) / 0.5)
        v["ant_lesion"] = hinge((offs[1] - (m["ant_offset_linear_0.08"] - 1.5)) / 1.0)

        rv = P.reversal(row)
        m["rev_sd"] = rv.measures["latency_sd_ms"]
        m["rev_latency"] = rv.measures["latency_mean_ms"]
        m["rev_min_ratio"] = rv.measures["min_ratio"]
        v["rev_sd"] = hinge((m["rev_sd"] - 20) / 20)
        v["rev_lat"] = hinge((150 - m["rev_latency"]) / 50) + hinge((m["rev_latency"] - 400) / 50)
        v["rev_ratio"] = 2 * hinge((1.5 - m["rev_min_ratio"]) / 1.5)
        r2 = P.reversal(InSilicoRetina(p, lesion="ONf", positions=ROW))
        m["rev_ratio_noONf"] = r2.measures["mean_ratio"]
        v["rev_lesion"] = hinge((m["rev_ratio_noONf"] - 1.0) / 0.5)
    except (FloatingPointError, ValueError, ZeroDivisionError) as exc:
        return 1e3, {"error": str(exc)}, {}
    score = float(sum(v.values()))
    return score, m, v


def scale_rates(p, seconds=60, seed=123):
    """Scale r_max per type so that mean natural-movie rates are 3-10 Hz (target 6)."""
    sim = InSilicoRetina(p)
    r = sim.rates(S.natural_movie(seconds * 100, seed=seed).movie)
    for t in p.ganglion:
        mean = r[:, sim.cells_of(t)].mean()
        if not 3 <= mean <= 10:
            p.ganglion[t].r_max *= 6.0 / mean
    return p


def _single_thread():
    import numba

    numba.set_num_threads(1)


def _eval_z(args):
    z, base = args
    return evaluate(decode(z, base))[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--generations", type=int, default=40)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--sigma", type=float, default=0.12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", default=None, help="JSON to start from (default: the spec's values)")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--budget-min", type=float, default=60.0, help="stop after this many minutes")
    ap.add_argument("-o", "--output", default=os.path.join(os.path.dirname(__file__), "..", "retina", "data",
                                                           "insilico.json"))
    args = ap.parse_args()
    base = InSilicoParams.from_json(args.start) if args.start else InSilicoParams()
    rng = np.random.default_rng(args.seed)
    best_z = encode(base)
    best, m, v = evaluate(base)
    print(f"start score {best:.3f}", json.dumps({k: round(x, 3) for k, x in v.items() if x}), flush=True)
    sigma = args.sigma
    t0 = time.time()
    log = []
    with mp.get_context("spawn").Pool(args.workers, initializer=_single_thread) as pool:
        for g in range(args.generations):
            cands = [np.clip(best_z + sigma * rng.standard_normal(len(best_z)) * (rng.random(len(best_z)) < 0.4),
                             0, 1) for _ in range(args.population)]
            scores = pool.map(_eval_z, [(c, base) for c in cands])
            i = int(np.argmin(scores))
            improved = scores[i] < best
            if improved:
                best, best_z = scores[i], cands[i]
            sigma = sigma * (1.25 if improved else 0.93)
            sigma = float(np.clip(sigma, 0.02, 0.3))
            log.append(dict(generation=g, best=best, sigma=sigma))
            print(f"gen {g:3d} best {best:.3f} (gen best {scores[i]:.3f}) sigma {sigma:.3f} "
                  f"{(time.time() - t0) / 60:.1f} min", flush=True)
            if best == 0 or (time.time() - t0) / 60 > args.budget_min:
                break
    p = scale_rates(decode(best_z, base))
    score, m, v = evaluate(p)
    print("final score", round(score, 4))
    print(json.dumps({"measures": m, "violations": v}, indent=1, default=float))
    d = p.to_dict()
    d_out = {**d}
    p.to_json(args.output)
    with open(args.output.replace(".json", "_calibration.json"), "w") as fh:
        json.dump({"seed": args.seed, "score": score, "measures": m, "violations": v, "log": log,
                   "generations": len(log), "population": args.population}, fh, indent=1, default=float)
    return d_out


if __name__ == "__main__":
    main()
