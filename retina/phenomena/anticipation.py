"""Motion anticipation: the response to a moving bar peaks before the bar reaches the receptive field.

Protocol (``docs/phenomena.md``): a dark bar 2 px wide spanning all rows
moves at 0.04, 0.08 and 0.16 px/frame; a row of OFF cells is recorded; the
reference is each cell's receptive-field centre (or the peak of its
flashed-bar response profile).
"""

from __future__ import annotations

import functools

import numpy as np

from .. import measures as M
from .. import stimuli as S
from .base import Check, Phenomenon, PhenomenonResult, register
from .probe import CONTEXT_MS, ablate_inhibition, analysed_cells, frame_shape, mechanism, probe, rates, row_cells

__all__ = ["anticipation", "ANTICIPATION", "SPEEDS", "KEY_SPEED"]

SPEEDS = (0.04, 0.08, 0.16)
KEY_SPEED = 0.08
"""The speed (px/frame) of the key measure and the lesion criteria."""
KEY_MEASURE = f"offset_px_{KEY_SPEED:g}"
WINDOW_FRAMES = (30, 10)   # window of interest: 300 ms before to 100 ms after the population's peak

# The simulator's signature
MAX_OFFSET_PX = 0.0        # intact offset <= 0 at every speed (the peak comes before the bar centre) ...
MAX_LEAD_PX = 8.0          # ... by at most 8 px (440 um; a "lead" beyond that is a response to something else)
MIN_LINEAR_SHIFT_PX = 1.5  # the linearised model lags >= 1.5 px more at KEY_SPEED

# The mechanism criteria
MIN_OFF_SHARE = 0.5        # OFF carries the anticipation response
MIN_ABLATED_SHIFT_PX = 1.5  # ablating the inhibitory units shifts the offset by >= +1.5 px


def _window(result, i):
    t = int(np.nanargmax(result.responses[i].mean(1)))
    return max(t - WINDOW_FRAMES[0], 0), t + WINDOW_FRAMES[1]


def anticipation(model, *, speeds=SPEEDS, width=2.0, intensity=-1.0, cells=None, flash_positions=None,
                 flash_duration=2, explain=True, share=0.9, n_steps=50, context_ms=CONTEXT_MS):
    """Motion anticipation: bars moving at several speeds, against flashed bars as the reference.

    The analysed cells (default: the OFF cells; for a model that knows its
    cells' positions, those on the most populated row) are recorded as a row.
    For each analysed cell the reference position is its receptive-field
    centre when the model knows it (``model.cells[i].x``), else the peak of its
    flashed-bar response profile.  Measures: per speed the mean ``offset_px``
    (negative = the cell peaks before the bar centre arrives) and ``lead_um``
    against the flashed-bar peak; summary ``offset_px_<speed>`` and
    ``lead_um_<speed>``.  With ``explain`` (CNN), 400 ms around the mean
    response peak are attributed (rows pooled) and reduced, and the layer-2
    channels with a delayed negative effect are found and ablated.

    Parameters
    ----------
    model : object with ``rates(movie)``
        Stimuli are in contrast units.
    speeds : sequence of float
        Bar speeds (px/frame).
    width, intensity
        Bar width (px) and contrast.
    cells : sequence of int, optional
        Analysed cells.
    flash_positions : sequence of float, optional
        Positions of the flashed reference bars (default every pixel; empty:
        the receptive-field centres are the reference, for a model that knows them).
    flash_duration : int
        Frames each reference bar is flashed.
    explain : bool
        Attribute and reduce (CNNs).
    share, n_steps, context_ms
        Reduction share, integrated-gradient steps and attributed context.

    Returns
    -------
    PhenomenonResult
    """
    model = probe(model)
    cells = row_cells(model, analysed_cells(model, cells, ANTICIPATION.cell_type), cells)
    fs = frame_shape(model)
    if flash_positions is None:
        flash_positions = np.arange(0, fs[1], 1.0)
    known = getattr(model, "cells", None) is not None
    rf_x = np.array([model.cells[i].x for i in cells]) if known else None
    if len(flash_positions) == 0 and rf_x is None:
        raise ValueError("flash_positions must not be empty for a model that does not know its cells' positions")
    peaks = []
    for x in flash_positions:
        st = S.flashed_bar(float(x), width=width, intensity=intensity, duration=flash_duration, delay=20, post=40,
                           frame_shape=fs)
        peaks.append(rates(model, st.movie)[20:, cells].max(0))
    peaks = np.array(peaks)
    flash_x = (np.array([M.flash_peak_position(flash_positions, peaks[:, j]) for j in range(len(cells))])
               if len(flash_positions) else rf_x)
    if rf_x is None:
        rf_x = flash_x
    res = PhenomenonResult("anticipation", [], [], [], [], {}, cells,
                           dict(width=width, intensity=intensity, flash_x=flash_x.tolist(), rf_x=rf_x.tolist()))

    def measure(resp, st):
        offs = [M.anticipation(resp[:, j], st.events["center"], rf_x[j]) for j in range(len(cells))]
        leads = [M.anticipation(resp[:, j], st.events["center"], flash_x[j]) for j in range(len(cells))]
        return {"offset_px": float(np.mean([o["offset_px"] for o in offs])),
                "lead_um": float(np.mean([o["lead_um"] for o in leads]))}

    bars = []
    for v in speeds:
        build = functools.partial(S.moving_bar, v, width=width, intensity=intensity, frame_shape=fs)
        st = build()
        r = rates(model, st.movie)[:, cells]
        bars.append(st)
        m = dict(measure(r, st), speed=float(v))
        win = res.add(dict(speed=float(v)), r, st.events, m, stimulus=build, window=_window)
        res.measures[f"offset_px_{v:g}"] = m["offset_px"]
        res.measures[f"lead_um_{v:g}"] = m["lead_um"]
        if explain:
            red, rm = mechanism(model, st.movie, cells, win, share, n_steps,
                                lambda resp, st=st: measure(resp, st), context_ms)
            res.add_reduced(red, rm)
            if rm is not None:
                res.measures[f"reduced_offset_px_{v:g}"] = rm["offset_px"]
    if explain:
        ablate_inhibition(model, res, [st.movie for st in bars], res.windows, cells, n_steps,
                          lambda i, resp: measure(resp, bars[i]))
        for v, am in zip(speeds, res.ablated_measures):
            res.measures[f"ablated_inhibition_offset_px_{v:g}"] = am["offset_px"]
    return res


def shows(measures):
    """A positive anticipation lead at the key speed."""
    return bool(measures[f"lead_um_{KEY_SPEED:g}"] > 0.0)


def signatures(results):
    """The simulator's anticipation tests: the cells lead at every speed, less as speed rises, and the
    linearised model lags."""
    m = results[None].measures
    speeds = sorted(float(c["speed"]) for c in results[None].conditions)
    offs = [m[f"offset_px_{v:g}"] for v in speeds]
    out = [Check(f"anticipation_offset_{v:g}", f"offset at {v:g} px/frame (px; negative = leads)", o,
                 low=-MAX_LEAD_PX, high=MAX_OFFSET_PX, scale=1.0) for v, o in zip(speeds, offs)]
    out += [Check(f"anticipation_order_{a:g}_{b:g}", f"offset at {b:g} minus at {a:g} px/frame (px; anticipation "
                                                     "shrinks as speed rises)", ob - oa, low=0.0, scale=0.5)
            for a, b, oa, ob in zip(speeds, speeds[1:], offs, offs[1:])]
    if "linear" in results:
        out.append(Check("anticipation_lesion_linear", f"offset of the linearised model minus intact at "
                                                       f"{KEY_SPEED:g} px/frame (px)",
                         results["linear"].measures[KEY_MEASURE] - m[KEY_MEASURE], low=MIN_LINEAR_SHIFT_PX,
                         scale=1.0))
    return out


HELD_OUT = {"speeds": (0.06, 0.12)}
"""The held-out anticipation protocol: bar speeds (px/frame) other than the defaults."""
MODEL_LEAD_TOLERANCE = 0.5   # a model's lead within +-50 % of the simulator's at each speed


def judge(model_res, sim_res):
    """A model's anticipation at the thresholds of ``docs/recovery.md`` (held-out protocols): at each speed the
    lead (um) within +-50 % of the simulator's."""
    return [Check.near(f"anticipation_lead_{mc['speed']:g}", f"lead at {mc['speed']:g} px/frame (um) within "
                                                           f"+-{MODEL_LEAD_TOLERANCE:.0%} of the simulator's "
                                                           f"{sc['lead_um']:.3g}", mc["lead_um"], sc["lead_um"],
                       MODEL_LEAD_TOLERANCE)
            for mc, sc in zip(model_res.per_condition, sim_res.per_condition)]


def criteria(pathway_shares, type_shares, result):
    """Anticipation's mechanism criteria: OFF carries it, and ablating the inhibition undoes the lead."""
    c = {"OFF carries the anticipation response": pathway_shares["OFF"] >= MIN_OFF_SHARE}
    full = result.measures.get(KEY_MEASURE)
    abl = result.measures.get(f"ablated_inhibition_{KEY_MEASURE}")
    if abl is not None:
        c[f"ablating the inhibitory units shifts the {KEY_SPEED:g} px/frame offset by >= "
          f"+{MIN_ABLATED_SHIFT_PX:g} px"] = abl - full >= MIN_ABLATED_SHIFT_PX
    return c


ANTICIPATION = register(Phenomenon(
    name="anticipation", title="motion anticipation", run=anticipation, list_params=("speeds", "flash_positions"),
    key_measure=KEY_MEASURE, cell_type="OFF", row=True, lesions=("linear", "A1", "depression"), window=_window,
    shows=shows, presence_measure=f"lead_um_{KEY_SPEED:g}", signatures=signatures,
    signature_lesions={"linear": {"speeds": (KEY_SPEED,)}}, mechanism=criteria,
    known_cells_options={"flash_positions": ()}, absent_value=0.0, condition_measure="lead_um", held_out=HELD_OUT,
    judge=judge))
