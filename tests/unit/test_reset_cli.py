"""Operator commands on the share: `ek8s reset`, `ek8s kubeconfig`, `ek8s status`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.share import ShareStore
from leader.election import rule_for


def ek8s(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "manager", *args], capture_output=True, text=True, timeout=60)


def test_reset_starts_a_new_generation_and_runs_the_reboot_command(tmp_path: Path) -> None:
    store = ShareStore(tmp_path, "lab", "control0")
    store.ensure()
    state, _, _ = store.attempt_leadership("10.0.0.21", "b0", rule_for("control", "control0", "b0", 30))
    fence = state.claim()
    assert fence is not None
    store.write_admin_kubeconfig(fence, b"old")
    store.mark_ready(fence)
    for node in ("control0", "worker0"):
        ShareStore(tmp_path, "lab", node).heartbeat("b", "control", "watch", 1)
    res = ek8s(
        "reset", "--cluster", "lab", "--share", str(tmp_path), "--reboot", "--reboot-command", "echo rebooting {nodes}"
    )
    assert res.returncode == 0, res.stderr
    assert "generation 2 started" in res.stdout
    assert "rebooting control0,worker0" in res.stdout  # the command's own output
    new = store.read_state()
    assert new.generation == 2 and new.leader is None and not new.ready
    assert not (tmp_path / "lab/leader_ready").exists() and not (tmp_path / "lab/kube.config").exists()
    assert store.events()[-1]["event"] == "generation_started"


def test_reset_of_an_unknown_cluster_fails_and_writes_nothing(tmp_path: Path) -> None:
    res = ek8s("reset", "--cluster", "nope", "--share", str(tmp_path))
    assert res.returncode == 1 and "no cluster 'nope'" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_share_is_one_line_and_exit_1_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "default").mkdir()
    (tmp_path / "default/cluster.json").write_text("{damaged")
    for args in (["status"], ["reset"]):
        res = ek8s(*args, "--share", str(tmp_path))
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert "the share holds a damaged file: " in res.stderr and "cluster.json: not valid JSON" in res.stderr
    assert (tmp_path / "default/cluster.json").read_text() == "{damaged", "reset wrote nothing"


def test_a_failing_reboot_command_exits_1(tmp_path: Path) -> None:
    store = ShareStore(tmp_path, "default", "control0")
    store.ensure()
    store.heartbeat("b", "control", "watch", 0)
    res = ek8s("reset", "--share", str(tmp_path), "--reboot", "--reboot-command", "false {nodes}")
    assert res.returncode == 1 and "exited 1" in res.stderr


def test_kubeconfig_check_and_print(tmp_path: Path) -> None:
    store = ShareStore(tmp_path, "default", "control0")
    store.ensure()
    missing = ek8s("kubeconfig", "--share", str(tmp_path), "--check")
    assert missing.returncode == 1 and missing.stdout == "" and missing.stderr == ""
    state, _, _ = store.attempt_leadership("10.0.0.21", "b0", rule_for("control", "control0", "b0", 30))
    assert state.claim() is not None
    store.write_admin_kubeconfig(state.claim(), b"apiVersion: v1\nkind: Config\n")
    present = ek8s("kubeconfig", "--share", str(tmp_path), "--check")
    assert present.returncode == 0 and present.stdout == ""
    printed = ek8s("kubeconfig", "--share", str(tmp_path))
    assert printed.returncode == 0 and printed.stdout == "apiVersion: v1\nkind: Config\n"


def test_status_without_reachable_nodes_shows_unknowns(tmp_path: Path) -> None:
    store = ShareStore(tmp_path, "default", "control0")
    store.ensure()
    store.heartbeat("b0", "control", "init", 1)
    res = ek8s("status", "--share", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "generation 0 (not ready)" in res.stdout and "control0" in res.stdout and "init" in res.stdout
    assert ek8s("status", "--share", str(tmp_path), "--cluster", "nope").returncode == 1


def test_status_names_what_is_degraded_and_what_heals_it(tmp_path: Path) -> None:
    from manager.status import attention

    store = ShareStore(tmp_path, "default", "operator")
    store.ensure()
    for node in ("control0", "control1", "control2"):
        s = ShareStore(tmp_path, "default", node)
        s.record_incarnation(f"b-{node}", 1)
        s.heartbeat(f"b-{node}" if node != "control2" else "new-boot", "control", "watch", 1)
    store.record_event("duplicate_name", 1, "another machine heartbeats as control1")
    nodes = [{"name": "control1", "role": "control", "phase": "watch"}]
    found = attention(store, 1, nodes, ["control0", "control2"], None)
    problems = [f["problem"] for f in found]
    assert problems == [
        "etcd member control2: its node rebooted, the data is gone",
        "control node control1 has no etcd member",
        "two machines heartbeat as operator",
        "no etcd snapshot on the share",
    ]
    assert all(f["heals"] for f in found)
    res = ek8s("status", "--share", str(tmp_path))
    assert res.returncode == 0 and "! no etcd snapshot on the share" in res.stdout, res.stdout + res.stderr
