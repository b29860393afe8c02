"""Running a protocol on a model: the CNN adapter, the analysed cells, and the mechanism machinery.

Every protocol presents stimuli in contrast units to anything with a
``rates(movie) -> (T, n_cells)`` method (the in-silico retina, a recording
wrapper, a :class:`retina.RetinaCNN`).  For a CNN, :func:`probe` wraps it in
a :class:`CNNProbe`, which also attributes and reduces: each condition's
window of interest is attributed to layer-1 channels with ``context_ms``
(default :data:`CONTEXT_MS`) of response either side, not the whole movie;
the pruned network is measured on the whole movie.
"""

from __future__ import annotations

import json

import numpy as np

from .. import units

__all__ = ["CNNProbe", "probe", "CONTEXT_MS", "mechanism", "ablate_inhibition", "ablate_types", "rates",
           "analysed_cells", "row_cells", "frame_shape"]

CONTEXT_MS = 500.0
"""Response attributed either side of each window of interest (ms); ``context_ms=None`` attributes whole movies."""


class CNNProbe:
    """A :class:`retina.RetinaCNN` presented with stimuli in contrast units, aligned with the frames.

    The movie is converted to the model's units (:func:`retina.units.to_model_units`
    with its ``norm_stats``) and preceded by grey frames, so response row ``t``
    is response bin ``t`` (:meth:`retina.RetinaCNN.padded`).
    Cell types and positions are ``cells`` (a list of
    :class:`retina.insilico.Cell`, one per model cell) when given, else come
    from the model's metadata when it was trained on the simulator
    (``cell_types``, ``cell_positions``).
    """

    def __init__(self, model, *, cells=None):
        from ..insilico import Cell

        self.model = model
        self.frame_shape = tuple(model.frame_shape)
        self.n_cells = model.n_cells
        meta = model.metadata or {}
        self.cells = None
        if cells is not None:
            self.cells = list(cells)
            if len(self.cells) != model.n_cells:
                raise ValueError(f"cells must describe the model's {model.n_cells} cells, got {len(self.cells)}")
        elif "cell_types" in meta and "cell_positions" in meta:
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
        """The grey screen in the model's units (the attribution baseline)."""
        return self.model.grey

    def padded(self, movie):
        """The movie in model units, preceded by grey frames: window ``t`` predicts bin ``t``."""
        return self.model.padded(movie)

    def rates(self, movie, model=None):
        """Rates ``(T, n_cells)`` of ``model`` (default the probed one) for a contrast-unit movie."""
        return np.asarray((model or self.model).rates(movie))

    def reduce(self, movie, weights, window, *, share=0.9, n_steps=50, context=None):
        """Attribute the weighted cells' response to layer-1 channels (pooled) and reduce it.

        ``window`` (frames) defines importance.  With ``context`` (frames), only
        the response in ``[window[0] - context, window[1] + context)`` is
        attributed (the reduced model's rows then start at ``result.start``);
        ``None`` attributes the whole movie.
        """
        from ..attribution import attribute
        from ..model import movie_invariance
        from ..reduction import reduce

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
        from ..reduction import inhibitory_channels

        x = self.padded(movie)
        lo, hi = max(int(window[0]), 0), min(int(window[1]), len(movie))
        # only the windows of interest are attributed: frames [lo, hi + history - 1) of the padded movie
        return inhibitory_channels(self.model, x[lo:hi + self.model.history - 1],
                                   cells=np.asarray(weights, np.float64), baseline=self.grey, n_steps=n_steps)


def probe(model):
    """Wrap a RetinaCNN in a :class:`CNNProbe`; anything else with ``rates(movie)`` is used as is."""
    from ..model import RetinaCNN

    return CNNProbe(model) if isinstance(model, RetinaCNN) else model


def _weights(model, cells):
    weights = np.zeros(model.n_cells)
    weights[cells] = 1.0 / len(cells)
    return weights


def mechanism(model, movie, cells, window, share, n_steps, measure, context_ms):
    """Attribute and reduce the analysed cells' mean response; measure the pruned network too.

    The attributed stretch is the window of interest with ``context_ms`` either
    side (the whole movie when None); the pruned network is measured on the
    whole movie.  Returns ``(None, None)`` for models other than CNNs.
    """
    if not isinstance(model, CNNProbe):
        return None, None
    context = None
    if context_ms is not None:
        if not float(context_ms) >= 0:
            raise ValueError(f"context_ms must be >= 0 (ms) or None (whole movies), got {context_ms!r}")
        context = units.ms_to_frames(context_ms)
    red = model.reduce(movie, _weights(model, cells), window, share=share, n_steps=n_steps, context=context)
    pruned = model.rates(movie, model=red.pruned)[:, cells]
    return red, measure(pruned)


def ablate_inhibition(model, res, movies, windows, cells, n_steps, measure):
    """Find each condition's inhibitory layer-2 channels, clamp their union to baseline, measure again.

    Fills ``res.inhibitory`` and ``res.ablated_measures``; does nothing for
    models other than CNNs.
    """
    if not isinstance(model, CNNProbe):
        return
    from ..reduction import ablate

    weights = _weights(model, cells)
    found: dict = {}
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


def ablate_types(model, movies, cells, types, measure):
    """Measures per condition with the layer-1 channels of ``types`` clamped to baseline (CNNs only).

    Returns ``(channels, measures)``; ``([], [])`` when the model is not a CNN
    or has no channel of those types.
    """
    if not isinstance(model, CNNProbe):
        return [], []
    from ..reduction import ablate, classify_channels

    chans = [t["channel"] for t in classify_channels(model.model) if t["type"] in types]
    if not chans:
        return [], []
    lesioned = ablate(model.model, chans, layer="conv1", baseline=model.grey)
    return chans, [measure(i, model.rates(movie, model=lesioned)[:, cells]) for i, movie in enumerate(movies)]


def rates(model, movie):
    """``model.rates(movie)``, checked to be ``(T, n_cells)`` aligned with the movie."""
    if not hasattr(model, "rates"):
        raise ValueError(f"model must have a rates(movie) method, got {type(model).__name__}")
    r = np.asarray(model.rates(movie))
    if r.ndim != 2 or r.shape[0] != len(movie):
        raise ValueError(f"model.rates(movie) must return (T, n_cells) with T = {len(movie)}, got {r.shape}")
    return r


def analysed_cells(model, cells, cell_type):
    """The cells given, else the model's cells of ``cell_type`` when it knows them, else all."""
    if cells is not None:
        return np.atleast_1d(np.asarray(cells, np.int64))
    if hasattr(model, "cells_of"):
        try:
            return model.cells_of(cell_type)
        except ValueError:
            pass
    return np.arange(getattr(model, "n_cells", 1))


def row_cells(model, cells, given):
    """The bar protocols record a row of cells: unless ``cells`` were given, keep the analysed cells on the
    most populated row (ties: nearest the frame's centre) of a model that knows its cells' positions."""
    if given is not None or getattr(model, "cells", None) is None or not len(cells):
        return cells
    ys = np.array([model.cells[i].y for i in cells])
    rows, counts = np.unique(ys, return_counts=True)
    mid = (frame_shape(model)[0] - 1) / 2
    best = max(zip(counts, -np.abs(rows - mid), rows))[2]
    return cells[ys == best]


def frame_shape(model):
    return tuple(getattr(model, "frame_shape", units.FRAME_SHAPE))
