"""Who still holds the cluster's data, what proves the rest gone, and who re-forms etcd.

etcd lives in RAM on these nodes, so recovery is ordered by how much data it keeps
(docs/recovery.md):

1. a majority of etcd members *proven* to have lost their data, a control node still holding
   its own: that survivor re-forms etcd alone (etcd's ``--force-new-cluster``, the mechanism
   behind k3s' ``--cluster-reset``) and the others rejoin; nothing is lost;
2. every member's data proven gone: a new generation restores the newest snapshot;
3. from nothing only when ``on_cluster_lost`` is ``reinit``.

**Proof, not silence.** A member's data is proven gone only by

* a new boot id of its node (the root is in RAM: a reboot wiped it), at any age;
* a fence record for the boot it joined in (the Warewulf server power-cycled it);
* an operator's recorded acceptance of the loss (``ek8s recover --accept-loss-of``).

A node merely silent past the lease TTL is :attr:`Fate.SILENT`, never lost: it may be cut off
from the share by a partition (or hung on a hard NFS mount) while its etcd member keeps serving
a majority with its peers. Re-forming etcd, starting a new generation, reaping a member and
declaring the cluster lost act only on proven losses (the Pacemaker rule: a node is down when
it is fenced, not when it is quiet).

The agent, Phylactery's reaper and ``ek8s status`` all read the share's verdict through one
function, :func:`assess_share`; the rest of this module is pure.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.share import Heartbeat, Incarnation, LossProof

if TYPE_CHECKING:
    from core.share import ShareStore


class Fate(enum.Enum):
    """What became of one etcd member's data."""

    ALIVE = "alive"  # its node heartbeats from the boot in which it joined
    REBOOTED = "rebooted"  # its node heartbeated from a new boot: RAM root, data gone (proof)
    FENCED = "fenced"  # the Warewulf server power-cycled its node (proof)
    ACCEPTED = "accepted"  # an operator recorded the loss (asserted proof)
    SILENT = "silent"  # no heartbeat younger than the lease TTL: NOT proof, it may be serving
    UNKNOWN = "unknown"  # no incarnation recorded for it (joined before the record existed)


PROVEN = (Fate.REBOOTED, Fate.FENCED, Fate.ACCEPTED)


def fate(
    incarnation: Incarnation | None,
    heartbeat: Heartbeat | None,
    lease_ttl_s: float,
    proof: LossProof | None = None,
) -> Fate:
    """The fate of the member of the node behind ``incarnation``, from its ``heartbeat`` (whose
    age is on the share's clock) and a :class:`LossProof` for its node. A proof that covers the
    incarnation wins over a live heartbeat from the same boot: the loss has been acted upon, and
    that node must stop serving (its agent resets on seeing it)."""
    if incarnation is None:
        return Fate.UNKNOWN
    if proof is not None and proof.covers(incarnation):
        return Fate.FENCED if proof.kind == "fenced" else Fate.ACCEPTED
    if heartbeat is not None and heartbeat.boot_id != incarnation.boot_id:
        return Fate.REBOOTED
    if heartbeat is None or heartbeat.age_s >= lease_ttl_s:
        return Fate.SILENT
    return Fate.ALIVE


@dataclass(frozen=True)
class Assessment:
    """The control plane of one generation as the share shows it.

    ``fates`` maps every control node that joined etcd in the generation (its incarnation) to
    its :class:`Fate`; ``proofs`` the loss proofs that decided a FENCED or ACCEPTED fate;
    ``incarnations`` the incarnation each fate is about."""

    generation: int
    fates: Mapping[str, Fate]
    proofs: Mapping[str, LossProof] = field(default_factory=dict)
    incarnations: Mapping[str, Incarnation] = field(default_factory=dict)

    def _with(self, *fates: Fate) -> list[str]:
        return sorted(n for n, f in self.fates.items() if f in fates)

    @property
    def survivors(self) -> list[str]:
        """Members whose node heartbeats from the boot they joined in: their data is alive."""
        return self._with(Fate.ALIVE)

    @property
    def lost(self) -> list[str]:
        """Members whose data is proven gone (a new boot, a fence, an operator's acceptance)."""
        return self._with(*PROVEN)

    @property
    def silent(self) -> list[str]:
        """Members whose node is silent past the lease and nothing proves their data gone."""
        return self._with(Fate.SILENT)

    @property
    def quorum_lost(self) -> bool:
        """A majority of the members is proven to have lost its data: etcd cannot get quorum
        back by itself, and no partitioned majority can be serving."""
        return len(self.lost) > len(self.fates) // 2 if self.fates else False

    @property
    def quorum_unproven(self) -> bool:
        """No majority is alive, but not enough losses are proven to act: silent members could
        be a majority serving on the other side of a partition."""
        return bool(self.fates) and not self.quorum_lost and len(self.survivors) <= len(self.fates) // 2

    @property
    def all_lost(self) -> bool:
        """Every member's data is proven gone: only a snapshot can bring the objects back."""
        return bool(self.fates) and len(self.lost) == len(self.fates)

    def proof_of(self, node: str) -> str:
        """How ``node``'s fate is known, for sentences: ``rebooted (new boot id)``, ``fenced by
        <by> (<how>)``, ``loss accepted by <by>``, ``silent past the lease (not proven)``."""
        f = self.fates.get(node)
        proof = self.proofs.get(node)
        if f is Fate.REBOOTED:
            return "rebooted (new boot id)"
        if f is Fate.FENCED and proof is not None:
            return f"fenced by {proof.by} ({proof.how})"
        if f is Fate.ACCEPTED and proof is not None:
            return f"loss accepted by {proof.by}"
        if f is Fate.SILENT:
            return "silent past the lease (not proven gone)"
        return f.value if f else "no incarnation"

    def explain(self) -> str:
        """What is proven and what is not, as one sentence (Patroni style), e.g. ``control1,
        control2 silent past the lease, not proven gone: they may be partitioned and serving;
        control0 holds its data; proof needed: a new boot, a fence, or 'ek8s recover
        --accept-loss-of control1,control2'``."""
        parts = []
        if self.lost:
            parts.append("; ".join(f"{n} {self.proof_of(n)}" for n in self.lost))
        if self.survivors:
            many = len(self.survivors) > 1
            parts.append(f"{', '.join(self.survivors)} {'hold their' if many else 'holds its'} etcd data")
        if self.silent:
            names = ", ".join(self.silent)
            parts.append(
                f"{names} silent past the lease, not proven gone: may be partitioned and serving; proof needed: "
                f"a new boot, a fence, or 'ek8s recover --accept-loss-of {','.join(self.silent)}'"
            )
        return "; ".join(parts) or f"no etcd member of generation {self.generation} is recorded on the share"


def assess(
    generation: int,
    incarnations: Mapping[str, Incarnation],
    heartbeats: Mapping[str, Heartbeat | None],
    lease_ttl_s: float,
    proofs: Mapping[str, LossProof] | None = None,
) -> Assessment:
    """The :class:`Assessment` of ``generation`` from the share's incarnation records,
    heartbeats and loss proofs (records of other generations are ignored)."""
    proofs = proofs or {}
    fates = {
        name: fate(inc, heartbeats.get(name), lease_ttl_s, proofs.get(name))
        for name, inc in incarnations.items()
        if inc.generation == generation
    }
    used = {n: p for n, p in proofs.items() if fates.get(n) in (Fate.FENCED, Fate.ACCEPTED)}
    return Assessment(generation, fates, used, {n: incarnations[n] for n in fates})


def assess_share(store: ShareStore, generation: int, lease_ttl_s: float) -> Assessment:
    """ "Assess recovery from the share", the one place it is done (agent, Phylactery's reaper,
    ``ek8s status``): the incarnations, heartbeats (one reading of the share's clock) and loss
    proofs of ``generation``'s members. Raises what the store raises (``OSError``,
    :class:`core.share.ShareError`) when the share does not answer: nothing is decided then."""
    incarnations = store.incarnations()
    names = [n for n, i in incarnations.items() if i.generation == generation]
    heartbeats = store.heartbeats(names) if names else {}
    proofs = store.losses() if names else {}
    return assess(generation, incarnations, heartbeats, lease_ttl_s, proofs)


def reapable(
    members: Sequence[str],
    a: Assessment,
    answering: Sequence[str],
    joining: str | None = None,
) -> str | None:
    """The etcd member to remove next (by node name), or None. Only a member that does not
    answer (not in ``answering``, which etcd itself told: a TLS handshake on its client URL)
    *and* whose node's data is proven gone (:data:`PROVEN`); never a member that answers,
    whatever the share says of its node (its agent may be hung on the share); never while the
    members left would not keep a majority of answering ones (etcd's own rule: removing a
    member must not cost quorum); never ``joining``'s, the node in a control-plane join (its
    new member is listed, and silent, before its join records the new incarnation)."""
    heard = set(answering)
    lost = [m for m in members if m not in heard and m != joining and a.fates.get(m) in PROVEN]
    if not lost:
        return None
    alive = sum(1 for m in members if m in heard)
    return lost[0] if alive > (len(members) - 1) // 2 else None


def reformer(survivors: Sequence[str], indexes: Mapping[str, int | None]) -> str | None:
    """Which survivor re-forms etcd: the one with the most recent data (highest raft index it
    reported in its heartbeat), ties to the lowest name. None while a survivor has not reported
    its index yet (it will within a heartbeat interval)."""
    if not survivors or any(indexes.get(s) is None for s in survivors):
        return None
    return sorted(survivors, key=lambda s: (-(indexes[s] or 0), s))[0]
