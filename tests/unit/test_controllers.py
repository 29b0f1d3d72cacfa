"""Phylactery's controllers, one decision a line (as Patroni tests its HA cycle): the snapshot
controller's :func:`decide` and the reaper's turn, against the real share store and a fake
local etcd member."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest

from core.etcd import EtcdMember
from core.share import ShareStore
from phylactery.controllers import register
from phylactery.controllers.reaper import ReaperController
from phylactery.controllers.snapshot import decide, not_of_generation
from phylactery.service import Phylactery
from tests.unit.agent_fakes import FakeDriver, age_heartbeat, ready_generation
from tests.unit.test_phylactery_http import make_phylactery

A, B = frozenset({1, 2, 3}), frozenset({1, 2})

# -- snapshots --------------------------------------------------------------------------


def test_snapshot_decisions() -> None:
    assert (
        decide(False, None, A, 99, 60).sentence
        == "my etcd member does not lead etcd: its leader's node takes snapshots"
    )
    assert decide(False, None, A, 99, 60).members == frozenset(), "forgets the membership"
    assert decide(True, B, A, 5, 60).sentence == "the etcd membership changed (3 -> 2 members): snapshot now"
    assert decide(True, A, A, 61, 60).sentence == "61s since the last snapshot (every 60s): snapshot now"
    assert decide(True, A, A, 12, 60).sentence == "next snapshot in 48s"


def test_a_snapshot_is_filed_under_the_generation_its_etcd_data_belongs_to() -> None:
    from core.records import Incarnation

    mine = Incarnation(node="control0", boot_id="b1", generation=3, at=1.0)
    assert not_of_generation(mine, "b1", 3) is None
    assert not_of_generation(mine, "b1", 4) == (
        "my etcd member was made in generation 3, not 4: not its snapshot to take"
    )
    assert not_of_generation(mine, "b2", 3) == "my etcd member's incarnation is of boot b1, not this boot's"
    assert not_of_generation(None, "b1", 3) == (
        "no incarnation recorded for my etcd member: its data's generation is unknown"
    )
    assert not decide(True, A, frozenset(), 12, 60).save, "the first membership seen is no change"
    assert decide(True, A, frozenset(), 12, 60).members == A
    assert decide(True, None, A, 12, 60).members == A, "etcd did not answer: the last one is kept"
    assert decide(True, None, A, 61, 60).save


# -- the reaper -------------------------------------------------------------------------


def member(i: int, name: str) -> EtcdMember:
    return EtcdMember(i, name, (f"https://10.0.0.2{i}:2380",), (f"https://10.0.0.2{i}:2379",))


class FakeEtcd:
    """The local etcd member: ``me`` (whose status names ``leader``) and the member list."""

    def __init__(self, me: int = 1, leader: int = 1) -> None:
        self.me, self.leader = me, leader
        self.members = [member(1, "control0"), member(2, "control1"), member(3, "control2")]
        self.removed: list[int] = []

    async def __aenter__(self) -> FakeEtcd:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def status(self) -> dict[str, Any]:
        return {"header": {"member_id": str(self.me)}, "leader": str(self.leader)}

    async def member_list(self) -> list[EtcdMember]:
        return list(self.members)

    async def member_remove(self, member_id: int) -> None:
        self.removed.append(member_id)
        self.members = [m for m in self.members if m.id != member_id]


class EtcdDriver(FakeDriver):
    """A driver whose node runs an etcd member (its client context), or none."""

    member = True

    def etcd_client_context(self) -> Any:
        return ssl.create_default_context() if self.member else None


class Cluster:
    """A ready generation 1 on control0, control1 and control2 (incarnations and heartbeats),
    and control0's reaper whose etcd member leads and hears the members in ``answering``."""

    def __init__(self, tmp: Path) -> None:
        ready_generation(tmp / "share")  # control0 led it
        self.stores = {n: ShareStore(tmp / "share", "default", n) for n in ("control0", "control1", "control2")}
        for name, s in self.stores.items():
            s.heartbeat(f"boot-{name}", "control", "watch", 1)
            s.record_incarnation(f"boot-{name}", 1)
        self.p: Phylactery = make_phylactery(tmp)
        self.p.driver = EtcdDriver(tmp / "roots/control0")  # type: ignore[assignment]
        self.etcd = FakeEtcd()
        self.answering = {"control0", "control1", "control2"}

        async def answers(m: EtcdMember, ctx: ssl.SSLContext) -> bool:
            return m.name in self.answering

        self.reaper = ReaperController(self.p, connect=lambda endpoint, ctx: self.etcd, answers=answers)

    def turn(self) -> str:
        return asyncio.run(self.reaper.reap_once())

    def reboot(self, name: str) -> None:
        """``name`` came back in a new boot (RAM root: its member's data is gone)."""
        self.answering.discard(name)
        self.stores[name].heartbeat(f"boot-{name}-2", "control", "elect", 1)


@pytest.fixture
def c(tmp_path: Path) -> Cluster:
    return Cluster(tmp_path)


def test_a_node_without_an_etcd_member_reaps_nothing(c: Cluster) -> None:
    c.p.driver.member = False  # type: ignore[attr-defined]
    assert c.turn() == "no etcd member on this node: nothing to reap"


def test_only_the_etcd_leaders_node_reaps(c: Cluster) -> None:
    c.etcd.leader = 2
    c.reboot("control2")
    assert c.turn() == "my etcd member does not lead etcd: its leader's node reaps"
    assert c.etcd.removed == []


def test_nothing_is_reaped_while_every_member_answers(c: Cluster) -> None:
    ops = c.p.store.operation_counts()["total"]
    assert c.turn() == "every etcd member answers: nothing to reap"
    assert c.p.store.operation_counts()["total"] == ops, "a healthy cluster's reaper costs the share nothing"


def test_the_member_of_a_rebooted_node_is_removed(c: Cluster) -> None:
    c.reboot("control2")
    assert c.turn() == (
        "removed etcd member control2: it does not answer and its node rebooted (new boot id) (data gone); "
        "2 members left"
    )
    assert c.etcd.removed == [3] and c.reaper.reaped == ["control2"]
    [event] = [e for e in c.p.store.events() if e["event"] == "member_reaped"]
    assert event["member"] == "control2" and event["node"] == "control0"


def test_a_removal_whose_answer_timed_out_is_recorded_once_the_member_list_lacks_it(c: Cluster) -> None:
    """etcd answers a member remove after the configuration change commits, which may outlast
    the client's timeout (seen in the lab: the API paused ~6 s meanwhile): the next turn's
    member list tells whether it happened, and ``member_reaped`` is recorded then."""
    from core.etcd import EtcdError

    applied = c.etcd.member_remove

    async def timed_out(member_id: int) -> None:
        await applied(member_id)  # etcd applied it ...
        raise EtcdError("https://127.0.0.1:2379/v3/cluster/member/remove: TimeoutError")  # ... the answer never came

    c.etcd.member_remove = timed_out  # type: ignore[method-assign]
    c.reboot("control2")
    with pytest.raises(EtcdError):
        c.turn()
    assert not [e for e in c.p.store.events() if e["event"] == "member_reaped"]
    assert c.turn() == (
        "removed etcd member control2: it does not answer and its node rebooted (new boot id) (data gone) "
        "(its removal's answer timed out; the member list no longer has it); 2 left"
    )
    [event] = [e for e in c.p.store.events() if e["event"] == "member_reaped"]
    assert event["member"] == "control2" and c.reaper.reaped == ["control2"]
    assert c.turn() == "every etcd member answers: nothing to reap", "recorded once"


def test_the_member_of_a_node_merely_silent_past_the_lease_is_kept(c: Cluster) -> None:
    """Silence is not proof: control1 may be cut off from the share while its etcd serves."""
    c.answering.discard("control1")
    age_heartbeat(c.stores["control0"], "control1", 31)
    assert c.turn() == (
        "control1 do not answer, but no member may be removed "
        "(control0 alive, control1 silent, control2 alive; joining: nobody)"
    )
    assert c.etcd.removed == []


def test_the_member_of_a_node_whose_loss_the_operator_accepted_is_removed(c: Cluster) -> None:
    from core.share import LossProof

    c.answering.discard("control1")
    age_heartbeat(c.stores["control0"], "control1", 31)
    i = c.p.store.incarnations()["control1"]
    c.p.store.record_loss(LossProof("control1", i.boot_id, 1, i.at, "accepted", "alice", "ek8s recover", 0.0))
    assert c.turn() == (
        "removed etcd member control1: it does not answer and its node loss accepted by alice (data gone); "
        "2 members left"
    )
    assert c.etcd.removed == [2]


def test_mixed_answers_remove_nothing_alive(c: Cluster) -> None:
    """issue 19: control1 blips (its etcd does not answer for a second, its node heartbeats),
    control2 answers but its agent is stuck on NFS (its heartbeat ages past the lease). The old
    rule removed control2, a live member, on the share's word alone."""
    c.answering.discard("control1")
    age_heartbeat(c.stores["control0"], "control2", 45)
    assert c.turn() == (
        "control1 do not answer, but no member may be removed "
        "(control0 alive, control1 alive, control2 silent; joining: nobody)"
    )
    assert c.etcd.removed == [] and c.reaper.reaped == []


def test_a_silent_member_whose_node_is_alive_is_kept(c: Cluster) -> None:
    c.answering.discard("control2")
    assert c.turn() == (
        "control2 do not answer, but no member may be removed "
        "(control0 alive, control1 alive, control2 alive; joining: nobody)"
    )
    assert c.etcd.removed == []


def test_the_member_of_the_node_in_a_join_is_kept(c: Cluster) -> None:
    c.reboot("control2")
    assert c.stores["control2"].try_join_slot("boot-control2-2", 30) is None
    assert c.turn().endswith("(control0 alive, control1 alive, control2 rebooted; joining: control2)")
    assert c.etcd.removed == []


def test_no_member_is_removed_when_the_rest_would_lose_their_majority(c: Cluster) -> None:
    c.reboot("control1")
    c.reboot("control2")
    assert c.turn() == (
        "control1, control2 do not answer, but no member may be removed "
        "(control0 alive, control1 rebooted, control2 rebooted; joining: nobody)"
    )


def test_every_controller_is_registered_in_one_place(tmp_path: Path) -> None:
    p = make_phylactery(tmp_path)
    loops = ["reconcile", "notify_peers", "snapshot", "reaper", "roles", "join_material"]
    assert [name for name, _ in register(p).loops()] == loops
    assert p.supervisor.failures() == dict.fromkeys(sorted(loops), 0)


# -- the roles controller -----------------------------------------------------------------


class FakeNodes:
    """The Node API as the roles controller sees it; ``patches`` records what it sent."""

    def __init__(self) -> None:
        self.nodes = {
            "worker0": {
                "name": "worker0",
                "labels": {"kubernetes.io/hostname": "worker0"},
                "annotations": {},
                "taints": [],
            },
            "worker1": {"name": "worker1", "labels": {"team": "hpc"}, "annotations": {}, "taints": []},
            "stranger": {"name": "stranger", "labels": {}, "annotations": {}, "taints": []},
        }
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def list(self) -> list[dict[str, Any]]:
        return [dict(n) for n in self.nodes.values()]

    def patch(self, name: str, patch: dict[str, Any]) -> None:
        def merge_patch(target: Any, p: Any) -> Any:  # RFC 7386
            if not isinstance(p, dict):
                return p
            out = dict(target) if isinstance(target, dict) else {}
            for k, v in p.items():
                if v is None:
                    out.pop(k, None)
                else:
                    out[k] = merge_patch(out.get(k), v)
            return out

        self.patches.append((name, patch))
        node = self.nodes[name]
        merged = merge_patch({"metadata": {"labels": node["labels"], "annotations": node["annotations"]}}, patch)
        node["labels"], node["annotations"] = (
            merged["metadata"].get("labels", {}),
            merged["metadata"].get("annotations", {}),
        )
        node["taints"] = merged.get("spec", {}).get("taints", node["taints"])


def roles_controller(tmp: Path, leader: int = 1) -> tuple[Any, FakeNodes, Phylactery]:
    from phylactery.controllers.roles import RolesController

    p = make_phylactery(tmp)
    p.driver = EtcdDriver(tmp / "roots/control0")  # type: ignore[assignment]
    etcd = FakeEtcd(leader=leader)
    nodes = FakeNodes()
    return RolesController(p, nodes=lambda: nodes, connect=lambda endpoint, ctx: etcd), nodes, p


def publish(p: Phylactery, worker1_roles: list[str]) -> None:
    from core.records import InventoryNode, PublishedInventory

    nodes = {
        "worker0": InventoryNode(role="worker", address="10.0.0.41", labels={"slurm.partition": "batch"}),
        "worker1": InventoryNode(role="worker", address="10.0.0.42", roles=worker1_roles, taints=["g=1:NoSchedule"]),
    }
    p.store.publish_inventory(
        PublishedInventory(cluster="default", nodes=nodes, published_by="alice", published_at=1.0)
    )


def test_the_roles_controller_acts_on_the_etcd_leaders_node_only(tmp_path: Path) -> None:
    c, nodes, p = roles_controller(tmp_path, leader=2)
    publish(p, ["gpu"])
    assert asyncio.run(c.reconcile_once()) == (
        "my etcd member does not lead etcd: its leader's node puts the Nodes' roles in line"
    )
    assert nodes.patches == []


def test_without_an_inventory_the_kubelets_labels_stay(tmp_path: Path) -> None:
    c, nodes, _ = roles_controller(tmp_path)
    assert asyncio.run(c.reconcile_once()).startswith("no inventory published")
    assert nodes.patches == []


def test_the_roles_controller_follows_the_inventory_and_touches_nothing_else(tmp_path: Path) -> None:
    c, nodes, p = roles_controller(tmp_path)
    publish(p, ["gpu"])
    assert asyncio.run(c.reconcile_once()) == (
        "put 2 Node(s) in line with the inventory: worker0 (+slurm.partition=batch); "
        "worker1 (+node-role.kubernetes.io/gpu= taints g:NoSchedule)"
    )
    assert "stranger" not in [n for n, _ in nodes.patches], "a Node the inventory does not list is left alone"
    assert asyncio.run(c.reconcile_once()) == "every Node is in line with the inventory"
    publish(p, [])  # the inventory drops worker1's role: that label goes, "team" stays
    assert asyncio.run(c.reconcile_once()) == (
        "put 1 Node(s) in line with the inventory: worker1 (-node-role.kubernetes.io/gpu)"
    )
    assert nodes.nodes["worker1"]["labels"] == {"team": "hpc"}
