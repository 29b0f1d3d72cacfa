"""Node images and offline images: shellcheck on every script, a structural check of each
Containerfile, and build.sh / export.sh choosing their commands (stand-in tools, --dry-run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILDER = ROOT / "image_builder"
INSTRUCTIONS = {"FROM", "ARG", "LABEL", "RUN", "COPY", "ENV", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD"}


def scripts() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.sh"], cwd=ROOT, capture_output=True, text=True, check=True)
    found = [ROOT / p for p in tracked.stdout.split()]
    found += [p for p in ROOT.glob("*/*.sh") if p not in found and ".venv" not in p.parts]
    return sorted(set(found))


def test_shellcheck_clean() -> None:
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is needed (apt-get install shellcheck; `make test` does)"
    paths = scripts()
    assert {p.name for p in paths} >= {"build.sh", "export.sh", "rebuild-and-restart.sh"}
    res = subprocess.run([tool, "--severity=style", *map(str, paths)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word, rest.strip()))
    assert not pending, f"{path.name}: ends inside a continued line"
    return out


@pytest.mark.parametrize("variant", ["base", "control", "k3s"])
def test_containerfile_structure(variant: str) -> None:
    path = BUILDER / f"Containerfile.{variant}"
    steps = instructions(path)
    words = [w for w, _ in steps]
    assert set(words) <= INSTRUCTIONS, f"unknown instruction in {path.name}: {set(words) - INSTRUCTIONS}"
    first = words.index("FROM")
    assert words[:first] == ["ARG"] * first, "only ARGs may precede FROM"
    assert words.count("FROM") == 1
    text = " ".join(a for _, a in steps)
    assert ":latest" not in text and "ADD" not in words, "pin every image and download"
    assert any(w == "LABEL" and "org.opencontainers.image.title" in a for w, a in steps)
    for word, args in steps:
        if word == "RUN" and "dnf -y install" in args:
            assert "dnf clean all" in args, f"{path.name}: clean dnf's cache in the same layer"
        if word == "COPY":
            src = args.split()[0]
            assert (ROOT / src).exists() or src in {
                "image_builder/requirements-node.txt",  # written by build.sh
                "images/archives/",  # written by images/export.sh (build.sh makes it if missing)
            }, f"{path.name}: COPY source {src} does not exist"
    if variant == "base":
        assert re.search(r'"kubelet-\$\{v\}" "kubeadm-\$\{v\}" "kubectl-\$\{v\}"', text), "pin the node packages"
        assert "ARG KUBERNETES_VERSION" in path.read_text()
        for pkg in ("containerd.io", "conntrack-tools", "iproute", "python3.11"):
            assert pkg in text
        assert "SystemdCgroup = true" in text and "/var/lib/ek8s/images" in text
    if variant == "control":
        assert "haproxy keepalived" in text and "systemctl disable haproxy.service keepalived.service" in text
    if variant == "k3s":
        assert "ARG K3S_VERSION" in path.read_text() and "airgap" in text


def _stand_ins(tmp_path: Path, ww_version: str | None) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text("#!/bin/sh\nexit 0\n")
    if ww_version:
        (bin_dir / "wwctl").write_text(f"#!/bin/sh\necho 'wwctl version: {ww_version}'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    return {"PATH": path, "TMPDIR": str(tmp_path), "HOME": str(tmp_path)}


@pytest.fixture
def keep_generated() -> object:
    req = BUILDER / "requirements-node.txt"
    existed = req.exists()
    yield
    if not existed:
        req.unlink(missing_ok=True)


@pytest.mark.parametrize(("ww_version", "verb"), [("4.5.8-1.el9", "container"), ("4.6.1", "image")])
def test_build_imports_with_the_warewulf_versions_verb(
    tmp_path: Path, keep_generated: object, ww_version: str, verb: str
) -> None:
    env = _stand_ins(tmp_path, ww_version)
    res = subprocess.run(
        [str(BUILDER / "build.sh"), "--variants", "control", "--dry-run"], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("+ ")]
    builds = [ln for ln in lines if " build " in ln]
    assert len(builds) == 2 and "Containerfile.base" in builds[0] and "Containerfile.control" in builds[1]
    assert "BASE_IMAGE=localhost/ek8s-base:v1.32.1" in builds[1]
    assert f"+ wwctl {verb} import --force {tmp_path}/ek8s-base-v1.32.1.tar ek8s-base" in lines
    assert f"+ wwctl {verb} import --force {tmp_path}/ek8s-control-v1.32.1.tar ek8s-control" in lines
    deps = (BUILDER / "requirements-node.txt").read_text().split()
    assert any(d.startswith("aiohttp") for d in deps) and any(d.startswith("pydantic") for d in deps)


def test_build_refuses_bad_input_and_missing_tools(tmp_path: Path, keep_generated: object) -> None:
    env = _stand_ins(tmp_path, None)
    bad = subprocess.run([str(BUILDER / "build.sh"), "--variants", "gpu"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown variant" in bad.stderr
    bad = subprocess.run(
        [str(BUILDER / "build.sh"), "--kubernetes-version", "1.32"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "v1.32.1" in bad.stderr
    no_ww = subprocess.run([str(BUILDER / "build.sh"), "--dry-run"], capture_output=True, text=True, env=env)
    assert no_ww.returncode == 1 and "--no-import" in no_ww.stderr


def test_export_lists_every_image_once(tmp_path: Path) -> None:
    env = {"PATH": _stand_ins(tmp_path, None)["PATH"]}
    out = tmp_path / "archives"
    res = subprocess.run(
        [str(ROOT / "images/export.sh"), "--tool", "podman", "--out", str(out), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    wanted = [ln for ln in (ROOT / "images/v1.32.1.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(wanted) == 9 and all(":" in w.rsplit("/", 1)[1] for w in wanted), "pin every image by tag"
    saves = [ln for ln in res.stdout.splitlines() if ln.startswith("+ podman save")]
    assert len(saves) == len(wanted)
    assert f"+ podman save -o {out}/kube-apiserver_v1.32.1.tar registry.k8s.io/kube-apiserver:v1.32.1" in saves
    missing = subprocess.run(
        [str(ROOT / "images/export.sh"), "--kubernetes-version", "v1.99.0", "--dry-run"],
        capture_output=True,
        text=True,
        env=env | {"HOME": os.environ.get("HOME", "/root")},
    )
    assert missing.returncode == 2 and "kubeadm config images list" in missing.stderr
