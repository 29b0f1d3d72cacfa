"""The share store counts its operations on the share, per store (one store per node)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from core.share import OP_KINDS, OpCounters, ShareStore


@pytest.fixture
def store(tmp_path: Path) -> ShareStore:
    s = ShareStore(tmp_path, "default", "worker0")
    s.ensure()
    return s


def delta(store: ShareStore, action: Callable[[], object]) -> dict[str, int]:
    before = store.operation_counts()
    action()
    after = store.operation_counts()
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def test_snapshot_has_every_kind_and_a_total(store: ShareStore) -> None:
    counts = store.operation_counts()
    assert set(counts) == {*OP_KINDS, "total"}
    assert counts["total"] == sum(counts[k] for k in OP_KINDS) > 0  # ensure() counted
    counts["reads"] += 100  # a copy: the store's counters are unchanged
    assert store.operation_counts()["reads"] == counts["reads"] - 100


def test_a_snapshot_without_leases_is_one_read(store: ShareStore) -> None:
    assert delta(store, lambda: store.snapshot(leases=False)) == {"reads": 1, "total": 1}


def test_a_snapshot_with_leases_touches_the_probe(store: ShareStore) -> None:
    # No leader yet: cluster.json and the probe's touch (write + stat).
    assert delta(store, store.snapshot) == {"reads": 1, "writes": 1, "stats": 1, "total": 3}


def test_a_heartbeat_is_an_atomic_write_and_a_stat(store: ShareStore) -> None:
    first = delta(store, lambda: store.heartbeat("b1", "worker", "watch", 1))
    assert first == {"writes": 1, "fsyncs": 1, "renames": 1, "stats": 1, "total": 4}
    # Later beats first check nobody else rewrote the file (one more stat).
    again = delta(store, lambda: store.heartbeat("b1", "worker", "watch", 1))
    assert again == {"writes": 1, "fsyncs": 1, "renames": 1, "stats": 2, "total": 5}


def test_locks_and_events_are_counted(store: ShareStore) -> None:
    d = delta(store, lambda: store.record_event("boot", 0, "hello"))
    assert d == {"locks": 1, "writes": 1, "fsyncs": 1, "total": 3}
    d = delta(store, lambda: store.try_join_slot("b1", 30))
    assert d["locks"] == 1 and d["reads"] == 1 and d["renames"] == 1


def test_counters_are_per_store(tmp_path: Path, store: ShareStore) -> None:
    other = ShareStore(tmp_path, "default", "worker1")
    before = other.operation_counts()
    store.read_state()
    assert other.operation_counts() == before


def test_counters_are_thread_safe() -> None:
    c = OpCounters()

    def work() -> None:
        for _ in range(10_000):
            c.add(reads=1, stats=1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.snapshot() == {
        "reads": 40_000,
        "stats": 40_000,
        "writes": 0,
        "renames": 0,
        "fsyncs": 0,
        "locks": 0,
        "total": 80_000,
    }
    with pytest.raises(KeyError):
        c.add(opens=1)
