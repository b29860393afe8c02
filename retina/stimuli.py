"""Stimulus generators: float32 movies ``(T, H, W)`` in contrast units, reproducible from a seed.

Every generator is a plain function returning a :class:`Stimulus`: the movie,
the parameters it was made with, and the frame indices of its events (flash
onsets, the omitted flash, the reversal frame, the bar centre per frame), so
that analyses never re-derive them.  Conventions (docs/spec.md section 1): 1 frame =
10 ms, 1 px = 55 um, 0 = mean grey, negative = dark.  Pixel ``i`` is centred
at coordinate ``i`` and covers ``[i - 0.5, i + 0.5)``.  Nothing is darker than
black (contrast -1): protocol intensities below it are refused, and Gaussian
noise and natural movies show a darker draw as black.

Full-field: :func:`flash`, :func:`step`, :func:`flash_train`,
:func:`paired_flash`, :func:`contrast_steps`, :func:`full_field_noise`.
Spatial: :func:`white_noise` (checkerboard), :func:`moving_bar`,
:func:`flashed_bar`, :func:`reversing_grating`.  Natural-like:
:func:`natural_movie`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from ._validate import check_int
from .units import BLACK, FRAME_MS, check_contrast

__all__ = ["Stimulus", "flash", "step", "flash_train", "paired_flash", "contrast_steps", "full_field_noise",
           "white_noise", "bar_noise", "bar_motion", "flash_sequence", "moving_bar", "flashed_bar",
           "reversing_grating", "natural_movie", "period_frames", "GENERATORS"]



@dataclass
class Stimulus:
    """A movie ``(T, H, W)`` float32 with the record of how it was made.

    Attributes
    ----------
    movie : ndarray
        Contrast movie, C-contiguous float32.
    params : dict
        The generator's name (``kind``) and every parameter it used.
    events : dict
        Frame indices (and per-frame quantities) of the stimulus' events.
    """

    movie: np.ndarray
    params: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)

    def __array__(self, dtype=None, copy=None):
        return self.movie if dtype is None else self.movie.astype(dtype)

    @property
    def shape(self):
        return self.movie.shape

    @property
    def n_frames(self):
        return self.movie.shape[0]

    def __len__(self):
        return self.movie.shape[0]


# ------------------------------------------------------------------ validation
def _frame(frame_shape):
    try:
        shape = tuple(frame_shape)
    except TypeError:
        raise ValueError(f"frame_shape must be (H, W), got {frame_shape!r}") from None
    if len(shape) != 2:
        raise ValueError(f"frame_shape must be (H, W), got {frame_shape!r}")
    return tuple(check_int("frame_shape[i]", v, minimum=1) for v in shape)


def _number(name, value, *, minimum=None, maximum=None, strict=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if minimum is not None and (v < minimum or strict and v == minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return v


def _positive(name, value):
    return _number(name, value, minimum=0.0, strict=True)


def _bar_width(width, frame_width):
    width = _positive("width", width)
    if width > frame_width:
        raise ValueError(f"width ({width} px) must not exceed the frame width ({frame_width} px)")
    return width


def _full_field(values, frame_shape):
    h, w = frame_shape
    return np.ascontiguousarray(np.broadcast_to(np.asarray(values, np.float32)[:, None, None],
                                                (len(values), h, w)))


def period_frames(frequency_hz):
    """Flash period in whole frames for a frequency in Hz (10 ms frames), e.g. 6 Hz -> 17."""
    f = _positive("frequency_hz", frequency_hz)
    return max(1, int(round(1000.0 / (f * FRAME_MS))))


# ------------------------------------------------------------------ full field
def flash(intensity=-1.0, *, duration=2, delay=50, post=100, frame_shape=(50, 50)):
    """One full-field flash of ``intensity`` for ``duration`` frames on grey.

    Events: ``flash_frames`` (the onset, as a 1-element array).
    """
    intensity = check_contrast("intensity", _number("intensity", intensity))
    duration = check_int("duration", duration, minimum=1)
    delay = check_int("delay", delay, minimum=0)
    post = check_int("post", post, minimum=0)
    fs = _frame(frame_shape)
    trace = np.zeros(delay + duration + post, np.float32)
    trace[delay:delay + duration] = intensity
    return Stimulus(_full_field(trace, fs), dict(kind="flash", intensity=intensity, duration=duration,
                                                 delay=delay, post=post, frame_shape=fs),
                    dict(flash_frames=np.array([delay])))


def step(intensity=-1.0, *, duration=100, delay=50, post=100, frame_shape=(50, 50)):
    """A full-field step of ``intensity`` lasting ``duration`` frames (a long flash).

    Events: ``onset_frame``, ``offset_frame``.
    """
    s = flash(intensity, duration=duration, delay=delay, post=post, frame_shape=frame_shape)
    s.params["kind"] = "step"
    return Stimulus(s.movie, s.params, dict(onset_frame=np.array(delay), offset_frame=np.array(delay + duration)))


def flash_train(n_flashes=10, period=8, *, intensity=-1.0, duration=2, pre=100, post=100, frame_shape=(50, 50),
                omit_last=True):
    """Full-field flashes (``duration`` frames, every ``period`` frames) on grey: the OSR protocol.

    With ``omit_last`` the train stops and the next flash is omitted.  Use
    :func:`period_frames` to convert a frequency in Hz to ``period``.
    Events: ``flash_frames`` (onsets), ``last_flash_frame`` and, with
    ``omit_last``, ``omitted_frame`` (where the next flash would have started).
    """
    n_flashes = check_int("n_flashes", n_flashes, minimum=1)
    period = check_int("period", period, minimum=1)
    duration = check_int("duration", duration, minimum=1)
    if duration > period:
        raise ValueError(f"duration ({duration} frames) must not exceed period ({period} frames)")
    pre = check_int("pre", pre, minimum=0)
    post = check_int("post", post, minimum=0)
    intensity = check_contrast("intensity", _number("intensity", intensity))
    fs = _frame(frame_shape)
    onsets = pre + period * np.arange(n_flashes)
    trace = np.zeros(int(onsets[-1] + period + post), np.float32)
    for o in onsets:
        trace[o:o + duration] = intensity
    events = dict(flash_frames=onsets, last_flash_frame=np.array(onsets[-1]))
    if omit_last:
        events["omitted_frame"] = np.array(onsets[-1] + period)
    return Stimulus(_full_field(trace, fs), dict(kind="flash_train", n_flashes=n_flashes, period=period,
                                                 intensity=intensity, duration=duration, pre=pre, post=post,
                                                 frame_shape=fs, omit_last=bool(omit_last)), events)


def paired_flash(interval=20, *, intensity=-1.0, duration=2, pre=50, post=100, frame_shape=(50, 50)):
    """Two full-field flashes whose onsets are ``interval`` frames apart.

    Events: ``flash_frames`` (both onsets).
    """
    interval = check_int("interval", interval, minimum=1)
    duration = check_int("duration", duration, minimum=1)
    if duration > interval:
        raise ValueError(f"duration ({duration} frames) must not exceed interval ({interval} frames)")
    s = flash_train(2, interval, intensity=intensity, duration=duration, pre=pre, post=post,
                    frame_shape=frame_shape, omit_last=False)
    s.params.update(kind="paired_flash", interval=interval)
    return Stimulus(s.movie, s.params, dict(flash_frames=s.events["flash_frames"]))


def contrast_steps(sds=(0.35, 0.05, 0.35), durations=(1000, 1000, 1000), *, mean=0.0, hold=1, seed=0,
                   frame_shape=(50, 50)):
    """Full-field Gaussian noise whose s.d. switches between epochs (contrast adaptation).

    Events: ``switch_frames`` (first frame of each epoch) and ``sd`` per frame.
    """
    sds = [_number("sds[i]", s, minimum=0.0) for s in sds]
    durations = [check_int("durations[i]", d, minimum=1) for d in durations]
    if len(sds) != len(durations) or not sds:
        raise ValueError(f"sds and durations must be non-empty and of equal length, got {len(sds)} and "
                         f"{len(durations)}")
    mean = _number("mean", mean)
    hold = check_int("hold", hold, minimum=1)
    fs = _frame(frame_shape)
    rng = np.random.default_rng(seed)
    sd = np.repeat(np.asarray(sds), durations)
    noise = np.repeat(rng.standard_normal(-(-len(sd) // hold)), hold)[:len(sd)]
    trace = np.maximum(mean + sd * noise, BLACK).astype(np.float32)
    return Stimulus(_full_field(trace, fs), dict(kind="contrast_steps", sds=tuple(sds), durations=tuple(durations),
                                                 mean=mean, hold=hold, seed=seed, frame_shape=fs),
                    dict(switch_frames=np.concatenate([[0], np.cumsum(durations)[:-1]]),
                         sd=sd.astype(np.float32)))


def full_field_noise(n_frames, *, contrast=0.35, binary=False, hold=1, seed=0, frame_shape=(50, 50)):
    """Full-field white noise: Gaussian (s.d. ``contrast``) or binary (``+-contrast``), held ``hold`` frames."""
    n = check_int("n_frames", n_frames, minimum=1)
    contrast = _positive("contrast", contrast)
    if binary:
        check_contrast("-contrast (binary noise)", -contrast)
    hold = check_int("hold", hold, minimum=1)
    fs = _frame(frame_shape)
    rng = np.random.default_rng(seed)
    m = -(-n // hold)
    vals = rng.choice([-contrast, contrast], m) if binary else np.maximum(contrast * rng.standard_normal(m), BLACK)
    trace = np.repeat(vals, hold)[:n].astype(np.float32)
    return Stimulus(_full_field(trace, fs), dict(kind="full_field_noise", n_frames=n, contrast=contrast,
                                                 binary=bool(binary), hold=hold, seed=seed, frame_shape=fs))


# ------------------------------------------------------------------ spatial
def white_noise(n_frames, frame_shape=(50, 50), *, contrast=1.0, binary=False, check=1, hold=1, seed=0):
    """Checkerboard white noise.

    Gaussian (s.d. ``contrast``) or binary (``+-contrast``) checks of ``check``
    px, refreshed every ``hold`` frames.  The training set of ``docs/insilico.md``
    uses ``binary=True, contrast=0.35`` (and ``hold=3``).
    """
    n = check_int("n_frames", n_frames, minimum=1)
    h, w = _frame(frame_shape)
    contrast = _positive("contrast", contrast)
    if binary:
        check_contrast("-contrast (binary noise)", -contrast)
    check = check_int("check", check, minimum=1)
    hold = check_int("hold", hold, minimum=1)
    rng = np.random.default_rng(seed)
    n_up = -(-n // hold)
    gh, gw = -(-h // check), -(-w // check)
    if binary:
        vals = rng.choice(np.array([-contrast, contrast], np.float32), size=(n_up, gh, gw))
    else:
        vals = np.maximum(contrast * rng.standard_normal((n_up, gh, gw)), BLACK).astype(np.float32)
    movie = np.repeat(np.repeat(np.repeat(vals, hold, 0)[:n], check, 1)[:, :h], check, 2)[:, :, :w]
    return Stimulus(np.ascontiguousarray(movie), dict(kind="white_noise", n_frames=n, frame_shape=(h, w),
                                                      contrast=contrast, binary=bool(binary), check=check,
                                                      hold=hold, seed=seed))


def bar_noise(n_frames, frame_shape=(50, 50), *, contrast=0.35, binary=True, width=2, hold=2, seed=0):
    """Flickering bars: full-height bars of ``width`` px, each column group an independent binary
    (``+-contrast``) or Gaussian (s.d. ``contrast``) sequence refreshed every ``hold`` frames;
    every frame is constant along rows (the invariance of the bar protocols)."""
    n = check_int("n_frames", n_frames, minimum=1)
    h, w = _frame(frame_shape)
    st = white_noise(n, (1, w), contrast=contrast, binary=binary, check=check_int("width", width, minimum=1),
                     hold=hold, seed=seed)
    movie = np.ascontiguousarray(np.broadcast_to(st.movie, (n, h, w)))
    params = {k: v for k, v in st.params.items() if k != "check"}
    return Stimulus(movie, dict(params, kind="bar_noise", frame_shape=(h, w), width=st.params["check"]))


def _bar_profile(centres, width, n_px):
    """Exact area coverage ``(T, n_px)`` of pixels ``[i-0.5, i+0.5)`` by bars ``[c - width/2, c + width/2]``.

    This is the limit of drawing at ever finer resolution and area-averaging
    back, so sub-pixel positions are rendered without aliasing.
    """
    lo = np.asarray(centres, np.float64)[:, None] - width / 2.0
    hi = lo + width
    px = np.arange(n_px, dtype=np.float64)[None, :]
    return np.clip(np.minimum(hi, px + 0.5) - np.maximum(lo, px - 0.5), 0.0, 1.0)


def _bar_movie(centres, width, intensity, frame_shape):
    h, w = frame_shape
    prof = (intensity * _bar_profile(centres, width, w)).astype(np.float32)
    return np.ascontiguousarray(np.broadcast_to(prof[:, None, :], (len(prof), h, w)))


def moving_bar(speed=0.08, *, width=2.0, intensity=-1.0, start=None, stop=None, reverse_at=None, pre=0, post=0,
               frame_shape=(50, 50)):
    """A bar spanning all rows, moving along columns at ``speed`` px/frame with sub-pixel rendering.

    Parameters
    ----------
    speed : float
        Pixels per frame; negative moves leftwards (0.08 px/frame = 0.44 mm/s).
    width : float
        Bar width in px (may be fractional); at most the frame width.
    intensity : float
        Bar contrast on the grey background (negative = dark).
    start, stop : float, optional
        Bar-centre positions (px) where the motion starts and ends; default
        from just off-screen on one side to just off-screen on the other.
    reverse_at : float, optional
        Position where the bar reverses direction (the motion-reversal
        protocol); it then moves back to ``start``.
    pre, post : int
        Grey frames before the bar appears and after it has gone.

    Events: ``center`` (bar centre per frame, NaN while absent),
    ``reversal_frame`` (when ``reverse_at`` is given) and ``velocity`` per frame.
    """
    speed = _number("speed", speed)
    if speed == 0:
        raise ValueError("speed must be non-zero (px/frame); use flashed_bar for a static bar")
    h, w = _frame(frame_shape)
    width = _bar_width(width, w)
    intensity = check_contrast("intensity", _number("intensity", intensity))
    pre = check_int("pre", pre, minimum=0)
    post = check_int("post", post, minimum=0)
    off_left, off_right = -width / 2 - 0.5, (w - 1) + width / 2 + 0.5
    if start is None:
        start = off_left if speed > 0 else off_right
    start = _number("start", start)
    if reverse_at is not None:
        reverse_at = _number("reverse_at", reverse_at)
        if (reverse_at - start) * speed <= 0:
            raise ValueError(f"reverse_at ({reverse_at}) must lie ahead of start ({start}) in the direction of "
                             f"motion (speed {speed})")
        n_out = int(np.ceil(abs(reverse_at - start) / abs(speed)))
        stop = start if stop is None else _number("stop", stop)
        out = start + speed * np.arange(n_out)
        back = reverse_at - speed * np.arange(int(np.ceil(abs(reverse_at - stop) / abs(speed))) + 1)
        path = np.concatenate([out, back])
        events = dict(reversal_frame=np.array(pre + n_out))
    else:
        if stop is None:
            stop = off_right if speed > 0 else off_left
        stop = _number("stop", stop)
        if (stop - start) * speed <= 0:
            raise ValueError(f"stop ({stop}) must lie ahead of start ({start}) in the direction of motion "
                             f"(speed {speed})")
        path = start + speed * np.arange(int(np.ceil(abs(stop - start) / abs(speed))) + 1)
        events = {}
    centre = np.concatenate([np.full(pre, np.nan), path, np.full(post, np.nan)])
    movie = _bar_movie(np.nan_to_num(centre, nan=-1e9), width, intensity, (h, w))
    velocity = np.concatenate([[0.0], np.diff(centre)])
    events.update(center=centre, velocity=np.nan_to_num(velocity))
    return Stimulus(movie, dict(kind="moving_bar", speed=speed, width=width, intensity=intensity, start=start,
                                stop=stop, reverse_at=reverse_at, pre=pre, post=post, frame_shape=(h, w)),
                    events)


def bar_motion(n_frames, frame_shape=(50, 50), *, speeds=(0.02, 0.6), widths=(1.0, 4.0), contrasts=(0.3, 1.0),
               p_reverse=0.3, gaps=(10, 50), max_segment=600, seed=0):
    """A stream of moving bars: the generic moving-bar protocol of retinal physiology, for training.

    Segments follow each other with grey gaps of ``gaps`` frames (uniform).  In
    each, one full-height bar of width uniform in ``widths`` (px), contrast
    ``+-`` uniform in ``contrasts`` (either polarity equally), moves left or
    right at a speed log-uniform in ``speeds`` (px/frame) from a random start,
    for at most ``max_segment`` frames or until it leaves the frame; with
    probability ``p_reverse`` it turns back at a random point of its path.
    Every frame is constant along rows.  Events: ``center`` (bar centre per
    frame, NaN in the gaps) and ``velocity``.
    """
    n = check_int("n_frames", n_frames, minimum=1)
    h, w = _frame(frame_shape)
    lo_v, hi_v = (_positive("speeds", v) for v in speeds)
    lo_w, hi_w = (_bar_width(v, w) for v in widths)
    lo_c, hi_c = (_number("contrasts[i]", v, minimum=0.0, maximum=-BLACK, strict=True) for v in contrasts)
    p_reverse = _number("p_reverse", p_reverse, minimum=0, maximum=1)
    gap_lo, gap_hi = (check_int("gaps", g, minimum=0) for g in gaps)
    max_segment = check_int("max_segment", max_segment, minimum=1)
    if lo_v > hi_v or lo_w > hi_w or lo_c > hi_c or gap_lo > gap_hi:
        raise ValueError(f"ranges must be (low, high); got speeds={speeds}, widths={widths}, "
                         f"contrasts={contrasts}, gaps={gaps}")
    rng = np.random.default_rng(seed)
    centre = np.full(n, np.nan)
    width = np.ones(n)
    level = np.zeros(n)
    t = 0
    while t < n:
        t += int(rng.integers(gap_lo, gap_hi + 1))
        if t >= n:
            break
        v = float(np.exp(rng.uniform(np.log(lo_v), np.log(hi_v)))) * (1 if rng.random() < 0.5 else -1)
        bw = float(rng.uniform(lo_w, hi_w))
        x0 = float(rng.uniform(-bw / 2, w - 1 + bw / 2))
        k = min(max_segment, n - t)
        path = x0 + v * np.arange(k)
        if rng.random() < p_reverse and k > 2:
            turn = int(rng.integers(1, k - 1))
            path[turn:] = path[turn] - v * np.arange(k - turn)
        inside = (path > -bw / 2 - 0.5) & (path < w - 1 + bw / 2 + 0.5)
        k = int(np.argmin(inside)) if not inside.all() else k  # until it first leaves the frame
        centre[t:t + k], width[t:t + k] = path[:k], bw
        level[t:t + k] = float(rng.uniform(lo_c, hi_c)) * (1 if rng.random() < 0.5 else -1)
        t += k
    prof = _bar_profile(np.nan_to_num(centre, nan=-1e9), width[:, None], w)  # one width per frame
    movie = np.ascontiguousarray(np.broadcast_to((level[:, None] * prof).astype(np.float32)[:, None, :], (n, h, w)))
    velocity = np.nan_to_num(np.concatenate([[0.0], np.diff(centre)]))
    return Stimulus(movie, dict(kind="bar_motion", speeds=(lo_v, hi_v), widths=(lo_w, hi_w),
                                contrasts=(lo_c, hi_c), p_reverse=p_reverse, gaps=(gap_lo, gap_hi),
                                max_segment=max_segment, seed=seed, frame_shape=(h, w)),
                    dict(center=centre, velocity=velocity))


def flash_sequence(n_frames, frame_shape=(50, 50), *, contrasts=(0.05, 1.0), durations=(1, 4), gaps=(20, 100),
                   polarity="both", seed=0):
    """Full-field flashes of random strength from grey: the flash protocols' stimulus class, for training.

    Flashes follow each other after grey gaps of ``gaps`` frames (uniform); each
    lasts ``durations`` frames (uniform) at a contrast of magnitude log-uniform
    in ``contrasts``, either polarity equally (``polarity="both"``) or only
    ``"dark"`` or ``"bright"`` ones (the same draws, signs forced).  Events:
    ``flash_frames`` (first frame of each flash) and ``intensity`` (its signed
    contrast).
    """
    n = check_int("n_frames", n_frames, minimum=1)
    h, w = _frame(frame_shape)
    lo_c, hi_c = (_number("contrasts[i]", v, minimum=0.0, maximum=-BLACK, strict=True) for v in contrasts)
    d_lo, d_hi = (check_int("durations", d, minimum=1) for d in durations)
    gap_lo, gap_hi = (check_int("gaps", g, minimum=0) for g in gaps)
    if lo_c > hi_c or d_lo > d_hi or gap_lo > gap_hi:
        raise ValueError(f"ranges must be (low, high); got contrasts={contrasts}, durations={durations}, "
                         f"gaps={gaps}")
    sign = {"both": 0, "dark": -1, "bright": 1}.get(polarity) if isinstance(polarity, str) else None
    if sign is None:
        raise ValueError(f"polarity must be 'both', 'dark' or 'bright', got {polarity!r}")
    rng = np.random.default_rng(seed)
    level = np.zeros(n, np.float32)
    starts, values = [], []
    t = int(rng.integers(gap_lo, gap_hi + 1))
    while t < n:
        magnitude = float(np.exp(rng.uniform(np.log(lo_c), np.log(hi_c))))
        drawn = 1 if rng.random() < 0.5 else -1     # drawn for every polarity, so the draws stay the same
        c = magnitude * (sign or drawn)
        d = int(rng.integers(d_lo, d_hi + 1))
        level[t:t + d] = c
        starts.append(t)
        values.append(c)
        t += d + int(rng.integers(gap_lo, gap_hi + 1))
    movie = np.ascontiguousarray(np.broadcast_to(level[:, None, None], (n, h, w)))
    return Stimulus(movie, dict(kind="flash_sequence", contrasts=(lo_c, hi_c), durations=(d_lo, d_hi),
                                gaps=(gap_lo, gap_hi), polarity=polarity, seed=seed,
                                frame_shape=(h, w)),
                    dict(flash_frames=np.array(starts, dtype=np.int64), intensity=np.array(values)))


def flashed_bar(position, *, width=2.0, intensity=-1.0, duration=2, delay=50, post=100, frame_shape=(50, 50)):
    """A bar spanning all rows, centred at ``position`` px, flashed for ``duration`` frames.

    The control for motion anticipation.  Events: ``flash_frames``, ``center``.
    """
    h, w = _frame(frame_shape)
    position = _number("position", position)
    width = _bar_width(width, w)
    intensity = check_contrast("intensity", _number("intensity", intensity))
    duration = check_int("duration", duration, minimum=1)
    delay = check_int("delay", delay, minimum=0)
    post = check_int("post", post, minimum=0)
    n = delay + duration + post
    centre = np.full(n, np.nan)
    centre[delay:delay + duration] = position
    movie = _bar_movie(np.nan_to_num(centre, nan=-1e9), width, intensity, (h, w))
    return Stimulus(movie, dict(kind="flashed_bar", position=position, width=width, intensity=intensity,
                                duration=duration, delay=delay, post=post, frame_shape=(h, w)),
                    dict(flash_frames=np.array([delay]), center=centre))


def reversing_grating(bar_width=4, *, half_period=25, n_reversals=8, contrast=1.0, kind="square", phase=0.0,
                      pre=50, frame_shape=(50, 50)):
    """A grating of bars ``bar_width`` px wide whose contrast reverses every ``half_period`` frames.

    ``kind`` is ``"square"`` or ``"sine"``; the default (25 frames) reverses at
    2 Hz for the frequency-doubling (F2/F1) test.  Events: ``reversal_frames``.
    """
    h, w = _frame(frame_shape)
    bar_width = _positive("bar_width", bar_width)
    half_period = check_int("half_period", half_period, minimum=1)
    n_reversals = check_int("n_reversals", n_reversals, minimum=1)
    contrast = _positive("contrast", contrast)
    check_contrast("-contrast (the grating's dark bars)", -contrast)
    if kind not in ("square", "sine"):
        raise ValueError(f"kind must be 'square' or 'sine', got {kind!r}")
    phase = _number("phase", phase)
    pre = check_int("pre", pre, minimum=0)
    x = np.arange(w) + phase
    wave = np.sin(np.pi * x / bar_width)
    pattern = np.sign(wave) if kind == "square" else wave
    sign = np.concatenate([np.zeros(pre), np.repeat((-1.0) ** np.arange(n_reversals + 1),
                                                    half_period)])
    prof = (contrast * sign[:, None] * pattern[None, :]).astype(np.float32)
    movie = np.ascontiguousarray(np.broadcast_to(prof[:, None, :], (len(prof), h, w)))
    return Stimulus(movie, dict(kind="reversing_grating", bar_width=bar_width, half_period=half_period,
                                n_reversals=n_reversals, contrast=contrast, grating=kind, phase=phase, pre=pre,
                                frame_shape=(h, w)),
                    dict(reversal_frames=pre + half_period * np.arange(n_reversals + 1)))


# ------------------------------------------------------------------ natural-like
def _one_over_f(rng, size):
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fy ** 2 + fx ** 2)
    f[0, 0] = np.inf
    spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f
    img = np.fft.irfft2(spec, s=(size, size))
    return img / img.std()


def _dead_leaves(rng, size, r_min=1.0, r_max=60.0, n_discs=3000):
    # radius density p(r) ~ r^-3 on [r_min, r_max] by inverse transform sampling
    u = rng.random(n_discs)
    r = 1.0 / np.sqrt(1.0 / r_min ** 2 - u * (1.0 / r_min ** 2 - 1.0 / r_max ** 2))
    cy, cx = rng.uniform(-r_max, size + r_max, (2, n_discs))
    grey = rng.uniform(-1.0, 1.0, n_discs)
    img = np.full((size, size), np.nan)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n_discs):  # front to back: a disc only paints still-empty pixels (occlusion)
        y0, y1 = int(max(cy[i] - r[i], 0)), int(min(cy[i] + r[i] + 1, size))
        x0, x1 = int(max(cx[i] - r[i], 0)), int(min(cx[i] + r[i] + 1, size))
        if y0 >= y1 or x0 >= x1:
            continue
        sub = img[y0:y1, x0:x1]
        inside = (yy[y0:y1, x0:x1] - cy[i]) ** 2 + (xx[y0:y1, x0:x1] - cx[i]) ** 2 <= r[i] ** 2
        sub[inside & np.isnan(sub)] = grey[i]
    img[np.isnan(img)] = 0.0
    return (img - img.mean()) / (img.std() + 1e-12)


def _object_epoch(rng, seg, h, w, contrast):
    """Coverage masks ``(seg, h, w)`` and grey level of an object translating across the window."""
    speed = rng.uniform(0.02, 0.3)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    if rng.random() < 0.5:  # a bar spanning the window, moving along x or y
        width = rng.uniform(1.5, 4.0)
        along_x = rng.random() < 0.5
        n_px = w if along_x else h
        t = np.arange(seg, dtype=np.float64)
        flip = int(rng.integers(seg // 3, seg)) if rng.random() < 0.5 else seg
        disp = np.where(t < flip, t, 2 * flip - t) * speed * rng.choice([-1.0, 1.0])
        prof = _bar_profile(rng.uniform(0, n_px - 1) + disp, width, n_px)
        mask = np.broadcast_to(prof[:, None, :] if along_x else prof[:, :, None], (seg, h, w))
    else:  # a disc (a leaf) gliding in a random direction
        radius = rng.uniform(3.0, 10.0)
        angle = rng.uniform(0, 2 * np.pi)
        c0 = rng.uniform([0, 0], [h, w])
        t = np.arange(seg, dtype=np.float64)[:, None, None]
        cy = c0[0] + np.sin(angle) * speed * t
        cx = c0[1] + np.cos(angle) * speed * t
        dist = np.sqrt((yy[None] - cy) ** 2 + (xx[None] - cx) ** 2)
        mask = np.clip(radius - dist + 0.5, 0.0, 1.0)
    level = rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.5) * contrast
    return mask, level, speed


def natural_movie(n_frames, frame_shape=(50, 50), *, seed=0, contrast=0.3, drift=0.4, canvas=256,
                  saccade_interval=(50, 150), n_images=8, object_fraction=0.2, microsaccade_rate=0.0):
    """Natural-like movie: dead-leaves and 1/f images seen through a window with eye movements.

    Parameters
    ----------
    n_frames : int
        Length in frames (10 ms each).
    frame_shape : (int, int)
        Window size in px.
    seed : int
        Everything (images, eye path, objects) follows from it.
    contrast : float
        RMS contrast of the images.
    drift : float
        Fixational drift: s.d. (px) of the per-frame Brownian step, rendered with
        bilinear sub-pixel sampling.
    canvas : int
        Side of the square images the window moves over.
    saccade_interval : (int, int)
        Saccades to a new image and place come every 0.5-1.5 s by default:
        gamma-distributed intervals (shape 9) with this range's midpoint as the
        mean, clipped to the range.
    n_images : int
        Images in the pool: dead leaves (disc radii ~ r^-3 with occlusion; 70 %)
        and 1/f-amplitude Gaussian fields (30 %).
    object_fraction : float
        Fraction of fixations with an object (a bar or a disc) translating
        across the window at 0.02-0.3 px/frame, half of them reversing.
    microsaccade_rate : float
        Microsaccades (2-5 px jumps) per second; 0 disables them.

    Events: ``saccade_frames`` (first frame of each fixation) and
    ``object_frames`` (first and last frame of each object epoch, shape (n, 2)).
    """
    n = check_int("n_frames", n_frames, minimum=1)
    h, w = _frame(frame_shape)
    contrast = _positive("contrast", contrast)
    drift = _number("drift", drift, minimum=0.0)
    canvas = check_int("canvas", canvas, minimum=max(h, w) + 4)
    lo, hi = (check_int("saccade_interval[i]", v, minimum=1) for v in saccade_interval)
    if hi < lo:
        raise ValueError(f"saccade_interval must be (low, high) with low <= high, got {saccade_interval!r}")
    object_fraction = _number("object_fraction", object_fraction, minimum=0.0, maximum=1.0)
    microsaccade_rate = _number("microsaccade_rate", microsaccade_rate, minimum=0.0)
    rng = np.random.default_rng(seed)
    images = [(_one_over_f(rng, canvas) if rng.random() < 0.3 else _dead_leaves(rng, canvas)) * contrast
              for _ in range(check_int("n_images", n_images, minimum=1))]
    movie = np.empty((n, h, w), np.float32)
    t, saccades, objects = 0, [], []
    margin = 2.0
    span = canvas - max(h, w) - 1.001
    mean_interval = 0.5 * (lo + hi)
    while t < n:
        seg = int(np.clip(round(rng.gamma(9.0, mean_interval / 9.0)), lo, hi))
        seg = min(seg, n - t)
        saccades.append(t)
        img = images[int(rng.integers(len(images)))]
        steps = rng.normal(0.0, drift, (seg, 2))
        if microsaccade_rate > 0:
            jumps = rng.random(seg) < microsaccade_rate * FRAME_MS / 1000.0
            ang = rng.uniform(0, 2 * np.pi, seg)
            amp = rng.uniform(2.0, 5.0, seg)
            steps += jumps[:, None] * amp[:, None] * np.stack([np.sin(ang), np.cos(ang)], 1)
        path = np.clip(np.cumsum(steps, axis=0) + rng.uniform(margin, span - margin, 2), 0, span)
        iy, ix = path[:, 0].astype(np.int64), path[:, 1].astype(np.int64)
        fy, fx = (path[:, 0] - iy)[:, None, None], (path[:, 1] - ix)[:, None, None]
        rows = iy[:, None] + np.arange(h + 1)[None, :]
        cols = ix[:, None] + np.arange(w + 1)[None, :]
        blk = img[rows[:, :, None], cols[:, None, :]]
        frames = ((1 - fy) * ((1 - fx) * blk[:, :h, :w] + fx * blk[:, :h, 1:])
                  + fy * ((1 - fx) * blk[:, 1:, :w] + fx * blk[:, 1:, 1:]))
        if object_fraction > 0 and rng.random() < object_fraction:
            mask, level, _ = _object_epoch(rng, seg, h, w, contrast)
            frames = (1 - mask) * frames + mask * level
            objects.append((t, t + seg - 1))
        movie[t:t + seg] = np.maximum(frames, BLACK)
        t += seg
    return Stimulus(movie, dict(kind="natural_movie", n_frames=n, frame_shape=(h, w), seed=seed,
                                contrast=contrast, drift=drift, canvas=canvas, saccade_interval=(lo, hi),
                                n_images=len(images), object_fraction=object_fraction,
                                microsaccade_rate=microsaccade_rate),
                    dict(saccade_frames=np.array(saccades), object_frames=np.array(objects).reshape(-1, 2)))


GENERATORS = {"flash": flash, "step": step, "flash_train": flash_train, "paired_flash": paired_flash,
              "contrast_steps": contrast_steps, "full_field_noise": full_field_noise, "white_noise": white_noise,
              "bar_noise": bar_noise, "bar_motion": bar_motion, "flash_sequence": flash_sequence,
              "moving_bar": moving_bar, "flashed_bar": flashed_bar,
              "reversing_grating": reversing_grating,
              "natural_movie": natural_movie}
"""Every generator by name (used by the CLI's ``retina stimulus``)."""
