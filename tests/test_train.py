"""Training: hand-written gradients against finite differences, folding, a smoke fit, resumption, bad data."""

import numpy as np
import pytest

from retina.train import TrainConfig, evaluate, init_params, loss_and_grads, to_model, train

CFG = TrainConfig(channels=(3, 2), kernel_sizes=(4, 3), history=5, batch=12, segments=3, noise=0.0, l2=0.01)


def _batch(rng, cfg=CFG, frame=(9, 10), n_cells=2, dtype=np.float64):
    params, running = init_params(cfg, n_cells, frame, mean_rate=3.0, rng=rng)
    params = {k: v.astype(dtype) for k, v in params.items()}
    params["w3"] *= 30  # a readout large enough that every layer matters
    run = cfg.batch // cfg.segments
    segs = [rng.standard_normal((run + cfg.history - 1,) + frame).astype(dtype) for _ in range(cfg.segments)]
    y = rng.poisson(3.0, (cfg.batch, n_cells)).astype(dtype)
    return params, segs, y


# layer 2 by direct loops (3x3 kernel) and by FFT (6x6 = 36 taps, the FFT threshold; spectrum reused)
CFG_FFT2 = TrainConfig(channels=(3, 2), kernel_sizes=(4, 6), history=5, batch=12, segments=3, noise=0.0, l2=0.01)


@pytest.mark.parametrize("cfg", [CFG, CFG_FFT2], ids=["direct-layer2", "fft-layer2"])
def test_gradients_match_finite_differences(rng, cfg):
    params, segs, y = _batch(rng, cfg=cfg, frame=(12, 13))
    loss, grads, _ = loss_and_grads(params, segs, y, cfg)
    assert np.isfinite(loss)
    for name in ("w1", "g1", "b1", "w2", "g2", "b2", "w3", "b3"):
        for _ in range(3):
            idx = tuple(int(rng.integers(0, s)) for s in params[name].shape)
            fd = _fd(params, segs, y, name, idx, cfg=cfg)
            assert grads[name][idx] == pytest.approx(fd, rel=1e-4, abs=1e-9), (name, idx)


def _fd(params, segs, y, name, idx, h=1e-5, cfg=CFG, **kw):
    """Central finite difference of the loss in one parameter."""
    plus = {k: v.copy() for k, v in params.items()}
    minus = {k: v.copy() for k, v in params.items()}
    plus[name][idx] += h
    minus[name][idx] -= h
    return (loss_and_grads(plus, segs, y, cfg, want_grads=False, **kw)[0]
            - loss_and_grads(minus, segs, y, cfg, want_grads=False, **kw)[0]) / (2 * h)


def test_folded_model_equals_the_training_forward_in_eval_mode(rng):
    params, segs, y = _batch(rng, dtype=np.float32)
    _, running = init_params(CFG, 2, (9, 10), rng=rng)
    running = {"m1": rng.standard_normal(running["m1"].shape).astype(np.float32),
               "v1": rng.uniform(0.5, 2, running["v1"].shape).astype(np.float32),
               "m2": rng.standard_normal(running["m2"].shape).astype(np.float32),
               "v2": rng.uniform(0.5, 2, running["v2"].shape).astype(np.float32)}
    model = to_model(params, running, CFG, frame_shape=(9, 10))
    seg = segs[0].astype(np.float64)
    # eval-mode forward written out directly
    from numpy.lib.stride_tricks import sliding_window_view as swv
    p = {k: v.astype(np.float64) for k, v in {**params, **running}.items()}
    c1 = np.einsum("nyxtuv,ctuv->ncyx", swv(seg, p["w1"].shape[1:]), p["w1"])
    h1 = np.maximum(p["g1"] * (c1 - p["m1"]) / np.sqrt(p["v1"] + CFG.bn_eps) + p["b1"], 0)
    c2 = np.einsum("nbyxuv,cbuv->ncyx", swv(h1, p["w2"].shape[2:], axis=(2, 3)), p["w2"])
    h2 = np.maximum(p["g2"] * (c2 - p["m2"]) / np.sqrt(p["v2"] + CFG.bn_eps) + p["b2"], 0)
    r = np.logaddexp(0, h2.reshape(len(h2), -1) @ p["w3"].T + p["b3"])
    np.testing.assert_allclose(model.predict(seg, dtype=np.float64), r, rtol=1e-10)


def _toy_data(n=1600, frame=(12, 12), seed=0):
    """A known linear-nonlinear cell as ground truth: the CNN must learn it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + frame).astype(np.float32)
    k = np.zeros((5, 4, 4))
    k[-2, 1:3, 1:3] = 1.0
    k[-3, 1:3, 1:3] = 0.5
    drive = np.zeros(n)
    for t in range(4, n):
        drive[t] = (x[t - 4:t + 1, 4:8, 4:8] * k).sum()
    rate = 20 * np.logaddexp(0, drive - 1)
    y = np.zeros((n, 1), np.float32)
    y[1:, 0] = rate[:-1]  # bin t + 1 pairs with the window ending at t (deep-retina convention)
    return x, y


SMOKE = dict(channels=(4, 3), kernel_sizes=(5, 3), history=5, epochs=8, epoch_windows=1200, batch=60,
             segments=6, lr=1e-2, noise=0.0, l2=1e-4, val_fraction=0.2, seed=1)


def test_tiny_model_learns_a_known_cell():
    x, y = _toy_data()
    res = train(x, y, progress=False, **SMOKE)
    assert res.best_val_corr > 0.8, res.history
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


def test_interrupted_training_resumes_to_the_same_model(tmp_path):
    x, y = _toy_data(900)
    kw = dict(SMOKE, epochs=3, epoch_windows=300)
    full = train(x, y, progress=False, **kw)
    ck = tmp_path / "ck.h5"
    part = train(x, y, progress=False, checkpoint=ck, max_epochs=1, **kw)
    assert part.stopped == "max_epochs" and ck.exists()
    rest = train(x, y, progress=False, checkpoint=ck, **kw)
    assert [h["epoch"] for h in rest.history] == [1, 2, 3]
    np.testing.assert_array_equal(rest.model.w1, full.model.w1)
    assert rest.best_val_corr == full.best_val_corr


def test_bad_training_data_is_refused():
    x, y = _toy_data(300)
    with pytest.raises(ValueError, match="one row per stimulus frame"):
        train(x, y[:-1], progress=False, **SMOKE)
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        train(x, bad, progress=False, **SMOKE)
    with pytest.raises(ValueError, match=">= 0"):
        train(x, -y, progress=False, **SMOKE)
    with pytest.raises(ValueError, match="multiple of segments"):
        train(x, y, progress=False, **dict(SMOKE, batch=61))


def test_several_streams_with_weights():
    x, y = _toy_data(1600)
    xs, ys = [x[:700], x[700:1400]], [y[:700], y[700:1400]]
    valid = (x[1400:], y[1400:])
    res = train(xs, ys, valid=valid, progress=False, **dict(SMOKE, stream_weights=(0.3, 0.7)))
    assert res.best_val_corr > 0.8, res.history
    assert res.model.metadata["config"].count("stream_weights") == 1
    # a stream with zero weight is never drawn: poisoning it changes nothing
    poisoned = [np.full_like(xs[0], 50.0), xs[1]]
    kw = dict(SMOKE, epochs=1, stream_weights=(0.0, 1.0))
    a = train(poisoned, ys, valid=valid, progress=False, **kw)
    b = train(xs, ys, valid=valid, progress=False, **kw)
    np.testing.assert_array_equal(a.model.w1, b.model.w1)
    with pytest.raises(ValueError, match="stream_weights has 3 entries"):
        train(xs, ys, valid=valid, progress=False, **dict(SMOKE, stream_weights=(1, 1, 1)))
    with pytest.raises(ValueError, match="same number of streams"):
        train(xs, ys[:1], valid=valid, progress=False, **SMOKE)
    with pytest.raises(ValueError, match="pass valid="):
        train(xs, ys, progress=False, **SMOKE)


def test_compact_streams_train_the_same_model_as_float32_ones():
    from retina.io.dataset import CompactMovie, decode_uint8

    x, y = _toy_data(1600)
    codes = np.clip(np.rint(127.5 + 40 * x), 0, 255).astype(np.uint8)   # the toy movie, quantised
    table = (decode_uint8(np.arange(256, dtype=np.uint8)) - np.float32(0.01)) / np.float32(0.3)
    movie = CompactMovie(codes, table.astype(np.float32))
    dense = np.asarray(movie)
    valid = (dense[1400:], y[1400:])
    kw = dict(SMOKE, epochs=2, epoch_windows=600)
    a = train([movie[:700], movie[700:1400]], [y[:700], y[700:1400]], valid=valid, progress=False, **kw)
    b = train([dense[:700], dense[700:1400]], [y[:700], y[700:1400]], valid=valid, progress=False, **kw)
    for name in ("w1", "w2", "w3"):
        np.testing.assert_array_equal(getattr(a.model, name), getattr(b.model, name))


def test_sample_weighted_loss_gradients_match_finite_differences(rng):
    params, segs, y = _batch(rng)
    sw = rng.uniform(0.1, 5.0, len(y))
    loss, grads, _ = loss_and_grads(params, segs, y, CFG, sample_weights=sw)
    plain = loss_and_grads(params, segs, y, CFG)[0]
    assert loss != pytest.approx(plain)
    for name in ("w1", "w3"):
        idx = tuple(int(rng.integers(0, s)) for s in params[name].shape)
        fd = _fd(params, segs, y, name, idx, sample_weights=sw)
        assert grads[name][idx] == pytest.approx(fd, rel=1e-4, abs=1e-9), name


def test_frame_weights_weight_each_target_frame(tmp_path):
    x, y = _toy_data(900)
    kw = dict(SMOKE, epochs=1, epoch_windows=300)
    valid = (x[700:], y[700:])
    x, y = x[:700], y[:700]
    plain = train(x, y, valid=valid, progress=False, **kw)
    ones = train(x, y, valid=valid, progress=False, frame_weights=np.ones(len(x)), **kw)
    np.testing.assert_array_equal(ones.model.w1, plain.model.w1)
    # weight 2 everywhere is the stream loss weight 2
    a = train(x, y, valid=valid, progress=False, frame_weights=[np.full(len(x), 2.0)], **kw)
    b = train([x], [y], valid=valid, progress=False, **dict(kw, stream_loss_weights=(2.0,)))
    np.testing.assert_array_equal(a.model.w1, b.model.w1)
    assert not np.array_equal(a.model.w1, plain.model.w1)
    # frames of weight 0 do not count: poisoning their targets changes nothing (from the same start:
    # a fresh start's readout bias follows the mean rate)
    start = tmp_path / "start.h5"
    train(x, y, valid=valid, progress=False, checkpoint=start, **kw)
    fw = np.ones(len(x))
    fw[200:450] = 0.0
    poisoned = y.copy()
    poisoned[200:450] *= 40.0
    c = train(x, poisoned, valid=valid, progress=False, frame_weights=fw, init_from=start, **kw)
    d = train(x, y, valid=valid, progress=False, frame_weights=fw, init_from=start, **kw)
    np.testing.assert_array_equal(c.model.w1, d.model.w1)
    e = train(x, poisoned, valid=valid, progress=False, init_from=start, **kw)
    assert not np.array_equal(e.model.w1, d.model.w1)
    with pytest.raises(ValueError, match=r"frame_weights must have one weight per stimulus frame \(700\), got 699"):
        train(x, y, valid=valid, progress=False, frame_weights=fw[:-1], **kw)
    with pytest.raises(ValueError, match="frame_weights lists 2 streams, the stimulus 1"):
        train(x, y, valid=valid, progress=False, frame_weights=[fw, fw], **kw)
    with pytest.raises(ValueError, match=r"frame_weights\[1\] must be finite and >= 0"):
        train([x, x], [y, y], valid=valid, progress=False, frame_weights=[None, -fw], **kw)


def test_several_validation_sets_count_equally():
    x, y = _toy_data(1600)
    sets = [(x[1000:1300], y[1000:1300]), (x[1300:], 3 * y[1300:])]
    kw = dict(SMOKE, epochs=2)
    res = train(x[:1000], y[:1000], valid=sets, progress=False, **kw)

    expect = np.mean([evaluate(res.model, xv, yv)[0].mean() for xv, yv in sets])
    assert res.best_val_corr == pytest.approx(expect, rel=1e-6)
    with pytest.raises(ValueError, match="list of such pairs"):
        train(x[:1000], y[:1000], valid=[x[1000:]], progress=False, **kw)


def test_frozen_layers_are_left_as_they_are(tmp_path):
    import h5py

    x, y = _toy_data(900)
    kw = dict(SMOKE, epochs=2, epoch_windows=300)
    ck = tmp_path / "base.h5"
    train(x, y, progress=False, checkpoint=ck, **kw)
    with h5py.File(ck, "r") as f:
        start = {k: f["best"][k][()] for k in ("w1", "g1", "b1", "w2")}
    ft = tmp_path / "ft.h5"
    res = train(x, y, progress=False, checkpoint=ft, init_from=ck, **dict(kw, freeze=("layer1", "b3")))
    np.testing.assert_array_equal(res.model.w1, start["w1"])
    with h5py.File(ft, "r") as f:
        for k in ("g1", "b1"):
            np.testing.assert_array_equal(f["params"][k][()], start[k])
        assert not np.array_equal(f["params"]["w2"][()], start["w2"])   # the rest still learns
    assert TrainConfig(freeze="layer2").validate().freeze == ("w2", "g2", "b2")
    with pytest.raises(ValueError, match="freeze: unknown parameter 'conv9'"):
        train(x, y, progress=False, **dict(kw, freeze=("conv9",)))
    # planted filters: init_from a dict of parameters, kept with freeze (the recovery benchmark's planted layer 1)
    planted = np.random.default_rng(3).standard_normal(start["w1"].shape).astype(np.float32)
    res = train(x, y, progress=False, init_from={"w1": planted}, **dict(kw, freeze=("w1",)))
    np.testing.assert_array_equal(res.model.w1, planted)
    with pytest.raises(ValueError, match="init_from: w1 has shape"):
        train(x, y, progress=False, init_from={"w1": planted[:1]}, **kw)
    with pytest.raises(ValueError, match="init_from: unknown parameter 'w9'"):
        train(x, y, progress=False, init_from={"w9": planted}, **kw)


def test_a_score_selects_the_epoch():
    x, y = _toy_data(900)
    kw = dict(SMOKE, epochs=3, epoch_windows=300, patience=5, lr_patience=5)
    marks = iter([0.5, 0.9, 0.1])
    seen = []

    def score(model, val_corr):
        assert -1 <= val_corr <= 1
        seen.append(model.w1.copy())
        return next(marks)

    res = train(x, y, progress=False, score=score, **kw)
    assert res.best_epoch == 2 and res.best_score == 0.9
    assert [h["score"] for h in res.history] == [0.5, 0.9, 0.1]
    assert res.best_val_corr == res.history[1]["val_corr"]
    np.testing.assert_allclose(res.model.w1, seen[1])   # the selected model is the one scored 0.9
    plain = train(x, y, progress=False, **kw)
    assert plain.best_score == plain.best_val_corr == max(h["val_corr"] for h in plain.history)
    # a score that takes val_corrs gets each validation set's mean correlation, in valid's order
    got = []

    def per_set(model, val_corr, val_corrs):
        got.append((val_corr, val_corrs))
        return val_corrs[1]

    sets = [(x[600:750], y[600:750]), (x[750:], y[750:])]
    res = train(x[:600], y[:600], valid=sets, progress=False, score=per_set, **kw)
    assert len(got) == 3 and all(len(c) == 2 and v == pytest.approx(np.mean(c)) for v, c in got)
    assert res.best_score == max(c[1] for _, c in got)
    best = got[res.best_epoch - 1][1]
    assert [float(evaluate(res.model, *v)[0].mean()) for v in sets] == pytest.approx(best, rel=1e-6)


def _gpu_or_skip():
    from retina import _backend

    reason = _backend._gpu_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no GPU: {reason}")
    return _backend.resolve("gpu")


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", [CFG, CFG_FFT2], ids=["direct-layer2", "fft-layer2"])
def test_gpu_loss_and_gradients_equal_the_cpu(rng, cfg):
    gpu = _gpu_or_skip()
    params, segs, y = _batch(rng, cfg=cfg, frame=(12, 13))
    sw = rng.uniform(0.5, 3, len(y))
    loss_c, grads_c, st_c = loss_and_grads(params, segs, y, cfg, sample_weights=sw)
    loss_g, grads_g, st_g = loss_and_grads(params, segs, y, cfg, sample_weights=sw, backend=gpu)
    assert loss_g == pytest.approx(loss_c, rel=1e-10)
    for k in grads_c:   # host arrays back, float64 both: equal to FFT rounding
        assert isinstance(grads_g[k], np.ndarray)
        np.testing.assert_allclose(grads_g[k], grads_c[k], rtol=1e-8, atol=1e-12 * np.abs(grads_c[k]).max())
    np.testing.assert_allclose(st_g["m1"], st_c["m1"], rtol=1e-10)


@pytest.mark.gpu
def test_gpu_training_learns_a_known_cell():
    _gpu_or_skip()
    x, y = _toy_data()
    res = train(x, y, progress=False, backend="gpu", **SMOKE)
    assert res.best_val_corr > 0.8, res.history
