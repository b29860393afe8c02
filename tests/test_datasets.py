"""Simulated datasets in the deep-retina layout: writing, resuming, loading, refusing bad files."""

import h5py
import numpy as np
import pytest

from retina.datasets import decode_uint8, encode_uint8, load_dataset, simulate_dataset
from retina.insilico import InSilicoRetina
from retina.io.dataset import CompactMovie, uint8_stats

SMALL = dict(train_minutes=0.05, test_clips=2, clip_s=1.0, repeats=4, chunk_s=1.0, seed=3, progress=False)


@pytest.fixture(scope="module")
def sim():
    return InSilicoRetina()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, sim):
    return simulate_dataset(tmp_path_factory.mktemp("d") / "naturalscene.h5", "naturalscene", retina=sim, **SMALL)


def test_layout_and_consistency(dataset, sim):
    with h5py.File(dataset) as f:
        assert f["train/stimulus"].shape == (300, 50, 50) and f["train/stimulus"].dtype == np.uint8
        assert f["train/response/firing_rate_10ms"].shape == (18, 300)
        assert f["test/repeats/cell00"].shape == (4, 200)
        stim = decode_uint8(f["train/stimulus"][()])
        rate = f["train/response/rate"][()]
    # the stored rates are the simulator's response to exactly the stored (quantised) stimulus
    np.testing.assert_allclose(sim.rates(stim).T, rate, rtol=1e-5, atol=1e-4)
    assert not dataset.with_name(dataset.name + ".partial").exists()


def test_loader_zscores_and_returns_time_major(dataset):
    d = load_dataset(dataset)
    assert d.stimulus.dtype == np.float32 and d.stimulus.shape == (300, 50, 50)
    assert abs(d.stimulus.mean()) < 1e-4 and d.stimulus.std() == pytest.approx(1.0, rel=1e-3)
    assert d.rates.shape == (300, 18) and (d.rates >= 0).all()
    t = load_dataset(dataset, "test", norm_stats=d.stats, cells=[0, 9])
    assert t.repeats.shape == (2, 4, 200) and t.rates.shape == (200, 2)
    # the test response is the repeat mean, smoothed
    assert t.rates.mean() == pytest.approx(t.repeats.mean() / 0.01, rel=0.05)


def test_compact_stimulus_decodes_bit_for_bit_as_the_dense_one(dataset):
    dense, compact = load_dataset(dataset), load_dataset(dataset, compact=True)
    movie = compact.stimulus
    assert isinstance(movie, CompactMovie) and movie.shape == dense.stimulus.shape and len(movie) == 300
    assert movie.nbytes * 4 == dense.stimulus.nbytes and compact.stats == dense.stats
    np.testing.assert_array_equal(np.asarray(movie), dense.stimulus)
    view = movie[40:-7]   # a step-1 slice stays compact (a view of the codes)
    assert isinstance(view, CompactMovie) and np.shares_memory(view.codes, movie.codes)
    np.testing.assert_array_equal(np.asarray(view), dense.stimulus[40:-7])
    np.testing.assert_array_equal(movie[::3], dense.stimulus[::3])
    np.testing.assert_array_equal(movie[5], dense.stimulus[5])
    assert np.asarray(movie, np.float64).dtype == np.float64
    skipped = load_dataset(dataset, compact=True, nskip=20, norm_stats=dense.stats)
    np.testing.assert_array_equal(np.asarray(skipped.stimulus), dense.stimulus[20:])


def test_uint8_statistics_are_exact():
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, (50, 9, 11)).astype(np.uint8)
    c = decode_uint8(codes).astype(np.float64)   # the float32 contrasts the loader z-scores, summed in float64
    mean, std = uint8_stats(codes)
    assert mean == pytest.approx(c.mean(), rel=1e-14, abs=1e-15) and std == pytest.approx(c.std(), rel=1e-14)
    assert uint8_stats(codes[::-1].copy()) == (mean, std)   # independent of order


def test_compact_needs_a_coded_stimulus(tmp_path):
    with pytest.raises(ValueError, match="compact=True needs a uint8 stimulus.*float32"):
        load_dataset(_write(tmp_path / "lab.h5"), compact=True)
    with pytest.raises(ValueError, match="codes must be a .* uint8"):
        CompactMovie(np.zeros((2, 3, 3), np.float32), np.zeros(256, np.float32))


def test_interrupted_run_resumes_to_the_same_file(tmp_path, sim, dataset):
    class Crash(Exception):
        pass

    calls = {"n": 0}
    real = sim.run

    def flaky(movie, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash
        return real(movie, **kw)

    out = tmp_path / "naturalscene.h5"
    sim.run = flaky
    try:
        with pytest.raises(Crash):
            simulate_dataset(out, "naturalscene", retina=sim, **SMALL)
    finally:
        del sim.run
    partial = out.with_name(out.name + ".partial")
    assert partial.exists() and not out.exists()
    with h5py.File(partial) as f:
        assert f["_resume"].attrs["train_done"] == 1
    simulate_dataset(out, "naturalscene", retina=sim, **SMALL)
    with h5py.File(out) as a, h5py.File(dataset) as b:
        for k in ("train/stimulus", "train/response/binned", "train/response/rate", "test/repeats/cell05"):
            np.testing.assert_array_equal(a[k][()], b[k][()])
        assert "_resume" not in a


def test_uint8_round_trip():
    c = np.linspace(-1, 1, 256)
    assert np.abs(decode_uint8(encode_uint8(c)) - c).max() <= 0.5 / 127.5 + 1e-7
    assert encode_uint8([-3.0, 3.0]).tolist() == [0, 255]


def _write(path, **override):
    n = 100
    parts = {"train/stimulus": np.random.default_rng(0).standard_normal((n, 8, 8)).astype(np.float32),
             "train/response/firing_rate_10ms": np.ones((3, n)), "train/response/binned": np.ones((3, n))}
    parts.update(override)
    with h5py.File(path, "w") as f:
        for k, v in parts.items():
            if v is not None:
                f.create_dataset(k, data=v)
    return path


@pytest.mark.parametrize("override,match", [
    ({"train/response/firing_rate_10ms": None}, "no 'train/response/firing_rate_10ms'"),
    ({"train/response/firing_rate_10ms": np.ones((3, 99))}, "T = 100"),
    ({"train/response/firing_rate_10ms": np.where(np.eye(3, 100) > 0, np.nan, 1.0)}, "NaN"),
    ({"train/response/firing_rate_10ms": -np.ones((3, 100))}, "negative"),
    ({"train/stimulus": None, "train/response/firing_rate_10ms": None, "train/response/binned": None,
      "test/stimulus": np.zeros((3, 2, 2))}, "no 'train' group"),
])
def test_bad_files_get_clear_errors(tmp_path, override, match):
    path = _write(tmp_path / "bad.h5", **override)
    with pytest.raises(ValueError, match=match):
        load_dataset(path)


def test_lab_layout_without_extras_loads(tmp_path):
    d = load_dataset(_write(tmp_path / "lab.h5"))
    assert d.true_rate is None and d.repeats is None and d.rates.shape == (100, 3)
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing.h5")


def test_fullfield_and_bars_kinds(tmp_path, sim):
    path = simulate_dataset(tmp_path / "fullfield.h5", "fullfield", retina=sim, **SMALL)
    with h5py.File(path) as f:
        stim = decode_uint8(f["train/stimulus"][()])
        assert f.attrs["kind"] == "fullfield"
    assert np.ptp(stim, axis=(1, 2)).max() == 0            # every frame uniform
    trace = stim[:, 0, 0]
    assert np.all(trace[0::2] == trace[1::2])               # 20 ms frames: each value held 2 frames
    assert 0.25 < trace.std() < 0.45
    bars = simulate_dataset(tmp_path / "bars.h5", "bars", retina=sim, **SMALL)
    with h5py.File(bars) as f:
        stim = decode_uint8(f["train/stimulus"][()])
    assert np.ptp(stim, axis=1).max() == 0 and np.ptp(stim[:, 0, :], axis=1).max() > 0   # bars along rows
    motion = simulate_dataset(tmp_path / "motion.h5", "motion", retina=sim, **SMALL)
    with h5py.File(motion) as f:
        stim = decode_uint8(f["train/stimulus"][()])
        rates = f["train/response/rate"][()]
    assert np.ptp(stim, axis=1).max() == 0 and np.ptp(stim[:, 0, :], axis=1).max() > 0.3  # a bar along rows
    assert (np.abs(stim[:, 0, :]) < 0.01).mean() > 0.5 and np.isfinite(rates).all()       # on a grey field
    flashes = simulate_dataset(tmp_path / "flashes.h5", "flashes", retina=sim, **SMALL)
    with h5py.File(flashes) as f:
        stim = decode_uint8(f["train/stimulus"][()])
    assert np.ptp(stim, axis=(1, 2)).max() == 0 and (np.abs(stim[:, 0, 0]) < 0.01).mean() > 0.7   # flashes on grey
    with pytest.raises(ValueError, match="kind"):
        simulate_dataset(tmp_path / "x.h5", "flicker", retina=sim, **SMALL)


def test_stimulus_options_reach_the_generator_and_the_settings(tmp_path, sim):
    import json

    from retina.stimuli import bar_motion

    opts = {"speeds": (0.05, 0.1), "contrasts": (0.9, 1.0)}
    path = simulate_dataset(tmp_path / "slow.h5", "motion", retina=sim, stimulus_options=opts, **SMALL)
    with h5py.File(path) as f:
        assert json.loads(f.attrs["settings"])["stimulus_options"] == {"speeds": [0.05, 0.1],
                                                                       "contrasts": [0.9, 1.0]}
        first = decode_uint8(f["train/stimulus"][:100])
    # the first chunk is the generator's movie with these options (uint8-encoded)
    from retina.datasets import _seed
    ref = bar_motion(100, sim.frame_shape, seed=_seed(3, 0, 0), **opts).movie
    assert np.abs(first - ref).max() <= 1 / 127 + 1e-6
    assert np.abs(first).max() > 0.85                       # contrasts 0.9..1, not the default 0.3..1 range
    with pytest.raises(ValueError, match="speed.*not arguments of bar_motion"):
        simulate_dataset(tmp_path / "x.h5", "motion", retina=sim, stimulus_options={"speed": 1}, **SMALL)
    with pytest.raises(ValueError, match="ranges must be"):
        simulate_dataset(tmp_path / "y.h5", "motion", retina=sim, stimulus_options={"speeds": (0.3, 0.1)}, **SMALL)
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.partial").exists()
