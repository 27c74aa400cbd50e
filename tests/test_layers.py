"""The layer rules of docs/architecture: imports point down only, foreign libraries stay home.

Walks every module of the package with ``ast`` (nothing is imported), so a broken rule fails
here with the file and line of the offending import.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import qctl

PACKAGE = Path(qctl.__file__).parent

# What each layer may import from qctl (besides itself).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "record": set(),
    "types": {"record"},
    "version": set(),
    "caps": {"errors", "record", "types", "qmp", "version"},
    "conf": {"errors", "record", "types"},
    "qmp": {"errors", "record", "types"},
    "host": {"errors", "record", "types"},
    "qemu": {"errors", "record", "types", "conf", "qmp", "host", "caps"},
    "testing": {"errors", "record", "types", "conf", "qmp", "host", "caps", "qemu"},
    "cli": set(),  # only the public API, checked separately
}
# Foreign libraries that may be imported in exactly one layer.
FOREIGN_HOME = {"lxml": "conf", "pyroute2": "host", "qemu": "qmp"}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    # The package a relative import starts from: the module's own folder.
    pkg_parts = ["qctl", *path.relative_to(PACKAGE).parent.parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module, [a.name for a in node.names]))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layer_rules(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"{path}: module outside the known layers; add it to the design"
    problems = []
    for line, module, names in _imports(path):
        top = module.split(".")[0]
        if top == "qctl":
            parts = module.split(".")
            if len(parts) == 1:
                if layer != "cli":
                    problems.append(f"{line}: only the CLI imports the public package {module}")
                    continue
                for name in names:
                    if name not in qctl.__all__:
                        problems.append(f"{line}: cli uses {name!r}, not in qctl.__all__")
                continue
            target = parts[1]
            if target != layer and target not in ALLOWED[layer]:
                problems.append(f"{line}: {layer} must not import {module}")
        elif top in FOREIGN_HOME and FOREIGN_HOME[top] != layer:
            problems.append(f"{line}: {module} belongs in qctl/{FOREIGN_HOME[top]}/ only")
    assert not problems, f"{path}:\n" + "\n".join(problems)


CLI_MODULES = sorted((PACKAGE / "cli").glob("*.py"))


@pytest.mark.parametrize("path", CLI_MODULES, ids=lambda p: p.name)
def test_the_cli_uses_only_public_names(path: Path) -> None:
    """``qctl.NAME`` in the CLI (it imports the package, whose names load on first use)."""
    tree = ast.parse(path.read_text(), str(path))
    used = {
        (node.lineno, node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "qctl"
    }
    wrong = sorted(f"{line}: qctl.{name}" for line, name in used if name not in qctl.__all__)
    assert not wrong, f"{path}: not in qctl.__all__:\n" + "\n".join(wrong)


def test_public_api_is_ordered_and_complete() -> None:
    assert len(set(qctl.__all__)) == len(qctl.__all__)
    for name in qctl.__all__:
        assert hasattr(qctl, name), name
    # Every lazily loaded name is public, and comes from the module the table says.
    for module, names in qctl._LAZY.items():
        for name in names:
            assert name in qctl.__all__, name
            assert getattr(qctl, name) is getattr(importlib.import_module(module), name)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_graph() -> dict[str, set[str]]:
    """Module → the qctl modules it imports (type-checking and function-level imports too:
    a cycle hidden behind ``TYPE_CHECKING`` is still two modules that know each other)."""
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {_module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        name = _module_name(path)
        edges: set[str] = set()
        for _, module, names in _imports(path):
            if module.split(".")[0] != "qctl":
                continue
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in known]
            edges.update(targets or ([module] if module in known else []))
        edges.discard(name)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_import_cycle_anywhere() -> None:
    # A package's __init__ re-exporting its modules is not a cycle with them, as long as
    # those modules import their siblings directly, never the package itself.
    cycle = _cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
