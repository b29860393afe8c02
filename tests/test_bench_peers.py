"""The peers of `retina bench --peers` compute the same thing (skipped without the 'bench' extra)."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("captum")

from retina.bench_peers import run_peers  # noqa: E402


def test_peers_agree_with_retina_on_the_same_work():
    rows = {r.workload: r for r in run_peers(["forward-movie", "ig-hidden", "ig-input"], scale=0.1, repeat=1)}
    assert set(rows) == {"forward-movie", "ig-hidden", "ig-hidden:trained", "ig-hidden:conv2", "ig-input"}
    assert rows["forward-movie"].max_rel_diff < 1e-4          # float32 in both
    # layer 1: the same quadrature (left nodes, node rule), so the same sums to float32, except where a unit sits
    # within rounding of its kink at a node and the two switch it on different sides: one node's share, 1 / 50
    for name in ("ig-hidden", "ig-hidden:trained"):
        assert rows[name].p99_rel_diff < 1e-4 and rows[name].max_rel_diff < 1 / 50
    # layer 2 is piecewise affine along the path: captum's differences and retina's node slopes part in the
    # cells that hold a layer-1 switch, by O(1 / n_steps) per switch (measured at 32 windows: max 2.3e-2,
    # p99 2.2e-3 of the range)
    r = rows["ig-hidden:conv2"]
    assert r.p99_rel_diff < 1 / 50 and r.max_rel_diff < 5 / 50
    assert rows["ig-input"].max_rel_diff < 1e-4
    assert "of layer-1 units switch" in rows["ig-hidden"].detail
    assert all(r.ratio > 0 and len(r.retina_s) == len(r.peer_s) == 1 for r in rows.values())


def test_without_the_extra_the_error_names_it(monkeypatch):
    import sys

    from retina.bench_peers import require_peers

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(RuntimeError, match=r"retina\[bench\]"):
        require_peers()
