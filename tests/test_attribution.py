"""Integrated gradients: reference agreement, completeness, pooling, collapsed paths, cell sums."""

import naive
import numpy as np
import pytest
from conftest import relerr, small_model

from retina.attribution import KINKS, METHODS, attribute, quadrature, quadrature_cells


@pytest.fixture(scope="module")
def model():
    return small_model(seed=11)


def _movie(rng, m, t=14):
    return rng.standard_normal((t,) + m.frame_shape)


@pytest.mark.parametrize("kinks", KINKS)
@pytest.mark.parametrize("method", METHODS)
def test_conv1_matches_loop_reference(rng, model, method, kinks):
    movie = _movie(rng, model)
    base = 0.3 * rng.standard_normal(movie.shape)
    a = attribute(model, movie, n_steps=12, method=method, baseline=base, dtype=np.float64, progress=False,
                  kinks=kinks)
    assert a.values.shape == (movie.shape[0] - model.history + 1, model.n_cells) + model.shape1
    assert a.settings["kinks"] == kinks
    for j in range(model.n_cells):
        cellw = np.eye(model.n_cells)[j]
        if kinks == "node":
            ref, _, r_s, r_0 = naive.conductance_conv1(model, movie, base, cellw, 12, method)
        else:
            ref, _, _, r_s, r_0 = naive.conductance_secant(model, movie, base, cellw, 12, method)
        assert relerr(a.values[:, j], ref) < 1e-10
        np.testing.assert_allclose(a.response[:, j], r_s, rtol=1e-12)
        np.testing.assert_allclose(a.baseline_response[:, j], r_0, rtol=1e-12)
    a32 = attribute(model, movie, n_steps=12, method=method, baseline=base, progress=False, kinks=kinks)
    assert a32.values.dtype == np.float32 and relerr(a32.values, a.values) < 1e-4


@pytest.mark.parametrize("kinks", KINKS)
def test_many_cells_in_one_output_match_the_loop_reference(rng, kinks):
    """A weighted sum over many cells (at least ``COMBINE_CELLS`` per output: the kernel combines the cells'
    backward maps instead of keeping one per cell) against the float64 loop reference, and with the float32
    kernels."""
    from retina.kernels.cpu import COMBINE_CELLS

    m = small_model(seed=5, n_cells=COMBINE_CELLS + 2)
    movie = _movie(rng, m, t=16)
    base = 0.3 * rng.standard_normal(movie.shape)
    wts = rng.standard_normal(m.n_cells)
    a = attribute(m, movie, cells=wts, n_steps=12, baseline=base, dtype=np.float64, progress=False, kinks=kinks)
    if kinks == "node":
        ref, _, r_s, r_0 = naive.conductance_conv1(m, movie, base, wts, 12, "midpoint")
    else:
        ref, _, _, r_s, r_0 = naive.conductance_secant(m, movie, base, wts, 12, "midpoint")
    assert relerr(a.values[:, 0], ref) < 1e-10
    np.testing.assert_allclose(a.response[:, 0], r_s, rtol=1e-12)
    a32 = attribute(m, movie, cells=wts, n_steps=12, baseline=base, progress=False, kinks=kinks)
    assert relerr(a32.values, a.values) < 1e-4
    # layer 2 (its conductance accumulates beside the combined maps): the per-cell attributions, weighted
    combo = attribute(m, movie, layer="conv2", cells=wts, n_steps=12, baseline=base, dtype=np.float64,
                      progress=False, kinks=kinks)
    each = attribute(m, movie, layer="conv2", n_steps=12, baseline=base, dtype=np.float64, progress=False,
                     kinks=kinks)
    np.testing.assert_allclose(combo.values[:, 0], np.einsum("nc...,c->n...", each.values, wts),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cells", [None, "many"])
def test_windows_that_stay_at_the_baseline_are_computed_once(rng, cells):
    """A flash from grey: the windows before and after it never leave the constant baseline (dz = 0), so the
    kernel runs on one of them and copies it; every window still matches the float64 loop reference."""
    m = small_model(seed=6, n_cells=6)
    grey = 0.2
    movie = np.full((30,) + m.frame_shape, grey)
    movie[12:14] = grey + rng.standard_normal((2,) + m.frame_shape)
    wts = rng.standard_normal(m.n_cells) if cells == "many" else np.eye(m.n_cells)[1]
    a = attribute(m, movie, cells=wts, n_steps=12, baseline=np.full_like(movie, grey), dtype=np.float64,
                  progress=False)
    ref, _, _, r_s, r_0 = naive.conductance_secant(m, movie, np.full_like(movie, grey), wts, 12, "midpoint")
    assert relerr(a.values[:, 0], ref) < 1e-10
    np.testing.assert_allclose(a.response[:, 0], r_s, rtol=1e-12)
    still = [n for n in range(len(ref)) if not 12 - m.history < n < 14]     # windows without the flash
    assert len(still) >= 2 and not np.any(a.values[still])


def test_right_riemann_equals_authors_formula(rng, model):
    movie = _movie(rng, model)
    a = attribute(model, movie, cells=1, n_steps=25, method="right", kinks="node", dtype=np.float64,
                  progress=False)
    ref = naive.conductance_right_riemann(model, movie, np.zeros_like(movie), np.eye(model.n_cells)[1], 25)
    assert relerr(a.values[:, 0], ref) < 1e-10


def test_conv2_matches_reference(rng, model):
    movie = _movie(rng, model)
    zero, cellw = np.zeros_like(movie), np.eye(model.n_cells)[0]
    a = attribute(model, movie, layer="conv2", cells=0, n_steps=10, kinks="node", dtype=np.float64,
                  progress=False)
    ref = naive.conductance_conv2(model, movie, zero, cellw, 10, "midpoint")
    assert a.values.shape[2:] == model.shape2
    assert relerr(a.values[:, 0], ref) < 1e-5  # reference dz2/da by finite differences
    a = attribute(model, movie, layer="conv2", cells=0, n_steps=10, dtype=np.float64, progress=False)
    ref = naive.conductance_secant(model, movie, zero, cellw, 10, "midpoint")[2]
    assert relerr(a.values[:, 0], ref) < 1e-10


@pytest.mark.parametrize("kinks", KINKS)
def test_input_ig_matches_reference_and_per_window_completeness(rng, model, kinks):
    movie = _movie(rng, model)
    a = attribute(model, movie, layer="input", cells=[2], n_steps=10, keep_windows=True, dtype=np.float64,
                  progress=False, kinks=kinks)
    total, per = naive.input_ig_movie(model, movie, np.zeros_like(movie), np.eye(model.n_cells)[2], 10,
                                      "midpoint", kinks)
    assert a.values.shape == (1,) + movie.shape
    assert relerr(a.values[0], total) < 1e-10
    assert relerr(a.per_window[:, 0], per) < 1e-10
    sums = a.per_window.reshape(a.per_window.shape[0], 1, -1).sum(axis=2)
    np.testing.assert_allclose(sums - (a.response - a.baseline_response), a.delta, atol=1e-9)


@pytest.mark.parametrize("kinks", KINKS)
@pytest.mark.parametrize("layer", ["input", "conv1", "conv2"])
def test_completeness_shrinks_with_steps(rng, layer, kinks):
    m = small_model(seed=4, n_cells=2)
    movie = rng.standard_normal((60,) + m.frame_shape)
    errs = []
    for n in (4, 16, 64, 256):
        a = attribute(m, movie, layer=layer, n_steps=n, dtype=np.float64, progress=False, kinks=kinks)
        errs.append(np.abs(a.delta).mean())
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[3] < errs[0] / (10 if kinks == "node" else 1000)   # O(1/K) against O(1/K^2)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_completeness_at_50_midpoint_steps_default_shape(seed, dtype):
    """Random default-shape models: every window's |delta| below 1e-3 of the response range at 50 midpoint
    steps (measured about 1.5e-6); the node rule, whose ReLU kinks cost O(1/K), is far above."""
    from retina import RetinaCNN
    m = RetinaCNN.random(2, seed=seed)
    movie = np.random.default_rng(seed).standard_normal((120, 50, 50)).astype(np.float32)
    a = attribute(m, movie, n_steps=50, progress=False, dtype=dtype)
    rel = np.abs(a.delta) / np.ptp(a.response, axis=0)
    assert rel.max() < 1e-4
    assert a.relative_delta == pytest.approx(rel.max())
    node = attribute(m, movie, n_steps=50, progress=False, dtype=dtype, kinks="node")
    assert node.relative_delta > 10 * a.relative_delta


def test_secant_and_node_rules_converge_to_the_same_attributions(rng, model):
    """Both rules tend to one integral; at equal steps the secant rule is the closer one, unit by unit."""
    movie = _movie(rng, model)
    kw = dict(cells=1, dtype=np.float64, progress=False)
    limit = attribute(model, movie, n_steps=2000, **kw).values
    err = {k: relerr(attribute(model, movie, n_steps=2000, kinks=k, **kw).values, limit) for k in KINKS}
    assert err["node"] < 2e-3
    coarse = {k: relerr(attribute(model, movie, n_steps=20, kinks=k, **kw).values, limit) for k in KINKS}
    assert coarse["secant"] < coarse["node"] / 2


@pytest.mark.parametrize("method", METHODS)
def test_quadrature_cells_tile_the_path_around_each_node(method):
    a, w = quadrature(9, method)
    c = quadrature_cells(a, w)
    assert c[0] == 0 and c[-1] == 1
    np.testing.assert_allclose(np.diff(c), w, atol=1e-15)
    assert np.all(c[:-1] <= a + 1e-12) and np.all(a <= c[1:] + 1e-12)
    with pytest.raises(ValueError, match="nodes"):
        quadrature_cells(a[::-1], w)


def test_pooled_equals_sum_of_unpooled(rng, model):
    movie = _movie(rng, model)
    full = attribute(model, movie, n_steps=8, dtype=np.float64, progress=False)
    space = attribute(model, movie, n_steps=8, pool="space", dtype=np.float64, progress=False)
    rows = attribute(model, movie, n_steps=8, pool="rows", dtype=np.float64, progress=False)
    np.testing.assert_allclose(space.values, full.values.sum(axis=(3, 4)), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rows.values, full.values.sum(axis=3), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(space.values.sum(axis=2), full.values.sum(axis=(2, 3, 4)), rtol=1e-10)
    inp = attribute(model, movie, layer="input", n_steps=8, pool="space", dtype=np.float64, progress=False)
    inp_full = attribute(model, movie, layer="input", n_steps=8, dtype=np.float64, progress=False)
    np.testing.assert_allclose(inp.values, inp_full.values.sum(axis=(2, 3)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind, pool", [("space", "space"), ("rows", "rows"), ("space", "rows")])
@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_collapsed_paths_equal_general_path(rng, kind, pool, layer):
    m = small_model(seed=8, per_unit=False)
    t = 16
    h, w = m.frame_shape
    src = rng.standard_normal((t, 1, 1) if kind == "space" else (t, 1, w))
    movie = np.broadcast_to(src, (t, h, w)).copy()
    fast = attribute(m, movie, layer=layer, n_steps=9, pool=pool, dtype=np.float64, progress=False)
    want = "collapsed-space" if (kind, pool) == ("space", "space") else "collapsed-rows"
    assert fast.path == want
    movie_perturbed = movie.copy()
    general = attribute(m, movie_perturbed, layer=layer, n_steps=9, dtype=np.float64, progress=False)
    assert general.path.startswith("general")
    axes = (3, 4) if pool == "space" else (3,)
    assert relerr(fast.values, general.values.sum(axis=axes)) < 1e-9
    np.testing.assert_allclose(fast.delta, general.delta, atol=1e-9)


def test_per_unit_model_keeps_general_network_but_collapses_layer1(rng):
    m = small_model(seed=9, per_unit=True)
    t, (h, w) = 12, m.frame_shape
    movie = np.broadcast_to(rng.standard_normal((t, 1, 1)), (t, h, w)).copy()
    a = attribute(m, movie, pool="space", n_steps=5, dtype=np.float64, progress=False)
    assert a.path == "general+collapsed-layer1-space"


def test_weighted_cell_sum_is_linear(rng, model):
    movie = _movie(rng, model)
    wts = rng.standard_normal(model.n_cells)
    combo = attribute(model, movie, cells=wts, n_steps=10, dtype=np.float64, progress=False)
    each = attribute(model, movie, n_steps=10, dtype=np.float64, progress=False)
    assert combo.values.shape[1] == 1
    np.testing.assert_allclose(combo.values[:, 0], np.einsum("nc...,c->n...", each.values, wts),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(combo.response[:, 0], each.response @ wts, rtol=1e-12)


def test_batch_size_does_not_change_result(rng, model):
    movie = _movie(rng, model, t=20)
    a = attribute(model, movie, n_steps=7, batch=1, dtype=np.float64, progress=False)
    b = attribute(model, movie, n_steps=7, batch=100, dtype=np.float64, progress=False)
    assert relerr(a.values, b.values) < 1e-12  # FFT lengths differ with the batch: rounding only


def test_quadrature_rules_integrate_polynomials():
    for method in METHODS:
        a, w = quadrature(40, method)
        assert np.isclose(w.sum(), 1.0) and abs((w * a).sum() - 0.5) <= 0.5 / 40 + 1e-12
        assert a.min() >= 0 and a.max() <= 1
    a, w = quadrature(5, "gauss-legendre")
    assert np.isclose((w * a ** 9).sum(), 0.1)


@pytest.mark.parametrize("kwargs, match", [
    ({"layer": "conv3"}, "layer must be one of"),
    ({"method": "simpson"}, "method must be one of"),
    ({"n_steps": 0}, "n_steps must be >= 1"),
    ({"cells": 7}, "cells must be <= 2"),
    ({"cells": [0, 9]}, "cells must index"),
    ({"cells": np.ones(2)}, r"weight vector must have shape \(3,\)"),
    ({"cells": "all"}, "cells must be None"),
    ({"baseline": np.zeros((3, 3, 3))}, "baseline must"),
    ({"baseline": np.nan}, "baseline must be finite"),
    ({"pool": "time"}, "pool must be one of"),
    ({"keep_windows": True}, "keep_windows=True applies to layer='input' only"),
])
def test_bad_arguments(rng, model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        attribute(model, _movie(rng, model), progress=False, **kwargs)


def test_save(tmp_path, rng, model):
    import h5py
    a = attribute(model, _movie(rng, model), pool="space", n_steps=5, progress=False)
    a.save(tmp_path / "a.h5")
    with h5py.File(tmp_path / "a.h5") as f:
        np.testing.assert_array_equal(f["values"][()], a.values)
        assert f["settings"].attrs["method"] == "midpoint" and f["settings"].attrs["pool"] == "1,2"


@pytest.mark.gpu
@pytest.mark.parametrize("layer", ["conv1", "conv2", "input"])
def test_gpu_attribution_equals_cpu_and_keeps_arrays_on_the_device(rng, layer):
    from retina import _backend

    if _backend._gpu_unavailable_reason() is not None:
        pytest.skip(f"no GPU: {_backend._gpu_unavailable_reason()}")
    import cupy

    m = small_model()
    movie = rng.standard_normal((14,) + m.frame_shape).astype(np.float32)
    ref = attribute(m, movie, layer=layer, n_steps=20, backend="cpu", progress=False)
    got = attribute(m, movie, layer=layer, n_steps=20, backend="gpu", progress=False)
    assert isinstance(got.values, np.ndarray) and got.backend == "gpu"
    assert np.abs(got.values - ref.values).max() <= 1e-4 * np.abs(ref.values).max()
    np.testing.assert_allclose(got.delta, ref.delta, atol=1e-4 * np.abs(ref.response).max())
    dev = attribute(m, cupy.asarray(movie), layer=layer, n_steps=20, progress=False)
    assert isinstance(dev.values, cupy.ndarray)
    np.testing.assert_allclose(dev.values.get(), got.values, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kinks", KINKS)
def test_benchmark_references_match_the_test_references(rng, model, kinks):
    """``retina.reference`` (what ``retina bench`` checks its fast results against) agrees with naive.py."""
    from retina import reference
    movie = _movie(rng, model)
    zero, cellw, w = np.zeros_like(movie), np.eye(model.n_cells)[2], 1
    if kinks == "node":
        want = naive.conductance_conv1(model, movie, zero, cellw, 6, "midpoint")[0]
    else:
        want = naive.conductance_secant(model, movie, zero, cellw, 6, "midpoint")[0]
    assert relerr(reference.conductance_conv1(model, movie, w, 2, n_steps=6, kinks=kinks), want[w]) < 1e-10
    per = naive.input_ig_movie(model, movie, zero, cellw, 6, "midpoint", kinks)[1]
    assert relerr(reference.input_ig(model, movie, w, 2, n_steps=6, kinks=kinks), per[w]) < 1e-10
