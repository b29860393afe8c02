"""The in-silico retina against an independent float64 reference, and its invariants."""

import json

import naive
import numpy as np
import pytest

from retina import stimuli as S
from retina.insilico import LESIONS, BipolarParams, InSilicoParams, InSilicoRetina


@pytest.fixture(scope="module")
def small():
    p = InSilicoParams.default()
    p.mosaic = [7, 11]
    return p


def test_matches_reference_on_random_movies(small, rng):
    movie = np.maximum(0.6 * rng.standard_normal((90, 19, 21)), -1.0)   # nothing darker than black
    sim = InSilicoRetina(small, frame_shape=(19, 21), block=37)
    rates, parts = sim.run(movie)
    ref_rates, ref_parts = naive.insilico_rates(movie, small)
    # float64 throughout: agreement to rounding
    np.testing.assert_allclose(rates, ref_rates, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(parts, ref_parts, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lesion", LESIONS)
def test_lesions_match_reference(small, rng, lesion):
    movie = np.maximum(0.6 * rng.standard_normal((40, 19, 21)), -1.0)
    sim = InSilicoRetina(small, lesion=lesion, frame_shape=(19, 21))
    ref, parts = naive.insilico_rates(movie, small.lesioned(lesion))
    np.testing.assert_allclose(sim.rates(movie), ref, rtol=1e-10, atol=1e-10)
    if lesion in ("OFF", "ONf", "ONs"):
        k = ("OFF", "ONf", "ONs").index(lesion)
        assert np.all(sim.pathways(movie)[..., k] == 0)
    if lesion in ("A1", "linear"):
        assert np.all(sim.pathways(movie)[..., 3] == 0)


@pytest.mark.parametrize("lesion", [None, "depression", "A1"])
def test_own_depression_of_the_off_synapse_onto_the_amacrine_matches_reference(small, rng, lesion):
    """``U_OFF_A1``: the amacrine reads its own OFF pool; equal to the shared pool when its U is the OFF one's."""
    p = small.copy()
    p.U_OFF_A1 = 4.0 * p.bipolar["OFF"].U
    movie = np.maximum(0.6 * rng.standard_normal((60, 19, 21)), -1.0)
    sim = InSilicoRetina(p, lesion=lesion, frame_shape=(19, 21), block=23)
    rates, parts = sim.run(movie)
    ref_rates, ref_parts = naive.insilico_rates(movie, p if lesion is None else p.lesioned(lesion))
    np.testing.assert_allclose(rates, ref_rates, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(parts, ref_parts, rtol=1e-10, atol=1e-12)
    shared = InSilicoRetina(small, lesion=lesion, frame_shape=(19, 21)).run(movie)[1]
    if lesion == "depression":    # no depression anywhere: nothing tells the two pools apart
        np.testing.assert_array_equal(parts, shared)
    else:                         # only the amacrine's input differs
        np.testing.assert_array_equal(parts[..., :3], shared[..., :3])
        assert lesion == "A1" or np.abs(parts[..., 3] - shared[..., 3]).max() > 1e-4
    p.U_OFF_A1 = p.bipolar["OFF"].U
    np.testing.assert_array_equal(InSilicoRetina(p, frame_shape=(19, 21)).run(movie)[1],
                                  InSilicoRetina(small, frame_shape=(19, 21)).run(movie)[1])


@pytest.mark.parametrize("n, tau1, a2", [(3, 30.0, 0.4), (3, 55.0, 0.75), (2, 20.0, 0.9), (4, 37.0, 0.0)])
def test_time_to_peak_is_the_peak_of_the_difference_of_gammas(n, tau1, a2):
    """BipolarParams.time_to_peak_ms against scipy's gamma density on a finer grid (the docs' filter:
    Gamma(t; n, tau) is a gamma density of shape n + 1 and scale tau); the documented proto values (85 ms for the
    OFF and ON-fast filters, 145 ms for ON-slow) within 5 ms."""
    from scipy.stats import gamma

    t = np.arange(1, 200001) * 0.005            # ms, to 1 s
    k = gamma.pdf(t, n + 1, scale=tau1) - a2 * gamma.pdf(t, n + 1, scale=2 * tau1)
    want = t[np.argmax(np.abs(k))]
    got = BipolarParams(sign=-1.0, n=n, tau1_ms=tau1, a2=a2).time_to_peak_ms()
    assert abs(got - want) <= 0.1, (got, want)
    if a2 == 0.0:
        assert abs(got - n * tau1) <= 0.1          # a single gamma peaks at n tau
    d = InSilicoParams()
    got = [d.bipolar[k].time_to_peak_ms() for k in ("OFF", "ONf", "ONs")]
    assert np.allclose(got, [85, 85, 145], atol=5), got


def test_streaming_in_chunks_equals_one_call(rng):
    sim = InSilicoRetina(block=64)
    movie = S.natural_movie(500, seed=int(rng.integers(1000))).movie
    whole = sim.rates(movie)
    state = sim.initial_state()
    parts = [sim.rates(movie[a:b], state=state) for a, b in ((0, 77), (77, 300), (300, 500))]
    np.testing.assert_allclose(np.vstack(parts), whole, rtol=1e-12)  # only summation order differs


def test_grey_is_a_fixed_point():
    for p in (InSilicoParams.default(), InSilicoParams.default().lesioned("depression")):
        p.bipolar["ONs"].theta = -0.05  # a tonic pathway: non-zero release at grey
        r = InSilicoRetina(p).rates(np.zeros((300, 50, 50)))
        assert np.ptp(r, axis=0).max() < 1e-9


def test_ground_truth_attribution_is_complete_and_exact(rng):
    sim = InSilicoRetina()
    movie = S.natural_movie(400, seed=int(rng.integers(1000))).movie
    attr = sim.attribution(movie)
    r = sim.rates(movie)
    r0 = sim.rates(np.zeros((1, 50, 50)))[0]
    np.testing.assert_allclose(attr.sum(-1), r - r0, atol=1e-9)
    # against integrated gradients by quadrature along the straight path in the sources' space
    parts = sim.pathways(movie)[::50]
    rest = sim.initial_state()["membrane"].T[None]
    du = parts - rest
    a = (np.arange(4000) + 0.5) / 4000
    ig = np.zeros_like(du)
    x_rest = rest.sum(-1)
    for ak in a:
        u = x_rest + ak * du.sum(-1)
        x = sim.params.beta * (u - sim._gtheta)
        ig += (sim._rmax / (1 + np.exp(-x)))[..., None] * du / len(a)
    np.testing.assert_allclose(attr[::50], ig, atol=1e-5)


def test_spikes_are_poisson_with_the_rates():
    sim = InSilicoRetina()
    rates = np.full((20000, sim.n_cells), 50.0)
    n = sim.spikes(None, rates=rates, seed=1)
    assert n.dtype == np.int32
    assert n.mean() == pytest.approx(0.5, rel=0.02)
    assert n.var() == pytest.approx(0.5, rel=0.05)
    np.testing.assert_array_equal(n, sim.spikes(None, rates=rates, seed=1))


def test_cells_and_mosaic():
    sim = InSilicoRetina()
    assert sim.n_cells == 18
    assert sorted({c.type for c in sim.cells}) == ["OFF", "OSR"]
    assert {(c.y, c.x) for c in sim.cells} == {(y, x) for y in (17, 25, 33) for x in (17, 25, 33)}
    np.testing.assert_array_equal(sim.cells_of("OFF"), np.arange(9))


def test_params_json_round_trip_and_validation(tmp_path):
    p = InSilicoParams.default()
    p.bipolar["ONs"].tau1_ms = 47.5
    path = tmp_path / "p.json"
    p.to_json(path)
    q = InSilicoParams.from_json(path)
    assert q == p
    assert InSilicoRetina(str(path)).params == p
    d = json.loads(path.read_text())
    d["colour"] = 1
    with pytest.raises(ValueError, match="unknown in-silico parameters"):
        InSilicoParams.from_dict(d)
    bad = p.copy()
    bad.bipolar["OFF"].tau1_ms = -3
    with pytest.raises(ValueError, match=r"bipolar\['OFF'\].tau1_ms"):
        InSilicoRetina(bad)
    with pytest.raises(ValueError, match="lesion must be one of"):
        p.lesioned("cones")


def test_bad_movies_are_rejected():
    sim = InSilicoRetina()
    with pytest.raises(ValueError, match="frames of shape"):
        sim.rates(np.zeros((10, 40, 40)))
    with pytest.raises(ValueError, match="finite"):
        sim.rates(np.full((10, 50, 50), np.nan))
    with pytest.raises(ValueError, match="state must be"):
        sim.rates(np.zeros((10, 50, 50)), state={"x": 1})


def test_rates_are_in_the_specified_range():
    sim = InSilicoRetina()
    r = sim.rates(S.natural_movie(3000, seed=5).movie)
    for t in ("OFF", "OSR"):
        assert 3.0 <= r[:, sim.cells_of(t)].mean() <= 10.0
    assert 40 <= r.max() <= 400


@pytest.mark.gpu
def test_gpu_simulation_equals_cpu(rng):
    from retina import _backend

    if _backend._gpu_unavailable_reason() is not None:
        pytest.skip(f"no GPU: {_backend._gpu_unavailable_reason()}")
    sim = InSilicoRetina(block=37)
    movie = np.maximum(0.3 * rng.standard_normal((120, 50, 50)), -1.0)
    s_cpu, s_gpu = sim.initial_state(), sim.initial_state()
    r_cpu = sim.rates(movie, state=s_cpu)
    r_gpu = sim.rates(movie, state=s_gpu, backend="gpu")
    assert isinstance(r_gpu, np.ndarray)
    np.testing.assert_allclose(r_gpu, r_cpu, rtol=1e-9, atol=1e-9)
    for k in s_cpu:
        np.testing.assert_allclose(s_gpu[k], s_cpu[k], rtol=1e-9, atol=1e-12)


def test_named_params_is_the_inverse_of_simulator_name(tmp_path):
    """Every packaged simulator is named and found again by its name; a parameter file by its path; anything else
    is refused with the names that exist."""
    from retina.insilico import CALIBRATIONS, COUNTERFACTUALS, InSilicoParams, named_params, simulator_name

    for name in ("shipped", *COUNTERFACTUALS, *(f"calibration-{d}" for d in CALIBRATIONS)):
        assert simulator_name(named_params(name)) == name
    p = InSilicoParams.default()
    p.gain = 2 * p.gain
    path = tmp_path / "mine.json"
    p.to_json(path)
    assert named_params(path) == p and named_params(str(path)) == p
    with pytest.raises(ValueError, match="osr-onf"):
        named_params("osr_onf")
    with pytest.raises(ValueError, match="string or a path"):
        named_params(3)
