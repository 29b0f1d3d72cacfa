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


def inventory(tmp_path: Path, cluster: str = "default") -> Path:
    """An inventory of ``cluster``: control[0-2] and worker[0-1] (warewulf_conf/inventory.yaml's)."""
    path = tmp_path / "inventory.yaml"
    path.write_text(
        f"cluster: {cluster}\n"
        "nodes:\n"
        "  - {name: 'control[0-2]', role: control, address: 10.0.0.21,"
        "     mac: ['52:54:00:00:00:21', '52:54:00:00:00:22', '52:54:00:00:00:23']}\n"
        "  - {name: 'worker[0-1]', role: worker, address: 10.0.0.41, mac: ['52:54:00:00:00:41', '52:54:00:00:00:42']}\n"
    )
    return path


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
    (tmp_path / "inv").mkdir()
    inv = inventory(tmp_path / "inv", "lab")
    res = ek8s(
        "reset",
        "--cluster",
        "lab",
        "--share",
        str(tmp_path),
        "--reboot",
        "--reboot-command",
        "echo rebooting {nodes}",
        "--inventory",
        str(inv),
        "--yes",
        env={"SUDO_USER": "alice"},
    )
    assert res.returncode == 0, res.stderr
    assert "generation 2 started" in res.stdout
    assert "rebooting control0,worker0" in res.stdout  # the command's own output
    new = store.read_state()
    assert new.generation == 2 and new.leader is None and not new.ready
    assert not (tmp_path / "lab/leader_ready").exists() and not (tmp_path / "lab/kube.config").exists()
    assert [e["event"] for e in store.events()][-2:] == ["generation_started", "credentials_rotated"]
    last = store.events()[-2]
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
    res = ek8s(
        "reset", "--share", str(tmp_path), "--reboot", "--reboot-command", "false {nodes}",
        "--inventory", str(inventory(tmp_path)), "--yes",
    )  # fmt: skip
    assert res.returncode == 1 and "exited 1" in res.stderr


def test_reset_reboots_only_the_clusters_nodes_and_names_the_heartbeats_it_ignored(tmp_path: Path) -> None:
    """Issue 20: a worker's root could write heartbeats named ``headnode`` or ``storage01``
    and make the operator reboot them. Only nodes the inventory (or Warewulf's registry) puts
    in the cluster are rebooted; the others are named on stderr."""
    share = tmp_path / "share"
    store = ShareStore(share, "default", "control0")
    store.ensure()
    for node in ("control0", "worker1", "headnode", "storage01"):
        ShareStore(share, "default", node).heartbeat("b", "worker", "watch", 0)
    res = ek8s(
        "reset", "--share", str(share), "--reboot", "--reboot-command", "echo rebooting {nodes}",
        "--inventory", str(inventory(tmp_path)), "--yes",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "rebooting control0,worker1\n" in res.stdout
    assert "ignored heartbeats of nodes not in the inventory" in res.stderr and "headnode, storage01" in res.stderr


def test_reset_reads_the_clusters_nodes_from_warewulfs_registry(tmp_path: Path) -> None:
    """Without --inventory: ``wwctl node list -j`` (4.6+), nodes whose merged tags name the
    cluster; a node of another cluster that reported is ignored like any other."""
    import json
    import os
    import stat

    share = tmp_path / "share"
    ShareStore(share, "default", "control0").ensure()
    for node in ("control0", "other0"):
        ShareStore(share, "default", node).heartbeat("b", "control", "watch", 0)
    nodes = {
        "control0": {"profiles": ["default-control"], "tags": {}},
        "other0": {"profiles": ["other-control"], "tags": {}},
    }
    profiles = {
        "default-control": {"tags": {"ek8s_cluster": "default"}},
        "other-control": {"tags": {"ek8s_cluster": "other"}},
    }
    wwctl = tmp_path / "wwctl"
    wwctl.write_text(
        "#!/bin/sh\n"
        'case "$1 $2" in\n'
        "  'version ') echo 'wwctl version: 4.6.5' ;;\n"
        f"  'node list') echo '{json.dumps(nodes)}' ;;\n"
        f"  'profile list') echo '{json.dumps(profiles)}' ;;\n"
        "esac\n"
    )
    wwctl.chmod(wwctl.stat().st_mode | stat.S_IXUSR)
    res = ek8s("reset", "--share", str(share), "--reboot", "--reboot-command", "echo rebooting {nodes}",
               "--wwctl", str(wwctl), "--yes", env=dict(os.environ))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "rebooting control0\n" in res.stdout and "other0" in res.stderr


def test_reset_refuses_to_reboot_what_it_cannot_tell_apart_and_writes_nothing(tmp_path: Path) -> None:
    share = tmp_path / "share"
    store = ShareStore(share, "default", "control0")
    store.ensure()
    store.heartbeat("b", "control", "watch", 0)
    res = ek8s("reset", "--share", str(share), "--reboot", "--wwctl", str(tmp_path / "no-wwctl"))
    assert res.returncode == 1 and "cannot read Warewulf's node registry" in res.stderr and "nothing done" in res.stderr
    res = ek8s("reset", "--share", str(share), "--reboot", "--inventory", str(inventory(tmp_path, "other")))
    assert res.returncode == 1 and "the inventory is cluster 'other', not 'default'" in res.stderr
    assert store.read_state().generation == 0


def test_reset_and_credentials_rotate_replace_phylacterys_credentials(tmp_path: Path) -> None:
    from core.credentials import CONTROL, WORKER

    store = ShareStore(tmp_path, "default", "control0")
    store.ensure()
    store.ensure_credentials()
    before = (store.read_credential(CONTROL), store.read_credential(WORKER))
    res = ek8s("reset", "--share", str(tmp_path), "--yes")
    assert res.returncode == 0 and "control and worker credentials rotated" in res.stdout, res.stderr
    after = (store.read_credential(CONTROL), store.read_credential(WORKER))
    assert set(before).isdisjoint(after)
    assert [s.previous for s in (store.read_credentials(CONTROL), store.read_credentials(WORKER))] == list(before)
    refused = ek8s("credentials", "rotate", "--share", str(tmp_path))  # no terminal here
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    assert (store.read_credential(CONTROL), store.read_credential(WORKER)) == after
    res = ek8s("credentials", "rotate", "--share", str(tmp_path), "--yes", "--grace", "0")
    assert res.returncode == 0 and "the old ones are refused now" in res.stdout
    assert store.read_credentials(CONTROL).previous is None
    assert after[0] not in res.stdout + res.stderr, "values are never printed"
    assert [e["event"] for e in store.events()][-2:] == ["credentials_rotated", "credentials_rotated"]


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
        "etcd member control2: its node rebooted (new boot id), the data is gone",
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
    store.save_snapshot(1, b"snapshot", keep=3, revision=9, cluster_id=1)
    return store


@pytest.mark.parametrize(
    "args",
    [
        ["reset"],
        ["reset", "--reboot", "--reboot-command", "echo {nodes}", "--inventory", "INVENTORY"],
        ["bench", "--runs", "1", "--reboot-command", "echo {nodes}"],
    ],
)
def test_without_a_terminal_a_destructive_command_refuses_unless_yes(tmp_path: Path, args: list[str]) -> None:
    store = ready_share(tmp_path)
    before = (tmp_path / "ek8s/cluster.json").read_bytes(), len(store.events())
    out = ["--out", str(tmp_path / "out")] if args[0] == "bench" else []
    args = [str(inventory(tmp_path, "ek8s")) if a == "INVENTORY" else a for a in args]
    res = ek8s(*args, *out, "--share", str(tmp_path))
    assert res.returncode == 2 and "add --yes" in res.stderr, res.stderr
    # It said what would be lost: the generation, the nodes, the snapshots.
    assert "generation 1 (ready since" in res.stderr and "the cluster is rebuilt empty as generation 2" in res.stderr
    assert "2 nodes reset" in res.stderr and "1 control (control0), 1 worker (worker0)" in res.stderr
    assert "1 etcd snapshots (newest" in res.stderr and "moved to snapshots/old/" in res.stderr
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
    # The pre-reset snapshot is set aside, kept with its checksum, never restored by itself.
    assert store.snapshots() == [] and store.newest_valid_snapshot() is None
    [kept] = store.snapshots(set_aside=True)
    assert kept.name.startswith("gen1-r9-") and kept.with_name(kept.name + ".sha256").is_file()
    assert [e["count"] for e in store.events() if e["event"] == "snapshots_set_aside"] == [1]


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
    res = ek8s("reset", "--share", str(tmp_path), "--reboot", "--inventory", str(inventory(tmp_path)), "--yes")
    assert res.returncode == 1 and "nothing to reboot" in res.stderr
    assert store.read_state().generation == 0 and store.events() == []
