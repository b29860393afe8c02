"""Units, in one place: time, space, and the two intensity scales.

Time
    One frame = one response bin = :data:`FRAME_MS` milliseconds (:data:`DT`
    seconds); :func:`ms_to_frames` and :func:`frames_to_ms` convert.
Space
    One pixel = :data:`UM_PER_PX` micrometres on the retina.
Intensity: contrast units
    Weber contrast: 0 = mean grey, -1 = black, negative = dark.  Every
    stimulus generator (:mod:`retina.stimuli`), the in-silico retina and the
    phenomenon protocols speak contrast units.
Intensity: intensity units
    A lab recording's raw pixel values (e.g. 0-255), whose mean is the grey
    screen.  A model fitted on such a file has ``input_units="intensity"``
    and its ``norm_stats`` are in these units.
Intensity: model units
    What a CNN was fitted on: the training stimulus z-scored with the
    ``norm_stats`` (``mean``, ``std``) stored in the model file, in the
    model's ``input_units``.  :func:`to_model_units` converts a contrast or
    intensity movie to model units; a contrast movie shown to an
    intensity-unit model is taken as Weber contrast around the training
    stimulus' mean, ``I = mean * (1 + c)``.  The grey screen is
    :func:`grey_level` in model units.  :meth:`retina.RetinaCNN.predict` and
    :func:`retina.attribute` take model units unless told otherwise
    (``units=``); :meth:`retina.RetinaCNN.rates` takes contrast units.

See ``docs/units.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FRAME_MS", "DT", "UM_PER_PX", "FRAME_SHAPE", "GREY", "BLACK", "UNITS", "INPUT_UNITS", "ms_to_frames",
           "frames_to_ms", "to_model_units", "grey_level", "TRAINING_RANGE_SD", "check_contrast",
           "check_physical_movie"]

FRAME_MS = 10.0
"""Duration of one frame (and one response bin) in milliseconds."""
DT = FRAME_MS / 1000.0
"""Duration of one frame in seconds."""
UM_PER_PX = 55.0
"""Micrometres on the retina per pixel."""
FRAME_SHAPE = (50, 50)
"""The default frame size (H, W) in pixels."""
GREY = 0.0
"""The mean-grey level in contrast units."""
BLACK = -1.0
"""Black in contrast units: no light.  Weber contrast cannot go lower; a stimulus darker than black does not
exist, and the generators and the in-silico retina refuse one (:func:`check_contrast`)."""
UNITS = ("contrast", "intensity", "model")
"""The intensity scales a movie can be given in."""
INPUT_UNITS = ("contrast", "intensity")
"""The units a model's training stimulus (and so its ``norm_stats``) can be in."""
TRAINING_RANGE_SD = 10.0
"""A stimulus reaching beyond this many training-stimulus s.d. from its mean gets a warning."""


def check_contrast(name: str, value: float) -> float:
    """``value`` as a float if it is a physical Weber contrast (>= :data:`BLACK`); ``ValueError`` naming ``name``
    otherwise (a darker-than-black intensity has no light level to show)."""
    v = float(value)
    if v < BLACK:
        raise ValueError(f"{name} must be a Weber contrast >= {BLACK:g} (black), got {value!r}: nothing is darker "
                         "than black")
    return v


def check_physical_movie(name: str, movie: Any, *, tol: float = 1e-6) -> None:
    """``ValueError`` when a contrast movie holds a value darker than black (below ``BLACK - tol``)."""
    lo = float(np.min(movie)) if np.size(movie) else 0.0
    if lo < BLACK - tol:
        raise ValueError(f"{name} must be in Weber contrast units, >= {BLACK:g} (black); its darkest value is "
                         f"{lo:.4g}. Clip it (np.maximum({name}, -1)) or check its units")


def ms_to_frames(ms: float) -> int:
    """Whole frames nearest to ``ms`` milliseconds."""
    return int(round(float(ms) / FRAME_MS))


def frames_to_ms(frames: Any) -> Any:
    """Milliseconds spanned by ``frames`` frames (a number or an array)."""
    return np.asarray(frames) * FRAME_MS if np.ndim(frames) else float(frames) * FRAME_MS


def _stats(norm_stats) -> tuple[float, float]:
    if not norm_stats:
        return 0.0, 1.0
    return float(norm_stats["mean"]), float(norm_stats["std"])


def grey_level(norm_stats, input_units: str = "contrast") -> float:
    """The grey screen in model units: contrast 0 for a contrast-unit model, the mean for an intensity-unit one."""
    mean, std = _stats(norm_stats)
    if input_units == "intensity":
        return 0.0
    return (GREY - mean) / std


def to_model_units(movie, norm_stats, xp=np, *, units: str = "contrast", input_units: str = "contrast"):
    """A movie in ``units`` converted to a model's units, float32.

    ``norm_stats`` is the model's ``{"mean", "std"}`` (``None`` or empty: the
    identity), ``input_units`` the units they are in.  ``units="model"``
    returns the movie unchanged (as float32).  A contrast movie for an
    intensity-unit model is ``mean * (1 + c)`` before z-scoring; an
    intensity movie cannot be shown to a contrast-unit model (its mean
    luminance is unknown) and is refused.  ``xp`` is the array module.
    """
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    z = xp.asarray(movie, dtype=np.float32)
    if units == "model":
        return z
    mean, std = _stats(norm_stats)
    if units == input_units:
        return (z - np.float32(mean)) / np.float32(std)
    if units == "contrast":    # an intensity-unit model: Weber contrast around the training mean
        return z * np.float32(mean / std)
    raise ValueError("units='intensity' (raw pixel values) cannot be converted for a model trained on contrast "
                     "units: give the movie in contrast units (0 = grey, -1 = black)")


def out_of_range(z, xp=np) -> float:
    """The largest distance of a model-unit movie from the training mean, in training s.d. (0 for empty)."""
    return float(xp.abs(z).max()) if z.size else 0.0
