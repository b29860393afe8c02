"""Canonical benchmark workloads (``docs/performance.md``) shared by ``retina bench`` and ``bench/``.

Each workload builds its inputs from fixed seeds, times the fast path
(median of ``repeat`` runs after a warm-up), checks it against the
straightforward float64 reference of :mod:`retina.reference` on a slice, and
reports the figure, the fraction of the measured matrix-product floor and the
error.  "Fraction of floor" = (direct-algorithm FLOPs per second achieved) /
(measured float32 matmul FLOP/s); above 1 means the algorithm does less work
than the direct count (FFT layer 1, piecewise-linear path sweep).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from . import reference
from .attribution import attribute
from .model import RetinaCNN
from .stimuli import natural_movie, white_noise

__all__ = ["WORKLOADS", "BenchResult", "matmul_rate", "run_workload"]

# direct multiply-accumulate counts per window, default shape (docs/performance.md)
MAC_L1 = 36 * 36 * 8 * 40 * 225
MAC_L2 = 26 * 26 * 8 * 8 * 121


@dataclass
class BenchResult:
    workload: str
    backend: str
    figure: float
    unit: str
    seconds: float
    floor_fraction: float
    max_rel_error: float
    detail: str = ""


def matmul_rate(n=2048, repeat=3):
    """Measured float32 matrix-product rate (FLOP/s) of this machine through numpy/BLAS."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


def _time(fn, repeat):
    fn()  # warm-up: JIT compilation, FFT plans, caches
    times = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def _relerr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def forward_movie(scale=1.0, repeat=3, backend="cpu", rate=None):
    model = RetinaCNN.random(5, seed=0)
    n_frames = max(int(6000 * scale), model.history + 10)
    movie = natural_movie(n_frames, seed=1).movie
    sec, rates = _time(lambda: model.predict(movie, backend=backend), repeat)
    n_win = rates.shape[0]
    idx = np.linspace(0, n_win - 1, 4).astype(int)
    err = _relerr(rates[idx], reference.forward(model, movie, idx))
    wps = n_win / sec
    frac = wps * 2 * (MAC_L1 + MAC_L2) / rate if rate else float("nan")
    return BenchResult("forward-movie", backend, wps, "windows/s", sec, frac, err,
                       f"{n_frames} frames, {n_win} windows, 5 cells")


def _ig(layer, scale, repeat, backend, rate):
    model = RetinaCNN.random(5, seed=0)
    n_frames = max(int(1000 * scale), model.history + 4)
    movie = white_noise(n_frames, seed=2).movie
    sec, attr = _time(lambda: attribute(model, movie, layer=layer, n_steps=50, backend=backend,
                                        progress=False), repeat)
    n_wc = attr.delta.size
    w, cell = 1, 2
    if layer == "conv1":
        err = _relerr(attr.values[w, cell], reference.conductance_conv1(model, movie, w, cell))
        macs = MAC_L1 + 50 * 2 * (MAC_L2 + 5408)  # per window-cell, forward shared ignored
    else:
        # per-window IG from the accumulated values is not separable; compare a one-window movie
        sub = movie[w:w + model.history]
        one = attribute(model, sub, layer="input", cells=cell, n_steps=50, backend=backend, progress=False)
        err = _relerr(one.values[0], reference.input_ig(model, movie, w, cell))
        macs = 2 * MAC_L1 + 50 * 2 * (MAC_L2 + 5408)
    frac = n_wc / sec * 2 * macs / rate if rate else float("nan")
    name = "ig-hidden" if layer == "conv1" else "ig-input"
    return BenchResult(name, backend, n_wc / sec, "window-cells/s", sec, frac, err,
                       f"{n_frames} frames, {attr.delta.shape[0]} windows x 5 cells, 50 midpoint steps, "
                       f"max|delta|/range {attr.relative_delta:.1e}")


def ig_hidden(scale=1.0, repeat=1, backend="cpu", rate=None):
    return _ig("conv1", scale, repeat, backend, rate)


def ig_input(scale=1.0, repeat=1, backend="cpu", rate=None):
    return _ig("input", scale, repeat, backend, rate)


def insilico_minute(scale=1.0, repeat=3, backend="cpu", rate=None):
    """The in-silico retina on one minute of 50x50 natural-like movie, 18 cells (issue: < 10 s)."""
    from .insilico import InSilicoRetina

    sim = InSilicoRetina()
    n_frames = max(int(6000 * scale), 50)
    movie = natural_movie(n_frames, seed=1).movie
    sec, rates = _time(lambda: sim.rates(movie, backend=backend), repeat)
    n_ref = min(n_frames, 300)
    err = _relerr(rates[:n_ref], reference.insilico_rates(sim, movie[:n_ref]))
    minutes = n_frames / 6000
    return BenchResult("insilico-minute", backend, sec / minutes, "s per simulated minute", sec, float("nan"), err,
                       f"{n_frames} frames, {sim.n_cells} cells, {len(sim._pixels)} simulated pixels")


def train_epoch(scale=1.0, repeat=1, backend="cpu", rate=None):
    """One Adam epoch of 30,000 windows (batch 500) on a natural-like movie with the simulator's rates."""
    from .insilico import InSilicoRetina
    from .train import TrainConfig, init_params, loss_and_grads, train

    movie = natural_movie(6000, seed=1).movie
    y = InSilicoRetina().rates(movie).astype(np.float32)
    x = (movie - movie.mean()) / movie.std()
    windows = max(int(30000 * scale), 500)
    cfg = TrainConfig(epochs=1, epoch_windows=windows, batch=500, segments=10, val_fraction=0.1)
    sec, res = _time(lambda: train(x, y, config=cfg, progress=False, backend=backend), repeat)
    # reference: one small batch's loss against a plain float64 einsum forward
    rng = np.random.default_rng(0)
    params, _ = init_params(cfg, y.shape[1], x.shape[1:], mean_rate=float(y.mean()), rng=rng)
    segs = [x[s:s + 2 + cfg.history - 1] for s in (100, 2000)]
    tgt = np.concatenate([y[s + cfg.history:s + cfg.history + 2] for s in (100, 2000)])
    ref_cfg = TrainConfig(**{**cfg.__dict__, "noise": 0.0})
    fast = loss_and_grads(params, segs, tgt, ref_cfg, want_grads=False)[0]
    err = abs(fast - reference.train_loss(params, segs, tgt, ref_cfg)) / abs(reference.train_loss(params, segs,
                                                                                                   tgt, ref_cfg))
    macs = 3 * (MAC_L1 + MAC_L2) + 3 * 5408 * y.shape[1]  # forward + two backward products per window
    frac = windows * 2 * macs / sec / rate if rate else float("nan")
    return BenchResult("train-epoch", backend, sec * 30000 / windows, "s / epoch", sec, frac, err,
                       f"{windows} windows, batch 500, {y.shape[1]} cells, val corr {res.best_val_corr:.2f}")


def osr_sweep(scale=1.0, repeat=1, backend="cpu", rate=None):
    """OSR sweep: flash trains with periods 2..20 frames x 10 intensities, pooled layer-1 attribution,
    100 midpoint steps, 5 cells each attributed separately (docs/performance.md)."""
    from .stimuli import flash_train

    model = RetinaCNN.random(5, seed=0)
    intensities = np.linspace(-1.0, -0.1, max(int(round(10 * scale)), 1))
    movies = [flash_train(10, p, intensity=float(c), duration=1, pre=model.history, post=40).movie
              for p in range(2, 21) for c in intensities]

    def run():
        out = []
        for m in movies:
            model.predict(m, backend=backend)
            out.append(attribute(model, m, layer="conv1", pool="space", n_steps=100, backend=backend,
                                 progress=False))
        return out

    sec, attrs = _time(run, repeat)
    a = attrs[-1]
    w, cell = a.delta.shape[0] // 2, 3
    ref = reference.conductance_conv1(model, movies[-1], w, cell, n_steps=100).sum(axis=(1, 2))
    err = _relerr(a.values[w, cell], ref)
    n_wc = sum(x.delta.size for x in attrs)
    return BenchResult("osr-sweep", backend, sec, "s total", sec, float("nan"), err,
                       f"{len(movies)} flash trains, {n_wc} window-cells, 100 steps, path {a.path}, "
                       f"max|delta|/range {max(x.relative_delta for x in attrs):.1e}")


def _noop(i):
    return i


def sweep_scale(scale=1.0, repeat=1, backend="cpu", rate=None):
    """One OSR sweep (periods x intensities, layer-1 attribution and reduction at every point, 25 steps) in
    process and on an embedded Dask cluster of 1 and 2 single-threaded workers; the scheduler's cost per task
    and the driver's cost per written point, from which bench/RESULTS.md projects a large cluster."""
    import os
    import tempfile

    from . import _threads
    from .distributed import local_client, run_items
    from .io import open_partial
    from .io.results import write_sweep_point
    from .sweep import sweep

    model = RetinaCNN.random(5, seed=0)
    grid = {"periods": list(range(4, 4 + 2 * max(int(round(10 * scale)), 1), 2)), "intensity": [-1.0, -0.5]}
    n = len(grid["periods"]) * 2
    sweep(model, "osr", {"periods": [4], "intensity": [-1.0]}, n_steps=25)   # warm-up (compilation)
    with _threads.num_threads(1):
        t = time.perf_counter()
        serial = sweep(model, "osr", grid, n_steps=25)
        one_thread = time.perf_counter() - t
    t = time.perf_counter()
    sweep(model, "osr", grid, n_steps=25)
    all_threads = time.perf_counter() - t
    figures, overhead = {}, float("nan")
    for workers in (1, 2):
        client = local_client(workers, threads=1, dashboard=False)
        try:
            t = time.perf_counter()
            res = sweep(model, "osr", grid, n_steps=25, client=client)
            figures[workers] = time.perf_counter() - t
            if workers == 2:
                stats = run_items(client, _noop, range(400), on_result=lambda i, v: None, max_batch=1)
                overhead = stats["task_overhead_s"]
        finally:
            cluster = client.cluster
            client.close()
            cluster.close()
    same = json.dumps(res.measures) == json.dumps(serial.measures)
    with tempfile.TemporaryDirectory() as tmp:
        f, _ = open_partial(os.path.join(tmp, "w.h5"), {"bench": 1}, fmt="retina-sweep", schema_version=2)
        t = time.perf_counter()
        for i, (pt, m, r) in enumerate(zip(serial.points, serial.measures, serial.results)):
            write_sweep_point(f, f"point{i:05d}", pt, m, r)
        write_s = (time.perf_counter() - t) / n
        f.close()
    point_s = one_thread / n
    detail = (f"{n} points; in process {n / one_thread:.2f} pt/s (1 thread), {n / all_threads:.2f} pt/s (all "
              f"threads); 1 worker {n / figures[1]:.2f} pt/s, 2 workers {n / figures[2]:.2f} pt/s "
              f"(speed-up {figures[1] / figures[2]:.2f}x); {point_s:.2f} s per point on one thread; scheduler "
              f"{overhead * 1e3:.1f} ms per task; driver write {write_s * 1e3:.1f} ms per point; "
              f"identical to in-process: {same}")
    return BenchResult("sweep-scale", "cpu", n / figures[2], "points/s (2 wkr)", figures[2], float("nan"),
                       0.0 if same else float("inf"), detail)


WORKLOADS = {"forward-movie": forward_movie, "ig-hidden": ig_hidden, "ig-input": ig_input,
             "osr-sweep": osr_sweep, "insilico-minute": insilico_minute, "train-epoch": train_epoch,
             "sweep-scale": sweep_scale}


def run_workload(name, *, scale=1.0, repeat=None, backend="cpu", rate=None):
    fn = WORKLOADS[name]
    kwargs = dict(scale=scale, backend=backend, rate=rate)
    if repeat is not None:
        kwargs["repeat"] = repeat
    return fn(**kwargs)
