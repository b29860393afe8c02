"""Stimulus generators: float32 movies ``(T, H, W)`` in contrast units, reproducible from a seed.

Each generator returns a :class:`Stimulus` (the movie plus its parameters and
event frames).  1 frame = 10 ms, 1 px = 55 um (spec section 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._validate import check_int

__all__ = ["Stimulus", "white_noise", "natural_movie", "flash_train", "GENERATORS"]


@dataclass
class Stimulus:
    """A movie with the record of how it was made."""

    movie: np.ndarray
    params: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)

    def __array__(self, dtype=None, copy=None):
        return self.movie if dtype is None else self.movie.astype(dtype)

    @property
    def shape(self):
        return self.movie.shape


def _frame(frame_shape):
    if len(tuple(frame_shape)) != 2:
        raise ValueError(f"frame_shape must be (H, W), got {frame_shape!r}")
    return tuple(check_int("frame_shape[i]", v, minimum=1) for v in frame_shape)


def _positive(name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def white_noise(n_frames, frame_shape=(50, 50), *, contrast=1.0, binary=False, check=1, hold=1, seed=0):
    """Checkerboard white noise.

    Gaussian (s.d. ``contrast``) or binary (``+-contrast``) checks of ``check`` px,
    refreshed every ``hold`` frames.  ``frame_shape=(1, 1)``-style full field is
    obtained with ``check >= max(frame_shape)``.
    """
    n = check_int("n_frames", n_frames, minimum=1)
    h, w = _frame(frame_shape)
    contrast = _positive("contrast", contrast)
    check = check_int("check", check, minimum=1)
    hold = check_int("hold", hold, minimum=1)
    rng = np.random.default_rng(seed)
    n_up = -(-n // hold)
    gh, gw = -(-h // check), -(-w // check)
    if binary:
        vals = rng.choice(np.array([-contrast, contrast], np.float32), size=(n_up, gh, gw))
    else:
        vals = (contrast * rng.standard_normal((n_up, gh, gw))).astype(np.float32)
    movie = np.repeat(np.repeat(np.repeat(vals, hold, 0)[:n], check, 1)[:, :h], check, 2)[:, :, :w]
    return Stimulus(np.ascontiguousarray(movie), dict(kind="white_noise", n_frames=n, frame_shape=(h, w),
                                                      contrast=contrast, binary=binary, check=check,
                                                      hold=hold, seed=seed))


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


def natural_movie(n_frames, frame_shape=(50, 50), *, seed=0, contrast=0.3, drift=0.4, canvas=256,
                  saccade_interval=(50, 150), n_images=8):
    """Natural-like movie: dead-leaves and 1/f images seen through a window with eye movements.

    Images are dead leaves (disc radii ~ r^-3, occlusion; 70 %) or 1/f-amplitude
    Gaussian fields (30 %), scaled to RMS ``contrast``.  The window drifts by
    Brownian steps of s.d. ``drift`` px per frame (bilinear sub-pixel
    sampling) and saccades to a new image and place every
    ``saccade_interval`` frames (uniform).  Events: ``saccade_frames``.
    """
    n = check_int("n_frames", n_frames, minimum=1)
    h, w = _frame(frame_shape)
    contrast = _positive("contrast", contrast)
    drift = float(drift)
    canvas = check_int("canvas", canvas, minimum=max(h, w) + 4)
    lo, hi = (check_int("saccade_interval[i]", v, minimum=1) for v in saccade_interval)
    rng = np.random.default_rng(seed)
    images = [(_one_over_f(rng, canvas) if rng.random() < 0.3 else _dead_leaves(rng, canvas)) * contrast
              for _ in range(check_int("n_images", n_images, minimum=1))]
    movie = np.empty((n, h, w), np.float32)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    t, saccades = 0, []
    margin = 2.0
    while t < n:
        seg = min(int(rng.integers(lo, hi + 1)), n - t)
        saccades.append(t)
        img = images[int(rng.integers(len(images)))]
        steps = rng.normal(0.0, drift, (seg, 2))
        path = np.cumsum(steps, axis=0) + rng.uniform(margin, canvas - max(h, w) - margin, 2)
        path = np.clip(path, 0, canvas - max(h, w) - 1.001)
        for i in range(seg):
            py, px = path[i]
            iy, ix = int(py), int(px)
            fy, fx = py - iy, px - ix
            blk = img[iy:iy + h + 1, ix:ix + w + 1]
            movie[t + i] = ((1 - fy) * ((1 - fx) * blk[:h, :w] + fx * blk[:h, 1:w + 1])
                            + fy * ((1 - fx) * blk[1:h + 1, :w] + fx * blk[1:h + 1, 1:w + 1]))
        t += seg
    return Stimulus(movie, dict(kind="natural_movie", n_frames=n, frame_shape=(h, w), seed=seed,
                                contrast=contrast, drift=drift, canvas=canvas,
                                saccade_interval=(lo, hi), n_images=len(images)),
                    dict(saccade_frames=np.array(saccades)))


def flash_train(n_flashes=10, period=8, *, intensity=-2.0, duration=2, pre=100, post=100, frame_shape=(50, 50),
                omit_last=True):
    """Full-field flashes (``duration`` frames, every ``period`` frames) on grey.

    With ``omit_last`` the train stops and the next flash is omitted (the OSR
    protocol).  Events: ``flash_frames``, ``omitted_frame``.
    """
    n_flashes = check_int("n_flashes", n_flashes, minimum=1)
    period = check_int("period", period, minimum=1)
    duration = check_int("duration", duration, minimum=1)
    if duration > period:
        raise ValueError(f"duration ({duration} frames) must not exceed period ({period} frames)")
    pre = check_int("pre", pre, minimum=0)
    post = check_int("post", post, minimum=0)
    try:
        intensity = float(intensity)
    except (TypeError, ValueError):
        raise ValueError(f"intensity must be a number, got {intensity!r}") from None
    h, w = _frame(frame_shape)
    onsets = pre + period * np.arange(n_flashes)
    n = int(onsets[-1] + period + post)
    movie = np.zeros((n, h, w), np.float32)
    for o in onsets:
        movie[o:o + duration] = intensity
    events = dict(flash_frames=onsets)
    if omit_last:
        events["omitted_frame"] = np.array(onsets[-1] + period)
    return Stimulus(movie, dict(kind="flash_train", n_flashes=n_flashes, period=period, intensity=intensity,
                                duration=duration, pre=pre, post=post, frame_shape=(h, w)), events)


GENERATORS = {"white_noise": white_noise, "natural_movie": natural_movie, "flash_train": flash_train}
