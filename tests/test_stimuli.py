"""Stimulus generators: shapes, events, reproducibility, sub-pixel rendering, parameter errors."""

import numpy as np
import pytest

from retina import stimuli as S


@pytest.mark.parametrize("name,kwargs", [
    ("flash", {}), ("step", {}), ("flash_train", {}), ("paired_flash", {}), ("contrast_steps", {}),
    ("full_field_noise", {"n_frames": 50}), ("white_noise", {"n_frames": 30}), ("bar_noise", {"n_frames": 30}),
    ("bar_motion", {"n_frames": 300}), ("flash_sequence", {"n_frames": 300}), ("moving_bar", {}),
    ("flashed_bar", {"position": 20.3}), ("reversing_grating", {}), ("natural_movie", {"n_frames": 120}),
])
def test_every_generator_returns_float32_movies(name, kwargs):
    st = S.GENERATORS[name](**kwargs)
    assert isinstance(st, S.Stimulus)
    assert st.movie.dtype == np.float32 and st.movie.ndim == 3 and st.movie.flags.c_contiguous
    assert st.movie.shape[1:] == (50, 50)
    assert st.params["kind"] == name
    assert np.isfinite(st.movie).all()


def test_random_generators_are_reproducible_from_seed():
    for gen in (lambda s: S.natural_movie(200, seed=s), lambda s: S.white_noise(20, seed=s),
                lambda s: S.contrast_steps(durations=(10, 10, 10), seed=s),
                lambda s: S.full_field_noise(40, seed=s), lambda s: S.bar_noise(40, seed=s),
                lambda s: S.bar_motion(400, seed=s), lambda s: S.flash_sequence(400, seed=s)):
        a, b, c = gen(3).movie, gen(3).movie, gen(4).movie
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_flash_train_events_and_omission():
    st = S.flash_train(10, 12, intensity=-1.0, duration=2, pre=100, post=100)
    on = st.events["flash_frames"]
    np.testing.assert_array_equal(on, 100 + 12 * np.arange(10))
    assert int(st.events["omitted_frame"]) == on[-1] + 12
    trace = st.movie[:, 0, 0]
    assert np.all(trace[on] == -1) and np.all(trace[on + 1] == -1) and np.all(trace[on + 2] == 0)
    assert np.all(trace[int(st.events["omitted_frame"]):] == 0)
    assert np.ptp(st.movie, axis=(1, 2)).max() == 0  # full field
    assert S.period_frames(6) == 17 and S.period_frames(16) == 6 and S.period_frames(10) == 10


def test_moving_bar_subpixel_area_and_centre():
    st = S.moving_bar(0.13, width=2.0, intensity=-1.0)
    c = st.events["center"]
    prof = -st.movie[:, 0, :].astype(np.float64)
    x = np.arange(50)
    inside = (c > 2) & (c < 47)
    # every fully visible frame carries exactly width x intensity, centred on the event's centre
    np.testing.assert_allclose(prof[inside].sum(1), 2.0, atol=1e-5)
    np.testing.assert_allclose((prof[inside] * x).sum(1) / prof[inside].sum(1), c[inside], atol=1e-4)
    np.testing.assert_allclose(np.diff(c[np.isfinite(c)]), 0.13, atol=1e-9)
    assert np.all(st.movie == st.movie[:, :1, :])  # spans all rows


def test_moving_bar_reversal_event():
    st = S.moving_bar(0.14, start=2.0, reverse_at=25.0)
    rev = int(st.events["reversal_frame"])
    c = st.events["center"]
    assert c[rev] == pytest.approx(25.0)
    assert c[rev - 1] < 25 and c[rev + 1] < 25
    assert np.all(np.diff(c[:rev + 1]) > 0) and np.all(np.diff(c[rev:]) < 0)


def test_flashed_bar_and_grating():
    st = S.flashed_bar(10.25, width=3.0, intensity=-1.0, duration=2, delay=5, post=5)
    assert np.all(st.movie[:5] == 0) and np.all(st.movie[7:] == 0)
    np.testing.assert_allclose(-st.movie[5, 0].sum(), 3.0, rtol=1e-6)
    g = S.reversing_grating(4, half_period=10, n_reversals=3, pre=5)
    np.testing.assert_array_equal(g.movie[5], -g.movie[15])
    assert set(np.unique(g.movie[5])) <= {-1.0, 0.0, 1.0}


def test_natural_movie_statistics_and_events():
    st = S.natural_movie(3000, seed=2)
    assert 0.15 < st.movie.std() < 0.5
    sac = st.events["saccade_frames"]
    gaps = np.diff(sac)
    assert sac[0] == 0 and gaps.min() >= 50 and gaps.max() <= 150
    assert st.events["object_frames"].shape[1] == 2


@pytest.mark.parametrize("call,match", [
    (lambda: S.flash(duration=-2), "duration"),
    (lambda: S.flash(intensity="dark"), "intensity"),
    (lambda: S.flash_train(period=1, duration=2), "duration"),
    (lambda: S.moving_bar(0.1, width=60), "width"),
    (lambda: S.moving_bar(0.0), "speed"),
    (lambda: S.moving_bar(0.1, start=30, reverse_at=20), "reverse_at"),
    (lambda: S.white_noise(10, contrast=-1), "contrast"),
    (lambda: S.natural_movie(10, frame_shape=(50,)), "frame_shape"),
    (lambda: S.contrast_steps(sds=(0.1, 0.2), durations=(10,)), "equal length"),
    (lambda: S.reversing_grating(kind="triangle"), "kind"),
    (lambda: S.natural_movie(10, drift=float("nan")), "drift"),
])
def test_parameter_errors_are_clear(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bar_noise_is_constant_along_rows_with_bars_of_the_given_width():
    st = S.bar_noise(60, (12, 21), contrast=0.5, width=3, hold=2, seed=1)
    m = st.movie
    assert m.shape == (60, 12, 21) and np.ptp(m, axis=1).max() == 0          # every column uniform
    assert np.all(m[0::2] == m[1::2])                                      # held 2 frames
    cols = m[:, 0, :]
    assert np.all(cols[:, 0:18:3] == cols[:, 1:18:3]) and np.all(cols[:, 0:18:3] == cols[:, 2:18:3])
    assert set(np.unique(m)) == {-0.5, 0.5}
    assert st.params["width"] == 3
    with pytest.raises(ValueError, match="width"):
        S.bar_noise(10, width=0)


def test_flash_sequence_draws_flashes_from_grey_within_its_ranges():
    st = S.flash_sequence(20000, (6, 7), contrasts=(0.1, 0.9), durations=(2, 3), gaps=(10, 30), seed=5)
    m = st.movie
    assert m.shape == (20000, 6, 7) and np.ptp(m, axis=(1, 2)).max() == 0    # full field
    lum = m[:, 0, 0]
    starts, values = st.events["flash_frames"], st.events["intensity"]
    assert len(starts) > 400 and (values > 0).any() and (values < 0).any()
    assert np.abs(values).min() >= 0.1 - 1e-9 and np.abs(values).max() <= 0.9 + 1e-9
    on = np.flatnonzero(lum != 0)
    runs = np.split(on, np.flatnonzero(np.diff(on) > 1) + 1)       # each flash a run of 2-3 frames
    assert [r[0] for r in runs] == list(starts)
    assert all(2 <= len(r) <= 3 for r in runs[:-1])          # the last may be cut by the end
    gaps = np.array([b[0] - a[-1] - 1 for a, b in zip(runs[:-1], runs[1:])])
    assert gaps.min() >= 10 and gaps.max() <= 30
    np.testing.assert_allclose(lum[starts], values, rtol=1e-6)
    with pytest.raises(ValueError, match="ranges"):
        S.flash_sequence(10, durations=(4, 2))
    with pytest.raises(ValueError, match="contrasts"):
        S.flash_sequence(10, contrasts=(0.0, 1.0))


@pytest.mark.parametrize("polarity, sign", [("dark", -1), ("bright", 1)])
def test_flash_sequence_polarity_forces_the_sign_of_the_same_draws(polarity, sign):
    both = S.flash_sequence(3000, (3, 3), seed=4)
    one = S.flash_sequence(3000, (3, 3), polarity=polarity, seed=4)
    np.testing.assert_array_equal(one.events["flash_frames"], both.events["flash_frames"])
    np.testing.assert_allclose(one.events["intensity"], sign * np.abs(both.events["intensity"]))
    np.testing.assert_allclose(one.movie, sign * np.abs(both.movie))
    assert one.params["polarity"] == polarity
    with pytest.raises(ValueError, match="polarity must be 'both', 'dark' or 'bright', got 'off'"):
        S.flash_sequence(10, polarity="off")


def test_bar_motion_draws_single_moving_bars_within_its_ranges():
    st = S.bar_motion(6000, (8, 30), speeds=(0.05, 0.5), widths=(2.0, 3.0), contrasts=(0.4, 0.8), gaps=(5, 20),
                      seed=2)
    m, c, v = st.movie, st.events["center"], st.events["velocity"]
    assert m.shape == (6000, 8, 30) and np.ptp(m, axis=1).max() == 0          # constant along rows
    present = np.isfinite(c)
    assert 0.05 < (~present).mean() < 0.5 and np.all(m[~present] == 0)      # grey gaps between bars
    lum = m[:, 0, :]
    on = present & (np.abs(lum).max(1) > 0)
    # one polarity per frame; inside the frame a bar of >= 2 px covers a whole pixel at its contrast,
    # and its area is its width times its contrast
    assert np.all((lum[on] >= 0).all(1) | (lum[on] <= 0).all(1))
    inside = on & (c > 3) & (c < 26)
    peak = np.abs(lum[inside]).max(1)
    assert peak.min() >= 0.4 - 1e-6 and peak.max() <= 0.8 + 1e-6
    area = np.abs(lum[inside]).sum(1) / peak
    assert area.min() >= 2.0 - 1e-4 and area.max() <= 3.0 + 1e-4
    speed = np.abs(v[1:][present[1:] & present[:-1]])
    speed = speed[speed > 0]
    assert speed.min() >= 0.05 - 1e-9 and speed.max() <= 0.5 + 1e-9
    assert (v[1:][present[1:] & present[:-1]] > 0).any() and (v[1:][present[1:] & present[:-1]] < 0).any()
    with pytest.raises(ValueError, match="speeds"):
        S.bar_motion(10, speeds=(0.5, 0.1))
    with pytest.raises(ValueError, match="width"):
        S.bar_motion(10, widths=(1.0, 99.0))


# ---------------------------------------------------------------- the physical domain
@pytest.mark.parametrize("make", [
    lambda: S.flash(-1.5), lambda: S.flash_train(4, 8, intensity=-2.0), lambda: S.moving_bar(0.1, intensity=-1.2),
    lambda: S.flashed_bar(0.0, intensity=-3.0), lambda: S.white_noise(10, binary=True, contrast=1.5),
    lambda: S.full_field_noise(10, binary=True, contrast=2.0), lambda: S.reversing_grating(contrast=1.5),
    lambda: S.bar_motion(100, contrasts=(0.3, 1.5)), lambda: S.flash_sequence(100, contrasts=(0.1, 2.0))])
def test_nothing_darker_than_black_is_made(make):
    with pytest.raises(ValueError, match="black|<= 1"):
        make()


def test_noise_shows_a_darker_draw_as_black():
    for st in (S.white_noise(200, contrast=1.0, seed=1), S.full_field_noise(2000, contrast=0.6, seed=1),
               S.contrast_steps((0.8,), (2000,)), S.natural_movie(300, seed=2, contrast=0.6)):
        assert st.movie.min() >= -1.0
    assert (S.white_noise(200, contrast=1.0, seed=1).movie == -1.0).mean() > 0.1   # clipped, not rescaled


def test_the_simulator_refuses_a_darker_than_black_movie():
    from retina.insilico import InSilicoRetina

    movie = np.zeros((20, 50, 50))
    movie[5] = -1.0
    InSilicoRetina().rates(movie)                     # black is fine
    movie[6] = -1.2
    with pytest.raises(ValueError, match="darkest value is -1.2"):
        InSilicoRetina().rates(movie)
