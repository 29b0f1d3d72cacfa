"""``events.jsonl``: rotated under ``events.lock`` at a size bound with a few old files kept,
read across its rotations (also by a follower while it rotates), and ``ek8s events`` with
``--node``, ``--since``, ``--follow`` and ``-o json``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.share import EventCursor, ShareStore
from manager.events import format_event, parse_nodes, parse_since


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


def test_parse_since_and_nodes() -> None:
    assert parse_since("90s", 1000.0) == 910.0
    assert parse_since("2h", 10_000.0) == 10_000.0 - 7200
    assert parse_since("1d", 100_000.0) == 100_000.0 - 86400
    assert parse_since("2026-11-23T12:00:00+00:00", 0) == 1795435200.0
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("yesterday", 0)
    assert parse_nodes("worker[0-2],control1") == {"worker0", "worker1", "worker2", "control1"}
    assert parse_nodes(None) is None
    with pytest.raises(ValueError, match="not a node name or hostlist"):
        parse_nodes("worker[0-")


def test_an_event_is_one_readable_line() -> None:
    line = format_event(
        {"t": 1763784003.4125, "node": "control1", "generation": 3, "event": "leader_claimed", "message": "I lead",
         "epoch": 7, "role": "control"},
        node_width=10,
    )  # fmt: skip
    assert line.endswith(" control1   gen 3 leader_claimed I lead [epoch=7 role=control]")
    assert line[:23] == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1763784003.4125)) + ".412"


def ek8s(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manager", *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def test_ek8s_events_filters_by_node_and_time_and_prints_json(tmp_path: Path) -> None:
    for name in ("control0", "worker0", "worker1", "worker2"):
        ShareStore(tmp_path, "default", name).ensure()
        ShareStore(tmp_path, "default", name).record_event("boot", 1, f"{name} booted", boot_id="b")
    everything = ek8s("events", "--share", str(tmp_path))
    assert everything.returncode == 0, everything.stderr
    assert [line.split()[2] for line in everything.stdout.splitlines()] == ["control0", "worker0", "worker1", "worker2"]
    assert "boot worker1 booted [boot_id=b]" in everything.stdout
    some = ek8s("events", "--share", str(tmp_path), "--node", "worker[1-2]", "-o", "json")
    assert [json.loads(line)["node"] for line in some.stdout.splitlines()] == ["worker1", "worker2"]
    assert ek8s("events", "--share", str(tmp_path), "--since", "2030-01-01T00:00").stdout == ""
    assert len(ek8s("events", "--share", str(tmp_path), "--since", "10m").stdout.splitlines()) == 4


@pytest.mark.parametrize(
    ("args", "names"),
    [(["--since", "last week"], "--since: 'last week' is neither"), (["--node", "w[1-"], "--node: 'w[1-'")],
)
def test_ek8s_events_bad_input_exits_2(tmp_path: Path, args: list[str], names: str) -> None:
    ShareStore(tmp_path, "default", "x").ensure()
    res = ek8s("events", "--share", str(tmp_path), *args)
    assert res.returncode == 2 and names in res.stderr and "Traceback" not in res.stderr


def test_ek8s_events_follow_prints_what_comes_across_a_rotation(tmp_path: Path) -> None:
    store = ShareStore(tmp_path, "default", "control0")
    store.ensure()
    store.record_event("boot", 1, "before", seq=0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "manager", "events", "--share", str(tmp_path), "--follow", "-o", "json",
         "--interval", "0.1", "--node", "control0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        # Ctrl-C's SIGINT as at a terminal: a test run started in the background by a shell
        # without job control inherits it ignored, and Python then never raises
        # KeyboardInterrupt for it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["seq"] == 0
        store.events_max_bytes = 300  # the next appends rotate the file under the follower
        ShareStore(tmp_path, "default", "worker9").record_event("boot", 1, "filtered out")
        for i in range(1, 8):
            store.record_event("boot", 1, "after", seq=i)
        assert (tmp_path / "default/events.jsonl.1").exists()
        got = [json.loads(proc.stdout.readline())["seq"] for _ in range(7)]
        assert got == list(range(1, 8))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
