"""Bad input gets a clear ValueError naming the argument; property-based shapes and dtypes."""

import numpy as np
import pytest
from conftest import small_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retina import RetinaCNN

M = small_model()
H, W = M.frame_shape


@pytest.mark.parametrize("movie, match", [
    (np.zeros((10, H)), "movie must have 3 dimensions"),
    (np.zeros((M.history - 1, H, W)), f"at least {M.history} frames"),
    (np.zeros((10, H + 1, W)), f"frames of {H}x{W} pixels"),
    (np.full((10, H, W), np.nan), "must be finite"),
    (np.full((10, H, W), np.inf), "must be finite"),
    (np.array([["a"]]), "real numeric array"),
    (np.zeros((10, H, W), dtype=complex), "real numeric array"),
    ("movie", "real numeric array"),
])
def test_predict_rejects_bad_movies(movie, match):
    with pytest.raises(ValueError, match=match):
        M.predict(movie)


@pytest.mark.parametrize("kwargs, match", [
    ({"dtype": np.int32}, "dtype must be float32 or float64"),
    ({"dtype": "float16"}, "dtype must be float32 or float64"),
    ({"batch": 0}, "batch must be >= 1"),
    ({"batch": 2.5}, "batch must be an integer"),
    ({"backend": "tpu"}, "backend must be one of"),
    ({"layer1_method": "magic"}, "layer1_method must be one of"),
    ({"layer2_method": "winograd"}, "layer2_method must be one of"),
])
def test_predict_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        M.predict(np.zeros((M.history, H, W)), **kwargs)


def test_gpu_backend_without_gpu_is_a_clear_error():
    from retina._backend import _gpu_unavailable_reason
    if _gpu_unavailable_reason() is None:
        pytest.skip("a GPU is available")
    with pytest.raises(RuntimeError, match="backend='gpu' is not available"):
        M.predict(np.zeros((M.history, H, W)), backend="gpu")


def test_constructor_rejects_mismatched_weights():
    a = M.arrays
    bad = [
        (dict(w1=a["w1"][0]), "w1 must have 4 dimensions"),
        (dict(w2=a["w2"][:, :-1]), "w2 must have shape"),
        (dict(scale1=a["scale1"][:-1]), "scale1 must have shape"),
        (dict(shift2=a["shift2"][:, :-1]), "shift2 must have shape"),
        (dict(w3=a["w3"][:, :-2]), "w3 must have shape"),
        (dict(scale3=a["scale3"][:-1]), "scale3 must have shape"),
        (dict(w1=np.where(a["w1"] > 0, np.nan, a["w1"])), "w1 must be finite"),
    ]
    for change, match in bad:
        with pytest.raises(ValueError, match=match):
            RetinaCNN(**{**a, **change}, frame_shape=M.frame_shape)
    with pytest.raises(ValueError, match="cell_ids must have"):
        RetinaCNN(**a, frame_shape=M.frame_shape, cell_ids=["x"])
    with pytest.raises(ValueError, match="norm_stats"):
        RetinaCNN(**a, frame_shape=M.frame_shape, norm_stats={"mean": 0, "std": -1})
    with pytest.raises(ValueError, match="too small"):
        RetinaCNN.random(1, 0, frame_shape=(20, 20))
    with pytest.raises(ValueError, match="n_cells must be >= 1"):
        RetinaCNN.random(0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=st.integers(0, 14), h=st.integers(H - 2, H + 1), w=st.integers(W - 1, W + 1), ndim=st.integers(2, 4),
       dtype=st.sampled_from([np.float32, np.float64, np.int16, np.uint8, np.bool_, np.complex64]))
def test_predict_shapes_and_dtypes_property(t, h, w, ndim, dtype):
    shape = (t, h, w, 1)[:ndim] if ndim != 4 else (t, h, w, 1)
    movie = np.ones(shape, dtype=dtype)
    # float and int movies of the right shape run; bool (like complex) is refused by name
    valid = (ndim == 3 and (h, w) == (H, W) and t >= M.history and np.dtype(dtype).kind in "iuf")
    if valid:
        r = M.predict(movie)
        assert r.shape == (t - M.history + 1, M.n_cells) and r.dtype == np.float32 and np.isfinite(r).all()
    else:
        with pytest.raises(ValueError, match="movie"):
            M.predict(movie)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t_extra=st.integers(0, 6))
def test_float32_and_float64_agree_property(seed, t_extra):
    rng = np.random.default_rng(seed)
    movie = rng.standard_normal((M.history + t_extra, H, W))
    a = M.predict(movie, dtype=np.float32)
    b = M.predict(movie, dtype=np.float64)
    assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1.0)
