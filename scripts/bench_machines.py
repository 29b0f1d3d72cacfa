#!/usr/bin/env python3
"""Benchmark machines beside processes: N runs per mode of `ek8s lab up` 3 + 2 from nothing,
then `ek8s lab reboot control1 worker0` (machines: `systemctl reboot` inside; processes: the
lab's stop, wipe and start), torn down after each run.

Prints medians (p90, max) of ``all_nodes_ready_s`` (every node Ready, seconds since the lab
started the agents or the machines) and of ``rejoin_s`` (machines: from the reboot command,
so shutdown and systemd's start are in; processes: from the new start), plus the reboot
command's wall time. Run it on a quiet machine, with the image built.

    .venv/bin/python scripts/bench_machines.py --runs 5 [--modes machines,processes]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LAB = ["--dir", "/run/ek8s-benchm", "--prefix", "ek8sbm"]


def ek8s(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``ek8s lab ARGS`` on the bench's own lab, output captured; exits the script after
    ``timeout`` seconds."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "manager", "lab", *LAB, *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"ek8s lab {' '.join(args)}: not finished after {timeout:.0f}s") from None


def one_run(mode: str, out: Path) -> dict[str, float]:
    """One formation and one reboot of control1 + worker0 in ``mode`` ("machines" or
    "processes"); returns ``{"all_nodes_ready_s", "rejoin_s", "reboot_wall_s", "down_s"}``
    (seconds). Exits the script when a step fails."""
    ek8s("down", timeout=180)
    try:
        res = ek8s("up", f"--{mode}", "--json", str(out), "--timeout", "300")
        if res.returncode != 0:
            raise SystemExit(f"{mode}: lab up failed:\n{res.stdout}\n{res.stderr}")
        up = json.loads(out.read_text())
        started = time.monotonic()
        res = ek8s("reboot", "control1", "worker0", "--json", str(out), "--timeout", "300")
        wall = time.monotonic() - started
        if res.returncode != 0:
            raise SystemExit(f"{mode}: lab reboot failed:\n{res.stdout}\n{res.stderr}")
        rb = json.loads(out.read_text())
    finally:
        started = time.monotonic()
        ek8s("down", timeout=180)
        down = time.monotonic() - started
    return {
        "all_nodes_ready_s": up["all_nodes_ready_s"],
        "rejoin_s": rb["rejoin_s"],
        "reboot_wall_s": round(wall, 3),
        "down_s": round(down, 3),
    }


def main() -> int:
    """Run the benchmark, print the table, write the runs to ``--json``; returns 0."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--modes", default="machines,processes")
    p.add_argument("--json", type=Path, default=Path("bench-machines.json"))
    args = p.parse_args()
    results: dict[str, list[dict[str, Any]]] = {}
    for i in range(args.runs):
        for mode in args.modes.split(","):
            r = one_run(mode, Path(f"/tmp/ek8s-benchm-{mode}-{i}.json"))
            results.setdefault(mode, []).append(r)
            print(f"{mode} run {i + 1}/{args.runs}: {r}", file=sys.stderr, flush=True)
    print(f"\n{args.runs} runs per mode, 3 control + 2 workers (medians; p90, max)")
    for key in ("all_nodes_ready_s", "rejoin_s", "reboot_wall_s", "down_s"):
        for mode, runs in results.items():
            values = sorted(r[key] for r in runs)
            p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
            print(f"  {key:<20} {mode:<10} {statistics.median(values):8.3f} ({p90:.3f}, {max(values):.3f})")
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
