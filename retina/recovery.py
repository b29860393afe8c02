"""Does model reduction recover the true mechanism?  Scored by intervention against the in-silico retina.

The simulator's circuit is known, so each of its parts can be removed and the
effect on a phenomenon measured.  A CNN fitted to the simulator recovers the
mechanism when removing *the channels that do that part's job* has the same
effect.  Everything is defined in ``docs/recovery.md``; in short:

1. **Parts** (:data:`PARTS`): the OFF, ON-fast and ON-slow bipolar pathways,
   the amacrine A1 and synaptic depression, each removed by the simulator's own
   lesion (:meth:`retina.insilico.InSilicoParams.lesioned`).
2. **Matching by function** (:func:`match_channels`): on a generic probe movie
   (natural movie and checkerboard white noise, :func:`probe_movie`) each CNN
   layer-1 channel's activity at the simulated cells' positions, times the
   sign of its effect downstream, is correlated with the simulator's part
   signals there (:func:`part_signals`, at a bipolar's and a ganglion cell's
   scale), times the sign of what each part does to the cells
   (:data:`PART_SIGNS`): each bipolar pathway's rectified drive (+), the
   amacrine's output (-) and the release lost to depression (-).  A channel
   belongs to the part it correlates with best (and positively) when that
   correlation squared reaches :data:`MIN_MATCH_R2`; otherwise to none.  No
   type label is used.
3. **Effects**: the phenomenon's key measure with the part lesioned (simulator)
   and with the matched channels clamped to their grey-screen activity (CNN),
   as a change relative to the phenomenon's size in that system
   (``(K_lesioned - K_intact) / |K_intact - K_absent|``; ``K_absent`` is the
   key measure's value without the phenomenon).  A missing measure (nothing to
   measure any more) counts as ``K_absent``.
4. **Score** (:func:`score`): over the parts whose lesion matters to the
   phenomenon in the simulator (a relative effect of at least
   :data:`RELEVANT_EFFECT`), the fraction where the CNN's effect has the
   simulator's sign and at least :data:`MIN_EFFECT_FRACTION` of its size.
   Parts that do not matter are reported (in ``agrees``: is the CNN's effect
   not relevant either?) but not scored; a CNN whose every ablation matters is
   caught by the permutation null instead.
5. **Nulls** (:func:`recover`): the same score (a) under every other pairing of
   the CNN's channel groups with the parts (label permutations that move at
   least one part that matters) and (b) for untrained CNNs of the same shape,
   matched and lesioned the same way.  The null level is the permutations'
   median or the best untrained score, whichever is higher.  A mechanism is
   *recovered* only when the score is at least :data:`RECOVERED_SCORE`, beats
   the null level by :data:`NULL_MARGIN`, and at most :data:`MAX_P_VALUE` of
   the other pairings score as high (the permutation p-value).
   **Positive control** (:func:`truth_recovery`): the simulator's own effects
   scored as a CNN's; a phenomenon where even they are not significant
   against their permutations cannot tell its parts apart and is reported
   *undecidable*.  Its **power** (:func:`verdict_power`): the share of
   near-copies of the truth (each effect off by a random factor, typically
   :data:`NEAR_COPY_FACTOR`) called recovered.  :func:`overall` pools every
   reproduced phenomenon, with one joint permutation for all of them.
6. **Fidelity first** (:func:`fidelity`): no claim is made for a phenomenon the
   model does not reproduce (it must show it, and its response in the windows
   of interest must correlate with the simulator's by at least
   :data:`FIDELITY_MIN_CORR`).
7. **Answers planted** (positive controls): :func:`planted_model`, a CNN set
   layer by layer from the simulator (a loss channel per vesicle pool
   included); :func:`layer1_counterparts`, each
   part's best layer-1 channel (can any channel stand for it?), whose filters
   a recipe can plant (``init = "counterparts"``).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

from . import phenomena as P
from . import stimuli as S

__all__ = ["PARTS", "probe_movie", "part_signals", "channel_activity", "match_channels", "key_value",
           "simulator_effects", "cnn_effects", "score", "permutation_null", "untrained_model", "fidelity",
           "recover", "Recovery", "relevant", "RELEVANT_EFFECT", "MIN_EFFECT_FRACTION", "MIN_MATCH_R2",
           "RECOVERED_SCORE", "NULL_MARGIN", "FIDELITY_MIN_CORR", "planted_filters", "truth_recovery",
           "overall", "MAX_P_VALUE", "p_value", "passes", "MATCH_HIGHPASS_FRAMES", "layer1_counterparts",
           "PART_SIGNS", "MATCH_SCALES", "match_signals", "near_copies", "verdict_power", "NEAR_COPY_FACTOR",
           "POWER_DRAWS", "planted_model"]

log = logging.getLogger(__name__)

PARTS = ("OFF", "ONf", "ONs", "A1", "depression")
"""The simulator's parts, each removable by the lesion of the same name."""
PART_SIGNS = (1.0, 1.0, 1.0, -1.0, -1.0)
"""What each part does to the ganglion cells: the pathways add release, the amacrine and depression take it away."""

# The thresholds of the benchmark, each stated once (docs/recovery.md).
MIN_MATCH_R2 = 0.1          # a channel is matched to a part only if that part's signal explains >= 10 % of its variance
RELEVANT_EFFECT = 0.2       # a lesion matters when it changes the phenomenon by >= 20 % of its size
MIN_EFFECT_FRACTION = 0.5   # the CNN's effect must reach half the simulator's, with its sign
RECOVERED_SCORE = 0.7       # a mechanism is recovered at a score >= 0.7 ...
NULL_MARGIN = 0.25          # ... that beats the null level (the permutations' median, or the best untrained) by 0.25
MAX_P_VALUE = 0.05          # ... and that at most 5 % of the other pairings reach
NEAR_COPY_FACTOR = 2.0      # the verdict's power is reported for near-copies of the truth off by this typical factor
POWER_DRAWS = 400           # near-copies drawn per power estimate (its standard error is at most 2.5 points)
FIDELITY_MIN_CORR = 0.5     # the model's response in the windows of interest correlates >= 0.5 with the simulator's
MATCH_HIGHPASS_FRAMES = 21  # the match compares activity and signals without their 210 ms running mean
MAX_LAG = 3                 # frames either way the match may shift a channel's activity against the signals
PROBE_FRAMES = 2000
COUNTERPART_MARGIN = 0.05   # a part's best layer-1 channel is searched to beat every other part by this much
PROBE_SEED = 20191208
PIXEL_SIGMA_PX = 0.05       # a ganglion Gaussian this narrow pools one pixel: the part signals are read per pixel
MATCH_SCALES = ("pixel", "ganglion")   # where the part signals pool the bipolar pathways from (a bipolar's view, a
                                       # ganglion cell's); each channel is compared at the one that suits it


def probe_movie(frame_shape=(50, 50), n_frames=PROBE_FRAMES, seed=PROBE_SEED):
    """The generic matching stimulus: half natural movie, half binary checkerboard noise (contrast units)."""
    half = n_frames // 2
    nat = S.natural_movie(half, frame_shape, seed=seed).movie
    wn = S.white_noise(n_frames - half, frame_shape, contrast=0.35, binary=True, check=2, hold=3,
                       seed=seed + 1).movie
    return np.concatenate([nat, wn])


def part_signals(sim, movie, positions, *, scale="pixel"):
    """What each part does at each position: ``(T, n_positions, 5)`` for :data:`PARTS`.

    As they reach a probe cell at each position (rounded to the pixel) that
    weighs every source 1 (after the membrane low-pass): each pathway's
    rectified drive without depression (the pathway's own kinetics and
    polarity), the amacrine's output (pooled by its own Gaussian, as it
    reaches any cell), and ``depression``: the release lost to depression
    (without minus with, summed over the pathways; what depression does,
    kept apart from the pathways it acts on).  ``scale`` is where the probe
    cell pools the bipolar pathways from: ``"pixel"``, its own pixel (a
    bipolar cell's view), or ``"ganglion"``, the simulator's ganglion
    Gaussian (:data:`MATCH_SCALES`).
    """
    if scale not in MATCH_SCALES:
        raise ValueError(f"scale must be one of {MATCH_SCALES}, got {scale!r}")
    intact = _probe_pathways(sim, movie, positions, scale=scale)
    nodep = _probe_pathways(sim, movie, positions, lesion="depression", scale=scale)
    lost = nodep[..., :3].sum(-1) - intact[..., :3].sum(-1)
    return np.concatenate([nodep[..., :3], -intact[..., 3:4], lost[..., None]], -1)


def match_signals(sim, movie, positions):
    """The part signals at every scale the match compares: ``(T, n_positions, 5, len(MATCH_SCALES))``."""
    return np.stack([part_signals(sim, movie, positions, scale=sc) for sc in MATCH_SCALES], -1)


def _probe_pathways(sim, movie, positions, lesion=None, scale="pixel"):
    """The simulator's split membrane potential (:meth:`~retina.insilico.InSilicoRetina.pathways`) of a probe
    cell at each position (rounded to the pixel) that weighs every source 1: ``(T, n_positions, 4)``, the
    pathways' release and the amacrine's (negative) input, the pathways pooled from the cell's own pixel
    (``scale="pixel"``) or by the ganglion's Gaussian (``"ganglion"``)."""
    from .insilico import GanglionParams, InSilicoRetina

    p = sim.params.copy()
    p.ganglion = {"probe": GanglionParams(1.0, 1.0, 1.0, 1.0, 0.0, 1.0)}
    if scale == "pixel":
        p.sigma_ganglion_px = PIXEL_SIGMA_PX
    positions = [(float(round(y)), float(round(x))) for y, x in positions]
    return InSilicoRetina(p.lesioned(lesion) if lesion else p, positions=positions).pathways(movie)


def channel_activity(model, movie, positions):
    """Each layer-1 channel's output (after its ReLU) at each position: ``(T, C1, n_positions)``.

    ``movie`` is in contrast units; row ``t`` is aligned with response bin ``t``.
    """
    from .reduction import layer1_output

    return layer1_output(model, model.padded(movie), *_map_index(model, positions))


def _map_index(model, positions):
    """The layer-1 map's rows and columns whose units are centred on ``positions`` (px), clipped to the map."""
    _, h1, w1 = model.shape1
    off = (model.w1.shape[-1] - 1) / 2.0
    iy = np.clip(np.rint(np.array([p[0] for p in positions]) - off).astype(int), 0, h1 - 1)
    ix = np.clip(np.rint(np.array([p[1] for p in positions]) - off).astype(int), 0, w1 - 1)
    return iy, ix


def _highpass(x):
    """``x`` (time first) minus its centred running mean over :data:`MATCH_HIGHPASS_FRAMES` frames."""
    from scipy.ndimage import uniform_filter1d

    x = np.asarray(x, dtype=np.float64)
    return x - uniform_filter1d(x, MATCH_HIGHPASS_FRAMES, axis=0, mode="nearest")


def match_channels(model, sim, positions=None, *, movie=None, signals=None, signs=None):
    """Assign every layer-1 channel to the simulator part whose signed signal follows its signed activity most
    closely.

    Both sides carry the sign of what they do to the ganglion cells: each
    channel's activity times the sign of its downstream effect (``signs``,
    +1 where the channel excites the output; default
    :func:`retina.reduction.downstream_signs`), each part's signal times
    :data:`PART_SIGNS` (the pathways add release, the amacrine and
    depression take it away).  So a channel that follows a pathway's drive
    but lowers the output is not that pathway: it takes that release away,
    as depression and the amacrine do.  For each channel and part, the
    correlation of the two, each without its running mean over
    :data:`MATCH_HIGHPASS_FRAMES` frames, over all positions, at one lag for
    the whole model (of ``-MAX_LAG..MAX_LAG`` frames, the one where the
    channels' best correlations sum highest).  ``signals`` may hold the part
    signals at several spatial scales (a last axis, as
    :func:`match_signals`, the default); each channel is compared at the
    scale where its best correlation is highest, so that a channel as
    narrow as a bipolar cell and one as broad as a ganglion cell's field
    are each read at their own.  The channel belongs to the part with the
    highest positive correlation when its square reaches
    :data:`MIN_MATCH_R2`; otherwise to none.  Each part is judged on its own
    (no multiple regression: the part signals are strongly collinear, and
    joint coefficients flip sign between them).

    Returns one dict per channel: ``channel``, ``part`` (None when
    unmatched), ``r2`` (the winning correlation squared), ``lag`` (frames),
    ``sign`` (the channel's downstream sign), ``scale`` (the index of the
    scale it was read at), ``corr`` (the best-lag signed correlation with
    every part at that scale).
    """
    positions = list(sim.positions if positions is None else positions)
    movie = probe_movie(tuple(model.frame_shape)) if movie is None else movie
    sig = match_signals(sim, movie, positions) if signals is None else np.asarray(signals)
    if sig.ndim == 3:
        sig = sig[..., None]
    act = channel_activity(model, movie, positions)               # (T, C1, J)
    if signs is None:
        from .reduction import downstream_signs

        signs = downstream_signs(model)
    signs = np.asarray(signs, np.float64)
    if signs.shape != (act.shape[1],) or not np.isin(signs, (-1.0, 1.0)).all():
        raise ValueError(f"signs must hold +1 or -1 for each of the model's {act.shape[1]} layer-1 channels, "
                         f"got {signs.tolist()}")
    act = act * signs[None, :, None]
    sig = sig * np.asarray(PART_SIGNS)[:, None]
    t_len = min(len(sig), len(act))
    # compared without their slow components (a running mean of MATCH_HIGHPASS_FRAMES removed): raw, the slow
    # components that every low-passed function of one drive shares (the OFF pathway, the amacrine it drives, the
    # release depression takes) dominate, and a channel planted from the OFF filter correlates with the amacrine
    # as well as with the OFF pathway
    sig, act = _highpass(sig[:t_len]), _highpass(act[:t_len])
    lags = range(-MAX_LAG, MAX_LAG + 1)
    n_scales = sig.shape[-1]
    r = np.zeros((len(lags), act.shape[1], len(PARTS), n_scales))  # correlation per lag, channel, part, scale
    for li, lag in enumerate(lags):
        lo, hi = max(0, -lag), t_len - max(0, lag)
        for c in range(act.shape[1]):
            y = act[lo + lag:hi + lag, c, :].reshape(-1)
            if np.ptp(y) == 0:
                continue
            for k in range(len(PARTS)):
                for sc in range(n_scales):
                    x = sig[lo:hi, :, k, sc].reshape(-1)
                    if np.ptp(x) > 0:
                        r[li, c, k, sc] = np.corrcoef(x, y)[0, 1]
    # one lag for the whole model (its alignment with the simulator), so that a part that is a delayed copy of
    # another (the amacrine of the OFF pathway) cannot be matched by sliding a channel in time
    li = int(np.argmax(r.max(axis=(2, 3)).sum(axis=1)))
    out = []
    for c in range(act.shape[1]):
        sc = int(np.argmax(r[li, c].max(axis=0)))                   # the scale of the channel's best correlation
        corr = {p: float(r[li, c, k, sc]) for k, p in enumerate(PARTS)}
        top = max(PARTS, key=lambda q: corr[q])
        best = corr[top]
        part = top if best > 0 and best * best >= MIN_MATCH_R2 else None
        out.append(dict(channel=c, part=part, r2=float(max(best, 0.0) ** 2), lag=int(lags[li]),
                        sign=int(signs[c]), scale=sc, corr=corr))
    return out


def key_value(ph, result):
    """The phenomenon's key measure of ``result``; its absent value when there is nothing to measure."""
    v = result.measures.get(ph.key_measure, float("nan"))
    return float(v) if np.isfinite(v) else float(ph.absent_value)


def _relative(ph, intact, lesioned):
    size = abs(intact - ph.absent_value)
    if size < 1e-9:
        return float("nan")
    return float((lesioned - intact) / size)


def simulator_effects(name, sim=None, *, intact=None, parts=PARTS):
    """The key measure intact and with each part lesioned, and the relative effects: ``{part: dict}``."""
    ph = P.get(name)
    base = ph.simulator(sim)
    res = intact if intact is not None else ph.run(base, **ph.options_for(base))
    k0 = key_value(ph, res)
    out = {}
    for part in parts:
        other = ph.simulator(sim, lesion=part)
        k = key_value(ph, ph.run(other, **ph.options_for(other)))
        out[part] = dict(intact=k0, lesioned=k, effect=_relative(ph, k0, k))
    return out


def cnn_effects(name, model, groups, *, intact=None):
    """The key measure of ``model`` intact and with each group of layer-1 channels clamped to grey:
    ``{part: dict}``.  ``groups`` maps a part to its channels (an empty group has no effect)."""
    from .reduction import ablate

    ph = P.get(name)
    probe = P.CNNProbe(model)
    opts = ph.options_for(probe)
    if intact is None:
        intact = ph.run(probe, explain=False, **opts)
    k0 = key_value(ph, intact)
    out = {}
    for part, chans in groups.items():
        key = tuple(sorted(int(c) for c in chans))
        k = k0
        if key:
            lesioned = P.CNNProbe(ablate(model, list(key), layer="conv1", baseline=model.grey),
                                  cells=probe.cells)
            k = key_value(ph, ph.run(lesioned, explain=False, **opts))
        out[part] = dict(intact=k0, lesioned=k, effect=_relative(ph, k0, k), channels=list(key))
    return out


def relevant(effect) -> bool:
    """Does a relative effect matter (at least :data:`RELEVANT_EFFECT` of the phenomenon's size)?"""
    return bool(np.isfinite(effect) and abs(effect) >= RELEVANT_EFFECT)


def _agrees(sim_e, cnn_e):
    if not np.isfinite(sim_e) or not np.isfinite(cnn_e):
        return False
    if relevant(sim_e):
        return bool(np.sign(cnn_e) == np.sign(sim_e) and abs(cnn_e) >= MIN_EFFECT_FRACTION * abs(sim_e))
    return not relevant(cnn_e)


def score(sim_effects, cnn_effects, pairing=None):
    """The recovery score: over the parts whose simulator lesion is relevant, the fraction where the CNN's
    effect has its sign and at least half its size (see the module text).

    ``pairing`` maps each simulator part to the CNN group judged against it
    (default: the same part).  Returns ``(score, {part: bool})``: the score
    (NaN when no part matters) and, for every part, whether the CNN agrees
    (for parts that do not matter: whether the CNN's effect does not either).
    """
    pairing = pairing or {p: p for p in sim_effects}
    ok = {p: _agrees(sim_effects[p]["effect"], cnn_effects[pairing[p]]["effect"]) for p in sim_effects}
    scored = [ok[p] for p in sim_effects if relevant(sim_effects[p]["effect"])]
    return (float(np.mean(scored)) if scored else float("nan")), ok


def permutation_null(sim_effects, cnn_effects):
    """The score under every other pairing of the CNN's channel groups with the parts: every permutation
    that moves at least one part that matters (one that only shuffles the others scores the same pairs)."""
    parts = list(sim_effects)
    scored = {p for p in parts if relevant(sim_effects[p]["effect"])}
    return [score(sim_effects, cnn_effects, pairing)[0] for pairing in _moved_pairings(parts, scored)]


def _moved_pairings(parts, scored):
    """Every pairing of ``parts`` with a permutation of them that moves at least one part in ``scored`` (the
    permutation nulls' pairings), as dicts part -> part, in ``itertools.permutations`` order."""
    return [dict(zip(parts, perm)) for perm in itertools.permutations(parts)
            if any(q != p for p, q in zip(parts, perm) if p in scored)]


def untrained_model(model, seed):
    """An untrained CNN of ``model``'s shape (:meth:`retina.RetinaCNN.random`) that reads out the same cells
    (same metadata, normalisation and units)."""
    from .model import RetinaCNN

    rnd = RetinaCNN.random(model.n_cells, seed=seed, channels=(model.w1.shape[0], model.w2.shape[0]),
                           history=model.history, kernel_sizes=(model.w1.shape[-1], model.w2.shape[-1]),
                           frame_shape=tuple(model.frame_shape))
    meta = dict(model.metadata, untrained_seed=str(seed), untrained_null_of=model.content_hash())
    return RetinaCNN(**rnd.arrays, frame_shape=model.frame_shape, norm_stats=model.norm_stats,
                     cell_ids=model.cell_ids, metadata=meta, input_units=model.input_units,
                     response_offset=model.response_offset)


def _window_responses(res, other):
    """The analysed cells' mean response of ``res`` and of ``other`` (the same protocol) over the same frames of
    each condition: the union of their two windows of interest."""
    a_parts, b_parts = [], []
    for ra, rb, wa, wb in zip(res.responses, other.responses, res.windows, other.windows):
        lo, hi = min(wa[0], wb[0]), max(wa[1], wb[1])
        a, b = np.asarray(ra, np.float64)[lo:hi].mean(1), np.asarray(rb, np.float64)[lo:hi].mean(1)
        n = min(len(a), len(b))
        a_parts.append(a[:n])
        b_parts.append(b[:n])
    return (np.concatenate(a_parts), np.concatenate(b_parts)) if a_parts else (np.zeros(0), np.zeros(0))


def fidelity(name, model_result, sim_result, *, sim_same_cells=None):
    """Does the model reproduce the phenomenon?  Its key measure per condition beside the simulator's, the
    correlation of the analysed cells' mean response in the windows of interest, and the verdict.

    The correlation is over the same frames (the union of the model's and the
    simulator's windows) and, for a row protocol, ``sim_same_cells``: the
    simulator's run on the model's own cells (its dense row of cells averages
    a moving bar's response flat).  The key measures come from ``sim_result``.
    """
    ph = P.get(name)
    a, b = _window_responses(model_result, sim_same_cells if sim_same_cells is not None else sim_result)
    n = min(len(a), len(b))
    corr = float(np.corrcoef(a[:n], b[:n])[0, 1]) if n > 2 and np.ptp(a[:n]) > 0 and np.ptp(b[:n]) > 0 else 0.0
    shows = bool(ph.shows(model_result.measures)) if ph.shows is not None else True
    cm = ph.condition_measure
    per = [dict(condition=c, model=float(m.get(cm, np.nan)), simulator=float(s.get(cm, np.nan)))
           for c, m, s in zip(model_result.conditions, model_result.per_condition, sim_result.per_condition)]
    return dict(shows=shows, window_corr=corr, measure=cm, per_condition=per,
                key_model=key_value(ph, model_result), key_simulator=key_value(ph, sim_result),
                reproduces=bool(shows and corr >= FIDELITY_MIN_CORR))


@dataclass
class Recovery:
    """One phenomenon's recovery benchmark: matches, effects, score, nulls, fidelity and the verdict.

    ``truth_p`` is the permutation p-value when the CNN's effects are the
    simulator's own (:func:`truth_recovery`): if even the truth is not
    significant, the phenomenon cannot tell its parts apart and no verdict is
    drawn from it alone.  ``power`` is the share of near-copies of the truth
    that would be called recovered here (:func:`verdict_power`): how close to
    the circuit's a CNN's effects must be for this phenomenon's verdict.
    """

    name: str
    matches: list
    simulator: dict
    cnn: dict
    agrees: dict
    score: float
    null_permutation: list
    null_untrained: list
    fidelity: dict | None = None
    untrained_detail: list = field(default_factory=list)
    truth_p: float = float("nan")
    power: float = float("nan")

    @property
    def null_level(self) -> float:
        """The permutation null's median, or the best untrained score if higher."""
        return _null_level(self.null_permutation, self.null_untrained)

    @property
    def p_value(self) -> float:
        """The share of pairings (the true one included) that score at least as high as the true one."""
        return p_value(self.score, self.null_permutation)

    @property
    def null_max(self) -> float:
        nulls = [v for v in self.null_permutation + self.null_untrained if np.isfinite(v)]
        return float(max(nulls)) if nulls else float("nan")

    @property
    def decisive(self) -> bool:
        """Can this phenomenon tell its parts apart (the truth's own p-value is at most MAX_P_VALUE)?"""
        return bool(not np.isfinite(self.truth_p) or self.truth_p <= MAX_P_VALUE)

    @property
    def recovered(self) -> bool:
        """Reproduced, decisive, and the score passes :func:`passes` against its nulls."""
        if self.fidelity is not None and not self.fidelity["reproduces"]:
            return False
        return bool(self.decisive and passes(self.score, self.null_permutation, self.null_untrained))

    @property
    def verdict(self) -> str:
        if self.fidelity is not None and not self.fidelity["reproduces"]:
            f = self.fidelity
            return (f"not reproduced (shows it: {'yes' if f['shows'] else 'no'}, window corr {f['window_corr']:.2f}"
                    f"; needs both, and >= {FIDELITY_MIN_CORR:g}): no mechanism claim")
        if not self.decisive:
            return (f"undecidable: the simulator's own parts can be exchanged here (the truth itself has a "
                    f"permutation p-value of {self.truth_p:.2f}); score {self.score:.2f}, no claim from this "
                    "phenomenon alone")
        word = "recovered" if self.recovered else "not recovered"
        return (f"{word}: score {self.score:.2f} (needs >= {RECOVERED_SCORE:g}), null level {self.null_level:.2f} "
                f"(needs a margin of {NULL_MARGIN:g}), permutation p = {self.p_value:.3f} (needs <= {MAX_P_VALUE:g})")

    def as_dict(self) -> dict:
        return dict(name=self.name, matches=self.matches, simulator=self.simulator, cnn=self.cnn,
                    agrees=self.agrees, score=self.score, null_permutation=self.null_permutation,
                    null_untrained=self.null_untrained, null_max=self.null_max, null_level=self.null_level,
                    p_value=self.p_value, truth_p=self.truth_p, power=self.power, decisive=self.decisive,
                    recovered=self.recovered,
                    verdict=self.verdict, fidelity=self.fidelity, untrained=self.untrained_detail)


def _null_level(permutation, untrained):
    levels = ([float(np.median(permutation))] if permutation else []) + [v for v in untrained if np.isfinite(v)]
    return float(max(levels)) if levels else float("nan")


def p_value(value, permutation):
    """The permutation p-value of a score: ``(1 + #{null >= value}) / (1 + #null)``."""
    if not permutation or not np.isfinite(value):
        return float("nan")
    return float((1 + sum(v >= value - 1e-12 for v in permutation)) / (1 + len(permutation)))


def passes(value, permutation, untrained):
    """The recovery rule: ``value >= RECOVERED_SCORE``, at least ``NULL_MARGIN`` above the null level and a
    permutation p-value of at most ``MAX_P_VALUE``."""
    level, p = _null_level(permutation, untrained), p_value(value, permutation)
    return bool(np.isfinite(value) and value >= RECOVERED_SCORE
                and (not np.isfinite(level) or value - level >= NULL_MARGIN)
                and (not np.isfinite(p) or p <= MAX_P_VALUE))


def truth_recovery(sim_effects):
    """The positive control of the scoring: the simulator's effects scored as if a CNN had them.

    Returns ``(score, p)``: the truth's score (1 whenever some part matters)
    and its permutation p-value.  A phenomenon whose truth is not
    significant (p > :data:`MAX_P_VALUE`) cannot tell its parts apart by sign
    and size.
    """
    sc = score(sim_effects, sim_effects)[0]
    return sc, p_value(sc, permutation_null(sim_effects, sim_effects))


def near_copies(sim_effects, *, factor=NEAR_COPY_FACTOR, n=POWER_DRAWS, seed=0):
    """``n`` near-copies of the truth: the simulator's relative effects, each multiplied by its own
    ``exp(ln(factor) z)``, ``z ~ N(0, 1)`` (so the sign is kept and a typical effect is off by ``factor`` either
    way).  Returns a list of ``{part: {"effect": float}}``, the shape :func:`score` reads."""
    if not np.isfinite(factor) or factor < 1:
        raise ValueError(f"factor must be a number >= 1, got {factor!r}")
    rng = np.random.default_rng(seed)
    s = np.log(factor)
    return [{p: dict(effect=float(v["effect"]) * float(np.exp(s * rng.standard_normal()))) for p, v in
             sim_effects.items()} for _ in range(int(n))]


def verdict_power(sim_effects, *, factor=NEAR_COPY_FACTOR, n=POWER_DRAWS, seed=0):
    """The verdict's power on one phenomenon: the share of near-copies of the truth (:func:`near_copies`) called
    recovered.

    A near-copy is recovered when the phenomenon is decisive (:func:`truth_recovery`) and its score
    :func:`passes` against its own permutations (no untrained null: that one is the model's).  So 1 means the
    rule recognises any CNN whose lesion effects are within about ``factor`` of the circuit's; a low value means
    the phenomenon's parts act too much alike for the rule to recognise even a close copy.  Deterministic for a
    given ``seed``.
    """
    if truth_recovery(sim_effects)[1] > MAX_P_VALUE:
        return 0.0
    return _power([sim_effects], factor=factor, n=n, seed=seed)


def _power(sims, *, factor=NEAR_COPY_FACTOR, n=POWER_DRAWS, seed=0):
    """The share of near-copies of the phenomena ``sims`` (their simulator effects; each drawn afresh, the
    ``k``-th from ``seed + k``) whose pooled score passes against every pairing that moves a part that matters in
    any of them (:func:`permutation_null`, :func:`overall`)."""
    parts = list(PARTS)
    rows = [[i for i, p in enumerate(parts) if relevant(se[p]["effect"])] for se in sims]
    scored = {parts[i] for r in rows for i in r}
    moved = np.array([[parts.index(pm[p]) for p in parts] for pm in _moved_pairings(parts, scored)],
                     np.int64).reshape(-1, len(parts))
    count = sum(len(r) for r in rows)
    if not count:
        return float("nan")
    copies = [near_copies(se, factor=factor, n=n, seed=seed + k) for k, se in enumerate(sims)]
    hits = []
    for d in range(int(n)):
        agree = np.zeros((len(parts), len(parts)))     # summed over phenomena: sim part i against CNN group j
        for se, r, c in zip(sims, rows, copies):
            for i in r:
                agree[i] += [_agrees(se[parts[i]]["effect"], c[d][q]["effect"]) for q in parts]
        value = np.trace(agree) / count
        null = agree[np.arange(len(parts)), moved].sum(1) / count
        hits.append(passes(float(value), [float(v) for v in null], []))
    return float(np.mean(hits))


def overall(recoveries):
    """One score over every phenomenon a model reproduces: the pooled fraction of (phenomenon, part) pairs that
    matter where the CNN agrees, its joint permutation null (one pairing of groups with parts for all
    phenomena at once), the same pooled score for each untrained CNN, the truth's own joint null, the verdict,
    and its power (the share of near-copies of the truth, every phenomenon's effects drawn afresh by
    :func:`near_copies`, that pass).  Returns a dict."""
    recs = [r for r in recoveries if r.fidelity is None or r.fidelity["reproduces"]]
    parts = list(PARTS)

    def pooled(effects_of, pairing=None):
        vals = [_agrees(r.simulator[p]["effect"], effects_of(r)[(pairing or {}).get(p, p)]["effect"])
                for r in recs for p in parts if relevant(r.simulator[p]["effect"])]
        return float(np.mean(vals)) if vals else float("nan")

    scored = {p for r in recs for p in parts if relevant(r.simulator[p]["effect"])}
    moved = _moved_pairings(parts, scored)
    sc = pooled(lambda r: r.cnn)
    null = [pooled(lambda r: r.cnn, pm) for pm in moved]
    truth_null = [pooled(lambda r: r.simulator, pm) for pm in moved]
    n_untrained = min((len(r.untrained_detail) for r in recs), default=0)
    untrained = [pooled(lambda r, i=i: r.untrained_detail[i]["effects"]) for i in range(n_untrained)]
    level, p = _null_level(null, untrained), p_value(sc, null)
    t_p = p_value(pooled(lambda r: r.simulator), truth_null)
    decisive = bool(np.isfinite(t_p) and t_p <= MAX_P_VALUE)
    ok = bool(recs and decisive and passes(sc, null, untrained))
    return dict(phenomena=[r.name for r in recs], score=sc, null_level=level, p_value=p, untrained=untrained,
                truth_p=t_p, decisive=decisive, recovered=ok,
                power=(_power([r.simulator for r in recs]) if decisive else 0.0) if recs else float("nan"),
                verdict=("no phenomenon reproduced" if not recs else
                         f"{'recovered' if ok else 'not recovered'}: score {sc:.2f} over {len(recs)} "
                         f"{'phenomenon' if len(recs) == 1 else 'phenomena'}, null "
                         f"level {level:.2f}, p = {p:.3f} (the truth's own p = {t_p:.3f})"))


def _groups(matches):
    groups = {p: [] for p in PARTS}
    for m in matches:
        if m["part"] is not None:
            groups[m["part"]].append(m["channel"])
    return groups


def recover(model, names=None, sim=None, *, n_untrained=3, seed=0, model_results=None, sim_results=None,
            sim_effects=None):
    """The recovery benchmark for ``model`` on each phenomenon in ``names`` (default all registered).

    ``sim`` defaults to the simulator the model records
    (:func:`retina.insilico.simulator_of`).  ``model_results`` /
    ``sim_results`` (name -> PhenomenonResult) and ``sim_effects`` (name ->
    :func:`simulator_effects` over :data:`PARTS`) reuse runs already made.
    Returns ``{name: Recovery}``.
    """
    from .insilico import InSilicoRetina, simulator_of

    sim = simulator_of(model, sim)
    names = P.names() if names is None else tuple(names)
    probe = P.CNNProbe(model)
    positions = ([(c.y, c.x) for c in probe.cells] if probe.cells is not None else sim.positions)
    positions = list(dict.fromkeys((float(y), float(x)) for y, x in positions))
    movie = probe_movie(tuple(model.frame_shape))
    signals = match_signals(sim, movie, positions)

    def match(m):
        return match_channels(m, sim, positions, movie=movie, signals=signals)

    matches = match(model)
    groups = _groups(matches)
    nulls = [untrained_model(model, seed + 1000 + i) for i in range(n_untrained)]
    null_groups = [_groups(match(m)) for m in nulls]
    own = None     # the simulator on the model's own cells, made when a row protocol first needs it
    out = {}
    for name in names:
        ph = P.get(name)
        sres = (sim_results or {}).get(name)
        if sres is None:
            base = ph.simulator(sim)
            sres = ph.run(base, **ph.options_for(base))
        mres = (model_results or {}).get(name)
        if mres is None:
            mres = ph.run(probe, explain=False, **ph.options_for(probe))
        same = None
        if ph.row:   # the fidelity's response comparison on the model's own cells, not the dense row
            if own is None:
                own = InSilicoRetina(sim.params, positions=positions, frame_shape=sim.frame_shape)
            same = ph.run(own, **ph.options_for(own))
        se = (sim_effects or {}).get(name)
        if se is None:
            se = simulator_effects(name, sim, intact=sres)
        ce = cnn_effects(name, model, groups, intact=mres)
        sc, ok = score(se, ce)
        untrained, detail = [], []
        for i, (m, g) in enumerate(zip(nulls, null_groups)):
            e = cnn_effects(name, m, g)
            s_i = score(se, e)[0]
            untrained.append(s_i)
            detail.append(dict(seed=seed + 1000 + i, score=s_i, groups={k: list(v) for k, v in g.items()},
                               effects=e))
        out[name] = Recovery(name, matches, se, ce, ok, sc, permutation_null(se, ce), untrained,
                             fidelity(name, mres, sres, sim_same_cells=same), detail, truth_recovery(se)[1],
                             verdict_power(se))
        log.info("recovery %s: %s", name, out[name].verdict)
    return out


# ---------------------------------------------------------------------- the positive control
def _impulse(n_stages, decay, n):
    """Impulse response of ``n_stages`` first-order low-passes with per-frame factor ``decay`` (the simulator's
    exact cascade), frames 0..n-1."""
    x = np.zeros(n)
    x[0] = 1.0
    for _ in range(n_stages):
        y = np.empty(n)
        acc = 0.0
        for t in range(n):
            acc = decay * acc + (1.0 - decay) * x[t]
            y[t] = acc
        x = y
    return x


def _pathway_impulse(b, n):
    """A bipolar pathway's temporal filter with its sign, frames 0..n-1: the simulator's difference of gamma
    cascades (``n + 1`` first-order stages at ``tau1`` and at ``2 tau1``), per unit gain."""
    from .units import DT

    e1, e2 = np.exp(-DT * 1e3 / b.tau1_ms), np.exp(-DT * 1e3 / (2 * b.tau1_ms))
    return b.sign * (_impulse(int(b.n) + 1, e1, n) - b.a2 * _impulse(int(b.n) + 1, e2, n))


def _spatial_profiles(sim, kernel_size):
    """The simulator's spatial profiles on a ``kernel_size`` grid: the bipolar centre-surround, and the same
    pooled by the amacrine's Gaussian."""
    from scipy.signal import fftconvolve

    p = sim.params
    space = _gauss(kernel_size, p.sigma_center_px) - p.w_surround * _gauss(kernel_size, p.sigma_surround_px)
    return space, fftconvolve(space, _gauss(kernel_size, p.sigma_amacrine_px), mode="same")


def _gauss(size, sigma):
    """A centred Gaussian of s.d. ``sigma`` (px) on a ``size`` x ``size`` grid, summing to 1."""
    r = (size - 1) / 2.0
    yy, xx = np.mgrid[:size, :size] - r
    g = np.exp(-0.5 * (yy ** 2 + xx ** 2) / sigma ** 2)
    return g / g.sum()


def planted_filters(sim=None, *, history=40, kernel_size=15):
    """Layer-1 filters that *are* the simulator's pathways: ``(w1 (4, history, k, k), names)``.

    Channels OFF, ONf and ONs are each bipolar pathway's linear stage (the
    shared centre-surround in space times the pathway's difference of gamma
    cascades in time, with its sign); A1 is the OFF pathway low-passed by the
    amacrine's time constant and pooled by its Gaussian.  Tap ``history - 1``
    is the newest frame, which the model pairs with the next bin (the
    simulator's filter at lag 1).  Rectification, depression and thresholds
    are left to the trained layers.
    """
    from .insilico import PATHWAYS, InSilicoRetina
    from .units import DT

    sim = sim if sim is not None else InSilicoRetina()
    p = sim.params
    space, space_a = _spatial_profiles(sim, kernel_size)
    lags = history + 1
    w1, names = [], []
    temporal = {}
    for name in PATHWAYS:
        h = _pathway_impulse(p.bipolar[name], lags)
        temporal[name] = h
        w1.append(h[1:][::-1][:, None, None] * space[None])
        names.append(name)
    e_a = np.exp(-DT * 1e3 / p.tau_amacrine_ms)
    h_a = np.convolve(temporal["OFF"], _impulse(1, e_a, lags))[:lags]       # the OFF drive, low-passed
    w1.append(h_a[1:][::-1][:, None, None] * space_a[None])
    names.append("A1")
    w1 = np.stack(w1)
    w1 /= np.sqrt((w1 ** 2).sum(axis=(1, 2, 3), keepdims=True))
    return w1, names


def planted_model(sim=None, *, history=80, kernel_sizes=(15, 11), frame_shape=(50, 50)):
    """The positive control with the answer planted: a CNN whose every layer is set from the simulator.

    Layer 1 has seven channels, each a rectified linear filter fitted in
    least squares (:func:`_fit_rectified`) to one of the simulator's signals
    at the cells' pixels on the generic probe movie (:func:`probe_movie`,
    never a phenomenon's protocol), as :func:`part_signals` reads them:

    - ``OFF``, ``ONf``, ``ONs``: each bipolar pathway's drive without
      depression (the bipolar centre-surround in space, ``history`` taps in
      time; 80 by default, since ON-slow's band-pass filter lasts about
      800 ms);
    - ``A1``: the amacrine's output (the same pooled by its Gaussian);
    - one depression channel per vesicle pool (``dep-OFF``, ``dep-ONf``,
      ``dep-ONs``): the release the pool takes away, the fitted drive minus
      the pathway's release with depression, so that drive minus loss
      follows the release.

    Layer 2 has one channel per pathway, its release: the drive minus its
    pool's loss, rectified (so that without its drive a pool takes nothing,
    as in the simulator) and pooled by the ganglion's Gaussian; and one for
    the amacrine at the centre.  So ablating a pathway's channel removes the
    pathway, and ablating a loss channel gives its pool's release back.
    Layer 3 weighs them with each cell type's weights (the amacrine's
    negative) at the cell's position and applies the ``softplus(a u + b)``
    closest in least squares to the simulator's output over the membrane
    potentials the probe evokes (a CNN's output has no gain after its
    softplus).

    What a layer-1 channel cannot hold stays approximate: the
    history-dependence of each pool is a fixed filter, and the membrane
    low-pass, which the simulator applies after rectification, is folded
    into each fit.  The model carries the simulator's cells and parameters
    in its metadata, like a model fitted to the simulator.
    """
    from scipy.optimize import least_squares

    from .insilico import PATHWAYS, InSilicoRetina, simulator_metadata
    from .model import RetinaCNN

    sim = sim if sim is not None else InSilicoRetina()
    p = sim.params
    k1, k2 = kernel_sizes
    movie = probe_movie(tuple(frame_shape))
    positions = list(sim.positions)
    intact = _probe_pathways(sim, movie, positions)
    nodep = _probe_pathways(sim, movie, positions, lesion="depression")
    base = _regression_model(history, k1, frame_shape)
    space, space_a = _spatial_profiles(sim, k1)
    x, x_a = (_tap_regressors(base, movie, positions, prof) for prof in (space, space_a))
    channels = []                                               # (name, taps, threshold, spatial profile)
    drive = {}
    for k, name in enumerate(PATHWAYS):
        h, c, drive[name] = _fit_rectified(x, nodep[..., k])
        channels.append((name, h, c, space))
    h, c, _ = _fit_rectified(x_a, -intact[..., 3])
    channels.append(("A1", h, c, space_a))
    for k, name in enumerate(PATHWAYS):
        h, c, _ = _fit_rectified(x, drive[name] - intact[..., k])
        channels.append((f"dep-{name}", h, c, space))
    n1 = len(channels)
    w1 = np.stack([h[:, None, None] * prof[None] for _, h, _, prof in channels])
    shift1 = np.array([-c for _, _, c, _ in channels])[:, None, None]

    # layer 2: each pathway's release, its drive minus its pool's loss, rectified (so that without the drive
    # its pool takes nothing) and pooled by the ganglion's Gaussian; and the amacrine at the centre
    pool = _gauss(k2, p.sigma_ganglion_px)
    w2 = np.zeros((len(PATHWAYS) + 1, n1, k2, k2))
    for k in range(len(PATHWAYS)):
        w2[k, k], w2[k, len(PATHWAYS) + 1 + k] = pool, -pool
    w2[len(PATHWAYS), len(PATHWAYS), k2 // 2, k2 // 2] = 1.0
    types = list(p.ganglion)
    # the output nonlinearity closest to the simulator's over the membrane potentials the probe evokes
    cells = InSilicoRetina(p, positions=sim.positions)
    u_all = cells.pathways(movie).sum(-1)
    slope = {}
    for t in types:
        gp = p.ganglion[t]
        us = u_all[:, [i for i, c in enumerate(cells.cells) if c.type == t]].reshape(-1)
        target = gp.r_max * np.logaddexp(0.0, p.beta * (us - gp.theta)) / p.beta

        def resid(ab, us=us, target=target):
            return np.logaddexp(0.0, ab[0] * us + ab[1]) - target

        fit = least_squares(resid, x0=[gp.r_max, -gp.r_max * gp.theta], x_scale=[gp.r_max, gp.r_max])
        slope[t] = fit.x
    h2, wd2 = frame_shape[0] - k1 - k2 + 2, frame_shape[1] - k1 - k2 + 2
    off = (k1 - 1) / 2.0 + (k2 - 1) / 2.0
    w3 = np.zeros((sim.n_cells, len(w2), h2, wd2))
    shift3 = np.zeros(sim.n_cells)
    for j, cell in enumerate(sim.cells):
        iy, ix = int(round(cell.y - off)), int(round(cell.x - off))
        if not (0 <= iy < h2 and 0 <= ix < wd2):
            raise ValueError(f"cell {j} at ({cell.y}, {cell.x}) px lies outside the layer-2 map of a "
                             f"{frame_shape} frame with kernel_sizes {kernel_sizes}")
        a, b = slope[cell.type]
        w3[j, :, iy, ix] = a * np.r_[p.ganglion[cell.type].weights(), -p.ganglion[cell.type].w_A1]
        shift3[j] = b
    ids = [f"{c.type}-{int(c.y)}-{int(c.x)}" for c in sim.cells]
    meta = dict(simulator_metadata(sim), planted="every layer set from the simulator",
                planted_channels=",".join(name for name, *_ in channels),
                description="the planted positive control: every layer set from the simulator, trained on nothing "
                            "(retina.recovery.planted_model, docs/recovery.md section 6)")
    return RetinaCNN(w1, np.ones((n1, 1, 1)), shift1, w2, np.ones((len(w2), 1, 1)), np.zeros((len(w2), 1, 1)),
                     w3.reshape(sim.n_cells, -1), np.ones(sim.n_cells), shift3, frame_shape=tuple(frame_shape),
                     norm_stats={"mean": 0.0, "std": 1.0}, cell_ids=ids, metadata=meta)


def _regression_model(history, kernel_size, frame_shape, channels=1):
    """A CNN of ``channels`` layer-1 channels in contrast units (``norm_stats`` mean 0, s.d. 1) of the given
    layer-1 shape, whose padding and alignment :func:`_tap_regressors` borrows (and whose arrays
    :func:`layer1_counterparts` fills)."""
    from .model import RetinaCNN

    base = RetinaCNN.random(1, seed=0, channels=(channels, 1), history=history, kernel_sizes=(kernel_size, 1),
                            frame_shape=tuple(frame_shape), per_unit=False)
    return RetinaCNN(**base.arrays, frame_shape=base.frame_shape, norm_stats={"mean": 0.0, "std": 1.0})


def _fit_rectified(x, y, *, maxiter=2000):
    """The rectified linear channel ``max(x @ h - c, 0)`` closest to ``y (T, J)`` in least squares, on the tap
    regressors ``x (T, L, J)`` (:func:`_tap_regressors`): L-BFGS with exact gradients, from the linear fit
    scaled 1, 2 and 4 times, each thresholded at five quantiles.  Returns ``(h, c, fitted activity)``."""
    from scipy.optimize import minimize

    n_taps = x.shape[1]
    flat = x.transpose(0, 2, 1).reshape(-1, n_taps)
    h0 = np.linalg.lstsq(np.c_[flat, np.ones(len(flat))], y.reshape(-1), rcond=None)[0][:n_taps]

    def objective(theta):
        lin = np.einsum("tlj,l->tj", x, theta[:n_taps]) - theta[n_taps]
        e = np.maximum(lin, 0.0) - y
        g = 2.0 * e * (lin > 0) / y.size
        return float((e ** 2).mean()), np.r_[np.einsum("tlj,tj->l", x, g), -g.sum()]

    best = None
    for scale in (1.0, 2.0, 4.0):
        lin = np.einsum("tlj,l->tj", x, scale * h0)
        for q in (0.3, 0.5, 0.8, 0.9, 0.95):
            res = minimize(objective, np.r_[scale * h0, np.quantile(lin, q)], jac=True, method="L-BFGS-B",
                           options=dict(maxiter=maxiter))
            if best is None or res.fun < best.fun:
                best = res
    h, c = best.x[:n_taps], float(best.x[n_taps])
    return h, c, np.maximum(np.einsum("tlj,l->tj", x, h) - c, 0.0)


# ---------------------------------------------------------------------- can a layer-1 channel stand for a part?
def _tap_regressors(model, movie, positions, profile):
    """``(T, history, J)``: the movie (in model units, aligned as :func:`channel_activity`) correlated with
    ``profile`` in space at each position, one column per layer-1 tap; a channel with that profile and temporal
    taps ``h`` has pre-rectification activity ``X @ h`` plus its offset.  ``profile`` has ``model``'s layer-1
    kernel size."""
    z = np.asarray(model.padded(movie), np.float64)
    k = profile.shape[-1]
    iy, ix = _map_index(model, positions)
    xs = np.stack([np.einsum("tyx,yx->t", z[:, y:y + k, x:x + k], profile) for y, x in zip(iy, ix)], 1)
    t_len = len(z) - model.history + 1
    return np.stack([xs[i:i + t_len] for i in range(model.history)], 1)


def _box_matrix(t_len, width):
    """The running mean of :func:`_highpass` (``width`` frames, edges repeated) as a sparse ``(t_len, t_len)``
    matrix, so that its transpose can carry gradients."""
    from scipy import sparse

    r = width // 2
    rows = np.repeat(np.arange(t_len), width)
    cols = np.clip(rows + np.tile(np.arange(-r, r + 1), t_len), 0, t_len - 1)
    return sparse.csr_matrix((np.full(len(rows), 1.0 / width), (rows, cols)), shape=(t_len, t_len))


def _best_channel(x, sz, k, box, starts, *, margin=COUNTERPART_MARGIN, penalty=50.0, tau=0.02, maxiter=1000):
    """The rectified linear channel (taps ``h`` on the regressors ``x (T, L, J)``, threshold ``c``) whose
    high-passed activity correlates most with part ``k``'s z-scored high-passed signal ``sz (T, J, parts)``
    while beating every other part by ``margin`` (a squared penalty below it, the others' maximum smoothed at
    ``tau``): L-BFGS with exact gradients from each of ``starts``; returns ``(h, c)`` of the best."""
    from scipy.optimize import minimize

    t_len, n_taps, _ = x.shape
    n = sz.shape[0] * sz.shape[1]
    box_t = box.T.tocsr()
    others = [p for p in range(sz.shape[-1]) if p != k]

    def objective(theta):
        lin = np.einsum("tlj,l->tj", x, theta[:n_taps]) - theta[n_taps]
        act = np.maximum(lin, 0.0)
        a = act - box @ act
        a -= a.mean()
        sd = a.std()
        if sd < 1e-12:
            return 1.0, np.zeros_like(theta)
        az = a / sd
        r = np.einsum("tj,tjp->p", az, sz) / n
        ro = r[others]
        soft = np.exp((ro - ro.max()) / tau)
        short = max(0.0, margin + ro.max() + tau * np.log(soft.sum()) - r[k])
        dr = np.zeros(len(r))
        dr[k] = -1.0 - 2 * penalty * short
        dr[others] = 2 * penalty * short * soft / soft.sum()
        da = (np.einsum("tjp,p->tj", sz, dr) - (dr @ r) * az) / (n * sd)   # d corr / d activity
        dlin = (da - box_t @ da) * (lin > 0)
        return -r[k] + penalty * short ** 2, np.r_[np.einsum("tlj,tj->l", x, dlin), -dlin.sum()]

    best = None
    for theta in starts:
        res = minimize(objective, theta, jac=True, method="L-BFGS-B", options=dict(maxiter=maxiter))
        if best is None or res.fun < best.fun:
            best = res
    return best.x[:n_taps], float(best.x[n_taps])


def layer1_counterparts(sim=None, positions=None, *, movie=None, signals=None, history=40, kernel_size=15,
                        frame_shape=(50, 50)):
    """Can a layer-1 channel stand for each part?  Each part's best layer-1 channel, matched like a model's.

    A layer-1 channel is a rectified linear filter of the movie.  For each
    part, the filter with the part's spatial profile (the bipolar
    centre-surround; for the amacrine, the same pooled by its Gaussian),
    ``history`` temporal taps and a threshold whose activity follows the
    part's signal (:func:`part_signals`, both without their running mean as
    the match compares them) most closely while beating every other part's
    signal by :data:`COUNTERPART_MARGIN` is searched for (gradient descent
    from least-squares fits to every part's signal, each at four thresholds
    and both signs), made one channel of a CNN, and matched by
    :func:`match_channels`.  A part whose best channel is matched to another
    part, or to none, has no layer-1 counterpart: channel ablation cannot
    show its role.  About 30 s on two cores.

    Returns ``{part: dict}``: ``match`` (the :func:`match_channels` entry of
    the part's channel; ``match["part"] == part`` when it has a
    counterpart), ``w1`` (the channel's filter, ``(history, k, k)``, tap
    ``history - 1`` newest) and ``shift`` (its offset before the ReLU), in
    the units of a model with ``norm_stats`` mean 0 and s.d. 1 (contrast).
    """
    from .insilico import InSilicoRetina
    from .model import RetinaCNN

    sim = sim if sim is not None else InSilicoRetina()
    positions = list(sim.positions if positions is None else positions)
    movie = probe_movie(tuple(frame_shape)) if movie is None else movie
    sig = part_signals(sim, movie, positions) if signals is None else signals
    n = len(PARTS)
    base = _regression_model(history, kernel_size, frame_shape, channels=n)
    space, space_a = _spatial_profiles(sim, kernel_size)
    w1 = np.zeros((n, history, kernel_size, kernel_size))
    shift = np.zeros((n, 1, 1))
    t_len = min(len(movie), len(sig))     # the regressors have a row per frame of the movie
    hp = _highpass(sig[:t_len])
    sz = (hp - hp.mean((0, 1))) / np.where(hp.std((0, 1)) > 0, hp.std((0, 1)), 1.0)
    box = _box_matrix(t_len, MATCH_HIGHPASS_FRAMES)
    prepared: dict = {}    # per spatial profile: the regressors and the search's starts, shared by its parts

    def regressors_and_starts(prof):
        if id(prof) not in prepared:
            x = _tap_regressors(base, movie, positions, prof)[:t_len]
            a = _highpass(x).transpose(0, 2, 1).reshape(-1, history)
            starts = []
            for j in range(n):     # least-squares fits to every part's signal, at four thresholds, both signs
                h = np.linalg.lstsq(a, hp[..., j].reshape(-1), rcond=None)[0]
                for sign in (1.0, -1.0):
                    lin = sign * np.einsum("tlj,l->tj", x, h)
                    starts += [np.r_[sign * h, np.quantile(lin, q)] for q in (0.0, 0.5, 0.8, 0.95)]
            prepared[id(prof)] = x, starts
        return prepared[id(prof)]

    for c, part in enumerate(PARTS):
        prof = space_a if part == "A1" else space
        x, starts = regressors_and_starts(prof)
        # compared as the match compares them: each part's signal with the sign of what it does, the channel
        # acting with its part's sign
        h, cut = _best_channel(x, sz * (np.asarray(PART_SIGNS) * PART_SIGNS[c]), c, box, starts)
        w1[c] = h[:, None, None] * prof[None]
        shift[c] = -cut
    arrays = dict(base.arrays, w1=w1, scale1=np.ones((n, 1, 1)), shift1=shift)
    model = RetinaCNN(**arrays, frame_shape=base.frame_shape, norm_stats=base.norm_stats)
    got = match_channels(model, sim, positions, movie=movie, signals=sig, signs=PART_SIGNS)
    return {part: dict(match=g, w1=w1[c], shift=float(shift[c, 0, 0])) for c, (part, g) in enumerate(zip(PARTS, got))}
