"""The main job end to end on a small setting: results file, figures, summary, ground truth."""

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from retina import RetinaCNN
from retina.cli import main
from retina.explain import cnn_shares, explain


def simulated_metadata(n):
    """The cell metadata a model trained on the in-silico retina carries (what makes it comparable with it)."""
    import json

    from retina.insilico import InSilicoRetina

    cells = InSilicoRetina().cells
    pick = [cells[0], cells[len(cells) // 2], cells[1]][:n]
    return {"cell_types": json.dumps([c.type for c in pick]), "cell_positions": json.dumps([[c.y, c.x] for c in pick])}


def test_explain_writes_results_figures_and_summary(tmp_path):
    model = RetinaCNN.random(3, seed=0, per_unit=False)
    model.metadata.update(simulated_metadata(3))
    report = explain(model, tmp_path, phenomena=("osr", "reversal"), n_steps=8, progress=False, n_untrained=1)
    for name in ("osr", "reversal"):
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
        e = report[name]
        assert abs(sum(e["cnn_type_shares"].values()) - 1.0) < 1e-9
        assert abs(sum(e["truth"]["shares"].values()) - 1.0) < 1e-9
        assert all(isinstance(v, bool) for v in e["criteria"].values())
        assert any("ablating" in k for k in e["criteria"])
        # the ground-truth verdict: functional matches, effects per part, the score and its nulls
        r = e["recovery"]
        assert [m["channel"] for m in r["matches"]] == list(range(8))
        assert set(r["simulator"]) == set(r["cnn"]) == {"OFF", "ONf", "ONs", "A1", "depression"}
        assert 1 <= len(r["null_permutation"]) <= 119 and len(r["null_untrained"]) == 1
        assert r["verdict"] and isinstance(r["recovered"], bool) and isinstance(r["decisive"], bool)
        assert 0.0 <= r["power"] <= 1.0 and (r["decisive"] or r["power"] == 0.0)
        assert 0.0 <= e["reduced_key"]["fraction"] or not np.isfinite(e["reduced_key"]["fraction"])
    assert report["_overall"]["phenomena"] == [n for n in ("osr", "reversal")
                                               if report[n]["recovery"]["fidelity"]["reproduces"]]
    text = (tmp_path / "summary.txt").read_text()
    assert "osr" in text and "reversal" in text and "verdict" in text and "nulls: label permutations" in text
    assert text.startswith("mechanism recovery over the reproduced phenomena:")
    assert "power: near-copies of the truth" in text
    with h5py.File(tmp_path / "results.h5") as f:
        c = f["osr/condition00"]
        assert c["pooled_attribution"].shape[-1] == 8 and c["response"].ndim == 2
        assert c["channel_map"].shape[0] == len(c["important_channel"])
        assert f["reversal/condition00/pooled_attribution"].shape[-2:] == (8, 36)
        # the report is data: labelled datasets, not a JSON attribute
        assert f.attrs["format"] == "retina-explain" and f.attrs["schema_version"] == 2
        shares = dict(zip(f["osr/truth/source"].asstr()[()], f["osr/truth/share"][()]))
        assert shares == pytest.approx(report["osr"]["truth"]["shares"])
        passed = dict(zip(f["osr/criterion"].asstr()[()], f["osr/criterion_passed"][()].astype(bool)))
        assert passed == report["osr"]["criteria"]
        assert f["osr/measures/osr_amplitude"][()] == pytest.approx(report["osr"]["measures"]["osr_amplitude"])
        rec = f["osr/recovery"]
        assert list(rec["part"].asstr()[()]) == list(report["osr"]["recovery"]["simulator"])
        assert rec["score"][()] == pytest.approx(report["osr"]["recovery"]["score"], nan_ok=True)
        assert rec["power"][()] == pytest.approx(report["osr"]["recovery"]["power"])
        assert f["osr/fidelity/window_corr"][()] == pytest.approx(report["osr"]["recovery"]["fidelity"]["window_corr"])
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    cond = xr.open_dataset(tmp_path / "results.h5", group="reversal/condition00", engine="h5netcdf", phony_dims="sort")
    assert cond["response"].dims == ("time", "cell") and cond["time"].attrs["units"] == "ms"
    assert cond["pooled_attribution"].dims == ("attributed_time", "output", "channel", "x")
    top = xr.open_dataset(tmp_path / "results.h5", group="osr", engine="h5netcdf", phony_dims="sort")
    assert top["period"].dims == ("condition",) and top["criterion_passed"].dims == ("criterion",)
    truth = xr.open_dataset(tmp_path / "results.h5", group="osr/truth", engine="h5netcdf", phony_dims="sort")
    assert truth["share"].dims == ("source",) and list(truth["source"].values) == ["OFF", "ONf", "ONs", "A1"]


def test_no_ground_truth_for_a_model_not_fitted_to_the_simulator(tmp_path):
    model = RetinaCNN.random(3, seed=0, per_unit=False)
    report = explain(model, tmp_path, phenomena=("latency",), n_steps=4, figures=False)
    assert "truth" not in report["latency"] and "recovery" not in report["latency"]
    text = (tmp_path / "summary.txt").read_text()
    assert "no ground truth: the model was not trained on the in-silico retina" in text


def test_simulator_truth_for_the_osr_is_the_slow_on_pathway(tmp_path):
    from retina.explain import ground_truth

    gt = ground_truth("osr")
    assert max(gt["shares"], key=gt["shares"].get) == "ONs"
    assert gt["lesions"]["ONs"]["change"] < 0


def test_cnn_shares_sum_to_one_per_phenomenon():
    from retina import phenomena as P

    res = P.latency(RetinaCNN.random(2, seed=1, per_unit=False), intensities=(-0.5, -1.0), n_steps=8,
                    min_rate=0.0)   # a random CNN answers with a few Hz
    shares = cnn_shares(res)
    assert abs(sum(shares.values()) - 1.0) < 1e-9 and all(v >= 0 for v in shares.values())
    assert np.isfinite(res.measures["peak_delta_ms"])
    # the inhibitory layer-2 search ran; where it found channels, the ablated network was measured
    assert all(d["share"] > 0 and d["conditions"] >= 1 for d in res.inhibitory)
    assert len(res.ablated_measures) == (2 if res.inhibitory else 0)


def test_explain_command(tmp_path):
    res = CliRunner().invoke(main, ["explain", "random", "-o", str(tmp_path / "out"), "--phenomenon", "latency",
                                    "--steps", "5", "--no-truth", "--untrained", "0", "-q"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "latency.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "summary.txt").exists()


def test_explain_planted_runs_the_positive_control(tmp_path):
    """`retina explain planted`: the recovery benchmark's positive control in one command (docs/recovery.md)."""
    res = CliRunner().invoke(main, ["explain", "planted", "-o", str(tmp_path / "out"), "--phenomenon",
                                    "osr", "--steps", "5", "--untrained", "1", "--no-figures", "-q"])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "out" / "summary.txt").read_text()
    assert text.startswith("model: the planted positive control")
    assert "channels by function (R^2; downstream sign; scale): 0->OFF (" in text
    for frag in ("1->ONf (", "2->ONs (", "3->A1 (", "4->depression ("):
        assert frag in text, frag
    assert "RECOVERED" in text                       # the OSR's mechanism, planted, is recovered


def test_bar_protocols_record_the_most_populated_row():
    """docs/phenomena.md: the bar protocols record a row of cells; a model knowing its cells' positions is read
    out on its most populated row (here y = 25: four cells against two at y = 17)."""
    from retina import phenomena as P
    from retina.insilico import Cell

    class Recorded:
        frame_shape = (50, 50)
        cells = [Cell(0, "OFF", 17.0, 20.0), Cell(1, "OFF", 17.0, 30.0), Cell(2, "ON", 25.0, 22.0)] + [
            Cell(3 + k, "OFF", 25.0, 16.0 + 5 * k) for k in range(4)]
        n_cells = len(cells)

        def cells_of(self, t):
            return np.array([c.index for c in self.cells if c.type == t])

        def rates(self, movie):  # a cell that fires when the bar darkens its column
            return np.stack([np.clip(-movie[:, 25, int(c.x)], 0, None) * 20 + 1 for c in self.cells], axis=1)

    rev = P.reversal(Recorded(), flips=(25,), explain=False)
    np.testing.assert_array_equal(rev.cells, [3, 4, 5, 6])
    ant = P.anticipation(Recorded(), speeds=(0.2,), flash_positions=(), explain=False)
    np.testing.assert_array_equal(ant.cells, [3, 4, 5, 6])
    # cells given explicitly are kept as given
    np.testing.assert_array_equal(P.anticipation(Recorded(), cells=[0, 1], speeds=(0.2,), flash_positions=(),
                                                 explain=False).cells, [0, 1])
