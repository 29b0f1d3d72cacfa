"""The wheel's build step for what ``ek8s`` needs at run time but keeps outside its packages.

Everything else is declared in pyproject.toml. setuptools copies only files inside a package
(``package-data``), and three things live beside the packages in a checkout, where people
edit them: the Warewulf overlays (``overlay/``), the proof of concept's runs that ``ek8s
bench`` compares with (``docs/bench/poc-deployment-times.csv``) and the tree's git revision.
This ``build_py`` copies the first two under ``manager/data/`` of the wheel and writes the
third to ``core/REVISION`` (read by :func:`core.revision`). A wheel cannot hold a symbolic
link (a systemd ``.wants/`` link in an overlay), so each link of ``overlay/`` is recorded in
``manager/data/overlay-symlinks.json`` instead and ``ek8s overlay build`` makes it again.

Editable installs copy nothing: the code finds the checkout's own files there. A source
distribution (``sdist``, with MANIFEST.in) carries the overlays' links, which setuptools' file
list leaves out when they point at a file that exists only once Warewulf rendered it, and the
revision in ``core/REVISION``, so that a wheel built from it is the same.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
# source in the checkout -> destination inside the wheel (relative to its root)
DATA = {
    "overlay": "manager/data/overlay",
    "docs/bench/poc-deployment-times.csv": "manager/data/bench/poc-deployment-times.csv",
}
SYMLINKS = "manager/data/overlay-symlinks.json"


def _git_describe() -> str:
    try:
        res = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return res.stdout.strip() if res.returncode == 0 else ""


class BuildPyWithData(build_py):
    """setuptools' ``build_py``, then the run-time data above into the build directory."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        out = Path(self.build_lib)
        links: dict[str, str] = {}
        for src, dest in DATA.items():
            source, target = HERE / src, out / dest
            if source.is_dir():
                if target.exists():
                    shutil.rmtree(target)
                for path in sorted(source.rglob("*")):
                    rel = path.relative_to(source)
                    if "__pycache__" in rel.parts:
                        continue
                    if path.is_symlink():
                        links[rel.as_posix()] = os.readlink(path)
                    elif path.is_file():
                        (target / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(path, target / rel)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        (out / SYMLINKS).write_text(json.dumps(links, indent=1, sort_keys=True) + "\n")
        revision = _revision()
        if revision:
            (out / "core" / "REVISION").write_text(revision + "\n")


def _revision() -> str:
    """``git describe`` in a checkout, else what an sdist recorded in ``core/REVISION``."""
    described = _git_describe()
    if described:
        return described
    try:
        return (HERE / "core" / "REVISION").read_text().strip()
    except OSError:
        return ""


class SdistWithLinks(sdist):
    """setuptools' ``sdist``, plus the overlays' symbolic links and the git revision."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        for path in sorted((HERE / "overlay").rglob("*")):
            if path.is_symlink():
                target = Path(base_dir) / path.relative_to(HERE)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.is_symlink():
                    os.symlink(os.readlink(path), target)
        revision = _revision()
        if revision:
            (Path(base_dir) / "core" / "REVISION").write_text(revision + "\n")


setup(cmdclass={"build_py": BuildPyWithData, "sdist": SdistWithLinks})
