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


def pig_conv_relu_dense(xp, corr2d, corr2d_transpose, z0, dz, alphas, weights, w2, scale2, shift2, v3, shift3,
                        cw, cells, g1, a2, r0, r1, want_a2, *, max_elements=1 << 25):
    """See :func:`retina.kernels.cpu.pig_conv_relu_dense`; ``max_elements`` bounds the temporaries.

    Per block of ``S`` path points the largest temporary is the backward map,
    ``B * S * n_out * C1 * H1 * W1`` elements; ``S`` is chosen so that it stays
    below ``max_elements``.
    """
    dt = z0.dtype
    n_b, c1, h1, wd1 = z0.shape
    c2, h2, wd2 = scale2.shape
    n1, n2 = c1 * h1 * wd1, c2 * h2 * wd2
    cells = xp.asarray(cells)
    cw = xp.asarray(cw, dtype=xp.float64)
    n_out = cw.shape[0]
    vsel = v3[cells].reshape(-1, n2)                       # (J, n2)
    sh3 = xp.asarray(shift3[cells], dtype=xp.float64)      # (J,)
    s2 = scale2.reshape(1, n2)
    b2 = shift2.reshape(1, n2)

    def layer2(a):
        """The network at path points ``a`` (S,) for every window: masks, layer-2 state, readout drive."""
        s_n = a.shape[0]
        z = z0[:, None] + a.astype(dt)[None, :, None, None, None] * dz[:, None]   # (B, S, C1, H1, W1)
        m1 = z > 0
        hid = xp.ascontiguousarray(xp.where(m1, z, 0).reshape(n_b * s_n, c1, h1, wd1))
        pre = xp.empty((n_b * s_n, c2, h2, wd2), dtype=dt)
        corr2d(hid, w2, pre)
        z2 = pre.reshape(-1, n2) * s2 + b2
        m2 = z2 > 0
        u = xp.where(m2, z2, 0).astype(xp.float64) @ vsel.T.astype(xp.float64) + sh3   # (B*S, J)
        return m1, m2, u

    for a, r in ((0.0, r0), (1.0, r1)):
        _, _, u = layer2(xp.full(1, a))
        r[...] = _softplus(xp, u)
    g1[...] = 0
    if want_a2:
        a2[...] = 0
    alphas = xp.asarray(alphas, dtype=xp.float64)
    weights = xp.asarray(weights, dtype=xp.float64)
    n_steps = alphas.shape[0]
    per_step = max(n_b * max(n_out, 1) * max(n1, n2), 1)
    s_blk = max(1, min(n_steps, max_elements // per_step))
    g1f = g1.reshape(n_b, n_out, n1)
    a2f = a2.reshape(n_b, n_out, -1)
    for k0 in range(0, n_steps, s_blk):
        a = alphas[k0:k0 + s_blk]
        s_n = a.shape[0]
        m1, m2, u = layer2(a)
        sig = _sigmoid(xp, u).reshape(n_b, s_n, 1, -1)                        # (B, S, 1, J)
        coef = weights[k0:k0 + s_n].reshape(1, s_n, 1, 1) * cw[None, None] * sig   # (B, S, n_out, J)
        back = (coef.reshape(-1, coef.shape[-1]) @ vsel.astype(xp.float64)).astype(dt)  # (B*S*n_out, n2)
        back = back.reshape(n_b * s_n, n_out, n2) * (s2 * m2)[:, None, :]
        gmap = xp.empty((n_b * s_n * n_out, c1, h1, wd1), dtype=dt)
        corr2d_transpose(xp.ascontiguousarray(back.reshape(-1, c2, h2, wd2)), w2, gmap)
        gmap = gmap.reshape(n_b, s_n, n_out, n1) * m1.reshape(n_b, s_n, 1, n1)
        g1f += gmap.sum(axis=1, dtype=dt)
        if want_a2:
            q = xp.empty((n_b * s_n, c2, h2, wd2), dtype=dt)
            dzm = xp.where(m1, dz[:, None], 0).reshape(n_b * s_n, c1, h1, wd1)
            corr2d(xp.ascontiguousarray(dzm), w2, q)
            a2f += (back.reshape(n_b, s_n, n_out, n2) * q.reshape(n_b, s_n, 1, n2)).sum(axis=1, dtype=dt)
    return g1, a2, r0, r1

