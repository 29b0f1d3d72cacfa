"""Snapshots are named and ordered by their data (generation, etcd revision, etcd cluster id),
never by the writer's clock (issue 19 point 4; docs/share-protocol.md, "Snapshots"): skewed
writers, retention per generation, the restore's choice, ``ek8s reset`` setting older
generations aside, names from before revisions were recorded, and names that are no
snapshot's. A real store on a temporary directory; only the writers' wall clocks are skewed."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.records import SnapshotName, snapshot_name
from core.share import ShareStore
from manager.status import snapshot_attention, snapshot_groups, snapshot_line
from phylactery.controllers.snapshot import snapshot_point

HOUR_S = 3600.0
CLUSTER = 0x8E9E05C52164694D  # an etcd cluster id (uint64)


@pytest.fixture
def store(tmp_path: Path) -> ShareStore:
    s = ShareStore(tmp_path, "default", "control0")
    s.ensure()
    assert s.rebuild("formed").generation == 1
    return s


@contextmanager
def clock_off_by(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Iterator[None]:
    """This process's wall clock ``seconds`` off (a node whose clock runs ahead or behind)."""
    real = time.time
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real() + seconds)
        yield


def save(store: ShareStore, generation: int, revision: int, keep: int = 3, cluster_id: int = CLUSTER) -> Path:
    return store.save_snapshot(generation, b"rev %d" % revision, keep, revision=revision, cluster_id=cluster_id)


def name(path: Path) -> SnapshotName:
    parsed = snapshot_name(path.name)
    assert parsed is not None, path.name
    return parsed


def events(store: ShareStore, kind: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in store.events() if e["event"] == kind]


# -- names -------------------------------------------------------------------------------------
def test_a_name_says_generation_revision_cluster_and_clock_and_round_trips() -> None:
    n = snapshot_name("gen3-r120-8e9e05c52164694d-1700000000000.db")
    assert n == SnapshotName(3, 120, "8e9e05c52164694d", 1700000000000)
    assert n.file_name() == "gen3-r120-8e9e05c52164694d-1700000000000.db"
    old = snapshot_name("gen3-1700000000000.db")
    assert old == SnapshotName(3, None, None, 1700000000000) and old.file_name() == "gen3-1700000000000.db"
    for bad in ("gen3-r12-abc-1.db", "gen03-r1-8e9e05c52164694d-1.db", "gen3-r-1.db", "gen3-latest.db", "x.db"):
        assert snapshot_name(bad) is None, bad


def test_the_revision_and_cluster_id_come_from_etcds_status_header() -> None:
    status = {"header": {"cluster_id": "10276657743932975437", "member_id": "1", "revision": "4711"}, "leader": "1"}
    assert snapshot_point(status) == (4711, 10276657743932975437)
    for header in ({}, {"revision": "7"}, {"revision": "x", "cluster_id": "1"}, {"revision": "-1", "cluster_id": "1"}):
        assert snapshot_point({"header": header}) is None, header
    assert snapshot_point({"header": []}) is None and snapshot_point({}) is None


# -- order and retention --------------------------------------------------------------------------
def test_a_writer_an_hour_ahead_or_behind_does_not_decide_which_data_is_newest(
    store: ShareStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with clock_off_by(monkeypatch, +HOUR_S):
        ahead = save(store, 1, revision=100)
    correct = save(store, 1, revision=200)
    with clock_off_by(monkeypatch, -HOUR_S):
        behind = save(store, 1, revision=300)
    # The clocks say ahead > correct > behind; the data says the opposite.
    ms = [name(p).written_ms for p in (ahead, correct, behind)]
    assert ms[0] > ms[1] > ms[2]
    assert store.snapshots() == [behind, correct, ahead]
    assert store.newest_valid_snapshot() == behind
    # One more from the correct node: retention (3) drops the oldest *data*, the hour-ahead
    # writer's, not the correct node's fresh one.
    newest = save(store, 1, revision=400)
    assert store.snapshots() == [newest, behind, correct]
    assert not ahead.exists() and not ahead.with_name(ahead.name + ".sha256").exists()
    for p in store.snapshots():
        assert p.read_bytes() == b"rev %d" % name(p).revision  # type: ignore[str-format]


def test_the_clock_only_breaks_a_tie_of_the_same_revision(store: ShareStore, monkeypatch: pytest.MonkeyPatch) -> None:
    first = save(store, 1, revision=50)
    with clock_off_by(monkeypatch, +1.0):
        second = save(store, 1, revision=50)
    assert store.snapshots() == [second, first]


def test_retention_is_per_generation_and_never_deletes_an_older_generations(
    store: ShareStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with clock_off_by(monkeypatch, +HOUR_S):  # the parent generation's writer ran ahead, too
        parent = [save(store, 1, revision=r, keep=2) for r in (10, 20)]
    child = [save(store, 2, revision=r, keep=2) for r in (20, 30, 40, 50)]
    assert store.snapshots() == [child[3], child[2], parent[1], parent[0]]
    assert all(p.exists() for p in parent), "generation 2's retention leaves generation 1 alone"
    assert not child[0].exists() and not child[1].exists()


# -- the restore's choice --------------------------------------------------------------------------
def test_a_restore_takes_the_newest_valid_of_the_highest_generation_then_the_parent(store: ShareStore) -> None:
    parent = save(store, 1, revision=900)  # a higher revision than anything of generation 2 below
    assert store.newest_valid_snapshot() == parent, "generation 2 has none yet: its parent is the lineage's newest"
    low, high = save(store, 2, revision=10), save(store, 2, revision=20)
    assert store.newest_valid_snapshot() == high, "the highest generation first, whatever the revisions say"
    high.write_bytes(b"cut")  # damaged on the share
    assert store.newest_valid_snapshot() == low
    low.with_name(low.name + ".sha256").unlink()  # incomplete
    assert store.newest_valid_snapshot() == parent


def test_names_from_before_revisions_sort_below_every_known_revision_of_their_generation(
    store: ShareStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = store.dir / "snapshots"
    d.mkdir(mode=0o700, exist_ok=True)
    future_ms = int((time.time() + HOUR_S) * 1000)
    legacy = []
    for i, ms in enumerate((future_ms, future_ms + 1)):  # written by a node an hour ahead
        p = d / f"gen1-{ms}.db"
        p.write_bytes(b"old %d" % i)
        (d / f"{p.name}.sha256").write_text(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n")
        legacy.append(p)
    assert store.snapshots() == [legacy[1], legacy[0]] and store.newest_valid_snapshot() == legacy[1]
    known = save(store, 1, revision=1)
    assert store.snapshots() == [known, legacy[1], legacy[0]]
    assert store.newest_valid_snapshot() == known
    assert [name(p).revision for p in store.snapshots()] == [1, None, None]
    save(store, 1, revision=2)
    save(store, 1, revision=3)
    assert not legacy[0].exists() and not legacy[1].exists(), "retention drops the old names first"


def test_names_that_are_no_snapshots_are_reported_and_never_restored(store: ShareStore) -> None:
    good = save(store, 1, revision=5)
    d = store.dir / "snapshots"
    for bad in ("gen1-r9-nothex-1.db", "gen1-newest.db", "gen01-r9-8e9e05c52164694d-1.db"):
        (d / bad).write_bytes(b"not ours")
    assert store.snapshots() == [good] and store.newest_valid_snapshot() == good
    got = {(e["file"], e["field"]) for e in events(store, "invalid_record")}
    assert got == {
        ("snapshots/gen1-r9-nothex-1.db", "name"),
        ("snapshots/gen1-newest.db", "name"),
        ("snapshots/gen01-r9-8e9e05c52164694d-1.db", "name"),
    }


# -- a generation from nothing sets the older ones aside -------------------------------------------
def test_reset_sets_older_generations_aside_with_their_companions_and_status_lists_them(store: ShareStore) -> None:
    g1 = [store.save_snapshot(1, b"g1 %d" % r, 5, revision=r, cluster_id=CLUSTER, secret="k3s-token") for r in (1, 2)]
    store.rebuild("ek8s reset by alice")  # generation 2, from nothing
    assert store.snapshots() == [] and store.newest_valid_snapshot() is None, "never restored silently"
    old = store.snapshots(set_aside=True)
    assert [p.name for p in old] == [g1[1].name, g1[0].name]
    for p, src in zip(old, (g1[1], g1[0]), strict=True):
        assert p.parent == store.dir / "snapshots/old" and not src.exists()
        assert p.read_bytes() == b"g1 %d" % name(p).revision  # type: ignore[str-format]
        assert store.snapshot_secret(p) == "k3s-token", "the .db.token moves with its snapshot"
        assert p.with_name(p.name + ".sha256").read_text().split()[1] == p.name
    [ev] = events(store, "snapshots_set_aside")
    assert ev["count"] == 2 and ev["generation"] == 2 and "snapshots/old/" in ev["message"]
    # Generation 2 snapshots, then is lost with none left valid: nothing of generation 1 comes back.
    g2 = save(store, 2, revision=7)
    g2.with_name(g2.name + ".sha256").unlink()
    assert store.newest_valid_snapshot() is None
    # What status shows: per generation, the count and the newest by revision.
    now = store.share_now()
    doc = {"snapshots": {"lineage": snapshot_groups(store.snapshot_listing(), now),
                         "set_aside": snapshot_groups(store.snapshot_listing(set_aside=True), now)}}  # fmt: skip
    assert [(g["generation"], g["count"], g["revision"]) for g in doc["snapshots"]["lineage"]] == [(2, 1, 7)]
    assert [(g["generation"], g["count"], g["revision"], g["newest"]) for g in doc["snapshots"]["set_aside"]] == [
        (1, 2, 2, g1[1].name)
    ]
    line = snapshot_line(doc)
    assert line is not None and line.startswith("etcd snapshots: gen 2: 1 (newest revision 7,")
    assert "set aside in snapshots/old/ (never restored by themselves): gen 1: 2 (newest revision 2," in line


def test_a_restored_generation_keeps_its_parent_and_sets_nothing_aside(store: ShareStore) -> None:
    parent = save(store, 1, revision=40)
    state = store.start_generation("cluster lost", expected=1, restore_from=parent)
    assert state is not None and state.generation == 2
    assert store.snapshots() == [parent] and store.snapshots(set_aside=True) == []
    assert events(store, "snapshots_set_aside") == []


def test_status_names_a_generation_whose_snapshots_come_from_two_etcd_clusters(store: ShareStore) -> None:
    save(store, 1, revision=10)
    lineage = snapshot_groups(store.snapshot_listing(), store.share_now())
    assert snapshot_attention(lineage) == []
    other = save(store, 1, revision=12, cluster_id=0x1234)
    lineage = snapshot_groups(store.snapshot_listing(), store.share_now())
    assert lineage[0]["cluster_ids"] == ["0000000000001234", f"{CLUSTER:016x}"]
    [item] = snapshot_attention(lineage)
    ids = f"0000000000001234, {CLUSTER:016x}"
    assert item["problem"] == f"generation 1's snapshots come from 2 etcd clusters ({ids}): two clusters wrote them"
    assert other.name in item["heals"]
