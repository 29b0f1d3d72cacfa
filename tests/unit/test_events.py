"""``events.jsonl``: rotated under ``events.lock`` at a size bound with a few old files kept,
read across its rotations (also by a follower while it rotates)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from core.share import EventCursor, ShareStore


def small(tmp_path: Path, node: str = "control0", max_bytes: int = 600, keep: int = 2) -> ShareStore:
    store = ShareStore(tmp_path, "default", node)
    store.ensure()
    store.events_max_bytes = max_bytes
    store.events_keep = keep
    return store


def sequence(events: list[dict[str, object]]) -> list[int]:
    return [int(e["seq"]) for e in events]  # type: ignore[call-overload]


def test_the_timeline_rotates_at_its_size_bound_and_keeps_a_few_files(tmp_path: Path) -> None:
    store = small(tmp_path)
    for i in range(100):
        store.record_event("boot", 1, "x" * 20, seq=i)
    d = tmp_path / "default"
    if not (d / "events.jsonl").exists():  # the 100th event happened to fill it: rotated at once
        store.record_event("boot", 1, "x" * 20, seq=100)
    files = sorted(p.name for p in d.glob("events.jsonl*"))
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]  # keep=2 old files, no .3
    for rotated in ("events.jsonl.1", "events.jsonl.2"):
        assert (d / rotated).stat().st_size >= 600  # each was rotated at the bound, not before
    assert (d / "events.jsonl").stat().st_size < 600
    assert oct((d / "events.jsonl.1").stat().st_mode & 0o777) == "0o600"
    kept = store.events()
    last = sequence(kept)[-1]
    # What is kept is the newest part of the timeline, whole and in order.
    assert last in (99, 100) and sequence(kept) == list(range(last + 1 - len(kept), last + 1))
    lines = sum(len((d / f).read_text().splitlines()) for f in files)
    assert len(kept) == lines


def test_rotation_costs_nothing_until_the_bound(tmp_path: Path) -> None:
    store = small(tmp_path, max_bytes=10_000)
    before = store.operation_counts()
    store.record_event("boot", 1)
    after = store.operation_counts()
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {
        "locks": 1,
        "writes": 1,
        "fsyncs": 1,
        "total": 3,
    }


def test_since_skips_what_is_older(tmp_path: Path) -> None:
    store = small(tmp_path, max_bytes=10_000)
    for i in range(5):
        store.record_event("boot", 1, seq=i)
    cut = time.time()
    time.sleep(0.01)
    for i in range(5, 8):
        store.record_event("boot", 1, seq=i)
    assert sequence(store.events(since=cut)) == [5, 6, 7]


def test_a_line_being_written_is_left_for_the_next_read(tmp_path: Path) -> None:
    store = small(tmp_path, max_bytes=10_000)
    store.record_event("boot", 1, seq=0)
    with open(store.events_path, "a") as f:
        f.write('{"t": 1, "node": "x", "seq": 1')  # no newline yet
    found, cursor = store.read_events()
    assert sequence(found) == [0]
    with open(store.events_path, "a") as f:
        f.write(', "event": "boot", "generation": 1, "message": ""}\n')
    found, cursor = store.read_events(cursor)
    assert sequence(found) == [1]
    assert store.read_events(cursor)[0] == []


def test_a_follower_misses_nothing_while_the_file_rotates(tmp_path: Path) -> None:
    writer = small(tmp_path, max_bytes=2_000, keep=50)
    reader = ShareStore(tmp_path, "default", "operator")
    total = 1500
    done = threading.Event()

    def write() -> None:
        for i in range(total):
            writer.record_event("boot", 1, seq=i)
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen: list[dict[str, object]] = []
    cursor = EventCursor()
    while not done.is_set() or len(seen) < total:
        found, cursor = reader.read_events(cursor)
        seen += found
        if done.is_set() and not found:
            break
    thread.join()
    assert len(list((tmp_path / "default").glob("events.jsonl.*"))) > 5  # it did rotate, many times
    assert sequence(seen) == list(range(total))
