"""Lab nodes as machines (``ek8s lab up --machines``) where they need a lab of their own: a
node.yaml Warewulf rendered wrong. Booting 3 + 2 machines, the overlay's units, reboots from
inside (``systemctl reboot``), ``ek8s lab crash``/``boot`` and every fault are the
``kubeadm-machines`` tour of test_faults.py.

The image is built once (about 2 min, cached in /var/cache/ek8s-lab); these tests skip, with
the reason, only when it cannot be built (no Debian mirror).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netns
from lab.cluster import Lab
from lab.emulation import Emulation
from lab.runners import MACHINES
from tests.lab.kit import inside, lab_cgroups, lab_processes, require_image

PREFIX = "ek8sm"


def ek8s(lab_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "manager", "lab", "--dir", str(lab_dir), "--prefix", PREFIX, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def lab_dir() -> Iterator[Path]:
    require_image()
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
        shown = inside(state, "control0", "systemctl", "show", "ek8s-node", "-p", "ActiveState,ExecMainStatus").stdout
        if "ActiveState=failed" in shown:
            break
        time.sleep(0.5)
    assert "ActiveState=failed" in shown and "ExecMainStatus=2" in shown, shown
    time.sleep(5)  # RestartSec is 2 s: a restart would have happened by now
    shown = inside(state, "control0", "systemctl", "show", "ek8s-node", "-p", "NRestarts,ActiveState").stdout
    assert "NRestarts=0" in shown and "ActiveState=failed" in shown, shown
    status = inside(state, "control0", "systemctl", "status", "--no-pager", "--lines=20", "ek8s-node")
    assert status.returncode == 3  # systemctl status: unit not active
    assert "status=2" in status.stdout and "role" in status.stdout, status.stdout
    failed = inside(state, "control0", "systemctl", "--failed", "--no-legend", "--plain").stdout
    assert "ek8s-node.service" in failed
