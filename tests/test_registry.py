"""Adding a phenomenon is one file: a phenomenon registered here runs through sweep, explain and the CLI."""

import functools

import numpy as np
import pytest
from click.testing import CliRunner

from retina import RetinaCNN
from retina import measures as M
from retina import phenomena as P
from retina import stimuli as S
from retina.phenomena.probe import analysed_cells, frame_shape, mechanism, probe, rates


def _window(result, i):
    on = int(result.events[i]["onset_frame"])
    return on, on + 20


def step_response(model, *, intensities=(-1.0, -0.5), cells=None, explain=True, share=0.9, n_steps=50,
                  context_ms=P.CONTEXT_MS):
    """A full-field step of each intensity; the measure is the peak rate in the 200 ms after its onset."""
    model = probe(model)
    cells = analysed_cells(model, cells, "OFF")
    res = P.PhenomenonResult("step", [], [], [], [], {}, cells, {})
    for c in intensities:
        build = functools.partial(S.step, float(c), duration=30, delay=40, post=30, frame_shape=frame_shape(model))
        st = build()
        r = rates(model, st.movie)[:, cells]

        def measure(resp, on=int(st.events["onset_frame"])):
            t, v = M.peak(np.asarray(resp, np.float64).mean(1), on, on + 20)
            return {"peak_ms": (t - on) * 10.0, "rate": v}

        win = res.add(dict(intensity=float(c)), r, st.events, measure(r), stimulus=build, window=_window)
        if explain:
            res.add_reduced(*mechanism(model, st.movie, cells, win, share, n_steps, measure, context_ms))
    res.measures = {"peak_mean": float(np.mean([m["rate"] for m in res.per_condition]))}
    return res


@pytest.fixture
def step():
    ph = P.register(P.Phenomenon(
        name="step", title="step response", run=step_response, list_params=("intensities",),
        key_measure="peak_mean", cell_type="OFF", lesions=("A1",), window=_window,
        shows=lambda m: m["peak_mean"] > 0, presence_measure="peak_mean",
        mechanism=lambda pathway_shares, type_shares, result: {"OFF carries the step": pathway_shares["OFF"] > 0.5}))
    yield ph
    P.unregister("step")


def test_a_registered_phenomenon_is_swept(step, tmp_path):
    from retina.sweep import sweep

    res = sweep(RetinaCNN.random(2, seed=3, per_unit=False), "step", {"intensities": [-1.0, -0.25]},
                out=tmp_path / "step.h5", progress=False, explain=False)
    assert res.shape == (2,) and np.isfinite(res.table("peak_mean")).all()
    assert (tmp_path / "step.h5").exists()


def test_a_registered_phenomenon_is_explained(step, tmp_path):
    import json

    from retina.explain import explain
    from retina.insilico import InSilicoRetina

    cells = InSilicoRetina().cells[:2]            # the metadata of a model fitted to the simulator's cells
    model = RetinaCNN.random(2, seed=3, per_unit=False)
    model.metadata.update(cell_types=json.dumps([c.type for c in cells]),
                          cell_positions=json.dumps([[c.y, c.x] for c in cells]))
    report = explain(model, tmp_path, phenomena=("step",), n_steps=4, progress=False, figures=False)
    e = report["step"]
    assert set(e["truth"]["lesions"]) == {"A1"} and e["truth"]["key"] == "peak_mean"
    assert "OFF carries the step" in e["criteria"] and len(e["fidelity"]) == 2
    assert "step" in (tmp_path / "summary.txt").read_text()


def test_a_registered_phenomenon_is_offered_by_the_cli(step, tmp_path):
    from retina.cli import main

    res = CliRunner().invoke(main, ["sweep", "random", "step", "-p", "intensities=-1,-0.5", "--no-explain", "-q",
                                    "-o", str(tmp_path / "s.h5")])
    assert res.exit_code == 0, res.output
    assert "step" in CliRunner().invoke(main, ["explain", "--help"]).output


def test_names_are_unique_and_lookups_name_the_choices(step):
    with pytest.raises(ValueError, match="registered already"):
        P.register(step)
    with pytest.raises(ValueError, match="phenomenon must be one of .*step"):
        P.get("flicker")
