"""Structure the architecture page promises: no import cycle, science-free kernels, quiet library."""

import ast
import importlib
import logging
import os
import pkgutil
from pathlib import Path

import pytest

import retina
from retina.kernels import _contract

ROOT = Path(retina.__file__).parent


def _modules():
    """Every module of the package: ``{dotted name: path}``."""
    out = {}
    for info in pkgutil.walk_packages([str(ROOT)], prefix="retina."):
        spec = importlib.util.find_spec(info.name)
        out[info.name] = Path(spec.origin)
    out["retina"] = ROOT / "__init__.py"
    return out


def _imports(name, path, modules):
    """Modules of the package that ``name`` imports at module level (not inside functions)."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            # a module importing its own package (its __init__) is how Python runs packages, not a cycle
            if t and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def test_no_import_cycle():
    modules = _modules()
    graph = {n: _imports(n, p, modules) for n, p in modules.items()}
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_the_library_is_quiet_by_default():
    logger = logging.getLogger("retina")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)


def _ast_signatures(path):
    """Top-level functions of a source file and their parameters, read without importing it."""
    out = {}
    for node in ast.parse(Path(path).read_text()).body:
        if isinstance(node, ast.FunctionDef):
            a = node.args
            params = [p.arg for p in a.posonlyargs + a.args]
            if a.kwonlyargs:
                params += ["*"] + [p.arg for p in a.kwonlyargs]
            out[node.name] = tuple(params)
    return out


def _returns(path, name):
    for node in ast.parse(Path(path).read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            last = node.body[-1]
            return ast.unparse(last.value) if isinstance(last, ast.Return) and last.value is not None else None
    return None


FAMILY_FILES = {"kernels": ("kernels/cpu.py", "kernels/gpu.py"), "insilico": ("insilico/_cpu.py", "insilico/_gpu.py")}


@pytest.mark.parametrize("family", sorted(_contract.CONTRACT))
def test_every_backend_module_meets_the_kernel_contract_without_cupy(family):
    """Names, parameters and the return convention of every backend's kernels, read from the sources (so the
    GPU modules are checked on machines without CuPy, CI included)."""
    from retina import _backend

    assert set(_backend.FAMILIES) == set(_contract.CONTRACT)
    for rel in FAMILY_FILES[family]:
        found = _ast_signatures(ROOT / rel)
        for name, params in _contract.CONTRACT[family].items():
            assert found.get(name) == params, (rel, name, found.get(name), params)
            outs = _contract.RETURNS.get(name, ("out",))
            assert _returns(ROOT / rel, name) in (", ".join(outs), f"({', '.join(outs)})") or name.endswith("_fft"), \
                (rel, name, _returns(ROOT / rel, name))


def test_cpu_kernels_return_their_outputs():
    import numpy as np

    from retina.insilico import _cpu as sim
    from retina.kernels import cpu

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((4, 3, 2, 3))
    out = np.empty((2, 4, 5, 5))
    assert np.shares_memory(cpu.corr2d(x, w, out), out)
    assert np.shares_memory(cpu.corr2d_fft(x, w, out), out)
    movie, w3 = rng.standard_normal((9, 6, 7)), rng.standard_normal((2, 4, 2, 3))
    out3 = np.empty((6, 2, 5, 5))
    assert np.shares_memory(cpu.corr3d_movie(movie, w3, out3), out3)
    assert np.shares_memory(cpu.corr3d_movie_fft(movie, w3, out3), out3)
    z = rng.standard_normal((2, 4, 5, 5))
    assert np.shares_memory(cpu.affine_relu(z, np.ones(z.shape[1:]), np.zeros(z.shape[1:]), z), z)
    t, n_px, n_k, n_j = 5, 4, 3, 2
    b = np.empty((t, n_k, n_px))
    got = sim.bipolar_block(rng.standard_normal((t, n_px)), np.ones(n_k), np.full((n_k, 2), 0.5),
                            np.array([2, 2, 2], np.int64), np.full(n_k, 0.3), np.zeros(n_k), np.full(n_k, 0.9),
                            np.full(n_k, 0.1), np.zeros((n_k, 2, 2, n_px)), np.ones((n_k, n_px)), b)
    assert np.shares_memory(got, b)
    rates, parts = np.empty((t, n_j)), np.empty((t, n_k + 1, n_j))
    r, p = sim.ganglion_block(np.ones((t, n_k, n_j)), np.ones((t, n_j)), np.ones((n_j, n_k)), np.ones(n_j),
                              np.zeros(n_j), np.ones(n_j), 2.0, 0.8, 0.7, 0.9, 0.05, 0.1, 0.0, 0.95, np.zeros(n_j),
                              np.ones(n_j), np.zeros((n_k + 1, n_j)), np.zeros(n_j), rates, parts)
    assert np.shares_memory(r, rates) and np.shares_memory(p, parts)


def test_the_installed_package_is_complete():
    """What a wheel must carry: the bundled model, the simulator's calibration, the CUDA sources.  (The tests
    import the installed package, not the source tree, so a missing package-data entry fails here.)"""
    from retina.io import bundled_path

    assert bundled_path("default").is_file()
    assert (ROOT / "data" / "insilico.json").is_file()
    assert (ROOT / "kernels" / "cuda" / "conv.cu").is_file() and (ROOT / "insilico" / "cuda" / "insilico.cu").is_file()


def test_ci_tests_the_installed_copy():
    """Under CI (a non-editable install), ``retina`` must come from site-packages, not the checkout."""
    if not os.environ.get("CI"):
        pytest.skip("only meaningful in CI's fresh, non-editable install")
    repo = Path(__file__).resolve().parents[1]
    assert repo not in ROOT.resolve().parents, f"retina was imported from the source tree: {ROOT}"


def test_no_comment_cites_a_document_outside_the_repository():
    import re

    repo = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"spec section \d|(?<!docs/)\b(insilico|phenomena|performance)\.md|\bissue \d+")
    found = []
    for folder in ("retina", "tests", "scripts", "bench"):
        for path in (repo / folder).rglob("*"):
            if path.suffix in (".py", ".cu", ".cpp", ".sh") and path.name != "test_architecture.py":
                for i, line in enumerate(path.read_text().splitlines(), 1):
                    if pattern.search(line):
                        found.append(f"{path.relative_to(repo)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)
    for name in ("spec.md", "phenomena.md", "insilico.md", "performance.md", "architecture.md", "formats.md"):
        assert (repo / "docs" / name).is_file(), name
