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
Intensity: model units
    What a CNN was fitted on: the training stimulus z-scored with the
    ``norm_stats`` (``mean``, ``std``) stored in the model file.
    :func:`to_model_units` converts contrast to model units; the grey screen
    is :func:`grey_level` in model units.  :meth:`retina.RetinaCNN.predict`
    takes model units, :meth:`retina.RetinaCNN.rates` contrast units.

See ``docs/units.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FRAME_MS", "DT", "UM_PER_PX", "FRAME_SHAPE", "GREY", "UNITS", "ms_to_frames", "frames_to_ms",
           "to_model_units", "grey_level"]

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
UNITS = ("contrast", "model")
"""The intensity scales a movie can be given in."""


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


def grey_level(norm_stats) -> float:
    """The grey screen (contrast 0) in model units: ``(0 - mean) / std``."""
    mean, std = _stats(norm_stats)
    return (GREY - mean) / std


def to_model_units(movie, norm_stats, xp=np):
    """Contrast-unit ``movie`` in model units, float32: ``(movie - mean) / std``.

    ``norm_stats`` is a model's ``{"mean", "std"}`` (``None`` or empty: the
    identity).  ``xp`` is the array module (numpy or cupy).
    """
    mean, std = _stats(norm_stats)
    z = xp.asarray(movie, dtype=np.float32)
    return (z - np.float32(mean)) / np.float32(std)
