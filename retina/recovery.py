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
   layer-1 channel's activity at the simulated cells' positions is regressed
   on the simulator's part signals there (:func:`part_signals`): each bipolar
   pathway's pooled release, the amacrine's output and the change depression
   makes to the release, all standardised.  A channel belongs to the part with
   the largest positive coefficient when the regression explains at least
   :data:`MIN_MATCH_R2` of its variance; otherwise to none.  No type label is used.
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
   Parts that do not matter are reported (``specific``: the CNN's effect is
   not relevant either) but not scored; a CNN whose every ablation matters is
   caught by the permutation null instead.
5. **Nulls** (:func:`recover`): the same score (a) under every other pairing of
   the CNN's channel groups with the parts (label permutations that move at
   least one part that matters) and (b) for
   untrained CNNs of the same shape, matched and lesioned the same way.  A
   mechanism is *recovered* only when the score is at least
   :data:`RECOVERED_SCORE` and beats the highest null by :data:`NULL_MARGIN`.
6. **Fidelity first** (:func:`fidelity`): no claim is made for a phenomenon the
   model does not reproduce (it must show it, and its response in the windows
   of interest must correlate with the simulator's by at least
   :data:`FIDELITY_MIN_CORR`).
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
           "RECOVERED_SCORE", "NULL_MARGIN", "FIDELITY_MIN_CORR"]

log = logging.getLogger(__name__)

PARTS = ("OFF", "ONf", "ONs", "A1", "depression")
"""The simulator's parts, each removable by the lesion of the same name."""

# The thresholds of the benchmark, each stated once (docs/recovery.md).
MIN_MATCH_R2 = 0.1          # a channel is matched to a part only if the part signals explain >= 10 % of its variance
RELEVANT_EFFECT = 0.2       # a lesion matters when it changes the phenomenon by >= 20 % of its size
MIN_EFFECT_FRACTION = 0.5   # the CNN's effect must reach half the simulator's, with its sign
RECOVERED_SCORE = 0.7       # a mechanism is recovered at a score >= 0.7 ...
NULL_MARGIN = 0.25          # ... that beats the highest null score by >= 0.25
FIDELITY_MIN_CORR = 0.5     # the model's response in the windows of interest correlates >= 0.5 with the simulator's
MAX_LAG = 3                 # frames either way the match may shift a channel's activity against the signals
PROBE_FRAMES = 2000
PROBE_SEED = 20191208


def probe_movie(frame_shape=(50, 50), n_frames=PROBE_FRAMES, seed=PROBE_SEED):
    """The generic matching stimulus: half natural movie, half binary checkerboard noise (contrast units)."""
    half = n_frames // 2
    nat = S.natural_movie(half, frame_shape, seed=seed).movie
    wn = S.white_noise(n_frames - half, frame_shape, contrast=0.35, binary=True, check=2, hold=3,
                       seed=seed + 1).movie
    return np.concatenate([nat, wn])


def part_signals(sim, movie, positions):
    """What each part does at each position: ``(T, n_positions, 5)`` for :data:`PARTS`.

    The pathways' pooled release and the amacrine's output reach a probe cell
    at each position that weighs every source 1 (after the membrane low-pass);
    ``depression`` is the release with depression minus the release without.
    """
    from .insilico import GanglionParams, InSilicoRetina

    p = sim.params.copy()
    p.ganglion = {"probe": GanglionParams(1.0, 1.0, 1.0, 1.0, 0.0, 1.0)}
    intact = InSilicoRetina(p, positions=positions).pathways(movie)
    nodep = InSilicoRetina(p.lesioned("depression"), positions=positions).pathways(movie)
    dep = intact[..., :3].sum(-1) - nodep[..., :3].sum(-1)
    return np.concatenate([intact[..., :3], -intact[..., 3:4], dep[..., None]], -1)


def channel_activity(model, movie, positions):
    """Each layer-1 channel's output (after its ReLU) at each position: ``(T, C1, n_positions)``.

    ``movie`` is in contrast units; row ``t`` is aligned with response bin ``t``.
    """
    x = model.padded(movie)
    corr1 = np.asarray(model.layer1(x, dtype=np.float32), np.float32)
    k1 = model.w1.shape[-1]
    h1, w1 = corr1.shape[2:]
    off = (k1 - 1) / 2.0
    iy = np.clip(np.rint(np.array([p[0] for p in positions]) - off).astype(int), 0, h1 - 1)
    ix = np.clip(np.rint(np.array([p[1] for p in positions]) - off).astype(int), 0, w1 - 1)
    pre = corr1[:, :, iy, ix]
    scale = np.broadcast_to(np.asarray(model.scale1, np.float32), model.shape1)[:, iy, ix]
    shift = np.broadcast_to(np.asarray(model.shift1, np.float32), model.shape1)[:, iy, ix]
    return np.maximum(pre * scale[None] + shift[None], 0.0)


def _zscore(a):
    a = np.asarray(a, np.float64)
    sd = a.std(0)
    return (a - a.mean(0)) / np.where(sd > 0, sd, 1.0)


def match_channels(model, sim, positions=None, *, movie=None, signals=None):
    """Assign every layer-1 channel to the simulator part whose signal explains its activity.

    Returns one dict per channel: ``channel``, ``part`` (None when unmatched),
    ``r2`` (variance explained at the best lag), ``lag`` (frames),
    ``betas`` (standardised coefficient per part; the part is the largest
    positive one).
    """
    positions = list(sim.positions if positions is None else positions)
    movie = probe_movie(tuple(model.frame_shape)) if movie is None else movie
    sig = part_signals(sim, movie, positions) if signals is None else signals
    act = channel_activity(model, movie, positions)               # (T, C1, J)
    t_len = min(len(sig), len(act))
    out = []
    for c in range(act.shape[1]):
        best = None
        for lag in range(-MAX_LAG, MAX_LAG + 1):
            lo, hi = max(0, -lag), t_len - max(0, lag)
            y = act[lo + lag:hi + lag, c, :].reshape(-1)
            if np.ptp(y) == 0:
                continue
            x = _zscore(sig[lo:hi].reshape(-1, len(PARTS)))
            y = _zscore(y[:, None])[:, 0]
            beta, *_ = np.linalg.lstsq(x, y, rcond=None)
            r2 = 1.0 - float(np.mean((y - x @ beta) ** 2))
            if best is None or r2 > best[0]:
                best = (r2, lag, beta)
        if best is None:
            out.append(dict(channel=c, part=None, r2=0.0, lag=0, betas={p: 0.0 for p in PARTS}))
            continue
        r2, lag, beta = best
        i = int(np.argmax(beta))
        part = PARTS[i] if r2 >= MIN_MATCH_R2 and beta[i] > 0 else None
        out.append(dict(channel=c, part=part, r2=float(r2), lag=int(lag),
                        betas={p: float(b) for p, b in zip(PARTS, beta)}))
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


def cnn_effects(name, model, groups, *, intact=None, cache=None):
    """The key measure of ``model`` intact and with each group of layer-1 channels clamped to grey:
    ``{part: dict}``.  ``groups`` maps a part to its channels (an empty group has no effect)."""
    from .reduction import ablate

    ph = P.get(name)
    probe = P.CNNProbe(model)
    opts = ph.options_for(probe)
    cache = {} if cache is None else cache
    if intact is None:
        intact = ph.run(probe, explain=False, **opts)
    k0 = key_value(ph, intact)
    out = {}
    for part, chans in groups.items():
        key = tuple(sorted(int(c) for c in chans))
        if not key:
            k = k0
        elif key in cache:
            k = cache[key]
        else:
            lesioned = P.CNNProbe(ablate(model, list(key), layer="conv1", baseline=model.grey),
                                  cells=probe.cells)
            k = cache[key] = key_value(ph, ph.run(lesioned, explain=False, **opts))
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
    scored = [p for p in parts if relevant(sim_effects[p]["effect"])]
    out = []
    for perm in itertools.permutations(parts):
        pairing = dict(zip(parts, perm))
        if all(pairing[p] == p for p in scored):
            continue
        out.append(score(sim_effects, cnn_effects, pairing)[0])
    return out


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


def _mean_window_response(res):
    parts = []
    for r, (lo, hi) in zip(res.responses, res.windows):
        parts.append(np.asarray(r, np.float64)[lo:hi].mean(1))
    return np.concatenate(parts) if parts else np.zeros(0)


def fidelity(name, model_result, sim_result):
    """Does the model reproduce the phenomenon?  Its key measure per condition beside the simulator's, the
    correlation of the analysed cells' mean response in the windows of interest, and the verdict."""
    ph = P.get(name)
    a, b = _mean_window_response(model_result), _mean_window_response(sim_result)
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
    """One phenomenon's recovery benchmark: matches, effects, score, nulls, fidelity and the verdict."""

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

    @property
    def null_max(self) -> float:
        nulls = [v for v in self.null_permutation + self.null_untrained if np.isfinite(v)]
        return float(max(nulls)) if nulls else float("nan")

    @property
    def recovered(self) -> bool:
        """Score >= RECOVERED_SCORE, beating every null by NULL_MARGIN, for a phenomenon the model reproduces."""
        if self.fidelity is not None and not self.fidelity["reproduces"]:
            return False
        nm = self.null_max
        return bool(self.score >= RECOVERED_SCORE and (not np.isfinite(nm) or self.score - nm >= NULL_MARGIN))

    @property
    def verdict(self) -> str:
        if self.fidelity is not None and not self.fidelity["reproduces"]:
            f = self.fidelity
            return (f"not reproduced (shows it: {'yes' if f['shows'] else 'no'}, window corr {f['window_corr']:.2f}"
                    f" < {FIDELITY_MIN_CORR:g} or absent): no mechanism claim")
        word = "recovered" if self.recovered else "not recovered"
        return (f"{word}: score {self.score:.2f} (needs >= {RECOVERED_SCORE:g}), null max {self.null_max:.2f} "
                f"(needs a margin of {NULL_MARGIN:g})")

    def as_dict(self) -> dict:
        return dict(name=self.name, matches=self.matches, simulator=self.simulator, cnn=self.cnn,
                    agrees=self.agrees, score=self.score, null_permutation=self.null_permutation,
                    null_untrained=self.null_untrained, null_max=self.null_max, recovered=self.recovered,
                    verdict=self.verdict, fidelity=self.fidelity, untrained=self.untrained_detail)


def _groups(matches):
    groups = {p: [] for p in PARTS}
    for m in matches:
        if m["part"] is not None:
            groups[m["part"]].append(m["channel"])
    return groups


class _Matcher:
    """Caches the probe movie and the simulator's signals for one (simulator, positions)."""

    def __init__(self, sim, positions, frame_shape):
        self.positions = list(positions)
        self.movie = probe_movie(frame_shape)
        self.signals = part_signals(sim, self.movie, self.positions)
        self.sim = sim

    def __call__(self, model):
        return match_channels(model, self.sim, self.positions, movie=self.movie, signals=self.signals)


def recover(model, names=None, sim=None, *, n_untrained=3, seed=0, model_results=None, sim_results=None,
            matcher=None):
    """The recovery benchmark for ``model`` on each phenomenon in ``names`` (default all registered).

    ``model_results`` / ``sim_results`` (name -> PhenomenonResult) reuse intact
    runs already made.  Returns ``{name: Recovery}``.
    """
    from .insilico import simulator_of

    sim = sim if sim is not None else simulator_of(model)
    names = P.names() if names is None else tuple(names)
    probe = P.CNNProbe(model)
    positions = ([(c.y, c.x) for c in probe.cells] if probe.cells is not None else sim.positions)
    positions = list(dict.fromkeys((float(y), float(x)) for y, x in positions))
    matcher = matcher or _Matcher(sim, positions, tuple(model.frame_shape))
    matches = matcher(model)
    groups = _groups(matches)
    nulls = [untrained_model(model, seed + 1000 + i) for i in range(n_untrained)]
    null_groups = [_groups(matcher(m)) for m in nulls]
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
        se = simulator_effects(name, sim, intact=sres)
        ce = cnn_effects(name, model, groups, intact=mres)
        sc, ok = score(se, ce)
        untrained, detail = [], []
        for i, (m, g) in enumerate(zip(nulls, null_groups)):
            e = cnn_effects(name, m, g)
            s_i = score(se, e)[0]
            untrained.append(s_i)
            detail.append(dict(seed=seed + 1000 + i, score=s_i, groups={k: list(v) for k, v in g.items()}))
        out[name] = Recovery(name, matches, se, ce, ok, sc, permutation_null(se, ce), untrained,
                             fidelity(name, mres, sres), detail)
        log.info("recovery %s: %s", name, out[name].verdict)
    return out
