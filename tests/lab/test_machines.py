"""Lab nodes as machines (``ek8s lab up --machines``): systemd-nspawn machines booting the
lab's node image with the Warewulf overlays, the overlay's units, real reboots.

The image is built once (about 2 min, cached in /var/cache/ek8s-lab); these tests skip, with
the reason, only when it cannot be built (no Debian mirror).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab import netns
from lab.cluster import Lab
from lab.emulation import Emulation
from lab.image import ImageError, ensure_image
from lab.runners import MACHINES
from tests.lab.kit import lab_cgroups, lab_processes, members

PREFIX = "ek8sm"
NODES = ("control0", "control1", "control2", "worker0", "worker1")


def ek8s(lab_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "manager", "lab", "--dir", str(lab_dir), "--prefix", PREFIX, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def inside(lab_dir: Path, node: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return ek8s(lab_dir, "exec", node, "--", *argv, timeout=60)


@pytest.fixture(scope="module")
def image() -> Path:
    try:
        return ensure_image()
    except ImageError as err:
        pytest.skip(f"the lab's node image cannot be built here: {err}")


@pytest.fixture
def lab_dir(image: Path) -> Iterator[Path]:
    d = Path(f"/run/{PREFIX}-{uuid.uuid4().hex[:8]}")
    try:
        yield d
    finally:
        started = time.monotonic()
        res = ek8s(d, "down", timeout=180)
        assert res.returncode == 0, res.stderr
        # down returns only when everything is gone: no machine, namespace, mount, process,
        # cgroup.
        assert netns.existing(PREFIX) == []
        assert lab_processes(d) == []
        assert lab_cgroups(PREFIX) == []
        assert str(d) not in Path("/proc/self/mountinfo").read_text()
        assert not d.exists()
        assert time.monotonic() - started < 120


def failed_units(lab_dir: Path, node: str) -> list[str]:
    failed = inside(lab_dir, node, "systemctl", "--failed", "--no-legend", "--plain")
    assert failed.returncode == 0, failed.stderr
    return [line.split()[0] for line in failed.stdout.splitlines() if line.strip()]


def assert_no_failed_unit(lab_dir: Path, node: str) -> None:
    """`systemctl --failed` is empty; otherwise fail with the failed units' journal.

    No exception for 219/CGROUP any more: it came from machines sharing their units' cgroups
    (one machine's systemd removing a unit's cgroup while another started the same unit);
    each machine has its own cgroup now (lab/machines.py)."""
    units = failed_units(lab_dir, node)
    if units:
        journal = inside(lab_dir, node, "journalctl", "-b", "--no-pager", "--lines=40", *[f"--unit={u}" for u in units])
        pytest.fail(f"{node}: failed units {units}\n{journal.stdout}")


def link_up(ns: str) -> bool:
    """Whether the node's cable is in: ``eth0`` administratively up in its namespace."""
    return "UP" in json.loads(netns.ip("-n", ns, "-j", "link", "show", "eth0"))[0]["flags"]


def boot_id(lab_dir: Path, node: str) -> str:
    res = inside(lab_dir, node, "cat", "/proc/sys/kernel/random/boot_id")
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.lab
def test_machines_boot_3_plus_2_rejoin_after_systemctl_reboot_inside_and_after_a_crash(
    lab_dir: Path, tmp_path: Path
) -> None:
    """3 + 2 machines from nothing, no failed unit anywhere; a control node and a worker
    reboot from inside (`systemctl reboot`) and come back with a new boot id, an empty root,
    3 etcd members, no stale Node and every HAProxy with 3 backends UP. Then `ek8s lab crash`
    and `ek8s lab boot` a control node: gone without a shutdown, cable out; back with a new
    boot id, rejoined the same way."""
    res = ek8s(lab_dir, "up", "--machines", "--json", str(tmp_path / "r.json"), "--timeout", "180")
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert [(n["name"], n["ready"]) for n in r["nodes"]] == [(n, True) for n in NODES]
    assert r["etcd_members"] == 3 and r["haproxy_backends_up"] == {"control0": 3, "control1": 3, "control2": 3}
    for node in NODES:
        assert_no_failed_unit(lab_dir, node)
        state = inside(lab_dir, node, "systemctl", "is-active", "ek8s-node.service")
        assert state.stdout.strip() == "active", node
    # The overlay as Warewulf renders it: node.yaml, hosts, units; Phylactery under systemd.
    cfg = yaml.safe_load(inside(lab_dir, "control1", "cat", "/etc/ek8s/node.yaml").stdout)
    assert cfg["rendered_by"] == "warewulf" and cfg["service_manager"] == "systemd"
    assert "10.0.0.99 vip.kubernetes.local" in inside(lab_dir, "worker0", "cat", "/etc/hosts").stdout
    assert inside(lab_dir, "control1", "systemctl", "is-active", "phylactery", "haproxy", "keepalived").returncode == 0
    logs = ek8s(lab_dir, "logs", "control1", "-u", "ek8s-node")
    assert logs.returncode == 0 and "node_ready" not in logs.stderr and "control1" in logs.stdout

    the_lab = Lab(lab_dir, PREFIX)
    state = the_lab.load()
    before = {n: boot_id(lab_dir, n) for n in ("control1", "worker0")}
    for n in before:  # something to lose: a RAM root keeps nothing across a reboot
        assert inside(lab_dir, n, "touch", "/var/tmp/left-behind").returncode == 0
    since = time.time()
    for n in before:
        rb = inside(lab_dir, n, "systemctl", "reboot")
        assert rb.returncode == 0, rb.stderr
    the_lab.wait_ready(state, 180, since=since, names=list(before))
    whole = the_lab.wait_whole(state, 60)
    assert whole["api_nodes"] == sorted(NODES)  # no stale Node
    assert whole["etcd_members"] == 3
    assert whole["haproxy_backends_up"] == {"control0": 3, "control1": 3, "control2": 3}
    for n, old in before.items():
        assert boot_id(lab_dir, n) != old
        assert inside(lab_dir, n, "test", "-e", "/var/tmp/left-behind").returncode == 1
        boots = (lab_dir / "machines" / n / "boots.jsonl").read_text().splitlines()
        assert len(boots) == 2, boots
        assert_no_failed_unit(lab_dir, n)
    # A clean reboot stops the agent (systemd's SIGTERM): it says so on the share.
    stopped = [e for e in the_lab.events() if e["event"] == "stopped" and e["t"] >= since]
    assert {e["node"] for e in stopped} == set(before), stopped

    # `ek8s lab crash`: the machine is gone at once, no shutdown (no `stopped` from its agent),
    # cable out; `ek8s lab boot`: a new boot, and it rejoins without anything stale left.
    crashed = "control2"
    old_id = boot_id(lab_dir, crashed)
    crashed_at = time.time()
    res = ek8s(lab_dir, "crash", crashed)
    assert res.returncode == 0, res.stderr
    ns = state.node(crashed).ns
    assert netns.pids(ns) == [] and lab_processes(lab_dir / "machines" / crashed) == []
    assert not link_up(ns)
    assert not [d for d in lab_cgroups(PREFIX) if d.name.endswith(f"-{crashed}")]
    # Nothing of the machine runs any more: a shutdown would have written its event by now.
    assert not [
        e for e in the_lab.events() if e["node"] == crashed and e["event"] == "stopped" and e["t"] >= crashed_at
    ]
    booted = time.time()
    res = ek8s(lab_dir, "boot", crashed)
    assert res.returncode == 0, res.stderr
    assert link_up(ns)
    state = the_lab.load()
    the_lab.wait_ready(state, 180, since=booted, names=[crashed])
    whole = the_lab.wait_whole(state, 60)
    assert whole["api_nodes"] == sorted(NODES) and whole["etcd_members"] == 3
    assert boot_id(lab_dir, crashed) != old_id
    assert len((lab_dir / "machines" / crashed / "boots.jsonl").read_text().splitlines()) == 2
    # etcd's own view, through the crashed node's PKI in its new RAM root (kit.etcdctl).
    assert sorted(members(state, crashed) or {}) == ["control0", "control1", "control2"]
    assert_no_failed_unit(lab_dir, crashed)


@pytest.mark.lab
def test_machine_with_a_bad_node_yaml_stops_its_agent_without_restart_loops(lab_dir: Path) -> None:
    """A node.yaml Warewulf rendered wrong (here: an unknown role) makes the agent exit 2;
    RestartPreventExitStatus=2 keeps systemd from restarting it, and `systemctl status`
    shows the failure and the field."""
    the_lab = Lab(lab_dir, PREFIX)
    state = the_lab.create(1, 0, Emulation(), mode=MACHINES)
    node_yaml = Path(state.node("control0").config)
    node_yaml.write_text(node_yaml.read_text().replace('role: "control"', 'role: "controller"'))
    the_lab.start_all(state)
    deadline = time.monotonic() + 90
    shown = ""
    while time.monotonic() < deadline:
        shown = inside(lab_dir, "control0", "systemctl", "show", "ek8s-node", "-p", "ActiveState,ExecMainStatus").stdout
        if "ActiveState=failed" in shown:
            break
        time.sleep(0.5)
    assert "ActiveState=failed" in shown and "ExecMainStatus=2" in shown, shown
    time.sleep(5)  # RestartSec is 2 s: a restart would have happened by now
    shown = inside(lab_dir, "control0", "systemctl", "show", "ek8s-node", "-p", "NRestarts,ActiveState").stdout
    assert "NRestarts=0" in shown and "ActiveState=failed" in shown, shown
    status = inside(lab_dir, "control0", "systemctl", "status", "--no-pager", "--lines=20", "ek8s-node")
    assert status.returncode == 3  # systemctl status: unit not active
    assert "status=2" in status.stdout and "role" in status.stdout, status.stdout
    failed = inside(lab_dir, "control0", "systemctl", "--failed", "--no-legend", "--plain").stdout
    assert "ek8s-node.service" in failed
