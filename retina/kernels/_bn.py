"""Training-mode batch norm fused with the noise and the ReLU that follow it, for any array module.

The generic form of :func:`retina.kernels.cpu.batch_norm_relu` and
:func:`retina.kernels.cpu.batch_norm_relu_grad` (same arguments and outputs),
written with whole-array operations on ``xp`` (NumPy or CuPy): the GPU binds
it as it is, and the CPU tests check the CPU's fused Numba loops against it.

Per unit ``m`` (every axis after the batch axis), over the batch of ``N``::

    mean, var = batch mean and (population) variance of c[:, m]
    xhat      = (c - mean) / sqrt(var + eps)
    out       = relu(gamma * xhat + beta + noise)

and the adjoint, from ``dout`` (the gradient with respect to ``out``)::

    dz     = dout * [out > 0]
    dgamma = sum_n dz * xhat;  dbeta = sum_n dz
    dc     = gamma / sqrt(var + eps) / N * (N * dz - dbeta - xhat * dgamma)

Statistics accumulate in float64 whatever the arrays' dtype.
"""

from __future__ import annotations


def batch_norm_relu(xp, c, gamma, beta, noise, eps, mean, var, xhat, out):
    n_b = c.shape[0]
    cf = c.reshape(n_b, -1)
    mu = cf.mean(axis=0, dtype=xp.float64)
    mean[...] = mu.reshape(mean.shape)
    var[...] = ((cf - mu) ** 2).mean(axis=0).reshape(var.shape)
    inv = 1.0 / xp.sqrt(var.astype(xp.float64) + eps)
    xhat[...] = ((c - mean.astype(xp.float64)) * inv).astype(xhat.dtype)
    z = gamma * xhat + beta
    if noise.size:
        z += noise
    xp.maximum(z, 0, out=out)
    return mean, var, xhat, out


def batch_norm_relu_grad(xp, dout, out, xhat, gamma, var, eps, dc, dgamma, dbeta):
    n_b = dout.shape[0]
    dz = xp.where(out > 0, dout, 0).astype(xp.float64)
    dg = (dz * xhat).sum(axis=0)
    db = dz.sum(axis=0)
    dgamma[...] = dg
    dbeta[...] = db
    k = gamma / xp.sqrt(var.astype(xp.float64) + eps) / n_b
    dc[...] = (k * (n_b * dz - db - xhat * dg)).astype(dc.dtype)
    return dc, dgamma, dbeta
