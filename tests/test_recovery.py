"""The mechanism-recovery benchmark (retina.recovery, docs/recovery.md): its score, its nulls, its matching."""

import numpy as np
import pytest

from retina import RetinaCNN
from retina import recovery as R
from retina.insilico import InSilicoRetina


def effects(**e):
    return {p: dict(intact=1.0, lesioned=1.0 + e.get(p, 0.0), effect=e.get(p, 0.0)) for p in R.PARTS}


def test_the_score_counts_the_parts_that_matter_with_sign_and_size():
    sim = effects(ONs=-0.9, A1=0.4)                  # two parts matter; three do not
    assert R.score(sim, effects(ONs=-0.9, A1=0.4))[0] == 1.0
    assert R.score(sim, effects(ONs=-0.5, A1=0.2))[0] == 1.0          # half the size is enough ...
    assert R.score(sim, effects(ONs=-0.4, A1=0.4))[0] == 0.5          # ... less is not
    assert R.score(sim, effects(ONs=+0.9, A1=0.4))[0] == 0.5          # the wrong sign fails
    s, ok = R.score(sim, effects(ONs=-0.9, A1=0.4, OFF=-0.8))
    assert s == 1.0 and not ok["OFF"]                # a spurious effect is reported, not scored
    assert np.isnan(R.score(effects(), effects(ONs=-1.0))[0])         # nothing matters: no score
    assert not R._agrees(-0.9, float("nan"))


def test_the_permutation_null_pairs_every_other_assignment():
    sim = effects(ONs=-0.9, A1=0.4)
    right = effects(ONs=-0.9, A1=0.4)
    null = R.permutation_null(sim, right)
    assert len(null) == 120 - 6 and max(null) < 1.0   # pairings that keep ONs and A1 are not a null
    # a CNN whose every ablation has the same large effect scores 1 under the identity too, and the null
    # catches it: some permutation scores as well
    blunt = effects(OFF=-1.0, ONf=-1.0, ONs=-1.0, A1=-1.0, depression=-1.0)
    assert max(R.permutation_null(effects(ONs=-0.9, OFF=-0.5), blunt)) == R.score(effects(ONs=-0.9, OFF=-0.5),
                                                                                   blunt)[0]


def test_a_recovery_needs_fidelity_a_score_a_margin_and_significance():
    fid = dict(reproduces=True, shows=True, window_corr=0.9)
    perm = [0.2] * 95 + [0.5] * 5
    rec = R.Recovery("osr", [], {}, {}, {}, 0.9, perm, [0.3], fid)
    assert rec.null_level == 0.3 and rec.p_value == pytest.approx(1 / 101) and rec.recovered
    assert not R.Recovery("osr", [], {}, {}, {}, 0.9, perm, [0.7], fid).recovered    # an untrained CNN as good
    assert not R.Recovery("osr", [], {}, {}, {}, 0.6, [0.0], [], fid).recovered      # below 0.7
    tied = [0.2] * 90 + [0.9] * 10                                                   # 10 % of pairings as good
    assert R.p_value(0.9, tied) == pytest.approx(11 / 101) and not R.Recovery("osr", [], {}, {}, {}, 0.9, tied, [],
                                                                              fid).recovered
    gone = R.Recovery("osr", [], {}, {}, {}, 1.0, [0.0], [], dict(fid, reproduces=False))
    assert not gone.recovered and "no mechanism claim" in gone.verdict
    blind = R.Recovery("osr", [], {}, {}, {}, 1.0, [0.0], [], fid, truth_p=0.4)
    assert not blind.decisive and not blind.recovered and "undecidable" in blind.verdict


def test_the_truth_is_recovered_where_the_phenomena_can_tell_the_parts_apart():
    """The positive control of the scoring: the simulator's own lesion effects, scored as a CNN's, score 1.  Each
    phenomenon either lets the truth pass the recovery rule, or is flagged undecidable; pooled over the four
    phenomena the truth is recovered."""
    from retina import phenomena as P

    sim = InSilicoRetina()
    recs = []
    for name in P.names():
        se = R.simulator_effects(name, sim)
        sc, t_p = R.truth_recovery(se)
        assert sc == 1.0
        rec = R.Recovery(name, [], se, se, R.score(se, se)[1], sc, R.permutation_null(se, se), [],
                         dict(reproduces=True), [], t_p)
        assert rec.recovered == rec.decisive, (name, t_p)
        recs.append(rec)
    # measured on the calibration of 2026-12-05: the OSR (the truth's p = 0.008), latency (0.025) and reversal (0.05)
    # are decisive; anticipation (0.061) is not: removing OFF or A1 both move its offset far in the same direction
    assert [r.name for r in recs if r.decisive] == ["osr", "latency", "reversal"]
    o = R.overall(recs)
    assert o["score"] == 1.0 and o["decisive"] and o["recovered"], o
    # the pooled power is the share of pooled near-copies that overall() itself would call recovered
    copies = [R.near_copies(r.simulator, n=12, seed=k) for k, r in enumerate(recs)]
    slow = [R.overall([R.Recovery(r.name, [], r.simulator, c[d], {}, 1.0, [], [], dict(reproduces=True), [],
                                  r.truth_p) for r, c in zip(recs, copies)])["recovered"] for d in range(12)]
    assert R._power([r.simulator for r in recs], n=12) == pytest.approx(np.mean(slow))
    assert 0.0 < o["power"] <= 1.0
    # the same effects paired with the wrong parts are not recovered
    shuffled = {p: recs[0].simulator[q] for p, q in zip(R.PARTS, R.PARTS[1:] + R.PARTS[:1])}
    assert R.score(recs[0].simulator, shuffled)[0] < R.RECOVERED_SCORE


def test_the_verdicts_power_falls_as_near_copies_drift_from_the_truth():
    """A near-copy keeps every effect's sign and is off by a random factor; the truth itself (factor 1) is
    recovered wherever the phenomenon is decisive, and the farther the copies drift, the fewer pass.  Parts that
    act alike (one sign, similar sizes) leave the rule only their sizes to tell them apart, so its power there is
    lower than where the parts act in opposite directions."""
    apart = effects(ONs=-0.9, A1=0.4, depression=1.2)
    alike = effects(OFF=-1.0, A1=-0.21, depression=-0.5)     # the latency of the shipped calibration
    for sim in (apart, alike):
        copies = R.near_copies(sim, factor=3.0, n=50)
        assert all(np.sign(c[p]["effect"]) == np.sign(sim[p]["effect"]) for c in copies for p in R.PARTS)
        assert len({round(c["ONs"]["effect"], 9) for c in copies}) > 1 or sim["ONs"]["effect"] == 0
        assert R.verdict_power(sim, factor=1.0, n=20) == 1.0
        powers = [R.verdict_power(sim, factor=f, n=200) for f in (1.2, 2.0, 4.0)]
        assert powers[0] > powers[1] > powers[2], powers
        assert R.verdict_power(sim, n=50, seed=3) == R.verdict_power(sim, n=50, seed=3)    # deterministic
    assert R.verdict_power(apart, factor=1.5) > R.verdict_power(alike, factor=1.5) + 0.08    # 0.88 and 0.73
    for sim in (apart, alike):                         # the same as scoring each copy against its permutations
        slow = [R.passes(R.score(sim, c)[0], R.permutation_null(sim, c), [])
                for c in R.near_copies(sim, factor=2.0, n=40, seed=5)]
        assert R.verdict_power(sim, factor=2.0, n=40, seed=5) == pytest.approx(np.mean(slow))
    undecidable = effects(OFF=-1.0, A1=-1.0)           # the truth's own labels can be exchanged
    assert R.truth_recovery(undecidable)[1] > R.MAX_P_VALUE and R.verdict_power(undecidable) == 0.0
    with pytest.raises(ValueError, match="factor"):
        R.near_copies(apart, factor=0.5)


def test_planted_pathway_channels_are_matched_to_their_pathways():
    """Layer-1 channels built from the simulator's own pathway filters are matched to those pathways (on the
    shipped calibration and the one before it; matched on raw signals, the OFF and amacrine channels were not
    told apart)."""
    from retina.insilico import calibration

    sim = InSilicoRetina()
    w1, names = R.planted_filters(sim)
    assert names == ["OFF", "ONf", "ONs", "A1"] and w1.shape == (4, 40, 15, 15)
    m = RetinaCNN.random(2, seed=0, channels=(4, 4), per_unit=False)
    a = dict(m.arrays, scale1=np.ones((4, 1, 1)), shift1=np.zeros((4, 1, 1)))
    for label in ("shipped", "2026-12-03"):
        sim = InSilicoRetina(calibration(label))
        w1, names = R.planted_filters(sim)
        planted = RetinaCNN(**dict(a, w1=w1), frame_shape=m.frame_shape)
        movie = R.probe_movie(n_frames=800)
        got = R.match_channels(planted, sim, sim.positions[:4], movie=movie, signs=R.PART_SIGNS[:4])
        # every planted channel, the amacrine's included, goes to its own part, ahead of every other part
        assert [g["part"] for g in got] == names, (label, got)
        for g in got:
            others = [v for k, v in g["corr"].items() if k != g["part"]]
            assert g["r2"] >= R.MIN_MATCH_R2 and g["corr"][g["part"]] > max(others) + 0.05, (label, g)
        # the same OFF channel acting on the cells with the opposite sign takes release away: it is not OFF
        flipped = R.match_channels(planted, sim, sim.positions[:4], movie=movie, signs=[-1, 1, 1, -1])
        assert flipped[0]["part"] not in ("OFF", "ONf", "ONs") and flipped[0]["sign"] == -1, (label, flipped[0])


def test_channels_are_matched_to_the_part_whose_signal_explains_them(monkeypatch):
    """Channels built from the part signals (rectified, lagged, noisy) are matched to their part; noise is not."""
    sim = InSilicoRetina()
    pos = sim.positions[:4]
    movie = R.probe_movie(n_frames=400)
    sig = R.part_signals(sim, movie, pos)
    rng = np.random.default_rng(0)
    plan = {0: 0, 1: 1, 2: 2, 3: 3, 4: None}        # channel -> part index (None: pure noise)

    def fake(model, movie, positions):
        act = np.empty((len(movie), len(plan), len(positions)))
        for c, k in plan.items():
            base = np.zeros_like(sig[..., 0]) if k is None else np.roll(sig[..., k], 2, axis=0)
            z = base / (base.std() or 1.0)
            act[:, c] = np.maximum(z + 0.3 * rng.standard_normal(z.shape), 0.0)
        return act

    monkeypatch.setattr(R, "channel_activity", fake)
    got = R.match_channels(None, sim, pos, movie=movie, signals=sig, signs=[1, 1, 1, -1, 1])
    assert [m["part"] for m in got] == ["OFF", "ONf", "ONs", "A1", None]
    assert all(m["lag"] == 2 for m in got[:4]) and got[4]["r2"] < R.MIN_MATCH_R2


def test_part_signals_are_the_probe_cells_sources():
    sim = InSilicoRetina()
    movie = R.probe_movie(n_frames=300)
    sig = R.part_signals(sim, movie, sim.positions[:2])
    assert sig.shape == (300, 2, 5)
    assert (sig[..., :4] >= -1e-12).all()            # rectified drives and the amacrine's output
    assert (sig[..., 4] >= -1e-9).all() and sig[..., 4].max() > 0   # depression only takes release away


def test_the_untrained_null_has_the_models_shape_and_cells():
    model = RetinaCNN.random(3, seed=0, per_unit=False)
    model.metadata.update(cell_types='["OFF", "OFF", "OSR"]', cell_positions="[[17, 17], [17, 25], [25, 25]]")
    null = R.untrained_model(model, 5)
    assert null.w1.shape == model.w1.shape and null.w2.shape == model.w2.shape
    assert null.metadata["cell_types"] == model.metadata["cell_types"] and null.norm_stats == model.norm_stats
    assert not np.allclose(null.w1, model.w1)


def test_the_benchmark_runs_on_a_small_model_with_its_nulls():
    model = RetinaCNN.random(2, seed=1, per_unit=False)
    model.metadata.update(cell_types='["OFF", "OFF"]', cell_positions="[[25, 21], [25, 29]]")
    out = R.recover(model, ["latency"], n_untrained=1)
    rec = out["latency"]
    assert set(rec.simulator) == set(R.PARTS) and len(rec.null_untrained) == 1
    assert rec.simulator["OFF"]["effect"] <= -R.RELEVANT_EFFECT    # without OFF no OFF cell answers a dark flash
    assert isinstance(rec.recovered, bool) and rec.verdict
    assert rec.fidelity["measure"] == "peak_ms" and len(rec.fidelity["per_condition"]) == 16


def test_a_model_is_judged_against_the_simulator_it_records():
    import json

    from retina.insilico import SIMULATOR_KEY, InSilicoParams, simulator_of

    model = RetinaCNN.random(2, seed=0, per_unit=False)
    assert simulator_of(model).params.to_dict() == InSilicoParams.default().to_dict()   # nothing recorded
    p = InSilicoParams.default()
    p.tau_membrane_ms = 31.0
    model.metadata[SIMULATOR_KEY] = json.dumps(p.to_dict())
    assert simulator_of(model).params.tau_membrane_ms == 31.0
    model.metadata[SIMULATOR_KEY] = json.dumps({"tau_membrane_ms": -1.0})
    with pytest.raises(ValueError, match="recorded simulator"):
        simulator_of(model)


@pytest.mark.parametrize("name, part, other", [("osr-onf", "ONf", "ONs"), ("anticipation-gain-control", None, "A1")])
def test_the_benchmark_tells_a_counterfactual_circuit_from_the_default(name, part, other):
    """The counterfactual's own lesion effects, scored as if a CNN had them against the default simulator's, are
    not a recovery: the benchmark can say 'a different mechanism'."""
    from retina.insilico import COUNTERFACTUALS, counterfactual

    default = InSilicoRetina()
    alt = InSilicoRetina(counterfactual(name))
    for ph in COUNTERFACTUALS[name]["phenomena"]:
        truth, cf = R.simulator_effects(ph, default), R.simulator_effects(ph, alt)
        assert R.score(truth, cf)[0] < R.RECOVERED_SCORE
        assert R.relevant(truth[other]["effect"]) and not R.relevant(cf[other]["effect"])
        if part is not None:
            assert R.relevant(cf[part]["effect"]) and not R.relevant(truth[part]["effect"])


def test_every_part_has_a_layer1_counterpart_and_noise_has_none():
    """docs/recovery.md section 6: on the shipped calibration a rectified linear filter can be found for every part,
    depression included, that the match assigns to that part; for a signal unrelated to the movie none is."""
    sim = InSilicoRetina()
    pos = sim.positions[:4]
    movie = R.probe_movie(n_frames=1000)
    sig = R.part_signals(sim, movie, pos)
    got = R.layer1_counterparts(sim, pos, movie=movie, signals=sig)
    assert list(got) == list(R.PARTS) and got["OFF"]["w1"].shape == (40, 15, 15)
    for part, g in got.items():
        assert g["match"]["part"] == part, (part, g["match"])
    noise = sig.copy()
    noise[..., 4] = np.random.default_rng(0).standard_normal(noise.shape[:2])
    assert R.layer1_counterparts(sim, pos, movie=movie, signals=noise)["depression"]["match"]["part"] != "depression"


@pytest.fixture(scope="module")
def planted():
    """The planted control on the shipped calibration and its verdicts (one untrained null)."""
    sim = InSilicoRetina()
    m = R.planted_model(sim)
    return sim, m, R.recover(m, sim=sim, n_untrained=1)


def test_the_planted_model_follows_the_simulator_and_each_channel_goes_to_its_part(planted):
    """The positive control with the answer planted (docs/recovery.md section 6): a CNN set from the simulator and
    trained on nothing follows the simulator on a natural movie it was not built on, and the match assigns each
    layer-1 channel to the part it was fitted to: the depression channels (which follow their pathway's drive as
    closely as anything) by the sign of what they do."""
    from retina import stimuli as S

    sim, m, recs = planted
    assert m.metadata["cell_types"] and m.n_cells == sim.n_cells
    names = m.metadata["planted_channels"].split(",")
    assert names == ["OFF", "ONf", "ONs", "A1", "dep-OFF", "dep-ONf", "dep-ONs"]
    movie = S.natural_movie(600, (50, 50), seed=3).movie
    a, b = sim.rates(movie)[100:], m.rates(movie)[100:]
    assert np.mean([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(sim.n_cells)]) >= 0.85   # 0.89 measured
    parts = [g["part"] for g in recs["osr"].matches]
    # dep-ONf's loss is too small to be told from the rest (R^2 0.09 on 2026-12-05): it may go unmatched
    assert parts[:5] == ["OFF", "ONf", "ONs", "A1", "depression"] and parts[6] == "depression", parts
    assert parts[5] in (None, "depression"), parts


def test_the_planted_model_agrees_on_every_part_and_is_recovered_on_the_osr(planted):
    """On every phenomenon it reproduces (shipped calibration: the OSR, latency and reversal) the control agrees
    with the simulator on every part that matters, in sign and at least half the size, far above its untrained
    null; on the OSR that is significant against the label permutations too, and the mechanism is recovered."""
    sim, m, recs = planted
    reproduced = [n for n, r in recs.items() if r.fidelity["reproduces"]]
    assert "osr" in reproduced, {n: r.fidelity for n, r in recs.items()}
    for name in reproduced:
        r = recs[name]
        assert r.score == 1.0, (name, r.verdict)
        assert r.score - max(r.null_untrained) >= R.NULL_MARGIN, (name, r.verdict)
    assert recs["osr"].recovered, recs["osr"].verdict
    assert R.overall(list(recs.values()))["recovered"]


@pytest.mark.xfail(strict=True, reason="docs/recovery.md section 6: on latency and reversal the control's effects "
                                       "overshoot the simulator's (A1 on latency -225 % against -21 %), so its "
                                       "labels can be exchanged and the permutation p-value misses 0.05")
def test_the_planted_model_is_recovered_on_every_phenomenon_it_reproduces(planted):
    sim, m, recs = planted
    assert all(r.recovered for r in recs.values() if r.fidelity["reproduces"])


def test_the_planted_model_is_not_recovered_against_a_counterfactual_circuit():
    """``osr-onf`` (derived from the 2026-12-03 calibration) has its OSR on ON-fast with depression and no ON-slow.
    The control planted from the 2026-12-03 circuit, whose OSR rests on ON-slow, is recovered against its own
    circuit and not against ``osr-onf``, although it reproduces the OSR there too: the benchmark tells a planted
    mechanism from another circuit's."""
    from retina.insilico import calibration, counterfactual

    m = R.planted_model(InSilicoRetina(calibration("2026-12-03")))
    own = R.recover(m, names=["osr"], n_untrained=1)["osr"]
    assert own.recovered, own.verdict                                   # p = 0.009 measured
    other = R.recover(m, names=["osr"], sim=InSilicoRetina(counterfactual("osr-onf")), n_untrained=1)["osr"]
    assert other.fidelity["reproduces"] and not other.recovered, other.verdict
    assert other.score < R.RECOVERED_SCORE and not other.agrees["ONf"], other.cnn    # score 0 measured


def test_the_planted_model_with_an_excitatory_amacrine_fails(planted):
    """The same control with the amacrine's sign flipped is recovered nowhere: the control can fail."""
    sim, m, _ = planted
    arrays = dict(m.arrays)
    w3 = np.array(arrays["w3"]).reshape(m.n_cells, m.w2.shape[0], -1).copy()
    w3[:, 3] *= -1                                             # the amacrine excites instead of inhibiting
    arrays["w3"] = w3.reshape(m.n_cells, -1)
    wrong = RetinaCNN(**arrays, frame_shape=m.frame_shape, norm_stats=m.norm_stats, cell_ids=m.cell_ids,
                      metadata=m.metadata)
    recs = R.recover(wrong, sim=sim, n_untrained=1)
    assert not any(r.recovered for r in recs.values())
    assert not R.overall(list(recs.values()))["recovered"]


def test_downstream_signs_are_local_so_a_fluctuating_inhibitory_channel_inhibits(planted):
    """The planted amacrine fluctuates strongly and reaches the output through a convex softplus: clamping it to
    grey lowers the mean rate although it inhibits.  The local sign (the channel scaled up by 1 %) is -1, as it
    is for every depression channel; the pathways excite."""
    from retina.reduction import downstream_signs

    _, m, _ = planted
    assert downstream_signs(m).tolist() == [1, 1, 1, -1, -1, -1, -1]
