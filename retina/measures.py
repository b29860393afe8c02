"""Measures of the four phenomena (``docs/phenomena.md``) on any response array.

Every function takes plain arrays: a rate trace aligned with the stimulus'
frames (row ``t`` = response in frame ``t``, 10 ms bins) and the stimulus'
event frames, and returns a dict of plain numbers.  They work the same on the
simulator's rates, a CNN's predictions (see :meth:`retina.RetinaCNN.rates`) and
recordings.  Times are in milliseconds, positions in pixels.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

from ._validate import as_float_array
from .units import FRAME_MS, UM_PER_PX

__all__ = ["peak", "osr", "osr_slope", "latency", "latency_trend", "reversal", "reversal_spread",
           "anticipation", "flash_peak_position"]



RATE_FLOOR_HZ = 1.0
"""Responses are compared as amplitudes above baseline; one under this many Hz counts as this many Hz."""

def _trace(name, r):
    r = as_float_array(name, r, dtype=np.float64, finite=False)
    if r.ndim == 2:
        r = r.mean(1)
    if r.ndim != 1:
        raise ValueError(f"{name} must be a trace (T,) or a population (T, cells), got shape {r.shape}")
    return r


def peak(r, start, stop):
    """Peak of ``r`` in frames ``[start, stop)``: ``(time_frames, value)`` with parabolic interpolation.

    The time is fractional (vertex of the parabola through the maximum and its
    neighbours); NaNs are ignored.
    """
    start, stop = max(int(start), 0), min(int(stop), len(r))
    if stop <= start:
        raise ValueError(f"empty window [{start}, {stop}) for a trace of {len(r)} frames")
    seg = r[start:stop]
    if np.all(np.isnan(seg)):
        return float("nan"), float("nan")
    i = int(np.nanargmax(seg))
    t, v = float(start + i), float(seg[i])
    j = start + i
    if 0 < j < len(r) - 1 and np.isfinite(r[j - 1]) and np.isfinite(r[j + 1]):
        a, b, c = r[j - 1], r[j], r[j + 1]
        den = a - 2 * b + c
        if den < 0 and a <= b and c <= b:  # a true local maximum: the vertex lies within half a frame
            off = 0.5 * (a - c) / den
            t += off
            v = b - 0.25 * (a - c) * off
    return t, v


def osr(r, flash_frames, omitted_frame, *, window_ms=450.0, onset_fraction=0.2):
    """Omitted-stimulus-response measures for one flash train.

    Parameters
    ----------
    r : array (T,) or (T, cells)
        Rates aligned with the stimulus (a population is averaged).
    flash_frames : array of int
        Flash onsets; ``omitted_frame`` is where the next would have started.
    window_ms : float
        The OSR is searched in ``[omitted, omitted + window_ms)``.

    Returns
    -------
    dict
        ``osr_peak`` (Hz), ``last_flash_response`` (peak during the train's last
        period, Hz), ``baseline`` (mean rate before the train), ``osr_amplitude``
        and ``last_flash_amplitude`` (the two peaks above the baseline),
        ``ratio`` (``osr_amplitude / max(last_flash_amplitude, RATE_FLOOR_HZ)``:
        amplitudes, not raw rates, and a last-flash response under
        :data:`RATE_FLOOR_HZ` counts as that floor, so a silent last flash does
        not make the ratio explode),
        ``peak_after_omitted_ms``, ``peak_after_last_ms``, ``onset_after_omitted_ms``
        (first crossing of ``onset_fraction`` of the peak above baseline),
        ``period_ms``.
    """
    r = _trace("r", r)
    flashes = np.asarray(flash_frames, np.int64).ravel()
    last, omitted = int(flashes[-1]), int(omitted_frame)
    period = omitted - last
    win = int(round(window_ms / FRAME_MS))
    base = float(np.nanmean(r[:max(flashes[0], 1)]))
    t_pk, v_pk = peak(r, omitted, omitted + win)
    _, v_last = peak(r, last, omitted)
    thr = base + onset_fraction * (v_pk - base)
    seg = r[omitted:omitted + win]
    above = np.flatnonzero(seg >= thr)
    onset = float(above[0]) * FRAME_MS if above.size else float("nan")
    amp, amp_last = v_pk - base, v_last - base
    return {"osr_peak": v_pk, "last_flash_response": v_last, "osr_amplitude": amp, "last_flash_amplitude": amp_last,
            "ratio": amp / max(amp_last, RATE_FLOOR_HZ),
            "baseline": base, "peak_after_omitted_ms": (t_pk - omitted) * FRAME_MS,
            "peak_after_last_ms": (t_pk - last) * FRAME_MS, "onset_after_omitted_ms": onset,
            "period_ms": period * FRAME_MS}


def osr_slope(periods_ms, peak_after_last_ms):
    """Fit ``t_peak - t_last = a * period + b`` across trains: ``{"slope", "intercept_ms", "latency_sd_ms"}``.

    A slope near 1 means the OSR keeps a fixed latency after the *omitted*
    flash; ``latency_sd_ms`` is the s.d. of the latency after the omitted flash.
    """
    p = np.asarray(periods_ms, np.float64)
    t = np.asarray(peak_after_last_ms, np.float64)
    ok = np.isfinite(p) & np.isfinite(t)
    if ok.sum() < 2:
        return {"slope": float("nan"), "intercept_ms": float("nan"), "latency_sd_ms": float("nan")}
    a, b = np.polyfit(p[ok], t[ok], 1)
    return {"slope": float(a), "intercept_ms": float(b), "latency_sd_ms": float(np.std(t[ok] - p[ok]))}


def latency(r, flash_frame, *, window_ms=150.0, upsample=10, min_rate=3.0):
    """Response latency after a flash: by peak time and by centre of mass.

    The response in ``[flash, flash + window_ms)`` minus the pre-flash
    baseline is upsampled ``upsample`` times with a cubic spline; values
    under ``min_rate`` Hz are ignored (``docs/phenomena.md``): they do not count
    towards the centre of mass, and a response whose peak stays under
    ``min_rate`` has no latency (a sub-Hz bump's "peak" is wherever a flat
    trace happens to be largest).

    Returns ``{"peak_ms", "com_ms", "peak_rate", "baseline"}`` (NaN latencies
    when nothing reaches ``min_rate``; ``peak_rate`` is given even then).
    """
    r = _trace("r", r)
    f = int(flash_frame)
    n = int(round(window_ms / FRAME_MS))
    base = float(np.nanmean(r[:f])) if f > 0 else 0.0
    seg = r[f:f + n + 1] - base
    if len(seg) < 4:
        raise ValueError(f"the trace must extend at least 4 frames past the flash at frame {f}")
    t = np.arange(len(seg)) * FRAME_MS
    fine = np.linspace(0.0, t[-1], (len(seg) - 1) * upsample + 1)
    y = CubicSpline(t, seg)(fine)
    i = int(np.argmax(y))
    yy = np.where(y >= min_rate, y, 0.0)
    com = float((fine * yy).sum() / yy.sum()) if yy.sum() > 0 else float("nan")
    peak_ms = float(fine[i]) if y[i] >= min_rate else float("nan")
    return {"peak_ms": peak_ms, "com_ms": com, "peak_rate": float(y[i] + base), "baseline": base}


def latency_trend(intensities, latencies_ms):
    """How latency changes with flash strength ``|intensity|``.

    Returns ``slope_ms_per_unit`` (least squares against ``|intensity|``),
    ``delta_ms`` (weakest minus strongest), ``monotonic`` (1.0 when
    non-increasing with strength, else 0.0) and ``violations`` (the largest
    increase between consecutive strengths, ms).
    """
    s = np.abs(np.asarray(intensities, np.float64))
    lat = np.asarray(latencies_ms, np.float64)
    order = np.argsort(s)
    s, lat = s[order], lat[order]
    ok = np.isfinite(lat)
    s, lat = s[ok], lat[ok]
    if len(lat) < 2:
        return {"slope_ms_per_unit": float("nan"), "delta_ms": float("nan"), "monotonic": 0.0,
                "violations": float("nan")}
    steps = np.diff(lat)
    return {"slope_ms_per_unit": float(np.polyfit(s, lat, 1)[0]), "delta_ms": float(lat[0] - lat[-1]),
            "monotonic": float(np.all(steps <= 1e-9)), "violations": float(max(steps.max(), 0.0))}


def reversal(r, reversal_frame, *, burst_window_ms=(150.0, 400.0), approach_ms=None):
    """Motion-reversal measures of a (population) response aligned on the reversal.

    ``burst`` is the peak in ``reversal + burst_window_ms``; ``smooth_peak`` is
    the peak during smooth motion before the reversal (the last
    ``approach_ms``, default all of it); ``latency_ms`` is the burst's time
    after the reversal; ``ratio = burst / smooth_peak``.
    """
    r = _trace("r", r)
    rev = int(reversal_frame)
    lo, hi = (int(round(v / FRAME_MS)) for v in burst_window_ms)
    t_b, v_b = peak(r, rev + lo, rev + hi)
    start = 0 if approach_ms is None else max(rev - int(round(approach_ms / FRAME_MS)), 0)
    _, v_s = peak(r, start, rev + lo)
    return {"burst": v_b, "smooth_peak": v_s, "ratio": v_b / v_s if v_s > 0 else float("inf"),
            "latency_ms": (t_b - rev) * FRAME_MS}


def reversal_spread(latencies_ms):
    """Spread of the burst latency across reversal positions: ``{"latency_mean_ms", "latency_sd_ms"}``."""
    lat = np.asarray(latencies_ms, np.float64)
    return {"latency_mean_ms": float(np.nanmean(lat)), "latency_sd_ms": float(np.nanstd(lat))}


def flash_peak_position(positions, peak_rates):
    """Position (px) of the largest flashed-bar response, parabola-interpolated over positions."""
    x = np.asarray(positions, np.float64)
    v = np.asarray(peak_rates, np.float64)
    order = np.argsort(x)
    x, v = x[order], v[order]
    i = int(np.nanargmax(v))
    if 0 < i < len(x) - 1:
        den = v[i - 1] - 2 * v[i] + v[i + 1]
        if den < 0:
            h = 0.5 * (v[i - 1] - v[i + 1]) / den
            step = 0.5 * (x[i + 1] - x[i - 1])
            return float(x[i] + h * step)
    return float(x[i])


SEARCH_PX = 12.0
"""The anticipation peak is looked for while the bar is within this many pixels of the cell (about 0.66 mm: a
salamander ganglion cell's receptive field and its surround); a response far from the cell (e.g. the onset
transient of an adapting circuit) is not the cell's answer to the bar."""


def anticipation(r, centers, reference_x, *, um_per_px=UM_PER_PX, search_px=SEARCH_PX):
    """Motion anticipation of one cell: where the moving bar is when the cell peaks.

    Parameters
    ----------
    r : array (T,)
        The cell's response to the moving bar, aligned with the stimulus.
    centers : array (T,)
        Bar centre per frame (``events["center"]`` of :func:`retina.stimuli.moving_bar`;
        NaN while absent).
    reference_x : float
        The cell's position: its receptive-field centre, or the peak of its
        flashed-bar response profile (:func:`flash_peak_position`).
    search_px : float
        The peak is looked for only while the bar centre is within this many
        pixels of ``reference_x`` (:data:`SEARCH_PX`).

    Returns
    -------
    dict
        ``offset_px``: bar centre minus ``reference_x`` at the response peak,
        signed along the motion (negative = the cell peaks before the bar
        arrives); ``lead_um = -offset_px * um_per_px`` (positive = anticipates);
        ``peak_rate``; ``peak_frame``.
    """
    r = _trace("r", r)
    c = np.asarray(centers, np.float64)
    if c.shape != r.shape:
        raise ValueError(f"centers must have the shape of r {r.shape}, got {c.shape}")
    present = np.isfinite(c)
    near = present & (np.abs(np.where(present, c, np.inf) - float(reference_x)) <= float(search_px))
    rr = np.where(near, r, np.nan)
    t, v = peak(rr, 0, len(rr))
    i = int(np.floor(t))
    frac = t - i
    pos = c[i] if i + 1 >= len(c) or not np.isfinite(c[i + 1]) else (1 - frac) * c[i] + frac * c[i + 1]
    vel = np.nanmedian(np.diff(c[present])) if present.sum() > 1 else 1.0
    offset = (pos - reference_x) * np.sign(vel)
    return {"offset_px": float(offset), "lead_um": float(-offset * um_per_px), "peak_rate": v,
            "peak_frame": t}
