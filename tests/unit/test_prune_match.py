"""Which etcd members a prune removes for a node: by name (kubeadm's, or k3s's
``<node>-<8 hex digits>``) or by peer address, never by a substring."""

from __future__ import annotations

from core.etcd import EtcdMember
from phylactery.prune import node_password_secret, stale_members

MEMBERS = [
    EtcdMember(1, "ctl-0a1b2c3d", ("https://10.0.0.21:2380",), ()),
    EtcdMember(2, "ctl-1-0a1b2c3d", ("https://10.0.0.22:2380",), ()),
    EtcdMember(3, "ctl-ffffffff", ("https://10.0.0.29:2380",), ()),  # ctl at an older address
    EtcdMember(4, "other-12345678", ("https://10.0.0.23:2380",), ()),
    EtcdMember(5, "ctl", ("https://10.0.0.24:2380",), ()),
]


def names(ms: list[EtcdMember]) -> list[str]:
    return [m.name for m in ms]


def test_k3s_names_match_the_suffix_pattern_and_never_a_longer_node_name() -> None:
    assert names(stale_members(MEMBERS, "ctl", "10.0.0.21", None, k3s_names=True)) == ["ctl-0a1b2c3d", "ctl-ffffffff"]
    assert names(stale_members(MEMBERS, "ctl-1", "10.0.0.99", None, k3s_names=True)) == ["ctl-1-0a1b2c3d"]


def test_a_member_on_the_address_is_stale_whatever_its_name() -> None:
    # A member there would make etcd refuse the new member ("Peer URLs already exists").
    assert names(stale_members(MEMBERS, "new", "10.0.0.23", None, k3s_names=True)) == ["other-12345678"]


def test_kubeadm_names_match_exactly_and_the_serving_member_is_kept() -> None:
    assert names(stale_members(MEMBERS, "ctl", "10.0.0.99", None)) == ["ctl"]
    assert stale_members(MEMBERS, "ctl", "10.0.0.21", keep_id=1, k3s_names=True) == [MEMBERS[2]]


def test_the_node_password_secret_name() -> None:
    assert node_password_secret("worker0") == "worker0.node-password.k3s"
