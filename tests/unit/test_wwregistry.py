"""How ek8s reads Warewulf's registry and merges a node's profiles into it, as each version
does (manager/wwregistry.py cites the sources); no wwctl, no root."""

from __future__ import annotations

from pathlib import Path

import pytest

from manager.wwregistry import Entity, NetDev, WarewulfError, clean_list, merge, parse_nodes_conf_45

PROFILES = {
    "default": Entity(system_overlays=("wwinit", "wwclient", "hosts"), runtime_overlays=("hosts",), root="initramfs"),
    "site": Entity(profiles=("nested",), image="site-image", tags={"a": "site"}),
    "nested": Entity(tags={"from_nested": "yes", "a": "nested"}, netdevs={"default": NetDev(netmask="255.255.0.0")}),
    "ek8s-control": Entity(
        image="ek8s-control",
        root="tmpfs",
        system_overlays=("~hosts", "ek8s", "ek8s-hosts"),
        runtime_overlays=("~hosts", "ek8s-hosts"),
        tags={"ek8s_role": "control"},
        netdevs={"default": NetDev(device="net0", netmask="255.255.255.0")},
    ),
}


def test_right_most_profile_wins_and_the_node_over_all() -> None:
    own = Entity(profiles=("default", "site", "ek8s-control"), netdevs={"default": NetDev(hwaddr="aa:bb:cc:dd:ee:ff")})
    node = merge(own, PROFILES, "4.7")
    assert (node.image, node.root) == ("ek8s-control", "tmpfs")
    assert node.netdevs["default"] == NetDev(device="net0", hwaddr="aa:bb:cc:dd:ee:ff", netmask="255.255.255.0")
    assert node.system_overlays == ("wwinit", "wwclient", "ek8s", "ek8s-hosts")  # ~hosts dropped hosts
    assert node.runtime_overlays == ("ek8s-hosts",)
    assert node.tags == {"a": "site", "from_nested": "yes", "ek8s_role": "control"}
    assert merge(Entity(profiles=own.profiles, image="own"), PROFILES, "4.7").image == "own"


def test_nested_profiles_are_4_6_and_later() -> None:
    """getProfilesProfiles exists from 4.6 on; 4.5 merges only the node's own list."""
    own = Entity(profiles=("site",))
    assert merge(own, PROFILES, "4.6").tags == {"a": "site", "from_nested": "yes"}
    assert merge(own, PROFILES, "4.5").tags == {"a": "site"}


def test_missing_profile_is_skipped() -> None:
    assert merge(Entity(profiles=("gone", "site")), PROFILES, "4.7").image == "site-image"


def test_clean_list() -> None:
    assert clean_list(["a", "b", "~a", "c"]) == ("b", "c")


def test_4_5_nodes_conf_of_the_wrong_shape_names_the_field() -> None:
    with pytest.raises(WarewulfError, match=r"nodes\.control0\.network devices"):
        parse_nodes_conf_45("nodes:\n  control0:\n    network devices: [eth0]\n", Path("nodes.conf"))
    with pytest.raises(WarewulfError, match="not valid YAML"):
        parse_nodes_conf_45("nodes: [\n", Path("nodes.conf"))
