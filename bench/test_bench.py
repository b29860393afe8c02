"""pytest-benchmark versions of the canonical workloads (docs/performance.md).

Run: ``pytest bench/ --benchmark-enable`` (the suite in tests/ never times anything).
Sizes scale with RETINA_BENCH_SCALE (default 1.0, the canonical sizes).
"""

import os

import numpy as np
import pytest

from retina import RetinaCNN
from retina.attribution import attribute
from retina.stimuli import natural_movie, white_noise

SCALE = float(os.environ.get("RETINA_BENCH_SCALE", "1.0"))


@pytest.fixture(scope="module")
def model():
    return RetinaCNN.random(5, seed=0)


def test_forward_movie(benchmark, model):
    movie = natural_movie(int(6000 * SCALE), seed=1).movie
    rates = benchmark(model.predict, movie)
    benchmark.extra_info["windows_per_s"] = rates.shape[0] / benchmark.stats.stats.median
    assert np.isfinite(rates).all()


@pytest.mark.parametrize("layer", ["conv1", "input"])
def test_ig(benchmark, model, layer):
    movie = white_noise(int(1000 * SCALE), seed=2).movie
    attr = benchmark.pedantic(attribute, args=(model, movie), kwargs=dict(layer=layer, n_steps=50,
                                                                          progress=False),
                              rounds=1, iterations=1, warmup_rounds=1)
    benchmark.extra_info["window_cells_per_s"] = attr.delta.size / benchmark.stats.stats.median
    assert np.isfinite(attr.values).all()


def test_insilico_minute(benchmark):
    from retina.insilico import InSilicoRetina

    sim = InSilicoRetina()
    movie = natural_movie(max(int(6000 * SCALE), 50), seed=1).movie
    rates = benchmark(sim.rates, movie)
    benchmark.extra_info["seconds_per_simulated_minute"] = benchmark.stats.stats.median * 6000 / len(movie)
    assert np.isfinite(rates).all()


def test_osr_sweep(benchmark):
    from retina.bench import osr_sweep

    res = benchmark.pedantic(osr_sweep, kwargs=dict(scale=SCALE, repeat=1), rounds=1, iterations=1)
    benchmark.extra_info["seconds_total"] = res.seconds
    assert res.max_rel_error < 1e-4


def test_sweep_scale(benchmark):
    """One OSR sweep in process and on 1 and 2 local Dask workers (needs the 'dist' extra)."""
    pytest.importorskip("distributed")
    from retina.bench import sweep_scale

    res = benchmark.pedantic(sweep_scale, kwargs=dict(scale=SCALE), rounds=1, iterations=1)
    benchmark.extra_info["points_per_s_2_workers"] = res.figure
    benchmark.extra_info["detail"] = res.detail
    assert res.max_rel_error == 0.0   # the cluster's measures equal the in-process ones exactly
