"""The reaper controller: remove the etcd member of a control node proven to have lost its data.

kubeadm's check-etcd refuses every control-plane join while any listed member is unreachable
(``cmd/kubeadm/app/phases/etcd/local.go``, ``CheckLocalEtcdClusterStatus``), so a member whose
node's data is proven gone (a new boot id: its RAM root, and etcd's data, are gone; a fence; an
operator's acceptance) must go. A member that answers is never removed, whatever the share says
of its node (its agent may be hung on a hard NFS mount while etcd serves), and neither is one
whose node is merely silent past the lease (:mod:`core.recovery`: silence is not proof). Every
:data:`REAP_INTERVAL_S`, :meth:`ReaperController.reap_once` runs on every control node; only
the node whose member leads etcd acts, one member per turn, and it reads the share (the
members' incarnations, heartbeats and loss proofs, the join slot) only when a member does not
answer, so a healthy cluster's reaper costs the share nothing. The rule itself is
:func:`core.recovery.reapable`; each turn returns the sentence saying what it decided.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from core import recovery
from core.etcd import EtcdError, member_answers
from core.logs import get_logger
from core.share import ShareError
from phylactery.controllers import etcdview

if TYPE_CHECKING:
    from phylactery.service import Phylactery

log = get_logger(__name__, "phylactery")
REAP_INTERVAL_S = 5.0  # how often the reaper looks for members whose node lost its data


class ReaperController:
    """Loop ``reaper`` of Phylactery ``p``. ``connect`` and ``answers`` reach etcd (the real
    ones by default; tests pass fakes); ``reaped`` names the members removed so far."""

    name = "reaper"

    def __init__(
        self,
        p: Phylactery,
        connect: etcdview.Connect = etcdview.connect,
        answers: etcdview.Answers = member_answers,
    ) -> None:
        self.p = p
        self.connect = connect
        self.answers = answers
        self.reaped: list[str] = []
        # (member id, name, why) of a removal whose answer never came (etcd may have applied it:
        # a member remove returns after the configuration change commits, which can outlast
        # the client's timeout); the next turn's member list says whether it happened.
        self.unanswered: tuple[int, str, str] | None = None

    async def run(self) -> None:
        """:meth:`reap_once` every :data:`REAP_INTERVAL_S`; a turn whose etcd or share does
        not answer is logged and the next one tries again."""
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                await self.reap_once()
            except (EtcdError, OSError, ShareError) as err:
                log.warning("reaping dead etcd members failed", extra={"error": str(err)})

    async def reap_once(self) -> str:
        """One turn: remove at most one etcd member that does not answer and whose node's data is proven gone
        (:func:`core.recovery.reapable`), while the remaining members keep a majority of answering ones,
        never the member of the node in a control-plane join (its new member is listed, and silent, before
        its join records the new incarnation). Records ``member_reaped``. Returns the sentence saying what
        it decided. Raises :class:`core.etcd.EtcdError`, ``OSError`` and :class:`core.share.ShareError` when
        etcd or the share does not answer."""
        p = self.p
        ctx = p.driver.etcd_client_context()
        if ctx is None:
            return "no etcd member on this node: nothing to reap"
        async with self.connect(p.driver.etcd_endpoint, ctx) as etcd:
            me = etcdview.leader_id(await etcd.status())
            if me is None:
                return "my etcd member does not lead etcd: its leader's node reaps"
            members = await etcd.member_list()
            if self.unanswered is not None:
                member_id, member, why = self.unanswered
                self.unanswered = None
                if all(m.id != member_id for m in members):  # it was removed: say so once
                    why += f" (its removal's answer timed out; the member list no longer has it); {len(members)} left"
                    return await self._reaped(member, why)
            others = [m for m in members if m.id != me]
            answers = await asyncio.gather(*(self.answers(m, ctx) for m in others))
            silent = sorted(m.name for m, ok in zip(others, answers, strict=True) if not ok)
            if not silent:
                return "every etcd member answers: nothing to reap"
            node_of = {m.id: p.driver.etcd_member_node(m.name) for m in members}
            heard = [node_of[m.id] for m in members if m.id == me]
            heard += [node_of[m.id] for m, ok in zip(others, answers, strict=True) if ok]
            state = await asyncio.to_thread(p.store.read_state)
            ttl = p.cfg.timeouts.lease_ttl_s
            a = await asyncio.to_thread(recovery.assess_share, p.store, state.generation, ttl)
            joining = await asyncio.to_thread(p.store.join_slot_holder, ttl)
            name = recovery.reapable(list(node_of.values()), a, heard, joining)
            if name is None:
                fates = ", ".join(f"{n} {a.fates[n].value}" for n in sorted(a.fates)) or "no incarnation recorded"
                return (
                    f"{', '.join(silent)} do not answer, but no member may be removed "
                    f"({fates}; joining: {joining or 'nobody'})"
                )
            doomed = next(m for m in members if node_of[m.id] == name)
            remaining = len(members) - 1
            why = f"removed etcd member {doomed.name}: it does not answer and its node {a.proof_of(name)} (data gone)"
            try:
                await etcd.member_remove(doomed.id)
            except EtcdError:
                self.unanswered = (doomed.id, doomed.name, why)
                raise
        return await self._reaped(doomed.name, f"{why}; {remaining} members left")

    async def _reaped(self, member: str, why: str) -> str:
        """Log and record ``member_reaped`` for ``member`` (the share's current generation)."""
        log.info(why, extra={"member": member})
        self.reaped.append(member)
        state = await asyncio.to_thread(self.p.store.read_state)
        await asyncio.to_thread(self.p.store.record_event, "member_reaped", state.generation, why, member=member)
        return why
