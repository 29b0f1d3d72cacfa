"""Who still holds the data, and who re-forms etcd from it (core/recovery.py)."""

from __future__ import annotations

from core.recovery import Fate, assess, fate, reformer
from core.share import Heartbeat, Incarnation

TTL = 30.0


def hb(node: str, boot: str, age: float = 1.0) -> Heartbeat:
    return Heartbeat(node=node, boot_id=boot, role="control", phase="watch", generation=1, age_s=age)


def inc(node: str, boot: str, generation: int = 1) -> Incarnation:
    return Incarnation(node=node, boot_id=boot, generation=generation, at=0.0)


def test_fate_of_one_member() -> None:
    assert fate(inc("c0", "b0"), hb("c0", "b0"), TTL) is Fate.ALIVE
    assert fate(inc("c0", "b0"), hb("c0", "b1"), TTL) is Fate.REBOOTED
    assert fate(inc("c0", "b0"), hb("c0", "b0", age=TTL), TTL) is Fate.DEAD
    assert fate(inc("c0", "b0"), None, TTL) is Fate.DEAD
    assert fate(None, hb("c0", "b0"), TTL) is Fate.UNKNOWN


def test_two_of_three_rebooted_is_quorum_lost_with_one_survivor_proven_by_boot_ids() -> None:
    a = assess(
        1,
        {n: inc(n, f"old-{n}") for n in ("c0", "c1", "c2")},
        {"c0": hb("c0", "old-c0"), "c1": hb("c1", "new-c1"), "c2": hb("c2", "new-c2")},
        TTL,
    )
    assert a.survivors == ["c0"] and a.lost == ["c1", "c2"]
    assert a.quorum_lost and not a.all_lost and a.proven_by_boot_ids


def test_one_of_three_lost_keeps_quorum() -> None:
    a = assess(
        1, {n: inc(n, n) for n in ("c0", "c1", "c2")}, {"c0": hb("c0", "c0"), "c1": hb("c1", "c1"), "c2": None}, TTL
    )
    assert a.lost == ["c2"] and not a.quorum_lost and not a.proven_by_boot_ids


def test_every_member_rebooted_is_all_lost() -> None:
    a = assess(1, {n: inc(n, n) for n in ("c0", "c1")}, {"c0": hb("c0", "x"), "c1": hb("c1", "y")}, TTL)
    assert a.all_lost and a.survivors == [] and a.proven_by_boot_ids


def test_incarnations_of_other_generations_do_not_count() -> None:
    a = assess(2, {"c0": inc("c0", "b", generation=1)}, {"c0": hb("c0", "z")}, TTL)
    assert a.fates == {} and not a.quorum_lost and not a.all_lost


def test_the_survivor_with_the_most_recent_data_reforms() -> None:
    assert reformer(["c0", "c1"], {"c0": 10, "c1": 12}) == "c1"
    assert reformer(["c0", "c1"], {"c0": 12, "c1": 12}) == "c0"
    assert reformer(["c0", "c1"], {"c0": 12}) is None, "wait until every survivor reported"
    assert reformer([], {}) is None


def test_reap_one_lost_member_at_a_time_and_only_while_quorum_holds() -> None:
    from core.recovery import reapable

    members = ["c0", "c1", "c2"]
    one_dead = assess(1, {n: inc(n, n) for n in members}, {"c0": hb("c0", "c0"), "c1": hb("c1", "c1")}, TTL)
    assert reapable(members, one_dead) == "c2", "3 members, 2 alive: removing c2 leaves 2 of 2"
    two_lost = assess(1, {n: inc(n, n) for n in members}, {"c0": hb("c0", "c0"), "c1": hb("c1", "new")}, TTL)
    assert reapable(members, two_lost) is None, "1 alive of 3: removing one leaves 1 of 2, no quorum"
    assert reapable(["c0", "c1"], one_dead) is None, "nothing lost among the listed members"
    assert reapable(members, one_dead, joining="c2") is None, "the member of a node in its join is not reaped"
    five = [f"c{i}" for i in range(5)]
    a = assess(1, {n: inc(n, n) for n in five}, {n: hb(n, n) for n in five[:3]}, TTL)
    assert reapable(five, a) == "c3" and reapable(["c0", "c1", "c2", "c4"], a) == "c4"
