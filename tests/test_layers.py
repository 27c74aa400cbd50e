"""The layer rules of docs/architecture: imports point down only, foreign libraries stay home.

Walks every module of the package with ``ast`` (nothing is imported), so a broken rule fails
here with the file and line of the offending import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import qctl

PACKAGE = Path(qctl.__file__).parent

# What each layer may import from qctl (besides itself).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "types": set(),
    "conf": {"errors", "types"},
    "qmp": {"errors", "types"},
    "host": {"errors", "types"},
    "caps": {"errors", "types", "qmp"},
    "qemu": {"errors", "types", "conf", "qmp", "host", "caps"},
    "testing": {"errors", "types", "conf", "qmp", "host", "caps", "qemu"},
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


def test_public_api_is_ordered_and_complete() -> None:
    assert len(set(qctl.__all__)) == len(qctl.__all__)
    for name in qctl.__all__:
        assert hasattr(qctl, name), name
