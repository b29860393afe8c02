"""Recipes as data: the bundled recipe's file, its checks, event weights from stored events, a tiny run."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from retina import RetinaCNN, stimuli
from retina.datasets import frame_events
from retina.io import load_model
from retina.train.recipe import (
    FLASH_FRAMES,
    REVERSAL_FRAMES,
    flash_weights,
    load_recipe,
    parse_recipe,
    reversal_weights,
    run,
)


def test_the_tuned_recipe_reads_and_labels_its_selection():
    r = load_recipe("tuned")
    assert r.name == "tuned"
    assert list(r.streams)[:2] == ["natural", "whitenoise"] and len(r.stages) == 6
    assert [s.select for s in r.stages] == ["validation"] * 3 + ["phenomena"] * 3
    assert r.streams["slowmotion"].options == {"speeds": [0.02, 0.25], "contrasts": [0.5, 1.0]}
    assert "selected, not predicted" in r.text    # the recipe says so where it is read
    with pytest.raises(FileNotFoundError, match="'tuned'"):
        load_recipe("default")


def test_the_generic_recipe_has_no_protocol_shaped_stream_weight_or_selection():
    """The rule of docs/recipes.md for a recipe that claims the phenomena emerge (the bundled default model's):
    generic stimuli only, no event-tied loss weights, epochs chosen by validation alone."""
    r = load_recipe("generic")
    assert {s.kind for s in r.streams.values()} == {"naturalscene", "whitenoise", "fullfield", "bars"}
    assert all(s.select == "validation" for s in r.stages)
    assert all(s.flash_boost == 1 and s.reversal_boost == 1 for s in r.stages)


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "bench" / "emergence").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_the_emergence_experiments_change_one_thing_of_the_generic_recipe(path):
    """docs/emergence.md's experiments: the generic recipe's stages, selection and stimulus classes, with only the
    architecture, the streams' lengths or the simulator changed."""
    r, g = load_recipe(path), load_recipe("generic")
    assert r.stages == g.stages and r.val_share == g.val_share and r.response == g.response
    assert {k: (s.kind, s.seed) for k, s in r.streams.items()} == {k: (s.kind, s.seed) for k, s in g.streams.items()}
    changed = [bool(r.model), any(r.streams[k].minutes != g.streams[k].minutes for k in g.streams),
               r.simulator != g.simulator]
    assert sum(changed) == 1, changed


@pytest.mark.parametrize("name, init, channels, frozen", [("planted", "planted", 4, ("w1",)),
                                                           ("counterparts", "counterparts", 5, ("w1", "g1", "b1"))])
def test_the_planted_controls_are_the_generic_recipe_with_layer_1_planted_and_frozen(name, init, channels, frozen):
    """bench/recovery/planted.toml and counterparts.toml: the recovery benchmark's trained positive controls
    (docs/recovery.md)."""
    from dataclasses import replace

    r = load_recipe(Path(__file__).parent.parent / "bench" / "recovery" / f"{name}.toml")
    g = load_recipe("generic")
    assert r.model == {"channels": (channels, 8)} and r.streams == g.streams and r.simulator == g.simulator
    assert [s.init for s in r.stages] == [init, "previous"] and all(s.freeze == frozen for s in r.stages)
    assert [replace(s, init=t.init, freeze=()) for s, t in zip(r.stages, g.stages)] == list(g.stages)


def _tiny(**stage2):
    return {
        "name": "tiny", "seed": 0, "response": "rate", "val_share": 0.1,
        "streams": {
            "natural": {"kind": "naturalscene", "minutes": 0.5, "seed": 0, "test_clips": 1, "clip_seconds": 2,
                        "repeats": 2},
            "whitenoise": {"kind": "whitenoise", "minutes": 0.5, "seed": 1, "test_clips": 1, "clip_seconds": 2,
                           "repeats": 2},
            "flashes": {"kind": "flashes", "minutes": 0.4, "seed": 2, "test_clips": 1, "clip_seconds": 2,
                        "repeats": 2},
        },
        "stages": [
            {"name": "base", "epochs": 1, "windows": 500, "lr": 2e-3, "seed": 0, "validation": "pooled",
             "init": "none"},
            {"name": "flashes", "epochs": 1, "windows": 500, "lr": 1e-3, "seed": 1, "shares": {"flashes": 0.3},
             "loss": {"whitenoise": 3, "flashes": 2}, "flash_boost": 5, **stage2},
        ],
    }


@pytest.mark.parametrize("change, match", [
    (lambda d: d["streams"].pop("whitenoise"), "required"),
    (lambda d: d["streams"]["flashes"].update(kind="flickers"), "kind must be one of"),
    (lambda d: d["streams"]["flashes"].update(colour=1), "unknown keys"),
    (lambda d: d["stages"][1].update(shares={"bars": 0.2}), "does not declare"),
    (lambda d: d["stages"][1].update(shares={"flashes": 1.0}), "summing to less than 1"),
    (lambda d: d["stages"][1].update(select="luck"), "select must be one of"),
    (lambda d: d["stages"][1].update(speed=3), "unknown keys"),
    (lambda d: d.update(val_share=0.7), "val_share"),
    (lambda d: d.update(model={"depth": 3}), r"\[model\] has unknown keys"),
    (lambda d: d.update(model={"history": 0}), "history must be"),
    (lambda d: d.update(simulator="osr-magic"), "simulator must be .*'osr-onf'.* parameter file"),
    (lambda d: d.update(simulator="no-such-file.json"), "simulator: cannot read the parameter file"),
])
def test_bad_recipes_are_refused_by_name(change, match):
    d = _tiny()
    change(d)
    with pytest.raises(ValueError, match=match):
        parse_recipe(d, source="tiny")


@pytest.mark.parametrize("seed", [3, 4])
def test_reversal_weights_follow_the_stored_turns(seed):
    st = stimuli.bar_motion(12000, p_reverse=1.0, speeds=(0.02, 0.6), seed=seed)
    ev = frame_events("motion", st)
    centre, vel = st.events["center"], st.events["velocity"]
    inside = ~np.isnan(centre)
    truth = np.flatnonzero((np.sign(vel[1:]) * np.sign(vel[:-1]) < 0) & inside[1:] & inside[:-1]) + 1
    assert len(truth) >= 10 and np.array_equal(np.flatnonzero(ev["reversal"]), truth)
    w = reversal_weights(ev, 7.0, len(st.movie))
    assert set(np.unique(w)) == {1.0, 7.0}
    assert (w[truth[0]:truth[0] + REVERSAL_FRAMES] == 7.0).all() and w[truth[0] - 1] == 1.0


def test_flash_weights_follow_the_stored_contrasts():
    st = stimuli.flash_sequence(6000, seed=5)
    ev = frame_events("flashes", st)
    onsets, c = st.events["flash_frames"], np.abs(st.events["intensity"])
    w = flash_weights(ev, 30.0, len(st.movie))
    rel = c / c.max()
    for t, r in zip(onsets, rel):
        assert w[t] == pytest.approx(min(30.0, 1 / r ** 2))
        assert (w[t:t + FLASH_FRAMES] >= 1).all()
    assert w[onsets[0] - 1] == 1.0


def test_a_tiny_recipe_runs_end_to_end_and_records_itself(tmp_path, monkeypatch):
    recipe = parse_recipe(_tiny(), text="# the tiny recipe's text\n", source="tiny")
    model, report = run(recipe, tmp_path, progress=False)
    back = load_model(tmp_path / "model.h5")
    assert back.content_hash() == model.content_hash()
    meta = back.metadata
    assert meta["recipe"] == "# the tiny recipe's text\n" and meta["recipe_name"] == "tiny"
    assert meta["retina_version"] and meta["git_commit"]
    assert {"test_natural", "test_whitenoise", "test_flashes", "directions", "latency_variants"} <= set(report)
    assert (tmp_path / "report.md").read_text().startswith("# Report of the recipe 'tiny'")
    with h5py.File(tmp_path / "flashes.h5") as f:   # the datasets carry their events
        assert int(f["train/events/flash_onset"][()].sum()) > 3
    again, _ = run(recipe, tmp_path, progress=False)   # every step resumes: nothing left to do, same model
    assert again.content_hash() == model.content_hash()
    # another seed on the same data: a different model, and the datasets are shared, not simulated again
    other, _ = run(recipe, tmp_path / "s1", progress=False, seed=1, data_dir=tmp_path)
    assert other.content_hash() != model.content_hash() and str(other.metadata["seed"]) == "1"
    assert not (tmp_path / "s1" / "natural.h5").exists()
    # the architecture is part of the recipe ([model]): a shorter history and other channel counts
    small = parse_recipe({**_tiny(), "model": {"history": 20, "channels": [4, 6]}}, source="tiny-model")
    arch, _ = run(small, tmp_path / "m", progress=False, data_dir=tmp_path)
    assert arch.history == 20 and arch.w1.shape[:2] == (4, 20) and arch.w2.shape[:2] == (6, 4)
    # the planted control: layer 1 is the simulator's pathway filters in z-scored units, kept through the stages
    from retina.insilico import InSilicoRetina
    from retina.recovery import planted_filters

    planted = _tiny(freeze=["w1"])
    planted["stages"][0].update(init="planted", freeze=["w1"])
    with pytest.raises(ValueError, match="channels must start with 4; got \\[8, 8\\]"):
        run(parse_recipe(planted, source="tiny-planted"), tmp_path / "p8", progress=False, data_dir=tmp_path)
    assert not (tmp_path / "p8" / "train.ckpt").exists()
    pl, _ = run(parse_recipe({**planted, "model": {"channels": [4, 6]}}, source="tiny-planted"), tmp_path / "p",
                progress=False, data_dir=tmp_path)
    w1, _ = planted_filters(InSilicoRetina(), history=pl.history, kernel_size=pl.w1.shape[-1])
    np.testing.assert_allclose(pl.w1, w1 * pl.norm_stats["std"], rtol=1e-6, atol=1e-9)
    # init = "counterparts": layer 1 is each part's best layer-1 channel (the search, tested in test_recovery,
    # replaced here by known filters), each of unit norm, in z-scored units
    import retina.recovery as rec

    fake = {p: dict(w1=(i + 1.0) * np.ones((pl.history, pl.w1.shape[-1], pl.w1.shape[-1])), shift=0.0)
            for i, p in enumerate(rec.PARTS)}
    monkeypatch.setattr(rec, "layer1_counterparts", lambda *a, **k: fake)
    counter = _tiny(freeze=["w1"])
    counter["stages"][0].update(init="counterparts", freeze=["w1"])
    with pytest.raises(ValueError, match="init = \"counterparts\" .* must start with 5; got \\[4, 6\\]"):
        run(parse_recipe({**counter, "model": {"channels": [4, 6]}}, source="tiny-c"), tmp_path / "c4",
            progress=False, data_dir=tmp_path)
    cm, _ = run(parse_recipe({**counter, "model": {"channels": [5, 6]}}, source="tiny-c"), tmp_path / "c",
                progress=False, data_dir=tmp_path)
    unit = np.ones(cm.w1.shape[1:]) / np.sqrt(cm.w1[0].size)
    np.testing.assert_allclose(cm.w1, unit[None].repeat(5, 0) * cm.norm_stats["std"], rtol=1e-6, atol=1e-9)
    # init = "fitted": layer 1 is the planted control's seven channels (fitted in test_recovery; known filters
    # here), each of unit norm
    fake_fit = RetinaCNN.random(1, seed=0, channels=(7, 1), history=cm.history, kernel_sizes=(cm.w1.shape[-1], 1),
                                per_unit=False)
    fake_fit.metadata["planted_channels"] = "OFF,ONf,ONs,A1,dep-OFF,dep-ONf,dep-ONs"
    monkeypatch.setattr(rec, "planted_model", lambda *a, **k: fake_fit)
    fitted = _tiny(freeze=["w1"])
    fitted["stages"][0].update(init="fitted", freeze=["w1"])
    with pytest.raises(ValueError, match="init = \"fitted\" .* must start with 7; got \\[5, 6\\]"):
        run(parse_recipe({**fitted, "model": {"channels": [5, 6]}}, source="tiny-f"), tmp_path / "f5",
            progress=False, data_dir=tmp_path)
    fm, _ = run(parse_recipe({**fitted, "model": {"channels": [7, 6]}}, source="tiny-f"), tmp_path / "f",
                progress=False, data_dir=tmp_path)
    w = np.asarray(fake_fit.w1, np.float64)
    w = w / np.sqrt((w ** 2).sum(axis=(1, 2, 3)))[:, None, None, None]
    np.testing.assert_allclose(fm.w1, w * fm.norm_stats["std"], rtol=1e-5, atol=1e-8)
    # a finished dataset made by another simulator is refused, not silently reused
    with h5py.File(tmp_path / "flashes.h5", "r+") as f:
        settings = json.loads(f.attrs["settings"])
        settings["params"]["gain"] = 9.0
        f.attrs["settings"] = json.dumps(settings)
    with pytest.raises(ValueError, match="other in-silico parameters"):
        run(recipe, tmp_path / "s2", progress=False, data_dir=tmp_path)
    # a counterfactual circuit makes the data and is recorded as the model's simulator (its own data: the
    # shared datasets were made by the shipped simulator and are refused)
    from retina.insilico import counterfactual, simulator_of

    cf = parse_recipe({**_tiny(), "simulator": "osr-onf"}, source="tiny-cf")
    with pytest.raises(ValueError, match="other in-silico parameters than the recipe's simulator"):
        run(cf, tmp_path / "cf", progress=False, max_stages=1, data_dir=tmp_path)
    cf_model, _ = run(cf, tmp_path / "cf", progress=False, max_stages=1)
    assert simulator_of(cf_model).params == counterfactual("osr-onf")
    # or a parameter file, named relative to the recipe file
    (tmp_path / "rc").mkdir()
    counterfactual("osr-onf").to_json(tmp_path / "rc" / "variant.json")
    d = {**_tiny(), "simulator": "variant.json"}
    (tmp_path / "rc" / "r.toml").write_text("")
    fr = parse_recipe(d, source=str(tmp_path / "rc" / "r.toml"))
    assert fr.simulator == str((tmp_path / "rc" / "variant.json").resolve())
    fr_model, _ = run(fr, tmp_path / "cf", progress=False, max_stages=1)   # the same parameters: data reused
    assert simulator_of(fr_model).params == counterfactual("osr-onf")


def test_an_earlier_calibration_is_named_in_a_recipe_and_in_a_model():
    """Earlier shipped calibrations stay available by date (retina.insilico.CALIBRATIONS): a recipe may simulate
    one again, and a model recording one is named after it, not by a hash."""
    from retina.insilico import CALIBRATIONS, calibration, simulator_name
    from retina.train.recipe import simulator_params

    for date in CALIBRATIONS:
        r = parse_recipe({**_tiny(), "simulator": f"calibration-{date}"}, source="tiny-earlier")
        assert simulator_params(r.simulator) == calibration(date)
        assert simulator_name(calibration(date)) == f"calibration-{date}"
    assert simulator_name(calibration("shipped")) == "shipped"
    with pytest.raises(ValueError, match="calibration must be 'shipped' or one of"):
        calibration("1999-01-01")
    with pytest.raises(ValueError, match="an earlier calibration"):
        parse_recipe({**_tiny(), "simulator": "calibration-1999-01-01"}, source="tiny-earlier")


def test_recipe_command_names_a_missing_recipe(tmp_path):
    from click.testing import CliRunner

    from retina.cli import main

    res = CliRunner().invoke(main, ["recipe", str(tmp_path / "nope.toml"), "-o", str(tmp_path / "out")])
    assert res.exit_code != 0 and "no recipe file" in res.output
    assert "RECIPE" in CliRunner().invoke(main, ["recipe", "--help"]).output


@pytest.mark.parametrize("args, match", [
    (["--workers", "2"], "give the seeds with --seeds"),
    (["--seeds", "0,1", "--seed", "3"], "either --seed"),
    (["--seeds", "1,1"], "seeds must be distinct"),
    (["--seeds", "0,x"], "comma-separated integers"),
])
def test_recipe_command_refuses_unclear_seed_options(tmp_path, args, match):
    from click.testing import CliRunner

    from retina.cli import main

    res = CliRunner().invoke(main, ["recipe", "generic", "-o", str(tmp_path / "out"), "-q", *args])
    assert res.exit_code != 0 and match in res.output
    assert not (tmp_path / "out" / "data").exists()          # refused before any simulation


def test_planted_thresholds_survive_the_layer1_batch_norm():
    """init = "counterparts" sets g1 and b1 so that, at the statistics of the sample, the batch norm of the
    z-scored correlation is the contrast-unit filter's correlation minus its threshold."""
    from retina.model import RetinaCNN
    from retina.train import TrainConfig
    from retina.train.recipe import _threshold_norm

    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((2, 5, 5, 5))
    cuts = np.array([0.3, -0.2])
    stats = {"mean": 0.1, "std": 0.5}
    x = 0.1 + 0.5 * rng.standard_normal((60, 12, 12))          # contrast units
    arch = TrainConfig(history=5, channels=(2, 1), kernel_sizes=(5, 3)).validate()
    bn = _threshold_norm(w1, cuts, stats, (x - stats["mean"]) / stats["std"], arch)
    z = RetinaCNN(w1 * stats["std"], np.ones((2, 1, 1)), np.zeros((2, 1, 1)), np.zeros((1, 2, 3, 3)),
                  np.ones((1, 1, 1)), np.zeros((1, 1, 1)), np.zeros((1, 36)), np.ones(1), np.zeros(1),
                  frame_shape=(12, 12)).layer1((x - stats["mean"]) / stats["std"], dtype=np.float64)
    mu, sd = z.mean(0), z.std(0)
    normed = bn["g1"] * (z - mu) / sd + bn["b1"]
    direct = RetinaCNN(w1, np.ones((2, 1, 1)), np.zeros((2, 1, 1)), np.zeros((1, 2, 3, 3)), np.ones((1, 1, 1)),
                       np.zeros((1, 1, 1)), np.zeros((1, 36)), np.ones(1), np.zeros(1),
                       frame_shape=(12, 12)).layer1(x, dtype=np.float64) - cuts[None, :, None, None]
    np.testing.assert_allclose(normed, direct, rtol=1e-4, atol=1e-4)


def test_init_planted_model_starts_training_at_the_planted_control():
    """``init = "planted-model"``: layer 1 by the planted thresholds' batch norm, layers 2-3 by
    ``_planted_layers23``.  On the batch whose statistics set the batch norms, the trainer's forward pass (batch
    statistics) gives the planted control's rates (float32)."""
    from retina import stimuli as S
    from retina.insilico import InSilicoRetina
    from retina.train import TrainConfig
    from retina.train.loss import loss_and_grads
    from retina.train.recipe import _planted_layer1, _planted_layers23, _threshold_norm

    sim = InSilicoRetina()
    arch = TrainConfig(channels=(7, 4), history=80).validate()
    w1, names, cuts, norm, pm = _planted_layer1("planted-model", sim, arch)
    assert len(names) == 7 and pm is not None and pm.w2.shape[0] == 4
    movie = np.concatenate([S.natural_movie(300, (50, 50), seed=5).movie,
                            S.white_noise(300, (50, 50), contrast=0.35, binary=True, check=2, hold=3, seed=6).movie])
    stats = {"mean": float(movie.mean()), "std": float(movie.std())}
    z = ((movie - stats["mean"]) / stats["std"]).astype(np.float32)
    params = {"w1": (w1 * stats["std"]).astype(np.float32), **_threshold_norm(w1, cuts, stats, z, arch),
              **_planted_layers23(pm, norm, z, stats, arch.bn_eps)}
    _, _, out = loss_and_grads(params, [z], np.zeros((len(z) - 79, sim.n_cells)), arch, want_grads=False)
    want = np.asarray(pm.predict(movie.astype(np.float64), dtype=np.float64), np.float64)
    assert out["rates"].shape == want.shape
    np.testing.assert_allclose(out["rates"], want, rtol=2e-3, atol=2e-3 * want.max())
    _, _, _, _, none = _planted_layer1("fitted", sim, arch)
    assert none is None
