"""Importing torch-deep-retina checkpoints and deep-retina Keras weights: exact, and safe against hostile files.

The fixtures in tests/data/imports were written once by scripts/make_import_fixtures.py with torch (and
h5py for the Keras layout); ``expected.h5`` holds the source networks' evaluation-mode outputs on a fixed
movie. CI has no torch: these tests check retina's predictions against those stored outputs.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from retina import load_model
from retina.cli import main
from retina.io.importers import detect_format, import_model
from retina.io.torch_pickle import LEGACY_MAGIC, LEGACY_PROTOCOL, read_torch_checkpoint

DATA = Path(__file__).parent / "data" / "imports"
FIXTURES = ["bncnn_tiny.pt", "bncnn_tiny_legacy.pt", "stacked_tiny.pt", "stacked_tiny_legacy.pt",
            "stacked_published.pt", "bncnn_keras.h5"]


def expected(name):
    with h5py.File(DATA / "expected.h5", "r") as f:
        return f[name]["movie_x16"][()].astype(np.float32) / 16, f[name]["output"][()]


@pytest.mark.parametrize("name", FIXTURES)
def test_imported_models_predict_what_the_source_network_did(name):
    model = import_model(DATA / name)
    movie, out = expected(name)
    got = model.predict(movie, dtype=np.float64)
    assert got.shape == out.shape
    rel = np.abs(got - out).max() / np.abs(out).max()
    assert rel < 1e-6, f"{name}: relative error {rel:.2e}"
    assert not np.allclose(out, out.mean())   # a fixture whose output is constant could not catch anything


def test_provenance_units_and_the_published_shape():
    m = import_model(DATA / "stacked_published.pt")
    assert (m.history, m.frame_shape, m.shape1[0], m.shape2[0], m.n_cells) == (40, (50, 50), 8, 8, 5)
    assert m.norm_stats == {"mean": 121.5, "std": 43.25}
    meta = m.metadata
    assert meta["source_format"] == "torch-deep-retina" and meta["model_type"] == "LinearStackedBNCNN"
    assert meta["dataset"] == '"15-10-07"' and meta["stim_type"] == '"naturalscene"'
    assert m.cell_ids == ["0", "1", "2", "3", "4"]
    keras = import_model(DATA / "bncnn_keras.h5")
    assert keras.metadata["source_format"] == "deep-retina-keras" and "not stored" in keras.metadata["norm_stats"]


def test_one_entry_point_recognises_every_format(tmp_path):
    assert detect_format(DATA / "bncnn_tiny.pt") == "torch-deep-retina"
    assert detect_format(DATA / "bncnn_tiny_legacy.pt") == "torch-deep-retina"
    assert detect_format(DATA / "bncnn_keras.h5") == "deep-retina-keras"
    m = load_model(DATA / "bncnn_tiny.pt")                      # load_model reads the other formats too
    out = tmp_path / "m.h5"
    r = CliRunner().invoke(main, ["import", str(DATA / "stacked_tiny_legacy.pt"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    back = load_model(out)
    assert detect_format(out) == "retina"
    assert back.metadata["model_type"] == "LinearStackedBNCNN" and "imported_from" in back.metadata
    movie, want = expected("stacked_tiny_legacy.pt")
    assert np.abs(back.predict(movie, dtype=np.float64) - want).max() / np.abs(want).max() < 1e-6
    assert m.n_cells == 2


def test_imported_models_run_the_analyses(tmp_path):
    from retina import attribute
    from retina.explain import explain
    from retina.sweep import sweep

    m = import_model(DATA / "bncnn_keras.h5")
    movie = np.random.default_rng(0).standard_normal((30, 16, 16)).astype(np.float32)
    a = attribute(m, movie, layer="conv1", n_steps=50)
    assert np.abs(a.delta).max() < 1e-3 * np.ptp(a.response)
    res = sweep(m, "latency", {"intensities": [-1.0, -0.5]}, explain=False)
    assert len(res.measures) == 2
    report = explain(m, tmp_path / "ex", phenomena=["latency"], n_steps=4, figures=False)
    text = (tmp_path / "ex" / "summary.txt").read_text()
    assert "latency" in text and "no ground truth: the model was not trained on the in-silico retina" in text
    assert "truth" not in report["latency"] and report["_meta"]["truth"].startswith("no ground truth")


def test_other_model_types_are_refused_by_name(tmp_path):
    ck, _ = read_torch_checkpoint(DATA / "bncnn_tiny.pt")
    for bad_type in ("SkipAmacRNN", "RNNCNN"):
        p = tmp_path / f"{bad_type}.pt"
        _zip_checkpoint(p, pickle.dumps({"model_type": bad_type, "model_state_dict": {}}, protocol=2))
        with pytest.raises(ValueError, match=f"model_type '{bad_type}' cannot be represented"):
            import_model(p)
    assert ck["model_type"] == "BNCNN"


# ------------------------------------------------------------------ hostile files
def _zip_checkpoint(path, data_pkl, extra=None, byteorder=b"little"):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", byteorder)
        z.writestr("archive/version", b"3\n")
        for name, blob in (extra or {}).items():
            z.writestr(f"archive/data/{name}", blob)


def _legacy_checkpoint(path, data_pkl, keys=(), blobs=b""):
    with open(path, "wb") as fh:
        for obj in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": 1001, "little_endian": True,
                                                     "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(obj, fh, protocol=2)
        fh.write(data_pkl)
        pickle.dump(list(keys), fh, protocol=2)
        fh.write(blobs)


def _payloads(sentinel):
    cmd = f"touch {sentinel}"
    s = repr(cmd).encode()
    return {
        "os.system": b"cos\nsystem\n(S" + s + b"\ntR.",
        "posix.system": b"cposix\nsystem\n(S" + s + b"\ntR.",
        "builtins.eval": b"cbuiltins\neval\n(S'__import__(\"os\").system(" + repr(cmd).encode().replace(b"'", b'"')
                         + b")'\ntR.",
        "subprocess.Popen": b"csubprocess\nPopen\n((S'touch'\nS'" + str(sentinel).encode() + b"'\nltR.",
    }


class _Reduce:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_pickles_that_name_code_are_refused_and_nothing_runs(tmp_path, layout):
    sentinel = tmp_path / "sentinel"
    payloads = _payloads(sentinel)
    payloads["__reduce__"] = pickle.dumps(_Reduce(sentinel), protocol=2)
    # the same payload hidden inside an otherwise well-formed checkpoint
    inner = pickle.dumps({"model_type": "BNCNN", "model_state_dict": {"x": 1}, "hyps": {"evil": _Reduce(sentinel)}},
                         protocol=2)
    payloads["nested __reduce__"] = inner
    for label, blob in payloads.items():
        p = tmp_path / f"{label.replace(' ', '_')}.pt"
        (_zip_checkpoint if layout == "zip" else _legacy_checkpoint)(p, blob)
        with pytest.raises(ValueError, match="allow-list|not readable|malformed") as info:
            import_model(p, format="torch-deep-retina")
        assert "system" in str(info.value) or "eval" in str(info.value) or "Popen" in str(info.value), label
        assert not sentinel.exists(), f"{label}: the payload ran"
    r = CliRunner().invoke(main, ["import", str(tmp_path / "os.system.pt"), "-o", str(tmp_path / "x.h5")])
    assert r.exit_code != 0 and "allow-list" in r.output and "Traceback" not in r.output
    assert not sentinel.exists()


def test_the_reader_never_imports_the_named_modules(tmp_path):
    p = tmp_path / "mod.pt"
    _zip_checkpoint(p, b"cantigravity_never_installed\nfly\n(tR.")
    code = (f"import sys; from retina.io.torch_pickle import read_torch_checkpoint as r; "
            f"o, u = r({str(p)!r}); print(u, 'antigravity_never_installed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['antigravity_never_installed.fly'] False"


def _valid_zip_parts():
    raw = (DATA / "bncnn_tiny.pt").read_bytes()
    z = zipfile.ZipFile(io.BytesIO(raw))
    return raw, {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}


def _rezip(path, parts):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, blob in parts.items():
            z.writestr(f"archive/{name}", blob)


def test_damaged_archives_are_refused_clearly(tmp_path):
    raw, parts = _valid_zip_parts()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="damaged zip|not a torch checkpoint|cannot be read"):
        import_model(trunc)
    bo = dict(parts)
    bo["byteorder"] = b"middle"
    _rezip(tmp_path / "bo.pt", bo)
    with pytest.raises(ValueError, match="byteorder record is 'middle'"):
        import_model(tmp_path / "bo.pt")
    short = dict(parts)
    key = sorted(k for k in parts if k.startswith("data/"))[0]
    short[key] = parts[key][:8]
    _rezip(tmp_path / "short.pt", short)
    with pytest.raises(ValueError, match="truncated or corrupt|fewer than"):
        import_model(tmp_path / "short.pt")
    nopkl = {k: v for k, v in parts.items() if k != "data.pkl"}
    _rezip(tmp_path / "nopkl.pt", nopkl)
    with pytest.raises(ValueError, match="data.pkl"):
        import_model(tmp_path / "nopkl.pt")
    legacy_raw = (DATA / "bncnn_tiny_legacy.pt").read_bytes()
    (tmp_path / "lt.pt").write_bytes(legacy_raw[:-100])
    with pytest.raises(ValueError, match="truncated|fewer than"):
        import_model(tmp_path / "lt.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x02junk" * 10)
    with pytest.raises(ValueError):
        import_model(tmp_path / "junk.pt")


def _storage_pickle(numel, size):
    """A checkpoint pickle whose one tensor declares ``numel`` storage elements and shape ``size``."""
    return (b"\x80\x02}q\x00(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
            b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu" + b"J" + struct.pack("<i", numel)
            + b"tQK\x00" + b"J" + struct.pack("<i", size) + b"\x85K\x01\x85\x89}tRu.")


def test_declared_sizes_are_checked_before_anything_is_allocated(tmp_path):
    ok = tmp_path / "ok.pt"
    _zip_checkpoint(ok, _storage_pickle(4, 4), {"0": np.arange(4, dtype=np.float32).tobytes()})
    obj, _ = read_torch_checkpoint(ok)
    assert np.array_equal(obj["w"], np.arange(4, dtype=np.float32))
    huge = tmp_path / "huge.pt"
    _zip_checkpoint(huge, _storage_pickle(2_000_000_000, 2_000_000_000), {"0": b"\x00" * 16})
    over = tmp_path / "over.pt"
    _zip_checkpoint(over, _storage_pickle(4, 1_000_000), {"0": np.zeros(4, np.float32).tobytes()})
    leg = tmp_path / "leg.pt"
    _legacy_checkpoint(leg, _storage_pickle(4, 4), keys=["0"], blobs=struct.pack("<q", 10**15) + b"\x00" * 16)
    tracemalloc.start()
    try:
        for p, pattern in ((huge, "declares 2000000000 elements"), (over, "reaches element"),
                           (leg, "declares 1000000000000000 elements")):
            with pytest.raises(ValueError, match=pattern):
                read_torch_checkpoint(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6, f"{peak / 1e6:.0f} MB allocated while refusing"


def test_keras_files_with_other_layouts_are_refused(tmp_path):
    p = tmp_path / "k1.h5"
    with h5py.File(p, "w") as f:
        f.attrs["layer_names"] = np.array([b"convolution2d_1"])
        g = f.create_group("convolution2d_1")
        g.attrs["weight_names"] = np.array([b"convolution2d_1_W"])
        g.create_dataset("convolution2d_1_W", data=np.zeros((2, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="Keras 1 weight names"):
        import_model(p)
    q = tmp_path / "other.h5"
    with h5py.File(q, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense_1"])
        g = f.create_group("dense_1")
        g.attrs["weight_names"] = np.array([b"dense_1/kernel:0"])
        g.create_dataset("dense_1/kernel:0", data=np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="expected the deep-retina BN-CNN"):
        import_model(q)


def test_a_reversed_window_order_is_flagged(tmp_path, caplog):
    m = import_model(DATA / "stacked_published.pt")
    m.w1 = np.ascontiguousarray(m.w1 * np.linspace(1.0, 0.0, 40)[None, :, None, None] ** 4)   # oldest frames heavy
    from retina.io.importers import _check_frame_order

    with caplog.at_level("WARNING", logger="retina.io"):
        _check_frame_order(m, "x")
    assert "newest-first" in caplog.text
    flipped = import_model(DATA / "bncnn_tiny.pt", frame_order="newest-first")
    base = import_model(DATA / "bncnn_tiny.pt")
    assert np.array_equal(flipped.w1, base.w1[:, ::-1])
