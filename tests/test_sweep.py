"""Stimulus sweeps: grid, measures, resumable HDF5 file."""

import numpy as np
import pytest

from retina.sweep import load_sweep, sweep


class Flaky:
    """A linear-nonlinear toy retina that can be told to crash after some calls (an interrupted run)."""

    frame_shape = (6, 6)
    n_cells = 2

    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def content_hash(self):
        return "flaky-v1"

    def rates(self, movie):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("stopped")
        m = np.asarray(movie, np.float64).mean(axis=(1, 2))
        k = np.exp(-np.arange(30) / 5.0) * np.sin(np.arange(30) / 4.0)
        drive = np.convolve(-m, k)[:len(m)]
        return np.stack([np.logaddexp(0, 3 * drive), np.logaddexp(0, -2 * drive)], axis=1)


def test_sweep_grid_table_and_file(tmp_path):
    grid = {"periods": [6, 8, 10], "intensity": [-1.0, -0.5]}
    res = sweep(Flaky(), "osr", grid, out=tmp_path / "s.h5", progress=False, cells=[0])
    assert res.shape == (3, 2) and len(res.measures) == 6
    table = res.table("osr_peak_mean")
    assert table.shape == (3, 2) and np.isfinite(table).all()
    # stronger flashes drive a larger response in the toy
    assert (table[:, 0] > table[:, 1]).all()
    back = load_sweep(tmp_path / "s.h5")
    assert back.points == res.points
    np.testing.assert_equal(back.measures, res.measures)  # NaN == NaN here
    assert not (tmp_path / "s.h5.partial").exists()


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    grid = {"intensities": [-1.0, -0.6, -0.3, -0.1]}
    out = tmp_path / "lat.h5"
    with pytest.raises(KeyboardInterrupt):
        sweep(Flaky(fail_after=2), "latency", grid, out=out, progress=False, cells=[0])
    assert (tmp_path / "lat.h5.partial").exists() and not out.exists()
    again = Flaky()
    res = sweep(again, "latency", grid, out=out, progress=False, cells=[0])
    assert again.calls == 2  # only the two unfinished points ran
    fresh = sweep(Flaky(), "latency", grid, progress=False, cells=[0])
    np.testing.assert_equal(res.measures, fresh.measures)


def test_sweep_rejects_bad_arguments():
    with pytest.raises(ValueError, match="phenomenon must be one of"):
        sweep(Flaky(), "flicker", {"x": [1]})
    with pytest.raises(ValueError, match="has no parameter 'speed'"):
        sweep(Flaky(), "osr", {"speed": [1]})
    with pytest.raises(ValueError, match="is empty"):
        sweep(Flaky(), "osr", {"periods": []})


def test_sweep_file_is_labelled_data(tmp_path):
    grid = {"periods": [6, 8, 10], "intensity": [-1.0, -0.5]}
    res = sweep(Flaky(), "osr", grid, out=tmp_path / "s.h5", progress=False, cells=[0])
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    table = xr.open_dataset(tmp_path / "s.h5", group="measures", engine="h5netcdf", phony_dims="sort")
    assert table["osr_peak_mean"].dims == ("periods", "intensity")
    assert list(table["periods"].values) == [6, 8, 10] and list(table["intensity"].values) == [-1.0, -0.5]
    np.testing.assert_array_equal(table["osr_peak_mean"].values, res.table("osr_peak_mean"))
    cond = xr.open_dataset(tmp_path / "s.h5", group="point00000/condition00", engine="h5netcdf", phony_dims="sort")
    assert cond["response"].dims == ("time", "cell") and cond["time"].attrs["units"] == "ms"


def test_schema_1_sweep_files_still_load(tmp_path):
    """Files written before labelled axes (measures and parameters as JSON attributes) read as before."""
    import json

    import h5py

    settings = {"phenomenon": "osr", "grid": {"periods": [6, 8]}, "options": {}, "model": "flaky-v1"}
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.attrs.update(format="retina-sweep", retina_version="0.1.0", settings=json.dumps(settings))
        for i, p in enumerate([6, 8]):
            g = f.create_group(f"point{i:05d}")
            g.attrs.update(params=json.dumps({"periods": p}), measures=json.dumps({"slope": 0.1 * p}), done=True)
    back = load_sweep(tmp_path / "old.h5")
    assert back.points == [{"periods": 6}, {"periods": 8}]
    np.testing.assert_allclose(back.table("slope"), [0.6, 0.8])
