"""Measures on synthetic responses with known answers."""

import numpy as np
import pytest

from retina import measures as M


def bump(t_len, centre, width=3.0, height=50.0, base=5.0):
    t = np.arange(t_len, dtype=np.float64)
    return base + height * np.exp(-0.5 * ((t - centre) / width) ** 2)


def test_peak_interpolates_between_frames():
    for c in (40.0, 40.3, 40.5, 41.75):
        t, v = M.peak(bump(100, c, width=4.0), 0, 100)
        assert t == pytest.approx(c, abs=0.05)
        assert v == pytest.approx(55.0, rel=0.01)
    # a maximum at the window's edge is not extrapolated past it
    t, _ = M.peak(bump(100, 60.0), 0, 50)
    assert t == 49.0


def test_osr_measures_known_trace():
    flashes = 100 + 10 * np.arange(10)
    omitted = 200
    r = bump(400, 225.0, width=3.0, height=60.0) + bump(400, 195.0, width=2.0, height=10.0, base=0.0)
    m = M.osr(r, flashes, omitted)
    assert m["peak_after_omitted_ms"] == pytest.approx(250.0, abs=1.0)
    assert m["peak_after_last_ms"] == pytest.approx(350.0, abs=1.0)
    # amplitudes above the 5 Hz baseline: 60 Hz against 10 Hz
    assert m["osr_amplitude"] == pytest.approx(60.0, rel=0.02) and m["ratio"] == pytest.approx(60.0 / 10.0, rel=0.05)
    silent = M.osr(bump(400, 225.0, width=3.0, height=60.0), flashes, omitted)   # no response to the last flash
    assert silent["ratio"] == pytest.approx(60.0 / M.RATE_FLOOR_HZ, rel=0.02)   # the floor, not a division by ~0
    assert m["baseline"] == pytest.approx(5.0, abs=1e-6)
    assert m["period_ms"] == 100.0


def test_osr_slope_exact_line():
    periods = np.array([60.0, 80, 100, 120, 170])
    fit = M.osr_slope(periods, 0.9 * periods + 210.0)
    assert fit["slope"] == pytest.approx(0.9) and fit["intercept_ms"] == pytest.approx(210.0)
    assert M.osr_slope(periods, periods + 200.0)["latency_sd_ms"] == pytest.approx(0.0, abs=1e-9)


def test_latency_of_shifted_bumps():
    lat = [M.latency(bump(200, 50 + d, width=2.0), 50, window_ms=300.0) for d in (9.0, 8.0, 7.2)]
    assert [x["peak_ms"] for x in lat] == pytest.approx([90.0, 80.0, 72.0], abs=1.0)
    assert [x["com_ms"] for x in lat] == pytest.approx([90.0, 80.0, 72.0], abs=1.5)
    trend = M.latency_trend([-0.1, -0.5, -1.0], [x["peak_ms"] for x in lat])
    assert trend["monotonic"] == 1.0 and trend["delta_ms"] == pytest.approx(18.0, abs=1.5)
    assert trend["slope_ms_per_unit"] < 0
    assert M.latency_trend([-0.1, -0.5, -1.0], [80, 85, 70])["monotonic"] == 0.0


def test_latency_ignores_rates_under_min_rate():
    weak = bump(200, 58, height=2.0)            # 2 Hz above baseline: under docs/phenomena.md's 3 Hz
    m = M.latency(weak, 50, window_ms=300.0)
    assert np.isnan(m["peak_ms"]) and np.isnan(m["com_ms"])
    assert m["peak_rate"] - m["baseline"] == pytest.approx(2.0, abs=0.1)
    assert M.latency(weak, 50, window_ms=300.0, min_rate=1.0)["peak_ms"] == pytest.approx(80.0, abs=1.0)
    # a flash without a latency drops out of the trend: weakest = weakest measured
    trend = M.latency_trend([-0.1, -0.5, -1.0], [np.nan, 85.0, 70.0])
    assert trend["delta_ms"] == pytest.approx(15.0) and trend["monotonic"] == 1.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "3"])
def test_phenomena_latency_rejects_a_bad_min_rate(bad):
    from retina import phenomena as P
    from retina.insilico import InSilicoRetina

    with pytest.raises(ValueError, match="min_rate"):
        P.latency(InSilicoRetina(), min_rate=bad)


def test_reversal_burst_ratio_and_latency():
    rev = 150
    r = bump(400, 120, height=20.0) + bump(400, rev + 25, height=40.0, base=0.0)
    m = M.reversal(r, rev)
    assert m["latency_ms"] == pytest.approx(250.0, abs=1.0)
    assert m["ratio"] == pytest.approx(45.0 / 25.0, rel=0.02)
    assert M.reversal_spread([250, 260, 270])["latency_sd_ms"] == pytest.approx(np.std([250, 260, 270]))


def test_anticipation_sign_convention():
    speed = 0.1
    t = np.arange(600)
    centres = -2.0 + speed * t
    cell_x = 25.0
    arrival = (cell_x + 2.0) / speed  # frame where the bar centre reaches the cell
    lead = M.anticipation(bump(600, arrival - 20, width=5.0), centres, cell_x)  # peaks 2 px early
    assert lead["offset_px"] == pytest.approx(-2.0, abs=0.02)
    assert lead["lead_um"] == pytest.approx(110.0, abs=1.5)
    lag = M.anticipation(bump(600, arrival + 10, width=5.0), centres, cell_x)
    assert lag["offset_px"] == pytest.approx(1.0, abs=0.02)
    # leftward motion flips the sign convention so that negative still means "early"
    left = M.anticipation(bump(600, arrival - 20, width=5.0), 52.0 - speed * t, 25.0)  # bar at 27 px
    assert left["offset_px"] == pytest.approx(-2.0, abs=0.02)


def test_flash_peak_position():
    x = np.arange(0, 50, 1.0)
    v = 30 * np.exp(-0.5 * ((x - 23.4) / 3.0) ** 2)
    assert M.flash_peak_position(x, v) == pytest.approx(23.4, abs=0.1)


def test_measures_validate_inputs():
    with pytest.raises(ValueError, match="r must be"):
        M.osr(np.zeros((3, 4, 5)), [1], 2)
    with pytest.raises(ValueError, match="empty window"):
        M.peak(np.zeros(10), 8, 4)
    with pytest.raises(ValueError, match="centers"):
        M.anticipation(np.zeros(10), np.zeros(9), 1.0)
