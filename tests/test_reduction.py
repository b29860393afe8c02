"""Channel typing and the reduced model (docs/spec.md section 5)."""

import numpy as np
import pytest
from conftest import small_model

from retina import RetinaCNN, attribute
from retina import stimuli as S
from retina.reduction import channel_filters, classify_channels, downstream_signs, prune, reduce


def test_channel_types_of_known_filters():
    m = RetinaCNN.random(2, seed=1, per_unit=False)
    w1 = np.zeros_like(m.w1)
    w1[0, 39 - 5] = 1.0      # ON, 60 ms to the predicted bin
    w1[1, 39 - 14] = -1.0    # OFF, 150 ms
    w1[2, 39 - 9] = -1.0     # OFF, 100 ms
    a = dict(m.arrays, w1=w1)
    m2 = RetinaCNN(**a, frame_shape=m.frame_shape)
    t = classify_channels(m2, method="weights")
    assert [t[c]["type"] for c in range(3)] == ["ON-fast", "OFF-slow", "OFF-fast"]
    assert [t[c]["ttp_ms"] for c in range(3)] == [60.0, 150.0, 100.0]
    # the white-noise STA finds the same polarity and timing; the functional type also carries the sign of the
    # channel's effect downstream (an ON channel that inhibits the output acts as an OFF input)
    s = classify_channels(m2)
    assert [s[c]["sta_polarity"] for c in range(3)] == ["ON", "OFF", "OFF"]
    assert [s[c]["ttp_ms"] for c in range(3)] == [60.0, 150.0, 100.0]
    flip = {"ON": "OFF", "OFF": "ON"}
    for d in s[:3]:
        assert d["polarity"] == (d["sta_polarity"] if d["downstream"] > 0 else flip[d["sta_polarity"]])
    # a negative scale flips the effective polarity
    a["scale1"] = -np.asarray(m.scale1)
    assert classify_channels(RetinaCNN(**a, frame_shape=m.frame_shape), method="weights")[0]["polarity"] == "OFF"
    assert channel_filters(m2).shape == (8, 40)


def test_downstream_sign_follows_the_readout():
    """Flip a model's readout and every channel's downstream effect flips with it."""
    m = RetinaCNN.random(1, seed=2, per_unit=False)
    signs = downstream_signs(m)
    a = dict(m.arrays, w2=-np.asarray(m.w2))
    flipped = RetinaCNN(**a, frame_shape=m.frame_shape)
    assert set(np.unique(signs)) <= {-1.0, 1.0}
    assert (downstream_signs(flipped) != signs).mean() >= 0.5


def test_prune_keeps_baseline_activity(rng):
    m = small_model()
    movie = rng.standard_normal((20,) + m.frame_shape).astype(np.float32)
    np.testing.assert_allclose(prune(m, np.arange(m.w1.shape[0])).predict(movie), m.predict(movie), rtol=1e-6)
    p = prune(m, [0], baseline=0.25)
    # dropped channels see only the baseline: their layer-1 units equal those of a grey movie of 0.25
    grey = np.full_like(movie, 0.25)
    z_m = np.asarray(m.layer1(grey, dtype=np.float64)) * np.broadcast_to(m.scale1, m.shape1) + m.shift1
    z_p = np.asarray(p.layer1(movie, dtype=np.float64)) * np.broadcast_to(p.scale1, p.shape1) + p.shift1
    np.testing.assert_allclose(z_p[:, 1:], z_m[:, 1:], atol=1e-9)
    with pytest.raises(ValueError, match="keep must index"):
        prune(m, [7])


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_a_pruned_models_layer1_skips_its_zero_kernels_exactly(rng, method):
    """Layer 1 correlates only the channels with a nonzero kernel: the kept channels equal the full model's bit for
    bit and the dropped ones are exactly 0."""
    m = RetinaCNN.random(2, seed=5)
    movie = rng.standard_normal((m.history + 30,) + m.frame_shape).astype(np.float32)
    full = np.asarray(m.layer1(movie, method=method))
    p = prune(m, [1, 4, 6])
    got = np.asarray(p.layer1(movie, method=method))
    np.testing.assert_array_equal(got[:, [1, 4, 6]], full[:, [1, 4, 6]])
    assert not got[:, [0, 2, 3, 5, 7]].any()
    assert not np.asarray(prune(m, []).layer1(movie, method=method)).any()


def test_reduce_full_share_reproduces_the_response():
    m = RetinaCNN.random(2, seed=3, per_unit=False)
    st = S.flash_train(5, 8, intensity=-1.0, pre=45, post=50)
    red = reduce(m, st.movie, cells=0, share=1.0, movie=st.movie, n_steps=64)
    attr = red.attribution
    # with every channel kept, the attribution sum is the response up to the completeness error
    np.testing.assert_allclose(red.attribution_sum, attr.response, atol=np.abs(attr.delta).max() + 1e-9)
    assert red.fidelity["pruned_corr"] == pytest.approx(1.0, abs=1e-6)
    shares = [c["share"] for c in red.channels]
    assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0)


def test_reduce_keeps_the_smallest_set_and_accepts_attributions():
    m = RetinaCNN.random(2, seed=3, per_unit=False)
    bar = S.moving_bar(0.5, intensity=-1.0)
    attr = attribute(m, bar.movie, layer="conv1", cells=[0, 1], pool="rows", progress=False)
    red = reduce(m, attr, share=0.6, movie=bar.movie)
    imp = np.sort(red.importance)[::-1]
    k = len(red.kept)
    assert imp[:k].sum() >= 0.6 * imp.sum() - 1e-9 and imp[:k - 1].sum() < 0.6 * imp.sum()
    assert red.pooled.shape == (attr.values.shape[0], 2, 8, 36)
    assert red.channels[0]["filter"].shape == (40, 15)
    with pytest.raises(ValueError, match="share"):
        reduce(m, attr, share=0)
    with pytest.raises(ValueError, match="window"):
        reduce(m, attr, window=(50, 10))


def _layer2(model, movie):
    """Post-ReLU layer-2 activity (float64, plain numpy) for every window."""
    import naive

    corr1 = np.asarray(model.layer1(movie, dtype=np.float64))
    h1 = np.maximum(np.broadcast_to(model.scale1, model.shape1) * corr1 + model.shift1, 0)
    return np.maximum(np.broadcast_to(model.scale2, model.shape2) * naive.corr2d(h1, model.w2) + model.shift2, 0)


def test_ablate_conv2_clamps_channels_to_baseline_activity(rng):
    from retina.reduction import ablate, baseline_activity

    m = small_model()
    movie = rng.standard_normal((15,) + m.frame_shape).astype(np.float32)
    np.testing.assert_allclose(ablate(m, []).predict(movie), m.predict(movie), rtol=1e-6)
    a = ablate(m, [1, 3], baseline=0.3)
    full, lesioned = _layer2(m, movie), _layer2(a, movie)
    grey = _layer2(m, np.full((m.history,) + m.frame_shape, 0.3))[0]
    np.testing.assert_allclose(baseline_activity(m, 0.3)[1], grey, atol=1e-12)
    for o in range(m.shape2[0]):
        expect = np.broadcast_to(grey[o], full[:, o].shape) if o in (1, 3) else full[:, o]
        np.testing.assert_allclose(lesioned[:, o], expect, atol=1e-9)
    assert np.abs(lesioned[:, 1] - full[:, 1]).max() > 1e-3  # the movie did drive the channel
    with pytest.raises(ValueError, match="layer-2 channels"):
        ablate(m, [9])


def test_inhibitory_channels_find_a_channel_whose_readout_is_flipped(rng):
    from retina.reduction import inhibitory_channels

    m = small_model(per_unit=False)
    movie = 2.0 * rng.standard_normal((30,) + m.frame_shape).astype(np.float32)
    net = attribute(m, movie, layer="conv2", cells=0, pool="space", progress=False).values[:, 0].sum(axis=0)
    o = int(np.argmax(net))
    assert net[o] > 0
    assert o not in [d["channel"] for d in inhibitory_channels(m, movie, cells=0, min_share=0.0)]
    # flipping the channel's readout flips the sign of its gradient, not its activity: it now inhibits
    w3 = np.array(m.w3, np.float64).reshape((m.n_cells,) + m.shape2)
    w3[:, o] *= -1.0
    flipped = RetinaCNN(**dict(m.arrays, w3=w3.reshape(m.n_cells, -1)), frame_shape=m.frame_shape)
    found = inhibitory_channels(flipped, movie, cells=0, min_share=0.0)
    assert o in [d["channel"] for d in found]
    net_f = attribute(flipped, movie, layer="conv2", cells=0, pool="space", progress=False).values[:, 0].sum(0)
    assert [d["channel"] for d in found] == [int(c) for c in np.argsort(net_f) if net_f[c] < 0]
    assert all(d["net"] < 0 for d in found)


def test_bundled_model_reduces_a_flash_response_faithfully():
    """The shipped model (retina/data/default.h5): the OFF cells' flash response, reduced to the channels
    carrying 90 % of |IG|, is kept by the pruned network, and the full share reproduces it."""
    from retina import load_model
    from retina.phenomena import CNNProbe

    model = load_model("default")
    probe = CNNProbe(model)
    st = S.flash(-1.0, duration=2, delay=50, post=60)
    weights = np.zeros(model.n_cells)
    off = probe.cells_of("OFF")
    weights[off] = 1.0 / len(off)
    red = probe.reduce(st.movie, weights, (50, 65), share=0.9, n_steps=50)
    assert 1 <= len(red.kept) < model.w1.shape[0]
    assert red.fidelity["pruned_corr"] > 0.8, red.fidelity
    full = probe.reduce(st.movie, weights, (50, 65), share=1.0, n_steps=50)
    assert full.fidelity["pruned_corr"] == pytest.approx(1.0, abs=1e-6)
    assert np.abs(full.attribution.delta).max() < 1e-2 * np.ptp(full.attribution.response)


def test_reduce_with_context_attributes_only_the_stretch_around_the_window():
    """A window's attribution depends on its own frames only: attributing the window of interest with
    ``context`` frames either side gives the whole-movie rows (float32 kernels: 1e-5 of the largest value),
    the same kept channels, and the window and ``start`` in movie frames."""
    from retina.phenomena import CNNProbe

    model = RetinaCNN.random(3, seed=4, per_unit=False)
    probe = CNNProbe(model)
    st = S.moving_bar(0.3, width=2.0, intensity=-1.0)
    weights = np.array([0.5, 0.25, 0.25])
    whole = probe.reduce(st.movie, weights, (60, 80), n_steps=10)
    part = probe.reduce(st.movie, weights, (60, 80), n_steps=10, context=15)
    assert whole.start == 0 and part.start == 45
    assert part.window == (15, 35) and whole.window == (60, 80)
    assert part.pooled.shape[0] == 50 and part.pooled.ndim == 4  # bars: pooled over rows
    ref = whole.pooled[45:95]
    np.testing.assert_allclose(part.pooled, ref, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_array_equal(part.kept, whole.kept)
    np.testing.assert_allclose(part.pruned_response, whole.pruned_response[45:95], rtol=1e-5, atol=1e-6)
    # near the start of the movie the stretch is clipped
    early = probe.reduce(st.movie, weights, (5, 20), n_steps=10, context=15)
    assert early.start == 0 and early.window == (5, 20) and early.pooled.shape[0] == 35


def test_phenomena_reject_a_negative_context():
    from retina import phenomena as P

    with pytest.raises(ValueError, match="context_ms"):
        P.latency(RetinaCNN.random(2, seed=1, per_unit=False), intensities=(-1.0,), n_steps=4, context_ms=-10)
