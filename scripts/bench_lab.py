#!/usr/bin/env python3
"""Benchmark the lab's boot from nothing: N runs of `ek8s lab up` (torn down after each).

Prints medians (and p90/max) of the report's stages and a breakdown of where the seconds
go, computed from the events every agent wrote to the share. Speed is measured here, never in
a timed test: run it on a quiet machine and compare medians, not single runs.

    .venv/bin/python scripts/bench_lab.py --runs 5
    .venv/bin/python scripts/bench_lab.py --runs 3 --init-seconds 11 --join-seconds 10
    .venv/bin/python scripts/bench_lab.py --runs 5 --distribution k3s

(scripts/bench_distributions.py runs kubeadm and k3s side by side, formation and rejoins.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

LAB = ["--dir", "/run/ek8s-bench", "--prefix", "ek8sb"]


def ek8s(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``ek8s lab ARGS`` on the bench's own lab (``/run/ek8s-bench``, namespaces ``ek8sb-*``),
    output captured. Exits the script (``SystemExit``) when it runs over ``timeout`` seconds."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "manager", "lab", *LAB, *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"ek8s lab {' '.join(args)}: not finished after {timeout:.0f}s") from None


def one_run(
    control: int,
    workers: int,
    init_s: float,
    join_s: float,
    out: Path,
    distribution: str = "kubeadm",
    fork_server: bool = True,
) -> dict[str, Any]:
    """One ``ek8s lab up --distribution D`` from nothing (emulated init and join durations
    ``init_s`` and ``join_s`` seconds; ``--no-fork-server`` unless ``fork_server``); returns its
    report (docs/lab.md), also written to ``out``. The lab is removed before and after. Exits
    the script when ``up`` fails."""
    ek8s("down", timeout=120)
    try:
        res = ek8s(
            "up",
            "--control",
            str(control),
            "--workers",
            str(workers),
            "--json",
            str(out),
            "--init-seconds",
            str(init_s),
            "--join-seconds",
            str(join_s),
            "--timeout",
            "300",
            "--distribution",
            distribution,
            "--fork-server" if fork_server else "--no-fork-server",
        )
        if res.returncode != 0:
            raise SystemExit(f"lab up failed:\n{res.stdout}\n{res.stderr}")
        return dict(json.loads(out.read_text()))
    finally:
        ek8s("down", timeout=120)


def breakdown(r: dict[str, Any]) -> dict[str, float]:
    """Where the seconds of one run went (see docs/benchmarks.md for each line)."""
    ev = r["events"]

    def times(name: str, node: str | None = None) -> list[float]:
        return [e["t"] for e in ev if e["event"] == name and (node is None or e["node"] == node)]

    leader = r["leader"]
    api = next(e for e in ev if e["event"] == "api_ready")
    joins = [e for e in ev if e["event"] == "joined"]
    roles = {n["name"]: n["role"] for n in r["nodes"]}
    cp_started = sorted(
        (e["t"], e["node"]) for e in ev if e["event"] == "join_started" and roles[e["node"]] == "control"
    )
    cp_joined = sorted((e["t"], e["node"]) for e in joins if roles[e["node"]] == "control")
    first_start = min(e["t"] for e in ev if e["event"] == "join_started")
    out = {
        "agent_start_s (python start of an agent, median node)": statistics.median(
            min(times("boot", n["name"])) for n in r["nodes"]
        ),
        "election_s (boot -> leader_claimed)": r["leader_claimed_s"] - min(times("boot", leader)),
        "kubeadm_init_s (emulated command, incl. etcd + apiserver start)": api["kubeadm_s"],
        "after_init_s (api_ready - claim - kubeadm init: VIP wait)": r["api_ready_s"]
        - r["leader_claimed_s"]
        - api["kubeadm_s"],
        "publish_s (api_ready -> leader_ready)": r["leader_ready_s"] - r["api_ready_s"],
        "notice_ready_s (leader_ready -> first join_started)": first_start - r["leader_ready_s"],
        "worker_join_s (kubeadm join, median)": statistics.median(
            [e["kubeadm_s"] for e in joins if roles[e["node"]] == "worker"] or [0.0]
        ),
        "control_join_s (kubeadm join, median)": statistics.median(
            [e["kubeadm_s"] for e in joins if roles[e["node"]] == "control"] or [0.0]
        ),
        "slot_handoff_s (control joined -> next control join_started)": statistics.median(
            [s - j for (j, _), (s, _) in zip(cp_joined, cp_started[1:], strict=False)] or [0.0]
        ),
        "ready_after_join_s (joined -> node_ready, median)": statistics.median(
            [min(times("node_ready", e["node"])) - e["t"] for e in joins]
        ),
    }
    firsts = [e["first_share_op_s"] for e in ev if e["event"] == "boot" and e.get("first_share_op_s") is not None]
    if firsts:  # agents that report it (issue 23)
        out["first_share_op_s (agent process start -> first share operation, median node)"] = statistics.median(firsts)
    for role in ("control", "worker"):
        cpu = [
            e["cpu_s"]
            for e in ev
            if e["event"] == "node_ready" and e.get("cpu_s") is not None and roles[e["node"]] == role
        ]
        if cpu:
            out[f"agent_cpu_to_ready_s ({role}, median node)"] = statistics.median(cpu)
    return {k: round(v, 3) for k, v in out.items()}


def kubeadm_phases(reports: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """``{"init" | "join control (1st)" | "join control (2nd)" | "join worker": {phase: [s, ...]}}``."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in reports:
        roles = {n["name"]: n["role"] for n in r["nodes"]}
        control_joins = 0
        for t in sorted(r.get("emulated_kubeadm", []), key=lambda t: t["t"]):
            if not t["ok"] or t["command"] not in ("init", "join"):
                continue
            if t["command"] == "init":
                kind = "init"
            elif roles.get(t["node"]) == "control":
                control_joins += 1
                kind = f"join control (#{control_joins})"
            else:
                kind = "join worker"
            for phase, seconds in t["phases"].items():
                out.setdefault(kind, {}).setdefault(phase, []).append(seconds)
    return out


def summarize(values: list[float]) -> str:
    """Median, p90 (the sorted value at 90 % of the way, index rounded) and max of ``values``
    (seconds), as three 8-wide columns."""
    values = sorted(values)
    p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
    return f"{statistics.median(values):8.3f} {p90:8.3f} {max(values):8.3f}"


def main() -> int:
    """Run the benchmark (arguments in the module's docstring), print the tables, write every
    report and breakdown to ``--json``; returns 0. Needs root, as ``ek8s lab``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--control", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--init-seconds", type=float, default=0.0)
    p.add_argument("--join-seconds", type=float, default=0.0)
    p.add_argument("--distribution", choices=["kubeadm", "k3s"], default="kubeadm")
    p.add_argument("--json", type=Path, default=Path("bench-lab.json"), help="all reports and the summary")
    p.add_argument("--no-fork-server", action="store_true", help="labs without the fork server for the emulated tools")
    args = p.parse_args()
    reports = []
    for i in range(args.runs):
        out = Path(f"/tmp/ek8s-bench-{i}.json")
        r = one_run(
            args.control,
            args.workers,
            args.init_seconds,
            args.join_seconds,
            out,
            args.distribution,
            not args.no_fork_server,
        )
        reports.append(r)
        print(f"run {i + 1}/{args.runs}: all_nodes_ready_s={r['all_nodes_ready_s']}", file=sys.stderr, flush=True)
    stages = ["leader_claimed_s", "api_ready_s", "leader_ready_s", "all_nodes_ready_s"]
    print(
        f"\n{args.runs} runs, {args.control} control + {args.workers} workers, {args.distribution}, emulated init "
        f"{args.init_seconds:g} s, join {args.join_seconds:g} s"
    )
    print(f"{'stage (s since agents started)':<66} {'median':>8} {'p90':>8} {'max':>8}")
    for s in stages:
        print(f"{s:<66} {summarize([r[s] for r in reports])}")
    print(f"\n{'where the seconds go':<66} {'median':>8} {'p90':>8} {'max':>8}")
    parts = [breakdown(r) for r in reports]
    for key in parts[0]:
        print(f"{key:<66} {summarize([b[key] for b in parts])}")
    print(f"\n{'emulated kubeadm phases (s)':<66} {'median':>8} {'p90':>8} {'max':>8}")
    for kind, rows in sorted(kubeadm_phases(reports).items()):
        for phase, values in rows.items():
            print(f"{kind + ' / ' + phase:<66} {summarize(values)}")
    if args.init_seconds or args.join_seconds:
        bound = args.init_seconds + (args.control - 1) * args.join_seconds
        med = statistics.median(r["all_nodes_ready_s"] for r in reports)
        print(
            f"\ninit + {args.control - 1} serial control-plane joins = {bound:g} s; median all_nodes_ready_s "
            f"{med:.3f} s is {med - bound:+.3f} s from it"
        )
    args.json.write_text(json.dumps({"reports": reports, "breakdown": parts}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
