"""The election rule (docs/architecture.md), a pure function of a share snapshot.

It runs under the share's lock (:meth:`core.share.ShareStore.attempt_leadership`), so
among control nodes booting at the same moment exactly one sees "no live leader" and claims.

* the generation is ready                       -> ``join``
* a leader is recorded and its heartbeat fresh  -> ``follow`` (wait for ready)
* otherwise a control node                      -> ``lead`` with ``epoch + 1``
* otherwise a worker                            -> ``follow`` (workers never lead)

Every outcome comes with a sentence saying why, which the agent logs and records.
"""

from __future__ import annotations

from collections.abc import Callable

from core.share import Snapshot

Decision = tuple[str, str]


def decide(snap: Snapshot, *, role: str, node: str, boot_id: str, lease_ttl_s: float) -> Decision:
    """Return ``(action, why)``; action is ``"lead"``, ``"follow"`` or ``"join"``."""
    state = snap.state
    leader = state.leader
    if state.ready and leader is not None:
        return "join", f"generation {state.generation} is ready (leader {leader.node}, epoch {state.epoch})"
    if role != "control":
        # Workers never lead, and do not judge the leader's lease: control nodes' heartbeats
        # are in the control-only tree, which workers do not mount (docs/share-protocol.md).
        if leader is None:
            return "follow", "no leader yet; workers never lead"
        return "follow", f"{leader.node} leads epoch {leader.epoch}; waiting for generation {state.generation}"
    if leader is not None and snap.leader_alive(lease_ttl_s):
        if leader.node == node and leader.boot_id == boot_id:
            return "lead", f"I still hold epoch {leader.epoch} (my init failed or my agent restarted); claiming again"
        hb = snap.leader_heartbeat
        age = f"{hb.age_s:.1f}s" if hb else "?"
        return "follow", f"{leader.node} leads epoch {leader.epoch} (heartbeat {age} old)"
    if leader is None:
        return "lead", f"no leader recorded for generation {max(state.generation, 1)}"
    return "lead", (
        f"leader {leader.node} (epoch {leader.epoch}) has no heartbeat younger than {lease_ttl_s:.0f}s; taking over"
    )


def rule_for(role: str, node: str, boot_id: str, lease_ttl_s: float) -> Callable[[Snapshot], Decision]:
    """Bind :func:`decide` to one node, for :meth:`ShareStore.attempt_leadership`."""

    def _rule(snap: Snapshot) -> Decision:
        return decide(snap, role=role, node=node, boot_id=boot_id, lease_ttl_s=lease_ttl_s)

    return _rule
