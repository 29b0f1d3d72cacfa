"""The election rule, and the store's election on a real directory with real file locks,
in separate processes (no root)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import pytest

from core.share import ClusterState, EpochSuperseded, Fence, LeaderRecord, ShareStore, Snapshot
from leader.election import decide, rule_for

CTX = mp.get_context("fork")


def _contender(share: str, node: str, role: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    store = ShareStore(Path(share), "default", node)
    store.ensure()
    barrier.wait()
    _, action, _ = store.attempt_leadership("10.0.0.1", f"boot-{node}", rule_for(role, node, f"boot-{node}", 30.0))
    results.put((node, action))


def run_round(share: Path, roles: dict[str, str]) -> dict[str, str]:
    barrier = CTX.Barrier(len(roles))
    results = CTX.Queue()
    procs = [CTX.Process(target=_contender, args=(str(share), n, r, barrier, results)) for n, r in roles.items()]
    for p in procs:
        p.start()
    out = dict(results.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(timeout=10)
    return out


def test_exactly_one_leader_among_five_control_nodes_over_20_rounds(tmp_path: Path) -> None:
    for round_no in range(20):
        share = tmp_path / f"round{round_no}"
        share.mkdir()
        actions = run_round(share, {f"control{i}": "control" for i in range(5)})
        leaders = [n for n, a in actions.items() if a == "lead"]
        assert len(leaders) == 1, f"round {round_no}: {actions}"
        state = ShareStore(share, "default", "x").read_state()
        assert state.leader is not None and state.leader.node == leaders[0] and state.epoch == 1
        assert (share / "default" / "leader").read_text().splitlines()[0] == leaders[0]


def test_workers_never_lead(tmp_path: Path) -> None:
    actions = run_round(tmp_path, {f"worker{i}": "worker" for i in range(3)})
    assert set(actions.values()) == {"follow"}
    assert ShareStore(tmp_path, "default", "x").read_state().leader is None


def _contender_loop(share: str, node: str, ttl: float, results) -> None:  # type: ignore[no-untyped-def]
    """The store's side of an election round after round, in its own process (the agent's
    decisions are tested in test_agent_states.py): a leader heartbeats (the first never
    finishes), followers wait for ready or for the lease to run out."""
    store = ShareStore(Path(share), "default", node)
    store.ensure()
    boot = f"boot-{node}"
    rule = rule_for("control", node, boot, ttl)
    while True:
        state, action, _ = store.attempt_leadership("10.0.0.1", boot, rule)
        if action == "lead":
            if state.epoch == 1:
                while True:  # "kubeadm init" that never ends; the test kills us
                    store.heartbeat(boot, "control", "init", state.generation)
                    time.sleep(0.1)
            fence = state.claim()
            assert fence is not None
            store.mark_ready(fence)
            results.put((node, "led", state.epoch))
            return
        if action == "join":
            results.put((node, "joined", state.epoch))
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snap = store.snapshot()
            if snap.state.ready or not snap.leader_alive(ttl):
                break
            store.heartbeat(boot, "control", "follow", snap.state.generation)
            time.sleep(0.05)


def test_leader_killed_before_ready_is_replaced_and_the_generation_becomes_ready(tmp_path: Path) -> None:
    ttl = 1.0
    results = CTX.Queue()
    procs = {
        f"control{i}": CTX.Process(target=_contender_loop, args=(str(tmp_path), f"control{i}", ttl, results))
        for i in range(5)
    }
    for p in procs.values():
        p.start()
    store = ShareStore(tmp_path, "default", "observer")
    deadline = time.monotonic() + 20
    first = None
    while time.monotonic() < deadline and first is None:
        try:
            state = store.read_state()
            first = state.leader.node if state.leader else None
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    assert first is not None
    killed_at = time.monotonic()
    os.kill(procs[first].pid, signal.SIGKILL)
    outcomes = [results.get(timeout=30) for _ in range(4)]
    elapsed = time.monotonic() - killed_at
    for p in procs.values():
        p.join(timeout=10)
    led = [o for o in outcomes if o[1] == "led"]
    assert len(led) == 1, outcomes
    assert led[0][2] == 2, "the replacement claims epoch + 1"
    assert {o[1] for o in outcomes} == {"led", "joined"}
    assert all(o[2] == 2 for o in outcomes)
    state = store.read_state()
    assert state.ready and state.epoch == 2 and state.leader is not None and state.leader.node != first
    assert elapsed < ttl + 5, f"takeover took {elapsed:.1f}s"
    # The deposed leader cannot mark its old epoch ready.
    with pytest.raises(EpochSuperseded):
        ShareStore(tmp_path, "default", first).mark_ready(Fence(generation=1, epoch=1, node=first))


def _snap(leader: LeaderRecord | None, hb_age: float | None, ready: bool = False) -> Snapshot:
    from core.share import Heartbeat

    hb = Heartbeat(leader.node, leader.boot_id, "control", "init", 1, hb_age) if leader and hb_age is not None else None
    return Snapshot(
        ClusterState(generation=1, epoch=leader.epoch if leader else 0, leader=leader, ready=ready), 0.0, hb
    )


def test_decision_rule() -> None:
    rec = LeaderRecord("control0", "10.0.0.21", "b0", 3, 0.0)
    kw = {"node": "control1", "boot_id": "b1", "lease_ttl_s": 30.0}
    assert decide(_snap(None, None), role="control", **kw)[0] == "lead"
    assert decide(_snap(None, None), role="worker", **kw)[0] == "follow"
    assert decide(_snap(rec, 1.0), role="control", **kw)[0] == "follow"
    assert decide(_snap(rec, 31.0), role="control", **kw)[0] == "lead"
    assert decide(_snap(rec, 31.0), role="worker", **kw)[0] == "follow"
    assert decide(_snap(rec, 1.0, ready=True), role="worker", **kw)[0] == "join"
    # A heartbeat from another boot of the leader's node does not keep its old claim alive.
    other_boot = Snapshot(
        ClusterState(generation=1, epoch=3, leader=rec),
        0.0,
        _snap(LeaderRecord("control0", "10.0.0.21", "new-boot", 3, 0.0), 1.0).leader_heartbeat,
    )
    assert decide(other_boot, role="control", **kw)[0] == "lead"


def test_share_files_are_root_only(tmp_path: Path) -> None:
    store = ShareStore(tmp_path, "default", "control0")
    store.ensure()
    store.attempt_leadership("10.0.0.21", "b0", rule_for("control", "control0", "b0", 30))
    store.record_event("boot", 1, "hello")
    worker = ShareStore(tmp_path, "default", "worker0", role="worker")
    worker.heartbeat("w0", "worker", "boot", 1)
    worker.record_event("boot", 1, "hello")
    nodes = tmp_path / "default" / "nodes"
    for path in (tmp_path / "default").rglob("*"):
        mode = path.stat().st_mode & 0o777
        if path == nodes or (path.parent == nodes and path.name == "members"):
            wanted = 0o750  # the node tree: root's, group 65534 (a worker's squashed root)
        elif path.is_dir() and path.parent == nodes:
            wanted = 0o770  # heartbeats/, events/, slots/: what workers write
        elif nodes in path.parents and path.parent.name in ("heartbeats", "events", "slots"):
            wanted = 0o600  # written by workers (the anonymous uid on the real share)
        elif nodes in path.parents:
            wanted = 0o640  # written for workers to read
        else:
            wanted = 0o700 if path.is_dir() else 0o600
        assert mode == wanted, f"{path}: {oct(mode)}"
