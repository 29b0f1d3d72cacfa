"""Which etcd members a prune removes for a node: those the driver takes for the node
(kubeadm: named as the node; k3s: any name k3s itself would take for the node and refuse a
join over, "duplicate node name found") or with a peer URL on its address; never by a
substring, never the serving member. The rule is the driver's, not Phylactery's."""

from __future__ import annotations

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
