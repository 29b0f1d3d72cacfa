"""etcd's quorum as a guard for planned maintenance: may this control node go down now, may
this member be removed? Pure functions of one view of the members; the operator's
``ek8s node reboot`` and ``ek8s node remove`` ask them before acting, Phylactery again before
it removes a member (docs/operations.md).

etcd accepts writes while a majority of its **voting** members (learners do not vote) is up:
``quorum = voters // 2 + 1`` (etcd's raft; etcd FAQ "What is failure tolerance?"). With
strict reconfiguration checks (the default), etcd itself refuses to remove a voting member
when the started members left would not be a quorum (``server.go`` ``mayRemoveMember`` ->
``IsReadyToRemoveVotingMember``), but nothing refuses to *stop* one: taking a second control
node of three down for a reboot silently stops the API. So the guards here count the members
that answer *now* (a member that is already down counts against the quorum) and refuse,
naming why.

A control plane also has a safe minimum here that etcd does not know: :data:`MIN_CONTROL_PLANE`.
On these nodes etcd lives in RAM. With two control nodes, the reboot of one leaves the other
holding the data, which re-forms etcd alone (docs/recovery.md, case 1: nothing lost); with one,
its reboot loses everything written since the last snapshot (case 2). So a removal that would
leave fewer than two control nodes is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MIN_CONTROL_PLANE = 2


@dataclass(frozen=True)
class Member:
    """One etcd member as the guard sees it: the ``node`` it belongs to (k3s's
    ``<node>-<8 hex>`` already mapped to the node), whether it is a ``learner`` (no vote), and
    whether it ``answers`` its status call now."""

    node: str
    learner: bool = False
    answers: bool = True


def quorum(voters: int) -> int:
    """The votes etcd needs out of ``voters`` voting members (a majority)."""
    return voters // 2 + 1


def _names(nodes: Iterable[str]) -> str:
    return ", ".join(sorted(nodes)) or "none"


def down_refusal(members: list[Member], taking: Iterable[str]) -> str | None:
    """Why taking the control nodes ``taking`` down now (a reboot) would stop etcd, or None
    when the voting members that still answer without them are a quorum. A member already
    silent counts as down; a learner neither helps nor hurts."""
    going = set(taking)
    voters = [m for m in members if not m.learner]
    if not voters:
        return "etcd lists no voting member: its quorum cannot be judged (is etcd up? ek8s status)"
    need = quorum(len(voters))
    up = [m.node for m in voters if m.answers and m.node not in going]
    if len(up) >= need:
        return None
    silent = [m.node for m in voters if not m.answers]
    return (
        f"etcd would lose its quorum: {len(voters)} voting members need {need}, but with {_names(going)} down "
        f"only {len(up)} would answer ({_names(up)}); already not answering: {_names(silent)}"
    )


def removal_refusal(members: list[Member], node: str, minimum: int = MIN_CONTROL_PLANE) -> str | None:
    """Why removing ``node``'s etcd member (a decommission) is not safe, or None: it would
    remove the last voting member, leave fewer than ``minimum`` control nodes (see the module
    docstring), or leave voting members of which too few answer for a quorum. Removing a
    learner only needs the rest to be sound; a node that has no member changes nothing in etcd."""
    if not any(m.node == node for m in members):
        return None  # no member of this node: etcd is not changed
    voters = [m for m in members if not m.learner]
    left = [m for m in voters if m.node != node]
    if not left:
        return f"{node} holds the last voting etcd member: removing it ends the cluster (ek8s reset starts a new one)"
    if len(left) < minimum and len(left) < len(voters):
        return (
            f"removing {node} would leave {len(left)} control node ({_names(m.node for m in left)}): below "
            f"{minimum}, a reboot of the last one loses everything written since the last snapshot (etcd "
            "lives in RAM); add a control node first"
        )
    need = quorum(len(left))
    answering = [m.node for m in left if m.answers]
    if len(answering) < need:
        silent = [m.node for m in left if not m.answers]
        return (
            f"after removing {node}, {len(left)} voting members need {need} but only {len(answering)} answer "
            f"(not answering: {_names(silent)}): etcd refuses a change it cannot commit; bring them back first"
        )
    return None
