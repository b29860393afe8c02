"""Obviously-correct, slow float64 references that every fast path is tested against.

Written independently of the package: numpy einsum over sliding windows and
plain loops, no Numba, no FFT, no shared helpers.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view as swv


def corr3d_movie(x, w):
    """(T, H, W) x (C, K, kh, kw) -> (T-K+1, C, Ho, Wo)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    win = swv(x, w.shape[1:])  # (N, Ho, Wo, K, kh, kw)
    return np.einsum("nyxtuv,ctuv->ncyx", win, w)


def corr3d_movie_transpose(g, w, t_n, h, wd):
    g = np.asarray(g, np.float64)
    w = np.asarray(w, np.float64)
    n_win, c_n, ho, wo = g.shape
    out = np.zeros((t_n, h, wd))
    for n in range(n_win):
        for tau in range(w.shape[1]):
            for u in range(w.shape[2]):
                for v in range(w.shape[3]):
                    out[n + tau, u:u + ho, v:v + wo] += np.einsum("cyx,c->yx", g[n], w[:, tau, u, v])
    return out


def corr3d_movie_weight_grad(x, g, k, kh, kw):
    x = np.asarray(x, np.float64)
    win = swv(x, (k, kh, kw))  # (N, Ho, Wo, K, kh, kw)
    return np.einsum("ncyx,nyxtuv->ctuv", np.asarray(g, np.float64), win)


def corr2d(x, w):
    """(N, Ci, H, W) x (Co, Ci, kh, kw) -> (N, Co, Ho, Wo)."""
    win = swv(np.asarray(x, np.float64), w.shape[2:], axis=(2, 3))  # (N, Ci, Ho, Wo, kh, kw)
    return np.einsum("ncyxuv,ocuv->noyx", win, np.asarray(w, np.float64))


def corr2d_transpose(g, w, h, wd):
    g = np.asarray(g, np.float64)
    w = np.asarray(w, np.float64)
    n_b, co, ho, wo = g.shape
    out = np.zeros((n_b, w.shape[1], h, wd))
    for u in range(w.shape[2]):
        for v in range(w.shape[3]):
            out[:, :, u:u + ho, v:v + wo] += np.einsum("noyx,oc->ncyx", g, w[:, :, u, v])
    return out


def corr2d_weight_grad(x, g, kh, kw):
    win = swv(np.asarray(x, np.float64), (kh, kw), axis=(2, 3))
    return np.einsum("noyx,ncyxuv->ocuv", np.asarray(g, np.float64), win)


def batch_norm_relu(c, gamma, beta, noise, eps):
    """Training-mode batch norm over the batch axis, plus noise, then ReLU; returns (out, mean, var, xhat)."""
    c = np.asarray(c, np.float64)
    mean = c.mean(axis=0)
    var = ((c - mean) ** 2).mean(axis=0)
    xhat = (c - mean) / np.sqrt(var + eps)
    return np.maximum(gamma * xhat + beta + noise, 0), mean, var, xhat


def softplus(u):
    return np.logaddexp(0.0, u)


def sigmoid(u):
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def head(model, z1):
    """Layers 1 (ReLU) to 3 from pre-activations z1 (N, C1, H1, W1); returns (rates, cache)."""
    h1 = np.maximum(z1, 0)
    z2 = model.scale2 * corr2d(h1, model.w2) + model.shift2
    h2 = np.maximum(z2, 0)
    u = model.scale3 * (h2.reshape(len(z1), -1) @ model.w3.T) + model.shift3
    return softplus(u), (z1, z2, u)


def forward(model, movie):
    """Rates (T-history+1, n_cells) in float64."""
    z1 = model.scale1 * corr3d_movie(movie, model.w1) + model.shift1
    return head(model, z1)[0]


def grad_z1(model, z1, cellw):
    """d(sum_j cellw_j r_j)/dz1 for each row of z1 (N, C1, H1, W1); cellw (n_cells,)."""
    _, (z1, z2, u) = head(model, z1)
    g_u = sigmoid(u) * model.scale3 * cellw                      # (N, n)
    g_h2 = (g_u @ model.w3).reshape(z2.shape)
    g_z2 = g_h2 * (z2 > 0)
    g_h1 = corr2d_transpose(g_z2 * model.scale2, model.w2, z1.shape[2], z1.shape[3])
    return g_h1 * (z1 > 0), g_z2


def quadrature(n_steps, method):
    k = np.arange(n_steps)
    if method == "midpoint":
        return (k + 0.5) / n_steps, np.full(n_steps, 1.0 / n_steps)
    if method == "left":
        return k / n_steps, np.full(n_steps, 1.0 / n_steps)
    if method == "right":
        return (k + 1) / n_steps, np.full(n_steps, 1.0 / n_steps)
    if method == "trapezoid":
        a = np.arange(n_steps + 1) / n_steps
        wts = np.full(n_steps + 1, 1.0 / n_steps)
        wts[[0, -1]] /= 2
        return a, wts
    if method == "gauss-legendre":
        x, wts = np.polynomial.legendre.leggauss(n_steps)
        return (x + 1) / 2, wts / 2
    raise ValueError(method)


def conductance_conv1(model, movie, baseline, cellw, n_steps, method):
    """Layer-1 conductance per window, a loop over path steps with a full forward/backward each.

    Returns A (N, C1, H1, W1), r(s) and r(s0) of the weighted cell sum (N,).
    """
    z_s = model.scale1 * corr3d_movie(movie, model.w1) + model.shift1
    z_0 = model.scale1 * corr3d_movie(baseline, model.w1) + model.shift1
    alphas, weights = quadrature(n_steps, method)
    acc = np.zeros_like(z_s)
    for a, wk in zip(alphas, weights):
        g, _ = grad_z1(model, z_0 + a * (z_s - z_0), cellw)
        acc += wk * g
    r_s = head(model, z_s)[0] @ cellw
    r_0 = head(model, z_0)[0] @ cellw
    return (z_s - z_0) * acc, acc, r_s, r_0


def secant_relu(zl, zr):
    """relu(zr) - relu(zl) and the ReLU's secant slope over [zl, zr] (its 0/1 derivative if zl == zr)."""
    dh = np.maximum(zr, 0) - np.maximum(zl, 0)
    span = zr - zl
    same = span == 0
    return dh, np.where(same, zr > 0, dh / np.where(same, 1.0, span))


def conductance_secant(model, movie, baseline, cellw, n_steps, method):
    """The secant-kink rule, by brute force: per node a full forward at the node (softplus') and at both
    ends of its cell (cumulative weights), ReLU derivatives replaced by secant slopes over the cell.

    Returns layer-1 conductance (N, C1, H1, W1), the path-summed gradient g with A1 = dz * g,
    layer-2 conductance (N, C2, H2, W2), r(s), r(s0).
    """
    z_s = model.scale1 * corr3d_movie(movie, model.w1) + model.shift1
    z_0 = model.scale1 * corr3d_movie(baseline, model.w1) + model.shift1
    dz = z_s - z_0
    alphas, weights = quadrature(n_steps, method)
    ends = np.concatenate([[0.0], np.cumsum(weights)])
    a1, g, a2 = np.zeros_like(z_s), np.zeros_like(z_s), 0.0
    for k, a in enumerate(alphas):
        u = head(model, z_0 + a * dz)[1][2]
        lo, hi = z_0 + ends[k] * dz, z_0 + ends[k + 1] * dz
        dh1, s1 = secant_relu(lo, hi)
        dh2, s2 = secant_relu(head(model, lo)[1][1], head(model, hi)[1][1])
        g_h2 = ((sigmoid(u) * model.scale3 * cellw) @ model.w3).reshape(dh2.shape)
        g_h1 = corr2d_transpose(g_h2 * s2 * model.scale2, model.w2, z_s.shape[2], z_s.shape[3])
        a2 = a2 + g_h2 * dh2
        a1 += g_h1 * dh1
        g += weights[k] * g_h1 * s1
    r_s = head(model, z_s)[0] @ cellw
    r_0 = head(model, z_0)[0] @ cellw
    return a1, g, a2, r_s, r_0


def conductance_right_riemann(model, movie, baseline, cellw, n_steps):
    """The authors' formula: sum_k g(a_k) * (z(a_k) - z(a_{k-1})), a_k = k / n_steps."""
    z_s = model.scale1 * corr3d_movie(movie, model.w1) + model.shift1
    z_0 = model.scale1 * corr3d_movie(baseline, model.w1) + model.shift1
    total = np.zeros_like(z_s)
    prev = z_0
    for k in range(1, n_steps + 1):
        z = z_0 + (k / n_steps) * (z_s - z_0)
        g, _ = grad_z1(model, z, cellw)
        total += g * (z - prev)
        prev = z
    return total


def conductance_conv2(model, movie, baseline, cellw, n_steps, method):
    """Layer-2 conductance: sum_k w_k dr/dz2(a_k) * dz2/da(a_k), dz2/da by central differences."""
    z_s = model.scale1 * corr3d_movie(movie, model.w1) + model.shift1
    z_0 = model.scale1 * corr3d_movie(baseline, model.w1) + model.shift1
    alphas, weights = quadrature(n_steps, method)

    def z2_of(a):
        return head(model, z_0 + a * (z_s - z_0))[1][1]

    acc = 0.0
    for a, wk in zip(alphas, weights):
        _, g_z2 = grad_z1(model, z_0 + a * (z_s - z_0), cellw)
        # z2 is piecewise linear in a: a one-sided tiny difference is exact away from kinks
        eps = 1e-7
        dz2 = (z2_of(min(a + eps, 1.0)) - z2_of(min(a + eps, 1.0) - eps)) / eps
        acc = acc + wk * g_z2 * dz2
    return acc


def input_ig_movie(model, movie, baseline, cellw, n_steps, method, kinks="node"):
    """Input IG accumulated onto the movie's frames: (T, H, W), and per window (N, K, H, W)."""
    if kinks == "node":
        _, acc, _, _ = conductance_conv1(model, movie, baseline, cellw, n_steps, method)
    else:
        _, acc, _, _, _ = conductance_secant(model, movie, baseline, cellw, n_steps, method)
    g = acc * model.scale1
    diff = np.asarray(movie, np.float64) - baseline
    total = corr3d_movie_transpose(g, model.w1, *diff.shape) * diff
    k = model.history
    per = np.stack([corr3d_movie_transpose(g[n:n + 1], model.w1, k, *diff.shape[1:]) * diff[n:n + k]
                    for n in range(g.shape[0])])
    return total, per


# --------------------------------------------------------------------- in-silico retina
def _gauss_pool(sigma, cy, cx, h, w, truncate=4.0):
    yy, xx = np.mgrid[:h, :w]
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    g = np.exp(-d2 / (2 * sigma**2)) * (d2 <= (truncate * sigma) ** 2)
    return g / g.sum()


def insilico_rates(movie, p):
    """The simulated retina of docs/insilico.md section 1, written out step by step in float64.

    ``p`` is an ``InSilicoParams``.  Spatial filtering by explicit 2-D Gaussian
    convolution (scipy.signal), temporal filters as cascades of ``lfilter``
    first-order stages, depression and ganglion dynamics in plain Python loops
    over time with numpy over pixels.  Returns (rates (T, J), parts (T, J, 4)).
    """
    from scipy.signal import convolve2d, lfilter

    dt = 0.01
    movie = np.asarray(movie, np.float64)
    t_n, h, w = movie.shape

    def blur(sigma):
        # separable Gaussian, each 1-D kernel of radius int(4 sigma + 0.5) normalised to sum 1
        r = int(4.0 * sigma + 0.5)
        g1 = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma**2))
        g1 /= g1.sum()
        k = np.outer(g1, g1)
        return np.stack([convolve2d(f, k, mode="same", boundary="fill") for f in movie])

    s = blur(p.sigma_center_px) - p.w_surround * blur(p.sigma_surround_px)
    b = {}
    synapses = [(name, p.bipolar[name], p.bipolar[name].U) for name in ("OFF", "ONf", "ONs")]
    if p.U_OFF_A1 is not None:   # the OFF bipolar's synapse onto the amacrine: its own pool
        synapses.append(("OFF_A1", p.bipolar["OFF"], p.U_OFF_A1))
    for name, bp, use in synapses:
        out = []
        for tau in (bp.tau1_ms, 2 * bp.tau1_ms):
            e = np.exp(-dt * 1e3 / tau)
            y = s
            for _ in range(int(bp.n) + 1):
                y = lfilter([1 - e], [1, -e], y, axis=0)
            out.append(y)
        v = bp.sign * p.gain * (out[0] - bp.a2 * out[1])
        n = np.maximum(v - bp.theta, 0.0)
        rec = np.exp(-dt / bp.tau_rec_s)
        # grey-adapted start: N0 = max(-theta, 0) everywhere
        n0 = max(-bp.theta, 0.0)
        d0 = np.exp(-use * dt * n0)
        R = np.full((h, w), (1 - rec) * d0 / (1 - rec * d0))
        bk = np.empty_like(n)
        for t in range(t_n):
            R = 1 - (1 - R) * rec
            bk[t] = n[t] * R
            R = R * np.exp(-use * n[t] * dt)
        b[name] = bk
    cells = [(tname, cy, cx) for tname in p.ganglion for cy in p.mosaic for cx in p.mosaic]
    rates = np.empty((t_n, len(cells)))
    parts = np.empty((t_n, len(cells), 4))
    e_a = np.exp(-dt * 1e3 / p.tau_amacrine_ms)
    e_m = np.exp(-dt * 1e3 / p.tau_membrane_ms)
    rec_a = np.exp(-dt / p.tau_rec_amacrine_s)
    for j, (tname, cy, cx) in enumerate(cells):
        gp = p.ganglion[tname]
        wg = _gauss_pool(p.sigma_ganglion_px, cy, cx, h, w)
        wa = _gauss_pool(p.sigma_amacrine_px, cy, cx, h, w)
        exc = np.stack([(b[k] * wg).sum((1, 2)) for k in ("OFF", "ONf", "ONs")], 1)
        inh = (b["OFF_A1" if p.U_OFF_A1 is not None else "OFF"] * wa).sum((1, 2))
        # grey-adapted start
        a = 0.0
        nA = 1.0
        u = np.zeros(4)
        wts = np.array([gp.w_OFF, gp.w_ONf, gp.w_ONs])
        for t in range(t_n):
            a = e_a * a + (1 - e_a) * inh[t]
            ap = max(a - p.theta_amacrine, 0.0)
            nA = 1 - (1 - nA) * rec_a
            amac = ap * nA
            nA = nA * np.exp(-p.U_amacrine * dt * ap)
            u[:3] = e_m * u[:3] + (1 - e_m) * wts * exc[t]
            u[3] = e_m * u[3] - (1 - e_m) * gp.w_A1 * amac
            parts[t, j] = u
            x = p.beta * (u.sum() - gp.theta)
            rates[t, j] = gp.r_max * np.logaddexp(0.0, x) / p.beta
    return rates, parts
