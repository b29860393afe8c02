"""The four phenomena of the paper as experiments: stimulus, response, measure.

Each entry point builds its stimuli (``retina.stimuli``), runs any model with a
``rates(movie)`` method returning ``(T, n_cells)`` aligned with the movie (the
in-silico retina, or a :class:`retina.RetinaCNN`), measures the phenomenon with
:mod:`retina.measures` and returns a :class:`PhenomenonResult` whose
``measures`` is a dict of plain numbers.  Protocol defaults follow
``insilico.md`` section 2 (contrast units of the simulator); every one is a
parameter, so each experiment can be swept.

For a CNN with ``explain=True`` each condition's window of interest is
attributed to layer-1 channels with ``context_ms`` (default 500 ms) of response
either side, not the whole movie: the attribution, the reduced model's
fidelity and the figures cover that stretch (``ReducedModel.start`` is its
first frame), the pruned network is measured on the whole movie.  Pass
``context_ms=None`` to attribute whole movies (several times slower for the
long bar sweeps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import measures as M
from . import stimuli as S

__all__ = ["PhenomenonResult", "CNNProbe", "probe", "osr", "latency", "reversal", "anticipation",
           "OSR_FREQUENCIES_HZ", "CONTEXT_MS"]

OSR_FREQUENCIES_HZ = (6, 8, 10, 12, 16)
#: Response attributed either side of each window of interest (ms); ``context_ms=None`` attributes whole movies.
CONTEXT_MS = 500.0
# phenomena.md: full-field dark flashes "0 to -3 in 21 steps"; the zero step is no flash, so it is left out
LATENCY_INTENSITIES = tuple(round(-0.15 * k, 2) for k in range(1, 21))


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
    reduced : list of ReducedModel
        Per condition, for CNNs (``explain=True``): important channels, pruned network, fidelity.
    reduced_measures : list of dict
        The measure of the pruned network's response, per condition.
    inhibitory : list of dict
        Latency and anticipation, CNNs: the layer-2 channels with a negative
        net effect in some condition (``channel``, ``conditions``,
        ``share``, ``delay_ms`` averaged over them).
    ablated_measures : list of dict
        The measure per condition with those channels clamped to baseline.
    """

    name: str
    conditions: list
    responses: list
    events: list
    per_condition: list
    measures: dict
    cells: np.ndarray
    params: dict = field(default_factory=dict)
    reduced: list = field(default_factory=list)
    reduced_measures: list = field(default_factory=list)
    inhibitory: list = field(default_factory=list)
    ablated_measures: list = field(default_factory=list)

    def add(self, condition, response, events, measure):
        self.conditions.append(condition)
        self.responses.append(response)
        self.events.append(events)
        self.per_condition.append(measure)

    def add_reduced(self, reduced, measure):
        if reduced is not None:
            self.reduced.append(reduced)
            self.reduced_measures.append(measure)

    @property
    def channel_types(self):
        """Types of the channels the reductions kept, with their mean share of ``|A|``."""
        return _summary_types(self.reduced)

    def __repr__(self):
        nums = ", ".join(f"{k}={v:.3g}" for k, v in self.measures.items() if isinstance(v, float))
        return f"PhenomenonResult({self.name!r}, {len(self.conditions)} conditions, {nums})"


class CNNProbe:
    """A :class:`retina.RetinaCNN` presented with stimuli in contrast units, aligned with the frames.

    The movie is z-scored with the model's ``norm_stats`` (when it has them;
    otherwise stimuli are taken in the model's own units) and preceded by
    ``history - 1`` grey frames, so response row ``t`` belongs to frame ``t``.
    Cell types and positions come from the model's metadata when it was trained
    on the simulator (``cell_types``, ``cell_positions``).
    """

    def __init__(self, model, *, units="auto"):
        from .insilico import Cell

        self.model = model
        stats = model.norm_stats if units in ("auto", "contrast") else None
        if units == "contrast" and not stats:
            raise ValueError("units='contrast' needs a model with norm_stats")
        self.mean = float(stats["mean"]) if stats else 0.0
        self.std = float(stats["std"]) if stats else 1.0
        self.frame_shape = tuple(model.frame_shape)
        self.n_cells = model.n_cells
        meta = model.metadata or {}
        self.cells = None
        if "cell_types" in meta and "cell_positions" in meta:
            import json

            types, pos = json.loads(meta["cell_types"]), json.loads(meta["cell_positions"])
            if len(types) == model.n_cells:
                self.cells = [Cell(i, t, float(y), float(x)) for i, (t, (y, x)) in enumerate(zip(types, pos))]

    def cells_of(self, cell_type):
        if self.cells is None:
            raise ValueError("the model does not know its cell types")
        idx = [c.index for c in self.cells if c.type == cell_type]
        if not idx:
            raise ValueError(f"no cells of type {cell_type!r}")
        return np.array(idx)

    @property
    def grey(self):
        return (0.0 - self.mean) / self.std

    def padded(self, movie):
        z = (np.asarray(movie, np.float32) - np.float32(self.mean)) / np.float32(self.std)
        lead = np.full((self.model.history - 1,) + z.shape[1:], self.grey, np.float32)
        return np.concatenate([lead, z])

    def rates(self, movie, model=None):
        return np.asarray((model or self.model).predict(self.padded(movie)))

    def reduce(self, movie, weights, window, *, share=0.9, n_steps=50, context=None):
        """Attribute the weighted cells' response to layer-1 channels (pooled) and reduce it.

        ``window`` (frames) defines importance.  With ``context`` (frames), only
        the response in ``[window[0] - context, window[1] + context)`` is
        attributed (the reduced model's rows then start at ``result.start``);
        ``None`` attributes the whole movie.
        """
        from .attribution import attribute
        from .model import movie_invariance
        from .reduction import reduce

        lo, hi = int(window[0]), int(window[1])
        start, stop = 0, len(movie)
        if context is not None:
            start, stop = max(lo - int(context), 0), min(hi + int(context), len(movie))
        x = self.padded(movie)[start:stop + self.model.history - 1]
        pool = "rows" if movie_invariance(x) == "rows" else "space"
        attr = attribute(self.model, x, layer="conv1", cells=np.asarray(weights, np.float64), pool=pool,
                         baseline=self.grey, n_steps=n_steps, progress=False)
        red = reduce(self.model, attr, share=share, window=(lo - start, hi - start), movie=x)
        red.start = start
        return red

    def inhibition(self, movie, weights, window, *, n_steps=50):
        """Layer-2 channels with a negative net effect on the weighted cells in ``window`` (frames)."""
        from .reduction import inhibitory_channels

        x = self.padded(movie)
        lo, hi = max(int(window[0]), 0), min(int(window[1]), len(movie))
        # only the windows of interest are attributed: frames [lo, hi + history - 1) of the padded movie
        return inhibitory_channels(self.model, x[lo:hi + self.model.history - 1],
                                   cells=np.asarray(weights, np.float64), baseline=self.grey, n_steps=n_steps)


def probe(model):
    """Wrap a RetinaCNN in a :class:`CNNProbe`; anything else with ``rates(movie)`` is used as is."""
    from .model import RetinaCNN

    return CNNProbe(model) if isinstance(model, RetinaCNN) else model


def _mechanism(model, movie, cells, window, share, n_steps, measure, context_ms):
    """Attribute and reduce the analysed cells' mean response; measure the pruned network too.

    The attributed stretch is the window of interest with ``context_ms`` either
    side (the whole movie when None); the pruned network is measured on the
    whole movie.
    """
    if not isinstance(model, CNNProbe):
        return None, None
    weights = np.zeros(model.n_cells)
    weights[cells] = 1.0 / len(cells)
    context = None
    if context_ms is not None:
        if not float(context_ms) >= 0:
            raise ValueError(f"context_ms must be >= 0 (ms) or None (whole movies), got {context_ms!r}")
        context = int(round(float(context_ms) / S.FRAME_MS))
    red = model.reduce(movie, weights, window, share=share, n_steps=n_steps, context=context)
    pruned = model.rates(movie, model=red.pruned)[:, cells]
    return red, measure(pruned)


def _ablate_inhibition(model, res, movies, windows, cells, n_steps, measure):
    """Find each condition's inhibitory layer-2 channels, clamp their union to baseline, measure again.

    Fills ``res.inhibitory`` and ``res.ablated_measures``; does nothing for
    models other than CNNs.
    """
    if not isinstance(model, CNNProbe):
        return
    from .reduction import ablate

    weights = np.zeros(model.n_cells)
    weights[cells] = 1.0 / len(cells)
    found = {}
    for movie, window in zip(movies, windows):
        for ch in model.inhibition(movie, weights, window, n_steps=n_steps):
            found.setdefault(ch["channel"], []).append(ch)
    res.inhibitory = [dict(channel=c, conditions=len(v), share=float(np.mean([d["share"] for d in v])),
                           delay_ms=float(np.mean([d["delay_ms"] for d in v]))) for c, v in sorted(found.items())]
    if not found:
        return
    lesioned = ablate(model.model, sorted(found), baseline=model.grey)
    res.ablated_measures = [measure(i, model.rates(movie, model=lesioned)[:, cells])
                            for i, movie in enumerate(movies)]


def _ablate_types(model, movies, cells, types, measure):
    """Measures per condition with the layer-1 channels of ``types`` clamped to baseline (CNNs only).

    Returns ``(channels, measures)``; ``([], [])`` when the model is not a CNN
    or has no channel of those types.
    """
    if not isinstance(model, CNNProbe):
        return [], []
    from .reduction import ablate, classify_channels

    chans = [t["channel"] for t in classify_channels(model.model) if t["type"] in types]
    if not chans:
        return [], []
    lesioned = ablate(model.model, chans, layer="conv1", baseline=model.grey)
    return chans, [measure(i, model.rates(movie, model=lesioned)[:, cells]) for i, movie in enumerate(movies)]


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


def _row(model, cells, given):
    """The bar protocols record a row of cells (``phenomena.md``): unless ``cells`` were given, keep the
    analysed cells on the most populated row (ties: nearest the frame's centre) of a model that knows
    its cells' positions."""
    if given is not None or getattr(model, "cells", None) is None or not len(cells):
        return cells
    ys = np.array([model.cells[i].y for i in cells])
    rows, counts = np.unique(ys, return_counts=True)
    mid = (_frame_shape(model)[0] - 1) / 2
    best = max(zip(counts, -np.abs(rows - mid), rows))[2]
    return cells[ys == best]


def _frame_shape(model):
    return tuple(getattr(model, "frame_shape", (50, 50)))


def _summary_types(reduced):
    """Channel types carrying the mechanism, across conditions: ``{type: mean share}``."""
    out = {}
    for red in reduced:
        for ch in red.channels:
            out[ch["type"]] = out.get(ch["type"], 0.0) + ch["share"] / len(reduced)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def osr(model, *, frequencies=OSR_FREQUENCIES_HZ, periods=None, intensity=-1.0, duration=2, n_flashes=10,
        pre=100, post=100, cells=None, window_ms=450.0, explain=True, share=0.9, n_steps=50,
        context_ms=CONTEXT_MS):
    """Omitted stimulus response: flash trains at several periods, then one flash omitted.

    ``periods`` (frames) overrides ``frequencies`` (Hz).  Measures: per-train
    ``osr`` measures, and over trains the slope of peak time after the last
    flash vs period (``slope``, target about 1), the mean latency after the
    omitted flash, and the smallest OSR / last-flash ratio.  For a CNN with
    ``explain``, each train's response in ``[omission, omission + window_ms)``
    is attributed to layer-1 channels (pooled over space) and reduced
    (``result.reduced``), and the pruned network is measured too.
    """
    model = probe(model)
    if periods is None:
        periods = [S.period_frames(f) for f in frequencies]
    cells = _cells(model, cells, "OSR")
    res = PhenomenonResult("osr", [], [], [], [], {}, cells,
                           dict(intensity=intensity, duration=duration, n_flashes=n_flashes))
    trains = []
    for p in periods:
        st = S.flash_train(n_flashes, int(p), intensity=intensity, duration=duration, pre=pre, post=post,
                           frame_shape=_frame_shape(model))
        trains.append(st)
        r = _rates(model, st.movie)[:, cells]

        def measure(resp, st=st):
            return M.osr(resp, st.events["flash_frames"], st.events["omitted_frame"], window_ms=window_ms)

        res.add(dict(period=int(p), intensity=intensity), r, st.events, measure(r))
        if explain:
            om = int(st.events["omitted_frame"])
            red, m = _mechanism(model, st.movie, cells, (om, om + int(window_ms / 10)), share, n_steps, measure,
                                context_ms)
            res.add_reduced(red, m)
    per = res.per_condition
    fit = M.osr_slope([m["period_ms"] for m in per], [m["peak_after_last_ms"] for m in per])
    res.measures = dict(fit, min_ratio=float(min(m["ratio"] for m in per)),
                        latency_after_omitted_ms=float(np.mean([m["peak_after_omitted_ms"] for m in per])),
                        osr_peak_mean=float(np.mean([m["osr_peak"] for m in per])),
                        osr_amplitude=float(np.mean([m["osr_peak"] - m["baseline"] for m in per])))
    if res.reduced_measures:
        rm = res.reduced_measures
        res.measures.update(reduced_osr_peak_mean=float(np.mean([m["osr_peak"] for m in rm])),
                            reduced_latency_after_omitted_ms=float(np.mean([m["peak_after_omitted_ms"]
                                                                            for m in rm])))
    if explain:  # in-silico lesion of the CNN's slow ON channels
        chans, am = _ablate_types(model, [st.movie for st in trains], cells, ("ON-slow",),
                                  lambda i, resp: M.osr(resp, trains[i].events["flash_frames"],
                                                        trains[i].events["omitted_frame"], window_ms=window_ms))
        if am:
            res.ablated_measures = am
            res.params["ablated_conv1"] = chans
            res.measures["ablated_on_slow_osr_peak_mean"] = float(np.mean([m["osr_peak"] for m in am]))
            res.measures["ablated_on_slow_osr_amplitude"] = float(np.mean([m["osr_peak"] - m["baseline"]
                                                                           for m in am]))
    return res


def latency(model, *, intensities=LATENCY_INTENSITIES, duration=2, delay=50, post=60, cells=None,
            window_ms=150.0, min_rate=3.0, explain=True, share=0.9, n_steps=50, context_ms=CONTEXT_MS):
    """Latency coding: single full-field flashes of growing strength.

    Measures: per flash ``latency`` (peak and centre of mass, rates under
    ``min_rate`` Hz above the pre-flash baseline ignored); over the flashes
    that reach ``min_rate`` the ``latency_trend`` of each (``peak_delta_ms`` =
    weakest minus strongest, ...).  The default flashes are the spec's: -0.15
    to -3 in steps of 0.15.
    With ``explain`` (CNN), each flash response in ``[flash, flash + window_ms)``
    is attributed and reduced.
    """
    if not (isinstance(min_rate, (int, float, np.integer, np.floating)) and 0 <= min_rate < np.inf):
        raise ValueError(f"min_rate must be a finite rate >= 0 (Hz above the pre-flash baseline), got {min_rate!r}")
    model = probe(model)
    cells = _cells(model, cells, "OFF")
    res = PhenomenonResult("latency", [], [], [], [], {}, cells, dict(duration=duration, window_ms=window_ms,
                                                                       min_rate=min_rate))
    movies = []
    for c in intensities:
        st = S.flash(float(c), duration=duration, delay=delay, post=post, frame_shape=_frame_shape(model))
        movies.append(st.movie)
        r = _rates(model, st.movie)[:, cells]

        def measure(resp):
            return M.latency(resp, delay, window_ms=window_ms, min_rate=min_rate)

        res.add(dict(intensity=float(c)), r, st.events, measure(r))
        if explain:
            red, m = _mechanism(model, st.movie, cells, (delay, delay + int(window_ms / 10)), share, n_steps,
                                measure, context_ms)
            res.add_reduced(red, m)
    pk = M.latency_trend(intensities, [m["peak_ms"] for m in res.per_condition])
    com = M.latency_trend(intensities, [m["com_ms"] for m in res.per_condition])
    res.measures = {f"peak_{k}": v for k, v in pk.items()}
    res.measures.update({f"com_{k}": v for k, v in com.items()})
    if res.reduced_measures:
        res.measures["reduced_peak_delta_ms"] = M.latency_trend(
            intensities, [m["peak_ms"] for m in res.reduced_measures])["delta_ms"]
    if explain:
        win = (delay, delay + int(window_ms / 10))
        _ablate_inhibition(model, res, movies, [win] * len(movies), cells, n_steps,
                           lambda i, resp: M.latency(resp, delay, window_ms=window_ms, min_rate=min_rate))
        if res.ablated_measures:
            am = res.ablated_measures
            res.measures["ablated_inhibition_peak_delta_ms"] = M.latency_trend(
                intensities, [m["peak_ms"] for m in am])["delta_ms"]
            res.measures["ablated_inhibition_com_delta_ms"] = M.latency_trend(
                intensities, [m["com_ms"] for m in am])["delta_ms"]
    return res


def reversal(model, *, flips=(21, 23, 25, 27, 29), speed=0.14, width=2.0, intensity=-1.0, start=2.0, post=50,
             cells=None, population_x=(15, 35), explain=True, share=0.9, n_steps=50,
             context_ms=CONTEXT_MS):
    """Motion reversal: a dark bar moves right from ``start`` and reverses at each of ``flips`` (px).

    The population response (mean over the analysed cells whose centre x lies
    in ``population_x`` on the most populated row, when the model knows its
    cells' positions and ``cells`` is not given) is aligned
    on the reversal.  Measures: per flip ``reversal``; over flips the burst
    latency mean and s.d., and the smallest burst / smooth-motion ratio.  With
    ``explain`` (CNN), the burst window (reversal + 150..400 ms) is attributed
    (pooled over rows: channel x position maps) and reduced.
    """
    model = probe(model)
    cells = _row(model, _cells(model, cells, "OFF"), cells)
    if getattr(model, "cells", None) is not None:
        xs = np.array([model.cells[i].x for i in cells])
        keep = (xs >= population_x[0]) & (xs <= population_x[1])
        if keep.any():
            cells = cells[keep]
    res = PhenomenonResult("reversal", [], [], [], [], {}, cells,
                           dict(speed=speed, width=width, intensity=intensity, start=start))
    bars = []
    for x in flips:
        st = S.moving_bar(speed, width=width, intensity=intensity, start=start, reverse_at=float(x), post=post,
                          frame_shape=_frame_shape(model))
        bars.append(st)
        r = _rates(model, st.movie)[:, cells]

        def measure(resp, st=st):
            return M.reversal(resp, st.events["reversal_frame"])

        res.add(dict(reverse_at=float(x), speed=speed), r, st.events, measure(r))
        if explain:
            rev = int(st.events["reversal_frame"])
            red, m = _mechanism(model, st.movie, cells, (rev + 15, rev + 40), share, n_steps, measure,
                                context_ms)
            res.add_reduced(red, m)
    per = res.per_condition
    res.measures = M.reversal_spread([m["latency_ms"] for m in per])
    res.measures.update(min_ratio=float(min(m["ratio"] for m in per)),
                        mean_ratio=float(np.mean([m["ratio"] for m in per])))
    if res.reduced_measures:
        res.measures["reduced_mean_ratio"] = float(np.mean([m["ratio"] for m in res.reduced_measures]))
    if explain:  # in-silico lesion of the CNN's fast ON channels
        chans, am = _ablate_types(model, [st.movie for st in bars], cells, ("ON-fast",),
                                  lambda i, resp: M.reversal(resp, bars[i].events["reversal_frame"]))
        if am:
            res.ablated_measures = am
            res.params["ablated_conv1"] = chans
            res.measures["ablated_on_fast_mean_ratio"] = float(np.mean([m["ratio"] for m in am]))
    return res


def anticipation(model, *, speeds=(0.04, 0.08, 0.16), width=2.0, intensity=-1.0, cells=None,
                 flash_positions=None, flash_duration=2, explain=True, share=0.9, n_steps=50,
                 context_ms=CONTEXT_MS):
    """Motion anticipation: bars moving at several speeds, against flashed bars as the reference.

    The analysed cells (default: the OFF cells; for a model that knows its
    cells' positions, those on the most populated row) are recorded as a row.
    For each analysed cell the reference position is its receptive-field
    centre when the model knows it (``model.cells[i].x``), else the peak of its
    flashed-bar response profile.  Measures: per speed the mean ``offset_px``
    (negative = the cell peaks before the bar centre arrives) and ``lead_um``
    against the flashed-bar peak; summary ``offset_px_<speed>`` and
    ``lead_um_<speed>``.  With ``explain`` (CNN), 400 ms around the mean
    response peak are attributed (rows pooled) and reduced.
    """
    model = probe(model)
    cells = _row(model, _cells(model, cells, "OFF"), cells)
    fs = _frame_shape(model)
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
        peaks.append(_rates(model, st.movie)[20:, cells].max(0))
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

    bars, windows = [], []
    for v in speeds:
        st = S.moving_bar(v, width=width, intensity=intensity, frame_shape=fs)
        r = _rates(model, st.movie)[:, cells]
        t_pk = int(np.nanargmax(r.mean(1)))
        bars.append(st)
        windows.append((max(t_pk - 30, 0), t_pk + 10))
        m = dict(measure(r, st), speed=float(v))
        res.add(dict(speed=float(v)), r, st.events, m)
        res.measures[f"offset_px_{v:g}"] = m["offset_px"]
        res.measures[f"lead_um_{v:g}"] = m["lead_um"]
        if explain:
            red, rm = _mechanism(model, st.movie, cells, windows[-1], share, n_steps,
                                 lambda resp, st=st: measure(resp, st), context_ms)
            res.add_reduced(red, rm)
            if rm is not None:
                res.measures[f"reduced_offset_px_{v:g}"] = rm["offset_px"]
    if explain:
        _ablate_inhibition(model, res, [st.movie for st in bars], windows, cells, n_steps,
                           lambda i, resp: measure(resp, bars[i]))
        for v, am in zip(speeds, res.ablated_measures):
            res.measures[f"ablated_inhibition_offset_px_{v:g}"] = am["offset_px"]
    return res
