"""The same computations in PyTorch (cuDNN), for the GPU comparison (bench/RESULTS.md).

Optional: needs ``torch`` (not a dependency of retina).  Runs the
``forward-movie`` and ``ig-hidden`` workloads of ``docs/performance.md`` the way a
PyTorch user would write them (window stack + conv3d as a 2-D conv over the
40 history frames as channels; integrated gradients as a batch of path points
through autograd, layer 1 recomputed per step), checks them against retina's
result and prints both timings::

    python bench/torch_compare.py [--device cuda] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _sync(torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def torch_net(torch, model, device, dtype):
    """The RetinaCNN as torch tensors: layer 1 as conv2d with the history as input channels."""
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)  # noqa: E731
    p = {k: t(np.broadcast_to(getattr(model, k), shape)) for k, shape in
         (("scale1", model.shape1), ("shift1", model.shape1), ("scale2", model.shape2), ("shift2", model.shape2))}
    p.update(w1=t(model.w1), w2=t(model.w2), w3=t(model.w3), scale3=t(model.scale3), shift3=t(model.shift3))
    F = torch.nn.functional

    def layer1(win):  # (N, history, H, W) -> pre-activation (N, C1, H1, W1)
        return F.conv2d(win, p["w1"]) * p["scale1"] + p["shift1"]

    def head(z1):
        h1 = torch.relu(z1)
        h2 = torch.relu(F.conv2d(h1, p["w2"]) * p["scale2"] + p["shift2"])
        return F.softplus(h2.flatten(1) @ p["w3"].T * p["scale3"] + p["shift3"])

    return layer1, head


def main():
    import torch

    from retina import RetinaCNN, attribute
    from retina.stimuli import natural_movie, white_noise

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--tf32", action="store_true",
                    help="let cuDNN use TF32 tensor cores (PyTorch's default for convolutions; about 1e-3 relative "
                         "error); off by default so that both sides compute in float32")
    args = ap.parse_args()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.tf32
    print(f"torch {torch.__version__} on {args.device}, TF32 {'on' if args.tf32 else 'off'}")
    dev, dtype = args.device, torch.float32
    model = RetinaCNN.random(5, seed=0)
    layer1, head = torch_net(torch, model, dev, dtype)
    hist = model.history

    # forward-movie
    movie = natural_movie(max(int(6000 * args.scale), hist + 10), seed=1).movie
    x = torch.as_tensor(movie, dtype=dtype, device=dev)
    with torch.no_grad():
        def fwd():
            out = []
            for n0 in range(0, x.shape[0] - hist + 1, 512):
                win = x[n0:n0 + 512 + hist - 1].unfold(0, hist, 1).permute(0, 3, 1, 2)  # (N, hist, H, W)
                out.append(head(layer1(win)))
            return torch.cat(out)
        fwd()
        _sync(torch, dev)
        t0 = time.perf_counter()
        rt = fwd()
        _sync(torch, dev)
        t_torch = time.perf_counter() - t0
    model.predict(movie, backend=args.backend)
    t0 = time.perf_counter()
    rr = model.predict(movie, backend=args.backend)
    t_ret = time.perf_counter() - t0
    err = float(np.abs(rt.cpu().numpy() - rr).max() / np.abs(rr).max())
    n = rr.shape[0]
    print(f"forward-movie  torch {n / t_torch:10.0f} windows/s   retina {n / t_ret:10.0f} windows/s   "
          f"max rel diff {err:.1e}")

    # ig-hidden: layer-1 conductance, 50 midpoint steps, each of 5 cells
    wn = white_noise(max(int(1000 * args.scale), hist + 4), seed=2).movie
    xw = torch.as_tensor(wn, dtype=dtype, device=dev)
    steps = (torch.arange(50, dtype=dtype, device=dev) + 0.5) / 50

    def ig():
        vals = []
        for n0 in range(0, xw.shape[0] - hist + 1, 16):
            win = xw[n0:n0 + 16 + hist - 1].unfold(0, hist, 1).permute(0, 3, 1, 2)
            z0 = layer1(torch.zeros_like(win))
            z = layer1(win)
            per_cell = []
            for c in range(model.n_cells):
                path = (z0[:, None] + steps[None, :, None, None, None] * (z - z0)[:, None]).flatten(0, 1)
                path.requires_grad_(True)
                r = head(path)[:, c].sum()
                (g,) = torch.autograd.grad(r, path)
                per_cell.append(((z - z0) * g.view(z.shape[0], 50, *z.shape[1:]).mean(1)).sum(dim=(2, 3)))
            vals.append(torch.stack(per_cell, 1))
        return torch.cat(vals)

    ig()
    _sync(torch, dev)
    t0 = time.perf_counter()
    at = ig()
    _sync(torch, dev)
    t_torch = time.perf_counter() - t0
    # the same computation (ReLU derivatives at the nodes), then retina's default secant rule
    for kinks in ("node", "secant"):
        kw = dict(layer="conv1", pool="space", n_steps=50, backend=args.backend, progress=False, kinks=kinks)
        attribute(model, wn, **kw)
        t0 = time.perf_counter()
        ar = attribute(model, wn, **kw)
        t_ret = time.perf_counter() - t0
        err = float(np.abs(at.detach().cpu().numpy() - ar.values).max() / np.abs(ar.values).max())
        wc = ar.delta.size
        print(f"ig-hidden      torch {wc / t_torch:10.1f} window-cells/s   retina {wc / t_ret:10.1f} window-cells/s "
              f"(kinks={kinks})   max rel diff {err:.1e}   retina max|delta|/range {ar.relative_delta:.1e}")


if __name__ == "__main__":
    main()
