"""Planned maintenance without root or daemons: the quorum guards (core/quorum.py), the drain's
choices and its eviction loop against a fake API, the order nodes are taken in, and a roll
that stops where a step fails (manager/maintenance.py). The share is a real store on a temp
directory; the API and Phylactery are fakes, the clock too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.quorum import Member, down_refusal, removal_refusal
from core.share import ShareStore
from manager import maintenance
from manager.maintenance import Cluster, MaintenanceError, RollOptions, batches, classify, command_argvs, roll
from tests.unit.agent_fakes import ready_generation

M3 = [Member("control0"), Member("control1"), Member("control2")]


# -- quorum guards ------------------------------------------------------------------------------


def test_one_control_node_of_three_may_go_down_not_two() -> None:
    assert down_refusal(M3, ["control1"]) is None
    assert down_refusal(M3, ["control1", "control2"]) == (
        "etcd would lose its quorum: 3 voting members need 2, but with control1, control2 down only 1 would "
        "answer (control0); already not answering: none"
    )


def test_a_member_already_down_counts_against_the_quorum() -> None:
    view = [Member("control0"), Member("control1", answers=False), Member("control2")]
    assert down_refusal(view, ["control2"]) == (
        "etcd would lose its quorum: 3 voting members need 2, but with control2 down only 1 would answer "
        "(control0); already not answering: control1"
    )
    learner = [*M3, Member("control3", learner=True, answers=False)]
    assert down_refusal(learner, ["control2"]) is None, "a learner does not vote"


def test_two_control_nodes_cannot_lose_one() -> None:
    assert down_refusal(M3[:2], ["control0"]) is not None
    assert down_refusal([], ["control0"]) == (
        "etcd lists no voting member: its quorum cannot be judged (is etcd up? ek8s status)"
    )


def test_removal_keeps_two_control_nodes_and_a_quorum_of_answering_ones() -> None:
    assert removal_refusal(M3, "control2") is None, "3 -> 2: a replacement comes next"
    assert "below 2, a reboot of the last one loses" in str(removal_refusal(M3[:2], "control1"))
    assert "holds the last voting etcd member" in str(removal_refusal(M3[:1], "control0"))
    silent = [Member("control0"), Member("control1", answers=False), Member("control2")]
    assert removal_refusal(silent, "control1") is None, "removing the dead one leaves 2 answering"
    assert removal_refusal(silent, "control2") == (
        "after removing control2, 2 voting members need 2 but only 1 answer (not answering: control1): etcd "
        "refuses a change it cannot commit; bring them back first"
    )
    assert removal_refusal(M3, "worker5") is None, "a node without a member"
    assert removal_refusal([], "worker5") is None


# -- what a drain does --------------------------------------------------------------------------


def pod(name: str, owner: str | None = "ReplicaSet", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": f"{name}-owner", "controller": True}]
    return {"metadata": meta, "spec": {"nodeName": "worker0", **extra}, "status": {"phase": "Running"}}


def test_drain_choices_follow_kubectl_drain() -> None:
    assert classify(pod("web"), False) == ("evict", "owned by ReplicaSet web-owner")
    assert classify(pod("ds", "DaemonSet"), False)[0] == "skip"
    mirror = pod("etcd", None)
    mirror["metadata"]["annotations"] = {"kubernetes.io/config.mirror": "x"}
    assert classify(mirror, False)[0] == "skip"
    assert classify(pod("bare", None), False)[0] == "refuse"
    assert classify(pod("bare", None), True)[0] == "evict"
    done = pod("job", None)
    done["status"]["phase"] = "Succeeded"
    assert classify(done, False) == ("evict", "finished")
    assert classify(pod("cache", volumes=[{"name": "c", "emptyDir": {}}]), False)[0] == "evict"


def test_control_nodes_go_alone_and_first_then_workers_in_batches() -> None:
    nodes = [("worker2", "worker"), ("control1", "control"), ("worker10", "worker"), ("worker1", "worker")]
    nodes += [("control0", "control")]
    assert batches(nodes, 2) == [["control0"], ["control1"], ["worker1", "worker2"], ["worker10"]]
    with pytest.raises(ValueError):
        batches(nodes, 0)


def test_commands_run_per_node_or_per_batch() -> None:
    assert command_argvs("wwctl ssh {node} reboot", ["w1", "w2"]) == [
        ["wwctl", "ssh", "w1", "reboot"],
        ["wwctl", "ssh", "w2", "reboot"],
    ]
    assert command_argvs("wwctl power cycle {nodes}", ["w1", "w2", "w3"]) == [["wwctl", "power", "cycle", "w[1-3]"]]
    with pytest.raises(ValueError, match="name the node"):
        command_argvs("reboot", ["w1"])


class FakeApi:
    """Nodes and Pods; ``budget`` Pods may be evicted before 429s (a PodDisruptionBudget)."""

    def __init__(self, pods: list[dict[str, Any]], budget: int = 99) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods = {f"default/{p['metadata']['name']}": p for p in pods}
        self.budget = budget
        self.evictions: list[str] = []

    def node(self, name: str) -> dict[str, Any] | None:
        return self.nodes.get(name)

    def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        spec = self.nodes[name].setdefault("spec", {})
        for k, v in patch["spec"].items():
            if v is None:
                spec.pop(k, None)
            else:
                spec[k] = v

    def pods_on(self, node: str) -> list[dict[str, Any]]:
        return [p for p in self.pods.values() if p["spec"]["nodeName"] == node]

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.pods.get(f"{namespace}/{name}")

    def evict(self, namespace: str, name: str) -> tuple[int, str]:
        self.evictions.append(name)
        if self.budget <= 0:
            return 429, "Cannot evict pod as it would violate the pod's disruption budget."
        self.budget -= 1
        self.pods.pop(f"{namespace}/{name}", None)
        return 201, "evicted"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def cluster(tmp: Path, api: FakeApi, said: list[str] | None = None) -> Cluster:
    store = ready_generation(tmp / "share")
    clock = Clock()
    out = said if said is not None else []
    return Cluster(store, say=out.append, api_factory=lambda: api, sleep=clock.sleep, now=clock.now)


def test_a_drain_evicts_what_it_may_and_leaves_daemonset_pods(tmp_path: Path) -> None:
    api = FakeApi([pod("web"), pod("ds", "DaemonSet")])
    said: list[str] = []
    c = cluster(tmp_path, api, said)
    assert c.drain("worker0", 60) == ["default/web"]
    assert "default/ds" in api.pods and "worker0: left in place: default/ds" in said


def test_a_disruption_budget_holds_the_drain_until_the_timeout(tmp_path: Path) -> None:
    api = FakeApi([pod("web-a"), pod("web-b")], budget=1)
    c = cluster(tmp_path, api)
    with pytest.raises(
        MaintenanceError, match=r"worker0: drain did not finish within 30s: default/web-b: Cannot evict"
    ):
        c.drain("worker0", 30)
    assert api.evictions.count("web-b") >= 5, "tried again every 5 s, as kubectl drain"


def test_an_unowned_pod_stops_the_drain_before_any_eviction(tmp_path: Path) -> None:
    api = FakeApi([pod("web"), pod("bare", None)])
    with pytest.raises(MaintenanceError, match=r"default/bare \(no controller owns it"):
        cluster(tmp_path, api).drain("worker0", 60)
    assert api.evictions == []


# -- a roll ---------------------------------------------------------------------------------------


class Rolling(Cluster):
    """A cluster whose nodes reboot when ``action`` runs: a new boot id on the share and back."""

    etcd: list[Member]

    def down_refusal(self, taking: list[str]) -> str | None:
        from core.quorum import down_refusal

        return down_refusal(self.etcd, taking)

    def back(self, name: str, role: str, old_boot: str | None) -> str | None:
        hb = self.store.read_any_heartbeat(name)
        return None if hb is not None and hb.boot_id != old_boot else "a heartbeat from a new boot"


def rolling(tmp: Path, said: list[str]) -> tuple[Rolling, FakeApi]:
    store = ready_generation(tmp / "share")
    for n, role in (("control0", "control"), ("control1", "control"), ("control2", "control")):
        ShareStore(store.dir.parent, "default", n).heartbeat(f"boot-{n}", role, "watch", 1)
    for n in ("worker0", "worker1", "worker2"):  # in the node tree, as a worker writes it
        ShareStore(store.dir.parent, "default", n, role="worker").heartbeat(f"boot-{n}", "worker", "watch", 1)
    api = FakeApi([pod("web")])
    for n in ("control0", "control1", "control2", "worker0", "worker1", "worker2"):
        api.nodes[n] = {"metadata": {"name": n}, "spec": {}}
    clock = Clock()
    c = Rolling(store, say=said.append, api_factory=lambda: api, sleep=clock.sleep, now=clock.now)
    c.etcd = list(M3)
    return c, api


def reboot_with(c: Rolling, log: list[list[str]]) -> Any:
    def action(batch: list[str]) -> None:
        log.append(list(batch))
        for n in batch:
            role = c.role_of(n) or ""
            ShareStore(c.store.dir.parent, "default", n, role=role).heartbeat(f"boot-{n}-2", role, "watch", 1)

    return action


def test_a_roll_takes_control_nodes_alone_then_workers_and_uncordons(tmp_path: Path) -> None:
    said: list[str] = []
    c, api = rolling(tmp_path, said)
    log: list[list[str]] = []
    nodes = ["worker2", "worker0", "control1", "worker1", "control0"]
    assert roll(c, nodes, reboot_with(c, log), RollOptions(max_unavailable=2)) == log
    assert log == [["control0"], ["control1"], ["worker0", "worker1"], ["worker2"]]
    assert "web" not in str(api.pods), "the Pod on worker0 was evicted"
    assert not any(node.get("spec", {}).get("unschedulable") for node in api.nodes.values()), "all uncordoned"
    assert "worker0: cordoned" in said and "worker0: uncordoned" in said


def test_a_roll_stops_before_a_control_node_whose_reboot_would_cost_the_quorum(tmp_path: Path) -> None:
    c, api = rolling(tmp_path, [])
    c.etcd = [Member("control0"), Member("control1"), Member("control2", answers=False)]
    log: list[list[str]] = []
    with pytest.raises(MaintenanceError) as err:
        roll(c, ["control0", "worker0"], reboot_with(c, log), RollOptions())
    assert str(err.value).startswith("control0: refused, etcd would lose its quorum")
    assert str(err.value).endswith("nothing was done to it (done before it: none; the rest untouched)")
    assert log == [] and not api.nodes["control0"]["spec"], "not cordoned, not rebooted"


def test_a_failed_drain_uncordons_and_stops_the_roll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c, api = rolling(tmp_path, [])
    api.budget = 0
    monkeypatch.setattr(maintenance, "EVICT_RETRY_S", 1.0)
    log: list[list[str]] = []
    with pytest.raises(MaintenanceError, match=r"worker0, worker1 not taken down \(uncordoned again\)"):
        roll(c, ["worker0", "worker1"], reboot_with(c, log), RollOptions(max_unavailable=2, drain_timeout_s=3))
    assert log == []
    assert not any(api.nodes[n]["spec"].get("unschedulable") for n in ("worker0", "worker1"))


def test_a_node_that_never_reported_is_refused(tmp_path: Path) -> None:
    c, _ = rolling(tmp_path, [])
    with pytest.raises(ValueError, match="worker9: no such node in cluster default"):
        roll(c, ["worker9"], lambda b: None, RollOptions())
