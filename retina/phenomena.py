"""The four phenomena of the paper as experiments: stimulus, response, measure.

Each entry point builds its stimuli (``retina.stimuli``), runs any model with a
``rates(movie)`` method returning ``(T, n_cells)`` aligned with the movie (the
in-silico retina, or a :class:`retina.RetinaCNN`), measures the phenomenon with
:mod:`retina.measures` and returns a :class:`PhenomenonResult` whose
``measures`` is a dict of plain numbers.  Protocol defaults follow
``insilico.md`` section 2 (contrast units of the simulator); every one is a
parameter, so each experiment can be swept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import measures as M
from . import stimuli as S

__all__ = ["PhenomenonResult", "osr", "latency", "reversal", "anticipation", "OSR_FREQUENCIES_HZ"]

OSR_FREQUENCIES_HZ = (6, 8, 10, 12, 16)


@dataclass
class PhenomenonResult:
    """One experiment: its conditions, stimuli events, responses and measures.

    Attributes
    ----------
    name : str
        ``"osr"``, ``"latency"``, ``"reversal"`` or ``"anticipation"``.
    conditions : list of dict
        The stimulus parameters swept, one dict per condition.
    responses : list of ndarray
        The analysed cells' responses ``(T, n_analysed)`` per condition.
    events : list of dict
        Each condition's stimulus events.
    per_condition : list of dict
        The measure per condition (plain numbers).
    measures : dict
        The phenomenon's summary numbers.
    cells : ndarray
        Indices of the analysed cells.
    """

    name: str
    conditions: list
    responses: list
    events: list
    per_condition: list
    measures: dict
    cells: np.ndarray
    params: dict = field(default_factory=dict)

    def __repr__(self):
        nums = ", ".join(f"{k}={v:.3g}" for k, v in self.measures.items() if isinstance(v, float))
        return f"PhenomenonResult({self.name!r}, {len(self.conditions)} conditions, {nums})"


def _rates(model, movie):
    if not hasattr(model, "rates"):
        raise ValueError(f"model must have a rates(movie) method, got {type(model).__name__}")
    r = np.asarray(model.rates(movie))
    if r.ndim != 2 or r.shape[0] != len(movie):
        raise ValueError(f"model.rates(movie) must return (T, n_cells) with T = {len(movie)}, got {r.shape}")
    return r


def _cells(model, cells, cell_type):
    if cells is not None:
        return np.atleast_1d(np.asarray(cells, np.int64))
    if hasattr(model, "cells_of"):
        try:
            return model.cells_of(cell_type)
        except ValueError:
            pass
    return np.arange(getattr(model, "n_cells", 1))


def _frame_shape(model):
    return tuple(getattr(model, "frame_shape", (50, 50)))


def osr(model, *, frequencies=OSR_FREQUENCIES_HZ, periods=None, intensity=-1.0, duration=2, n_flashes=10,
        pre=100, post=100, cells=None, window_ms=450.0):
    """Omitted stimulus response: flash trains at several periods, then one flash omitted.

    ``periods`` (frames) overrides ``frequencies`` (Hz).  Measures: per-train
    ``osr`` measures, and over trains the slope of peak time after the last
    flash vs period (``slope``, target about 1), the mean latency after the
    omitted flash, and the smallest OSR / last-flash ratio.
    """
    if periods is None:
        periods = [S.period_frames(f) for f in frequencies]
    cells = _cells(model, cells, "OSR")
    conds, resp, events, per = [], [], [], []
    for p in periods:
        st = S.flash_train(n_flashes, int(p), intensity=intensity, duration=duration, pre=pre, post=post,
                           frame_shape=_frame_shape(model))
        r = _rates(model, st.movie)[:, cells]
        m = M.osr(r, st.events["flash_frames"], st.events["omitted_frame"], window_ms=window_ms)
        conds.append(dict(period=int(p), intensity=intensity))
        resp.append(r)
        events.append(st.events)
        per.append(m)
    fit = M.osr_slope([m["period_ms"] for m in per], [m["peak_after_last_ms"] for m in per])
    summary = dict(fit, min_ratio=float(min(m["ratio"] for m in per)),
                   latency_after_omitted_ms=float(np.mean([m["peak_after_omitted_ms"] for m in per])),
                   osr_peak_mean=float(np.mean([m["osr_peak"] for m in per])))
    return PhenomenonResult("osr", conds, resp, events, per, summary, cells,
                            dict(intensity=intensity, duration=duration, n_flashes=n_flashes))


def latency(model, *, intensities=(-0.1, -0.2, -0.35, -0.5, -0.75, -1.0), duration=2, delay=50, post=60,
            cells=None, window_ms=150.0):
    """Latency coding: single full-field flashes of growing strength.

    Measures: per flash ``latency`` (peak and centre of mass); over flashes the
    ``latency_trend`` of each (``peak_delta_ms`` = weakest minus strongest, ...).
    """
    cells = _cells(model, cells, "OFF")
    conds, resp, events, per = [], [], [], []
    for c in intensities:
        st = S.flash(float(c), duration=duration, delay=delay, post=post, frame_shape=_frame_shape(model))
        r = _rates(model, st.movie)[:, cells]
        per.append(M.latency(r, delay, window_ms=window_ms))
        conds.append(dict(intensity=float(c)))
        resp.append(r)
        events.append(st.events)
    pk = M.latency_trend(intensities, [m["peak_ms"] for m in per])
    com = M.latency_trend(intensities, [m["com_ms"] for m in per])
    summary = {f"peak_{k}": v for k, v in pk.items()}
    summary.update({f"com_{k}": v for k, v in com.items()})
    return PhenomenonResult("latency", conds, resp, events, per, summary, cells,
                            dict(duration=duration, window_ms=window_ms))


def reversal(model, *, flips=(21, 23, 25, 27, 29), speed=0.14, width=2.0, intensity=-1.0, start=2.0, post=50,
             cells=None, population_x=(15, 35)):
    """Motion reversal: a dark bar moves right from ``start`` and reverses at each of ``flips`` (px).

    The population response (mean over the analysed cells whose centre x lies
    in ``population_x``, when the model knows its cells' positions) is aligned
    on the reversal.  Measures: per flip ``reversal``; over flips the burst
    latency mean and s.d., and the smallest burst / smooth-motion ratio.
    """
    cells = _cells(model, cells, "OFF")
    if hasattr(model, "cells"):
        xs = np.array([model.cells[i].x for i in cells])
        keep = (xs >= population_x[0]) & (xs <= population_x[1])
        if keep.any():
            cells = cells[keep]
    conds, resp, events, per = [], [], [], []
    for x in flips:
        st = S.moving_bar(speed, width=width, intensity=intensity, start=start, reverse_at=float(x), post=post,
                          frame_shape=_frame_shape(model))
        r = _rates(model, st.movie)[:, cells]
        per.append(M.reversal(r, st.events["reversal_frame"]))
        conds.append(dict(reverse_at=float(x), speed=speed))
        resp.append(r)
        events.append(st.events)
    summary = M.reversal_spread([m["latency_ms"] for m in per])
    summary.update(min_ratio=float(min(m["ratio"] for m in per)),
                   mean_ratio=float(np.mean([m["ratio"] for m in per])))
    return PhenomenonResult("reversal", conds, resp, events, per, summary, cells,
                            dict(speed=speed, width=width, intensity=intensity, start=start))


def anticipation(model, *, speeds=(0.04, 0.08, 0.16), width=2.0, intensity=-1.0, cells=None,
                 flash_positions=None, flash_duration=2):
    """Motion anticipation: bars moving at several speeds, against flashed bars as the reference.

    For each analysed cell the reference position is its receptive-field
    centre when the model knows it (``model.cells[i].x``), else the peak of its
    flashed-bar response profile.  Measures: per speed the mean ``offset_px``
    (negative = the cell peaks before the bar centre arrives) and ``lead_um``
    against the flashed-bar peak; summary ``offset_<speed>`` and
    ``lead_um_<speed>``.
    """
    cells = _cells(model, cells, "OFF")
    fs = _frame_shape(model)
    if flash_positions is None:
        flash_positions = np.arange(0, fs[1], 1.0)
    rf_x = np.array([model.cells[i].x for i in cells]) if hasattr(model, "cells") else None
    if len(flash_positions) == 0 and rf_x is None:
        raise ValueError("flash_positions must not be empty for a model that does not know its cells' positions")
    peaks = []
    for x in flash_positions:
        st = S.flashed_bar(float(x), width=width, intensity=intensity, duration=flash_duration, delay=20, post=40,
                           frame_shape=fs)
        peaks.append(_rates(model, st.movie)[20:, cells].max(0))
    peaks = np.array(peaks)
    flash_x = (np.array([M.flash_peak_position(flash_positions, peaks[:, j]) for j in range(len(cells))])
               if len(flash_positions) else rf_x)
    if rf_x is None:
        rf_x = flash_x
    conds, resp, events, per = [], [], [], []
    summary = {}
    for v in speeds:
        st = S.moving_bar(v, width=width, intensity=intensity, frame_shape=fs)
        r = _rates(model, st.movie)[:, cells]
        offs = [M.anticipation(r[:, j], st.events["center"], rf_x[j]) for j in range(len(cells))]
        leads = [M.anticipation(r[:, j], st.events["center"], flash_x[j]) for j in range(len(cells))]
        m = {"offset_px": float(np.mean([o["offset_px"] for o in offs])),
             "lead_um": float(np.mean([o["lead_um"] for o in leads])), "speed": float(v)}
        per.append(m)
        summary[f"offset_px_{v:g}"] = m["offset_px"]
        summary[f"lead_um_{v:g}"] = m["lead_um"]
        conds.append(dict(speed=float(v)))
        resp.append(r)
        events.append(st.events)
    return PhenomenonResult("anticipation", conds, resp, events, per, summary, cells,
                            dict(width=width, intensity=intensity, flash_x=flash_x.tolist(),
                                 rf_x=rf_x.tolist()))
