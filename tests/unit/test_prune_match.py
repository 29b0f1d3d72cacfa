"""Which etcd members a prune removes for a node: those the driver takes for the node
(kubeadm: named as the node; k3s: any name k3s itself would take for the node and refuse a
join over, "duplicate node name found") or with a peer URL on its address; never by a
substring, never the serving member. The rule is the driver's, not Phylactery's."""

from __future__ import annotations

import pytest

from core.drivers import k3s
from core.etcd import EtcdMember
from phylactery.prune import node_password_secret, stale_members

MEMBERS = [
    EtcdMember(1, "ctl-0a1b2c3d", ("https://10.0.0.21:2380",), ()),
    EtcdMember(2, "ctl-1-0a1b2c3d", ("https://10.0.0.22:2380",), ()),
    EtcdMember(3, "ctl-ffffffff", ("https://10.0.0.29:2380",), ()),  # ctl at an older address
    EtcdMember(4, "other-12345678", ("https://10.0.0.23:2380",), ()),
    EtcdMember(5, "ctl", ("https://10.0.0.24:2380",), ()),
    EtcdMember(6, "ctl-old", ("https://10.0.0.25:2380",), ()),  # any suffix: k3s takes it for ctl too
]


def names(ms: list[EtcdMember]) -> list[str]:
    return [m.name for m in ms]


def kubeadm_member_node(name: str) -> str:
    return name  # KubeadmDriver.etcd_member_node: members are named as their node


def test_k3s_takes_every_name_k3s_would_refuse_and_never_a_longer_node_name() -> None:
    assert names(stale_members(MEMBERS, "ctl", "10.0.0.21", None, k3s.member_node)) == [
        "ctl-0a1b2c3d",
        "ctl-ffffffff",
        "ctl",
        "ctl-old",
    ]
    assert names(stale_members(MEMBERS, "ctl-1", "10.0.0.99", None, k3s.member_node)) == ["ctl-1-0a1b2c3d"]


def test_a_member_on_the_address_is_stale_whatever_its_name() -> None:
    # A member there would make etcd refuse the new member ("Peer URLs already exists").
    assert names(stale_members(MEMBERS, "new", "10.0.0.23", None, k3s.member_node)) == ["other-12345678"]


def test_kubeadm_names_match_exactly_and_the_serving_member_is_kept() -> None:
    assert names(stale_members(MEMBERS, "ctl", "10.0.0.99", None, kubeadm_member_node)) == ["ctl"]
    assert names(stale_members(MEMBERS, "ctl", "10.0.0.21", 1, k3s.member_node)) == ["ctl-ffffffff", "ctl", "ctl-old"]


def test_the_node_password_secret_name() -> None:
    assert node_password_secret("worker0") == "worker0.node-password.k3s"


# -- which Nodes a prune removes, by who asks (docs/security.md) -------------------------------

from phylactery.prune import NodeFacts, PruneForbidden, Requester, judge_nodes  # noqa: E402

W0 = NodeFacts("worker0", frozenset({"10.0.0.41"}), boot_id="boot-w0-old", ready=False)  # rebooted
W0_LIVE = NodeFacts("worker0", frozenset({"10.0.0.41"}), boot_id="boot-w0-now", ready=True)
W1 = NodeFacts("worker1", frozenset({"10.0.0.42"}), boot_id="boot-w1", ready=True)  # alive
RENAMED = NodeFacts("oldname", frozenset({"10.0.0.41"}), boot_id="boot-x", ready=False)  # a former name at .41


def worker(address: str = "10.0.0.41", boot: str = "boot-w0-now") -> Requester:
    return Requester(credential="worker", address=address, boot_id=boot)


def control(address: str, boot: str = "boot-c") -> Requester:
    return Requester(credential="control", address=address, boot_id=boot)


def test_a_worker_prunes_its_previous_incarnation() -> None:
    assert judge_nodes([W0, W1], "worker0", "10.0.0.41", worker(), "control0") == (["worker0"], [])


def test_a_worker_naming_another_node_is_forbidden_and_nothing_goes() -> None:
    with pytest.raises(
        PruneForbidden, match=r"^Node worker1's InternalIP is 10\.0\.0\.42, not the requester's address"
    ):
        judge_nodes([W0, W1], "worker1", "10.0.0.41", worker(), "control0")


def test_a_worker_with_a_copied_boot_id_still_cannot_name_another_node() -> None:
    with pytest.raises(PruneForbidden):
        judge_nodes([W0, W1], "worker1", "10.0.0.41", worker(boot="boot-w1"), "control0")


def test_a_worker_by_address_never_reaches_another_nodes_object() -> None:
    """``ghost`` at the worker's own address: another name there is only a control node's to
    remove; ``ghost`` has no Node, so nothing goes."""
    doomed, kept = judge_nodes([W0, RENAMED, W1], "ghost", "10.0.0.41", worker(), "control0")
    assert doomed == []
    assert [k["name"] for k in kept] == ["worker0", "oldname"]
    assert all("only a control node prunes it" in k["why"] for k in kept)


def test_a_worker_never_prunes_its_current_incarnation() -> None:
    doomed, kept = judge_nodes([W0_LIVE], "worker0", "10.0.0.41", worker(boot="boot-w0-now"), "control0")
    assert doomed == [] and kept == [
        {"name": "worker0", "why": "it is the requester's current incarnation (the same boot)"}
    ]


def test_the_control_credential_prunes_any_name_but_never_a_ready_node_of_another_name() -> None:
    """Issue 20: a prune of ``ghost`` at a live worker's address deleted that worker. Now a
    Ready Node of another name is kept; a NotReady one (a leftover) goes."""
    doomed, kept = judge_nodes([W0_LIVE, W1], "ghost", "10.0.0.41", control("10.0.0.21"), "control0")
    assert doomed == [] and kept == [
        {"name": "worker0", "why": "Ready: a live node at 10.0.0.41, not a leftover of ghost"}
    ]
    assert judge_nodes([RENAMED], "newname", "10.0.0.41", control("10.0.0.21"), "control0") == (["oldname"], [])
    assert judge_nodes([W1], "worker1", "10.0.0.42", control("10.0.0.21"), "control0") == (["worker1"], [])


def test_the_serving_node_is_never_judged() -> None:
    me = NodeFacts("control0", frozenset({"10.0.0.21"}))
    assert judge_nodes([me], "control0", "10.0.0.21", control("10.0.0.22"), "control0") == ([], [])


def test_a_workers_own_member_goes_only_by_name_and_address() -> None:
    assert stale_members(MEMBERS, "ctl", "10.0.0.21", None, k3s.member_node, both=True) == [MEMBERS[0]]
    assert stale_members(MEMBERS, "new", "10.0.0.23", None, k3s.member_node, both=True) == []
