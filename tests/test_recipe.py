"""The bundled model's recipe (scripts/train_default.py): its fine-tuning stage syntax and event weights."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from retina import stimuli

_spec = importlib.util.spec_from_file_location(
    "train_default", Path(__file__).resolve().parents[1] / "scripts" / "train_default.py")
recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe)


def test_positional_stage_keeps_its_meaning():
    st = recipe.parse_stage("30:10:0.2:0.1:0.2")
    assert {k: st[k] for k in ("wn", "epochs", "fullfield", "bars", "motion", "slowmotion", "flashes")} == dict(
        wn=30.0, epochs=10, fullfield=0.2, bars=0.1, motion=0.2, slowmotion=0.0, flashes=0.0)
    assert all(st[f"{k}_loss"] == 1.0 for k in recipe.STREAMS)
    assert recipe.parse_stage("10:8")["fullfield"] == 0.0


def test_key_value_stage():
    st = recipe.parse_stage("wn=30,epochs=6,fullfield=0.25,slowmotion=0.3,slowmotion_loss=3")
    assert (st["wn"], st["epochs"], st["fullfield"], st["slowmotion"], st["slowmotion_loss"]) == (30, 6, 0.25, 0.3, 3)
    assert st["bars"] == 0.0 and isinstance(st["epochs"], int) and st["freeze"] == ()
    assert recipe.parse_stage("epochs=4,flashes=0.3,freeze=layer1+b3")["freeze"] == ("layer1", "b3")
    st = recipe.parse_stage("epochs=4,wn_share=0.7,lr=5e-4,reversal_boost=20")
    assert (st["wn_share"], st["lr"], st["reversal_boost"]) == (0.7, 5e-4, 20.0)
    assert recipe.parse_stage("10:8")["wn_share"] == -1   # --noise-share
    assert recipe.parse_stage("epochs=3,noise=0.01")["noise"] == 0.01


@pytest.mark.parametrize("text, match", [("30", "expected"), ("a:b", "expected"), ("wn=1,speed=3", "unknown key"),
                                         ("10:0", "epochs"), ("epochs=2,fullfield=0.6,motion=0.5", "shares"),
                                         ("epochs=2,freeze=conv1", "freeze: unknown"),
                                         ("epochs=2,reversal_boost=0", "reversal_boost"),
                                         ("epochs=2,wn_share=1.5", "wn_share"), ("epochs=2,lr=0", "lr > 0"),
                                         ("epochs=2,noise=-0.5", "noise >= 0")])
def test_bad_stages_are_refused(text, match):
    with pytest.raises(SystemExit, match=match):
        recipe.parse_stage(text)


@pytest.mark.parametrize("seed", [3, 4])
def test_bar_reversals_are_read_from_the_movie(seed):
    st = stimuli.bar_motion(12000, p_reverse=1.0, speeds=(0.02, 0.6), seed=seed)
    centre, vel = st.events["center"], st.events["velocity"]
    inside = ~np.isnan(centre)
    truth = np.flatnonzero((np.sign(vel[1:]) * np.sign(vel[:-1]) < 0) & inside[1:] & inside[:-1]) + 1
    movie = np.round((st.movie + 1) * 127.5).astype(np.uint8)   # as stored: 8-bit frames
    found = recipe.bar_reversals(movie)
    assert len(truth) >= 10
    # every turn found is a true one, within a frame; at most one true turn in six is missed (turns at the edge)
    assert all(np.abs(truth - t).min() <= 1 for t in found)
    assert len(found) >= len(truth) - len(truth) // 6
    w = recipe.reversal_weights(movie, 7.0)
    assert set(np.unique(w)) == {1.0, 7.0}
    assert (w[found[0]:found[0] + recipe.REVERSAL_FRAMES] == 7.0).all() and w[found[0] - 1] == 1.0
    # bars that never turn: nothing found
    straight = stimuli.bar_motion(6000, p_reverse=0.0, seed=seed).movie
    assert len(recipe.bar_reversals(straight)) == 0


def test_flash_onsets_and_weights_are_read_from_the_movie():
    st = stimuli.flash_sequence(6000, seed=2)
    frames, strength = np.asarray(st.events["flash_frames"]), np.abs(st.events["intensity"])
    movie = np.round((st.movie + 1) * 127.5).astype(np.uint8)
    onsets, rel = recipe.flash_onsets(movie)
    np.testing.assert_array_equal(onsets, frames)
    np.testing.assert_allclose(rel, strength / strength.max(), atol=0.01)   # 8-bit rounding
    w = recipe.flash_weights(movie, 30.0)
    assert w.min() == 1.0 and w.max() == 30.0
    weakest, strongest = onsets[np.argmin(rel)], onsets[np.argmax(rel)]
    assert w[weakest] == 30.0 and w[strongest] == pytest.approx(1.0, abs=0.05)
    assert (w[:frames[0]] == 1.0).all()
