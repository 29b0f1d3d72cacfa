#!/usr/bin/env python3
"""Benchmark kubeadm beside k3s in the lab: formation and rejoin, in one process.

Each run boots a fresh 3 control + 2 worker lab per distribution (under /run/ek8s-dbench,
namespaces ek8sdb-*), from nothing until every node is Ready (``all_nodes_ready_s``, seconds
since the agents started), then reboots one control node and one worker (``rejoin_s``:
boot to the node's ``node_ready``, the cluster whole after each) and tears the lab down. The
distributions take turns within each run, so load on the shared cores hits both alike.
Speed is measured here, never in a timed test: compare medians, not single runs.

    .venv/bin/python scripts/bench_distributions.py --runs 5
    .venv/bin/python scripts/bench_distributions.py --runs 3 --steps kubeadm=11,10 --steps k3s=15,12

``--steps D=INIT,JOIN`` sets the emulated distribution D's total init and join durations
(seconds; ``init_s``/``join_s`` of :class:`lab.emulation.Emulation`; 0: as fast as it runs).
``--etcd DIR`` (repeatable) runs each distribution on the etcd in DIR too, taking turns
within each run (docs/lab.md, "etcd": the lab's 3.5 by default; ``--etcd
/opt/ek8s-lab/etcd-3.5/usr/bin --etcd /usr/bin`` compares it with Debian 12's 3.4.23).

    .venv/bin/python scripts/bench_distributions.py --runs 3 --etcd /opt/ek8s-lab/etcd-3.5/usr/bin --etcd /usr/bin
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from lab.cluster import Lab
from lab.emulation import ETCD_DIR_ENV, Emulation, etcd_dir, etcd_tool, etcd_version

DISTRIBUTIONS = ("kubeadm", "k3s")


def one_run(distribution: str, emulation: Emulation) -> dict[str, float]:
    """One formation and two rejoins of ``distribution``; ``{formation_s, control_rejoin_s,
    worker_rejoin_s}``. Raises :class:`lab.cluster.LabError` (the lab is removed anyway)."""
    lab = Lab(Path("/run/ek8s-dbench"), "ek8sdb")
    lab.down()
    try:
        state = lab.create(3, 2, emulation, {"kubernetes": {"distribution": distribution}})
        lab.start_all(state)
        lab.wait_ready(state, 300, since=state.t0)
        formation = float(lab.wait_whole(state)["all_nodes_ready_s"])
        control = lab.reboot_nodes(state, ["control1"])
        lab.wait_whole(state)
        worker = lab.reboot_nodes(state, ["worker0"])
        lab.wait_whole(state)
        return {"formation_s": formation, "control_rejoin_s": control, "worker_rejoin_s": worker}
    finally:
        lab.down()


def summary(values: list[float]) -> dict[str, float]:
    """``{median, min, max, n}`` of ``values`` (seconds, rounded to 1 ms)."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def parse_steps(items: list[str]) -> dict[str, tuple[float, float]]:
    """``["k3s=15,12"]`` -> ``{"k3s": (15.0, 12.0)}``. Raises ``SystemExit`` (exit 2) on a bad item."""
    out = {}
    for item in items:
        name, _, pair = item.partition("=")
        try:
            init_s, join_s = (float(x) for x in pair.split(","))
        except ValueError:
            raise SystemExit(f"--steps {item!r}: expected DISTRIBUTION=INIT,JOIN (seconds)") from None
        if name not in DISTRIBUTIONS:
            raise SystemExit(f"--steps {item!r}: unknown distribution (one of {', '.join(DISTRIBUTIONS)})")
        out[name] = (init_s, join_s)
    return out


def main() -> int:
    """Run the benchmark (arguments in the module's docstring), print medians per distribution
    and write every run to ``--json``; returns 0. Needs root, as ``ek8s lab``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--distribution", nargs="+", choices=DISTRIBUTIONS, default=list(DISTRIBUTIONS))
    p.add_argument("--steps", action="append", default=[], help="DISTRIBUTION=INIT,JOIN emulated seconds")
    p.add_argument("--etcd", action="append", default=[], help="a directory with etcd, etcdctl, etcdutl")
    p.add_argument("--json", type=Path, default=Path("bench-distributions.json"))
    args = p.parse_args()
    steps = parse_steps(args.steps)
    etcds = args.etcd or [str(etcd_dir())]
    labels = {}
    for directory in etcds:
        os.environ[ETCD_DIR_ENV] = directory
        labels[directory] = "etcd " + ".".join(map(str, etcd_version(etcd_tool("etcd"))))
    keys = [(d, e) for d in args.distribution for e in etcds]
    runs: dict[str, list[dict[str, float]]] = {f"{d} {labels[e]}": [] for d, e in keys}
    for i in range(args.runs):
        for d, e in keys:
            os.environ[ETCD_DIR_ENV] = e  # Emulation() takes the etcd tools from it
            init_s, join_s = steps.get(d, (0.0, 0.0))
            runs[f"{d} {labels[e]}"].append(one_run(d, Emulation(init_s=init_s, join_s=join_s)))
            print(
                f"run {i + 1}/{args.runs} {d} {labels[e]}: {runs[f'{d} {labels[e]}'][-1]}", file=sys.stderr, flush=True
            )
    result: dict[str, Any] = {"runs": runs, "steps": {d: steps.get(d, (0.0, 0.0)) for d in args.distribution}}
    print(f"\n{args.runs} runs, 3 control + 2 workers; medians (min-max), seconds")
    print(f"{'distribution':<26}{'emulated init,join':>20}{'formation':>22}{'control rejoin':>22}{'worker rejoin':>22}")
    for key, rows in runs.items():
        result[key] = {k: summary([r[k] for r in rows]) for k in rows[0]}
        cells = [f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})" for s in result[key].values()]
        init_s, join_s = steps.get(key.split()[0], (0.0, 0.0))
        print(f"{key:<26}{f'{init_s:g},{join_s:g}':>20}" + "".join(f"{c:>22}" for c in cells))
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
