"""The wheel carries everything `ek8s` needs at run time.

Built from this checkout through a source distribution (setup.py copies the overlays, the
bench baseline and the git revision in), installed with its dependencies into a new venv, and run from a directory
outside the checkout: `ek8s overlay build` must write the same overlays as the checkout does,
`ek8s warewulf plan` must plan the example inventory as the checkout does, and every program
answers `--version` with the one version. Needs the package index pip uses (about 40 s to
install the dependencies on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import core

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "warewulf_conf" / "inventory.yaml"


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, f"{argv}: {res.stderr[-3000:]}"
    return res


def tree(root: Path) -> dict[str, str]:
    """``{relative path: content}`` of every file (links as ``-> target``), Python caches aside."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if "__pycache__" in rel:
            continue
        if p.is_symlink():
            out[rel] = f"-> {os.readlink(p)}"
        elif p.is_file():
            out[rel] = p.read_bytes().decode(errors="replace")
    return out


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source distribution and the wheel built from it (``python -m build``, as a
    release does); setuptools' build directories go to a temporary place (DIST_EXTRA_CONFIG),
    not into the checkout."""
    tmp = tmp_path_factory.mktemp("dist")
    (tmp / "build").mkdir()
    cfg = tmp / "dist.cfg"
    cfg.write_text(f"[build]\nbuild_base = {tmp / 'build'}\n[egg_info]\negg_base = {tmp / 'build'}\n")
    env = os.environ | {"DIST_EXTRA_CONFIG": str(cfg)}
    run([sys.executable, "-m", "build", "-o", str(tmp / "dist"), str(REPO)], tmp, env)
    return tmp / "dist"


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (built,) = dist.glob("ephemeral_k8s-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with only the wheel and its dependencies; returns its bin directory. pip does
    not byte-compile every installed module (``--no-compile``: ~10 s on 2 cores, and nothing
    here depends on it); the programs compile what they import when they first run."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", str(where)], where.parent)
    run([str(where / "bin/pip"), "install", "-q", "--no-compile", str(wheel)], where.parent)
    return where / "bin"


def test_the_wheel_names_one_version_and_an_spdx_license(wheel: Path) -> None:
    assert wheel.name.startswith(f"ephemeral_k8s-{core.__version__}-")
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(f"ephemeral_k8s-{core.__version__}.dist-info/METADATA").decode()
        names = set(z.namelist())
    assert f"\nVersion: {core.__version__}\n" in meta
    assert "\nLicense-Expression: Apache-2.0\n" in meta
    assert {"manager/wwtemplate/main.go", "phylactery/templates/haproxy.cfg.j2", "core/REVISION"} <= names
    assert "manager/data/bench/poc-deployment-times.csv" in names


def test_the_source_distribution_keeps_the_overlay_links_and_the_revision(dist: Path) -> None:
    (sdist,) = dist.glob("ephemeral_k8s-*.tar.gz")
    top = f"ephemeral_k8s-{core.__version__}"
    with tarfile.open(sdist) as tar:
        link = tar.getmember(f"{top}/overlay/ek8s/rootfs/etc/systemd/system/multi-user.target.wants/ek8s-node.service")
        assert link.issym() and link.linkname == "../ek8s-node.service"
        revision = tar.extractfile(f"{top}/core/REVISION")
        assert revision is not None and revision.read().decode().strip() == core.revision()
        assert tar.getmember(f"{top}/docs/bench/poc-deployment-times.csv").isfile()


def test_every_program_of_the_wheel_answers_version(venv: Path, tmp_path: Path) -> None:
    for prog in ("ek8s", "ek8s-node", "ek8s-phylactery"):
        out = run([str(venv / prog), "--version"], tmp_path).stdout
        # The revision the wheel recorded is this checkout's (core.revision() reads git here).
        assert out == f"{prog} {core.__version__} ({core.revision()})\n"


def test_overlay_build_from_the_wheel_writes_what_the_checkout_writes(venv: Path, tmp_path: Path) -> None:
    run([str(venv / "ek8s"), "overlay", "build", "--out", str(tmp_path / "wheel")], tmp_path)
    run([sys.executable, "-m", "manager", "overlay", "build", "--out", str(tmp_path / "checkout")], REPO)
    from_wheel, from_checkout = tree(tmp_path / "wheel"), tree(tmp_path / "checkout")
    assert sorted(from_wheel) == sorted(from_checkout)
    assert from_wheel == from_checkout
    link = "ek8s/rootfs/etc/systemd/system/multi-user.target.wants/ek8s-node.service"
    assert from_wheel[link] == "-> ../ek8s-node.service"


def test_warewulf_plan_from_the_wheel_is_the_checkouts(venv: Path, tmp_path: Path) -> None:
    for version in ("4.5", "4.6"):
        args = ["warewulf", "plan", "--offline", "--version", version, str(INVENTORY)]
        from_wheel = run([str(venv / "ek8s"), *args], tmp_path).stdout
        from_checkout = run([sys.executable, "-m", "manager", *args], REPO).stdout
        assert from_wheel == from_checkout and "wwctl" in from_wheel


def test_bench_finds_its_baseline_in_the_wheel(venv: Path, tmp_path: Path) -> None:
    code = "from manager.benchcli import BASELINE; from manager.bench import read_csv; print(len(read_csv(BASELINE)))"
    out = run([str(venv / "python"), "-c", code], tmp_path).stdout
    assert int(out) > 0
