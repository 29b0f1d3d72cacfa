#!/usr/bin/env python3
"""CPU of the lab's emulated kubeadm, API server and kubelet per emulated node
(docs/benchmarks.md, "Emulation CPU per node").

Boots 3 control nodes + ``--workers`` from nothing (process mode, 0 s steps), waits until
every node is Ready, then reads from ``/proc`` (proc(5) ``stat`` fields 14-17, clock ticks):

* the commands each agent ran and waited for: ``cutime + cstime`` of the agent, which is the
  emulated ``kubeadm`` (init, join, token and certificate commands; kubeadm's ``reset`` when
  one ran) and the few ``modprobe`` calls of its kernel preparation. They exit before anyone
  could sample them; the kernel adds a reaped child's CPU to its parent's;
* the long-lived emulated processes still running: ``kube-apiserver`` (``-m lab.apiserver``)
  and ``kubelet`` (``-m lab.kubelet``), ``utime + stime``;

at Ready ("formation") and again ``--steady-s`` seconds later ("steady", per minute). Each
``--runs`` run prints one JSON line; the last line is the medians. Run it alone, under the
lab lock, as root:

    flock /tmp/ek8s-lab.lock .venv/bin/python scripts/bench_emulation.py --workers 20 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from lab import netns
from lab.cluster import Lab
from lab.emulation import Emulation

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[str, float, float] | None:
    """(command line, own CPU seconds, reaped children's CPU seconds) of ``pid``, or None."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the ")": field 3 (state) is f[0], so utime (14) is f[11], stime f[12], cutime f[13], cstime f[14].
    return cmd, (int(f[11]) + int(f[12])) / TICKS, (int(f[13]) + int(f[14])) / TICKS


def snapshot(lab: Lab, agent_pids: set[int]) -> dict[str, float]:
    """CPU seconds so far of the emulated parts in every node's namespace (see the module)."""
    out = {"kubeadm_commands": 0.0, "apiserver": 0.0, "kubelet": 0.0}
    for node in lab.load().nodes:
        for pid in netns.pids(node.ns):
            s = _stat(pid)
            if s is None:
                continue
            cmd, own, children = s
            if pid in agent_pids:
                out["kubeadm_commands"] += children
            elif "lab.apiserver" in cmd:
                out["apiserver"] += own
            elif "lab.kubelet" in cmd:
                out["kubelet"] += own
    return out


def one_run(workers: int, steady_s: float) -> dict[str, Any]:
    """One lab of 3 + ``workers``: formation and steady CPU of the emulated parts."""
    lab = Lab(Path("/run/ek8s-emubench"), "ek8se")
    lab.down()
    state = lab.create(3, workers, Emulation(), {})
    try:
        lab.start_all(state)
        lab.wait_ready(state, 900, since=state.t0)
        agents = {n.pid for n in lab.load().nodes}
        formed = snapshot(lab, agents)
        time.sleep(steady_s)
        later = snapshot(lab, agents)
        nodes = 3 + workers
        return {
            "nodes": nodes,
            "formation_cpu_s": {k: round(v, 2) for k, v in formed.items()},
            "formation_cpu_s_per_node": round(sum(formed.values()) / nodes, 3),
            "steady_cpu_s_per_node_per_min": round(
                (sum(later.values()) - sum(formed.values())) / nodes / (steady_s / 60), 3
            ),
            "steady_s": steady_s,
        }
    finally:
        lab.down()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steady-s", type=float, default=30.0)
    p.add_argument("--json", type=Path, default=Path("bench-emulation.json"))
    args = p.parse_args()
    runs = []
    for _ in range(args.runs):
        runs.append(one_run(args.workers, args.steady_s))
        print(json.dumps(runs[-1]), flush=True)
    medians = {
        k: statistics.median(r[k] for r in runs) for k in ("formation_cpu_s_per_node", "steady_cpu_s_per_node_per_min")
    }
    args.json.write_text(json.dumps({"runs": runs, "median": medians}, indent=1) + "\n")
    print(json.dumps({"median": medians}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
