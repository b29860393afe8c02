"""The calibrated simulator against every registered phenomenon's signature checks (docs/insilico.md).

The checks and their thresholds are the phenomena's own (``Phenomenon.signatures``
in retina/phenomena/*.py), the same ones scripts/calibrate_insilico.py scores;
they are measured with retina.phenomena / retina.measures, the code that
measures CNNs later.  The parameters are the shipped calibration
(retina/data/insilico.json).
"""

import functools

import pytest

from retina import phenomena as P

KNOWN_FAILURES = {
    # Inside the physical domain (flashes of -0.25 to -1, nothing darker than black) the shipped calibration shifts
    # its OFF cells' latency by about 3 ms, not the documented 10 ms; its centre-of-mass latency is not monotonic,
    # and without depression it keeps 67 % of that small shift (documented: at most 60 %).  The thresholds stay at
    # the documented level and these are reported as failing until the simulator is recalibrated (docs/insilico.md
    # section 2.2; bench/RESULTS.md has the recalibration attempts).
    "latency_peak_shift", "latency_com_shift", "latency_com_monotonic", "latency_lesion_depression",
}


@functools.cache
def _checks(name):
    return tuple(P.get(name).check_simulator())


@pytest.mark.parametrize("name", ["osr", "latency", "reversal", "anticipation"])
def test_simulator_passes_its_signature_checks(name):
    checks = _checks(name)
    assert checks, f"{name} defines no signature check"
    failed = [str(c) for c in checks if not c.passed and c.name not in KNOWN_FAILURES]
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("check", sorted(KNOWN_FAILURES))
@pytest.mark.xfail(strict=True, reason="the shipped simulator misses this documented signature (see KNOWN_FAILURES)")
def test_known_signature_failures(check):
    found = {c.name: c for name in P.names() for c in _checks(name)}
    assert found[check].passed, str(found[check])


def test_every_registered_phenomenon_has_a_signature():
    assert set(P.names()) >= {"osr", "latency", "reversal", "anticipation"}
    for name, ph in P.REGISTRY.items():
        assert ph.signatures is not None and ph.key_measure and ph.window is not None, name
