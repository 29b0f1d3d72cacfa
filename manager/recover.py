"""``ek8s recover --accept-loss-of NODES``: the operator proves what silence cannot.

A control node silent past the lease may be down, or cut off and serving (docs/recovery.md,
"Proof, not silence"); nothing destructive acts on that. When the operator knows the nodes are
down (powered off, the rack is dark) and no fencing is configured, this command records the
loss of their etcd members' data as a loss proof (``losses/<node>.json``, ``kind: accepted``,
the invoking user as ``by``) for exactly the incarnation each one is silent in; the survivor
then re-forms etcd, the reaper removes the members, or, when every member's data is gone, a
new generation restores a snapshot. It says first what will happen and what is lost if the
operator is wrong, and asks like ``ek8s reset`` (:mod:`manager.reset`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from core import recovery
from core.config import Timeouts
from core.records import node_name
from core.share import LossProof, ShareStore


class RecoverRefused(Exception):
    """The request names something the share does not support (``code`` 2: bad input) or a
    node whose data is alive (``code`` 1); nothing was written."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Plan:
    """What ``ek8s recover`` would record: the loss proofs (``proofs``), the nodes already
    proven gone (``already``), and the assessment before and after (``before``, ``after``)."""

    generation: int
    proofs: list[LossProof]
    already: list[str]
    before: recovery.Assessment
    after: recovery.Assessment

    def lines(self) -> list[str]:
        """What it means, one line each, for :func:`manager.reset.confirm`."""
        out = [f"now: {self.before.explain()}"]
        for n in self.already:
            out.append(f"{n}: already {self.before.proof_of(n)}; nothing to record")
        if self.proofs:
            names = ", ".join(p.node for p in self.proofs)
            out.append(
                f"{names}: their etcd data is declared lost. If one of them is in fact running (cut off by a "
                "partition), everything its side wrote since the partition began is lost when it rejoins, and "
                "until then two etcd clusters may accept writes: make sure they are down"
            )
        a = self.after
        if a.quorum_lost and a.survivors:
            who = ", ".join(a.survivors)
            out.append(
                f"then: the survivor with the most recent data ({who}) re-forms etcd from it; nothing it holds is lost"
            )
        elif a.all_lost:
            out.append("then: every member's data is gone; a control node starts a new generation (on_cluster_lost)")
        elif a.silent:
            out.append(f"then still not proven: {', '.join(a.silent)}; nothing acts on them")
        else:
            out.append("then: a majority still holds its data; the reaper removes the lost members while quorum holds")
        return out


def plan(store: ShareStore, nodes: list[str], lease_ttl_s: float | None = None) -> Plan:
    """The :class:`Plan` for accepting the loss of ``nodes`` in the current generation (share
    clock, ``lease_ttl_s`` default :class:`core.config.Timeouts`'). Raises
    :class:`RecoverRefused` (2) for a name that is not a node name or has no etcd member in the
    generation, (1) for a node that heartbeats from the boot its member joined in (its data is
    alive); ``OSError``/``ShareError`` when the share does not answer."""
    ttl = Timeouts().lease_ttl_s if lease_ttl_s is None else lease_ttl_s
    for n in nodes:
        try:
            node_name(n)
        except ValueError as err:
            raise RecoverRefused(f"--accept-loss-of: {err}", 2) from None
    generation = store.read_state().generation
    before = recovery.assess_share(store, generation, ttl)
    unknown = [n for n in nodes if n not in before.fates]
    if unknown:
        known = ", ".join(sorted(before.fates)) or "none"
        raise RecoverRefused(
            f"--accept-loss-of: {', '.join(unknown)} has no etcd member recorded in generation {generation} "
            f"(members: {known})",
            2,
        )
    alive = [n for n in nodes if before.fates[n] is recovery.Fate.ALIVE]
    if alive:
        raise RecoverRefused(
            f"{', '.join(alive)} heartbeats from the boot its etcd member joined in: its data is alive; "
            "nothing recorded (stop it first, or wait until it is silent past the lease)",
            1,
        )
    incarnations = store.incarnations()
    already = [n for n in nodes if before.fates[n] in recovery.PROVEN]
    proofs = [
        LossProof(
            node=n,
            boot_id=incarnations[n].boot_id,
            generation=generation,
            incarnation_at=incarnations[n].at,
            kind="accepted",
            by="",
            how="ek8s recover --accept-loss-of",
            at=0.0,
        )
        for n in nodes
        if before.fates[n] is recovery.Fate.SILENT
    ]
    fates = dict(before.fates) | {p.node: recovery.Fate.ACCEPTED for p in proofs}
    after = recovery.Assessment(generation, fates, dict(before.proofs) | {p.node: p for p in proofs})
    return Plan(generation, proofs, already, before, after)


def accept(store: ShareStore, p: Plan, user: str, reason: str | None = None) -> list[LossProof]:
    """Record ``p``'s proofs as ``user``'s acceptance (one ``losses/<node>.json`` each, then one
    ``loss_accepted`` event naming the user and the nodes). Returns what was written."""
    now = time.time()
    why = reason or f"ek8s recover by {user}"
    written = [
        LossProof(
            node=x.node,
            boot_id=x.boot_id,
            generation=x.generation,
            incarnation_at=x.incarnation_at,
            kind="accepted",
            by=user,
            how=x.how,
            at=now,
            reason=why,
        )
        for x in p.proofs
    ]
    for proof in written:
        store.record_loss(proof)
    if written:
        names = [x.node for x in written]
        store.record_event(
            "loss_accepted",
            p.generation,
            f"{user} accepted the loss of the etcd data of {', '.join(names)}: {why}",
            user=user,
            nodes=names,
        )
    return written
