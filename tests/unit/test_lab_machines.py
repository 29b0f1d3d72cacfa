"""The machine runner's pure parts: the image's cache key, the boot script, the lab as a
Warewulf inventory (no root, nothing booted; tests/lab/test_machines.py boots them)."""

from __future__ import annotations

import io
import shlex
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from lab import image, machines, runners
from lab.state import LabNode, LabState


def test_image_key_is_stable_and_follows_its_inputs() -> None:
    key = image.image_key()
    assert key == image.image_key() and len(key) == 16 and int(key, 16) >= 0
    assert image.image_key("http://mirror.example/debian") != key
    assert image.image_path().parent.name == key and image.image_path().name == "rootfs"
    assert "aiohttp>=3.9" in image.requirements().splitlines()


def test_image_key_follows_the_files_the_recipe_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unit = tmp_path / "ek8s-node-exporter.service"
    unit.write_text("[Service]\n")
    monkeypatch.setattr(image, "RECIPE_FILES", (unit,))
    before = image.image_key()
    unit.write_text("[Service]\nDynamicUser=yes\n")
    assert image.image_key() != before


def test_boot_script_lays_the_node_overlay_over_the_common_one_over_the_image() -> None:
    cfg = machines.MachineConfig(
        name="control0",
        netns="/run/netns/ek8s-control0",
        image="/cache/rootfs",
        layers=["/lab/machines/control0/overlay", "/lab/machines/common"],
        ram="/lab/machines/control0/ram",
        boots="/lab/machines/control0/boots.jsonl",
        binds=[["/lab/share", "/share"]],
    )
    lines = machines.boot_script(cfg).splitlines()
    assert lines[1] == "umask 022"  # the node's modes, not the caller's (CI runs under 077)
    assert lines[2] == "mount -t tmpfs -o mode=0755 ek8s-ram /lab/machines/control0/ram"
    overlay = shlex.split(lines[4])
    assert overlay[:4] == ["mount", "-t", "overlay", "-o"]
    assert overlay[4].startswith(
        "lowerdir=/lab/machines/control0/overlay:/lab/machines/common:/cache/rootfs,"
        "upperdir=/lab/machines/control0/ram/upper,"
    )
    nspawn = shlex.split(lines[-1])
    assert nspawn[:3] == ["exec", "systemd-nspawn", "--boot"]
    for option in (
        "--directory=/lab/machines/control0/ram/root",
        "--machine=control0",
        "--network-namespace-path=/run/netns/ek8s-control0",
        "--register=no",
        "--keep-unit",
        "--capability=CAP_NET_ADMIN",
        "--bind=/lab/share:/share",
    ):
        assert option in nspawn


def test_the_lab_as_a_warewulf_inventory() -> None:
    state = LabState(prefix="ek8s", dir="/lab", share="/lab/share", mode=runners.MACHINES)
    for name, role, address in (("control0", "control", "10.0.0.21"), ("worker0", "worker", "10.0.0.41")):
        state.nodes.append(LabNode(name, role, address, f"ek8s-{name}", "", "", ""))
    inv = runners.lab_inventory(state)
    assert [(n.name, n.role, n.address) for n in inv.expanded()] == [
        ("control0", "control", "10.0.0.21"),
        ("worker0", "worker", "10.0.0.41"),
    ]
    tags = inv.cluster_tags()
    assert tags["ek8s_cluster"] == "default" and tags["ek8s_share"] == "/share"
    assert tags["ek8s_vip"] == "10.0.0.99" and tags["ek8s_vip_hostname"] == "vip.kubernetes.local"
    assert "ek8s_cni_manifest" not in tags and inv.warewulf.netdev == "eth0"


def test_an_image_build_logs_everything_and_shows_its_progress(tmp_path: Path) -> None:
    progress = io.StringIO()
    script = "echo 'I: Retrieving Packages'; sleep 0.35; echo 'Collecting aiohttp' >&2; sleep 0.35; exit 3"
    rc = image.run_build(["sh", "-c", script], tmp_path / "build.log", 30, progress, every_s=0.2)
    assert rc == 3
    assert (tmp_path / "build.log").read_text() == "I: Retrieving Packages\nCollecting aiohttp\n"
    lines = progress.getvalue().splitlines()
    assert len(lines) >= 2 and all(line.startswith("  image build") for line in lines)
    assert lines[0].endswith(": I: Retrieving Packages") and lines[-1].endswith(": Collecting aiohttp")


def test_an_image_build_over_its_time_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        image.run_build(["sh", "-c", f"sleep 30 & echo $! > {marker}; wait"], tmp_path / "build.log", 0.5, None)
    assert time.monotonic() - started < 10
    child = int(marker.read_text())
    # SIGKILL is delivered when the process next runs: on a loaded host it can still read
    # "running" for a moment after killpg returned, so wait (bounded) for it to be gone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the build's child {child} outlived the kill by 10 s")


MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_a_machine_gets_a_cgroup_below_its_launchers_in_the_hierarchies_systemd_uses() -> None:
    # This host (v1 with a name=systemd hierarchy and cgroup2 beside it): both, below the
    # launcher's own cgroup; the memory controller's hierarchy is not systemd's.
    cgroup = "4:memory:/process_api/4c44\n9:name=systemd:/\n0::/lab/run\n"
    assert machines.own_cgroups(MOUNTINFO, cgroup) == [
        Path("/sys/fs/cgroup/systemd"),
        Path("/sys/fs/cgroup/unified/lab/run"),
    ]
    # cgroup2 only (a systemd host, Debian 12's default), mounted from a sub-tree.
    unified = "29 23 0:26 /user.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
    assert machines.own_cgroups(unified, "0::/user.slice/session-3.scope\n") == [Path("/sys/fs/cgroup/session-3.scope")]
    # A hierarchy that /proc/self/cgroup does not name, or that is not mounted, is left out.
    assert machines.own_cgroups(MOUNTINFO, "4:memory:/\n") == []
    assert machines.own_cgroups("", cgroup) == []


def test_removing_a_machines_cgroups_takes_the_deepest_first_and_tells_what_is_left(tmp_path: Path) -> None:
    d = tmp_path / "ek8s-lab.ek8sf-control0"
    (d / "payload/system.slice/ek8s-node.service").mkdir(parents=True)
    (d / "supervisor").mkdir()
    kept = tmp_path / "ek8s-lab.ek8sf-control1"
    kept.mkdir()
    (kept / "a-file").write_text("not a cgroup: a directory with a file is not removed")
    record = tmp_path / "cgroups"
    record.write_text(f"{d}\n{kept}\n{tmp_path / 'gone'}\n")
    assert machines.recorded_cgroups(record) == [d, kept, tmp_path / "gone"]
    assert machines.remove_cgroups(machines.recorded_cgroups(record)) == [kept]
    assert not d.exists()
    assert machines.recorded_cgroups(tmp_path / "none") == []


def test_a_crash_kills_through_cgroup_kill_where_the_hierarchy_has_it(tmp_path: Path) -> None:
    v1, v2 = tmp_path / "systemd/ek8s-lab.x-control0", tmp_path / "unified/ek8s-lab.x-control0"
    v1.mkdir(parents=True)
    v2.mkdir(parents=True)
    assert machines.kill_cgroups([v1, v2]) is False
    (v2 / "cgroup.kill").write_text("")
    assert machines.kill_cgroups([v1, v2]) is True
    assert (v2 / "cgroup.kill").read_text() == "1\n" and not (v1 / "cgroup.kill").exists()
