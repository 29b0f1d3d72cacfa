"""Which nodes an operator's command may act on: never what the share alone says.

The share is written by every node, workers included (their root can write whatever a worker
mount allows: docs/security.md), so a heartbeat file named ``headnode`` or ``storage01`` is
no reason to reboot that machine. ``ek8s reset --reboot`` reboots only the nodes that have
reported to the share *and* belong to the cluster by a source the operator controls: the
inventory (``warewulf_conf/inventory.yaml``, :func:`from_inventory`) or Warewulf's own node
registry (nodes whose ``ek8s_cluster`` tag, merged from their profiles as Warewulf merges
them, names the cluster: :func:`from_registry`). Every name is an RFC 1123 label before it
reaches a command line (:func:`core.records.node_name`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.records import node_name


class TargetError(Exception):
    """The cluster's nodes cannot be known (no inventory, no Warewulf registry, another
    cluster's inventory); the message says which source failed and how."""


@dataclass(frozen=True)
class Targets:
    """``nodes``: the names to act on, sorted; ``ignored``: names the share reported that the
    source does not know (never acted on, shown to the operator); ``source``: where the
    cluster's nodes were read."""

    nodes: list[str]
    ignored: list[str]
    source: str


def reboot_targets(reported: list[str], known: set[str], source: str) -> Targets:
    """The nodes of ``reported`` (heartbeat names on the share) that ``known`` (the cluster's
    nodes by ``source``) holds. A name that is no RFC 1123 label is ignored too."""
    nodes: list[str] = []
    ignored: list[str] = []
    for name in sorted(set(reported)):
        try:
            node_name(name)
        except ValueError:
            ignored.append(name)
            continue
        (nodes if name in known else ignored).append(name)
    return Targets(nodes=nodes, ignored=ignored, source=source)


def from_inventory(path: Path, cluster: str) -> tuple[set[str], str]:
    """The node names of ``cluster`` in the inventory at ``path`` (hostlists expanded), and a
    description of the source. Raises :class:`TargetError` when it cannot be read or
    describes another cluster."""
    from manager.inventory import InventoryError, load_inventory

    try:
        inv = load_inventory(path)
    except InventoryError as err:
        raise TargetError(str(err)) from None
    if inv.cluster != cluster:
        raise TargetError(f"{path}: the inventory is cluster {inv.cluster!r}, not {cluster!r}")
    return {n.name for n in inv.expanded()}, f"the inventory {path}"


def from_registry(cluster: str, wwctl: str = "wwctl", conf_dir: Path = Path("/etc/warewulf")) -> tuple[set[str], str]:
    """The nodes Warewulf's registry gives the tag ``ek8s_cluster=<cluster>`` (through their
    profiles, as ``ek8s warewulf apply`` sets it), read as :mod:`manager.wwregistry` reads it
    for the version ``wwctl version`` reports. Raises :class:`TargetError` when wwctl or the
    registry cannot be read."""
    from manager.wwplan import parse_version
    from manager.wwregistry import WarewulfError, merge, read_registry, run_wwctl

    try:
        version = parse_version(run_wwctl(wwctl, "version"))
        registry = read_registry(version, wwctl, conf_dir)
    except (WarewulfError, ValueError) as err:
        raise TargetError(f"cannot read Warewulf's node registry: {err}") from None
    known = set()
    for name, node in registry.nodes.items():
        # A node's tags with its profiles' under them, as templates see them (merging again
        # what is merged already changes nothing).
        if merge(node, registry.profiles, version).tags.get("ek8s_cluster") == cluster:
            known.add(name)
    return known, f"Warewulf's registry ({registry.source}), tag ek8s_cluster={cluster}"
