"""Path-integrated gradients through conv -> ReLU -> dense -> softplus, batched over windows *and* path steps.

The data-parallel form of :func:`retina.kernels.cpu.pig_conv_relu_dense`
(same arguments, same outputs): instead of following one window along its
path and updating only the units whose ReLU switches (the CPU's event-driven
loop), every path point of a block of windows is evaluated in full, so each
layer is one big batched kernel call (``corr2d`` forward, ``corr2d_transpose``
backward) over ``windows x steps`` samples.  That is the shape a GPU wants.

Written for any array module: ``xp`` is NumPy or CuPy and ``corr2d`` /
``corr2d_transpose`` are the backend's kernels, so the CPU tests check this
algorithm against the event-driven kernel.
"""

from __future__ import annotations


def _softplus(xp, u):
    return xp.logaddexp(0.0, u)


def _sigmoid(xp, u):
    return 0.5 * (1.0 + xp.tanh(0.5 * u))


def _secant_relu(xp, zl, zr):
    """Increment ``relu(zr) - relu(zl)`` and the ReLU's secant slope over ``[zl, zr]`` (0/1 if equal)."""
    d = xp.maximum(zr, 0) - xp.maximum(zl, 0)
    span = zr - zl
    flat = span == 0
    slope = xp.where(flat, zr > 0, d / (span + flat))      # span + flat: no division by zero
    return d, slope.astype(zr.dtype)


def pig_conv_relu_dense(xp, corr2d, corr2d_transpose, z0, dz, alphas, weights, bounds, w2, scale2, shift2, v3,
                        shift3, cw, cells, g1, a2, r0, r1, want_a2, *, max_elements=1 << 25):
    """See :func:`retina.kernels.cpu.pig_conv_relu_dense`; ``max_elements`` bounds the temporaries.

    Per block of ``S`` path points the largest temporary is the backward map,
    ``B * S * n_out * C1 * H1 * W1`` elements; ``S`` is chosen so that it stays
    below ``max_elements``.  With secant slopes (``bounds`` not empty) the
    network is also evaluated at the ``S + 1`` cell boundaries of the block.
    """
    dt = z0.dtype
    n_b = dz.shape[0]                                      # z0 may be one baseline for all windows
    c1, h1, wd1 = z0.shape[1:]
    c2, h2, wd2 = scale2.shape
    n1, n2 = c1 * h1 * wd1, c2 * h2 * wd2
    cells = xp.asarray(cells)
    cw = xp.asarray(cw, dtype=xp.float64)
    n_out = cw.shape[0]
    secant = bounds.shape[0] > 0
    vsel = v3[cells].reshape(-1, n2)                       # (J, n2)
    sh3 = xp.asarray(shift3[cells], dtype=xp.float64)      # (J,)
    s2 = scale2.reshape(1, n2)
    b2 = shift2.reshape(1, n2)

    def layer1(a):
        """Layer-1 pre-activations at path points ``a`` (S,): (B, S, C1, H1, W1)."""
        return z0[:, None] + a.astype(dt)[None, :, None, None, None] * dz[:, None]

    def layer2(z):
        """Layer-2 pre-activations (B*S, n2) from layer-1 pre-activations."""
        hid = xp.ascontiguousarray(xp.maximum(z, 0).reshape(-1, c1, h1, wd1))
        pre = xp.empty((hid.shape[0], c2, h2, wd2), dtype=dt)
        corr2d(hid, w2, pre)
        return pre.reshape(-1, n2) * s2 + b2

    def readout(z2):
        return xp.maximum(z2, 0).astype(xp.float64) @ vsel.T.astype(xp.float64) + sh3   # (B*S, J)

    for a, r in ((0.0, r0), (1.0, r1)):
        r[...] = _softplus(xp, readout(layer2(layer1(xp.full(1, a)))))
    g1[...] = 0
    if want_a2:
        a2[...] = 0
    alphas = xp.asarray(alphas, dtype=xp.float64)
    weights = xp.asarray(weights, dtype=xp.float64)
    bounds = xp.asarray(bounds, dtype=xp.float64)
    n_steps = alphas.shape[0]
    per_step = max(n_b * max(n_out, 1) * max(n1, n2) * (2 if secant else 1), 1)
    s_blk = max(1, min(n_steps, max_elements // per_step))
    g1f = g1.reshape(n_b, n_out, n1)
    a2f = a2.reshape(n_b, n_out, -1)
    for k0 in range(0, n_steps, s_blk):
        a = alphas[k0:k0 + s_blk]
        s_n = a.shape[0]
        z1 = layer1(a)
        z2 = layer2(z1)
        wk = weights[k0:k0 + s_n].astype(dt).reshape(1, s_n, 1, 1)
        if secant:
            zb1 = layer1(bounds[k0:k0 + s_n + 1])                                # (B, S+1, C1, H1, W1)
            _, slope1 = _secant_relu(xp, zb1[:, :-1], zb1[:, 1:])
            zb2 = layer2(zb1).reshape(n_b, s_n + 1, n2)
            dh2, slope2 = _secant_relu(xp, zb2[:, :-1], zb2[:, 1:])               # (B, S, n2)
        else:
            slope1 = z1 > 0
            slope2 = (z2 > 0).reshape(n_b, s_n, n2)
        sig = _sigmoid(xp, readout(z2)).reshape(n_b, s_n, 1, -1)                  # (B, S, 1, J)
        coef = cw[None, None] * sig                                               # (B, S, n_out, J)
        dout_dh2 = (coef.reshape(-1, coef.shape[-1]) @ vsel.astype(xp.float64)).astype(dt)
        dout_dh2 = dout_dh2.reshape(n_b, s_n, n_out, n2)
        back = dout_dh2 * (wk * s2 * slope2[:, :, None, :])
        gmap = xp.empty((n_b * s_n * n_out, c1, h1, wd1), dtype=dt)
        corr2d_transpose(xp.ascontiguousarray(back.reshape(-1, c2, h2, wd2)), w2, gmap)
        gmap = gmap.reshape(n_b, s_n, n_out, n1) * slope1.reshape(n_b, s_n, 1, n1)
        g1f += gmap.sum(axis=1, dtype=dt)
        if want_a2:
            if not secant:   # the increment of h2 over the step: weight * dh2/da at the node
                q = xp.empty((n_b * s_n, c2, h2, wd2), dtype=dt)
                dzm = xp.where(z1 > 0, dz[:, None], 0).reshape(n_b * s_n, c1, h1, wd1)
                corr2d(xp.ascontiguousarray(dzm), w2, q)
                dh2 = (wk.reshape(1, s_n, 1) * s2 * slope2) * q.reshape(n_b, s_n, n2)
            a2f += (dout_dh2 * dh2[:, :, None, :]).sum(axis=1, dtype=dt)
    return g1, a2, r0, r1
