"""Imports only run down: core <- leader, phylactery <- manager <- lab (docs/architecture.md).

Read from the source with ``ast`` (function-level imports included), so a lazy import that
runs up a layer fails here as surely as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Package -> the packages of this project it may import (itself always allowed).
ALLOWED = {
    "core": set(),
    "leader": {"core"},
    "phylactery": {"core"},
    "manager": {"core", "leader", "phylactery"},
    "lab": {"core", "leader", "phylactery", "manager"},
}
NODE_PACKAGES = {"core", "leader", "phylactery"}  # what `ek8s overlay build` ships to nodes


def imports(package: str) -> list[tuple[str, int, str]]:
    """(file, line, imported top-level project package) for every import in ``package``."""
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in ALLOWED and top != package:
                    out.append((str(path.relative_to(REPO)), node.lineno, name))
    return out


def test_no_package_imports_from_a_layer_above() -> None:
    upward = [
        f"{file}:{line} imports {name}"
        for package, allowed in ALLOWED.items()
        for file, line, name in imports(package)
        if name.split(".")[0] not in allowed
    ]
    assert upward == []


def test_node_packages_import_nothing_that_is_not_shipped_to_nodes() -> None:
    for package in NODE_PACKAGES:
        assert {name.split(".")[0] for _, _, name in imports(package)} <= NODE_PACKAGES


def test_every_project_package_is_placed_in_a_layer() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages == set(ALLOWED)


def test_the_agent_starts_without_aiohttp() -> None:
    """The agent is on every boot's critical path: aiohttp (etcd's gateway client, ~0.15 s to
    import) and the kubernetes client are imported only when first needed."""
    import subprocess
    import sys

    code = "import sys, leader.agent, leader.cli; print(sorted({'aiohttp', 'kubernetes'} & set(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
