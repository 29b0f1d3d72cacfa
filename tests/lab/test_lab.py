"""The lab's own commands: ``down`` with no lab, ``bench`` against a small lab; how ``down``
finds and stops the processes of its namespaces. Booting 3 + 2
with ``ek8s lab up`` and what the operator sees of it are the first steps of the fault tour
(test_faults.py), which boots that lab anyway."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netns
from tests.conftest import wait_for
from tests.lab.kit import lab_processes

PREFIX = "ek8st"


def ek8s(lab_dir: Path, *args: str, timeout: float = 240, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    cmd = [sys.executable, "-m", "manager", "lab", "--dir", str(lab_dir), "--prefix", PREFIX, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture
def lab_dir() -> Iterator[Path]:
    d = Path(f"/run/{PREFIX}-{uuid.uuid4().hex[:8]}")  # short: UNIX socket paths live below it
    try:
        yield d
    finally:
        res = ek8s(d, "down", timeout=120)
        assert res.returncode == 0, res.stderr
        assert netns.existing(PREFIX) == []
        assert lab_processes(d) == []
        assert not d.exists()
        assert not list(Path("/etc/netns").glob(f"{PREFIX}-*"))


def test_lab_refuses_a_second_lab_and_down_is_idempotent(lab_dir: Path) -> None:
    assert ek8s(lab_dir, "down").returncode == 0
    res = ek8s(lab_dir, "status")
    assert res.returncode == 1 and "no lab" in res.stderr


@pytest.mark.lab
def test_bench_two_runs_against_the_lab_writes_csv_and_png(lab_dir: Path, tmp_path: Path) -> None:
    from manager.bench import COLUMNS, read_csv

    res = ek8s(lab_dir, "up", "--control", "1", "--workers", "1", "--timeout", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "bench"
    res = ek8s(lab_dir, "bench", "--runs", "2", "--out", str(out), "--timeout", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "deployment-times.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    rows = read_csv(out / "deployment-times.csv")
    assert len(rows) == 2
    for row in rows:
        assert all(v >= 0 for v in row) and row[0] > 0 and row[4] > 0
        assert abs(sum(row[:5]) - row[5]) < 0.01
    assert (out / "deployment-times.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Aggregated" in res.stdout and "PoC" in res.stdout
    # Each run was a rebuild: generation 1 from `up`, then one per run; the cluster is whole.
    state = json.loads((lab_dir / "share" / "default" / "cluster.json").read_text())
    assert state["generation"] == 3 and state["ready"]
    status = ek8s(lab_dir, "status")
    assert status.returncode == 0, status.stdout + status.stderr


@pytest.mark.lab
def test_the_processes_of_several_namespaces_are_found_as_ip_finds_them_and_stopped_together() -> None:
    """``down`` stops every namespace's processes at once (:func:`lab.netns.kill_all_in`),
    finding them in one pass over /proc (:func:`lab.netns.pids_in`): the same processes as
    ``ip netns pids`` lists, none of another namespace, and none left afterwards."""
    names = [f"{PREFIX}-pids{i}" for i in range(2)]
    procs = []
    try:
        for ns in names:
            netns.ip("netns", "add", ns)
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "600"]))
        wait_for(lambda: all(netns.pids(ns) for ns in names), 10, 0.05, "a process in each namespace")
        assert sorted(netns.pids_in(names)) == sorted(p.pid for p in procs)
        assert [netns.pids_in([ns]) for ns in names] == [netns.pids(ns) for ns in names] == [[p.pid] for p in procs]
        assert netns.pids_in([f"{PREFIX}-none"]) == []
        assert netns.kill_all_in(names) == 2
        assert netns.pids_in(names) == [] and [p.wait(5) for p in procs] == [-15, -15], "ended by the SIGTERM"
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for ns in names:
            netns.ip("netns", "delete", ns, check=False)
    assert netns.existing(PREFIX) == []
