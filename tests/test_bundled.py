"""The bundled models against what their files and docs claim (retina.io.BUNDLED_MODELS).

``default`` is trained on generic stimuli only (retina/recipes/generic.toml, docs/emergence.md); ``tuned`` was tuned
on the phenomenon protocols (retina/recipes/tuned.toml, docs/history.md).  Both are checked on stimuli they never
saw: a fresh natural-like clip and white noise (new seeds) against the noise-free rates of the simulator they were
fitted to, and each phenomenon on its held-out protocol (``Phenomenon.held_out``) at the thresholds of
docs/recovery.md (``Phenomenon.judge``).  The checks a model misses are listed and expected to fail (strictly: a
model that starts passing one must be looked at), never hidden by a lower bar.
"""

import functools
import json

import numpy as np
import pytest

import retina.io as rio
from retina import load_model
from retina.insilico import InSilicoRetina, simulator_of
from retina.stimuli import natural_movie, white_noise
from retina.train import assess as recipe

BUNDLED = [pytest.param(n, marks=pytest.mark.skipif(not rio.bundled_path(n).is_file(), reason=f"no bundled {n}"))
           for n in rio.BUNDLED_MODELS]


@functools.cache
def _pair(name):
    model = load_model(name)
    sim = InSilicoRetina(simulator_of(model).params, positions=recipe.cell_positions())   # the one it was fitted to
    return model, sim


def _mean_corr(model, sim, movie, skip=100):
    truth = sim.rates(movie)[skip:]
    pred = model.rates(movie)[skip:]   # contrast units, converted with the model's norm_stats
    return np.mean([np.corrcoef(truth[:, j], pred[:, j])[0, 1] for j in range(truth.shape[1])])


def _fresh(kind, sim, n=3000):
    """30 s of a stimulus class, a seed no training or test stream used."""
    if kind == "natural":
        return natural_movie(n, sim.frame_shape, seed=98765).movie
    return white_noise(n, sim.frame_shape, contrast=0.35, binary=True, seed=98765).movie


@pytest.mark.parametrize("kind", ["natural", "whitenoise"])
@pytest.mark.parametrize("name", BUNDLED)
def test_a_bundled_model_predicts_fresh_stimuli_as_its_report_says(name, kind):
    """The fit the model's file records (``fit``: its recipe's held-out test clips) holds on a fresh clip to
    within 0.05: the file is the model its report describes.  The tuned recipe's own criterion (>= 0.8) is
    checked too."""
    model, sim = _pair(name)
    assert model.n_cells == sim.n_cells
    corr = _mean_corr(model, sim, _fresh(kind, sim))
    recorded = json.loads(model.metadata["fit"])[kind]
    assert abs(corr - recorded) < 0.05, (corr, recorded)
    if name == "tuned":
        assert corr > 0.8


@functools.cache
def _judged(name, phenomenon):
    """The held-out protocol (Phenomenon.held_out: values no default, test or training stage uses) on the bundled
    model and the simulator it was fitted to, judged at the thresholds of docs/recovery.md (Phenomenon.judge)."""
    from retina import phenomena as P

    return {c.name: c for c in P.get(phenomenon).judge_model(_pair(name)[0])}


HELD_OUT_CHECKS = [("osr", "osr_ratio"), ("osr", "osr_slope"), ("latency", "latency_monotonic"),
                   ("latency", "latency_shift"), ("reversal", "reversal_ratio"), ("reversal", "reversal_latency_sd"),
                   ("anticipation", "anticipation_lead_0.06"), ("anticipation", "anticipation_lead_0.12")]

# What each bundled model misses on the held-out protocols at the thresholds of docs/recovery.md (measured
# 2026-12-04).  default (generic recipe, seed 1 of 5, docs/emergence.md): the OSR's peak time does not track the
# period (slope -0.14), latency is monotonic but shifts 0 ms (the simulator 9 ms), no reversal burst (0.80;
# latency s.d. 98 ms) and the response lags the moving bar.  tuned: it was selected on the default protocols and
# loses the OSR, latency and reversal on other values (OSR ratio 1.56 and slope -0.14; latency not monotonic;
# reversal burst below 1.5 at 0.18 px/frame).
MISSES = {
    "default": {("osr", "osr_slope"), ("latency", "latency_shift"), ("reversal", "reversal_ratio"),
                ("reversal", "reversal_latency_sd"), ("anticipation", "anticipation_lead_0.06"),
                ("anticipation", "anticipation_lead_0.12")},
    "tuned": {("osr", "osr_ratio"), ("osr", "osr_slope"), ("latency", "latency_monotonic"),
              ("latency", "latency_shift"), ("reversal", "reversal_ratio")},
}


@pytest.mark.parametrize("name, phenomenon, check", [
    pytest.param(b.values[0], n, c, marks=list(b.marks) + (
        [pytest.mark.xfail(strict=True, reason=f"the bundled {b.values[0]} model misses it")]
        if (n, c) in MISSES[b.values[0]] else []))
    for b in BUNDLED for n, c in HELD_OUT_CHECKS])
def test_a_bundled_model_on_held_out_protocols_at_the_documented_thresholds(name, phenomenon, check):
    found = _judged(name, phenomenon)
    assert check in found, sorted(found)
    assert found[check].passed, str(found[check])


@pytest.mark.skipif(not rio.bundled_path("tuned").is_file(), reason="no bundled tuned model")
def test_the_tuned_recipes_selection_score_counts_what_the_report_finds():
    from retina.reduction import classify_channels

    model, sim = _pair("tuned")
    directions = recipe.directions(recipe.phenomena_report(model, sim))
    missed = [n for n, d in directions.items() if not d["cnn_shows_it"]]
    types = {c["type"] for c in classify_channels(model)}
    missed += [t for t in recipe.REQUIRED_TYPES if t not in types]
    assert recipe.phenomena_score(sim)(model, 0.5) == pytest.approx(0.5 - len(missed))


@pytest.mark.parametrize("name", BUNDLED)
def test_a_bundled_model_says_what_it_is(name):
    meta = load_model(name).metadata
    assert rio.BUNDLED_MODELS[name] in meta["description"]
    assert meta["recipe"] and meta["git_commit"] and meta["seed"] is not None and meta["simulator_params"]
    # each is judged against the calibration it was fitted to, named after its date
    from retina.insilico import simulator_name

    fitted_to = {"default": "calibration-2026-12-03", "tuned": "calibration-2026-11-23"}[name]
    assert simulator_name(simulator_of(load_model(name)).params) == fitted_to
