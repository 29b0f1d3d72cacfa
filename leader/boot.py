"""The agent's first share operations, before the rest of the agent is imported.

What :meth:`leader.agent.Agent.boot` did first (the cluster directory, the heartbeat this node
left in its previous boot, this boot's first heartbeat, the ``boot`` event) needs only the
share store: ``ek8s-node run`` does it right after node.yaml is validated, so the node is
visible on the share while the agent's other modules (Prometheus metrics, the service
manager, the drivers, recovery) are still being imported. ``first_share_op_s`` in the
``boot`` event says how long after the process's start the first operation came
(docs/benchmarks.md, "Agent start").
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.bootid import boot_id, since_process_start_s
from core.config import NodeConfig
from core.share import Heartbeat, ShareStore

FIRST_STATE = "elect"  # leader.states.State.ELECT, the state every boot starts in


@dataclass(frozen=True)
class Booted:
    """What :func:`announce` did: the store it used, this boot's id and the heartbeat this
    node had left before it (None: never, or unreadable)."""

    store: ShareStore
    boot_id: str
    previous: Heartbeat | None


def announce(cfg: NodeConfig, store: ShareStore | None = None, boot: str | None = None) -> Booted:
    """The cluster directory (:meth:`ShareStore.ensure`), the previous heartbeat, this boot's
    first heartbeat (state ``elect``, generation 0) and the ``boot`` event (with ``boot_id``,
    ``first_share_op_s`` and ``first_share_op_cpu_s``: this process's CPU seconds, all
    threads, user and system, before its first share operation; less moved by other load than
    the wall time). Raises ``OSError`` and :class:`core.share.ShareError` when the share fails."""
    first_share_op_s = since_process_start_s()
    first_share_op_cpu_s = round(time.process_time(), 3)
    store = store or ShareStore(cfg.share.path, cfg.cluster, cfg.node.name, role=cfg.role)
    boot = boot or boot_id(cfg.root)
    store.ensure()
    previous = store.read_heartbeat(cfg.node.name)
    store.heartbeat(boot, cfg.role, FIRST_STATE, 0)
    store.record_event(
        "boot",
        0,
        f"booting as {cfg.role} node {cfg.node.name} ({cfg.node.address})",
        role=cfg.role,
        boot_id=boot,
        first_share_op_s=first_share_op_s,
        first_share_op_cpu_s=first_share_op_cpu_s,
    )
    return Booted(store, boot, previous)
