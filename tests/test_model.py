"""RetinaCNN forward pass against the float64 reference; construction and paths."""

import naive
import numpy as np
import pytest
from conftest import relerr, small_model, tol

from retina import RetinaCNN, reference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_unit", [True, False])
@pytest.mark.parametrize("n_cells", [1, 4])
def test_predict_matches_reference(rng, dtype, per_unit, n_cells):
    m = small_model(seed=int(rng.integers(1000)), n_cells=n_cells, per_unit=per_unit)
    movie = rng.standard_normal((m.history + 11,) + m.frame_shape)
    ref = naive.forward(m, movie)
    for method in ("direct", "fft"):
        for method2 in ("direct", "fft"):
            r = m.predict(movie, dtype=dtype, layer1_method=method, layer2_method=method2, batch=5)
            assert r.dtype == dtype and r.shape == (12, n_cells)
            assert relerr(r, ref) < 5 * tol(dtype)


def test_default_shape_and_scipy_reference(rng):
    m = RetinaCNN.random(3, seed=1)
    movie = rng.standard_normal((45, 50, 50)).astype(np.float32)
    r = m.predict(movie)
    assert r.shape == (6, 3)
    assert relerr(r[[0, 5]], reference.forward(m, movie, [0, 5])) < 1e-5
    assert relerr(reference.forward(m, movie, [0, 5]), naive.forward(m, movie)[[0, 5]]) < 1e-12


def test_batch_does_not_change_result(rng, tiny):
    movie = rng.standard_normal((40,) + tiny.frame_shape)
    a = tiny.predict(movie, dtype=np.float64, batch=1)
    b = tiny.predict(movie, dtype=np.float64, batch=7)
    c = tiny.predict(movie, dtype=np.float64)
    assert relerr(a, c) < 1e-12 and relerr(b, c) < 1e-12


@pytest.mark.parametrize("history", [40, 100, 7])
def test_default_batch_fills_a_fast_fft_length(history):
    from scipy.fft import next_fast_len

    m = RetinaCNN.random(2, seed=0, history=history)
    n = m.default_batch()
    frames = n + history - 1
    assert n >= 512 and next_fast_len(frames, real=True) == frames
    assert next_fast_len(512 + history - 1, real=True) == frames     # the fast length next to 512 windows
    assert m.default_batch(100) >= 100


def test_default_batch_movie_spanning_batches_matches_the_reference(rng):
    m = RetinaCNN.random(3, seed=2)
    movie = (rng.standard_normal((m.default_batch() + m.history + 20,) + m.frame_shape)).astype(np.float32)
    r = m.predict(movie)                                 # two calls: a full default batch and 21 windows
    idx = [0, m.default_batch() - 1, m.default_batch(), len(r) - 1]
    assert relerr(r[idx], reference.forward(m, movie, idx)) < 1e-5


@pytest.mark.parametrize("kind", ["space", "rows"])
def test_invariant_movies_use_collapsed_layer1_and_agree(rng, tiny, kind):
    t = 30
    h, w = tiny.frame_shape
    if kind == "space":
        movie = np.broadcast_to(rng.standard_normal((t, 1, 1)), (t, h, w)).copy()
    else:
        movie = np.broadcast_to(rng.standard_normal((t, 1, w)), (t, h, w)).copy()
    from retina.model import movie_invariance
    assert movie_invariance(movie) == kind
    fast = tiny.predict(movie, dtype=np.float64)
    ref = naive.forward(tiny, movie)
    assert relerr(fast, ref) < 1e-12


def test_random_model_is_trained_like():
    m = RetinaCNN.random(6, seed=3)
    from retina.stimuli import natural_movie, white_noise
    movies = (white_noise(300, seed=0).movie, natural_movie(300, seed=0).movie / 0.3,
              natural_movie(300, seed=1).movie)
    for movie in movies:
        r = m.predict(movie)
        assert np.isfinite(r).all() and (r >= 0).all()
        # neither vanishing nor exploding
        assert 0.3 < r.mean() < 60 and r.max() < 500 and (r.std(axis=0) > 0.05).mean() >= 0.5
    corr1 = m.layer1(white_noise(80, seed=1).movie)
    z1 = m.scale1 * corr1 + m.shift1
    active = (z1 > 0).mean()
    assert 0.2 < active < 0.8


def test_random_is_reproducible_and_seed_dependent():
    a, b, c = RetinaCNN.random(2, seed=5), RetinaCNN.random(2, seed=5), RetinaCNN.random(2, seed=6)
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_custom_architecture(rng):
    m = RetinaCNN.random(2, seed=0, channels=(16, 8), kernel_sizes=(15, 9), history=20, frame_shape=(40, 40))
    assert m.shape1 == (16, 26, 26) and m.shape2 == (8, 18, 18)
    movie = rng.standard_normal((25, 40, 40))
    assert relerr(m.predict(movie, dtype=np.float64), naive.forward(m, movie)) < 1e-12


def test_from_arrays_per_channel_vector_affine(rng):
    m = small_model()
    arrays = m.arrays
    arrays["scale1"] = np.ones(m.shape1[0])
    arrays["shift1"] = np.zeros(m.shape1[0])
    with pytest.raises(ValueError, match="frame_shape is required"):
        RetinaCNN(**arrays)  # non-square frame: cannot be inferred from per-channel affine
    m2 = RetinaCNN(**arrays, frame_shape=m.frame_shape)
    assert m2.scale1.shape == (m.shape1[0], 1, 1) and m2.frame_shape == m.frame_shape


@pytest.mark.parametrize("offset", [0, 1, 3])
def test_rates_align_with_response_bins(tiny, rng, offset):
    """Row t of rates() is response bin t: the window ending ``response_offset`` frames before t."""
    net = RetinaCNN(**tiny.arrays, frame_shape=tiny.frame_shape, response_offset=offset)
    movie = rng.standard_normal((30,) + tiny.frame_shape).astype(np.float32)
    r = net.rates(movie)
    assert r.shape == (30, net.n_cells)
    lead = np.zeros((net.history - 1 + offset,) + net.frame_shape, np.float32)
    full = net.predict(np.concatenate([lead, movie[:30 - offset]]))
    np.testing.assert_array_equal(r, full)
    direct = net.predict(movie)                         # row i: window [i, i + history) -> bin i + history - 1 + offset
    bins = net.window_bins(len(direct))
    assert bins[0] == net.history - 1 + offset
    keep = bins < 30
    np.testing.assert_allclose(r[bins[keep]], direct[keep], rtol=2e-5)  # other batching


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_gpu_predict_equals_cpu_numpy_in_numpy_out_cupy_in_cupy_out(method):
    from retina import _backend

    if _backend._gpu_unavailable_reason() is not None:
        pytest.skip(f"no GPU: {_backend._gpu_unavailable_reason()}")
    import cupy

    m = RetinaCNN.random(3, seed=5)
    movie = np.random.default_rng(5).standard_normal((90, 50, 50)).astype(np.float32)
    ref = m.predict(movie, backend="cpu", layer1_method=method)
    got = m.predict(movie, backend="gpu", layer1_method=method)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    dev = m.predict(cupy.asarray(movie), layer1_method=method)
    assert isinstance(dev, cupy.ndarray)
    np.testing.assert_allclose(dev.get(), got, rtol=1e-6)
    with pytest.raises(ValueError, match="CuPy"):
        m.predict(cupy.asarray(movie), backend="cpu")
    # the contrast-unit interface and layer 1 keep the same rule (the phenomena call rates on NumPy movies)
    contrast = np.clip(movie[:60] / 3, -1, 1)
    r_cpu, r_gpu = m.rates(contrast, backend="cpu"), m.rates(contrast)
    assert isinstance(r_gpu, np.ndarray)
    np.testing.assert_allclose(r_gpu, r_cpu, rtol=1e-4, atol=1e-4 * np.abs(r_cpu).max())
    assert isinstance(m.rates(cupy.asarray(contrast)), cupy.ndarray)
    l1 = m.layer1(movie[:50], backend="gpu", method=method)
    assert isinstance(l1, np.ndarray)
    ref1 = m.layer1(movie[:50], method=method)
    np.testing.assert_allclose(l1, ref1, rtol=1e-4, atol=1e-4 * np.abs(ref1).max())


def test_rates_take_contrast_units_and_apply_the_models_norm_stats(tiny, rng):
    """The trap of a model trained on z-scored stimuli: ``rates`` converts contrast with the model's own
    norm_stats and pads with grey in model units; ``predict`` keeps model units."""
    m = RetinaCNN(**tiny.arrays, frame_shape=tiny.frame_shape, norm_stats={"mean": 0.2, "std": 0.5})
    movie = rng.uniform(-1, 1, (30,) + tiny.frame_shape).astype(np.float32)
    z = (movie - np.float32(0.2)) / np.float32(0.5)
    lead = np.full((tiny.history,) + tiny.frame_shape, (0.0 - 0.2) / 0.5, np.float32)   # history - 1 + offset 1
    np.testing.assert_array_equal(m.rates(movie), m.predict(np.concatenate([lead, z[:-1]])))
    np.testing.assert_array_equal(m.rates(z, units="model"), m.rates(movie))
    np.testing.assert_array_equal(m.predict(movie, units="contrast"), m.predict(z))
    assert not np.allclose(m.rates(movie), tiny.rates(movie))   # the conversion matters
    with pytest.raises(ValueError, match="units must be one of"):
        m.rates(movie, units="volts")


def test_intensity_unit_models_convert_contrast_around_their_mean_and_warn_out_of_range(tiny, rng):
    """A lab model (norm_stats of raw 0-255 pixels): contrast c is shown as mean * (1 + c); raw pixels as is."""
    lab = RetinaCNN(**tiny.arrays, frame_shape=tiny.frame_shape, norm_stats={"mean": 120.0, "std": 40.0},
                    input_units="intensity")
    c = rng.uniform(-1, 1, (30,) + tiny.frame_shape).astype(np.float32)
    pixels = 120.0 * (1 + c)
    np.testing.assert_allclose(lab.predict(c, units="contrast"), lab.predict(pixels, units="intensity"), rtol=1e-5)
    assert lab.grey == 0.0
    with pytest.raises(ValueError, match="cannot be converted for a model trained on contrast"):
        tiny.predict(pixels, units="intensity")
    with pytest.warns(RuntimeWarning, match="training-stimulus s.d."):
        lab.predict(pixels * 100, units="intensity")
    with pytest.warns(RuntimeWarning, match="extrapolation"):
        lab.rates(c * 1000)
