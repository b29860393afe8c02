"""Do the phenomena emerge? (retina.emergence, docs/emergence.md): judging several models, pooling them."""

import json

import numpy as np
import pytest

from retina import RetinaCNN
from retina import emergence as E
from retina.recovery import PARTS


def effects(**e):
    return {p: dict(effect=e.get(p, 0.0)) for p in PARTS}


def test_the_dominant_part_is_the_largest_change_with_its_sign():
    assert E.dominant(effects(ONs=-0.9, depression=0.4)) == "ONs-"
    assert E.dominant(effects(ONs=-0.3, A1=0.5)) == "A1+"
    assert E.dominant(effects(ONs=-0.1, A1=np.nan)) is None       # nothing reaches DOMINANT_MIN_EFFECT
    assert E.dominant(effects(OFF=-E.DOMINANT_MIN_EFFECT)) == "OFF-"


def row(emerges, dominant, score=1.0, null=0.0, recovered=True, sim_dominant="ONs-"):
    return dict(checks=[dict(name="c", value=1.0 if emerges else 3.0, low=0.0, high=2.0, passed=emerges)],
                emerges=emerges, simulator_passes=True,
                recovery=dict(score=score, null_level=null, recovered=recovered, fidelity=dict(reproduces=emerges),
                              verdict="v"),
                dominant=dominant, simulator_dominant=sim_dominant)


def assessments(rows):
    return [dict(model=dict(path=f"m{i}/model.h5", seed=i), fit=dict(natural=0.9, whitenoise=0.7),
                 phenomena=dict(osr=r)) for i, r in enumerate(rows)]


def test_the_pass_mark_needs_four_of_five_agreeing_recovered_against_a_low_null():
    good = [row(True, "ONs-") for _ in range(4)] + [row(False, None)]
    s = E.summarise(assessments(good))["phenomena"]["osr"]
    assert (s["emerges"], s["agree_with_simulator"], s["agree_with_each_other"], s["recovered"]) == (4, 4, 4, 4)
    assert s["pass_mark"] and s["checks_passed"] == {"c": 4}
    three = [row(True, "ONs-") for _ in range(3)] + [row(True, "OFF-"), row(False, None)]
    assert not E.summarise(assessments(three))["phenomena"]["osr"]["pass_mark"]
    high_null = [row(True, "ONs-", null=0.3) for _ in range(5)]
    assert not E.summarise(assessments(high_null))["phenomena"]["osr"]["pass_mark"]
    agree_wrong = [row(True, "OFF-") for _ in range(5)]            # they agree with each other, not the truth
    s = E.summarise(assessments(agree_wrong))["phenomena"]["osr"]
    assert s["agree_with_each_other"] == 5 and s["agree_with_simulator"] == 0 and not s["pass_mark"]
    none = E.summarise(assessments([row(False, None) for _ in range(5)]))
    assert none["phenomena"]["osr"]["emerges"] == 0 and not none["phenomena"]["osr"]["pass_mark"]
    assert none["fit"]["natural"]["mean"] == pytest.approx(0.9)
    md = E.report_markdown(assessments(good))
    assert "| osr | 4/5 | c 4/5 |" in md


def circuit_row(cnn, sim):
    r = row(True, E.dominant(effects(**cnn)))
    r["recovery"].update(cnn=cnn, simulator=sim)
    return r


def test_each_model_is_scored_against_every_circuit_it_could_have_come_from():
    """The counterfactual check of docs/emergence.md: a model whose mechanism follows its circuit scores higher
    against its own circuit's lesions than against another's, and one that does not, does not."""
    shipped = {**dict.fromkeys(PARTS, 0.0), "ONs": -0.93, "depression": 0.31}
    onf = {**dict.fromkeys(PARTS, 0.0), "ONf": -1.0, "A1": 1.45, "depression": -0.88}
    onf_like = {**dict.fromkeys(PARTS, 0.0), "ONf": -0.6, "A1": 0.9}
    ons_like = {**dict.fromkeys(PARTS, 0.0), "ONs": -0.8}
    runs = assessments([circuit_row(ons_like, shipped), circuit_row(onf_like, shipped),
                        circuit_row(onf_like, onf), circuit_row(ons_like, onf)])
    for a, circuit in zip(runs, ["shipped", "shipped", "osr-onf", "osr-onf"]):
        a["model"]["simulator"] = circuit
    c = E.against_circuits(runs)["osr"]
    assert c["circuits"] == ["shipped", "osr-onf"] and c["simulator_dominant"] == {"shipped": "ONs-",
                                                                                      "osr-onf": "A1+"}
    got = [(r["scores"]["shipped"]["score"], r["scores"]["osr-onf"]["score"], r["prefers_own"]) for r in c["rows"]]
    assert got == [(0.5, 0.0, True), (0.0, 2 / 3, False), (0.0, 2 / 3, True), (0.5, 0.0, False)]
    assert c["prefers_own"] == 2 and c["n_models"] == 4
    assert "2 of 4 models score higher against their own circuit" in E.report_markdown(runs)
    # one circuit: nothing to tell apart; a phenomenon a counterfactual does not claim is not compared
    assert E.against_circuits(runs[:2]) == {}
    for a in runs:
        a["phenomena"]["latency"] = a["phenomena"]["osr"]
    assert set(E.against_circuits(runs)) == {"osr"}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    model = RetinaCNN.random(2, seed=1, per_unit=False)
    model.metadata.update(cell_types='["OFF", "OFF"]', cell_positions="[[25, 21], [25, 29]]", seed=7)
    folder = tmp_path_factory.mktemp("emergence")
    path = folder / "m" / "model.h5"
    path.parent.mkdir()
    model.save(path)
    (path.parent / "report.json").write_text(json.dumps(dict(
        test_natural=dict(mean_corr=0.5), best_val_corr=0.4, best_epoch=2,
        epochs=[dict(epoch=1, val_loss=-1.0), dict(epoch=2, val_loss=-1.5)])))
    out = folder / "out"
    return path, out, E.emergence([path], out, names=["latency"], n_untrained=1)


def test_a_model_is_judged_on_held_out_protocols_beside_its_simulator(small_run):
    path, out, report = small_run
    a = report["models"][0]
    assert a["model"]["seed"] == 7 and a["fit"] == dict(natural=0.5, validation=0.4, validation_loss=-1.5)
    assert a["model"]["simulator"] == "shipped"
    assert report["summary"]["best_by_validation"] == str(path)
    r = a["phenomena"]["latency"]
    assert r["checks"] and r["emerges"] == all(c["passed"] for c in r["checks"])
    assert r["simulator_checks"] and [c["name"] for c in r["simulator_checks"]] == [c["name"] for c in r["checks"]]
    assert set(r["recovery"]["cnn"]) == set(PARTS) and r["simulator_dominant"] == "OFF-"
    assert (out / "emergence.md").exists() and json.loads((out / "emergence.json").read_text())["summary"]


def test_an_interrupted_judging_resumes_from_the_models_done(small_run, monkeypatch):
    path, out, report = small_run

    def fail(*a, **k):
        raise AssertionError("a model already judged was judged again")

    monkeypatch.setattr(E, "assess_model", fail)
    monkeypatch.setattr(E, "simulator_reference", fail)
    again = E.emergence([path], out, names=["latency"], n_untrained=1)
    assert again["models"] == json.loads(json.dumps(report["models"], default=float))


def test_the_command_line_reports_each_phenomenon(small_run, monkeypatch):
    from click.testing import CliRunner

    from retina.cli import main

    path, out, _ = small_run
    monkeypatch.setattr(E, "assess_model", lambda *a, **k: pytest.fail("not resumed"))
    res = CliRunner().invoke(main, ["emergence", str(path), "-o", str(out), "--phenomenon", "latency",
                                    "--untrained", "1"])
    assert res.exit_code == 0, res.output
    assert "latency: emerges in" in res.output and "pass mark" in res.output
    bad = CliRunner().invoke(main, ["emergence", str(out / "missing.h5"), "-o", str(out)])
    assert bad.exit_code != 0 and "missing.h5" in bad.output


@pytest.mark.parametrize("name", ["osr", "latency", "reversal", "anticipation"])
def test_the_simulator_meets_its_own_held_out_checks(name):
    """A held-out protocol is one on which the ground truth shows the phenomenon at the documented thresholds;
    otherwise no model could be asked to."""
    from retina import phenomena as P

    ph = P.get(name)
    res = ph.held_out_result()
    checks = ph.judge(res, res)
    assert checks and all(c.passed for c in checks), [str(c) for c in checks if not c.passed]
