"""The McIntosh et al. (2016) BN-CNN in inference form (docs/spec.md section 2).

::

    z1 = scale1 * corr(movie, w1) + shift1      w1: (C1, history, kh1, kw1)   h1 = relu(z1)
    z2 = scale2 * corr(h1, w2) + shift2         w2: (C2, C1, kh2, kw2)        h2 = relu(z2)
    r  = softplus(scale3 * (w3 @ h2.ravel()) + shift3)   w3: (n_cells, C2*H2*W2)

``scale``/``shift`` are per unit ``(C, H', W')`` or per channel ``(C, 1, 1)``.
Layer 1 is one 3-D correlation over the whole movie (direct or FFT), never a
stack of windows.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _backend, _threads
from . import units as _units
from ._validate import as_float_array, check_choice, check_int, compute_dtype, describe

__all__ = ["RetinaCNN", "softplus", "content_hash", "PARAM_NAMES"]

PARAM_NAMES = ("w1", "scale1", "shift1", "w2", "scale2", "shift2", "w3", "scale3", "shift3")
"""The nine parameter arrays of the inference model, in file order."""

CORR_METHODS = ("auto", "direct", "fft")   # direct loops or FFT, for either conv layer
_FFT_MIN_WINDOWS = 4
_FFT2_MIN_TAPS = 36       # FFT beats the direct loops from about 6x6 kernels (training too), at every batch size
                          # (8x8x11x11: 7x at one window, 3x at 1,000; 2-core Xeon, 2026-12-04)


def softplus(u, xp=np):
    """Numerically stable ``log(1 + exp(u))``."""
    return xp.logaddexp(0, u)


def _affine_shape(name, a, channels, spatial):
    """Validate a scale/shift: per unit (C, H, W), per channel (C, 1, 1) or (C,)."""
    arr = as_float_array(name, a, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == channels:
        arr = arr.reshape(channels, 1, 1)
    ok = arr.ndim == 3 and arr.shape[0] == channels and arr.shape[1:] in ((1, 1), tuple(spatial))
    if not ok:
        raise ValueError(f"{name} must have shape ({channels}, {spatial[0]}, {spatial[1]}) (per unit) or "
                         f"({channels}, 1, 1) / ({channels},) (per channel), got {describe(arr)}")
    return arr


class RetinaCNN:
    """Three-layer CNN retina model (McIntosh et al. 2016), inference form.

    Parameters
    ----------
    w1 : array (C1, history, kh1, kw1)
        Layer-1 spatiotemporal kernels; ``w1[:, -1]`` weighs the newest frame.
    scale1, shift1 : array (C1, H1, W1) or (C1, 1, 1) or (C1,)
        Folded batch-norm affine of layer 1 (per unit or per channel).
    w2 : array (C2, C1, kh2, kw2)
    scale2, shift2 : array (C2, H2, W2) or (C2, 1, 1) or (C2,)
    w3 : array (n_cells, C2 * H2 * W2)
        Readout; columns in C order ``(c, y, x)``.
    scale3, shift3 : array (n_cells,)
    frame_shape : (H, W), optional
        Frame size; inferred from per-unit ``scale1`` or a square readout when omitted.
    norm_stats : dict, optional
        ``{"mean": float, "std": float}`` of the stimulus the model was trained on.
    cell_ids : sequence of str, optional
    metadata : dict, optional
        Free-form provenance (strings and numbers), kept in saved files.
    input_units : {"contrast", "intensity"}
        The units ``norm_stats`` were computed in, i.e. of the stimulus the
        model was fitted on: ``"contrast"`` (Weber contrast, this package's
        simulated recordings) or ``"intensity"`` (a lab file's raw pixel
        values, e.g. 0-255; grey is the mean).  See :mod:`retina.units`.
    response_offset : int
        Response bins between a window's newest frame and the bin it predicts:
        1 (the default, the lab convention and :mod:`retina.train`'s) means
        the window of frames ``[i, i + history)`` predicts bin ``i + history``.
    """

    _ARRAYS = PARAM_NAMES

    def __init__(self, w1, scale1, shift1, w2, scale2, shift2, w3, scale3, shift3, *,
                 frame_shape=None, norm_stats=None, cell_ids=None, metadata=None, input_units="contrast",
                 response_offset=1):
        w1 = as_float_array("w1", w1, ndim=4, dtype=np.float64)
        w2 = as_float_array("w2", w2, ndim=4, dtype=np.float64)
        c1, hist, kh1, kw1 = w1.shape
        c2, c1b, kh2, kw2 = w2.shape
        if min(w1.shape) < 1 or min(w2.shape) < 1:
            raise ValueError(f"w1 and w2 must have no empty axis, got {describe(w1)} and {describe(w2)}")
        if c1b != c1:
            raise ValueError(f"w2 must have shape (C2, {c1}, kh2, kw2) to match w1's {c1} channels, "
                             f"got {describe(w2)}")
        w3 = as_float_array("w3", w3, ndim=2, dtype=np.float64)
        n_cells = w3.shape[0]
        if n_cells < 1:
            raise ValueError(f"w3 must have at least one row (cell), got {describe(w3)}")
        frame_shape = self._infer_frame_shape(frame_shape, scale1, w1, w2, w3)
        h, w = frame_shape
        h1, wd1 = h - kh1 + 1, w - kw1 + 1
        h2, wd2 = h1 - kh2 + 1, wd1 - kw2 + 1
        if h2 < 1 or wd2 < 1:
            raise ValueError(f"frame_shape {frame_shape} is too small for kernels {kh1}x{kw1} then {kh2}x{kw2}")
        if w3.shape[1] != c2 * h2 * wd2:
            raise ValueError(f"w3 must have shape ({n_cells}, {c2 * h2 * wd2}) = (n_cells, C2*H2*W2) for "
                             f"frame {frame_shape}, got {describe(w3)}")
        self.w1, self.w2, self.w3 = w1, w2, w3
        self.scale1 = _affine_shape("scale1", scale1, c1, (h1, wd1))
        self.shift1 = _affine_shape("shift1", shift1, c1, (h1, wd1))
        self.scale2 = _affine_shape("scale2", scale2, c2, (h2, wd2))
        self.shift2 = _affine_shape("shift2", shift2, c2, (h2, wd2))
        self.scale3 = as_float_array("scale3", scale3, shape=(n_cells,), dtype=np.float64)
        self.shift3 = as_float_array("shift3", shift3, shape=(n_cells,), dtype=np.float64)
        self.frame_shape = (h, w)
        self.history = hist
        self.shape1 = (c1, h1, wd1)
        self.shape2 = (c2, h2, wd2)
        self.n_cells = n_cells
        self.norm_stats = self._check_norm_stats(norm_stats)
        if cell_ids is None:
            cell_ids = [f"cell{i}" for i in range(n_cells)]
        cell_ids = [str(c) for c in cell_ids]
        if len(cell_ids) != n_cells:
            raise ValueError(f"cell_ids must have {n_cells} entries (one per cell), got {len(cell_ids)}")
        self.cell_ids = cell_ids
        self.metadata = dict(metadata or {})
        self.input_units = check_choice("input_units", input_units, _units.INPUT_UNITS)
        self.response_offset = check_int("response_offset", response_offset, minimum=0, maximum=hist)
        self._cache = {}

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _infer_frame_shape(frame_shape, scale1, w1, w2, w3):
        _, _, kh1, kw1 = w1.shape
        c2, _, kh2, kw2 = w2.shape
        if frame_shape is not None:
            if (len(tuple(frame_shape)) != 2
                    or not all(isinstance(v, (int, np.integer)) and v > 0 for v in frame_shape)):
                raise ValueError(f"frame_shape must be two positive integers (H, W), got {frame_shape!r}")
            return tuple(int(v) for v in frame_shape)
        s1 = np.asarray(scale1)
        if s1.ndim == 3 and s1.shape[1:] != (1, 1):
            return (s1.shape[1] + kh1 - 1, s1.shape[2] + kw1 - 1)
        per_map = w3.shape[1] / c2
        side = int(round(math.sqrt(per_map)))
        if side * side != per_map:
            raise ValueError("frame_shape is required: it cannot be inferred from per-channel scale1 and "
                             f"a non-square readout w3 {describe(w3)}")
        return (side + kh1 + kh2 - 2, side + kw1 + kw2 - 2)

    @staticmethod
    def _check_norm_stats(norm_stats):
        if norm_stats is None:
            return {"mean": 0.0, "std": 1.0}
        try:
            mean, std = float(norm_stats["mean"]), float(norm_stats["std"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"norm_stats must be a mapping with float 'mean' and 'std', got {norm_stats!r}") from None
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(f"norm_stats needs a finite mean and a positive std, got mean={mean}, std={std}")
        return {"mean": mean, "std": std}

    @classmethod
    def random(cls, n_cells=5, seed=0, *, channels=(8, 8), history=40, kernel_sizes=(15, 11),
               frame_shape=(50, 50), per_unit=True):
        """A random model with the statistics of a trained one.

        Layer-1 kernels are space-time separable centre-surround filters with
        ON/OFF polarity and fast/slow biphasic time courses; layer 2 is random
        with a spatial envelope; readouts are localised.  The affine terms are
        folded batch norm computed on white noise, so every unit has mean 0
        and s.d. 1 before its ReLU shift over a z-scored natural-like movie
        and white noise (activations neither vanish nor explode on either),
        as in a trained BN-CNN.
        """
        n_cells = check_int("n_cells", n_cells, minimum=1)
        history = check_int("history", history, minimum=1)
        c1, c2 = (check_int("channels[i]", c, minimum=1) for c in channels)
        k1, k2 = (check_int("kernel_sizes[i]", k, minimum=1) for k in kernel_sizes)
        h, w = (check_int("frame_shape[i]", v, minimum=1) for v in frame_shape)
        if h - k1 - k2 + 2 < 1 or w - k1 - k2 + 2 < 1:
            raise ValueError(f"frame_shape {frame_shape} is too small for kernel_sizes {kernel_sizes}")
        rng = np.random.default_rng(seed)

        age = np.arange(history)[::-1].astype(float)  # w1[:, -1] is the newest frame (age 0)
        yy, xx = np.mgrid[:k1, :k1] - (k1 - 1) / 2.0
        rr = (yy ** 2 + xx ** 2)[None]
        w1 = np.empty((c1, history, k1, k1))
        for c in range(c1):
            pol = 1.0 if c % 2 else -1.0
            tp = rng.uniform(5.0, 9.0) if (c // 2) % 2 == 0 else rng.uniform(12.0, 17.0)
            x = (age + 1) / tp
            temporal = x ** 3 * np.exp(-3 * (x - 1)) - 0.35 * (x / 1.8) ** 3 * np.exp(-3 * (x / 1.8 - 1))
            sc = rng.uniform(1.2, 2.2)
            spatial = np.exp(-rr / (2 * sc ** 2)) - 0.25 * np.exp(-rr / (2 * (3 * sc) ** 2))
            kern = pol * temporal[:, None, None] * spatial
            kern = kern + 0.05 * np.abs(kern).max() * rng.standard_normal(kern.shape)
            w1[c] = kern / np.linalg.norm(kern)
        yy2, xx2 = np.mgrid[:k2, :k2] - (k2 - 1) / 2.0
        env2 = np.exp(-(yy2 ** 2 + xx2 ** 2) / (2 * (k2 / 4.0) ** 2))
        w2 = rng.standard_normal((c2, c1, k2, k2)) * env2
        w2 /= np.sqrt((w2 ** 2).sum(axis=(1, 2, 3), keepdims=True))

        h1, wd1 = h - k1 + 1, w - k1 + 1
        h2, wd2 = h1 - k2 + 1, wd1 - k2 + 1
        ys, xs = np.mgrid[:h2, :wd2]
        w3 = np.empty((n_cells, c2, h2, wd2))
        for j in range(n_cells):
            cy, cx = rng.uniform(0.3, 0.7) * (h2 - 1), rng.uniform(0.3, 0.7) * (wd2 - 1)
            env = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * (0.12 * max(h2, wd2) + 1) ** 2))
            w3[j] = rng.standard_normal(c2)[:, None, None] * env + 0.1 * env * rng.standard_normal((c2, h2, wd2))
        w3 = w3.reshape(n_cells, -1)

        # fold batch norm measured on the "training" stimuli: z-scored natural-like movie and
        # white noise, half each (gamma ~ U(0.8, 1.2), beta ~ N(0, 0.5))
        from .stimuli import natural_movie
        nat = natural_movie(history + 149, (h, w), seed=rng.integers(2**31), n_images=2).movie
        calib = np.concatenate([(nat - nat.mean()) / nat.std(), rng.standard_normal((history + 149, h, w))])
        probe = cls(w1, np.ones((c1, 1, 1)), np.zeros((c1, 1, 1)), w2, np.ones((c2, 1, 1)), np.zeros((c2, 1, 1)),
                    w3, np.ones(n_cells), np.zeros(n_cells), frame_shape=(h, w))
        n_cal = history + 149
        corr1 = np.concatenate([probe.layer1(calib[:n_cal], dtype=np.float64),
                                probe.layer1(calib[n_cal:], dtype=np.float64)])

        def fold(pre, beta_sd):
            axes = (0,) if per_unit else (0, 2, 3)
            mean = pre.mean(axis=axes, keepdims=True)[0]
            sd = pre.std(axis=axes, keepdims=True)[0] + 1e-6
            n_ch = pre.shape[1]
            scale = rng.uniform(0.8, 1.2, (n_ch, 1, 1)) / sd
            shift = rng.normal(0.0, beta_sd, (n_ch, 1, 1)) - mean * scale
            return scale, shift

        scale1, shift1 = fold(corr1, 0.5)
        h1a = np.ascontiguousarray(np.maximum(scale1 * corr1 + shift1, 0))
        corr2 = np.empty((h1a.shape[0], c2, h2, wd2))
        _backend.resolve("cpu").kernels.corr2d(h1a, w2, corr2)
        scale2, shift2 = fold(corr2, 0.5)
        drive = np.maximum(scale2 * corr2 + shift2, 0).reshape(corr2.shape[0], -1) @ w3.T
        scale3 = rng.uniform(1.5, 2.5, n_cells) / (drive.std(axis=0) + 1e-6)
        shift3 = rng.uniform(1.0, 2.5, n_cells) - drive.mean(axis=0) * scale3
        return cls(w1, scale1, shift1, w2, scale2, shift2, w3, scale3, shift3, frame_shape=(h, w),
                   metadata={"origin": "RetinaCNN.random", "seed": int(seed) if seed is not None else -1})

    # --------------------------------------------------------------- properties
    @property
    def arrays(self):
        """The nine parameter arrays by name (float64 master copies)."""
        return {k: getattr(self, k) for k in self._ARRAYS}

    @property
    def per_channel(self):
        """True when all four scale/shift arrays of layers 1 and 2 are per channel."""
        return all(getattr(self, k).shape[1:] == (1, 1) for k in ("scale1", "shift1", "scale2", "shift2"))

    def __repr__(self):
        c1, h1, w1 = self.shape1
        c2, h2, w2 = self.shape2
        return (f"RetinaCNN(n_cells={self.n_cells}, frame={self.frame_shape}, history={self.history}, "
                f"conv1={c1}@{self.w1.shape[2]}x{self.w1.shape[3]} -> ({c1},{h1},{w1}), "
                f"conv2={c2}@{self.w2.shape[2]}x{self.w2.shape[3]} -> ({c2},{h2},{w2}))")

    def params(self, dtype, be):
        """Kernel-ready parameters in ``dtype`` on backend ``be`` (cached).

        Scale/shift are broadcast per unit; ``v3 = scale3 * w3`` reshaped to
        ``(n_cells, C2, H2, W2)``.
        """
        key = (np.dtype(dtype).str, be.name)
        if key not in self._cache:
            def dev(a):
                return be.asarray(np.ascontiguousarray(a, dtype=dtype))
            p = {
                "w1": dev(self.w1), "w2": dev(self.w2),
                "scale1": dev(np.broadcast_to(self.scale1, self.shape1)),
                "shift1": dev(np.broadcast_to(self.shift1, self.shape1)),
                "scale2": dev(np.broadcast_to(self.scale2, self.shape2)),
                "shift2": dev(np.broadcast_to(self.shift2, self.shape2)),
                "v3": dev((self.scale3[:, None] * self.w3).reshape((self.n_cells,) + self.shape2)),
                "w3": dev(self.w3), "scale3": dev(self.scale3), "shift3": dev(self.shift3),
            }
            self._cache[key] = p
        return self._cache[key]

    # ------------------------------------------------------------------ checks
    def check_movie(self, movie, name="movie", *, dtype=None, xp=np, min_frames=None):
        """Validate a movie ``(T, H, W)`` for this model and return it in the compute dtype."""
        h, w = self.frame_shape
        min_frames = self.history if min_frames is None else min_frames
        arr = as_float_array(name, movie, ndim=3, dtype=compute_dtype(dtype), xp=xp)
        if arr.shape[1:] != (h, w):
            raise ValueError(f"{name} must have frames of {h}x{w} pixels (shape (T, {h}, {w})), "
                             f"got {describe(arr)}")
        if arr.shape[0] < min_frames:
            raise ValueError(f"{name} must have at least {min_frames} frames (the model's history), "
                             f"got {describe(arr)}")
        return arr

    # ----------------------------------------------------------------- forward
    def layer1(self, movie, *, dtype=None, backend="cpu", method="auto", chunk=512):
        """Layer-1 correlation ``corr(movie, w1)`` for every window: ``(T - history + 1, C1, H1, W1)``.

        ``method``: ``"direct"`` (Numba loops), ``"fft"`` (3-D FFT in time
        chunks) or ``"auto"``.  A movie that is exactly uniform in space
        (full field) or along rows is filtered in 1-D and broadcast (docs/spec.md
        section 4); the result is the same.
        """
        check_choice("method", method, CORR_METHODS)
        be = _backend.resolve(backend, movie)
        x = self.check_movie(movie, dtype=compute_dtype(dtype), xp=be.xp)
        out = self._layer1(x, be, method, chunk)
        return out if _backend._is_device_array(movie) else be.to_host(out)   # NumPy in, NumPy out

    def _layer1(self, x, be, method="auto", chunk=512):
        xp = be.xp
        c1, h1, wd1 = self.shape1
        n_win = x.shape[0] - self.history + 1
        w1 = self.params(x.dtype, be)["w1"]
        invariance = movie_invariance(x, xp)
        if invariance == "space":
            k = w1.sum(axis=(2, 3))                              # (C1, K)
            frames = x[:, 0, 0]
            win = xp.lib.stride_tricks.sliding_window_view(frames, self.history)
            out = win @ k.T                                       # (N, C1)
            return xp.ascontiguousarray(xp.broadcast_to(out[:, :, None, None], (n_win, c1, h1, wd1)))
        if invariance == "rows":
            kr = xp.ascontiguousarray(w1.sum(axis=2)[:, :, None, :])  # (C1, K, 1, kw)
            sub = xp.ascontiguousarray(x[:, :1, :])
            out = xp.empty((n_win, c1, 1, wd1), dtype=x.dtype)
            self._corr3d(sub, kr, out, be, method, chunk)
            return xp.ascontiguousarray(xp.broadcast_to(out, (n_win, c1, h1, wd1)))
        live = self._cache.get("live1")
        if live is None:   # channels with a nonzero kernel (pruned and ablated models zero the others)
            live = self._cache["live1"] = np.flatnonzero(np.abs(self.w1).reshape(c1, -1).max(axis=1) > 0)
        if len(live) == c1:
            out = xp.empty((n_win, c1, h1, wd1), dtype=x.dtype)
            return self._corr3d(x, w1, out, be, method, chunk)
        out = xp.zeros((n_win, c1, h1, wd1), dtype=x.dtype)   # a zero kernel correlates to exactly 0
        if len(live):
            idx = be.asarray(live)
            sub = xp.empty((n_win, len(live), h1, wd1), dtype=x.dtype)
            out[:, idx] = self._corr3d(x, xp.ascontiguousarray(w1[idx]), sub, be, method, chunk)
        return out

    def _corr3d(self, x, w, out, be, method, chunk):
        if method == "direct" or (method == "auto" and out.shape[0] < _FFT_MIN_WINDOWS):
            be.kernels.corr3d_movie(x, w, out)
        else:
            cache = self._cache.setdefault(("fft", be.name, w.dtype.str, w.shape), {})
            be.kernels.corr3d_movie_fft(x, w, out, chunk=chunk, cache=cache)
        return out

    def _head(self, corr1, p, be, method="auto"):
        """Layers 1 (affine+ReLU) to 3 from the layer-1 correlation (overwritten); returns rates (N, n_cells).

        ``method`` of the layer-2 correlation: ``"direct"``, ``"fft"`` or ``"auto"`` (FFT for
        kernels of 6x6 taps or more, whatever the number of windows).
        """
        xp, kern = be.xp, be.kernels
        n = corr1.shape[0]
        h1 = kern.affine_relu(corr1, p["scale1"], p["shift1"], corr1)   # in place: corr1 is not needed again
        corr2 = xp.empty((n,) + self.shape2, dtype=corr1.dtype)
        taps = p["w2"].shape[2] * p["w2"].shape[3]
        if method == "fft" or (method == "auto" and taps >= _FFT2_MIN_TAPS):
            kern.corr2d_fft(h1, p["w2"], corr2)
        else:
            kern.corr2d(h1, p["w2"], corr2)
        kern.affine_relu(corr2, p["scale2"], p["shift2"], corr2)
        drive = xp.empty((n, self.n_cells), dtype=corr1.dtype)
        kern.dense(corr2.reshape(n, -1), p["w3"], drive)
        return softplus(drive * p["scale3"] + p["shift3"], xp)

    def predict(self, movie: ArrayLike, *, backend: str = "auto", dtype=None, batch: int | None = None,
                layer1_method: str = "auto", layer2_method: str = "auto", progress: bool = False,
                units: str = "model") -> Any:
        """Firing rates (Hz) for every window of a movie.

        Parameters
        ----------
        movie : array (T, H, W)
            Movie in the model's units (its training stimulus z-scored with
            ``norm_stats``; :meth:`rates` takes contrast units), time first;
            ``T >= history``.
        backend : {"auto", "cpu", "gpu"}
        dtype : {None, float32, float64}
            Compute type; default float32.
        batch : int, optional
            Windows per kernel call (bounds memory); default :meth:`default_batch`
            (537 for a 40-frame history).  Long movies
            run faster with larger batches (2048: 1.5x for 18,000 frames, ~0.7 GB).
        layer1_method, layer2_method : {"auto", "direct", "fft"}
            Direct loops or FFT for each layer's correlation; ``"auto"`` takes
            FFT for layer 1 from a few windows and for layer 2 (6x6 kernels or
            larger) from 1,024 windows per call.  They agree to float rounding.
        units : {"model", "contrast", "intensity"}
            The units of ``movie`` (default: already in the model's units);
            others are converted with ``norm_stats`` (:meth:`to_model_units`).

        Returns
        -------
        rates : array (T - history + 1, n_cells)
            Row ``i`` is the response to frames ``[i, i + history)``, in response
            bin ``i + history - 1 + response_offset`` (:meth:`window_bins`).
            NumPy in, NumPy out; CuPy in, CuPy out.
        """
        be = _backend.resolve(backend, movie)
        batch = self.default_batch() if batch is None else check_int("batch", batch, minimum=1)
        check_choice("layer1_method", layer1_method, CORR_METHODS)
        check_choice("layer2_method", layer2_method, CORR_METHODS)
        check_choice("units", units, _units.UNITS)
        if units != "model":
            movie = self.to_model_units(movie, units, xp=be.xp if _backend._is_device_array(movie) else np)
        x = self.check_movie(movie, dtype=compute_dtype(dtype), xp=be.xp)
        p = self.params(x.dtype, be)
        n_win = x.shape[0] - self.history + 1
        out = be.xp.empty((n_win, self.n_cells), dtype=x.dtype)
        starts = range(0, n_win, batch)
        bar = None
        if progress:
            from ._progress import progress_bar
            bar = progress_bar(None, total=len(starts), desc="predict", unit="batch")

        stop = threading.Event()      # set when a batch fails (Ctrl-C): the other threads end after their batch

        def batches(lo, hi):
            for n0 in starts[lo:hi]:
                if stop.is_set():
                    return
                nb = min(batch, n_win - n0)
                corr1 = self._layer1(x[n0:n0 + nb + self.history - 1], be, layer1_method, chunk=batch)
                out[n0:n0 + nb] = self._head(corr1, p, be, layer2_method)
                if bar is not None:
                    bar.update(1)

        if be.name == "cpu" and len(starts) > 1 and _threads.get_num_threads() > 1:
            _threads.run_chunks(len(starts), lambda lo, hi: _serial_batches(batches, lo, hi), stop=stop)
        else:
            batches(0, len(starts))
        if bar is not None:
            bar.close()
        _check_finite(out, x, "rates")
        return out if _backend._is_device_array(movie) else be.to_host(out)   # NumPy in, NumPy out

    def default_batch(self, windows: int = 512) -> int:
        """Windows per :meth:`predict` call: at least ``windows``, as many as the time FFT of that call holds.

        A call of ``n`` windows transforms ``n + history - 1`` frames padded to a
        fast FFT length; this is the ``n`` that fills the fast length next to
        ``windows + history - 1`` exactly (537 for a 40-frame history: 576
        frames, where 512 windows would leave 25 frames of padding, ~5 % of the
        layer-1 transforms spent on nothing).
        """
        from scipy.fft import next_fast_len

        return int(next_fast_len(windows + self.history - 1, real=True)) - (self.history - 1)

    @property
    def grey(self) -> float:
        """The grey screen (contrast 0) in the model's units."""
        return _units.grey_level(self.norm_stats, self.input_units)

    def to_model_units(self, movie: Any, units: str = "contrast", *, xp=np, name: str = "movie") -> Any:
        """``movie`` in ``units`` ("contrast", "intensity" or "model") converted to the model's units (float32
        for the first two); warns when it reaches beyond :data:`retina.units.TRAINING_RANGE_SD` training s.d."""
        check_choice("units", units, _units.UNITS)
        if units == "model":
            movie = xp.asarray(movie)
            z = movie if movie.dtype.kind == "f" else movie.astype(np.float32)
        else:
            z = _units.to_model_units(movie, self.norm_stats, xp, units=units, input_units=self.input_units)
        _warn_range(z, xp, name, units)
        return z

    def padded(self, movie: Any, *, units: str = "contrast", xp=np) -> Any:
        """The movie in model units, preceded by grey frames, so that row ``t`` of :meth:`predict` on it is the
        response in bin ``t`` of the movie.

        ``units``: ``"contrast"`` (Weber contrast), ``"intensity"`` (raw pixel
        values, for models fitted on a lab file) or ``"model"``; see
        :mod:`retina.units`.  Bin ``t`` is predicted by the window ending
        ``response_offset`` frames earlier, so ``history - 1 +
        response_offset`` grey frames lead and the last ``response_offset``
        frames are not needed.
        """
        movie = xp.asarray(movie)
        if movie.ndim != 3:
            raise ValueError(f"movie must have 3 dimensions (T, H, W), got shape {tuple(movie.shape)}")
        z = self.to_model_units(movie, units, xp=xp)
        keep = max(len(z) - self.response_offset, 0)
        lead = xp.full((self.history - 1 + len(z) - keep,) + tuple(z.shape[1:]), self.grey, dtype=z.dtype)
        return xp.concatenate([lead, z[:keep]])

    def rates(self, movie: ArrayLike, *, units: str = "contrast", **kwargs) -> Any:
        """Firing rates (Hz) aligned with the movie's frames: ``(T, n_cells)``, row ``t`` = response bin ``t``.

        ``movie`` is in contrast units (0 = grey, -1 = black) unless ``units``
        says otherwise, and is converted with the model's ``norm_stats``
        (:meth:`to_model_units`).  The movie is preceded by grey frames, as
        if the retina had been looking at grey, and bin ``t`` is predicted
        by the window ending at frame ``t - response_offset`` (:meth:`padded`).
        This is the interface the phenomena expect (the in-silico retina has
        the same method).  Keyword arguments go to :meth:`predict`.
        """
        # padded on the movie's side: a NumPy movie gives NumPy rates whichever backend computes them
        return self.predict(self.padded(movie, units=units, xp=_backend.array_module(movie)), **kwargs)

    def window_bins(self, n_windows: int) -> np.ndarray:
        """The response bin (frame index) each of :meth:`predict`'s rows belongs to."""
        return np.arange(n_windows) + self.history - 1 + self.response_offset

    # ---------------------------------------------------------------------- io
    def save(self, path, **kwargs):
        """Write the model to an HDF5 file, atomically: :func:`retina.io.save_model`."""
        from .io import save_model

        return save_model(self, path, **kwargs)

    def content_hash(self):
        """SHA-256 over the architecture and the parameter arrays: :func:`content_hash`."""
        return content_hash(self)


def _serial_batches(fn, lo, hi):
    """``fn(lo, hi)`` with this thread's kernels on this thread alone: :meth:`RetinaCNN.predict` hands whole
    batches to the kernel threads on the CPU, one region for the movie instead of about five per batch (a
    6,000-frame forward 0.56 -> 0.52 s quiet, 0.94 -> 0.71 s with one competing process, 2-core EPYC; the same
    bits, each batch's transforms being single-threaded pieces either way)."""
    with _threads.serial():
        fn(lo, hi)


def _check_finite(out, x, what):
    """A result that overflowed is an error naming the input's magnitude, never silent NaN or inf
    (``out`` and ``x`` each on the host or the device)."""
    if out.size and not bool(_backend.array_module(out).isfinite(out).all()):
        reach = float(_backend.array_module(x).abs(x).max()) if x.size else 0.0
        raise FloatingPointError(f"the {what} are not finite: the movie reaches {reach:.3g} in model units, beyond "
                                 f"what {x.dtype} arithmetic carries through the network; give a stimulus in the "
                                 "model's range (or dtype=float64)")


def _warn_range(z, xp, name, units):
    """Warn (once per call) when a model-unit movie reaches far outside the training stimulus' range."""
    import warnings

    if z.size == 0 or z.dtype.kind != "f":
        return
    reach = float(xp.abs(z).max())
    if reach > _units.TRAINING_RANGE_SD and np.isfinite(reach):
        warnings.warn(f"{name} reaches {reach:.3g} training-stimulus s.d. from the training mean (given in "
                      f"{units} units); the model was never fitted there, its output is an extrapolation",
                      RuntimeWarning, stacklevel=3)


def content_hash(model) -> str:
    """SHA-256 over the architecture and every parameter array (as little-endian float64, C order)."""
    import hashlib
    import json

    h = hashlib.sha256()
    h.update(json.dumps({"frame_shape": list(model.frame_shape), "history": model.history}).encode())
    for name in PARAM_NAMES:
        a = np.ascontiguousarray(getattr(model, name), dtype="<f8")
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def movie_invariance(x, xp=np):
    """``"space"`` if every frame is uniform, ``"rows"`` if every column is uniform, else ``None``."""
    if x.shape[1] > 1 or x.shape[2] > 1:
        if bool((x == x[:, :1, :1]).all()):
            return "space"
    if x.shape[1] > 1 and bool((x == x[:, :1, :]).all()):
        return "rows"
    return None
