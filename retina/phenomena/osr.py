"""The omitted stimulus response (OSR): a train of dark flashes stops, and the cell answers the missing one.

Protocol (``docs/phenomena.md``): full-field dark flashes (2 frames) at 6, 8,
10, 12 and 16 Hz, 10 flashes, 1 s of grey before and after, the next flash
omitted.  Measured on the simulator's OSR cells.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import measures as M
from .. import stimuli as S
from .. import units
from .base import Check, Phenomenon, PhenomenonResult, register
from .probe import CONTEXT_MS, ablate_types, analysed_cells, frame_shape, mechanism, probe, rates

__all__ = ["osr", "OSR", "OSR_FREQUENCIES_HZ"]

OSR_FREQUENCIES_HZ = (6, 8, 10, 12, 16)
WINDOW_MS = 450.0
"""The OSR is looked for in ``[omission, omission + WINDOW_MS)``."""
KEY_MEASURE = "osr_amplitude"   # mean OSR peak above the pre-train baseline (Hz)

# The simulator's signature (acceptance bands)
MIN_RATIO = 3.0             # OSR amplitude >= 3x the last flash's (above baseline, floor 1 Hz) ...
FAST_PERIOD_MS = 125.0      # ... at 8-16 Hz (periods up to 125 ms)
SLOPE_RANGE = (0.8, 1.2)    # peak time after the last flash tracks the period
MAX_LATENCY_SD_MS = 25.0    # optional: latency s.d. across frequencies
LESION_MAX_FRACTION = 0.5   # without the slow ON pathway the OSR amplitude is at most half

# The mechanism criteria for a CNN's layer-1 attributions (docs/phenomena.md, "pass criteria")
MIN_SLOW_ON_SHARE = 0.5     # slow ON carries >= 50 % of positive IG after the omission
MAX_OFF_SHARE = 0.2         # OFF carries < 20 % there
MIN_REDUCED_FRACTION = 0.7  # the reduced model keeps >= 70 % of the OSR amplitude
MAX_ABLATED_FRACTION = 0.3  # ablating the slow ON channels removes >= 70 % of the OSR amplitude


def _window(result, i):
    om = int(result.events[i]["omitted_frame"])
    return om, om + int(result.params.get("window_ms", WINDOW_MS) / units.FRAME_MS)


def osr(model, *, frequencies=OSR_FREQUENCIES_HZ, periods=None, intensity=-1.0, duration=2, n_flashes=10,
        pre=100, post=100, cells=None, window_ms=WINDOW_MS, explain=True, share=0.9, n_steps=50,
        context_ms=CONTEXT_MS):
    """Omitted stimulus response: flash trains at several periods, then one flash omitted.

    ``periods`` (frames) overrides ``frequencies`` (Hz).  Measures: per-train
    :func:`retina.measures.osr`, and over trains the slope of peak time after
    the last flash vs period (``slope``, target about 1), the mean latency
    after the omitted flash, and the smallest OSR / last-flash ratio.  For a
    CNN with ``explain``, each train's response in ``[omission, omission +
    window_ms)`` is attributed to layer-1 channels (pooled over space) and
    reduced (``result.reduced``), the pruned network is measured too, and the
    CNN's slow ON channels are ablated.

    Parameters
    ----------
    model : object with ``rates(movie)``
        Stimuli are in contrast units.
    frequencies : sequence of float
        Flash frequencies in Hz.
    periods : sequence of int, optional
        Flash periods in frames (overrides ``frequencies``).
    intensity : float
        Flash contrast.
    duration, n_flashes, pre, post : int
        Flash length, number of flashes, grey frames before and after.
    cells : sequence of int, optional
        Analysed cells (default the model's OSR cells, else all).
    window_ms : float
        Window after the omitted flash in which the OSR is looked for.
    explain : bool
        Attribute and reduce (CNNs).
    share, n_steps, context_ms
        Reduction share, integrated-gradient steps and attributed context.

    Returns
    -------
    PhenomenonResult
    """
    model = probe(model)
    if periods is None:
        periods = [S.period_frames(f) for f in frequencies]
    cells = analysed_cells(model, cells, OSR.cell_type)
    res = PhenomenonResult("osr", [], [], [], [], {}, cells,
                           dict(intensity=intensity, duration=duration, n_flashes=n_flashes, window_ms=window_ms))
    trains = []
    for p in periods:
        build = functools.partial(S.flash_train, n_flashes, int(p), intensity=intensity, duration=duration, pre=pre,
                                  post=post, frame_shape=frame_shape(model))
        st = build()
        trains.append(st)
        r = rates(model, st.movie)[:, cells]

        def measure(resp, st=st):
            return M.osr(resp, st.events["flash_frames"], st.events["omitted_frame"], window_ms=window_ms)

        win = res.add(dict(period=int(p), intensity=intensity), r, st.events, measure(r), stimulus=build,
                      window=_window)
        if explain:
            red, m = mechanism(model, st.movie, cells, win, share, n_steps, measure, context_ms)
            res.add_reduced(red, m)
    per = res.per_condition
    fit = M.osr_slope([m["period_ms"] for m in per], [m["peak_after_last_ms"] for m in per])
    res.measures = dict(fit, min_ratio=float(min(m["ratio"] for m in per)),
                        latency_after_omitted_ms=float(np.mean([m["peak_after_omitted_ms"] for m in per])),
                        osr_peak_mean=float(np.mean([m["osr_peak"] for m in per])),
                        osr_amplitude=float(np.mean([m["osr_amplitude"] for m in per])))
    if res.reduced_measures:
        rm = res.reduced_measures
        res.measures.update(reduced_osr_peak_mean=float(np.mean([m["osr_peak"] for m in rm])),
                            reduced_osr_amplitude=float(np.mean([m["osr_amplitude"] for m in rm])),
                            reduced_latency_after_omitted_ms=float(np.mean([m["peak_after_omitted_ms"]
                                                                            for m in rm])))
    if explain:  # in-silico lesion of the CNN's slow ON channels
        chans, am = ablate_types(model, [st.movie for st in trains], cells, ("ON-slow",),
                                 lambda i, resp: M.osr(resp, trains[i].events["flash_frames"],
                                                       trains[i].events["omitted_frame"], window_ms=window_ms))
        if am:
            res.ablated_measures = am
            res.params["ablated_conv1"] = chans
            res.measures["ablated_on_slow_osr_peak_mean"] = float(np.mean([m["osr_peak"] for m in am]))
            res.measures["ablated_on_slow_osr_amplitude"] = float(np.mean([m["osr_amplitude"] for m in am]))
    return res


def shows(measures):
    """An OSR after the omission larger than the last flash's response."""
    return bool(measures["min_ratio"] > 1.0)


def _fast_ratios(res):
    """The OSR / last-flash amplitude ratios of the trains at 8-16 Hz (periods up to FAST_PERIOD_MS)."""
    return [c["ratio"] for c in res.per_condition if c["period_ms"] <= FAST_PERIOD_MS]


def _min_or_nan(values):
    return float(min(values)) if values else float("nan")


def signatures(results):
    """The simulator's OSR tests: ratio >= 3 at 8-16 Hz, slope in [0.8, 1.2], latency s.d., the ON-slow lesion."""
    intact = results[None]
    fast = _fast_ratios(intact)
    amp = intact.measures["osr_amplitude"]
    out = [Check("osr_ratio", f"OSR amplitude / last-flash amplitude at 8-16 Hz (min over {len(fast)})",
                 _min_or_nan(fast), low=MIN_RATIO, scale=MIN_RATIO),
           Check("osr_slope", "slope of peak time after the last flash vs period", intact.measures["slope"],
                 *SLOPE_RANGE, scale=0.2),
           Check("osr_latency_sd", "latency s.d. across frequencies (ms)", intact.measures["latency_sd_ms"],
                 high=MAX_LATENCY_SD_MS, scale=MAX_LATENCY_SD_MS)]
    if "ONs" in results:
        out.append(Check("osr_lesion_ONs", "OSR amplitude without the slow ON pathway / intact",
                         results["ONs"].measures["osr_amplitude"] / max(amp, 1e-9), high=LESION_MAX_FRACTION,
                         scale=1.0))
    return out


HELD_OUT = {"frequencies": (7, 9, 11, 14)}
"""The held-out OSR protocol: flash frequencies (Hz) no default, test or training stream uses."""


def judge(model_res, sim_res):
    """A model's OSR at the thresholds of ``docs/recovery.md`` (held-out protocols): amplitude >= 3x the last
    flash's at 8-16 Hz, peak time tracking the period (slope in [0.8, 1.2]); the simulator's values beside them."""
    sim_ratio = _min_or_nan(_fast_ratios(sim_res))
    return [Check("osr_ratio", f"OSR amplitude / last-flash amplitude at 8-16 Hz, min (simulator {sim_ratio:.3g})",
                  _min_or_nan(_fast_ratios(model_res)), low=MIN_RATIO, scale=MIN_RATIO),
            Check("osr_slope", f"slope of peak time vs period (simulator {sim_res.measures['slope']:.3g})",
                  model_res.measures["slope"], *SLOPE_RANGE, scale=0.2)]


def criteria(pathway_shares, type_shares, result):
    """The OSR's mechanism criteria, from the CNN's layer-1 attributions and ablations."""
    m = result.measures
    c = {f"slow ON carries >= {MIN_SLOW_ON_SHARE:.0%} of positive IG after the omission":
         pathway_shares["ONs"] >= MIN_SLOW_ON_SHARE,
         f"OFF share < {MAX_OFF_SHARE:.0%} after the omission": pathway_shares["OFF"] < MAX_OFF_SHARE}
    full, red = m.get("osr_amplitude"), m.get("reduced_osr_amplitude")
    if red is not None:
        c[f"reduced model keeps >= {MIN_REDUCED_FRACTION:.0%} of the OSR amplitude"] = (
            red >= MIN_REDUCED_FRACTION * full)
    if "ablated_on_slow_osr_amplitude" in m:
        c[f"ablating the slow-ON channels removes >= {1 - MAX_ABLATED_FRACTION:.0%} of the OSR"] = (
            m["ablated_on_slow_osr_amplitude"] <= MAX_ABLATED_FRACTION * m["osr_amplitude"])
    return c


OSR = register(Phenomenon(
    name="osr", title="omitted stimulus response", run=osr, list_params=("periods", "frequencies"),
    key_measure=KEY_MEASURE, cell_type="OSR", row=False, lesions=("ONs", "OFF", "ONf", "A1"), window=_window,
    shows=shows, presence_measure="min_ratio", signatures=signatures, signature_lesions={"ONs": {}},
    mechanism=criteria, absent_value=0.0, condition_measure="peak_after_last_ms", held_out=HELD_OUT, judge=judge))
