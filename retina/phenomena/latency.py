"""Latency coding: the stronger a dark flash, the earlier the OFF cells answer.

Protocol (``docs/phenomena.md``): grey, a 2-frame full-field dark flash, grey;
flash strengths -0.25 to -1 (black) in steps of 0.05: a 4x range, all of it
physical (nothing is darker than black).
Latency by the response's peak time and centre of mass in the 150 ms after
the flash, rates under 3 Hz above baseline ignored.  Measured on OFF cells.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import measures as M
from .. import stimuli as S
from .. import units
from .base import Check, Phenomenon, PhenomenonResult, register
from .probe import CONTEXT_MS, ablate_inhibition, analysed_cells, frame_shape, mechanism, probe, rates

__all__ = ["latency", "LATENCY", "LATENCY_INTENSITIES"]

LATENCY_INTENSITIES = tuple(round(-0.05 * k, 2) for k in range(5, 21))
"""The default flash strengths: -0.25 to -1 (black) in 16 steps, a 4x range."""
WINDOW_MS = 150.0
MIN_RATE_HZ = 3.0
KEY_MEASURE = "peak_delta_ms"

# The simulator's signature
MIN_SHIFT_MS = 10.0          # weakest minus strongest flash, by peak and by centre of mass
DEPRESSION_MAX_FRACTION = 0.6   # without depression the shift is at most 60 % of the intact one
LINEAR_MAX_SHIFT_MS = 3.0    # without gain control (no depression, no A1) there is no shift
A1_MIN_DELAY_MS = 15.0       # without A1 every answered flash peaks at least this much later
A1_MIN_FLASHES = 0.75        # ... over at least this fraction of the flashes, answered by both

# The mechanism criteria
MIN_OFF_FAST_SHARE = 0.8     # OFF-fast carries >= 80 % of layer-1 IG
INHIBITION_DELAY_MS = (20.0, 60.0)   # a delayed inhibitory layer-2 term
MAX_ABLATED_FRACTION = 0.5   # ablating it cuts the latency shift by >= 50 %


def _window(result, i):
    f = int(result.events[i]["flash_frames"][0])
    return f, f + int(result.params.get("window_ms", WINDOW_MS) / units.FRAME_MS)


def latency(model, *, intensities=LATENCY_INTENSITIES, duration=2, delay=50, post=60, cells=None,
            window_ms=WINDOW_MS, min_rate=MIN_RATE_HZ, explain=True, share=0.9, n_steps=50, context_ms=CONTEXT_MS):
    """Latency coding: single full-field flashes of growing strength.

    Measures: per flash :func:`retina.measures.latency` (peak and centre of
    mass, rates under ``min_rate`` Hz above the pre-flash baseline ignored);
    over the flashes that reach ``min_rate`` the ``latency_trend`` of each
    (``peak_delta_ms`` = weakest minus strongest, ...).  With ``explain``
    (CNN), each flash response in ``[flash, flash + window_ms)`` is
    attributed and reduced, and the layer-2 channels with a delayed negative
    effect are found and ablated.

    Parameters
    ----------
    model : object with ``rates(movie)``
        Stimuli are in contrast units.
    intensities : sequence of float
        Flash contrasts.
    duration, delay, post : int
        Flash length, grey frames before and after.
    cells : sequence of int, optional
        Analysed cells (default the model's OFF cells, else all).
    window_ms : float
        Window after the flash in which the latency is measured.
    min_rate : float
        Rates under this (Hz above the pre-flash baseline) are ignored.
    explain : bool
        Attribute and reduce (CNNs).
    share, n_steps, context_ms
        Reduction share, integrated-gradient steps and attributed context.

    Returns
    -------
    PhenomenonResult
    """
    if not (isinstance(min_rate, (int, float, np.integer, np.floating)) and 0 <= min_rate < np.inf):
        raise ValueError(f"min_rate must be a finite rate >= 0 (Hz above the pre-flash baseline), got {min_rate!r}")
    model = probe(model)
    cells = analysed_cells(model, cells, LATENCY.cell_type)
    res = PhenomenonResult("latency", [], [], [], [], {}, cells, dict(duration=duration, window_ms=window_ms,
                                                                       min_rate=min_rate))
    movies = []

    def measure(resp):
        return M.latency(resp, delay, window_ms=window_ms, min_rate=min_rate)

    for c in intensities:
        build = functools.partial(S.flash, float(c), duration=duration, delay=delay, post=post,
                                  frame_shape=frame_shape(model))
        st = build()
        movies.append(st.movie)
        r = rates(model, st.movie)[:, cells]
        win = res.add(dict(intensity=float(c)), r, st.events, measure(r), stimulus=build, window=_window)
        if explain:
            red, m = mechanism(model, st.movie, cells, win, share, n_steps, measure, context_ms)
            res.add_reduced(red, m)
    pk = M.latency_trend(intensities, [m["peak_ms"] for m in res.per_condition])
    com = M.latency_trend(intensities, [m["com_ms"] for m in res.per_condition])
    res.measures = {f"peak_{k}": v for k, v in pk.items()}
    res.measures.update({f"com_{k}": v for k, v in com.items()})
    if res.reduced_measures:
        res.measures["reduced_peak_delta_ms"] = M.latency_trend(
            intensities, [m["peak_ms"] for m in res.reduced_measures])["delta_ms"]
    if explain:
        ablate_inhibition(model, res, movies, res.windows, cells, n_steps, lambda i, resp: measure(resp))
        if res.ablated_measures:
            am = res.ablated_measures
            res.measures["ablated_inhibition_peak_delta_ms"] = M.latency_trend(
                intensities, [m["peak_ms"] for m in am])["delta_ms"]
            res.measures["ablated_inhibition_com_delta_ms"] = M.latency_trend(
                intensities, [m["com_ms"] for m in am])["delta_ms"]
    return res


def shows(measures):
    """Latency falls with strength: weakest minus strongest answered flash > 0 and a negative slope (a positive
    difference alone can come from one early weak flash)."""
    return bool(measures["peak_delta_ms"] > 0 and measures["peak_slope_ms_per_unit"] < 0)


def signatures(results):
    """The simulator's latency tests: monotonic fall, the shift, and the gain-control lesions."""
    m = results[None].measures
    out = [Check("latency_peak_monotonic", "peak latency falls monotonically (1 = yes)", m["peak_monotonic"],
                 low=1.0, scale=1.0),
           Check("latency_com_monotonic", "centre-of-mass latency falls monotonically (1 = yes)",
                 m["com_monotonic"], low=1.0, scale=1.0),
           Check("latency_peak_shift", "peak latency, weakest minus strongest flash (ms)", m["peak_delta_ms"],
                 low=MIN_SHIFT_MS, scale=MIN_SHIFT_MS),
           Check("latency_com_shift", "centre-of-mass latency, weakest minus strongest flash (ms)",
                 m["com_delta_ms"], low=MIN_SHIFT_MS, scale=MIN_SHIFT_MS),
           Check("latency_peak_slope", "slope of peak latency against |intensity| (ms per unit)",
                 m["peak_slope_ms_per_unit"], high=0.0, scale=1.0)]
    if "depression" in results:
        out.append(Check("latency_lesion_depression", "peak shift without depression / intact",
                         results["depression"].measures["peak_delta_ms"] / max(m["peak_delta_ms"], 1e-9),
                         high=DEPRESSION_MAX_FRACTION, scale=1.0))
    if "linear" in results:
        out.append(Check("latency_lesion_linear", "|shift| without gain control (ms)",
                         abs(results["linear"].measures["peak_delta_ms"]), high=LINEAR_MAX_SHIFT_MS, scale=5.0))
    if "A1" in results:
        full = np.array([c["peak_ms"] for c in results[None].per_condition])
        late = np.array([c["peak_ms"] for c in results["A1"].per_condition])
        both = np.isfinite(full) & np.isfinite(late)
        enough = both.sum() >= A1_MIN_FLASHES * len(both)
        delay = float(np.min(late[both] - full[both])) if enough else float("nan")
        out.append(Check("latency_lesion_A1", f"least delay of the peaks without A1 over >= {A1_MIN_FLASHES:.0%} "
                                              "of the flashes (ms)", delay, low=A1_MIN_DELAY_MS, scale=A1_MIN_DELAY_MS))
    return out


HELD_OUT = {"intensities": tuple(round(-0.27 - 0.08 * k, 2) for k in range(10)), "delay": 60}
"""The held-out latency protocol: flashes of -0.27 to -0.99 in steps of 0.08, 600 ms after the start."""
MODEL_SHIFT_TOLERANCE = 0.5   # a model's latency shift within +-50 % of the simulator's


def judge(model_res, sim_res):
    """A model's latency coding at the thresholds of ``docs/recovery.md`` (held-out protocols): latency falls
    monotonically with strength, and the shift (weakest minus strongest answered flash) is within +-50 % of the
    simulator's."""
    m, target = model_res.measures, sim_res.measures["peak_delta_ms"]
    return [Check("latency_monotonic", "peak latency falls monotonically (1 = yes)", m["peak_monotonic"], low=1.0),
            Check.near("latency_shift", f"peak latency shift (ms) within +-{MODEL_SHIFT_TOLERANCE:.0%} of the "
                                        f"simulator's {target:.3g} ms", m["peak_delta_ms"], target,
                       MODEL_SHIFT_TOLERANCE)]


def criteria(pathway_shares, type_shares, result):
    """Latency's mechanism criteria: OFF-fast excitation and a delayed inhibitory layer-2 term that matters."""
    lo, hi = INHIBITION_DELAY_MS
    c = {f"OFF-fast >= {MIN_OFF_FAST_SHARE:.0%} of layer-1 IG": type_shares.get("OFF-fast", 0.0) >= MIN_OFF_FAST_SHARE,
         f"a delayed ({lo:.0f}-{hi:.0f} ms) inhibitory layer-2 term": any(lo <= d["delay_ms"] <= hi
                                                                          for d in result.inhibitory)}
    full, abl = result.measures.get("peak_delta_ms"), result.measures.get("ablated_inhibition_peak_delta_ms")
    if abl is not None:
        c[f"ablating the inhibitory layer-2 channels cuts the latency shift by >= {MAX_ABLATED_FRACTION:.0%}"] = (
            abl <= MAX_ABLATED_FRACTION * full)
    return c


LATENCY = register(Phenomenon(
    name="latency", title="latency coding", run=latency, list_params=("intensities",), key_measure=KEY_MEASURE,
    cell_type="OFF", row=False, lesions=("depression", "A1"), window=_window, shows=shows,
    presence_measure="peak_delta_ms", signatures=signatures,
    signature_lesions={"depression": {}, "linear": {}, "A1": {}}, mechanism=criteria, absent_value=0.0,
    condition_measure="peak_ms", held_out=HELD_OUT, judge=judge))
