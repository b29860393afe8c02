"""The peers of `retina bench --peers` compute the same thing (skipped without the 'bench' extra)."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("captum")

from retina.bench_peers import run_peers  # noqa: E402


def test_peers_agree_with_retina_on_the_same_work():
    rows = {r.workload: r for r in run_peers(["forward-movie", "ig-hidden", "ig-input"], scale=0.02, repeat=1)}
    assert rows["forward-movie"].max_rel_diff < 1e-4          # float32 in both
    assert rows["ig-hidden"].max_rel_diff < 1e-4              # the same quadrature: left nodes, node rule
    assert rows["ig-input"].max_rel_diff < 1e-4
    assert all(r.ratio > 0 and len(r.retina_s) == len(r.peer_s) == 1 for r in rows.values())


def test_without_the_extra_the_error_names_it(monkeypatch):
    import sys

    from retina.bench_peers import require_peers

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(RuntimeError, match=r"retina\[bench\]"):
        require_peers()
