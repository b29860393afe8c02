"""Channel types and (later) the reduced model of docs/spec.md section 5.

:func:`channel_filters` gives each layer-1 channel's effective temporal filter
for full-field stimuli, ``k_c(tau) = sum_{x,y} w1[c, tau, x, y]`` times the sign
of the channel's scale; :func:`classify_channels` types each channel ON/OFF by
the sign of its white-noise STA's largest tap within the 25 newest frames times
the sign of its downstream effect, and fast/slow by time to peak (fast <= 110
ms, slow >= 120 ms; ``docs/insilico.md`` section 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .units import FRAME_MS

__all__ = ["channel_filters", "layer1_output", "channel_stas", "downstream_signs", "classify_channels", "prune",
           "reduce", "ReducedModel", "baseline_activity", "ablate", "inhibitory_channels"]

FAST_MS, SLOW_MS = 110.0, 120.0


def channel_filters(model):
    """Effective full-field temporal filters ``(C1, history)``; column ``history - 1`` is the newest frame."""
    w1 = np.asarray(model.w1, np.float64)
    sign = np.sign(np.asarray(model.scale1, np.float64).reshape(w1.shape[0], -1).mean(1))
    return w1.sum(axis=(2, 3)) * np.where(sign == 0, 1.0, sign)[:, None]


STA_FRAMES = 3000      # white-noise frames for the channels' STAs
STA_CHECK = 3          # ... in checks of this many pixels (single-pixel noise barely drives centre-surround units)
EFFECT_FRAMES = 600    # white-noise frames for each channel's downstream effect
_TYPES_CACHE: dict = {}


def layer1_output(model, x, rows, cols, *, dtype=np.float32):
    """Each layer-1 channel's output after its ReLU at map positions ``(rows[j], cols[j])``: ``(windows, C1, J)``.

    ``x`` is a movie in model units; the correlation is computed in float32,
    the affine map and the ReLU in ``dtype``.
    """
    corr1 = np.asarray(model.layer1(x, dtype=np.float32), dtype)
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    scale = np.broadcast_to(np.asarray(model.scale1, dtype), model.shape1)[:, rows, cols]
    shift = np.broadcast_to(np.asarray(model.shift1, dtype), model.shape1)[:, rows, cols]
    return np.maximum(corr1[:, :, rows, cols] * scale[None] + shift[None], 0.0)


def channel_stas(model, *, n_frames=STA_FRAMES, seed=0):
    """White-noise spike-triggered averages of the layer-1 channels: ``(C1, history)``, tap ``history - 1`` newest.

    Binary checkerboard white noise (:data:`STA_CHECK` px checks, +-1 in model
    units, i.e. +-1 training s.d.) fills the frame; each channel's output after its ReLU at the centre of its map is
    averaged against the stimulus summed over that unit's input footprint.
    Unlike the filter's weights, the STA sees the channel's rectification
    (and its scale's sign).
    """
    rng = np.random.default_rng(seed)
    h, w = model.frame_shape
    k = model.w1.shape[-1]
    g = -(-h // STA_CHECK), -(-w // STA_CHECK)
    x = rng.choice(np.array([-1.0, 1.0], np.float32), size=(n_frames + model.history - 1,) + g)
    x = np.ascontiguousarray(np.repeat(np.repeat(x, STA_CHECK, 1), STA_CHECK, 2)[:, :h, :w])
    y0, x0 = model.shape1[1] // 2, model.shape1[2] // 2
    act = layer1_output(model, x, [y0], [x0], dtype=np.float64)[:, :, 0]
    foot = x[:, y0:y0 + k, x0:x0 + k].sum(axis=(1, 2), dtype=np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(foot, model.history)[:len(act)]
    return (act - act.mean(0)).T @ windows / len(act)     # a channel that never fires has an STA of zeros


def downstream_signs(model, *, n_frames=EFFECT_FRAMES, seed=1, gain=0.01):
    """Sign of each layer-1 channel's effect on the model's output: ``+1`` where the channel excites.

    The effect is local: the change of the mean rate over white noise when
    the channel's output is scaled up by ``gain`` (1 %; a ReLU channel's
    batch-norm scale and shift scaled together), the sign of the rate's
    slope along the channel's activity.  Clamping the channel to its
    grey-screen activity instead confounds the sign with the channel's
    fluctuations: through a convex output an inhibitory channel that
    fluctuates strongly raises the mean rate, so removing it lowers it.
    """
    from .model import RetinaCNN

    rng = np.random.default_rng(seed)
    x = rng.choice(np.array([-1.0, 1.0], np.float32), size=(n_frames + model.history - 1,) + tuple(model.frame_shape))
    full = np.asarray(model.predict(x, backend="cpu"), np.float64)
    scale1 = np.array(np.broadcast_to(model.scale1, model.shape1), np.float64)
    shift1 = np.array(np.broadcast_to(model.shift1, model.shape1), np.float64)
    out = np.empty(model.w1.shape[0])
    for c in range(len(out)):
        sc, sh = scale1.copy(), shift1.copy()
        sc[c] *= 1.0 + gain
        sh[c] *= 1.0 + gain
        louder = RetinaCNN(**dict(model.arrays, scale1=sc, shift1=sh), frame_shape=model.frame_shape,
                           norm_stats=model.norm_stats, input_units=model.input_units,
                           response_offset=model.response_offset)
        out[c] = 1.0 if float(np.mean(np.asarray(louder.predict(x, backend="cpu"), np.float64) - full)) >= 0 else -1.0
    return out


def classify_channels(model, *, recent=25, frame_ms=FRAME_MS, method="sta"):
    """Type every layer-1 channel by what it does.

    ``method="sta"`` (default): polarity from the channel's white-noise STA
    (:func:`channel_stas`) times the sign of its downstream effect
    (:func:`downstream_signs`; an OFF channel that inhibits the output acts
    as an ON input), time to peak from the STA.  ``method="weights"``: from
    the spatially summed filter weights alone (the older rule).

    Returns a list of dicts: ``channel``, ``polarity`` ("ON"/"OFF", the
    functional polarity), ``sta_polarity`` (the STA's own), ``downstream``
    (+1/-1; 1 for ``"weights"``), ``ttp_ms`` (time to peak: lag of the
    largest tap within the ``recent`` newest frames, counted to the predicted
    bin one frame after the window), ``speed`` ("fast", "slow" or
    "intermediate"), ``type`` (e.g. "OFF-fast"), ``norm`` (filter norm, a
    rough importance).  Cached per model content.
    """
    if method not in ("sta", "weights"):
        raise ValueError(f"method must be 'sta' or 'weights', got {method!r}")
    key = (model.content_hash(), method, recent, frame_ms)
    if key in _TYPES_CACHE:
        return [dict(d) for d in _TYPES_CACHE[key]]
    filt = channel_filters(model)
    if method == "sta":
        k, signs = channel_stas(model), downstream_signs(model)
        silent = ~np.any(k != 0, axis=1)
        k[silent] = filt[silent]          # a channel silent under the noise: its weights are all there is
    else:
        k, signs, silent = filt, np.ones(filt.shape[0]), np.ones(filt.shape[0], bool)
    hist = k.shape[1]
    out = []
    for c in range(k.shape[0]):
        taps = k[c, hist - recent:]
        i = int(np.argmax(np.abs(taps)))
        lag = recent - i  # frames from the tap to the bin after the window
        ttp = lag * frame_ms
        own = "ON" if taps[i] > 0 else "OFF"
        polarity = own if signs[c] > 0 else ("OFF" if own == "ON" else "ON")
        speed = "fast" if ttp <= FAST_MS else ("slow" if ttp >= SLOW_MS else "intermediate")
        out.append(dict(channel=c, polarity=polarity, sta_polarity=own, downstream=int(signs[c]), ttp_ms=float(ttp),
                        speed=speed, type=f"{polarity}-{speed}", norm=float(np.linalg.norm(filt[c])),
                        from_sta=bool(not silent[c])))
    if len(_TYPES_CACHE) > 64:
        _TYPES_CACHE.clear()
    _TYPES_CACHE[key] = [dict(d) for d in out]
    return out


# ---------------------------------------------------------------------- the reduced model
@dataclass
class ReducedModel:
    """The important layer-1 channels of a response and the models built from them (docs/spec.md section 5).

    Attributes
    ----------
    channels : list of dict
        Kept channels, most important first: ``channel``, ``type``, ``polarity``,
        ``speed``, ``ttp_ms``, ``share`` (of total pooled ``|A|``), ``filter``
        (effective temporal filter, or space-time filter for row-pooled attributions).
    kept : ndarray of int
        Kept channel indices.
    importance : ndarray (C1,)
        Pooled ``|A_c|`` summed over the window of interest, per channel.
    pooled : ndarray
        The pooled attributions ``(windows, outputs, C1[, W1])`` they were ranked by.
    pruned : RetinaCNN
        The full CNN with every other layer-1 channel clamped to its baseline
        activity: a real model for new stimuli.
    attribution_sum : ndarray (windows, outputs)
        ``r(s0) + sum_{c in kept} A_c``.
    effective_weights : ndarray (windows, outputs, n_kept) or None
        ``w_c(t) = A_c(t) / dz_c(t)`` (full-field case).
    response, pruned_response : ndarray (windows, outputs)
        Full model and pruned network on the stimulus (``pruned_response`` is
        None when only an attribution was given).
    fidelity : dict
        ``corr``/``variance_explained`` of each view against the full response.
    window : (start, stop)
        The windows (rows of ``pooled``) that defined importance.
    start : int
        Frame of the stimulus that row 0 belongs to (non-zero when only a
        stretch around the window of interest was attributed).
    types : list of dict
        :func:`classify_channels` of every layer-1 channel of the full model.
    """

    channels: list
    kept: np.ndarray
    importance: np.ndarray
    pooled: np.ndarray
    pruned: object
    attribution_sum: np.ndarray
    effective_weights: np.ndarray | None
    response: np.ndarray
    pruned_response: np.ndarray | None
    fidelity: dict
    share: float
    window: tuple | None = None
    start: int = 0
    types: list = field(default_factory=list)
    attribution: object = field(default=None, repr=False)

    def __repr__(self):
        types = ", ".join(f"{c['channel']}:{c['type']}({c['share']:.0%})" for c in self.channels)
        fid = ", ".join(f"{k}={v:.3f}" for k, v in self.fidelity.items())
        return f"ReducedModel([{types}], {fid})"


def _fit(reduced, full):
    r = np.asarray(full, np.float64).ravel()
    q = np.asarray(reduced, np.float64).ravel()
    if r.size < 2 or np.ptp(r) == 0:
        return float("nan"), float("nan")
    corr = float(np.corrcoef(r, q)[0, 1]) if np.ptp(q) > 0 else 0.0
    return corr, float(1.0 - np.var(r - q) / np.var(r))


def prune(model, keep, *, baseline=0.0):
    """A copy of ``model`` whose layer-1 channels outside ``keep`` sit at their baseline activity.

    For a constant baseline movie ``b`` a channel's pre-activation is
    ``scale1 * b * sum(w1[c]) + shift1``; clamping sets ``w1[c] = 0`` and moves
    that constant into ``shift1``.
    """
    from .model import RetinaCNN

    keep = np.atleast_1d(np.asarray(keep, np.int64))
    c1 = model.w1.shape[0]
    if keep.size and (keep.min() < 0 or keep.max() >= c1):
        raise ValueError(f"keep must index the model's {c1} layer-1 channels, got {keep.tolist()}")
    drop = np.setdiff1d(np.arange(c1), keep)
    w1 = np.array(model.w1, np.float64)
    shift1 = np.array(np.broadcast_to(model.shift1, model.shape1), np.float64)
    scale1 = np.broadcast_to(np.asarray(model.scale1, np.float64), model.shape1)
    for c in drop:
        shift1[c] += scale1[c] * float(baseline) * w1[c].sum()
        w1[c] = 0.0
    a = dict(model.arrays)
    a.update(w1=w1, shift1=shift1, scale1=np.array(scale1))
    meta = dict(model.metadata, pruned_from=model.content_hash(), kept_channels=",".join(map(str, keep)))
    return RetinaCNN(**a, frame_shape=model.frame_shape, norm_stats=model.norm_stats, cell_ids=model.cell_ids,
                     metadata=meta, input_units=model.input_units, response_offset=model.response_offset)


def baseline_activity(model, baseline=0.0):
    """Hidden activity (after the ReLUs) under a constant movie: ``(h1 (C1, H1, W1), h2 (C2, H2, W2))``, float64."""
    from . import _backend

    still = np.full((model.history,) + tuple(model.frame_shape), float(baseline))
    corr1 = np.asarray(model.layer1(still, dtype=np.float64), np.float64)
    h1 = np.ascontiguousarray(np.maximum(model.scale1 * corr1 + model.shift1, 0))
    corr2 = np.empty((1,) + model.shape2)
    _backend.resolve("cpu").kernels.corr2d(h1, np.ascontiguousarray(model.w2, np.float64), corr2)
    h2 = np.maximum(model.scale2 * corr2 + model.shift2, 0)
    return h1[0], h2[0]


def ablate(model, channels, *, layer="conv2", baseline=0.0):
    """A copy of ``model`` with ``channels`` of ``layer`` clamped to their activity under the baseline.

    ``layer="conv1"`` is :func:`prune` of the complement.  For ``"conv2"``
    the channel's kernel is zeroed and its shift set to the unit's baseline
    activity, so it outputs that constant whatever the stimulus: the
    in-silico lesion of a hidden cell type.
    """
    from .model import RetinaCNN

    channels = np.atleast_1d(np.asarray(channels, np.int64))
    if layer == "conv1":
        return prune(model, np.setdiff1d(np.arange(model.w1.shape[0]), channels), baseline=baseline)
    if layer != "conv2":
        raise ValueError(f"layer must be 'conv1' or 'conv2', got {layer!r}")
    c2 = model.w2.shape[0]
    if channels.size and (channels.min() < 0 or channels.max() >= c2):
        raise ValueError(f"channels must index the model's {c2} layer-2 channels, got {channels.tolist()}")
    _, h2 = baseline_activity(model, baseline)
    w2 = np.array(model.w2, np.float64)
    scale2 = np.array(np.broadcast_to(model.scale2, model.shape2), np.float64)
    shift2 = np.array(np.broadcast_to(model.shift2, model.shape2), np.float64)
    for o in channels:
        w2[o] = 0.0
        shift2[o] = h2[o]
    a = dict(model.arrays)
    a.update(w2=w2, scale2=scale2, shift2=shift2)
    meta = dict(model.metadata, ablated_from=model.content_hash(), ablated_conv2=",".join(map(str, channels)))
    return RetinaCNN(**a, frame_shape=model.frame_shape, norm_stats=model.norm_stats, cell_ids=model.cell_ids,
                     metadata=meta, input_units=model.input_units, response_offset=model.response_offset)


def inhibitory_channels(model, movie, *, cells=None, window=None, baseline=0.0, n_steps=50, min_share=0.05,
                        attribution=None):
    """Layer-2 channels whose net effect on the response is negative (docs/insilico.md section 4: "A1 appears as layer-2
    units with negative net effect, delayed 20-60 ms after OFF excitation").

    The response (cells or weighted sum of cells) over ``window`` is attributed
    to layer-2 units, pooled over space.  A channel is inhibitory when its
    summed attribution over the window is negative and carries at least
    ``min_share`` of the total ``|A|``.

    Returns
    -------
    list of dict, most inhibitory first
        ``channel``, ``net`` (summed attribution, Hz x windows), ``share``,
        ``delay_ms`` (time of its most negative attribution after the time of
        the largest positive attribution of any channel).
    """
    from .attribution import attribute

    if attribution is None:
        attribution = attribute(model, movie, layer="conv2", cells=cells, n_steps=n_steps, pool="space",
                                baseline=baseline, progress=False)
    vals = np.asarray(attribution.values, np.float64).sum(axis=1)  # (windows, C2), outputs summed
    lo, hi = (0, len(vals)) if window is None else (max(int(window[0]), 0), min(int(window[1]), len(vals)))
    sel = vals[lo:hi]
    if not len(sel):
        raise ValueError(f"window {window!r} selects no windows of {len(vals)}")
    net = sel.sum(axis=0)
    total = np.abs(sel).sum()
    t_exc = int(np.argmax(sel.max(axis=1)))
    out = []
    for o in np.argsort(net):
        share = float(np.abs(sel[:, o]).sum() / total) if total > 0 else 0.0
        if net[o] < 0 and share >= min_share:
            out.append(dict(channel=int(o), net=float(net[o]), share=share,
                            delay_ms=float((int(np.argmin(sel[:, o])) - t_exc) * FRAME_MS)))
    return out


def reduce(model, attribution_or_stimulus, *, share: float = 0.9, window: tuple | None = None, cells=None,
           n_steps: int = 50, movie=None, progress: bool = False) -> ReducedModel:
    """Reduce a model's response to its important layer-1 channels.

    Parameters
    ----------
    model : RetinaCNN
    attribution_or_stimulus : Attribution or array (T, H, W) or Stimulus
        A layer-1 attribution (pooled or not), or a stimulus to attribute
        (pooled over space for full-field movies, over rows for bars, over
        space otherwise).
    share : float in (0, 1]
        Keep the smallest set of channels carrying this share of the total
        pooled ``|A|`` over ``window``.
    window : (start, stop), optional
        Windows (rows of the attribution) that define importance; default all.
    cells : passed to :func:`retina.attribute` when a stimulus is given.
    movie : array, optional
        The stimulus of a given attribution, to run the pruned network on it.

    Returns
    -------
    ReducedModel
    """
    from .attribution import Attribution, attribute
    from .model import RetinaCNN, movie_invariance

    if not isinstance(model, RetinaCNN):
        raise ValueError(f"model must be a RetinaCNN, got {type(model).__name__}")
    if not 0 < float(share) <= 1:
        raise ValueError(f"share must be in (0, 1], got {share!r}")
    if isinstance(attribution_or_stimulus, Attribution):
        attr = attribution_or_stimulus
        if attr.layer != "conv1":
            raise ValueError(f"the attribution must be to layer 'conv1', got {attr.layer!r}")
    else:
        movie = np.asarray(getattr(attribution_or_stimulus, "movie", attribution_or_stimulus), np.float32)
        inv = movie_invariance(model.check_movie(movie))
        pool = "rows" if inv == "rows" else "space"
        attr = attribute(model, movie, layer="conv1", cells=cells, n_steps=n_steps, pool=pool, progress=progress)
    vals = np.asarray(attr.values, np.float64)
    if attr.pool is None:
        vals = vals.sum(axis=(3, 4))
    elif tuple(attr.pool) == (1,):
        pass  # (windows, outputs, C, W1)
    elif tuple(attr.pool) != (1, 2):
        raise ValueError(f"the attribution must be unpooled or pooled over 'space' or 'rows', got {attr.pool}")
    n_win = vals.shape[0]
    lo, hi = (0, n_win) if window is None else (max(int(window[0]), 0), min(int(window[1]), n_win))
    if hi <= lo:
        raise ValueError(f"window {window!r} selects no windows of {n_win}")
    sel = vals[lo:hi]
    importance = np.abs(sel).sum(axis=tuple(i for i in range(sel.ndim) if i != 2))
    total = importance.sum()
    order = np.argsort(-importance)
    cum = np.cumsum(importance[order]) / (total if total > 0 else 1.0)
    n_keep = int(np.searchsorted(cum, float(share) - 1e-12) + 1)
    kept = np.sort(order[:max(n_keep, 1)])
    types = classify_channels(model)
    filt = channel_filters(model)
    w1 = np.asarray(model.w1, np.float64)
    channels = []
    for c in order[:max(n_keep, 1)]:
        d = dict(types[c], share=float(importance[c] / total) if total > 0 else 0.0)
        d["filter"] = filt[c] if vals.ndim == 3 else w1[c].sum(axis=1)
        channels.append(d)
    contrib = vals[:, :, kept]
    attr_sum = attr.baseline_response + contrib.reshape(n_win, vals.shape[1], -1).sum(axis=2)
    fidelity = {}
    fidelity["attribution_sum_corr"], fidelity["attribution_sum_ve"] = _fit(attr_sum, attr.response)
    base = attr.settings.get("baseline", 0.0)
    if not isinstance(base, (int, float)):
        raise ValueError("reduce() needs an attribution with a constant (grey) baseline")
    pruned = prune(model, kept, baseline=base)
    pruned_resp = None
    if movie is not None:
        weights = attr.cell_weights
        pruned_resp = np.asarray(pruned.predict(movie), np.float64) @ weights.T
        fidelity["pruned_corr"], fidelity["pruned_ve"] = _fit(pruned_resp, attr.response)
    eff = None
    if movie is not None and vals.ndim == 3:
        scale = np.broadcast_to(np.asarray(model.scale1, np.float64), model.shape1)
        z = np.asarray(model.layer1(movie), np.float64) * scale
        z0 = float(base) * w1[kept].sum(axis=(1, 2, 3)) * scale[kept].sum(axis=(1, 2))  # grey baseline
        dz = z.sum(axis=(2, 3))[:, kept] - z0[None]  # pooled change of the kept channels' pre-activation
        with np.errstate(divide="ignore", invalid="ignore"):
            eff = np.where(np.abs(dz[:, None, :]) > 1e-9, contrib / dz[:, None, :], np.nan)
    return ReducedModel(channels, kept, importance, vals, pruned, attr_sum, eff, attr.response, pruned_resp,
                        fidelity, float(share), (lo, hi), 0, types, attr)
