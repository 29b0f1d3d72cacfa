"""One version source (``core.__version__``) and ``--version`` on every program."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import core

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("module", "prog"), [("manager", "ek8s"), ("leader", "ek8s-node"), ("phylactery", "ek8s-phylactery")]
)
def test_every_program_answers_version(module: str, prog: str) -> None:
    res = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{prog} {core.__version__} ({core.revision()})\n"


def test_pyproject_takes_the_version_from_core_and_names_an_spdx_license() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "core.__version__"}
    assert project["project"]["license"] == "Apache-2.0"  # a PEP 639 expression, not a table


def test_the_installed_metadata_is_cores_version() -> None:
    from importlib.metadata import version

    assert version("ephemeral-k8s") == core.__version__


def test_a_recorded_revision_wins_over_git(tmp_path: Path) -> None:
    pkg = tmp_path / "core"
    pkg.mkdir()
    assert core.read_revision(pkg) == "unknown"  # neither a record nor a checkout
    (pkg / "REVISION").write_text("v0.1.0-3-gabc1234\n")
    assert core.read_revision(pkg) == "v0.1.0-3-gabc1234"


def test_a_checkout_describes_itself(tmp_path: Path) -> None:
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "core").mkdir()
    (tmp_path / "core/__init__.py").write_text("")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
    assert core.read_revision(tmp_path / "core") == head.stdout.strip()
    (tmp_path / "core/__init__.py").write_text("changed")
    assert core.read_revision(tmp_path / "core") == head.stdout.strip() + "-dirty"
