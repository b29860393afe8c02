"""The stimulus file: schema version 1 (``format = "retina-stimulus"``).

``/stimulus`` (T, H, W) float32 movie in contrast units (``docs/units.md``);
``/params`` attributes: the generator's parameters; ``/events/NAME``: event
frame indices (flash onsets, the reversal frame, the bar centre per frame...).
Root attributes ``format``, ``schema_version``, ``retina_version``.
:func:`load_stimulus` also reads the deep-retina layouts (``test/stimulus``,
``train/stimulus``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._version import __version__
from ._files import atomic_h5, attr_value, open_h5

__all__ = ["save_stimulus", "load_stimulus", "read_stimulus", "STIMULUS_FORMAT", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
STIMULUS_FORMAT = "retina-stimulus"


def save_stimulus(path: str | os.PathLike, movie: np.ndarray, *, params: dict | None = None,
                  events: dict | None = None) -> Path:
    """Write a movie ``(T, H, W)`` (dataset ``stimulus``) with its parameters and events, atomically."""
    movie = np.asarray(movie)
    with atomic_h5(path) as f:
        f.attrs.update({"format": STIMULUS_FORMAT, "schema_version": SCHEMA_VERSION,
                        "retina_version": __version__})
        f.create_dataset("stimulus", data=movie, chunks=True, compression="gzip", compression_opts=1)
        g = f.create_group("params")
        for k, v in (params or {}).items():
            g.attrs[str(k)] = attr_value(v)
        ev = f.create_group("events")
        for k, v in (events or {}).items():
            ev.create_dataset(str(k), data=np.asarray(v))
    return Path(path)


def load_stimulus(path: str | os.PathLike, *, dataset: str | None = None) -> np.ndarray:
    """Read a movie from an HDF5 file: a float32 array ``(T, H, W)`` (see :func:`read_stimulus` for its units)."""
    return read_stimulus(path, dataset=dataset)[0]


def read_stimulus(path: str | os.PathLike, *, dataset: str | None = None) -> tuple[np.ndarray, str]:
    """Read a movie from an HDF5 file with its units: ``(movie, units)``.

    Looks for ``dataset`` if given, else ``stimulus``, then the deep-retina
    layouts ``test/stimulus`` and ``train/stimulus``.  A dataset marked
    ``encoding="uint8-contrast"`` (this package's simulated recordings) is
    decoded to contrast; a ``retina-stimulus`` file is in contrast units;
    anything else is a lab file's raw values, ``"intensity"`` units
    (``docs/units.md``).
    """
    from .dataset import read_movie, stimulus_units

    with open_h5(path, "stimulus") as f:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        keys = [dataset] if dataset else ["stimulus", "test/stimulus", "train/stimulus"]
        for k in keys:
            if k in f:
                ds = f[k]
                if not hasattr(ds, "dtype"):
                    raise ValueError(f"stimulus dataset {k!r} in {str(path)!r} must be a numeric (T, H, W) "
                                     f"array, got a {type(ds).__name__}")
                movie = read_movie(ds, f"stimulus dataset {k!r} in {str(path)!r}")
                return movie, "contrast" if fmt == STIMULUS_FORMAT else stimulus_units(ds)
    raise ValueError(f"no stimulus dataset in {str(path)!r}: looked for {keys}")
