"""The peers, measured in the same run: PyTorch and captum doing what a workload of :mod:`retina.bench` does.

``retina bench --peers`` runs each workload and its peer interleaved, ``repeat``
times, on the same model, movie, windows and cells, and reports the median
of the per-repetition ratios (peer time / retina time, per unit of work).  On a
shared machine absolute times move by 2x between runs; a ratio of times taken
side by side is the figure that means something.

Needs the optional ``bench`` extra (``torch``, ``captum``); never a runtime dependency.

=================  ==========================================================  =======================
workload           peer                                                        unit of work
=================  ==========================================================  =======================
forward-movie      the same CNN as a ``torch.nn.Module`` (layer 1 a Conv2d      window
                   over the history as channels), eval mode, no_grad, windows
                   from ``unfold``, 512 per call
ig-hidden          captum ``LayerConductance`` on the layer-1 pre-activations,  window-cell
                   50 steps, ``riemann_trapezoid`` (= retina's left node rule,
                   see ``_ig``), one target cell at a time; three rows: the
                   workload's untrained model (``RetinaCNN.random``), the
                   bundled trained model (``:trained``) and layer 2's
                   pre-activations on the untrained one (``:conv2``), each with
                   the share of layer-1 units that switch along the path
ig-input           captum ``IntegratedGradients``, 50 ``riemann_middle`` steps  window-cell
                   (= retina's midpoint node rule)
train-epoch        the BN-CNN (BatchNorm1d per unit, Poisson loss, Adam) in     window
                   PyTorch, same batch and windows per epoch
=================  ==========================================================  =======================
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = ["PEERS", "PeerResult", "run_peers", "require_peers"]


@dataclass
class PeerResult:
    workload: str
    unit: str
    work: int
    retina_s: list
    peer_s: list
    ratio: float          # median over repetitions of peer_s / retina_s (same work)
    detail: str = ""
    max_rel_diff: float = float("nan")
    p99_rel_diff: float = float("nan")    # the 99th percentile of |retina - peer| / max|peer| over the outputs


def require_peers(need_captum=False):
    try:
        import torch
    except ImportError:
        raise RuntimeError("the peers need PyTorch: install the 'bench' extra (pip install 'retina[bench]')") \
            from None
    if need_captum:
        try:
            import captum  # noqa: F401
        except ImportError:
            raise RuntimeError("the attribution peers need captum: install the 'bench' extra "
                               "(pip install 'retina[bench]')") from None
    return torch


def _torch_cnn(torch, model):
    """``model`` as a torch module; ``.a1`` outputs the layer-1 pre-activations (captum's layer)."""
    nn = torch.nn

    class Affine(nn.Module):
        def __init__(self, scale, shift):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(np.array(scale, np.float32)), requires_grad=False)
            self.shift = nn.Parameter(torch.tensor(np.array(shift, np.float32)), requires_grad=False)

        def forward(self, x):
            return x * self.scale + self.shift

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            c1, hist, k1, _ = model.w1.shape
            c2, _, k2, _ = model.w2.shape
            self.conv1 = nn.Conv2d(hist, c1, k1, bias=False)
            self.conv2 = nn.Conv2d(c1, c2, k2, bias=False)
            self.lin = nn.Linear(model.w3.shape[1], model.n_cells, bias=False)
            with torch.no_grad():
                self.conv1.weight.copy_(torch.as_tensor(model.w1, dtype=torch.float32))
                self.conv2.weight.copy_(torch.as_tensor(model.w2, dtype=torch.float32))
                self.lin.weight.copy_(torch.as_tensor(model.w3, dtype=torch.float32))
            self.a1 = Affine(np.broadcast_to(model.scale1, model.shape1), np.broadcast_to(model.shift1, model.shape1))
            self.a2 = Affine(np.broadcast_to(model.scale2, model.shape2), np.broadcast_to(model.shift2, model.shape2))
            self.a3 = Affine(model.scale3, model.shift3)

        def forward(self, x):
            h1 = torch.relu(self.a1(self.conv1(x)))
            h2 = torch.relu(self.a2(self.conv2(h1)))
            return torch.nn.functional.softplus(self.a3(self.lin(h2.flatten(1))))

    net = Net().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _clock(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _interleave(ours, peer, repeat):
    ours(), peer()          # warm-up: compilation, FFT plans, torch's first-call costs
    mine, theirs = [], []
    out_m = out_p = None
    for _ in range(repeat):
        t, out_m = _clock(ours)
        mine.append(t)
        t, out_p = _clock(peer)
        theirs.append(t)
    ratio = float(np.median(np.array(theirs) / np.array(mine)))
    return mine, theirs, ratio, out_m, out_p


def forward_movie(scale=1.0, repeat=5):
    torch = require_peers()
    from .model import RetinaCNN
    from .stimuli import natural_movie

    model = RetinaCNN.random(5, seed=0)
    movie = natural_movie(max(int(6000 * scale), model.history + 10), seed=1).movie
    net = _torch_cnn(torch, model)
    x = torch.as_tensor(movie, dtype=torch.float32)
    hist, n_win = model.history, len(movie) - model.history + 1

    def peer():
        out = []
        with torch.no_grad():
            for s in range(0, n_win, 512):
                win = x[s:s + 512 + hist - 1].unfold(0, hist, 1).permute(0, 3, 1, 2)
                out.append(net(win))
        return torch.cat(out).numpy()

    mine, theirs, ratio, a, b = _interleave(lambda: model.predict(movie), peer, repeat)
    diff = float(np.abs(a - b).max() / np.abs(b).max())
    return PeerResult("forward-movie", "window", n_win, mine, theirs, ratio,
                      f"{len(movie)} frames, 5 cells; torch {torch.__version__}, {torch.get_num_threads()} threads",
                      diff)


def _switch_share(torch, net, win, base):
    """Share of layer-1 units (window x unit) whose ReLU state differs between the baseline and the window:
    each switches once along the straight path, so this is the work the IG kernel's switch updates do."""
    with torch.no_grad():
        on, on0 = (net.a1(net.conv1(v)) > 0 for v in (win, base))
        return float((on != on0).float().mean())


def _ig(layer, scale, repeat, which="workload"):
    torch = require_peers(need_captum=True)
    import captum
    from captum.attr import IntegratedGradients, LayerConductance

    from .attribution import attribute
    from .model import RetinaCNN
    from .stimuli import white_noise

    if which == "trained":   # the bundled default model, its first 5 cells
        from .io import load_model

        model = load_model("default")
        cells = list(range(min(5, model.n_cells)))
    else:                    # the ig-hidden workload's model (retina.bench): untrained, RetinaCNN.random
        model = RetinaCNN.random(5, seed=0)
        cells = list(range(5))
    n_win = max(int(32 * scale), 2)
    movie = white_noise(n_win + model.history - 1, frame_shape=model.frame_shape, seed=2).movie
    net = _torch_cnn(torch, model)
    win = torch.as_tensor(movie).unfold(0, model.history, 1).permute(0, 3, 1, 2).contiguous()
    base = torch.zeros_like(win)
    target = {"conv1": net.a1, "conv2": net.a2}
    method = LayerConductance(net, target[layer]) if layer in target else IntegratedGradients(net)
    # the same quadrature.  captum's conductance evaluates n_steps + 1 points of its rule and sums
    # g(a_k) (z(a_{k+1}) - z(a_k)); with "riemann_trapezoid" the points are k / n_steps, so it is the left
    # Riemann sum with the gradient at each left node: retina's method="left", kinks="node".  Layer 1 is affine
    # along the path, so for it the two are the same sum; layer 2 is piecewise affine (layer-1 units switch
    # between nodes), where captum's difference and retina's slope at the node differ by O(1/n_steps) in the
    # cells that hold a switch.  captum's IG with "riemann_middle" is retina's midpoint node rule.
    rule = ("left", "riemann_trapezoid") if layer in target else ("midpoint", "riemann_middle")

    def peer():
        out = []
        for c in cells:
            a = method.attribute(win, baselines=base, target=c, n_steps=50, method=rule[1],
                                 internal_batch_size=min(len(win) * 50, 800))
            out.append(a.detach().numpy())
        return np.stack(out, axis=1)    # (windows, cells, ...)

    def ours():
        return attribute(model, movie, layer=layer, cells=cells, n_steps=50, method=rule[0], kinks="node",
                         progress=False)

    mine, theirs, ratio, a, b = _interleave(ours, peer, repeat)
    if layer in target:   # a float32 near-tie at a node can switch a ReLU in one and not the other: max and p99
        rel = np.abs(a.values - b) / np.abs(b).max()
        diff, p99 = float(rel.max()), float(np.percentile(rel, 99))
    else:   # retina accumulates input IG onto the movie's frames; compare the totals per window-cell
        diff = p99 = float(np.abs(a.values.sum() - b.sum()) / np.abs(b).sum())
    name = {"conv1": "ig-hidden", "conv2": "ig-hidden:conv2", "input": "ig-input"}[layer]
    if which != "workload":
        name += f":{which}"
    return PeerResult(name, "window-cell", n_win * len(cells), mine, theirs, ratio,
                      f"{n_win} windows x {len(cells)} cells, {layer}, {which} model "
                      f"({_switch_share(torch, net, win, base):.0%} of layer-1 units switch), 50 {rule[0]} steps "
                      f"(node rule, as captum), captum {captum.__version__}", diff, p99)


def ig_hidden(scale=1.0, repeat=3):
    """Layer-1 conductance on the workload's untrained model and on the bundled trained one, and layer 2's."""
    return [_ig("conv1", scale, repeat), _ig("conv1", scale, repeat, "trained"), _ig("conv2", scale, repeat)]


def ig_input(scale=1.0, repeat=3):
    return _ig("input", scale, repeat)


def train_epoch(scale=1.0, repeat=3):
    """One epoch of ``30000 * scale`` windows, batch 500, in both (retina: its trainer; torch: the same BN-CNN, with
    the trainer's Gaussian noise after each hidden batch norm and its L2 penalty on the two conv kernels)."""
    torch = require_peers()
    from .insilico import InSilicoRetina
    from .stimuli import natural_movie
    from .train import TrainConfig, train

    movie = natural_movie(6000, seed=1).movie
    y = InSilicoRetina().rates(movie).astype(np.float32)
    x = ((movie - movie.mean()) / movie.std()).astype(np.float32)
    windows = max(int(30000 * scale), 500)
    cfg = TrainConfig(epochs=1, epoch_windows=windows, batch=500, segments=10, val_fraction=0.1)
    n_cells = y.shape[1]
    nn = torch.nn
    hist, (k1, k2), (c1, c2) = cfg.history, cfg.kernel_sizes, cfg.channels
    h1 = x.shape[1] - k1 + 1
    h2 = h1 - k2 + 1

    class Noise(nn.Module):   # deep-retina's GaussianNoise: added in training only, as retina's trainer does
        def forward(self, v):
            return v + cfg.noise * torch.randn_like(v) if self.training else v

    conv1, conv2 = nn.Conv2d(hist, c1, k1), nn.Conv2d(c1, c2, k2)
    net = nn.Sequential(conv1, nn.Flatten(), nn.BatchNorm1d(c1 * h1 * h1, eps=1e-3), Noise(), nn.ReLU(),
                        nn.Unflatten(1, (c1, h1, h1)), conv2, nn.Flatten(),
                        nn.BatchNorm1d(c2 * h2 * h2, eps=1e-3), Noise(), nn.ReLU(),
                        nn.Linear(c2 * h2 * h2, n_cells, bias=False), nn.BatchNorm1d(n_cells, eps=1e-3),
                        nn.Softplus())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    rng = np.random.default_rng(0)
    n_train = int(len(x) * (1 - cfg.val_fraction)) - hist

    def peer():
        net.train()
        for _ in range(windows // cfg.batch):
            idx = torch.as_tensor(rng.integers(0, n_train, cfg.batch))
            win = xt.unfold(0, hist, 1).permute(0, 3, 1, 2)[idx]
            target = yt[idx + hist]
            pred = net(win)
            loss = (pred - target * torch.log(pred + 1e-8)).mean() + cfg.l2 * (conv1.weight.square().sum()
                                                                               + conv2.weight.square().sum())
            opt.zero_grad()
            loss.backward()
            opt.step()

    import logging

    quiet = logging.getLogger("retina.train")
    level = quiet.level
    quiet.setLevel(logging.WARNING)        # the epochs' log lines are not what a benchmark table shows
    try:
        mine, theirs, ratio, _, _ = _interleave(lambda: train(x, y, config=cfg, progress=False), peer, repeat)
    finally:
        quiet.setLevel(level)
    return PeerResult("train-epoch", "window", windows, mine, theirs, ratio,
                      f"{windows} windows per epoch, batch 500, {n_cells} cells (retina's time includes its "
                      "validation pass)")


PEERS = {"forward-movie": forward_movie, "ig-hidden": ig_hidden, "ig-input": ig_input, "train-epoch": train_epoch}


def run_peers(names=None, *, scale=1.0, repeat=None):
    out = []
    for name in names or PEERS:
        if name not in PEERS:
            raise ValueError(f"no peer for workload {name!r}; peers exist for {tuple(PEERS)}")
        kwargs = {"scale": scale}
        if repeat is not None:
            kwargs["repeat"] = repeat
        rows = PEERS[name](**kwargs)
        out.extend(rows if isinstance(rows, list) else [rows])
    return out
