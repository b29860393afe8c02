"""Channel typing and the reduced model (spec section 5)."""

import numpy as np
import pytest
from conftest import small_model

from retina import RetinaCNN, attribute
from retina import stimuli as S
from retina.reduction import channel_filters, classify_channels, prune, reduce


def test_channel_types_of_known_filters():
    m = RetinaCNN.random(2, seed=1, per_unit=False)
    w1 = np.zeros_like(m.w1)
    w1[0, 39 - 5] = 1.0      # ON, 60 ms to the predicted bin
    w1[1, 39 - 14] = -1.0    # OFF, 150 ms
    w1[2, 39 - 9] = -1.0     # OFF, 100 ms
    a = dict(m.arrays, w1=w1)
    m2 = RetinaCNN(**a, frame_shape=m.frame_shape)
    t = classify_channels(m2)
    assert [t[c]["type"] for c in range(3)] == ["ON-fast", "OFF-slow", "OFF-fast"]
    assert [t[c]["ttp_ms"] for c in range(3)] == [60.0, 150.0, 100.0]
    # a negative scale flips the effective polarity
    a["scale1"] = -np.asarray(m.scale1)
    assert classify_channels(RetinaCNN(**a, frame_shape=m.frame_shape))[0]["polarity"] == "OFF"
    assert channel_filters(m2).shape == (8, 40)


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


def test_reduce_full_share_reproduces_the_response():
    m = RetinaCNN.random(2, seed=3, per_unit=False)
    st = S.flash_train(5, 8, intensity=-2.0, pre=45, post=50)
    red = reduce(m, st.movie, cells=0, share=1.0, movie=st.movie, n_steps=64)
    attr = red.attribution
    # with every channel kept, the attribution sum is the response up to the completeness error
    np.testing.assert_allclose(red.attribution_sum, attr.response, atol=np.abs(attr.delta).max() + 1e-9)
    assert red.fidelity["pruned_corr"] == pytest.approx(1.0, abs=1e-6)
    shares = [c["share"] for c in red.channels]
    assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1.0)


def test_reduce_keeps_the_smallest_set_and_accepts_attributions():
    m = RetinaCNN.random(2, seed=3, per_unit=False)
    bar = S.moving_bar(0.5, intensity=-2.0)
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
