"""The main job end to end on a small setting: results file, figures, summary, ground truth."""

import h5py
import numpy as np
from click.testing import CliRunner

from retina import RetinaCNN
from retina.cli import main
from retina.explain import cnn_shares, explain


def test_explain_writes_results_figures_and_summary(tmp_path):
    model = RetinaCNN.random(3, seed=0, per_unit=False)
    report = explain(model, tmp_path, phenomena=("osr", "reversal"), n_steps=8, progress=False)
    for name in ("osr", "reversal"):
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
        e = report[name]
        assert abs(sum(e["cnn_type_shares"].values()) - 1.0) < 1e-9
        assert abs(sum(e["truth"]["shares"].values()) - 1.0) < 1e-9
        assert all(isinstance(v, bool) for v in e["criteria"].values())
        # each recovered channel is paired with the simulator pathway its type stands for
        assert e["matches"] and all(m["pathway"] in ("OFF", "ONf", "ONs") for m in e["matches"])
        assert sum(m["share"] for m in e["matches"]) <= 1.0 + 1e-9
        assert any("ablating" in k for k in e["criteria"])
    text = (tmp_path / "summary.txt").read_text()
    assert "osr" in text and "reversal" in text and "criteria" in text and "->  simulator" in text
    with h5py.File(tmp_path / "results.h5") as f:
        c = f["osr/condition00"]
        assert c["pooled_attribution"].shape[-1] == 8 and c["response"].ndim == 2
        assert f["reversal/condition00/pooled_attribution"].shape[-2:] == (8, 36)
        assert "report" in f.attrs


def test_simulator_truth_for_the_osr_is_the_slow_on_pathway(tmp_path):
    from retina.explain import ground_truth

    gt = ground_truth("osr")
    assert max(gt["shares"], key=gt["shares"].get) == "ONs"
    assert gt["lesions"]["ONs"]["change"] < 0


def test_cnn_shares_sum_to_one_per_phenomenon():
    from retina import phenomena as P

    res = P.latency(RetinaCNN.random(2, seed=1, per_unit=False), intensities=(-0.5, -1.0), n_steps=8)
    shares = cnn_shares(res)
    assert abs(sum(shares.values()) - 1.0) < 1e-9 and all(v >= 0 for v in shares.values())
    assert np.isfinite(res.measures["peak_delta_ms"])
    # the inhibitory layer-2 search ran; where it found channels, the ablated network was measured
    assert all(d["share"] > 0 and d["conditions"] >= 1 for d in res.inhibitory)
    assert len(res.ablated_measures) == (2 if res.inhibitory else 0)


def test_explain_command(tmp_path):
    res = CliRunner().invoke(main, ["explain", "random", "-o", str(tmp_path / "out"), "--phenomenon", "latency",
                                    "--steps", "5", "--no-truth", "-q"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "latency.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "summary.txt").exists()
