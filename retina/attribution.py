"""Path-integrated gradients to the stimulus and to hidden units (docs/spec.md sections 3 and 4).

Along the straight path ``s(a) = s0 + a (s - s0)`` the layer-1 pre-activation
is affine in ``a``, so it is computed once per window, not once per step.
Each layer-1 unit switches its ReLU at most once along the path, so the
layer-2 input is kept as ``P + a Q`` and updated only where a unit switches
(see :func:`retina.kernels.cpu.pig_conv_relu_dense`); the backward map through
layer 2 is updated likewise.  Input IG needs one transposed correlation of the
path-averaged layer-1 gradient per window, after the path average.

Quadrature and ReLU kinks: the integrand jumps wherever a ReLU switches, so
derivatives taken at the nodes converge only as ``1/K`` (``kinks="node"``).
By default (``kinks="secant"``) each node owns a cell of the path and every
ReLU derivative is the ReLU's secant slope over that cell; the units' exact
increments then telescope, and only the readout's smooth softplus is left to
the quadrature rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from . import _backend
from ._validate import as_float_array, check_choice, check_int, compute_dtype, describe
from .model import RetinaCNN, movie_invariance

__all__ = ["Attribution", "attribute", "quadrature", "quadrature_cells", "LAYERS", "METHODS", "KINKS"]

LAYERS = ("input", "conv1", "conv2")
METHODS = ("midpoint", "trapezoid", "left", "right", "gauss-legendre")
KINKS = ("secant", "node")
POOLS = {"space": (1, 2), "rows": (1,)}
MAX_STEPS = 100_000
"""Most quadrature steps: the secant rule's error falls as steps**-2, so 1e5 steps are already exact in float64."""


def quadrature(n_steps, method="midpoint"):
    """Nodes ``a_k`` in [0, 1] and weights for ``integral_0^1 f(a) da``.

    ``midpoint``: ``(k + 1/2) / n``; ``left``: ``k / n``; ``right``: ``(k + 1) / n``
    (the authors' right Riemann sum); ``trapezoid``: ``n + 1`` nodes ``k / n``;
    ``gauss-legendre``: ``n`` Gauss-Legendre nodes mapped to [0, 1].
    """
    n = check_int("n_steps", n_steps, minimum=1, maximum=MAX_STEPS)
    check_choice("method", method, METHODS)
    k = np.arange(n, dtype=np.float64)
    if method == "midpoint":
        return (k + 0.5) / n, np.full(n, 1.0 / n)
    if method == "left":
        return k / n, np.full(n, 1.0 / n)
    if method == "right":
        return (k + 1.0) / n, np.full(n, 1.0 / n)
    if method == "trapezoid":
        a = np.arange(n + 1, dtype=np.float64) / n
        w = np.full(n + 1, 1.0 / n)
        w[0] = w[-1] = 0.5 / n
        return a, w
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, w / 2.0


def quadrature_cells(alphas, weights):
    """Each node's cell of [0, 1]: boundaries ``c`` (K+1,), ``c[k+1] - c[k] = weights[k]``.

    The cells tile [0, 1] in node order and each node lies in its own cell
    (for every rule of :func:`quadrature`; for Gauss-Legendre this is the
    separation theorem of Chebyshev, Markov and Stieltjes).
    """
    c = np.concatenate([[0.0], np.cumsum(weights)])
    c[-1] = 1.0
    tol = 1e-12
    if not (np.all(np.diff(alphas) > 0) and np.all(c[:-1] - tol <= alphas) and np.all(alphas <= c[1:] + tol)):
        raise ValueError("quadrature nodes must increase and each lie in its cell of cumulative weights")
    return c


@dataclass
class Attribution:
    """Result of :func:`attribute`.

    Attributes
    ----------
    values : ndarray
        ``conv1``: ``(windows, outputs, C1, H1, W1)``; ``conv2``: ``(windows, outputs, C2, H2, W2)``;
        pooled axes are summed away (``pool="space"`` gives ``(windows, outputs, C)``,
        ``"rows"`` gives ``(windows, outputs, C, W')``).  ``input``: accumulated onto the
        movie's frames, ``(outputs, T, H, W)`` (pooled likewise over ``H``/``W``).
    delta : ndarray (windows, outputs)
        Completeness error ``sum(A) - (r(s) - r(s0))`` per window.
    response, baseline_response : ndarray (windows, outputs)
        ``r(s)`` and ``r(s0)`` of each attributed output (a cell or a weighted sum of cells).
    cell_weights : ndarray (outputs, n_cells)
        Which cells each output sums, with what weight.
    per_window : ndarray or None
        Input IG per window ``(windows, outputs, history, H, W)`` when ``keep_windows=True``.
    path : str
        ``"general"``, ``"general+collapsed-layer1-space|rows"`` (layer 1 by a 1-D
        filter) or ``"collapsed-space|rows"`` (the whole network collapsed).
    """

    values: np.ndarray
    delta: np.ndarray
    response: np.ndarray
    baseline_response: np.ndarray
    cell_weights: np.ndarray
    layer: str
    n_steps: int
    method: str
    pool: tuple | None
    path: str
    backend: str
    dtype: str
    history: int
    per_window: np.ndarray | None = None
    settings: dict = field(default_factory=dict)
    response_offset: int = 1

    @property
    def window_frames(self):
        """The response bin (frame index) each window's response belongs to: its newest frame plus the
        model's ``response_offset``."""
        return np.arange(self.delta.shape[0]) + self.history - 1 + self.response_offset

    @property
    def relative_delta(self):
        """Largest ``|delta|`` over the response range ``max r(s) - min r(s)``, worst output.

        ``nan`` for fewer than two windows (no range).
        """
        if self.delta.shape[0] < 2:
            return float("nan")
        span = np.ptp(self.response, axis=0)
        return float((np.abs(self.delta).max(axis=0) / np.maximum(span, 1e-300)).max())

    def save(self, path):
        """Write values, completeness errors and settings to HDF5, atomically (:func:`retina.io.save_attribution`)."""
        from .io import save_attribution

        return save_attribution(self, path)


# ----------------------------------------------------------------- arguments
def _cell_weights(cells, n_cells):
    """(outputs, n_cells) weights from None / int / list of ints / weight vector."""
    if cells is None:
        return np.eye(n_cells)
    if isinstance(cells, (int, np.integer)) and not isinstance(cells, bool):
        idx = check_int("cells", cells, minimum=-n_cells, maximum=n_cells - 1)
        return np.eye(n_cells)[[idx]]
    arr = np.asarray(cells)
    if arr.ndim == 1 and arr.size and arr.dtype.kind in "iu":
        if arr.min() < -n_cells or arr.max() >= n_cells:
            raise ValueError(f"cells must index the model's {n_cells} cells, got {cells!r}")
        return np.eye(n_cells)[arr]
    if arr.ndim == 1 and arr.dtype.kind == "f":
        if arr.shape != (n_cells,):
            raise ValueError(f"cells as a weight vector must have shape ({n_cells},), got {describe(arr)}")
        w = as_float_array("cells", arr, dtype=np.float64)
        return w[None, :]
    raise ValueError("cells must be None, a cell index, a list of cell indices or a float weight vector of "
                     f"length {n_cells}, got {describe(cells)}")


def _pool_axes(pool):
    if pool is None:
        return None
    if isinstance(pool, str):
        check_choice("pool", pool, tuple(POOLS))
        return POOLS[pool]
    try:
        given = [a for a in pool]
        if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) and -3 <= a <= 2 for a in given):
            raise ValueError
        axes = tuple(sorted({int(a) % 3 for a in given}))
    except (TypeError, ValueError):
        raise ValueError(f"pool must be None, 'space', 'rows' or a tuple of axes of (C, H, W) (0..2 or -3..-1), "
                         f"got {pool!r}") from None
    return axes or None


def _baseline(baseline, movie, model, dtype, xp=np):
    if baseline is None:
        return xp.zeros_like(movie)
    if np.isscalar(baseline) and not isinstance(baseline, (str, bytes)):
        value = float(baseline)
        if not np.isfinite(value):
            raise ValueError(f"baseline must be finite, got {baseline!r}")
        return xp.full_like(movie, value)
    base = model.check_movie(baseline, "baseline", dtype=dtype, xp=xp)
    if base.shape != movie.shape:
        raise ValueError(f"baseline must be None, a scalar or a movie of the stimulus' shape {movie.shape}, "
                         f"got {describe(base)}")
    return base


def _invariant_along(a, axes):
    return all(a.shape[ax] == 1 or np.ptp(a, axis=ax).max() == 0 for ax in axes)


def _collapse(model, kind):
    """An equivalent model on frames collapsed along the invariant axes (docs/spec.md section 4)."""
    n = model.n_cells
    c2, h2, w2 = model.shape2
    if kind == "space":
        frame = (1, 1)
        take = (slice(None), slice(0, 1), slice(0, 1))
        sum_axes = (2, 3)
        w3 = model.w3.reshape(n, c2, h2, w2).sum(axis=(2, 3)).reshape(n, -1)
    else:
        frame = (1, model.frame_shape[1])
        take = (slice(None), slice(0, 1), slice(None))
        sum_axes = (2,)
        w3 = model.w3.reshape(n, c2, h2, w2).sum(axis=2).reshape(n, -1)
    return RetinaCNN(model.w1.sum(axis=sum_axes, keepdims=True), model.scale1[take], model.shift1[take],
                     model.w2.sum(axis=sum_axes, keepdims=True), model.scale2[take], model.shift2[take],
                     w3, model.scale3, model.shift3, frame_shape=frame, response_offset=model.response_offset)


# ------------------------------------------------------------------- entry
def attribute(model: RetinaCNN, movie: ArrayLike, *, layer: str = "conv1", cells=None, n_steps: int = 50,
              method: str = "midpoint", baseline=None, pool: str | tuple | None = None, backend: str = "auto",
              batch: int | None = None, progress: bool = False, keep_windows: bool = False, dtype=None,
              kinks: str = "secant", client=None, units: str = "model") -> Attribution:
    """Integrated gradients of model responses to the stimulus or to hidden units.

    Parameters
    ----------
    model : RetinaCNN
    movie : array (T, H, W)
        Stimulus; every window of ``history`` frames is attributed.
    layer : {"input", "conv1", "conv2"}
        ``input``: Eq. 1 of Tanaka et al.; ``conv1``/``conv2``: Eq. 2
        (path-integrated conductance of the units' pre-activations).
    cells : None, int, list of int, or float array (n_cells,)
        None attributes every cell separately; a weight vector attributes the weighted sum.
    n_steps : int
        Quadrature steps (``trapezoid`` evaluates ``n_steps + 1`` nodes).
    method : {"midpoint", "trapezoid", "left", "right", "gauss-legendre"}
    baseline : None, float, or array like ``movie``
        None is the mean-grey (zero) movie.
    pool : None, "space", "rows", or tuple of axes of (C, H, W)
        Sum the attributions over these unit axes (for ``input``: over ``H``/``W``).
    backend : {"auto", "cpu", "gpu"}
    batch : int, optional
        Windows per kernel call; bounds memory (default 64).
    progress : bool
        Show a progress bar.
    keep_windows : bool
        For ``layer="input"``, also keep each window's attribution in ``per_window``.
    dtype : {None, float32, float64}
        Compute type; default float32.
    kinks : {"secant", "node"}
        How the quadrature treats ReLU kinks that fall between nodes.  Each
        node ``a_k`` owns the cell ``[c_k, c_{k+1}]`` of length ``weight_k``
        (cumulative weights; for midpoint ``[k/n, (k+1)/n]``).  ``"secant"``
        (default) replaces every ReLU derivative at the node by the ReLU's
        secant slope over the cell, ``(relu(z(c_{k+1})) - relu(z(c_k))) /
        (z(c_{k+1}) - z(c_k))``, and the softplus derivative is taken at the
        node: the rule is unchanged wherever no unit switches inside a cell,
        the kinks cost no error, and ``delta`` falls as ``n_steps**-2`` (about
        1e-6 of the response range at 50 midpoint steps on random models,
        against 1e-3..1e-2 for ``"node"``).  ``"node"`` takes every derivative
        at the node, the textbook Riemann sum; with ``method="right"`` it is
        the authors' formula ``sum_k g(a_k) (z(a_k) - z(a_{k-1}))``.
    units : {"model", "contrast", "intensity"}
        The units of ``movie`` and of an array or scalar ``baseline`` (default:
        the model's own); others are converted with its ``norm_stats``
        (:meth:`retina.RetinaCNN.to_model_units`).  The attributions are
        always to the model-unit stimulus.
    client : dask.distributed.Client, optional
        Shard the windows across the cluster's workers (batches of ``batch``
        windows, grouped into tasks of about a second; the model and movie
        are sent to each worker once) and gather them in window order: the
        same arrays as the in-process run.  NumPy input, CPU kernels on the
        workers.

    Returns
    -------
    Attribution
        ``values`` satisfy completeness: for each window, ``sum(values) -
        (r(s) - r(s0)) = delta``, which shrinks as ``n_steps`` grows.
    """
    if not isinstance(model, RetinaCNN):
        raise ValueError(f"model must be a RetinaCNN, got {type(model).__name__}")
    check_choice("layer", layer, LAYERS)
    check_choice("kinks", kinks, KINKS)
    alphas, weights = quadrature(n_steps, method)
    bounds = quadrature_cells(alphas, weights) if kinks == "secant" else np.empty(0)
    from .distributed import check_client

    client = check_client(client)
    be = _backend.resolve("cpu" if client is not None and backend == "auto" else backend, movie)
    on_device = _backend._is_device_array(movie)
    if client is not None and (on_device or be.name != "cpu"):
        raise ValueError(f"client= runs the CPU kernels on the workers: pass a NumPy movie and backend='cpu' or "
                         f"'auto', got backend {backend!r} with a {type(movie).__module__} array")
    dt = compute_dtype(dtype)
    batch = 64 if batch is None else check_int("batch", batch, minimum=1)
    check_choice("units", units, ("model", "contrast", "intensity"))
    if units != "model":
        movie = model.to_model_units(movie, units, xp=be.xp if on_device else np)
        if baseline is not None:
            baseline = model.to_model_units(np.asarray(baseline, np.float32) if np.isscalar(baseline) else baseline,
                                            units, xp=be.xp if on_device else np, name="baseline")
            baseline = float(baseline) if np.ndim(baseline) == 0 else baseline
    x = model.check_movie(movie, dtype=dt, xp=be.xp if on_device else np)
    xp_in = be.xp if on_device else np
    x0 = _baseline(baseline, x, model, dt, xp_in)
    cw = _cell_weights(cells, model.n_cells)
    axes = _pool_axes(pool)
    if keep_windows and layer != "input":
        raise ValueError("keep_windows=True applies to layer='input' only")

    # invariance shortcuts: collapse the network along axes that are both invariant and pooled
    path = "general"
    work_model, xs, x0s = model, x, x0
    inv = movie_invariance(xp_in.concatenate([x, x0]), xp_in)
    if inv is not None:
        path = f"general+collapsed-layer1-{inv}"
        for kind in (("space", "rows") if inv == "space" else ("rows",)):
            need = POOLS[kind]
            if (layer != "input" and axes is not None and set(need) <= set(axes)
                    and all(_invariant_along(getattr(model, k), need)
                            for k in ("scale1", "shift1", "scale2", "shift2"))):
                work_model = _collapse(model, kind)
                take = (slice(None), slice(0, 1), slice(0, 1) if kind == "space" else slice(None))
                xs, x0s = xp_in.ascontiguousarray(x[take]), xp_in.ascontiguousarray(x0[take])
                path = f"collapsed-{kind}"
                break

    result = _run(work_model, xs, x0s, cw, (alphas, weights, bounds), layer, axes, be, batch, progress,
                  keep_windows, client)
    values, delta, r1, r0, per_window = result
    from .model import _check_finite

    _check_finite(np.concatenate([np.ravel(delta), np.ravel(r1), np.ravel(r0)]), xs, "attributions' responses")
    _check_finite(values, xs, "attributions")
    if not on_device:  # NumPy in, NumPy out (CuPy in, CuPy out)
        values = be.to_host(values)
        per_window = None if per_window is None else be.to_host(per_window)
    base_setting = 0.0 if baseline is None else (float(baseline) if np.isscalar(baseline) else "movie")  # type: ignore[arg-type]
    return Attribution(values=values, delta=delta, response=r1, baseline_response=r0, cell_weights=cw,
                       layer=layer, n_steps=int(n_steps), method=method, pool=axes, path=path,
                       backend=be.name, dtype=dt.name, history=model.history, per_window=per_window,
                       settings={"baseline": base_setting, "kinks": kinks, "units": units},
                       response_offset=model.response_offset)


@dataclass
class _Job:
    """Everything one batch of windows needs (scattered once to a cluster's workers)."""

    model: RetinaCNN
    x: object
    x0: object
    cw: np.ndarray
    rule: tuple
    layer: str
    axes: tuple | None
    batch: int
    keep_windows: bool
    constant_baseline: bool
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def n_windows(self):
        return self.x.shape[0] - self.model.history + 1

    def prepared(self, be):
        """Parameters, involved cells and the grey start, made once per process and backend."""
        got = self.cache.get(be.name)
        if got is None:
            p = self.model.params(self.x.dtype, be)
            involved = np.flatnonzero(np.abs(self.cw).sum(axis=0) > 0)
            z_const = None
            if self.constant_baseline:
                hist = self.model.history
                z_const = be.xp.ascontiguousarray(self.model._layer1(be.asarray(self.x0[:hist]), be) * p["scale1"]
                                                  + p["shift1"])
            got = self.cache[be.name] = (p, np.ascontiguousarray(self.cw[:, involved], dtype=np.float64),
                                         involved.astype(np.int64), z_const)
        return got


SUB_WINDOWS = 8
"""Windows per call of the CPU path-integration kernel.  Each window is computed independently, so the split
changes no result; it bounds a call to a fraction of a second even where every ReLU switches (a few tens of ms
per window), so the interpreter sees Ctrl-C between calls."""


def _sub_batches(nb, be):
    if be.name != "cpu" or nb <= SUB_WINDOWS:
        return [(0, nb)]
    cuts = list(range(0, nb, SUB_WINDOWS))
    if nb - cuts[-1] < 2:          # never a lone window: a shared baseline start needs at least two
        cuts.pop()
    return [(a, b) for a, b in zip(cuts, cuts[1:] + [nb])]


def _batch(n0, job, be=None):
    """Windows ``n0 .. n0 + batch`` of ``job``: a dict of this batch's pieces (see :func:`_run`)."""
    if be is None:
        be = _backend.resolve("cpu")
    kern, xp = be.kernels, be.xp
    model, hist = job.model, job.model.history
    p, cw_sub, cells_idx, z_const = job.prepared(be)
    alphas, weights, bounds = (np.ascontiguousarray(r, np.float64) for r in job.rule)
    x, x0 = be.asarray(job.x), be.asarray(job.x0)
    dt = x.dtype
    n_out = job.cw.shape[0]
    nb = min(job.batch, job.n_windows - n0)
    sl = slice(n0, n0 + nb + hist - 1)
    z_s = model._layer1(x[sl], be)
    z_s = z_s * p["scale1"] + p["shift1"]
    if z_const is None:
        z_0 = xp.ascontiguousarray(model._layer1(x0[sl], be) * p["scale1"] + p["shift1"])
    else:
        z_0 = z_const
    dz = xp.ascontiguousarray(z_s - z_0)
    still_all = None   # with a constant baseline: the windows whose frames all equal the baseline's
    if z_const is not None and nb > 1:
        same = (x[sl] == x0[sl]).reshape(nb + hist - 1, -1).all(axis=1)
        run = xp.concatenate([xp.zeros(1, dtype=np.int64), xp.cumsum(same.astype(np.int64))])
        still_all = (run[hist:] - run[:-hist]) == hist
        dz[still_all] = 0   # z(x) = z(x0) exactly, whatever rounding the whole movie's layer-1 correlation left
    g1 = xp.empty((nb, n_out) + model.shape1, dtype=dt)
    want_a2 = job.layer == "conv2"
    a2 = xp.empty((nb, n_out) + (model.shape2 if want_a2 else (1, 1, 1)), dtype=dt)
    r0 = np.empty((nb, len(cells_idx)), dtype=np.float64)
    r1 = np.empty((nb, len(cells_idx)), dtype=np.float64)
    shared = z_0.shape[0] == 1 and nb > 1
    for s0, s1 in _sub_batches(nb, be):   # short kernel calls: Ctrl-C is seen between them
        z0_part = z_0 if shared else z_0[s0:s1]
        args = (alphas, weights, bounds, p["w2"], p["scale2"], p["shift2"], p["v3"], p["shift3"], cw_sub,
                cells_idx)
        still = still_all[s0:s1] if still_all is not None else None   # set only with the shared baseline
        if still is None or int(still.sum()) < 2:
            kern.pig_conv_relu_dense(z0_part, dz[s0:s1], *args, g1[s0:s1], a2[s0:s1], r0[s0:s1], r1[s0:s1],
                                     want_a2)
            continue
        # windows that never leave the shared baseline (grey before and after a stimulus: dz = 0) all give one
        # result: the kernel runs on the others and on one of them, which is copied (bit for bit the same)
        keep = xp.concatenate([xp.flatnonzero(~still), xp.flatnonzero(still)[:1]])
        outs = (g1[s0:s1][keep], a2[s0:s1][keep], r0[s0:s1][be.to_host(keep)], r1[s0:s1][be.to_host(keep)])
        kern.pig_conv_relu_dense(z0_part, xp.ascontiguousarray(dz[s0:s1][keep]), *args, *outs, want_a2)
        src = xp.concatenate([xp.arange(len(keep) - 1), xp.full(int(still.sum()), len(keep) - 1)])
        dst = xp.concatenate([keep[:-1], xp.flatnonzero(still)])
        hsrc, hdst = be.to_host(src), be.to_host(dst)
        g1[s0:s1][dst] = outs[0][src]
        a2[s0:s1][dst] = outs[1][src]
        r0[s0:s1][hdst] = outs[2][hsrc]
        r1[s0:s1][hdst] = outs[3][hsrc]
    out = {"r1": r1 @ cw_sub.T, "r0": r0 @ cw_sub.T}
    a1 = a2 if want_a2 else dz[:, None] * g1       # the conductance whose sum is checked
    total = be.to_host(a1.reshape(nb, n_out, -1).sum(axis=2, dtype=np.float64))
    out["delta"] = total - (out["r1"] - out["r0"])
    if job.layer != "input":
        out["values"] = a1 if job.axes is None else a1.sum(axis=tuple(2 + ax for ax in job.axes))
        return out
    gbar = g1 * p["scale1"]                       # d out / d corr1, path-averaged
    grads = []
    per_window = xp.empty((nb, n_out, hist) + x.shape[1:], dtype=dt) if job.keep_windows else None
    for o in range(n_out):
        grad = xp.empty((nb + hist - 1,) + x.shape[1:], dtype=dt)
        kern.corr3d_movie_transpose_fft(xp.ascontiguousarray(gbar[:, o]), p["w1"], grad)
        grads.append(grad)
        if per_window is not None:
            diff = x[sl].astype(np.float64) - x0[sl]
            one = xp.empty((hist,) + x.shape[1:], dtype=dt)
            for b in range(nb):
                kern.corr3d_movie_transpose(xp.ascontiguousarray(gbar[b:b + 1, o]), p["w1"], one)
                per_window[b, o] = one * diff[b:b + hist]
    out["grads"] = grads
    out["per_window"] = per_window
    return out


def _run(model, x, x0, cw, rule, layer, axes, be, batch, progress, keep_windows, client=None):
    xp = be.xp
    x, x0 = be.asarray(x), be.asarray(x0)
    dt = x.dtype
    hist = model.history
    n_win = x.shape[0] - hist + 1
    n_out = cw.shape[0]
    # a constant baseline (grey) gives every window the same layer-1 start: the kernel gets it once
    constant = n_win > 1 and bool(xp.all(x0 == x0.reshape(-1)[0]))
    job = _Job(model, x, x0, cw, rule, layer, axes, batch, keep_windows, constant)

    delta = np.empty((n_win, n_out))
    r1_all = np.empty((n_win, n_out))
    r0_all = np.empty((n_win, n_out))
    values = None
    per_window = None
    space = tuple(ax for ax in (axes or ()) if ax > 0)       # pooled frame axes (1: rows, 2: columns)
    stream = layer == "input" and bool(space)                 # pool each batch's frames as they come
    if layer == "input":
        shape = tuple(d for i, d in enumerate(x.shape) if i not in space)
        from ._resources import check_memory

        check_memory(8 * n_out * int(np.prod(shape)) + (4 * n_win * n_out * hist * int(np.prod(x.shape[1:]))
                                                          if keep_windows else 0),
                     f"input-layer attributions of {n_out} outputs over {x.shape[0]} frames")
        values = xp.zeros((n_out,) + shape)
        if keep_windows:
            per_window = xp.empty((n_win, n_out, hist) + x.shape[1:], dtype=dt)
    starts = list(range(0, n_win, batch))

    def absorb(m0, got):
        """One batch's pieces, added in window order (the input layer's sums then do not depend on where the
        batches ran, :func:`retina.distributed.map_in_order`)."""
        nonlocal values
        nb = got["delta"].shape[0]
        r1_all[m0:m0 + nb], r0_all[m0:m0 + nb], delta[m0:m0 + nb] = got["r1"], got["r0"], got["delta"]
        if layer == "input":
            sl = slice(m0, m0 + nb + hist - 1)
            for o, grad in enumerate(got["grads"]):
                if stream:
                    values[o, sl] += (be.asarray(grad) * (x[sl].astype(np.float64) - x0[sl])).sum(axis=space)
                else:
                    values[o, sl] += be.asarray(grad)
            if per_window is not None:
                per_window[m0:m0 + nb] = be.asarray(got["per_window"])
        else:
            if values is None:
                values = xp.empty((n_win,) + got["values"].shape[1:], dtype=dt)
            values[m0:m0 + nb] = be.asarray(got["values"])

    from .distributed import map_in_order

    # in process the batches run on this backend; on a cluster each worker resolves its CPU kernels
    map_in_order(client, _batch, starts, shared=(job,) if client is not None else (job, be), commit=absorb,
                 desc=f"attribute {layer}", unit="batch", progress=progress,
                 label=lambda n0: f"windows {n0}..{min(n0 + batch, n_win) - 1}")
    if layer == "input":
        if not stream:
            values = values * (x.astype(np.float64) - x0)[None]
        values = values.astype(dt)
    return values, delta, r1_all, r0_all, per_window
