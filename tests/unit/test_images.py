"""Offline image archives: imported several at a time, failures reported, nothing raised."""

from __future__ import annotations

import sys
from pathlib import Path

from leader.images import import_archives

# Stand-in for `ctr images import` (tests only): records start and end, fails on "bad".
STAND_IN = """import sys, time
path = sys.argv[-1]
with open(sys.argv[1], "a") as log:
    log.write(f"start {time.monotonic()} {path}\\n")
time.sleep(0.5)
with open(sys.argv[1], "a") as log:
    log.write(f"end {time.monotonic()} {path}\\n")
if "bad" in path:
    print("ctr: unexpected EOF", file=sys.stderr)
    sys.exit(1)
"""


def test_archives_are_imported_in_parallel_and_failures_named(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for name in ("kube-apiserver", "etcd", "coredns", "bad-flannel"):
        (images / f"{name}.tar").write_bytes(b"x")
    (images / "README").write_text("not an archive")
    tool = tmp_path / "ctr.py"
    tool.write_text(STAND_IN)
    log = tmp_path / "log"
    result = import_archives(images, [sys.executable, str(tool), str(log)], workers=4)
    assert sorted(result.imported) == ["coredns.tar", "etcd.tar", "kube-apiserver.tar"]
    assert list(result.failed) == ["bad-flannel.tar"] and "unexpected EOF" in result.failed["bad-flannel.tar"]
    lines = [ln.split() for ln in log.read_text().splitlines()]
    starts = sorted(float(t) for kind, t, _ in lines if kind == "start")
    ends = sorted(float(t) for kind, t, _ in lines if kind == "end")
    assert len(starts) == 4
    assert starts[-1] < ends[0], "all four imports must overlap (serial imports were the PoC's stage 2)"


def test_no_archives_is_nothing_to_do(tmp_path: Path) -> None:
    result = import_archives(tmp_path / "missing", ["false"])
    assert (result.imported, result.failed) == ([], {})
