"""The lab's shape as ``lab.json`` records it: addresses, the node and lab records, the modes.

Shared by :mod:`lab.cluster` (which makes labs) and :mod:`lab.runners` (which runs their
nodes), so neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROCESSES = "processes"  # the lab starts each node's agent as a process in its namespace
MACHINES = "machines"  # each node is a systemd-nspawn machine booting the lab's node image

NETWORK = "10.0.0"
PREFIX_LEN = 24
VIP = f"{NETWORK}.99"
VIP_NAME = "vip.kubernetes.local"
MANAGER = f"{NETWORK}.13"
CLUSTER = "default"
# A second cluster beside it (ek8s lab up --second-cluster): its own name, VIP and VRRP id.
SECOND_CLUSTER = "b"
SECOND_VIP = f"{NETWORK}.20"
SECOND_VIP_NAME = "vip-b.kubernetes.local"
SECOND_VRID = 52
# Seconds one answer of the prober may take: the API call (5 s timeout, retried by the client)
# beside the 5 s Phylactery calls.
PROBE_TIMEOUT_S = 60.0


class LabError(Exception):
    """The lab could not do what was asked; the message says what and where to look."""


@dataclass
class LabNode:
    """One node as ``lab.json`` records it. ``role`` is "control" or "worker"; ``address`` an
    IPv4 address string; ``ns`` its namespace; ``root`` the directory standing in for its
    tmpfs root; ``config`` its node.yaml; ``log`` the agent's log; ``pid`` its agent's process
    id (``ip netns exec`` execs the agent, in a session of its own), 0 when stopped; ``image``
    the node image it boots (:mod:`lab.nodeimage`; empty: its profile's, the lab's version)."""

    name: str
    role: str
    address: str
    ns: str
    root: str
    config: str
    log: str
    pid: int = 0
    image: str = ""


@dataclass
class LabState:
    """``lab.json``: the namespace ``prefix``, the lab's ``dir`` and ``share`` (paths as
    strings), ``t0`` (Unix seconds when :meth:`Lab.start_all` started the agents; 0 before),
    the nodes, the :class:`lab.emulation.Emulation` as a dict, and the manager namespace."""

    prefix: str
    dir: str
    share: str
    t0: float = 0.0
    nodes: list[LabNode] = field(default_factory=list)
    emulation: dict[str, Any] = field(default_factory=dict)
    # The Warewulf server's stand-in (10.0.0.13): a namespace on the bridge with no node
    # processes, from which operator commands (ek8s status, ek8s bench) run.
    manager: str = ""
    # How nodes run (lab.runners): "processes" (the lab starts each agent) or "machines"
    # (systemd-nspawn machines booting the lab's node image with the Warewulf overlays).
    mode: str = PROCESSES

    def node(self, name: str) -> LabNode:
        """The node called ``name``; raises :class:`LabError` naming the lab's nodes otherwise."""
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"no node {name!r} in this lab (nodes: {', '.join(n.name for n in self.nodes)})")


def control_address(i: int) -> str:
    """``control<i>``'s address: ``10.0.0.<21 + i>``."""
    return f"{NETWORK}.{21 + i}"


MAX_CONTROL = 9  # control<i> at 10.0.0.21-29
MAX_WORKERS = 213  # worker<i> at 10.0.0.41-98, then 10.0.0.100-254 (docs/lab.md)


def worker_address(i: int) -> str:
    """``worker<i>``'s address: ``10.0.0.<41 + i>`` for the first 58 (the reference plan),
    then ``10.0.0.<100 + i - 58>``, skipping the VIP (``.99``), up to ``worker212`` at
    ``.254``. Raises ``ValueError`` beyond :data:`MAX_WORKERS`."""
    if not 0 <= i < MAX_WORKERS:
        raise ValueError(f"worker{i}: the lab's /24 holds workers 0-{MAX_WORKERS - 1}")
    return f"{NETWORK}.{41 + i}" if i < 58 else f"{NETWORK}.{100 + i - 58}"


def merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    """Merge ``extra`` into ``base`` in place, nested dicts key by key (``ek8s lab up --set``)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
