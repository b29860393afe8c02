"""The click commands, end to end on small settings."""

import h5py
import numpy as np
from click.testing import CliRunner
from conftest import small_model

from retina.cli import main


def test_predict_random_model(tmp_path):
    out = tmp_path / "rates.h5"
    res = CliRunner().invoke(main, ["predict", "--frames", "120", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.output
    with h5py.File(out) as f:
        assert f["rates"].shape == (81, 5) and f.attrs["units"] == "Hz"
        assert np.isfinite(f["rates"][()]).all()


def test_predict_model_file_and_stimulus_file(tmp_path):
    m = small_model()
    m.save(tmp_path / "m.h5")
    from retina.io import save_stimulus
    movie = np.random.default_rng(0).standard_normal((30,) + m.frame_shape).astype(np.float32)
    save_stimulus(tmp_path / "s.h5", movie)
    res = CliRunner().invoke(main, ["predict", str(tmp_path / "m.h5"), "--stimulus", str(tmp_path / "s.h5"),
                                    "-o", str(tmp_path / "r.h5")])
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "r.h5") as f:
        np.testing.assert_allclose(f["rates"][()], m.predict(movie), rtol=1e-6)


def test_predict_errors_are_clean(tmp_path):
    res = CliRunner().invoke(main, ["predict", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "r.h5")])
    assert res.exit_code != 0 and "not found" in res.output and "Traceback" not in res.output
    m = small_model()
    m.save(tmp_path / "m.h5")
    from retina.io import save_stimulus
    save_stimulus(tmp_path / "s.h5", np.zeros((50, 50, 50), np.float32))
    res = CliRunner().invoke(main, ["predict", str(tmp_path / "m.h5"), "--stimulus", str(tmp_path / "s.h5"),
                                    "-o", str(tmp_path / "r.h5")])  # 50x50 frames do not fit 17x19
    assert res.exit_code != 0 and "frames of 17x19" in res.output


def test_attribute_command(tmp_path):
    m = small_model()
    m.save(tmp_path / "m.h5")
    from retina.io import save_stimulus
    movie = np.random.default_rng(1).standard_normal((20,) + m.frame_shape).astype(np.float32)
    save_stimulus(tmp_path / "s.h5", movie)
    res = CliRunner().invoke(main, ["attribute", str(tmp_path / "m.h5"), str(tmp_path / "s.h5"), "--layer",
                                    "conv1", "--cells", "0,2", "--steps", "10", "--pool", "space", "-o",
                                    str(tmp_path / "a.h5")])
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "a.h5") as f:
        assert f["values"].shape == (20 - m.history + 1, 2, m.shape1[0])
        assert f["settings"].attrs["n_steps"] == 10 and len(f["settings"].attrs["model_hash"]) == 64
    bad = CliRunner().invoke(main, ["attribute", str(tmp_path / "m.h5"), str(tmp_path / "s.h5"), "--cells",
                                    "x", "-o", str(tmp_path / "b.h5")])
    assert bad.exit_code != 0 and "--cells" in bad.output


def test_info_stimulus_random_model(tmp_path):
    r = CliRunner()
    assert r.invoke(main, ["random-model", "-o", str(tmp_path / "m.h5"), "--cells", "2"]).exit_code == 0
    res = r.invoke(main, ["info", str(tmp_path / "m.h5")])
    assert res.exit_code == 0 and "n_cells=2" in res.output
    res = r.invoke(main, ["stimulus", "white_noise", "--frames", "12", "-o", str(tmp_path / "s.h5")])
    assert res.exit_code == 0
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["stimulus"].shape == (12, 50, 50)


def test_bench_command_quick():
    res = CliRunner().invoke(main, ["bench", "--workload", "forward-movie", "--scale", "0.02"])
    assert res.exit_code == 0, res.output
    assert "forward-movie" in res.output and "windows/s" in res.output


def test_stimulus_command_any_generator(tmp_path):
    r = CliRunner()
    res = r.invoke(main, ["stimulus", "moving_bar", "-p", "speed=0.5", "-p", "reverse_at=25", "-p", "start=2",
                          "-o", str(tmp_path / "bar.h5")])
    assert res.exit_code == 0, res.output
    with h5py.File(tmp_path / "bar.h5") as f:
        assert "reversal_frame" in f["events"] and f["stimulus"].shape[1:] == (50, 50)
    bad = r.invoke(main, ["stimulus", "moving_bar", "-p", "speed=0", "-o", str(tmp_path / "b.h5")])
    assert bad.exit_code != 0 and "speed" in bad.output
    bad = r.invoke(main, ["stimulus", "moving_bar", "-p", "colour=red", "-o", str(tmp_path / "b.h5")])
    assert bad.exit_code != 0 and "NAME=VALUE" in bad.output
    assert r.invoke(main, ["stimulus", "sunset", "-o", str(tmp_path / "b.h5")]).exit_code != 0


def test_simulate_command(tmp_path):
    res = CliRunner().invoke(main, ["simulate", "-o", str(tmp_path / "d"), "--kind", "whitenoise",
                                    "--noise-minutes", "0.02", "--test-clips", "1", "--clip-seconds", "0.5",
                                    "--repeats", "3", "-q"])
    assert res.exit_code == 0, res.output
    from retina.datasets import load_dataset
    d = load_dataset(tmp_path / "d" / "whitenoise.h5", "test")
    assert d.repeats.shape == (18, 3, 50)


def test_train_command_smoke(tmp_path):
    from retina.datasets import simulate_dataset
    from retina.insilico import InSilicoRetina

    data = simulate_dataset(tmp_path / "n.h5", retina=InSilicoRetina(),
                            train_minutes=0.1, test_clips=1, clip_s=1.0, repeats=2, progress=False)
    res = CliRunner().invoke(main, ["train", str(data), "-o", str(tmp_path / "m.h5"), "--epochs", "1",
                                    "--epoch-windows", "40", "--batch", "20", "--channels", "2,2",
                                    "--cells", "0,9", "-q"])
    assert res.exit_code == 0, res.output
    from retina import load_model
    m = load_model(tmp_path / "m.h5")
    assert m.n_cells == 2 and m.norm_stats is not None and not (tmp_path / "m.h5.ckpt").exists()
    # the model records the simulator and the cells it was fitted to: explain compares it with them
    import json

    from retina.insilico import simulator_of
    sim = InSilicoRetina()
    assert json.loads(m.metadata["cell_types"]) == [sim.cell_types[0], sim.cell_types[9]]
    assert simulator_of(m).params.to_dict() == sim.params.to_dict()
    bad = CliRunner().invoke(main, ["train", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "x.h5")])
    assert bad.exit_code != 0 and "no dataset file" in bad.output


def test_sweep_command(tmp_path):
    out = tmp_path / "lat.h5"
    r = CliRunner().invoke(main, ["sweep", "insilico", "latency", "-p", "intensities=-1,-0.5", "-o", str(out),
                                  "--no-explain", "-q"])
    assert r.exit_code == 0, r.output
    from retina.sweep import load_sweep

    res = load_sweep(out)
    assert [p["intensities"] for p in res.points] == [-1, -0.5]
    # a stronger flash gives an earlier OFF response in the simulator
    assert res.measures[0]["peak_ms"] < res.measures[1]["peak_ms"]
    r = CliRunner().invoke(main, ["sweep", "insilico", "latency", "-p", "intensities"])
    assert r.exit_code != 0 and "NAME=VALUES" in r.output
