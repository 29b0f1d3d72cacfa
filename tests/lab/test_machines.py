"""Lab nodes as machines (``ek8s lab up --machines``) where they need a lab of their own: a
node.yaml Warewulf rendered wrong (its message at priority err in the journal), and the agent
unit's notifications and watchdog with the metrics node_exporter and Phylactery serve.
Booting 3 + 2 machines, the overlay's units, reboots from inside (``systemctl reboot``),
``ek8s lab crash``/``boot`` and every fault are the ``kubeadm-machines`` tour of
test_faults.py.

The image is built once (about 2 min, cached in /var/cache/ek8s-lab); these tests skip, with
the reason, only when it cannot be built (no Debian mirror).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import core
from lab import netns
from lab.cluster import Lab
from lab.emulation import Emulation
from lab.runners import MACHINES
from lab.state import LabState
from tests.lab.kit import inside, lab_cgroups, lab_processes, require_image
from tests.unit.test_metrics import samples

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
    # The message reached the journal at priority err (<3>, SyslogLevelPrefix=yes).
    errors = inside(state, "control0", "journalctl", "-u", "ek8s-node", "-p", "err", "--no-pager", "-o", "cat").stdout
    assert "ek8s-node:" in errors and "role" in errors, errors


def show(state: LabState, node: str, unit: str, *props: str) -> dict[str, str]:
    """``systemctl show UNIT -p P1,P2...`` inside ``node`` as a dict."""
    out = inside(state, node, "systemctl", "show", unit, "-p", ",".join(props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


Props = dict[str, str]


def wait_show(state: LabState, node: str, unit: str, ok: Callable[[Props], bool], timeout: float) -> Props:
    props = ("Type", "NotifyAccess", "WatchdogUSec", "StatusText", "MainPID", "NRestarts", "ActiveState")
    deadline = time.monotonic() + timeout
    got: dict[str, str] = {}
    while time.monotonic() < deadline:
        got = show(state, node, unit, *props)
        if ok(got):
            return got
        time.sleep(0.5)
    raise AssertionError(f"{unit} on {node}: not as expected within {timeout}s: {got}")


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is needed (Debian's prometheus package; `make test` installs it)"
    return subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)


@pytest.mark.lab
def test_agent_unit_tells_systemd_its_state_metrics_parse_and_a_frozen_agent_is_restarted_by_the_watchdog(
    lab_dir: Path,
) -> None:
    """ek8s-node.service is Type=notify: StatusText carries the state and the last sentence;
    node_exporter (the image's ek8s-node-exporter.service) serves the agent's textfile and
    Phylactery its own metrics, both accepted by promtool; an agent frozen with SIGSTOP stops
    feeding the watchdog (here WatchdogSec=6 s by a drop-in, as a site would shorten it) and
    systemd kills and restarts it, which journald keeps at priority err."""
    the_lab = Lab(lab_dir, PREFIX)
    state = the_lab.create(1, 0, Emulation(), mode=MACHINES)
    layer = Path(state.node("control0").config).parents[2]  # <layer>/etc/ek8s/node.yaml
    dropin = layer / "etc/systemd/system/ek8s-node.service.d"
    dropin.mkdir(parents=True)
    (dropin / "50-watchdog.conf").write_text("[Service]\nWatchdogSec=6\n")
    the_lab.start_all(state)
    unit = wait_show(state, "control0", "ek8s-node", lambda p: p.get("StatusText", "").startswith("watch"), 180)
    assert unit["Type"] == "notify" and unit["NotifyAccess"] == "main" and unit["WatchdogUSec"] == "6s", unit
    assert unit["StatusText"] == "watch, generation 1: node control0 is Ready" or unit["StatusText"].startswith(
        "watch, generation 1: no action"
    ), unit
    phylactery = wait_show(state, "control0", "phylactery", lambda p: "running" in p.get("StatusText", ""), 60)
    assert phylactery["Type"] == "notify" and phylactery["StatusText"].startswith("generation 1, 1 members"), phylactery

    control0 = state.node("control0")
    ca = str(the_lab.store().phylactery_ca_path("control"))  # Phylactery: HTTPS, verified
    exporter = wait_show(state, "control0", "ek8s-node-exporter", lambda p: p.get("ActiveState") == "active", 60)
    for port, sample in ((9100, 'ek8s_agent_phase{phase="watch"}'), (9999, "ek8s_phylactery_generation")):
        url = f"{'https' if port == 9999 else 'http'}://{control0.address}:{port}/metrics"
        deadline = time.monotonic() + 30  # a unit just restarted may not listen yet
        while True:
            got = subprocess.run(
                ["ip", "netns", "exec", control0.ns, "curl", "-sf", "--cacert", ca, "-m", "5", url],
                capture_output=True,
                text=True,
            )
            if (got.returncode == 0 and samples(got.stdout).get(sample) == 1) or time.monotonic() > deadline:
                break
            time.sleep(1)
        if got.returncode != 0 and port == 9100:
            journal = inside(state, "control0", "journalctl", "-u", "ek8s-node-exporter", "--no-pager", "-n", "30")
            raise AssertionError(f"{url}: curl exit {got.returncode}; {exporter}; {journal.stdout}")
        assert got.returncode == 0, f"{url}: {got.stderr}"
        assert samples(got.stdout).get(sample) == 1, f"{url}: {sample} is not 1"
        # The whole scrape parses (promtool exits 1 on a parse error such as a family's
        # # TYPE twice); exit 3 is lint only, which node_exporter's own names (node_netstat_Tcp_*
        # in camelCase) earn: none of ours may.
        checked = promtool_check(got.stdout)
        said = checked.stdout + checked.stderr
        assert checked.returncode in (0, 3) and "ek8s_" not in said, f"{url}: {said}"
        ours = "".join(line + "\n" for line in got.stdout.splitlines() if "ek8s_" in line)
        checked = promtool_check(ours)
        assert checked.returncode == 0, f"{url}: {checked.stdout}{checked.stderr}"

    frozen = unit["MainPID"]
    assert inside(state, "control0", "kill", "-STOP", frozen).returncode == 0
    restarted = wait_show(
        state,
        "control0",
        "ek8s-node",
        lambda p: p.get("NRestarts") == "1" and p.get("MainPID") not in ("0", frozen) and p["ActiveState"] == "active",
        60,
    )
    journal = inside(state, "control0", "journalctl", "-u", "ek8s-node", "-p", "err", "--no-pager", "-o", "cat")
    assert "Watchdog timeout" in journal.stdout, journal.stdout
    assert " starting " not in journal.stdout, "info lines are not errors"
    everything = inside(state, "control0", "journalctl", "-u", "ek8s-node", "--no-pager", "-o", "cat").stdout
    starts = [line for line in everything.splitlines() if f"ek8s-node {core.__version__} starting" in line]
    assert len(starts) == 2 and "revision=" in starts[0], starts  # the first line of each agent
    assert not [line for line in everything.splitlines() if line.startswith("<")], "journald took the prefixes"
    # The new agent resumes within the same boot and is back in its steady state.
    wait_show(state, "control0", "ek8s-node", lambda p: p.get("StatusText", "").startswith("watch"), 120)
    assert restarted["StatusText"], restarted
