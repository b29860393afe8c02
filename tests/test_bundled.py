"""The bundled default model against the claims of its recipe (retina/recipes/default.toml; docs/history.md).

Checked on stimuli it never saw: a fresh natural-like clip and white noise (new seeds) against the
noise-free rates of the simulator it was fitted to, and each phenomenon on its held-out protocol
(``Phenomenon.held_out``) at the thresholds of docs/recovery.md (``Phenomenon.judge``).  The recipe selected its
epochs on the default protocols, so those are not used to judge it; the checks it misses are listed
and expected to fail.
"""

import functools

import numpy as np
import pytest

import retina.io as rio
from retina import load_model
from retina.insilico import InSilicoRetina, simulator_of
from retina.stimuli import natural_movie, white_noise
from retina.train import assess as recipe

pytestmark = pytest.mark.skipif(not rio.bundled_path("default").is_file(), reason="no bundled model")


@pytest.fixture(scope="module")
def pair():
    model = load_model("default")
    sim = InSilicoRetina(simulator_of(model).params, positions=recipe.cell_positions())   # the one it was fitted to
    return model, sim


def _mean_corr(model, sim, movie, skip=100):
    truth = sim.rates(movie)[skip:]
    pred = model.rates(movie)[skip:]   # contrast units, converted with the model's norm_stats
    return np.mean([np.corrcoef(truth[:, j], pred[:, j])[0, 1] for j in range(truth.shape[1])])


@pytest.mark.parametrize("kind, threshold", [("natural", 0.8), ("whitenoise", 0.8)])   # the recipe's criterion: >= 0.8
def test_bundled_model_predicts_held_out_stimuli(pair, kind, threshold):
    model, sim = pair
    assert model.n_cells == sim.n_cells
    n = 3000   # 30 s, a seed no training or test stream used
    if kind == "natural":
        movie = natural_movie(n, sim.frame_shape, seed=98765).movie
    else:
        movie = white_noise(n, sim.frame_shape, contrast=0.35, binary=True, seed=98765).movie
    # the recipe reports 0.893 / 0.816 on its 30 test clips (this clip: 0.903 / 0.830)
    assert _mean_corr(model, sim, movie) > threshold


@pytest.fixture(scope="module")
def directions(pair):
    return recipe.directions(recipe.phenomena_report(*pair))


@functools.cache
def _judged(name):
    """The held-out protocol (Phenomenon.held_out: values no default, test or training stage uses) on the bundled
    model and the simulator it was fitted to, judged at the thresholds of docs/recovery.md (Phenomenon.judge)."""
    from retina import phenomena as P

    return {c.name: c for c in P.get(name).judge_model(load_model("default"))}


# The bundled model was tuned on the phenomenon protocols (its recipe selects epochs on them); on held-out protocol
# values it misses these checks at the thresholds of docs/recovery.md (measured 2026-12-03: OSR ratio 1.56 and
# slope -0.14; latency not monotonic, shift 8 ms against the simulator's 2 ms; reversal burst 1.00, latency s.d.
# 35 ms).  They are reported as failing, not hidden by a lower bar.
BUNDLED_FAILS = {("osr", "osr_ratio"), ("osr", "osr_slope"), ("latency", "latency_monotonic"),
                 ("latency", "latency_shift"), ("reversal", "reversal_ratio"), ("reversal", "reversal_latency_sd")}
HELD_OUT_CHECKS = [("osr", "osr_ratio"), ("osr", "osr_slope"), ("latency", "latency_monotonic"),
                   ("latency", "latency_shift"), ("reversal", "reversal_ratio"), ("reversal", "reversal_latency_sd"),
                   ("anticipation", "anticipation_lead_0.06"), ("anticipation", "anticipation_lead_0.12")]


@pytest.mark.parametrize("name, check", [
    pytest.param(n, c, marks=pytest.mark.xfail(strict=True, reason="the protocol-tuned bundled model misses it"))
    if (n, c) in BUNDLED_FAILS else (n, c) for n, c in HELD_OUT_CHECKS])
def test_bundled_model_on_held_out_protocols_at_the_documented_thresholds(name, check):
    found = _judged(name)
    assert check in found, sorted(found)
    assert found[check].passed, str(found[check])


def test_the_recipes_selection_score_counts_what_the_report_finds(pair, directions):
    model, sim = pair
    from retina.reduction import classify_channels

    missed = [n for n, d in directions.items() if not d["cnn_shows_it"]]
    types = {c["type"] for c in classify_channels(model)}
    missed += [t for t in recipe.REQUIRED_TYPES if t not in types]
    assert recipe.phenomena_score(sim)(model, 0.5) == pytest.approx(0.5 - len(missed))
