"""The share store on a temp dir: the fenced path of leader-only writes, and its verbs."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.share import EpochSuperseded, Fence, ShareStore
from leader.election import rule_for
from tests.unit.agent_fakes import age_heartbeat, material


def claim(store: ShareStore, node: str) -> Fence:
    state, action, _ = store.attempt_leadership(
        "10.0.0.21", f"boot-{node}", rule_for("control", node, f"boot-{node}", 30)
    )
    assert action == "lead"
    fence = state.claim()
    assert fence is not None and fence.node == node
    return fence


@pytest.fixture
def store(tmp_path: Path) -> ShareStore:
    s = ShareStore(tmp_path, "default", "control0")
    s.ensure()
    return s


def test_the_current_claim_writes_everything(store: ShareStore) -> None:
    fence = claim(store, "control0")
    store.publish_join_material(fence, material(1, 1))
    store.write_admin_kubeconfig(fence, b"admin")
    state = store.mark_ready(fence)
    assert state.ready and store.read_admin_kubeconfig() == b"admin"
    assert (store.dir / "leader_ready").exists()


@pytest.mark.parametrize("what", ["join material", "kubeconfig", "ready"])
@pytest.mark.parametrize("how", ["newer epoch", "new generation", "claim released"])
def test_a_superseded_claim_writes_nothing(store: ShareStore, tmp_path: Path, what: str, how: str) -> None:
    fence = claim(store, "control0")
    if how == "newer epoch":
        other = ShareStore(tmp_path, "default", "control1")
        age_heartbeat(other, "control0", 31)
        claim(other, "control1")
    elif how == "new generation":  # same epoch: only the generation tells the claims apart
        store.rebuild("ek8s reset")
    else:
        assert store.release_leadership(fence, "stopped")
    write = {
        "join material": lambda: store.publish_join_material(fence, material(1, 1)),
        "kubeconfig": lambda: store.write_admin_kubeconfig(fence, b"admin"),
        "ready": lambda: store.mark_ready(fence),
    }[what]
    with pytest.raises(EpochSuperseded, match="superseded"):
        write()
    assert store.read_admin_kubeconfig() is None
    assert not (store.dir / "join.json").exists() and not (store.dir / "leader_ready").exists()
    assert not store.read_state().ready


def test_a_ready_generation_keeps_its_leader_when_it_stops(store: ShareStore) -> None:
    fence = claim(store, "control0")
    store.mark_ready(fence)
    assert not store.release_leadership(fence, "stopped")
    assert store.read_state().leader is not None


def test_refreshed_join_material_only_for_the_current_ready_generation(store: ShareStore) -> None:
    fence = claim(store, "control0")
    with pytest.raises(EpochSuperseded):
        store.refresh_join_material(material(1, 1))  # not ready yet
    store.publish_join_material(fence, material(1, 1))
    store.mark_ready(fence)
    store.refresh_join_material(material(1, 1))
    store.rebuild("ek8s reset")
    with pytest.raises(EpochSuperseded):
        store.refresh_join_material(material(1, 1))


def test_snapshot_without_leases_refuses_to_judge_the_leader(store: ShareStore) -> None:
    claim(store, "control0")
    snap = store.snapshot(leases=False)
    assert snap.state.leader is not None and snap.leader_heartbeat is None
    with pytest.raises(RuntimeError):
        snap.leader_alive(30)
    assert store.snapshot().leader_alive(30)


def test_exists_and_kubeconfig_before_anything(tmp_path: Path) -> None:
    store = ShareStore(tmp_path, "nope", "operator")
    assert not store.exists() and store.read_admin_kubeconfig() is None
    assert not (tmp_path / "nope").exists(), "asking writes nothing"


def test_snapshots_carry_a_checksum_and_a_damaged_one_is_skipped(store: ShareStore) -> None:
    import time

    first = store.save_snapshot(1, b"first", keep=3, revision=1, cluster_id=1)
    time.sleep(0.002)
    second = store.save_snapshot(1, b"second", keep=3, revision=2, cluster_id=1)
    assert store.newest_valid_snapshot() == second
    assert (second.parent / (second.name + ".sha256")).read_text().split() == [
        "16367aacb67a4a017c8da8ab95682ccb390863780f7114dda0a0e0c55644c7c4",
        second.name,
    ]
    second.write_bytes(b"secon")  # cut short on the share
    assert store.newest_valid_snapshot() == first
    for i in range(4):
        time.sleep(0.002)
        store.save_snapshot(1, b"x%d" % i, keep=3, revision=3 + i, cluster_id=1)
    assert len(store.snapshots()) == 3 and len(list(first.parent.glob("*.sha256"))) == 3


def test_worker_join_slots_bound_holders_expire_and_a_rebooted_node_takes_its_own(tmp_path: Path) -> None:
    ShareStore(tmp_path, "default", "control0").ensure()
    stores = [ShareStore(tmp_path, "default", f"worker{i}", role="worker") for i in range(3)]
    assert stores[0].try_worker_join_slot("b0", 2, 120) is None
    assert stores[1].try_worker_join_slot("b1", 2, 120) is None
    assert stores[2].try_worker_join_slot("b2", 2, 120) == (2, 2), "both slots are held"
    assert stores[0].try_worker_join_slot("b0-again", 2, 120) is None, "a rebooted holder keeps its own slot"
    stores[1].release_worker_join_slot()
    assert stores[2].try_worker_join_slot("b2", 2, 120) is None
    assert stores[1].try_worker_join_slot("b1", 2, 0.0) is None, "with a 0 s hold every holder has expired"
    path = tmp_path / "default/nodes/slots/worker_join_slots.json"
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_snapshot_keeps_its_restore_secret_root_only_and_retention_removes_it(store: ShareStore) -> None:
    import time

    first = store.save_snapshot(2, b"k3s", keep=2, revision=1, cluster_id=1, secret="server-secret")
    secret_file = first.parent / (first.name + ".token")
    assert store.snapshot_secret(first) == "server-secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600 and first.parent.stat().st_mode & 0o777 == 0o700
    time.sleep(0.002)
    second = store.save_snapshot(2, b"no secret", keep=2, revision=2, cluster_id=1)
    assert store.snapshot_secret(second) is None
    assert store.newest_valid_snapshot() == second
    assert store.newest_valid_snapshot(with_secret=True) == first, "k3s cannot restore without the token"
    for i in range(2):
        time.sleep(0.002)
        store.save_snapshot(2, b"y%d" % i, keep=2, revision=3 + i, cluster_id=1, secret="s")
    assert not secret_file.exists() and not first.exists()


def test_a_removed_node_is_forgotten_and_a_replacement_starts_from_nothing(tmp_path: Path) -> None:
    from core.records import MemberRecord

    op = ShareStore(tmp_path, "default", "alice")
    op.ensure()
    gone = ShareStore(tmp_path, "default", "control2")
    gone.heartbeat("boot-1", "control", "watch", 1)
    gone.record_incarnation("boot-1", 1)
    gone.register_member(MemberRecord("control2", "10.0.0.23", "http://10.0.0.23:9999", "boot-1", 1))
    assert gone.try_join_slot("boot-1", 30) is None
    worker = ShareStore(tmp_path, "default", "worker1", role="worker")
    assert worker.try_worker_join_slot("boot-w", 10, 120) is None
    assert op.forget_node("control2") == [
        "heartbeats/control2",
        "incarnations/control2.json",
        "members/control2.json",
        "nodes/members/control2.json",
        "join_slot.json",
    ]
    assert op.read_heartbeat("control2") is None and "control2" not in op.incarnations()
    assert [m.name for m in op.members()] == []
    assert op.join_slot_holder(30) is None
    assert op.forget_node("worker1") == ["nodes/slots/worker_join_slots.json"]
    assert op.forget_node("worker1") == [], "twice: nothing left"
    with pytest.raises(ValueError):
        op.forget_node("../etc")
