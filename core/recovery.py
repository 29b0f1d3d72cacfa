"""Who still holds the cluster's data, and who re-forms etcd from it: pure decisions.

etcd lives in RAM on these nodes, so recovery is ordered by how much data it keeps
(docs/recovery.md):

1. a majority of etcd members lost, but a control node still holds its data: that survivor
   re-forms etcd alone (etcd's ``--force-new-cluster``, the mechanism behind k3s'
   ``--cluster-reset``) and the others rejoin; nothing is lost;
2. no survivor: a new generation restores the newest snapshot on the share;
3. from nothing only when ``on_cluster_lost`` is ``reinit``.

A member's data is provably gone when its node runs a new boot (RAM root) - the share shows it
at once, without waiting for a grace period - or when its node has not heartbeaten for the
lease TTL. A control node records the boot in which it joined etcd (an *incarnation*); its
member is *alive* while the node heartbeats from that same boot.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.share import Heartbeat, Incarnation


class Fate(enum.Enum):
    """What became of one etcd member's data."""

    ALIVE = "alive"  # its node heartbeats from the boot in which it joined
    REBOOTED = "rebooted"  # its node heartbeats from a new boot: RAM root, data gone
    DEAD = "dead"  # no heartbeat younger than the lease TTL
    UNKNOWN = "unknown"  # no incarnation recorded for it (joined before the record existed)


def fate(incarnation: Incarnation | None, heartbeat: Heartbeat | None, lease_ttl_s: float) -> Fate:
    """The fate of the member of the node behind ``incarnation``, from its ``heartbeat`` (whose
    age is on the share's clock)."""
    if heartbeat is None or heartbeat.age_s >= lease_ttl_s:
        return Fate.DEAD
    if incarnation is None:
        return Fate.UNKNOWN
    return Fate.ALIVE if heartbeat.boot_id == incarnation.boot_id else Fate.REBOOTED


@dataclass(frozen=True)
class Assessment:
    """The control plane of one generation as the share shows it.

    ``fates`` maps every control node that joined etcd in the generation (its incarnation) to
    its :class:`Fate`; ``survivors`` are those still ALIVE, sorted by name."""

    generation: int
    fates: Mapping[str, Fate]

    @property
    def survivors(self) -> list[str]:
        return sorted(n for n, f in self.fates.items() if f is Fate.ALIVE)

    @property
    def lost(self) -> list[str]:
        """Members whose data is gone for sure (rebooted or dead)."""
        return sorted(n for n, f in self.fates.items() if f in (Fate.REBOOTED, Fate.DEAD))

    @property
    def quorum_lost(self) -> bool:
        """A majority of the members lost their data: etcd cannot get quorum back by itself."""
        return len(self.lost) > len(self.fates) // 2 if self.fates else False

    @property
    def all_lost(self) -> bool:
        """Every member lost its data: only a snapshot can bring the cluster's objects back."""
        return bool(self.fates) and len(self.lost) == len(self.fates)

    @property
    def proven_by_boot_ids(self) -> bool:
        """Every lost member's node is back with a new boot: no grace period is needed to know."""
        return all(self.fates[n] is Fate.REBOOTED for n in self.lost)


def assess(
    generation: int,
    incarnations: Mapping[str, Incarnation],
    heartbeats: Mapping[str, Heartbeat | None],
    lease_ttl_s: float,
) -> Assessment:
    """The :class:`Assessment` of ``generation`` from the share's incarnation records and
    heartbeats (records of other generations are ignored)."""
    fates = {
        name: fate(inc, heartbeats.get(name), lease_ttl_s)
        for name, inc in incarnations.items()
        if inc.generation == generation
    }
    return Assessment(generation, fates)


def reapable(members: Sequence[str], a: Assessment, joining: str | None = None) -> str | None:
    """The etcd member to remove next (by name), or None: one whose node rebooted or is dead,
    and only while the members left after its removal keep a majority of live ones (etcd's
    own rule: removing a member must not cost quorum). Unknown members count as not alive.
    Never ``joining``'s, the node in a control-plane join: its new member is listed (and does
    not answer yet) before its join records the new incarnation."""
    lost = [m for m in members if m != joining and a.fates.get(m) in (Fate.REBOOTED, Fate.DEAD)]
    if not lost:
        return None
    alive = sum(1 for m in members if a.fates.get(m) is Fate.ALIVE)
    return lost[0] if alive > (len(members) - 1) // 2 else None


def reformer(survivors: Sequence[str], indexes: Mapping[str, int | None]) -> str | None:
    """Which survivor re-forms etcd: the one with the most recent data (highest raft index it
    reported in its heartbeat), ties to the lowest name. None while a survivor has not reported
    its index yet (it will within a heartbeat interval)."""
    if not survivors or any(indexes.get(s) is None for s in survivors):
        return None
    return sorted(survivors, key=lambda s: (-(indexes[s] or 0), s))[0]
