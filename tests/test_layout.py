"""The package layout, checked from the code's own imports (ast; nothing is imported or executed).

- no import cycles between modules;
- no arrow from a lower layer up (LAYERS, lowest first);
- the server and the client never import each other, not even through another module;
- the package root holds only the allowed modules;
- no strategy method is assigned to (wrap a strategy, never patch it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pollen"

# Lowest first. A module may import its own layer and the ones below, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("pollen", "pollen.errors", "pollen.io_utils", "pollen.registry", "pollen.linalg"),
    # the run config applies model recipes (models.registry), so it shares the models' layer
    ("pollen.config", "pollen.protocol", "pollen.compression", "pollen.data", "pollen.models"),
    ("pollen.attacks",),
    ("pollen.strategies",),
    ("pollen.server", "pollen.client"),
    ("pollen.deploy",),
    ("pollen.cli",),
]
ROOT_MODULES = {"__init__.py", "cli.py", "config.py", "errors.py", "registry.py", "io_utils.py", "linalg.py"}
STRATEGY_HOOKS = {"configure_train", "aggregate_train", "configure_evaluate", "aggregate_evaluate",
                  "summary", "start"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The longest prefix of `name` that is a module of the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(mod: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(r for n in names if n.startswith("pollen") and (r := _resolve(n)) and r != mod)
    return found


GRAPH = {mod: _imports(mod, path) for mod, path in MODULES.items()}


def _layer(mod: str) -> tuple[int, str]:
    best = (-1, "")
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > len(best[1]):
                best = (i, p)
    return best


def test_every_module_has_a_layer():
    assert [m for m in MODULES if _layer(m)[0] < 0] == []


def test_no_import_cycles():
    """Tarjan's strongly connected components; any component of two or more modules is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == [], "\n".join(" ⇄ ".join(c) for c in cycles)


def test_no_arrow_from_a_lower_layer_up():
    up = [f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps if _layer(b)[0] > _layer(a)[0]]
    assert up == []


@pytest.mark.parametrize("side,other", [("pollen.server", "pollen.client"),
                                        ("pollen.client", "pollen.server")])
def test_server_and_client_never_import_each_other(side: str, other: str):
    """Not directly and not through anything they import (what runs in one app must not need the other)."""
    seen: set[str] = set()
    todo = [m for m in MODULES if m == side or m.startswith(side + ".")]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(GRAPH[m])
    assert sorted(m for m in seen if m == other or m.startswith(other + ".")) == []


def test_package_root_holds_only_shared_modules():
    assert sorted(p.name for p in PKG.glob("*.py")) == sorted(ROOT_MODULES)


def test_method_folders_register_one_method_each():
    """Each folder under strategies/ is a method: an __init__ with one register_method(...) call."""
    for folder in sorted(p for p in (PKG / "strategies").iterdir() if p.is_dir() and p.name != "__pycache__"):
        tree = ast.parse((folder / "__init__.py").read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", getattr(n.func, "attr", "")) == "register_method"]
        assert len(calls) == 1, folder


def test_no_monkey_patching_of_strategy_methods():
    """`x.aggregate_train = ...` or setattr(x, "configure_train", ...) anywhere: wrap, don't patch."""
    hits = []
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            hits += [f"{mod}:{node.lineno}" for t in targets
                     if isinstance(t, ast.Attribute) and t.attr in STRATEGY_HOOKS]
            if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setattr"
                    and len(node.args) >= 2):
                name = node.args[1]
                if isinstance(name, ast.Constant) and name.value in STRATEGY_HOOKS:
                    hits.append(f"{mod}:{node.lineno}")
    assert hits == []


def test_layout_test_sees_real_imports():
    """Guard against a vacuous graph: known arrows must be found."""
    assert "pollen.server.runner" in GRAPH["pollen.server.app"]
    assert "pollen.strategies" in GRAPH["pollen.client.app"]
