#!/usr/bin/env python3
"""Compare this checkout with another (a baseline commit) on the lab: formation and rejoin.

Runs alternate between the two checkouts (baseline, ours, baseline, ours...), so that noise on
a busy machine falls on both alike, and prints medians with the ratio ours / baseline.
Each checkout runs its own scripts with its own ``.venv``:

    git worktree add /tmp/ek8s-base <commit> && (cd /tmp/ek8s-base && python3 -m venv .venv &&
        .venv/bin/pip install -q -e '.[dev]')
    .venv/bin/python scripts/bench_compare.py --baseline /tmp/ek8s-base --runs 5

Formation: one ``scripts/bench_lab.py --runs 1`` per run (3 control + 2 workers from nothing).
Rejoin: one ``scripts/bench_faults.py --only reboot --reboots N`` per checkout (N reboots of a
control node and of a worker, each from the reboot to Ready).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

OURS = Path(__file__).resolve().parents[1]
STAGES = ("leader_claimed_s", "api_ready_s", "leader_ready_s", "all_nodes_ready_s")


def run(checkout: Path, script: str, args: list[str], out: Path, timeout_s: float) -> dict[str, Any]:
    """Run ``checkout/scripts/<script>`` with that checkout's interpreter; returns its JSON."""
    argv = [str(checkout / ".venv/bin/python"), str(checkout / "scripts" / script), *args, "--json", str(out)]
    res = subprocess.run(argv, cwd=checkout, capture_output=True, text=True, timeout=timeout_s)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {res.returncode}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return dict(json.loads(out.read_text()))


def line(name: str, base: list[float], ours: list[float]) -> str:
    b, o = statistics.median(base), statistics.median(ours)
    return f"{name:<34} {b:9.3f} {o:9.3f} {o / b if b else float('nan'):7.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="the other checkout (with its own .venv)")
    p.add_argument("--runs", type=int, default=5, help="formations per checkout")
    p.add_argument("--reboots", type=int, default=5, help="reboots per role per checkout (0: skip)")
    p.add_argument("--json", type=Path, default=Path("bench-compare.json"))
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ek8s-compare-"))
    formation: dict[str, list[dict[str, Any]]] = {"baseline": [], "ours": []}
    for i in range(args.runs):
        for label, checkout in (("baseline", args.baseline.resolve()), ("ours", OURS)):
            report = run(checkout, "bench_lab.py", ["--runs", "1"], tmp / f"{label}-{i}.json", 900)["reports"][0]
            formation[label].append(report)
            print(f"formation {i + 1}/{args.runs} {label}: {report['all_nodes_ready_s']}s", file=sys.stderr, flush=True)
    rejoin: dict[str, dict[str, Any]] = {}
    if args.reboots:
        for label, checkout in (("baseline", args.baseline.resolve()), ("ours", OURS)):
            rejoin[label] = run(
                checkout,
                "bench_faults.py",
                ["--only", "reboot", "--reboots", str(args.reboots)],
                tmp / f"r-{label}.json",
                1800,
            )
            print(f"rejoin {label}: {json.dumps(rejoin[label])[:300]}", file=sys.stderr, flush=True)
    print(f"\n{'median (s)':<34} {'baseline':>9} {'ours':>9} {'ratio':>7}")
    for stage in STAGES:
        print(line(stage, [r[stage] for r in formation["baseline"]], [r[stage] for r in formation["ours"]]))
    for role in ("control", "worker"):
        if rejoin:
            b, o = (rejoin[k]["reboot"][role]["median"] for k in ("baseline", "ours"))
            print(f"{'rejoin ' + role + ' (median of ' + str(args.reboots) + ')':<34} {b:9.3f} {o:9.3f} {o / b:7.2f}")
    args.json.write_text(json.dumps({"formation": formation, "rejoin": rejoin}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
