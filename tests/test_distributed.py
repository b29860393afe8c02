"""Scale-out on Dask: the same arrays on a 2-process LocalCluster as in-process, faults, the CLI, shards.

Every comparison is exact (``np.array_equal``): each grid point, window batch,
simulation chunk or seed is computed by the same code on a worker as in this
process, so nothing may differ, not even in the last bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from retina import attribute, set_num_threads  # noqa: E402
from retina._threads import get_num_threads  # noqa: E402
from retina.cli import main  # noqa: E402
from retina.datasets import simulate_dataset  # noqa: E402
from retina.distributed import connect, local_client  # noqa: E402
from retina.insilico import InSilicoRetina  # noqa: E402
from retina.model import RetinaCNN  # noqa: E402
from retina.sweep import load_sweep, read_conditions, sweep  # noqa: E402
from retina.train import TrainConfig, train_ensemble  # noqa: E402


@pytest.fixture(scope="module")
def client():
    c = local_client(2, dashboard=False)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


def same_h5(a, b, skip=()):
    """Paths of datasets whose contents differ between two HDF5 files (NaN equal to NaN)."""
    bad = []
    with h5py.File(a, "r") as f, h5py.File(b, "r") as g:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not any(name.startswith(s) for s in skip):
                x, y = obj[()], g[name][()]
                eq = np.array_equal(x, y, equal_nan=True) if getattr(x, "dtype", None) is not None \
                    and x.dtype.kind == "f" else np.array_equal(x, y)
                if not eq:
                    bad.append(name)
        f.visititems(visit)
        missing = set()
        g.visit(lambda n: missing.add(n) if n not in f else None)
    return bad + sorted(missing)


NET = RetinaCNN.random(3, seed=1)
GRID = {"periods": [4, 8], "intensity": [-1.0, -0.5]}


def test_importing_retina_does_not_import_dask():
    code = "import sys, retina, retina.sweep, retina.attribution, retina.cli; print('distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_dask_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)   # import distributed now raises ImportError
    with pytest.raises(ImportError, match=r"retina\[dist\]"):
        sweep(NET, "osr", GRID, client=object(), n_steps=2)
    r = CliRunner().invoke(main, ["sweep", "random", "osr", "-p", "periods=4", "--workers", "2", "-q"])
    assert r.exit_code != 0 and "retina[dist]" in r.output and "Traceback" not in r.output


def test_client_argument_is_checked(client):
    with pytest.raises(ValueError, match="client must be a dask.distributed.Client"):
        attribute(NET, np.zeros((41, 50, 50), np.float32), client="tcp://nowhere")


def test_sweep_on_the_cluster_equals_the_serial_sweep(client, tmp_path):
    serial = sweep(NET, "osr", GRID, out=tmp_path / "a.h5", n_steps=4)
    spread = sweep(NET, "osr", GRID, out=tmp_path / "b.h5", n_steps=4, client=client)
    assert spread.stats["items"] == 4 and spread.stats["tasks"] >= 1
    assert json.dumps(serial.measures) == json.dumps(spread.measures)   # NaN-safe exact comparison
    assert same_h5(tmp_path / "a.h5", tmp_path / "b.h5") == []


@pytest.mark.parametrize("layer,pool,keep", [("conv1", None, False), ("conv2", "space", False),
                                             ("input", None, True)])
def test_attribution_on_the_cluster_equals_the_serial_one(client, layer, pool, keep):
    movie = np.random.default_rng(5).standard_normal((150, 50, 50)).astype(np.float32)
    a = attribute(NET, movie, layer=layer, pool=pool, n_steps=3, batch=16, keep_windows=keep)
    b = attribute(NET, movie, layer=layer, pool=pool, n_steps=3, batch=16, keep_windows=keep, client=client)
    for k in ("values", "delta", "response", "baseline_response"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    if keep:
        assert np.array_equal(a.per_window, b.per_window)


def test_simulated_dataset_on_the_cluster_is_the_same_file(client, tmp_path):
    kw = dict(train_minutes=0.5, test_clips=3, clip_s=1.0, repeats=2, chunk_s=5.0, seed=4)
    simulate_dataset(tmp_path / "a.h5", "whitenoise", **kw)
    simulate_dataset(tmp_path / "b.h5", "whitenoise", client=client, **kw)
    assert same_h5(tmp_path / "a.h5", tmp_path / "b.h5") == []


def tiny_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 10, 10)).astype(np.float32)
    y = rng.poisson(2.0, (400, 2)).astype(np.float32)
    cfg = TrainConfig(channels=(2, 2), kernel_sizes=(5, 3), history=8, epochs=2, epoch_windows=100, batch=50,
                      segments=1)
    return x, y, cfg


def test_ensemble_seeds_train_alike_everywhere_and_resume(client, tmp_path):
    x, y, cfg = tiny_data()
    local = train_ensemble(x, y, [0, 1, 2], config=cfg)
    spread = train_ensemble(x, y, [0, 1, 2], config=cfg, client=client, out=tmp_path / "m{seed}.h5")
    assert [r.model.content_hash() for r in local] == [r.model.content_hash() for r in spread]
    assert len({r.model.content_hash() for r in local}) == 3          # the seeds differ
    kept = train_ensemble(x, y, [0, 1, 2], config=cfg, out=tmp_path / "m{seed}.h5")
    assert [r.stopped for r in kept] == ["kept"] * 3
    assert [r.model.content_hash() for r in kept] == [r.model.content_hash() for r in local]
    other = train_ensemble(x[:300], y[:300], [0], config=cfg, out=tmp_path / "m{seed}.h5")   # other data: retrained
    assert other[0].stopped != "kept"
    with pytest.raises(ValueError, match="distinct"):
        train_ensemble(x, y, [1, 1], config=cfg)


def test_recipe_seeds_on_the_cluster_are_the_seeds_run_here_and_resume(client, tmp_path):
    from retina.io import load_model
    from retina.train.recipe import parse_recipe, run, run_seeds

    stream = {"minutes": 0.3, "test_clips": 1, "clip_seconds": 2, "repeats": 2}
    recipe = parse_recipe({
        "name": "tiny-seeds", "seed": 0, "response": "rate", "val_share": 0.1,
        "streams": {"natural": {"kind": "naturalscene", "seed": 0, **stream},
                    "whitenoise": {"kind": "whitenoise", "seed": 1, **stream}},
        "stages": [{"name": "base", "epochs": 1, "windows": 300, "lr": 2e-3, "seed": 0, "init": "none"}],
    }, source="tiny-seeds")
    out = tmp_path / "ensemble"
    fits = run_seeds(recipe, out, [0, 1], client=client)
    assert list(fits) == [0, 1] and (out / "data" / "natural.h5").exists()
    assert not (out / "seed0" / "natural.h5").exists()                  # the datasets are shared, made once
    models = [load_model(out / f"seed{s}" / "model.h5") for s in (0, 1)]
    assert models[0].content_hash() != models[1].content_hash()      # independent seeds
    assert [str(m.metadata["seed"]) for m in models] == ["0", "1"]
    here, report = run(recipe, tmp_path / "here", seed=1, data_dir=out / "data")
    assert here.content_hash() == models[1].content_hash()           # a seed on a worker is the seed run here
    assert set(fits[1]) >= {"natural", "whitenoise", "validation", "validation_loss"}
    assert np.isfinite(fits[1]["validation_loss"]) and fits[1]["natural"] == pytest.approx(
        report["test_natural"]["mean_corr"])
    again = run_seeds(recipe, out, [0, 1])                           # finished seeds resume: the same models
    assert again == fits
    assert load_model(out / "seed0" / "model.h5").content_hash() == models[0].content_hash()
    with pytest.raises(ValueError, match="distinct"):
        run_seeds(recipe, out, [1, 1])


def test_a_failing_point_is_named_and_finished_points_are_kept(client, tmp_path):
    out = tmp_path / "s.h5"
    conditions = [{"periods": [4]}, {"periods": [6]}, {"periods": [-3]}, {"periods": [8]}]
    with pytest.raises(RuntimeError, match=r"point 2 \{'periods': \[-3\]\}"):
        sweep(NET, "osr", conditions=conditions, out=out, n_steps=2, explain=False, client=client)
    with h5py.File(out.with_name("s.h5.partial"), "r") as f:
        done = sorted(k for k in f if k.startswith("point") and f[k].attrs.get("done"))
    assert done == ["point00000", "point00001", "point00003"]   # the others ran alongside and were written


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(RuntimeError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'"):
        connect("tcp://127.0.0.1:1", timeout=1)
    r = CliRunner().invoke(main, ["sweep", "random", "osr", "-p", "periods=4", "--scheduler", "tcp://127.0.0.1:1",
                                  "-q"])
    assert r.exit_code != 0 and "cannot reach the Dask scheduler" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["sweep", "random", "osr", "-p", "periods=4", "--scheduler", "nowhere", "-q"])
    assert r.exit_code != 0 and "scheduler file" in r.output


def test_a_killed_worker_has_its_points_rerun_and_the_file_is_complete(tmp_path):
    grid = {"periods": [4, 6, 8, 10, 12, 14], "intensity": [-1.0]}
    serial = sweep(NET, "osr", grid, out=tmp_path / "a.h5", n_steps=12)
    c = local_client(2, dashboard=False)
    try:
        pids = c.run(os.getpid)
        killed = []

        def kill_one():
            time.sleep(1.5)
            pid = next(iter(pids.values()))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        threading.Thread(target=kill_one, daemon=True).start()
        spread = sweep(NET, "osr", grid, out=tmp_path / "b.h5", n_steps=12, client=c)
    finally:
        cluster = c.cluster
        c.close()
        cluster.close()
    assert killed, "the worker was not killed during the sweep"
    assert json.dumps(serial.measures) == json.dumps(spread.measures)
    assert same_h5(tmp_path / "a.h5", tmp_path / "b.h5") == []


def test_a_killed_driver_resumes_with_its_finished_points(tmp_path):
    out = tmp_path / "s.h5"
    args = [sys.executable, "-m", "retina.cli", "sweep", "random", "osr", "-p", "periods=4,6,8,10,12,14",
            "--steps", "12", "--workers", "2", "-q", "-o", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    partial = out.with_name("s.h5.partial")
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with h5py.File(partial, "r", locking=False) as f:
                done = sum(1 for k in f if k.startswith("point") and f[k].attrs.get("done"))
        except (OSError, KeyError):
            continue
        if done >= 2:
            break
    os.killpg(proc.pid, signal.SIGKILL)   # the driver and its embedded cluster
    proc.wait()
    assert done >= 2 and not out.exists()
    r = CliRunner().invoke(main, ["sweep", "random", "osr", "-p", "periods=4,6,8,10,12,14", "--steps", "12", "-q",
                                  "-o", str(out)])
    assert r.exit_code == 0, r.output
    fresh = sweep(RetinaCNN.random(5, seed=0), "osr", {"periods": [4, 6, 8, 10, 12, 14]}, n_steps=12)
    assert json.dumps(load_sweep(out).measures) == json.dumps(fresh.measures)


def test_cli_sweep_with_workers_matches_the_serial_file(tmp_path):
    base = ["sweep", "random", "latency", "-p", "intensities=-1,-0.5,-0.25", "--no-explain", "-q"]
    assert CliRunner().invoke(main, base + ["-o", str(tmp_path / "a.h5")]).exit_code == 0
    r = CliRunner().invoke(main, base + ["-o", str(tmp_path / "b.h5"), "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert same_h5(tmp_path / "a.h5", tmp_path / "b.h5") == []


def test_shards_merge_into_the_unsharded_sweep(tmp_path):
    grid = {"intensities": [-1.0, -0.75, -0.5, -0.25, -0.1]}
    whole = sweep(RetinaCNN.random(5, seed=0), "latency", grid, out=tmp_path / "whole.h5", explain=False)
    for i in range(3):
        r = CliRunner().invoke(main, ["sweep", "random", "latency", "-p", "intensities=-1,-0.75,-0.5,-0.25,-0.1",
                                      "--no-explain", "-q", "--shard", f"{i}/3", "-o", str(tmp_path / f"s{i}.h5")])
        assert r.exit_code == 0, r.output
    shards = [str(tmp_path / f"s{i}.h5") for i in range(3)]
    r = CliRunner().invoke(main, ["sweep-merge", str(tmp_path / "merged.h5")] + shards[:2])
    assert r.exit_code != 0 and "missing shard(s) [2]" in r.output
    r = CliRunner().invoke(main, ["sweep-merge", str(tmp_path / "merged.h5")] + shards + [shards[0]])
    assert r.exit_code != 0 and "given twice" in r.output
    other = tmp_path / "other.h5"
    r = CliRunner().invoke(main, ["sweep", "random", "latency", "-p", "intensities=-1,-0.5,-0.3", "--no-explain",
                                  "-q", "--shard", "2/3", "-o", str(other)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["sweep-merge", str(tmp_path / "merged.h5")] + shards[:2] + [str(other)])
    assert r.exit_code != 0 and "belongs to another sweep" in r.output
    r = CliRunner().invoke(main, ["sweep-merge", str(tmp_path / "merged.h5")] + shards)
    assert r.exit_code == 0, r.output
    merged = load_sweep(tmp_path / "merged.h5")
    assert json.dumps(merged.measures) == json.dumps(whole.measures) and merged.grid == whole.grid
    assert same_h5(tmp_path / "whole.h5", tmp_path / "merged.h5") == []


def test_conditions_file_models_lesions_and_simulator_parameters(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("intensities,lesion\n-1,none\n-0.5,A1\n-0.25,ONs+A1\n")
    conds = read_conditions(csv)
    assert conds == [{"intensities": -1, "lesion": "none"}, {"intensities": -0.5, "lesion": "A1"},
                     {"intensities": -0.25, "lesion": "ONs+A1"}]
    sim = InSilicoRetina()
    res = sweep(sim, "latency", conditions=conds, out=tmp_path / "c.h5")
    direct = InSilicoRetina(lesion=["ONs", "A1"])
    alone = sweep(direct, "latency", {"intensities": [-0.25]})
    assert json.dumps(res.measures[2]) == json.dumps(alone.measures[0])
    assert res.shape == (3,)
    js = tmp_path / "c.json"
    js.write_text(json.dumps([{"intensities": -1.0, "sim.tau_membrane_ms": 20.0}]))
    assert read_conditions(js)[0]["sim.tau_membrane_ms"] == 20.0
    two = sweep({"a": NET, "b": RetinaCNN.random(3, seed=2)}, "latency", {"intensities": [-1.0, -0.5]},
                explain=False)
    assert two.shape == (2, 2) and two.points[0] == {"model": "a", "intensities": -1.0}
    with pytest.raises(ValueError, match="in-silico retina only"):
        sweep(NET, "latency", {"intensities": [-1.0], "lesion": ["A1"]})
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        sweep(sim, "latency", {"intensities": [-1.0], "sim.nope": [1.0]})
    (tmp_path / "bad.csv").write_text("intensities\n")
    with pytest.raises(ValueError, match="at least one condition"):
        read_conditions(tmp_path / "bad.csv")
    r = CliRunner().invoke(main, ["sweep", "insilico", "latency", "--grid", str(csv), "-q", "-o",
                                  str(tmp_path / "cli.h5")])
    assert r.exit_code == 0, r.output
    assert json.dumps(load_sweep(tmp_path / "cli.h5").measures) == json.dumps(res.measures)


def test_one_thread_setting_for_numba_and_fft():
    import numba

    from retina.kernels.cpu import _kw

    previous = set_num_threads(1)
    try:
        assert get_num_threads() == 1 and numba.get_num_threads() == 1 and _kw(None)["workers"] == 1
    finally:
        set_num_threads(None)
    assert get_num_threads() == previous
    with pytest.raises(ValueError, match="n must be <="):
        set_num_threads(10_000)
    with pytest.raises(ValueError, match="n must be an integer"):
        set_num_threads(1.5)


@pytest.mark.parametrize("threads", [1, 2])
def test_run_chunks_covers_the_range_once_and_raises_what_a_chunk_raises(threads):
    from retina._threads import num_threads, run_chunks

    with num_threads(min(threads, get_num_threads())):
        for n in (0, 1, 7, 100):
            seen: list = []
            run_chunks(n, lambda lo, hi, seen=seen: seen.extend(range(lo, hi)))
            assert sorted(seen) == list(range(n))

        def bad(lo, hi):
            if hi == 50:   # the last chunk, serial or not
                raise RuntimeError("chunk failed")
        with pytest.raises(RuntimeError, match="chunk failed"):
            run_chunks(50, bad)


def test_a_failing_chunk_sets_stop_so_the_other_threads_end_early():
    """run_chunks(stop=...): the event is set when a chunk raises (as a Ctrl-C in the caller's chunk does), and a
    chunk that loops over items and checks it ends early instead of finishing its items."""
    import threading

    from retina._threads import num_threads, run_chunks

    if get_num_threads() < 2:
        pytest.skip("needs two kernel threads")
    stop, done, started = threading.Event(), [], threading.Barrier(2)

    def work(lo, hi):
        if lo == 0:
            started.wait(timeout=10)
            raise KeyboardInterrupt
        started.wait(timeout=10)
        for i in range(lo, hi):
            if stop.wait(timeout=0.01):
                return
            done.append(i)

    with num_threads(2):
        with pytest.raises(KeyboardInterrupt):
            run_chunks(80, work, threads=2, stop=stop)   # chunks of ten items: [0, 10), [10, 20), ...
    assert stop.is_set() and len(done) < 10          # the other chunk did not finish its ten items


def test_serial_holds_this_thread_alone_and_restores_it():
    import threading

    import numba

    from retina._threads import serial

    outer = get_num_threads()
    seen = {}
    with serial():
        assert get_num_threads() == 1 and numba.get_num_threads() == 1
        other = threading.Thread(target=lambda: seen.setdefault("other", get_num_threads()))
        other.start()
        other.join()
        with serial():
            pass
        assert get_num_threads() == 1          # a nested block does not end the outer one
    assert seen["other"] == outer and get_num_threads() == outer and numba.get_num_threads() == outer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_gives_the_same_bits_on_one_thread_and_on_batches_spread_over_threads(rng, dtype):
    from retina._threads import num_threads

    model = RetinaCNN.random(3, seed=int(rng.integers(1000)))
    movie = rng.standard_normal((model.history + 300, 50, 50)).astype(dtype)
    spread = model.predict(movie, batch=70, dtype=dtype)         # five batches
    with num_threads(1):
        one = model.predict(movie, batch=70, dtype=dtype)
    np.testing.assert_array_equal(spread, one)
    np.testing.assert_allclose(spread, model.predict(movie, dtype=dtype), rtol=1e-5)   # one batch


def test_cli_simulate_attribute_and_seeds_on_workers(tmp_path):
    base = ["simulate", "--kind", "whitenoise", "--noise-minutes", "0.1", "--test-clips", "2", "--clip-seconds",
            "0.5", "--repeats", "2", "-q"]
    assert CliRunner().invoke(main, base + ["-o", str(tmp_path / "a")]).exit_code == 0
    r = CliRunner().invoke(main, base + ["-o", str(tmp_path / "b"), "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert same_h5(tmp_path / "a" / "whitenoise.h5", tmp_path / "b" / "whitenoise.h5") == []
    data = str(tmp_path / "a" / "whitenoise.h5")
    att = ["attribute", "random", data, "--dataset", "train/stimulus", "--steps", "3", "-q"]
    assert CliRunner().invoke(main, att + ["-o", str(tmp_path / "a1.h5")]).exit_code == 0
    r = CliRunner().invoke(main, att + ["-o", str(tmp_path / "a2.h5"), "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert same_h5(tmp_path / "a1.h5", tmp_path / "a2.h5") == []
    tr = ["train", data, "--epochs", "1", "--epoch-windows", "40", "--batch", "20", "--channels", "2,2",
          "--cells", "0,9", "--seeds", "3,4", "-q"]
    r = CliRunner().invoke(main, tr + ["-o", str(tmp_path / "m{seed}.h5"), "--workers", "2"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, tr + ["-o", str(tmp_path / "serial.h5")])
    assert r.exit_code == 0, r.output
    from retina import load_model

    for s in (3, 4):
        a, b = load_model(tmp_path / f"m{s}.h5"), load_model(tmp_path / f"serial-seed{s}.h5")
        assert a.content_hash() == b.content_hash()
    r = CliRunner().invoke(main, ["train", data, "--workers", "2", "-q"])
    assert r.exit_code != 0 and "--seeds" in r.output
