"""Operator commands on the share: `ek8s reset`, `ek8s kubeconfig`, `ek8s status`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.share import ShareStore
from leader.election import rule_for


def ek8s(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``ek8s ARGS`` without a terminal (stdin is /dev/null), as from cron or a script."""
    return subprocess.run(
        [sys.executable, "-m", "manager", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=os.environ | (env or {}),
    )


def on_a_terminal(args: list[str], answer: str, env: dict[str, str]) -> tuple[int, str]:
    """``ek8s ARGS`` with a pseudo-terminal as stdin, stdout and stderr, answering ``answer``
    to its question. Returns the exit status and everything it printed."""
    import pty

    main, sub = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "manager", *args], stdin=sub, stdout=sub, stderr=sub, env=os.environ | env
    )
    os.close(sub)
    out = b""
    try:
        while b"Go ahead?" not in out:
            out += os.read(main, 4096)
        os.write(main, answer.encode() + b"\n")
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(30), out.decode(errors="replace")
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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
        "reset",
        "--cluster",
        "lab",
        "--share",
        str(tmp_path),
        "--reboot",
        "--reboot-command",
        "echo rebooting {nodes}",
        "--yes",
        env={"SUDO_USER": "alice"},
    )
    assert res.returncode == 0, res.stderr
    assert "generation 2 started" in res.stdout
    assert "rebooting control0,worker0" in res.stdout  # the command's own output
    new = store.read_state()
    assert new.generation == 2 and new.leader is None and not new.ready
    assert not (tmp_path / "lab/leader_ready").exists() and not (tmp_path / "lab/kube.config").exists()
    last = store.events()[-1]
    assert last["event"] == "generation_started" and last["node"] == "alice"
    assert last["message"] == "ek8s reset by alice"
    # What was lost is said before it is lost, on stderr.
    assert "generation 1 (ready since" in res.stderr and "2 nodes reset" in res.stderr


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
    res = ek8s("reset", "--share", str(tmp_path), "--reboot", "--reboot-command", "false {nodes}", "--yes")
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
    assert res.returncode == 1, res.stderr  # not ready: a script must see it
    assert "generation 0 (not ready)" in res.stdout and "control0" in res.stdout and "init" in res.stdout
    assert ek8s("status", "--share", str(tmp_path), "--cluster", "nope").returncode == 2


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
    assert res.returncode == 1 and "! no etcd snapshot on the share" in res.stdout, res.stdout + res.stderr


def ready_share(tmp_path: Path) -> ShareStore:
    store = ShareStore(tmp_path, "ek8s", "control0")
    store.ensure()
    state, _, _ = store.attempt_leadership("10.0.0.21", "b0", rule_for("control", "control0", "b0", 30))
    assert state.claim() is not None
    store.mark_ready(state.claim())
    store.heartbeat("b0", "control", "watch", 1)
    ShareStore(tmp_path, "ek8s", "worker0").heartbeat("b1", "worker", "watch", 1)
    store.save_snapshot(1, b"snapshot", keep=3)
    return store


@pytest.mark.parametrize(
    "args",
    [
        ["reset"],
        ["reset", "--reboot", "--reboot-command", "echo {nodes}"],
        ["bench", "--runs", "1", "--reboot-command", "echo {nodes}"],
    ],
)
def test_without_a_terminal_a_destructive_command_refuses_unless_yes(tmp_path: Path, args: list[str]) -> None:
    store = ready_share(tmp_path)
    before = (tmp_path / "ek8s/cluster.json").read_bytes(), len(store.events())
    out = ["--out", str(tmp_path / "out")] if args[0] == "bench" else []
    res = ek8s(*args, *out, "--share", str(tmp_path))
    assert res.returncode == 2 and "add --yes" in res.stderr, res.stderr
    # It said what would be lost: the generation, the nodes, the snapshots.
    assert "generation 1 (ready since" in res.stderr and "the cluster is rebuilt empty as generation 2" in res.stderr
    assert "2 nodes reset" in res.stderr and "1 control (control0), 1 worker (worker0)" in res.stderr
    assert "1 etcd snapshots stay on the share" in res.stderr
    assert ((tmp_path / "ek8s/cluster.json").read_bytes(), len(store.events())) == before, "nothing written"
    assert not (tmp_path / "out").exists()


def test_on_a_terminal_no_keeps_everything_and_yes_resets(tmp_path: Path) -> None:
    store = ready_share(tmp_path)
    before = (tmp_path / "ek8s/cluster.json").read_bytes()
    code, out = on_a_terminal(["reset", "--share", str(tmp_path)], "n", {"SUDO_USER": "bob"})
    assert code == 1 and "not confirmed; nothing done" in out, out
    assert (tmp_path / "ek8s/cluster.json").read_bytes() == before
    code, out = on_a_terminal(["reset", "--share", str(tmp_path)], "y", {"SUDO_USER": "bob"})
    assert code == 0 and "generation 2 started (ek8s reset by bob)" in out, out
    assert store.read_state().generation == 2
    assert store.events()[-1]["node"] == "bob"


def test_the_invoking_user_is_sudos_caller_else_the_login(monkeypatch: pytest.MonkeyPatch) -> None:
    from manager.reset import invoking_user

    monkeypatch.setenv("SUDO_USER", "carol")
    assert invoking_user() == "carol"
    monkeypatch.delenv("SUDO_USER")
    monkeypatch.setattr(os, "getlogin", lambda: (_ for _ in ()).throw(OSError("no terminal")))
    monkeypatch.setenv("LOGNAME", "dave")
    assert invoking_user() == "dave"


def test_reboot_without_any_node_writes_nothing(tmp_path: Path) -> None:
    store = ShareStore(tmp_path, "default", "operator")
    store.ensure()
    res = ek8s("reset", "--share", str(tmp_path), "--reboot", "--yes")
    assert res.returncode == 1 and "nothing to reboot" in res.stderr
    assert store.read_state().generation == 0 and store.events() == []
