"""Who still holds the data, what proves the rest gone, and who re-forms etcd (core/recovery.py).

Silence is not proof: a node silent past the lease may be cut off by a partition while its etcd
member serves a majority with its peers (issue 19). Only a new boot id, a fence record or an
operator's recorded acceptance proves a member's data gone.
"""

from __future__ import annotations

from pathlib import Path

from core.recovery import Fate, assess, assess_share, fate, reapable, reformer
from core.share import Heartbeat, Incarnation, LossProof, ShareStore

TTL = 30.0


def hb(node: str, boot: str, age: float = 1.0) -> Heartbeat:
    return Heartbeat(node=node, boot_id=boot, role="control", phase="watch", generation=1, age_s=age)


def inc(node: str, boot: str, generation: int = 1, at: float = 0.0) -> Incarnation:
    return Incarnation(node=node, boot_id=boot, generation=generation, at=at)


def proof(i: Incarnation, kind: str = "accepted", by: str = "alice") -> LossProof:
    how = "ek8s recover --accept-loss-of" if kind == "accepted" else f"wwctl power cycle {i.node}"
    return LossProof(
        node=i.node, boot_id=i.boot_id, generation=i.generation, incarnation_at=i.at, kind=kind, by=by, how=how, at=5.0
    )


def test_fate_of_one_member() -> None:
    i = inc("c0", "b0")
    assert fate(i, hb("c0", "b0"), TTL) is Fate.ALIVE
    assert fate(i, hb("c0", "b1"), TTL) is Fate.REBOOTED
    assert fate(i, hb("c0", "b1", age=3 * TTL), TTL) is Fate.REBOOTED, "a new boot is proof at any age"
    assert fate(i, hb("c0", "b0", age=TTL), TTL) is Fate.SILENT, "silence past the lease is not proof"
    assert fate(i, None, TTL) is Fate.SILENT
    assert fate(None, hb("c0", "b0"), TTL) is Fate.UNKNOWN
    assert fate(i, None, TTL, proof(i, "fenced")) is Fate.FENCED
    assert fate(i, hb("c0", "b0"), TTL, proof(i)) is Fate.ACCEPTED, "a recorded loss wins: that node must stop"


def test_a_proof_covers_only_the_incarnation_it_names() -> None:
    old = inc("c0", "b0", at=100.0)
    rejoined = inc("c0", "b0", at=200.0)  # rejoined within the same boot after the loss
    assert fate(rejoined, hb("c0", "b0"), TTL, proof(old)) is Fate.ALIVE
    assert fate(inc("c0", "b0", generation=2, at=100.0), hb("c0", "b0"), TTL, proof(old)) is Fate.ALIVE
    assert fate(inc("c0", "b9", at=100.0), None, TTL, proof(old)) is Fate.SILENT


def test_two_of_three_rebooted_is_quorum_lost_with_one_survivor() -> None:
    a = assess(
        1,
        {n: inc(n, f"old-{n}") for n in ("c0", "c1", "c2")},
        {"c0": hb("c0", "old-c0"), "c1": hb("c1", "new-c1"), "c2": hb("c2", "new-c2")},
        TTL,
    )
    assert a.survivors == ["c0"] and a.lost == ["c1", "c2"] and a.silent == []
    assert a.quorum_lost and not a.all_lost and not a.quorum_unproven


def test_a_partitioned_majority_is_silent_not_lost() -> None:
    """{c0 + the share} | {c1, c2}: c1 and c2 keep quorum between them and serve; the share only
    sees them fall silent. Nothing may re-form from c0 on that."""
    incs = {n: inc(n, n) for n in ("c0", "c1", "c2")}
    a = assess(1, incs, {"c0": hb("c0", "c0"), "c1": hb("c1", "c1", 3 * TTL), "c2": None}, TTL)
    assert a.survivors == ["c0"] and a.silent == ["c1", "c2"] and a.lost == []
    assert not a.quorum_lost and a.quorum_unproven and not a.all_lost
    assert a.explain() == (
        "c0 holds its etcd data; c1, c2 silent past the lease, not proven gone: may be partitioned and serving; "
        "proof needed: a new boot, a fence, or 'ek8s recover --accept-loss-of c1,c2'"
    )


def test_fences_and_an_operators_acceptance_prove_the_loss() -> None:
    incs = {n: inc(n, n) for n in ("c0", "c1", "c2")}
    proofs = {"c1": proof(incs["c1"], "fenced", by="fence@ww0"), "c2": proof(incs["c2"], by="alice")}
    a = assess(1, incs, {"c0": hb("c0", "c0"), "c1": None, "c2": None}, TTL, proofs)
    assert a.fates == {"c0": Fate.ALIVE, "c1": Fate.FENCED, "c2": Fate.ACCEPTED}
    assert a.quorum_lost and a.lost == ["c1", "c2"]
    assert a.explain() == (
        "c1 fenced by fence@ww0 (wwctl power cycle c1); c2 loss accepted by alice; c0 holds its etcd data"
    )


def test_every_member_rebooted_is_all_lost_but_one_silent_is_not() -> None:
    a = assess(1, {n: inc(n, n) for n in ("c0", "c1")}, {"c0": hb("c0", "x"), "c1": hb("c1", "y")}, TTL)
    assert a.all_lost and a.survivors == []
    b = assess(1, {n: inc(n, n) for n in ("c0", "c1")}, {"c0": hb("c0", "x"), "c1": None}, TTL)
    assert not b.all_lost and b.silent == ["c1"] and b.lost == ["c0"]


def test_incarnations_of_other_generations_do_not_count() -> None:
    a = assess(2, {"c0": inc("c0", "b", generation=1)}, {"c0": hb("c0", "z")}, TTL)
    assert a.fates == {} and not a.quorum_lost and not a.all_lost and not a.quorum_unproven
    assert a.explain() == "no etcd member of generation 2 is recorded on the share"


def test_assess_share_reads_incarnations_heartbeats_and_loss_proofs(tmp_path: Path) -> None:
    stores = {n: ShareStore(tmp_path, "default", n) for n in ("c0", "c1", "c2")}
    for n, s in stores.items():
        s.ensure()
        s.heartbeat(f"b-{n}", "control", "watch", 1)
        s.record_incarnation(f"b-{n}", 1)
    operator = ShareStore(tmp_path, "default", "operator")
    c2 = operator.incarnations()["c2"]
    operator.record_loss(proof(c2))
    a = assess_share(operator, 1, TTL)
    assert a.fates == {"c0": Fate.ALIVE, "c1": Fate.ALIVE, "c2": Fate.ACCEPTED}
    assert a.proofs["c2"].by == "alice"
    # A loss proof filed under another node's name proves nothing (reported, skipped).
    (operator.dir / "losses" / "c1.json").write_text((operator.dir / "losses" / "c2.json").read_text())
    assert assess_share(operator, 1, TTL).fates["c1"] is Fate.ALIVE


def test_the_survivor_with_the_most_recent_data_reforms() -> None:
    assert reformer(["c0", "c1"], {"c0": 10, "c1": 12}) == "c1"
    assert reformer(["c0", "c1"], {"c0": 12, "c1": 12}) == "c0"
    assert reformer(["c0", "c1"], {"c0": 12}) is None, "wait until every survivor reported"
    assert reformer([], {}) is None


MEMBERS = ["c0", "c1", "c2"]


def test_reap_only_a_silent_member_proven_gone_and_only_while_quorum_holds() -> None:
    incs = {n: inc(n, n) for n in MEMBERS}
    c2_rebooted = assess(1, incs, {"c0": hb("c0", "c0"), "c1": hb("c1", "c1"), "c2": hb("c2", "new")}, TTL)
    assert reapable(MEMBERS, c2_rebooted, answering=["c0", "c1"]) == "c2"
    assert reapable(MEMBERS, c2_rebooted, answering=MEMBERS) is None, "a member that answers is never removed"
    assert reapable(MEMBERS, c2_rebooted, answering=["c0"]) is None, "1 answering of 3: removing one loses quorum"
    assert reapable(MEMBERS, c2_rebooted, ["c0", "c1"], joining="c2") is None, "never the joining node's member"
    c2_silent = assess(1, incs, {"c0": hb("c0", "c0"), "c1": hb("c1", "c1"), "c2": None}, TTL)
    assert reapable(MEMBERS, c2_silent, answering=["c0", "c1"]) is None, "silence is not proof"
    five = [f"c{i}" for i in range(5)]
    a = assess(1, {n: inc(n, n) for n in five}, {n: hb(n, n if n < "c3" else "new") for n in five}, TTL)
    assert reapable(five, a, five[:3]) == "c3" and reapable(["c0", "c1", "c2", "c4"], a, five[:3]) == "c4"


def test_reap_with_mixed_answers_removes_nothing_alive() -> None:
    """The issue's example: c1 blips for a second (etcd does not answer, its node heartbeats), c2
    answers but its agent is stuck on NFS (its heartbeat ages past the lease). Today's rule took
    c2 (the share said dead, and c0 + c1 were 'alive'); c2 answers, c1 is alive: nothing goes."""
    incs = {n: inc(n, n) for n in MEMBERS}
    a = assess(1, incs, {"c0": hb("c0", "c0"), "c1": hb("c1", "c1"), "c2": hb("c2", "c2", age=2 * TTL)}, TTL)
    assert reapable(MEMBERS, a, answering=["c0", "c2"]) is None
    # Even with c2's loss recorded, a member that answers stays (its node must reset first).
    b = assess(1, incs, {"c0": hb("c0", "c0"), "c1": hb("c1", "c1"), "c2": None}, TTL, {"c2": proof(incs["c2"])})
    assert reapable(MEMBERS, b, answering=["c0", "c2"]) is None
