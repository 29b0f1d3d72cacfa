"""Several clusters on one Warewulf server: what two of them must not share, and the check.

One server may serve several clusters, each from its own inventory (docs/operations.md,
"Several clusters on one Warewulf server"): its own name (which is its share directory
``<share>/<cluster>`` and its role profiles ``<cluster>-control``/``-worker``), VIP, VRRP
router id, nodes and addresses. Two clusters that share one of these break each other:

* one **name**: one share directory (one election, one generation) and one pair of role
  profiles, the second apply rewriting the first's;
* one **VIP**, or a VIP that is the other cluster's node address: two keepalived instances
  claim one address, and each cluster's API endpoint lands on either;
* one **VRRP router id** on one network: VRRP identifies a virtual router by its id on a
  segment (RFC 5798 section 5.2.3); keepalived drops the other cluster's adverts as "ip address
  associated with VRID ... not present" and the VIPs flap;
* one **node** (a name in both): Warewulf holds one node of that name, with one profile list,
  and the cluster it joins depends on the last apply;
* one **address** (a node's in both, under two names): two machines answer it.

:func:`facts` reads a cluster from an inventory, :func:`registry_facts` every other cluster
from what Warewulf holds (their role profiles' ``ek8s_*`` tags and the nodes listing them),
and :func:`collisions` says, one sentence each, what two of them share. ``ek8s warewulf plan``
and ``apply`` refuse (exit 2) an inventory that collides with a cluster the registry holds
or with an inventory given with ``--with``. Pure; no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from manager.inventory import Inventory
from manager.wwregistry import Registry


@dataclass(frozen=True)
class ClusterFacts:
    """What identifies one cluster on the server: ``cluster``, ``vip`` (address string),
    ``vrid``, ``network`` (the VIP's network: the segment its VRRP adverts travel),
    ``nodes`` (name -> address string, "" when unknown) and ``source`` (where it was read)."""

    cluster: str
    vip: str
    vrid: int
    network: ipaddress.IPv4Network
    nodes: dict[str, str] = field(default_factory=dict)
    source: str = ""


def facts(inv: Inventory, source: str = "the inventory") -> ClusterFacts:
    """:class:`ClusterFacts` of an inventory."""
    net = ipaddress.IPv4Network(f"{inv.vip.address}/{inv.vip.prefix_length}", strict=False)
    nodes = {n.name: n.address for n in inv.expanded()}
    return ClusterFacts(inv.cluster, inv.vip.address, inv.vip.virtual_router_id, net, nodes, source)


def registry_facts(reg: Registry) -> list[ClusterFacts]:
    """Every cluster whose role profile (``<cluster>-control`` or ``-worker``, with the tag
    ``ek8s_cluster``) Warewulf holds, with the nodes that list one of its role profiles.
    A profile whose VIP tags are missing or malformed is skipped (nothing to compare)."""
    out: dict[str, ClusterFacts] = {}
    for pname, prof in sorted(reg.profiles.items()):
        cluster = prof.tags.get("ek8s_cluster")
        if not cluster or pname not in (f"{cluster}-control", f"{cluster}-worker") or cluster in out:
            continue
        try:
            vip = str(ipaddress.IPv4Address(prof.tags.get("ek8s_vip", "")))
            prefix = int(prof.tags.get("ek8s_vip_prefix", "24"))
            vrid = int(prof.tags.get("ek8s_vrid", ""))
            net = ipaddress.IPv4Network(f"{vip}/{prefix}", strict=False)
        except ValueError:
            continue
        out[cluster] = ClusterFacts(cluster, vip, vrid, net, source=f"Warewulf's registry (profile {pname})")
    for cluster, f in out.items():
        role_profiles = {f"{cluster}-control", f"{cluster}-worker"}
        for name, node in sorted(reg.nodes.items()):
            if role_profiles & set(node.profiles):
                addresses = [nd.ipaddr for nd in node.netdevs.values() if nd.ipaddr]
                f.nodes[name] = addresses[0] if addresses else ""
    return list(out.values())


def _list(items: list[str]) -> str:
    return ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")


def collisions(a: ClusterFacts, b: ClusterFacts) -> list[str]:
    """What ``a`` and ``b`` share that two clusters must not (module docstring), one sentence
    each naming the field of ``a`` and ``b``'s source; empty when they can live side by side."""
    other = f"cluster {b.cluster} ({b.source})"
    out = []
    if a.cluster == b.cluster:
        out.append(
            f"cluster: {a.cluster} is also the name of {other}: one share directory and one pair of role profiles"
        )
    if a.vip == b.vip:
        out.append(f"vip.address: {a.vip} is also the VIP of {other}")
    b_by_address = {addr: name for name, addr in b.nodes.items() if addr}
    if a.vip in b_by_address:
        out.append(f"vip.address: {a.vip} is the address of node {b_by_address[a.vip]} of {other}")
    a_by_address = {addr: name for name, addr in a.nodes.items() if addr}
    if b.vip in a_by_address:
        out.append(f"nodes: {a_by_address[b.vip]}'s address {b.vip} is the VIP of {other}")
    if a.vrid == b.vrid and a.network.overlaps(b.network):
        out.append(
            f"vip.virtual_router_id: {a.vrid} is also the VRRP router id of {other} on the same network "
            f"({a.network} / {b.network}): VRRP router ids must differ on one network"
        )
    shared = sorted(set(a.nodes) & set(b.nodes))
    if shared:
        out.append(f"nodes: {_list(shared)} also belong to {other}: a node serves one cluster")
    both = sorted(
        f"{addr} ({a_by_address[addr]} here, {b_by_address[addr]} there)"
        for addr in set(a_by_address) & set(b_by_address)
        if a_by_address[addr] != b_by_address[addr]
    )
    if both:
        out.append(f"nodes: addresses {_list(both)} are also used in {other}")
    return out


def check(inv: Inventory, reg: Registry | None, others: list[tuple[str, Inventory]]) -> list[str]:
    """Every collision of ``inv`` with a cluster ``reg`` holds (its own cluster excluded: a
    second apply meets itself there) and with each of ``others`` (``(path, inventory)``)."""
    mine = facts(inv)
    out = []
    for theirs in registry_facts(reg) if reg is not None else []:
        if theirs.cluster != inv.cluster:
            out += collisions(mine, theirs)
    for path, other in others:
        out += collisions(mine, facts(other, source=path))
    return out
