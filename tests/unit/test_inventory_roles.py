"""Roles from the inventory and several clusters on one Warewulf server, without Warewulf:
labels, taints and roles per node and per group, the node tags the plan gives them, what is
published on the share, and the collisions between two clusters' inventories or with what the
registry already holds (manager/inventory.py, manager/wwplan.py, manager/collisions.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from core.noderoles import NodeRoles, parse_taints
from core.share import ShareStore
from manager import collisions, wwplan
from manager.inventory import Inventory, InventoryError, load_inventory, published
from manager.wwregistry import Entity, NetDev, Registry

BASE: dict[str, Any] = {
    "cluster": "hpc",
    "vip": {"address": "10.0.0.99", "virtual_router_id": 51},
    "nodes": [
        {
            "name": "control[0-2]",
            "role": "control",
            "address": "10.0.0.21",
            "mac": [f"52:54:00:00:00:2{i}" for i in range(3)],
        },
        {
            "name": "worker[0-3]",
            "role": "worker",
            "address": "10.0.0.41",
            "mac": [f"52:54:00:00:00:4{i}" for i in range(4)],
            "labels": {"slurm.partition": "batch"},
        },
    ],
    "groups": [
        {"nodes": "worker[2-3]", "roles": ["gpu"], "labels": {"slurm.partition": "gpu"}},
        {"nodes": "worker3", "taints": ["nvidia.com/gpu=present:NoSchedule"]},
    ],
}


def inv(**changes: Any) -> Inventory:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return Inventory.model_validate(data)


def write(tmp: Path, data: dict[str, Any]) -> Path:
    import yaml

    path = tmp / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_groups_go_over_the_entry_in_order() -> None:
    nodes = {n.name: n.scheduling for n in inv().expanded()}
    assert nodes["control0"] == NodeRoles()
    assert nodes["worker0"] == NodeRoles({"slurm.partition": "batch"})
    assert nodes["worker2"] == NodeRoles({"slurm.partition": "gpu"}, (), ("gpu",))
    assert nodes["worker3"] == NodeRoles(
        {"slurm.partition": "gpu"}, parse_taints("nvidia.com/gpu=present:NoSchedule"), ("gpu",)
    )


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"groups": [{"nodes": "worker[3-9]", "roles": ["gpu"]}]}, "groups.0.nodes: worker4, worker5"),
        ({"groups": [{"nodes": "worker0", "taints": ["gpu:Never"]}]}, "groups.0.taints"),
        ({"groups": [{"nodes": "worker0", "colour": "red"}]}, "groups.0.colour"),
    ],
)
def test_a_bad_group_is_refused_naming_the_field(tmp_path: Path, change: dict[str, Any], says: str) -> None:
    with pytest.raises(InventoryError, match=says.replace("[", r"\[")):
        load_inventory(write(tmp_path, {**copy.deepcopy(BASE), **change}))


def test_the_plan_gives_nodes_their_tags_grouped_and_takes_stale_ones_away() -> None:
    reg = Registry(
        nodes={
            "worker0": Entity(tags={"ek8s_labels": "slurm.partition=batch"}),
            "worker1": Entity(tags={"ek8s_labels": "slurm.partition=batch", "ek8s_roles": "old"}),
        },
        profiles={"default": Entity()},
    )
    p = wwplan.plan(inv(), "4.7", reg, wwplan.Local())
    tag_steps = [s.argv for s in p.steps if "--tagadd" in s.argv or "--tagdel" in s.argv]
    assert ("wwctl", "node", "set", "worker1", "--yes", "--tagdel", "ek8s_roles") in tag_steps
    assert (
        "wwctl", "node", "set", "worker2", "--yes", "--tagadd", "ek8s_labels=slurm.partition=gpu",
        "--tagadd", "ek8s_roles=gpu",
    ) in tag_steps  # fmt: skip
    assert not any("worker0" in s for s in tag_steps), "worker0 has its tags already"
    assert not any("--tagdel" in s and "unset" in s for s in tag_steps)
    assert p.steps[-1].argv == ("publish", "/share/hpc/inventory.json") and p.steps[-1].kind == "share"
    assert p.commands == sum(1 for s in p.steps if s.kind not in ("edit", "share"))


def test_a_node_tag_is_not_taken_for_an_override_of_the_profile() -> None:
    have = Entity(profiles=("default", "hpc-worker"), tags={"ek8s_roles": "gpu", "ek8s_vip": "10.9.9.9"})
    flags = wwplan._override_flags("4.7", have, Entity(), Entity())
    assert flags == ("unset", "--tag", "ek8s_vip")


def test_the_inventory_is_published_once_and_again_only_when_it_changes(tmp_path: Path) -> None:
    i = inv(share={"path": str(tmp_path / "share")})
    store = ShareStore(tmp_path / "share", "hpc", "operator")
    assert wwplan.publish_needed(i, store.read_inventory())
    store.publish_inventory(published(i, "alice", 1.0))
    got = store.read_inventory()
    assert got is not None and got.published_by == "alice"
    assert got.nodes["worker3"].scheduling.all_labels() == {"slurm.partition": "gpu", "node-role.kubernetes.io/gpu": ""}
    assert not wwplan.publish_needed(i, got)
    assert wwplan.publish_needed(inv(share={"path": str(tmp_path / "share")}, groups=[]), got)


# -- several clusters ---------------------------------------------------------------------------

OTHER: dict[str, Any] = {
    "cluster": "ai",
    "vip": {"address": "10.0.0.98", "virtual_router_id": 52},
    "nodes": [
        {"name": "ai-control0", "role": "control", "address": "10.0.0.121", "mac": "52:54:00:00:01:21"},
        {"name": "ai-worker0", "role": "worker", "address": "10.0.0.141", "mac": "52:54:00:00:01:41"},
    ],
}


def other(**changes: Any) -> Inventory:
    data = copy.deepcopy(OTHER)
    data.update(changes)
    return Inventory.model_validate(data)


def clash(a: Inventory, b: Inventory) -> list[str]:
    return collisions.collisions(collisions.facts(a), collisions.facts(b, "b.yaml"))


def test_two_clusters_apart_do_not_collide() -> None:
    assert clash(inv(), other()) == []


def test_what_two_clusters_must_not_share_is_named() -> None:
    assert clash(inv(), other(cluster="hpc"))[0].startswith("cluster: hpc is also the name of cluster hpc (b.yaml)")
    assert clash(inv(), other(vip={"address": "10.0.0.99", "virtual_router_id": 52})) == [
        "vip.address: 10.0.0.99 is also the VIP of cluster ai (b.yaml)"
    ]
    assert clash(inv(), other(vip={"address": "10.0.0.98", "virtual_router_id": 51})) == [
        "vip.virtual_router_id: 51 is also the VRRP router id of cluster ai (b.yaml) on the same network "
        "(10.0.0.0/24 / 10.0.0.0/24): VRRP router ids must differ on one network"
    ]
    far = other(
        vip={"address": "10.1.0.99", "virtual_router_id": 51},
        nodes=[{"name": "ai-control0", "role": "control", "address": "10.1.0.21", "mac": "52:54:00:00:01:21"}],
    )
    assert clash(inv(), far) == [], "one router id on two networks is fine"
    shared = other(
        nodes=[
            {"name": "worker3", "role": "control", "address": "10.0.0.121", "mac": "52:54:00:00:01:21"},
            {"name": "ai-worker0", "role": "worker", "address": "10.0.0.41", "mac": "52:54:00:00:01:41"},
        ]
    )
    assert clash(inv(), shared) == [
        "nodes: worker3 also belong to cluster ai (b.yaml): a node serves one cluster",
        "nodes: addresses 10.0.0.41 (worker0 here, ai-worker0 there) are also used in cluster ai (b.yaml)",
    ]


def test_the_registry_shows_the_other_clusters_and_not_this_one() -> None:
    reg = Registry(
        profiles={
            "default": Entity(),
            "ai-control": Entity(tags={"ek8s_cluster": "ai", "ek8s_vip": "10.0.0.99", "ek8s_vrid": "51"}),
            "hpc-control": Entity(tags={"ek8s_cluster": "hpc", "ek8s_vip": "10.0.0.99", "ek8s_vrid": "51"}),
        },
        nodes={
            "ai-control0": Entity(profiles=("default", "ai-control"), netdevs={"default": NetDev(ipaddr="10.0.0.21")})
        },
    )
    found = collisions.check(inv(), reg, [])
    assert found == [
        "vip.address: 10.0.0.99 is also the VIP of cluster ai (Warewulf's registry (profile ai-control))",
        "vip.virtual_router_id: 51 is also the VRRP router id of cluster ai (Warewulf's registry (profile "
        "ai-control)) on the same network (10.0.0.0/24 / 10.0.0.0/24): VRRP router ids must differ on one network",
        "nodes: addresses 10.0.0.21 (control0 here, ai-control0 there) are also used in cluster ai (Warewulf's "
        "registry (profile ai-control))",
    ]
    assert collisions.check(other(), None, [("hpc.yaml", inv())]) == []


def test_an_inventory_of_another_cluster_than_ek8s_cluster_is_refused(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from manager.cli import cli

    path = write(tmp_path, {**copy.deepcopy(BASE), "share": {"path": str(tmp_path / "share")}})
    res = CliRunner().invoke(cli, ["warewulf", "roles", str(path)], env={"EK8S_CLUSTER": "ai"})
    assert res.exit_code == 2 and "is cluster hpc's inventory, but $EK8S_CLUSTER is ai" in res.output
    assert not (tmp_path / "share").exists(), "nothing written"
    res = CliRunner().invoke(cli, ["warewulf", "roles", str(path)], env={"EK8S_CLUSTER": "hpc"})
    assert res.exit_code == 0 and "7 nodes, 4 with labels, taints or roles" in res.output
    assert (tmp_path / "share/hpc/inventory.json").stat().st_mode & 0o777 == 0o600
