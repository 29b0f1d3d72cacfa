"""Node images and offline images: shellcheck on every script, a structural check of each
Containerfile, and build.sh / export.sh choosing their commands (stand-in tools, --dry-run)."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
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
    stages = [a for w, a in steps if w == "FROM"]
    # One image, plus at most a named stage to copy etcd's tools from (the base variant).
    assert len(stages) == 1 or (len(stages) == 2 and stages[0] == "${ETCD_IMAGE} AS etcd"), stages
    text = " ".join(a for _, a in steps)
    assert ":latest" not in text and "ADD" not in words, "pin every image and download"
    assert any(w == "LABEL" and "org.opencontainers.image.title" in a for w, a in steps)
    for word, args in steps:
        if word == "RUN" and "dnf -y install" in args:
            assert "dnf clean all" in args, f"{path.name}: clean dnf's cache in the same layer"
        if word == "COPY" and args.startswith("--from=etcd "):
            assert variant == "base" and "/usr/local/bin/etcdutl" in args
        elif word == "COPY":
            src = args.split()[0]
            assert (ROOT / src).exists() or src in {
                "image_builder/requirements-node.txt",  # written by build.sh
                "images/archives/",  # written by images/export.sh (build.sh makes it if missing)
            }, f"{path.name}: COPY source {src} does not exist"
    if variant == "base":
        # No default etcd or pause image to go stale: build.sh passes the version's (its image list).
        raw = path.read_text()
        assert re.search(r"^ARG ETCD_IMAGE$", raw, re.M) and re.search(r"^ARG PAUSE_IMAGE$", raw, re.M)
        assert re.search(r'"kubelet-\$\{v\}" "kubeadm-\$\{v\}" "kubectl-\$\{v\}"', text), "pin the node packages"
        assert "ARG KUBERNETES_VERSION" in path.read_text()
        for pkg in ("containerd.io", "conntrack-tools", "iproute", "python3.11"):
            assert pkg in text
        assert "SystemdCgroup = true" in text and "/var/lib/ek8s/images" in text
    if variant in ("base", "k3s"):
        # node_exporter serves the agent's textfile from the directory node.yaml's default names.
        from core.config import MetricsSettings

        assert "systemctl enable ek8s-node-exporter.service" in text and "/usr/local/bin/node_exporter" in text
        unit = (BUILDER / "ek8s-node-exporter.service").read_text()
        assert f"--collector.textfile.directory={MetricsSettings().textfile_dir}" in unit
        assert "ExecStart=/usr/local/bin/node_exporter " in unit
    if variant == "control":
        assert "haproxy keepalived" in text and "systemctl disable haproxy.service keepalived.service" in text
    if variant == "k3s":
        from core.drivers.k3s import AIRGAP_IMAGES

        assert "ARG K3S_VERSION=v1.36.4+k3s1" in path.read_text()
        # k3s where the overlay's units run it, checked against the release's checksums.
        units = ROOT / "overlay/ek8s/rootfs/etc/systemd/system"
        for unit in ("k3s.service", "k3s-agent.service"):
            assert "\nExecStart=/usr/local/bin/k3s " in (units / unit).read_text()
        assert 'install -m 0755 "${tmp}/k3s" /usr/local/bin/k3s' in text and "sha256sum -c" in text
        # The airgap images where k3s imports them, and where the driver's reset keeps them.
        assert f"{AIRGAP_IMAGES}/k3s-airgap-images-amd64.tar.zst" in text
        assert "haproxy keepalived" in text and "systemctl disable haproxy.service keepalived.service" in text
        assert "python3.11" in text and "kubeadm" not in text


WWCTL = r'''#!{python}
"""Stand-in wwctl for build.sh (tests only): node images in a JSON registry (WWCTL_STATE).

As Warewulf does (v4.5.8 / v4.6.5): `import` builds the image only with --build (4.5
internal/pkg/api/container/container.go:243, flag default false at
internal/app/wwctl/container/imprt/root.go:44; 4.6 internal/pkg/api/image/image.go:175,
internal/app/wwctl/image/imprt/root.go:45); `build NAME` builds it. 4.5 has no `image`
command; 4.6 keeps `container` as an alias of `image` (internal/app/wwctl/image/root.go:25).
An existing name needs --force or --update; a source that is not a file is refused.
"""
import json, os, sys
version = {version!r}
argv = sys.argv[1:]
state = os.environ["WWCTL_STATE"]
reg = json.load(open(state)) if os.path.exists(state) else {{}}
def die(msg):
    print("ERROR: " + msg, file=sys.stderr)
    sys.exit(255)
if argv == ["version"]:
    print("wwctl version:\t " + version)
    sys.exit(0)
if argv[0] not in ("container", "image", "vnfs") or (argv[0] == "image" and version.startswith("4.5.")):
    die("unknown command %r for \"wwctl\"" % argv[0])
flags = [a for a in argv[2:] if a.startswith("-")]
args = [a for a in argv[2:] if not a.startswith("-")]
for flag in flags:
    if flag not in ("--force", "-f", "--update", "-u", "--build", "-b"):
        die("unknown flag: " + flag)
if argv[1] == "import":
    source, name = args[0], args[1] if len(args) > 1 else os.path.basename(args[0])
    if not os.path.isfile(source):
        die("invalid dir or uri: " + source)
    if name in reg and not {{"--force", "-f", "--update", "-u"}} & set(flags):
        die("VNFS Name exists, specify --force, --update, or choose a different name: " + name)
    reg[name] = {{"built": bool({{"--build", "-b"}} & set(flags))}}
elif argv[1] == "build":
    for name in args:
        if name not in reg:
            die("image not found: " + name)
        reg[name]["built"] = True
else:
    die("unknown command %r" % argv[1])
json.dump(reg, open(state, "w"))
'''

# Saves an archive where `save -o FILE` asks; everything else succeeds silently.
PODMAN = """#!/bin/sh
if [ "$1" = save ]; then
    while [ $# -gt 0 ]; do
        if [ "$1" = -o ]; then : > "$2"; fi
        shift
    done
fi
exit 0
"""


def _stand_ins(tmp_path: Path, ww_version: str | None) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(PODMAN)
    if ww_version:
        (bin_dir / "wwctl").write_text(WWCTL.format(python=sys.executable, version=ww_version))
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    return {"PATH": path, "TMPDIR": str(tmp_path), "HOME": str(tmp_path), "WWCTL_STATE": str(tmp_path / "ww.json")}


@pytest.fixture
def keep_generated() -> Iterator[None]:
    """Remove what a build.sh run writes into the checkout, unless it was there before."""
    req = BUILDER / "requirements-node.txt"
    archives = ROOT / "images" / "archives"
    existed = req.exists(), archives.exists()
    yield
    if not existed[0]:
        req.unlink(missing_ok=True)
    if not existed[1] and archives.is_dir() and not any(archives.iterdir()):
        archives.rmdir()


@pytest.mark.parametrize(("ww_version", "verb"), [("4.5.8-1.el9", "container"), ("4.6.1", "image")])
def test_build_imports_with_the_warewulf_versions_verb(
    tmp_path: Path, keep_generated: None, ww_version: str, verb: str
) -> None:
    env = _stand_ins(tmp_path, ww_version)
    res = subprocess.run(
        [str(BUILDER / "build.sh"), "--variants", "control", "--kubernetes-version", "v1.32.1", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("+ ")]
    builds = [ln for ln in lines if " build " in ln]
    assert len(builds) == 2 and "Containerfile.base" in builds[0] and "Containerfile.control" in builds[1]
    # The base image's etcd tools and sandbox image: the version's list (images/v1.32.1.txt).
    assert (
        "ETCD_IMAGE=registry.k8s.io/etcd:3.5.16-0" in builds[0]
        and "PAUSE_IMAGE=registry.k8s.io/pause:3.10" in builds[0]
    )
    assert "ETCD_IMAGE" not in builds[1]
    assert "BASE_IMAGE=localhost/ek8s-base:v1.32.1" in builds[1]
    assert f"+ wwctl {verb} import --force --build {tmp_path}/ek8s-base-v1.32.1.tar ek8s-base" in lines
    assert f"+ wwctl {verb} import --force --build {tmp_path}/ek8s-control-v1.32.1.tar ek8s-control" in lines
    deps = (BUILDER / "requirements-node.txt").read_text().split()
    assert any(d.startswith("aiohttp") for d in deps) and any(d.startswith("pydantic") for d in deps)


@pytest.mark.parametrize(
    ("args", "k3s_release"), [((), "v1.36.4+k3s1"), (("--k3s-version", "v1.36.4+k3s2"), "v1.36.4+k3s2")]
)
def test_build_k3s_variant_alone(tmp_path: Path, keep_generated: None, args: tuple[str, ...], k3s_release: str) -> None:
    """The k3s image stands alone (no ek8s-base under it) and takes its k3s release."""
    env = _stand_ins(tmp_path, "4.6.1")
    res = subprocess.run(
        [str(BUILDER / "build.sh"), "--variants", "k3s", *args, "--dry-run"], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("+ ")]
    builds = [ln for ln in lines if " build " in ln]
    assert len(builds) == 1 and "Containerfile.k3s" in builds[0], builds
    assert f"K3S_VERSION={k3s_release}" in builds[0]
    assert "BASE_IMAGE=ghcr.io/warewulf/warewulf-rockylinux:9" in builds[0]
    assert f"+ wwctl image import --force --build {tmp_path}/ek8s-k3s-v1.36.4.tar ek8s-k3s" in lines
    bad = subprocess.run(
        [str(BUILDER / "build.sh"), "--variants", "k3s", "--k3s-version", "1.32.1", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2 and "--k3s-version" in bad.stderr


def test_build_refuses_bad_input_and_missing_tools(tmp_path: Path, keep_generated: None) -> None:
    env = _stand_ins(tmp_path, None)
    bad = subprocess.run([str(BUILDER / "build.sh"), "--variants", "gpu"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "unknown variant" in bad.stderr
    bad = subprocess.run(
        [str(BUILDER / "build.sh"), "--kubernetes-version", "1.32"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "v1.36.4" in bad.stderr
    no_ww = subprocess.run([str(BUILDER / "build.sh"), "--dry-run"], capture_output=True, text=True, env=env)
    assert no_ww.returncode == 1 and "--no-import" in no_ww.stderr
    # A version without an image list (none in the repository, none exported): its etcd tools are unknown.
    no_list = subprocess.run(
        [str(BUILDER / "build.sh"), "--kubernetes-version", "v1.35.9", "--no-import", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert no_list.returncode == 2 and "images/export.sh --kubernetes-version v1.35.9" in no_list.stderr


def test_export_lists_every_image_once(tmp_path: Path) -> None:
    env = {"PATH": _stand_ins(tmp_path, None)["PATH"]}
    out = tmp_path / "archives"
    args = ["--tool", "podman", "--out", str(out), "--kubernetes-version", "v1.32.1", "--dry-run"]
    res = subprocess.run(
        [str(ROOT / "images/export.sh"), *args],
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


@pytest.mark.parametrize("ww_version", ["4.5.8-1.el9", "4.6.1"])
def test_build_builds_what_it_imports(tmp_path: Path, keep_generated: None, ww_version: str) -> None:
    """Defect 2 of issue 9: Warewulf builds an imported image only with --build; an unbuilt
    one gives nodes a 404 at the image stage. After build.sh every image it made is built."""
    env = _stand_ins(tmp_path, ww_version)
    res = subprocess.run(
        [str(BUILDER / "build.sh"), "--variants", "control", "--kubernetes-version", "v1.32.1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    images = json.loads((tmp_path / "ww.json").read_text())
    assert images == {"ek8s-base": {"built": True}, "ek8s-control": {"built": True}}
    assert not list(tmp_path.glob("*.tar")), "the archives are removed after the import"


def _python39(tmp_path: Path) -> Path:
    """A Python 3.9, as Rocky 9's python3 is: a real one if installed (python3.9 on PATH or
    under pyenv), else a stand-in that reports 3.9 and has no tomllib (new in 3.11)."""
    candidates = [
        shutil.which("python3.9"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))),
    ]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 9)":
            return Path(candidate)
    fake = tmp_path / "python3.9-stand-in"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "sys.modules['tomllib'] = None  # `import tomllib` fails, as on 3.9\n"
        "sys.version_info = (3, 9, 18, 'final', 0)\n"
        "args = sys.argv[1:]\n"
        "code = args[1] if args[0] == '-c' else sys.stdin.read()\n"
        "sys.argv = args[1:] if args[0] == '-c' else args\n"
        "exec(compile(code, '<stdin>', 'exec'), {'__name__': '__main__'})\n"
    )
    fake.chmod(0o755)
    return fake


def test_build_runs_where_python3_is_rocky9s(tmp_path: Path, keep_generated: None) -> None:
    """Defect 3 of issue 9: on Rocky 9 `python3` is 3.9, which has no tomllib; build.sh's
    Python runs under the python3.11 the README installs, and says so when there is none."""
    env = _stand_ins(tmp_path, "4.6.1")
    bin_dir = tmp_path / "bin"
    old = _python39(tmp_path)
    (bin_dir / "python3").symlink_to(old)
    (bin_dir / "python3.11").symlink_to(sys.executable)
    v132 = ["--kubernetes-version", "v1.32.1"]
    res = subprocess.run(
        [str(BUILDER / "build.sh"), *v132, "--dry-run"], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
    deps = (BUILDER / "requirements-node.txt").read_text().split()
    assert any(d.startswith("pydantic") for d in deps)
    # The interpreter check itself runs under the oldest Python it may meet, and refuses it.
    res = subprocess.run(
        [str(BUILDER / "build.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env | {"EK8S_PYTHON": str(old)},
        timeout=120,
    )
    assert res.returncode == 1 and "3.11 or later" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert " build " not in res.stdout, "nothing is built before the check"


KUBEADM_STAND_IN = """#!/bin/sh
# stand-in kubeadm: `kubeadm config images list --kubernetes-version V` as kubeadm prints it
[ "$1 $2 $3 $4" = "config images list --kubernetes-version" ] || exit 3
v="$5"
for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do echo "registry.k8s.io/$c:$v"; done
echo registry.k8s.io/coredns/coredns:v9.9.9
echo registry.k8s.io/pause:9.9
echo registry.k8s.io/etcd:3.6.99-0
"""


def test_export_asks_kubeadm_for_a_version_without_a_list_and_build_takes_etcd_from_it(
    tmp_path: Path, keep_generated: None
) -> None:
    """No images/<version>.txt for the default version: export.sh writes kubeadm's own list
    beside the archives (a dry run writes nothing), and build.sh takes the base image's etcd
    and pause images from it."""
    from core.versions import DEFAULT_KUBERNETES_VERSION as v

    env = _stand_ins(tmp_path, "4.6.1")
    (tmp_path / "bin" / "kubeadm").write_text(KUBEADM_STAND_IN)
    (tmp_path / "bin" / "kubeadm").chmod(0o755)
    out = tmp_path / "archives"
    dry = subprocess.run(
        [str(ROOT / "images/export.sh"), "--tool", "podman", "--out", str(out), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert dry.returncode == 0, dry.stderr
    assert f"+ podman save -o {out}/etcd_3.6.99-0.tar registry.k8s.io/etcd:3.6.99-0" in dry.stdout
    assert not out.exists(), "a dry run writes nothing"
    # What a real run writes beside the archives (it would also fetch the CNI manifest from
    # GitHub, which a test does not): the same list, then build.sh reads it.
    archives = ROOT / "images" / "archives"
    archives.mkdir(exist_ok=True)
    listed = archives / f"images-{v}.txt"
    listed.write_text(subprocess.run(["sh", str(tmp_path / "bin/kubeadm"), "config", "images", "list",
                                      "--kubernetes-version", v], capture_output=True, text=True).stdout)  # fmt: skip
    try:
        res = subprocess.run(
            [str(BUILDER / "build.sh"), "--variants", "base", "--no-import", "--dry-run"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        build = next(ln for ln in res.stdout.splitlines() if " build " in ln)
        assert "ETCD_IMAGE=registry.k8s.io/etcd:3.6.99-0" in build and "PAUSE_IMAGE=registry.k8s.io/pause:9.9" in build
        assert f"KUBERNETES_VERSION={v}" in build
    finally:
        listed.unlink()


def test_the_scripts_default_to_the_projects_default_version() -> None:
    from core.versions import DEFAULT_KUBERNETES_VERSION as v

    for script in (ROOT / "images/export.sh", BUILDER / "build.sh"):
        assert f'version="{v}"' in script.read_text(), script
    assert f"ARG KUBERNETES_VERSION={v}" in (BUILDER / "Containerfile.base").read_text()
    assert f"ARG KUBERNETES_VERSION={v}" in (BUILDER / "Containerfile.control").read_text()
