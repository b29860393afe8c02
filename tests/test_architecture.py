"""Structure the architecture page promises: no import cycle, science-free kernels, quiet library."""

import ast
import importlib
import logging
import pkgutil
from pathlib import Path

import retina

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
