"""The snapshot controller: etcd snapshots to the share, taken on the node whose etcd member
leads etcd (docs/phylactery.md, "etcd snapshots").

Every ``phylactery.snapshot_interval_s`` (60 s; 0 turns the loop off), and at once after every
change of the etcd membership, so that a restore never brings back members that left. Whether
this node's member leads is asked every :data:`TAKER_CHECK_S`; only the leader's node asks for
the member list, every second. The decision of each turn is :func:`decide`, a pure function.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.drivers import DriverError
from core.etcd import EtcdClient, EtcdError
from core.logs import get_logger
from core.records import Incarnation
from core.share import ShareError
from phylactery.controllers.etcdview import leader_id

if TYPE_CHECKING:
    from phylactery.service import Phylactery

log = get_logger(__name__, "phylactery")
TAKER_CHECK_S = 5.0  # how often a control node asks whether its member leads etcd


@dataclass(frozen=True)
class SnapshotDecision:
    """One turn's decision: ``save`` a snapshot now or not, the membership to compare the
    next turn with (``members``), and the sentence saying why."""

    save: bool
    members: frozenset[int]
    sentence: str


def decide(
    takes: bool,
    members: frozenset[int] | None,
    last_members: frozenset[int],
    since_last_s: float,
    interval_s: float,
) -> SnapshotDecision:
    """Whether to save a snapshot now. ``takes``: this node's member leads etcd; ``members``:
    the etcd member IDs it lists now (None: not asked, or no answer); ``last_members``: those
    of the last turn (empty: none known yet); ``since_last_s``: seconds since the last
    snapshot; ``interval_s``: ``snapshot_interval_s``."""
    if not takes:
        why = "my etcd member does not lead etcd: its leader's node takes snapshots"
        return SnapshotDecision(False, frozenset(), why)
    if members is not None and last_members and members != last_members:
        why = f"the etcd membership changed ({len(last_members)} -> {len(members)} members): snapshot now"
        return SnapshotDecision(True, members, why)
    known = last_members or members or frozenset()
    if since_last_s >= interval_s:
        why = f"{since_last_s:.0f}s since the last snapshot (every {interval_s:g}s): snapshot now"
        return SnapshotDecision(True, members or known, why)
    return SnapshotDecision(False, known, f"next snapshot in {interval_s - since_last_s:.0f}s")


class SnapshotController:
    """Loop ``snapshot`` of Phylactery ``p``."""

    name = "snapshot"

    def __init__(self, p: Phylactery) -> None:
        self.p = p
        self.last_sentence = ""

    async def run(self) -> None:
        """Turn every second (or every ``snapshot_interval_s`` when shorter); returns at once
        when snapshots are off. A turn whose etcd, tool or share does not answer is logged and
        the next turn tries again."""
        interval = self.p.cfg.phylactery.snapshot_interval_s
        if interval <= 0:
            return
        last_at, last_members = time.monotonic(), frozenset[int]()
        takes, checked_at = False, -TAKER_CHECK_S
        while True:
            await asyncio.sleep(min(interval, 1.0))
            try:
                if time.monotonic() - checked_at >= TAKER_CHECK_S:
                    checked_at, takes = time.monotonic(), await self.leads_etcd()
                members = await self.member_ids() if takes else None
                d = decide(takes, members, last_members, time.monotonic() - last_at, interval)
                self.last_sentence, last_members = d.sentence, d.members
                if d.save:
                    last_at = time.monotonic()
                    await self.save()
            except (EtcdError, DriverError, ShareError, OSError) as err:  # keep trying; the log says why
                log.warning("etcd snapshot failed", extra={"error": str(err)})

    async def leads_etcd(self) -> bool:
        """Whether this node's etcd member is the etcd leader (``maintenance/status``: its
        ``header.member_id`` is the ``leader``). False without a local member. A leader that
        loses its quorum steps down (etcd's check-quorum), so its data is the cluster's newest.
        Raises :class:`core.etcd.EtcdError` when the local member does not answer."""
        d = self.p.driver
        ctx = d.etcd_client_context()
        if ctx is None:
            return False
        async with EtcdClient([d.etcd_endpoint], ctx, timeout_s=2.0) as etcd:
            return leader_id(await etcd.status()) is not None

    async def member_ids(self) -> frozenset[int] | None:
        """The IDs of the etcd members as the local member lists them (None without one)."""
        d = self.p.driver
        ctx = d.etcd_client_context()
        if ctx is None:
            return None
        async with EtcdClient([d.etcd_endpoint], ctx, timeout_s=2.0) as etcd:
            return frozenset(m.id for m in await etcd.member_list())

    async def save(self) -> Path | None:
        """One snapshot to the share if the generation is ready and this node's member leads
        etcd (any control node: the generation's first leader may be gone for good); returns
        its path, or None when this node is not the one to take it, or when its etcd member
        was not made in this boot and generation (:func:`not_of_generation`). The same
        ``maintenance/status`` answer that says this member leads gives the snapshot's
        lineage: its ``header.revision`` (the snapshot, taken right after, holds at least that
        revision; etcd's snapshot stream itself carries no revision, and ``etcdutl snapshot
        status`` would have to read the whole file to find it) and ``header.cluster_id``
        (:func:`snapshot_point`); the share names and orders snapshots by them, not by this
        node's clock (:meth:`core.share.ShareStore.save_snapshot`). The driver takes it with
        the distribution's tool (k3s: ``k3s etcd-snapshot save``) and names the secret a
        restore needs, kept beside it (:meth:`core.drivers.base.Driver.save_snapshot`).
        Raises :class:`core.etcd.EtcdError` when etcd does not answer (or answers a status
        without a revision or cluster id), :class:`core.drivers.DriverError` when the tool
        fails, ``OSError`` and :class:`core.share.ShareError` from the share."""
        p = self.p
        state = await asyncio.to_thread(p.store.read_state)
        ctx = p.driver.etcd_client_context()
        if ctx is None or not state.ready:
            return None
        mine = (await asyncio.to_thread(p.store.incarnations)).get(p.cfg.node.name)
        refused = not_of_generation(mine, p.boot_id, state.generation)
        if refused:
            self.last_sentence = refused
            log.info("no etcd snapshot", extra={"why": refused})
            return None
        async with EtcdClient([p.driver.etcd_endpoint], ctx, timeout_s=2.0) as etcd:
            status = await etcd.status()
        if leader_id(status) is None:
            return None
        point = snapshot_point(status)
        if point is None:
            raise EtcdError(f"{p.driver.etcd_endpoint}: maintenance/status has no header revision or cluster id")
        revision, cluster_id = point
        taken = await asyncio.to_thread(p.driver.save_snapshot)
        path = await asyncio.to_thread(
            functools.partial(
                p.store.save_snapshot,
                state.generation,
                taken.data,
                p.cfg.phylactery.snapshots_keep,
                revision=revision,
                cluster_id=cluster_id,
                secret=taken.secret,
            )
        )
        extra = {"path": str(path), "bytes": len(taken.data), "tool": taken.tool, "revision": revision}
        log.info("etcd snapshot saved", extra=extra)
        return path


def not_of_generation(mine: Incarnation | None, boot_id: str, generation: int) -> str | None:
    """Why this node's etcd data is not generation ``generation``'s (so its snapshot must not
    be named so), or None when it is: its incarnation (``mine``, the record the agent writes
    when its init or control-plane join completes) must be of this boot (``boot_id``) and of
    this generation. A node still running the previous generation's etcd for the second
    before it resets would otherwise file that data, with revisions that may be higher, under
    the new generation's name."""
    if mine is None:
        return "no incarnation recorded for my etcd member: its data's generation is unknown"
    if mine.boot_id != boot_id:
        return f"my etcd member's incarnation is of boot {mine.boot_id}, not this boot's"
    if mine.generation != generation:
        return f"my etcd member was made in generation {mine.generation}, not {generation}: not its snapshot to take"
    return None


def snapshot_point(status: dict[str, Any]) -> tuple[int, int] | None:
    """``(revision, cluster id)`` from etcd's ``maintenance/status`` answer (its ``header``;
    the JSON gateway sends 64-bit integers as decimal strings), None when either is missing
    or not a non-negative integer. etcd fills the header of every maintenance answer with the
    member's applied revision and its cluster id (``server/etcdserver/api/v3rpc/header.go``
    ``fill``, v3.5.16)."""
    header = status.get("header")
    if not isinstance(header, dict):
        return None
    try:
        revision, cluster_id = int(header.get("revision", "")), int(header.get("cluster_id", ""))
    except (TypeError, ValueError):
        return None
    if revision < 0 or not 0 <= cluster_id < 2**64:
        return None
    return revision, cluster_id
