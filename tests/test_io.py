"""HDF5 model files: round trip, provenance, and refusal of malformed files."""

import h5py
import numpy as np
import pytest
from conftest import small_model

from retina import RetinaCNN, load_model
from retina.io import SCHEMA_VERSION, load_stimulus, save_stimulus


def test_round_trip(tmp_path, rng):
    m = small_model()
    m.metadata["note"] = "test"
    path = m.save(tmp_path / "m.h5")
    m2 = load_model(path)
    for k, v in m.arrays.items():
        np.testing.assert_array_equal(getattr(m2, k), v)
    assert m2.frame_shape == m.frame_shape and m2.cell_ids == m.cell_ids
    assert m2.metadata["note"] == "test" and m2.content_hash() == m.content_hash()
    movie = rng.standard_normal((20,) + m.frame_shape)
    np.testing.assert_array_equal(m.predict(movie), m2.predict(movie))
    with h5py.File(path) as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION and f.attrs["format"] == "retina-model"
        assert len(f.attrs["content_hash"]) == 64 and "created" in f.attrs
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_storage_type_round_trips_through_the_checked_loader(tmp_path, dtype):
    m = small_model()
    from retina.io import save_model
    save_model(m, tmp_path / "m.h5", dtype=dtype)
    m2 = load_model(tmp_path / "m.h5")            # the content hash is checked: no verify_hash=False needed
    np.testing.assert_allclose(m2.w1, m.w1, rtol=1e-6)
    assert m2.response_offset == m.response_offset and m2.input_units == m.input_units


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "nope.h5")


def test_truncated_file(tmp_path):
    path = small_model().save(tmp_path / "m.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="not a readable HDF5"):
        load_model(path)


def test_foreign_files(tmp_path):
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        load_model(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ValueError, match="not a retina model file"):
        load_model(tmp_path / "other.h5")


def _mutate(tmp_path, fn):
    path = small_model().save(tmp_path / "m.h5")
    with h5py.File(path, "a") as f:
        fn(f)
    return path


def test_schema_version_checked(tmp_path):
    path = _mutate(tmp_path, lambda f: f.attrs.__setitem__("schema_version", 99))
    with pytest.raises(ValueError, match="schema_version 99"):
        load_model(path)


def test_missing_dataset(tmp_path):
    path = _mutate(tmp_path, lambda f: f["weights"].__delitem__("w2"))
    with pytest.raises(ValueError, match="/weights/w2' is missing"):
        load_model(path)


def test_wrong_shape(tmp_path):
    def bad(f):
        w = f["weights/w3"][()]
        del f["weights/w3"]
        f["weights/w3"] = w[:, :-1]
    with pytest.raises(ValueError, match="w3.? must have shape"):
        load_model(_mutate(tmp_path, bad))


def test_wrong_dtype(tmp_path):
    def bad(f):
        del f["weights/scale3"]
        f["weights/scale3"] = np.array(["a", "b", "c"], dtype="S1")
    with pytest.raises(ValueError, match="floating point|numeric array"):
        load_model(_mutate(tmp_path, bad))


def test_tampered_content(tmp_path):
    def bad(f):
        f["weights/w1"][0, 0, 0, 0] += 1.0
    with pytest.raises(ValueError, match="content check"):
        load_model(_mutate(tmp_path, bad))


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    m = small_model()
    target = tmp_path / "m.h5"
    import retina.io.model as iomodel  # interrupted while the file is being written
    monkeypatch.setattr(iomodel, "content_hash", lambda model: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        m.save(target)
    assert list(tmp_path.iterdir()) == []


def test_default_model_missing_is_clear():
    import retina.io as rio
    if rio.bundled_path("default").is_file():
        pytest.skip("bundled model present")
    with pytest.raises(FileNotFoundError, match="bundled 'default' model"):
        load_model("default")


def test_stimulus_round_trip(tmp_path, rng):
    movie = rng.standard_normal((7, 5, 6)).astype(np.float32)
    save_stimulus(tmp_path / "s.h5", movie, params={"kind": "x", "n": 3}, events={"flash": [1, 2]})
    np.testing.assert_array_equal(load_stimulus(tmp_path / "s.h5"), movie)
    with h5py.File(tmp_path / "dr.h5", "w") as f:
        f["test/stimulus"] = movie
    np.testing.assert_array_equal(load_stimulus(tmp_path / "dr.h5"), movie)
    with pytest.raises(ValueError, match="no stimulus dataset"):
        load_stimulus(tmp_path / "dr.h5", dataset="nope")


def test_model_from_loaded_arrays_validates():
    m = small_model()
    arrays = m.arrays
    arrays["w2"] = arrays["w2"][:, :-1]
    with pytest.raises(ValueError, match="w2 must have shape"):
        RetinaCNN(**arrays)
