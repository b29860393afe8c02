"""Write the small model files of other toolkits that tests/test_import.py reads (run once; needs torch, h5py).

    python scripts/make_import_fixtures.py tests/data/imports

For each file the script also stores, in ``expected.h5``, a fixed random
movie (model units) and the source network's outputs on its windows in
evaluation mode (torch: ``model.eval()``; Keras: the same arithmetic in
float64, since TensorFlow is not installed here).  The torch networks are
built from the layer structure of the published torch-deep-retina
definitions (``BNCNN``: Conv2d, Flatten, BatchNorm1d(eps=1e-3), GaussianNoise,
ReLU, Reshape, ...; ``LinearStackedBNCNN``: stacks of 3x3 Conv2d with
AbsBatchNorm2d between them, AbsBatchNorm1d outside), so their state-dict
keys are the published ones; weights and running statistics are random but
far from their initial values, so every folded term matters.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

torch.manual_seed(0)


class Flatten(nn.Module):
    def forward(self, x):
        return x.reshape(len(x), -1)


class Reshape(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(*self.shape)


class GaussianNoise(nn.Module):
    def __init__(self, std=0.05):
        super().__init__()
        self.std = std
        self.sigma = nn.Parameter(torch.ones(1) * std, requires_grad=False)

    def forward(self, x):
        return x + self.sigma * torch.randn_like(x) if self.training else x


class AbsBatchNorm(nn.Module):
    """AbsBatchNorm1d/2d: batch norm with |scale|; running statistics are parameters (saved)."""

    def __init__(self, n, eps):
        super().__init__()
        self.eps = eps
        self.running_mean = nn.Parameter(torch.zeros(n))
        self.running_var = nn.Parameter(torch.ones(n))
        self.scale = nn.Parameter(torch.ones(n))
        self.shift = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean.data, self.running_var.data, weight=self.scale.abs(),
                            bias=self.shift, eps=self.eps, training=False)


class LinearStackedConv2d(nn.Module):
    def __init__(self, cin, cout, k, bias=True):
        super().__init__()
        n = (k - 3) // 2 + 1
        convs = [nn.Conv2d(cin, cout, 3, bias=False if n > 1 else bias)]
        if n > 1:
            convs.append(AbsBatchNorm(cout, 1e-5))
        for i in range(n - 1):
            last = i == n - 2
            convs.append(nn.Conv2d(cout, cout, 3, bias=bias if last else False))
            if not last:
                convs.append(AbsBatchNorm(cout, 1e-5))
        self.convs = nn.Sequential(*convs)

    def forward(self, x):
        return self.convs(x)


def shapes(img, ks):
    h1 = img[1] - ks[0] + 1
    return h1, h1 - ks[1] + 1


def bncnn(n_units, chans, img, ks):
    h1, h2 = shapes(img, ks)
    return nn.Sequential(OrderedDict([
        ("0", nn.Conv2d(img[0], chans[0], ks[0])), ("1", Flatten()),
        ("2", nn.BatchNorm1d(chans[0] * h1 * h1, eps=1e-3)), ("3", GaussianNoise()), ("4", nn.ReLU()),
        ("5", Reshape((-1, chans[0], h1, h1))), ("6", nn.Conv2d(chans[0], chans[1], ks[1])), ("7", Flatten()),
        ("8", nn.BatchNorm1d(chans[1] * h2 * h2, eps=1e-3)), ("9", GaussianNoise()), ("10", nn.ReLU()),
        ("11", nn.Linear(chans[1] * h2 * h2, n_units, bias=False)), ("12", nn.BatchNorm1d(n_units, eps=1e-3)),
        ("13", nn.Softplus())]))


def stacked(n_units, chans, img, ks):
    h1, h2 = shapes(img, ks)
    return nn.Sequential(OrderedDict([
        ("0", LinearStackedConv2d(img[0], chans[0], ks[0])), ("1", Flatten()),
        ("2", AbsBatchNorm(chans[0] * h1 * h1, 1e-3)), ("3", GaussianNoise()), ("4", nn.ReLU()),
        ("5", Reshape((-1, chans[0], h1, h1))), ("6", LinearStackedConv2d(chans[0], chans[1], ks[1])),
        ("7", Flatten()), ("8", AbsBatchNorm(chans[1] * h2 * h2, 1e-3)), ("9", GaussianNoise()), ("10", nn.ReLU()),
        ("11", nn.Linear(chans[1] * h2 * h2, n_units, bias=False)), ("12", AbsBatchNorm(n_units, 1e-3)),
        ("13", nn.Softplus())]))


class Wrapper(nn.Module):
    def __init__(self, seq):
        super().__init__()
        self.sequential = seq

    def forward(self, x):
        return self.sequential(x)


def randomise(model, rng):
    """Weights and running statistics far from their initial values (some scales negative: |scale| matters)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("running_var"):
                p.copy_(torch.tensor(rng.uniform(0.2, 3.0, p.shape)))
            elif name.endswith("running_mean"):
                p.copy_(torch.tensor(rng.normal(0, 0.5, p.shape)))
            elif name.endswith(".sigma"):
                continue
            elif name.endswith(("scale", "weight")) and p.ndim == 1:
                p.copy_(torch.tensor(rng.normal(1.0, 0.6, p.shape)))
            else:
                p.copy_(torch.tensor(rng.normal(0, 1.0 / np.sqrt(max(p[0].numel(), 1)), p.shape)))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.tensor(rng.normal(0, 0.5, m.running_mean.shape)))
                m.running_var.copy_(torch.tensor(rng.uniform(0.2, 3.0, m.running_var.shape)))


def save_torch(model, model_type, out, *, legacy, n_units, chans, img, ks, movie, expected):
    model.eval()
    hyps = {"model_type": model_type, "n_units": n_units, "chans": list(chans), "img_shape": list(img),
            "ksizes": list(ks), "dataset": "15-10-07", "stim_type": "naturalscene", "cells": list(range(n_units)),
            "softplus": True, "inference_exp": False}
    ck = {"model_type": model_type, "model_state_dict": model.state_dict(), "hyps": hyps, "epoch": 40,
          "val_acc": np.float64(0.61), "test_pearson": np.float64(0.58),
          "norm_stats": {"mean": np.float64(121.5), "std": np.float64(43.25)}}
    kw = {"_use_new_zipfile_serialization": False} if legacy else {}
    torch.save(ck, out, **kw)
    windows = torch.tensor(np.lib.stride_tricks.sliding_window_view(movie, img[0], axis=0)
                           .transpose(0, 3, 1, 2).copy(), dtype=torch.float32)
    with torch.no_grad():
        expected[out.name] = model(windows).double().numpy()


def keras_file(out, rng, n_units, chans, img, ks, movie, expected):
    """The deep-retina BN-CNN's Keras 2 weight layout, written with h5py, and its float64 outputs."""
    h1, h2 = shapes(img, ks)
    k1 = rng.normal(0, 0.1, (ks[0], ks[0], img[0], chans[0]))
    b1 = rng.normal(0, 0.1, chans[0])
    k2 = rng.normal(0, 0.2, (ks[1], ks[1], chans[0], chans[1]))
    b2 = rng.normal(0, 0.1, chans[1])
    k3 = rng.normal(0, 0.1, (chans[1] * h2 * h2, n_units))
    bns = [dict(gamma=rng.normal(1, 0.5, n), beta=rng.normal(0, 0.3, n), moving_mean=rng.normal(0, 0.5, n),
                moving_variance=rng.uniform(0.2, 3, n)) for n in (chans[0] * h1 * h1, chans[1] * h2 * h2, n_units)]
    layers = [("input_1", {}), ("conv2d_1", {"kernel": k1, "bias": b1}), ("flatten_1", {}),
              ("batch_normalization_1", bns[0]), ("reshape_1", {}), ("gaussian_noise_1", {}),
              ("activation_1", {}), ("conv2d_2", {"kernel": k2, "bias": b2}), ("flatten_2", {}),
              ("batch_normalization_2", bns[1]), ("reshape_2", {}), ("gaussian_noise_2", {}), ("activation_2", {}),
              ("flatten_3", {}), ("dense_1", {"kernel": k3}), ("batch_normalization_3", bns[2]),
              ("activation_3", {})]
    with h5py.File(out, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n, _ in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name, ws in layers:
            g = f.create_group(name)
            names = [f"{name}/{k}:0".encode() for k in ws]
            g.attrs["weight_names"] = np.array(names) if names else np.array([], dtype="S1")
            for k, v in ws.items():
                g.create_dataset(f"{name}/{k}:0", data=v.astype(np.float32))

    def bn(x, p):
        p = {k: v.astype(np.float32).astype(np.float64) for k, v in p.items()}
        return p["gamma"] * (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + 1e-3) + p["beta"]

    def corr(x, k, b):   # x (N, Cin, H, W), k (kh, kw, Cin, Cout): Keras/TF cross-correlation
        k = k.astype(np.float32).astype(np.float64)
        win = np.lib.stride_tricks.sliding_window_view(x, k.shape[:2], axis=(2, 3))
        return np.einsum("nchwij,ijco->nohw", win, k) + b.astype(np.float32).astype(np.float64)[None, :, None, None]

    x = np.lib.stride_tricks.sliding_window_view(movie, img[0], axis=0).transpose(0, 3, 1, 2).astype(np.float64)
    y = corr(x, k1, b1)
    y = np.maximum(bn(y.reshape(len(y), -1), bns[0]), 0).reshape(y.shape)
    y = corr(y, k2, b2)
    y = np.maximum(bn(y.reshape(len(y), -1), bns[1]), 0)
    y = bn(y @ k3.astype(np.float32).astype(np.float64), bns[2])
    expected[out.name] = np.logaddexp(0, y)


def _movie(rng, shape):
    """A random movie in model units whose values are exact in int8 / 16 (stored as int8: small files)."""
    return (np.clip(np.round(rng.standard_normal(shape) * 16), -127, 127) / 16).astype(np.float32)


def main(folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    expected: dict[str, np.ndarray] = {}
    movies = {}
    cases = [("bncnn_tiny.pt", "BNCNN", False, 2, (3, 4), (6, 16, 16), (7, 5)),
             ("bncnn_tiny_legacy.pt", "BNCNN", True, 2, (3, 4), (6, 16, 16), (7, 5)),
             ("stacked_tiny.pt", "LinearStackedBNCNN", False, 2, (3, 4), (6, 16, 16), (7, 5)),
             ("stacked_tiny_legacy.pt", "LinearStackedBNCNN", True, 2, (3, 4), (6, 16, 16), (7, 5)),
             ("stacked_published.pt", "LinearStackedBNCNN", False, 5, (8, 8), (40, 50, 50), (15, 11))]
    for name, mtype, legacy, n, chans, img, ks in cases:
        movie = _movie(rng, (img[0] + (1 if img[0] > 10 else 5),) + img[1:])
        movies[name] = movie
        net = Wrapper((bncnn if mtype == "BNCNN" else stacked)(n, chans, img, ks))
        randomise(net, rng)
        save_torch(net, mtype, folder / name, legacy=legacy, n_units=n, chans=chans, img=img, ks=ks, movie=movie,
                   expected=expected)
    movie = _movie(rng, (11, 16, 16))
    movies["bncnn_keras.h5"] = movie
    keras_file(folder / "bncnn_keras.h5", rng, 3, (3, 4), (6, 16, 16), (7, 5), movie, expected)
    with h5py.File(folder / "expected.h5", "w") as f:
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["note"] = "written by scripts/make_import_fixtures.py"
        for name, out in expected.items():
            g = f.create_group(name)
            g["movie_x16"] = (movies[name] * 16).astype(np.int8)   # the movie is movie_x16 / 16
            g["output"] = out
    for p in sorted(folder.iterdir()):
        print(f"{p.name}: {p.stat().st_size / 1e3:.1f} kB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/imports")
