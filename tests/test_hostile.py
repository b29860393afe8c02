"""Hostile inputs, concurrent writers, kills and full disks: every bad input ends in one clear message.

A fuzz suite in four parts: property-based tries on the API (hypothesis), a table of bad command lines,
crafted HDF5 files, and concurrency/kill/interrupt/full-disk runs. Every failure must be one line naming the
argument or file, with a non-zero exit; never a traceback, a hang, a crash or lost data.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retina import RetinaCNN, attribute, load_model
from retina.cli import main
from retina.datasets import load_dataset, simulate_dataset
from retina.insilico import InSilicoParams, InSilicoRetina

TINY = RetinaCNN.random(2, seed=0, channels=(2, 2), kernel_sizes=(3, 3), history=4, frame_shape=(8, 8))
CLEAN = (ValueError, FloatingPointError, FileNotFoundError)


def cli(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in r.output
    return r


# ------------------------------------------------------------------ the API, property-based
ARRAYS = st.builds(
    lambda dtype, shape, fill: np.full(shape, fill).astype(dtype) if dtype != "bool" else np.zeros(shape, bool),
    st.sampled_from(["float32", "float64", "float16", "int16", "bool", "complex64"]),
    st.lists(st.integers(0, 12), min_size=0, max_size=4).map(tuple),
    st.sampled_from([0.0, 1.0, -1.0, np.nan, np.inf, 1e38, 1e33, -1e30]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ARRAYS)
def test_predict_takes_any_array_or_says_why(movie):
    try:
        out = TINY.predict(movie)
    except CLEAN as exc:
        assert str(exc)
        return
    assert np.isfinite(out).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer=st.sampled_from(["input", "conv1", "conv2", "conv3", 3]),
       pool=st.sampled_from([None, "space", "rows", (0,), (1, 2), (5,), (-1,), ("a",), (True,), "cols"]),
       cells=st.sampled_from([None, 0, 1, 2, -3, [0, 1], [], [5], np.array([0.5, 0.5]), np.array([1.0]), "all"]),
       n_steps=st.sampled_from([1, 3, 0, -1, 2.5, 10**6, None]),
       baseline=st.sampled_from([None, 0.0, np.nan, "grey", 1e40]),
       kinks=st.sampled_from(["secant", "node", "both"]))
def test_attribute_takes_any_settings_or_says_why(layer, pool, cells, n_steps, baseline, kinks):
    movie = np.random.default_rng(0).standard_normal((7, 8, 8)).astype(np.float32)
    try:
        a = attribute(TINY, movie, layer=layer, pool=pool, cells=cells, n_steps=n_steps, baseline=baseline,
                      kinks=kinks)
    except CLEAN as exc:
        assert str(exc)
        return
    assert np.isfinite(a.values).all() and np.isfinite(a.delta).all()


PARAM_NAMES = ["gain", "sigma_center_px", "tau_membrane_ms", "beta", "truncate", "U_amacrine", "gain_control"]


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(PARAM_NAMES),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3), st.none(),
                       st.booleans(), st.lists(st.integers(), max_size=2)))
def test_simulator_parameters_are_validated(name, value):
    d = InSilicoParams.default().to_dict()
    d[name] = value
    try:
        InSilicoRetina(d)
    except ValueError as exc:
        assert name in str(exc) or "parameter" in str(exc)


# ------------------------------------------------------------------ the command line, table-driven
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    path = simulate_dataset(d / "wn.h5", "whitenoise", train_minutes=0.05, test_clips=1, clip_s=0.5, repeats=2)
    params = {"bad.json": "{not json", "nan.json": '{"gain": NaN}', "type.json": '{"gain": "high"}',
              "unknown.json": '{"speed_of_light": 3}', "list.json": "[1, 2]"}
    for name, text in params.items():
        (d / name).write_text(text)
    (d / "bad.csv").write_text("intensities\n-1,2\n")
    return d, path


CASES = [
    (["predict", "random", "--frames", "10000000000", "-o", "{d}/p.h5"], "needs about"),
    (["random-model", "-o", "{d}/m.h5", "--cells", "1000000000"], "needs about"),
    (["stimulus", "natural", "-o", "{d}/s.h5", "--frames", "10000000000"], "needs about"),
    (["stimulus", "natural", "-o", "{d}/s.h5", "-p", "canvas=1000000"], "needs about"),
    (["--max-memory", "1K", "predict", "random", "--frames", "500", "-o", "{d}/p.h5"], "needs about"),
    (["--max-memory", "lots", "info", "default"], "--max-memory"),
    (["attribute", "random", "{data}", "--steps", "1000000000000", "-o", "{d}/a.h5"], "n_steps must be <="),
    (["simulate", "-o", "{d}/sim", "--kind", "whitenoise", "--noise-minutes", "inf"], "must be a finite number"),
    (["simulate", "-o", "{d}/sim", "--kind", "whitenoise", "--noise-minutes", "0.01", "--repeats", "1000000000"],
     "repeats must be <="),
    (["simulate", "-o", "{d}/sim", "--params", "{d}/bad.json"], "not valid JSON"),
    (["simulate", "-o", "{d}/sim", "--params", "{d}/nan.json"], "NaN is not a number"),
    (["simulate", "-o", "{d}/sim", "--params", "{d}/type.json"], "gain must be a number"),
    (["simulate", "-o", "{d}/sim", "--params", "{d}/unknown.json"], "unknown in-silico parameters"),
    (["simulate", "-o", "{d}/sim", "--params", "{d}/list.json"], "must hold a JSON object"),
    (["simulate", "-o", "{d}/sim", "--params", "osr-of"], "a simulator must be one of"),
    (["explain", "planted", "-o", "{d}/ex", "--params", "{d}/none.json"], "No such file"),
    (["train", "{data}", "--seed", "-1", "-o", "{d}/t.h5"], "--seed"),
    (["train", "{data}", "--channels", "0,0", "-o", "{d}/t.h5"], "channels must be"),
    (["train", "{data}", "--lr", "1e30", "-o", "{d}/t.h5"], "lr must be in"),
    (["train", "{data}", "-o", "{data}"], "is also an input"),
    (["train", "{data}", "--response", "spikes", "-o", "{d}/t.h5"], "firing_rate_*"),
    (["train", "{data}", "--cells", "0,x", "-o", "{d}/t.h5"], "--cells"),
    (["sweep", "random", "osr", "-p", "cells=99", "--no-explain", "-o", "{d}/sw.h5"], "cells must be indices"),
    (["sweep", "random", "latency", "--grid", "{d}/bad.csv", "-o", "{d}/sw.h5"], "2 values for 1 columns"),
    (["sweep", "random", "latency", "-o", "{d}/sw.h5"], "either with -p"),
    (["sweep", "random", "latency", "-p", "intensities=-1", "--shard", "3/2", "-o", "{d}/sw.h5"], "I/N"),
    (["sweep-merge", "{d}/m.h5", "{d}/m.h5"], "is also an input"),
    (["import", "{data}", "-o", "{data}"], "is also an input"),
    (["explain", "{d}/nothing.h5"], "not found"),
    (["info", "{d}"], "directory"),
    (["predict", "random", "-o", "{d}"], "is a directory"),
    (["stimulus", "natural", "-o", "{data}/x.h5"], "not a folder"),
    (["attribute", "random", "{d}/none.h5", "-o", "{d}/a.h5"], "not found"),
    (["predict", "random", "--stimulus", "{d}/bad.json", "-o", "{d}/p.h5"], "not a readable HDF5"),
]


@pytest.mark.parametrize("args, expected", CASES, ids=[" ".join(c[0][:3]) for c in CASES])
def test_bad_command_lines_end_in_one_clear_line(data, args, expected):
    d, path = data
    r = cli(*[a.format(d=d, data=path) for a in args])
    assert r.exit_code != 0, r.output
    assert expected in r.output, r.output
    assert len([ln for ln in r.output.splitlines() if ln.startswith("Error")]) == 1


def test_documented_edge_values_work(data, tmp_path):
    _, path = data
    r = cli("simulate", "-o", tmp_path / "s", "--kind", "whitenoise", "--noise-minutes", "0.02", "--test-clips", "0",
            "-q")
    assert r.exit_code == 0, r.output
    assert load_dataset(tmp_path / "s" / "whitenoise.h5", "train").stimulus.shape[0] == 120


def test_a_simulator_is_named_or_given_by_file(tmp_path):
    """``--params`` takes a packaged simulator by name as well as a file; the dataset records which."""
    import h5py

    from retina.datasets import simulated_params
    from retina.insilico import InSilicoParams, simulator_name

    r = cli("simulate", "-o", tmp_path / "s", "--kind", "whitenoise", "--noise-minutes", "0.02", "--test-clips", "0",
            "--params", "osr-onf", "-q")
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "s" / "whitenoise.h5") as f:
        params = simulated_params(f.attrs)
    assert simulator_name(InSilicoParams.from_dict(params)) == "osr-onf"


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, tmp_path):
    import retina.io as rio

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "s.h5"))

    monkeypatch.setattr(rio, "save_stimulus", full)
    r = cli("stimulus", "natural", "--frames", "10", "-o", tmp_path / "s.h5")
    assert r.exit_code == 1 and "the disk is full" in r.output and "rerun the same command" in r.output

    def boom(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(rio, "save_stimulus", boom)
    r = cli("stimulus", "natural", "--frames", "10", "-o", tmp_path / "s.h5")
    assert r.exit_code == 1 and "KeyError" in r.output and "--debug" in r.output
    r = CliRunner().invoke(main, ["--debug", "stimulus", "natural", "--frames", "10", "-o", str(tmp_path / "s.h5")])
    assert isinstance(r.exception, KeyError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: a read-only folder cannot be tested as root")
def test_read_only_output_folder_is_refused_up_front(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = cli("stimulus", "natural", "--frames", "10", "-o", ro / "s.h5")
        assert r.exit_code != 0 and "not writable" in r.output
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------ crafted HDF5 files
@pytest.fixture()
def model_file(tmp_path):
    return TINY.save(tmp_path / "m.h5")


def _edit(path, fn):
    with h5py.File(path, "a") as f:
        fn(f)
    return path


def _external_link(f):
    other = Path(f.filename).with_name("other.h5")
    with h5py.File(other, "w") as g:
        g["w"] = f["weights/w1"][()]
    del f["weights/w1"]
    f["weights/w1"] = h5py.ExternalLink(str(other), "/w")


def _soft_link(f):
    f["weights/alias"] = h5py.SoftLink("/weights/w1")


def _virtual(f):
    w = f["weights/w1"][()]
    other = Path(f.filename).with_name("src.h5")
    with h5py.File(other, "w") as g:
        g["w"] = w
    layout = h5py.VirtualLayout(shape=w.shape, dtype=w.dtype)
    layout[...] = h5py.VirtualSource(str(other), "w", shape=w.shape)
    del f["weights/w1"]
    f["weights"].create_virtual_dataset("w1", layout)


def _external_storage(f):
    w = f["weights/w1"][()]
    raw = Path(f.filename).with_name("raw.bin")
    raw.write_bytes(w.tobytes())
    del f["weights/w1"]
    f["weights"].create_dataset("w1", shape=w.shape, dtype=w.dtype, external=[(str(raw), 0, w.nbytes)])


def _huge(f):
    del f["weights/w3"]
    f["weights"].create_dataset("w3", shape=(2, 10**12), dtype="f8", chunks=(1, 1024))


def _group(f):
    del f["weights/w2"]
    f["weights"].create_group("w2")


def _empty(f):
    del f["weights/scale3"]
    f["weights"].create_dataset("scale3", data=h5py.Empty("f8"))


def _no_hash(f):
    del f.attrs["content_hash"]


def _bad_attr(f):
    f.attrs["history"] = -4


HOSTILE = [(_external_link, "external links are refused"), (_soft_link, "soft link"), (_virtual, "is virtual"),
           (_external_storage, "external files"), (_huge, "must have shape"), (_group, "must be a dataset"),
           (_empty, "must be a numeric array"), (_no_hash, "has no content_hash"), (_bad_attr, "out of range")]


@pytest.mark.parametrize("edit, expected", HOSTILE, ids=[h[0].__name__ for h in HOSTILE])
def test_crafted_model_files_are_refused(model_file, edit, expected):
    _edit(model_file, edit)
    with pytest.raises(ValueError, match=expected):
        load_model(model_file)
    r = cli("info", model_file)
    assert r.exit_code != 0 and expected.split()[0] in r.output


def test_a_file_without_hash_loads_for_recovery_only(model_file):
    _edit(model_file, _no_hash)
    assert load_model(model_file, verify_hash=False).n_cells == 2


def test_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "retina.cli", "info", str(fifo)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "not a regular file" in out.stderr and time.time() - t0 < 60


def test_crafted_dataset_files_are_refused(tmp_path):
    path = simulate_dataset(tmp_path / "d.h5", "whitenoise", train_minutes=0.02, test_clips=1, clip_s=0.2,
                            repeats=1)
    with h5py.File(path, "a") as f:
        stim = f["train/stimulus"]
        other = tmp_path / "elsewhere.h5"
        with h5py.File(other, "w") as g:
            g["s"] = stim[()]
        del f["train/stimulus"]
        f["train/stimulus"] = h5py.ExternalLink(str(other), "/s")
    with pytest.raises(ValueError, match="external links are refused"):
        load_dataset(path)
    big = tmp_path / "big.h5"
    with h5py.File(big, "w") as f:
        f.create_dataset("train/stimulus", shape=(10**9, 50, 50), dtype="u1", chunks=(1, 50, 50))
        f.create_dataset("train/response/firing_rate_10ms", shape=(1, 10**9), dtype="f4", chunks=(1, 100))
    with pytest.raises(ValueError, match="needs about"):
        load_dataset(big)


# ------------------------------------------------------------------ writers, kills, interrupts, full disks
def _simulate_args(out, minutes="0.5"):
    return [sys.executable, "-m", "retina.cli", "simulate", "-o", str(out), "--kind", "whitenoise",
            "--noise-minutes", minutes, "--test-clips", "2", "--clip-seconds", "1", "--repeats", "2", "-q"]


def _arrays(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    subprocess.run(_simulate_args(d), check=True, timeout=300)
    return _arrays(d / "whitenoise.h5")


def test_a_second_writer_on_the_same_output_is_refused(tmp_path, reference_run):
    first = subprocess.Popen(_simulate_args(tmp_path, "1.5"), stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "whitenoise.h5.partial"
    deadline = time.time() + 60
    while not partial.exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(_simulate_args(tmp_path, "1.5"), capture_output=True, text=True, timeout=120)
    assert second.returncode != 0 and "being written by another run" in second.stderr
    assert first.wait(timeout=300) == 0
    assert load_dataset(tmp_path / "whitenoise.h5").stimulus.shape[0] == 9000


@pytest.mark.parametrize("delay", [0.3, 1.0, 1.8, 2.6])
def test_killed_simulation_resumes_to_the_uninterrupted_arrays(tmp_path, reference_run, delay):
    proc = subprocess.Popen(_simulate_args(tmp_path), stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(_simulate_args(tmp_path), check=True, timeout=300)
    assert _same(_arrays(tmp_path / "whitenoise.h5"), reference_run)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_a_chunk_cut_mid_write_is_detected_and_redone(tmp_path):
    """Corrupt the compressed bytes of a finished chunk in the partial file (what a kill between a chunk's
    write and its flush can leave): the rerun must not fail on it, and must reach the uninterrupted arrays."""
    kw = dict(train_minutes=0.2, test_clips=2, clip_s=0.5, repeats=2, chunk_s=2.0, seed=3)
    whole = _arrays(simulate_dataset(tmp_path / "whole.h5", "whitenoise", **kw))
    sim = InSilicoRetina()
    real, calls = sim.run, {"n": 0}

    def dies(movie, **k):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return real(movie, **k)

    sim.run = dies
    out = tmp_path / "cut.h5"
    with pytest.raises(KeyboardInterrupt):
        simulate_dataset(out, "whitenoise", retina=sim, **kw)
    del sim.run
    partial = tmp_path / "cut.h5.partial"
    with h5py.File(partial, "r") as f:
        assert int(f["_resume"].attrs["train_done"]) == 4
        info = f["train/stimulus"].id.get_chunk_info(0)
    with open(partial, "r+b") as fh:                  # garble a finished chunk's compressed bytes
        fh.seek(info.byte_offset + 8)
        fh.write(os.urandom(min(512, info.size - 8)))
    with h5py.File(partial, "r") as f, pytest.raises(OSError):
        f["train/stimulus"][:10]                      # what used to make every rerun fail
    assert _same(_arrays(simulate_dataset(out, "whitenoise", **kw)), whole)


@pytest.mark.parametrize("command", ["predict", "attribute"])
def test_ctrl_c_stops_a_long_command_within_a_second_or_two(tmp_path, command):
    import threading

    from retina.io import save_stimulus

    env = {k: v for k, v in os.environ.items() if k != "RETINA_NO_PROGRESS"}   # the progress bar says "running"
    if command == "predict":
        args = ["predict", "random", "--frames", "60000", "-o", str(tmp_path / "p.h5")]
    else:   # strong binary noise: almost every ReLU switches along the path, the kernel's slowest case
        movie = np.random.default_rng(0).choice([-1.0, 1.0], size=(800, 50, 50)).astype(np.float32)
        save_stimulus(tmp_path / "s.h5", movie)
        args = ["attribute", "random", str(tmp_path / "s.h5"), "--steps", "400", "-o", str(tmp_path / "a.h5")]
    proc = subprocess.Popen([sys.executable, "-m", "retina.cli", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)
    seen, err = threading.Event(), []

    def read():
        for chunk in iter(lambda: proc.stderr.read(1), ""):
            err.append(chunk)
            if command in "".join(err[-200:]):
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    assert seen.wait(timeout=240), "the command never reached its kernels"
    time.sleep(1.0)   # inside the kernels (the progress bar is running)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    took = time.time() - t0
    time.sleep(0.2)
    text = "".join(err)
    assert "Traceback" not in text and proc.returncode != 0 and "interrupted" in text
    assert took < 2.5, f"took {took:.1f} s to stop"


def test_a_full_disk_is_refused_before_writing(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small file system here (needs root)")
    try:
        r = cli("simulate", "-o", mnt, "--kind", "whitenoise", "--noise-minutes", "1", "-q")
        assert r.exit_code != 0 and "of disk" in r.output
        r = cli("stimulus", "natural", "--frames", "3000", "-o", mnt / "s.h5")
        assert r.exit_code != 0 and "of disk" in r.output
        assert not [p for p in mnt.iterdir() if p.suffix == ".tmp" or p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_resuming_a_run_that_stopped_early_gives_the_same_model(tmp_path):
    from retina.train import TrainConfig, train

    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 8, 8)).astype(np.float32)
    y = rng.poisson(2.0, (600, 2)).astype(np.float32)
    cfg = TrainConfig(channels=(2, 2), kernel_sizes=(3, 3), history=4, epochs=30, epoch_windows=100, batch=50,
                      segments=1, patience=2, lr_patience=1)
    first = train(x, y, config=cfg, checkpoint=tmp_path / "c.ckpt")
    assert first.stopped == "early stopping"
    again = train(x, y, config=cfg, checkpoint=tmp_path / "c.ckpt")
    assert again.model.content_hash() == first.model.content_hash() and len(again.history) == len(first.history)


def test_json_of_the_cases_is_well_formed():
    """The CLI table is data (the note reports its size): every case names a command and an expectation."""
    assert all(isinstance(a, list) and isinstance(e, str) and e for a, e in CASES)
    assert json.dumps([c[0] for c in CASES])


def test_orphan_temporary_files_of_killed_writers_are_swept(tmp_path):
    from retina.io import atomic_text

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".out.txt.pid{dead.pid}.abc.tmp"
    orphan.write_text("half")
    mine = tmp_path / f".out.txt.pid{os.getpid()}.xyz.tmp"   # a live writer's file is left alone
    mine.write_text("busy")
    atomic_text(tmp_path / "out.txt", "done")
    assert (tmp_path / "out.txt").read_text() == "done" and not orphan.exists() and mine.exists()


def _sweep_cmd(out):
    return [sys.executable, "-m", "retina.cli", "sweep", "random", "latency", "-p",
            "intensities=-1,-0.8,-0.6,-0.4,-0.3,-0.2", "--steps", "20", "-q", "-o", str(out)]


@pytest.mark.parametrize("delay", [1.5, 4.0])
def test_killed_sweep_resumes_to_the_uninterrupted_measures(tmp_path, delay):
    from retina.sweep import load_sweep

    subprocess.run(_sweep_cmd(tmp_path / "whole.h5"), check=True, timeout=300)
    proc = subprocess.Popen(_sweep_cmd(tmp_path / "s.h5"), stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(_sweep_cmd(tmp_path / "s.h5"), check=True, timeout=300)
    assert json.dumps(load_sweep(tmp_path / "s.h5").measures) == json.dumps(load_sweep(tmp_path / "whole.h5").measures)


def test_killed_training_resumes_to_the_uninterrupted_model(tmp_path, data):
    _, path = data
    cmd = [sys.executable, "-m", "retina.cli", "train", str(path), "--epochs", "4", "--epoch-windows", "200",
           "--batch", "20", "--channels", "2,2", "--cells", "0,9", "-q"]
    subprocess.run(cmd + ["-o", str(tmp_path / "whole.h5")], check=True, timeout=600)
    proc = subprocess.Popen(cmd + ["-o", str(tmp_path / "m.h5")], stderr=subprocess.DEVNULL)
    ck = tmp_path / "m.h5.ckpt"
    deadline = time.time() + 300
    while not ck.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(cmd + ["-o", str(tmp_path / "m.h5")], check=True, timeout=600)
    assert load_model(tmp_path / "m.h5").content_hash() == load_model(tmp_path / "whole.h5").content_hash()
