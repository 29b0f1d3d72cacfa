#!/usr/bin/env python3
"""Benchmark planned maintenance: `ek8s node reboot` of every node of a 3 + 2 lab (kubeadm,
processes), run from the lab's manager namespace as from a Warewulf server, with a 10 Hz read
of a ConfigMap through the VIP (lab/apiprobe.py) the whole time; N rounds in one lab.

Per node, from the share's events: the reboot's duration from the `node_reboot` event (just
before the reboot command) to the node's next `node_ready` (the command's own wait for "back"
adds the etcd and HAProxy checks for a control node after that); per round, the command's wall
time and the longest gap between two successful reads through the VIP. Prints medians (max)
and writes every figure as JSON.

    flock /tmp/ek8s-lab.lock .venv/bin/python scripts/bench_reboot.py --rounds 3 --json out.json
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

from core.share import ShareStore
from lab import apiprobe
from lab.apiprobe import summary
from lab.cluster import Lab
from lab.command import lab_cmd

LAB_DIR, PREFIX = Path("/run/ek8s-benchr"), "ek8sbr"
NODES = ["control0", "control1", "control2", "worker0", "worker1"]


def lab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``ek8s lab ARGS`` on the bench's own lab."""
    return lab_cmd(LAB_DIR, PREFIX, *args, timeout=timeout)


def one_round(store: ShareStore, probe_out: Path) -> dict[str, Any]:
    """``ek8s node reboot`` of every node; its wall time, each node's reboot, the API's gap."""
    reboot = f"{sys.executable} -m manager lab --dir {LAB_DIR} --prefix {PREFIX} reboot --no-wait {{node}}"
    started = time.time()
    res = lab("exec", "manager", "--", sys.executable, "-m", "manager", "node", "reboot", "control[0-2],worker[0-1]",
              "--yes", "--share", str(LAB_DIR / "share"), "--reboot-command", reboot)  # fmt: skip
    ended = time.time()
    if res.returncode != 0:
        raise SystemExit(f"ek8s node reboot failed:\n{res.stdout}\n{res.stderr}")
    events = store.events(since=started)
    per_node = {}
    for name in NODES:
        begun = next(e["t"] for e in events if e["event"] == "node_reboot" and e.get("target") == name)
        ready = next(e["t"] for e in events if e["event"] == "node_ready" and e["node"] == name and e["t"] > begun)
        per_node[name] = round(ready - begun, 2)
    return {"wall_s": round(ended - started, 2), "per_node_s": per_node, "api": summary(probe_out, started, ended)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    lab("down", timeout=180)
    rounds = []
    try:
        up = lab("up", "--control", "3", "--workers", "2", "--timeout", "300")
        if up.returncode != 0:
            raise SystemExit(f"lab up failed:\n{up.stdout}\n{up.stderr}")
        the_lab = Lab(LAB_DIR, PREFIX)
        state = the_lab.load()
        store = ShareStore(LAB_DIR / "share", "default", "bench")
        probe_out = LAB_DIR / "probe.jsonl"
        probe = apiprobe.start(the_lab, state, store.admin_kubeconfig_path, probe_out)
        try:
            time.sleep(2)
            for i in range(args.rounds):
                r = one_round(store, probe_out)
                rounds.append(r)
                print(f"round {i + 1}: {r['wall_s']}s, {r['per_node_s']}, longest API gap {r['api']['longest_gap_s']}s")
                time.sleep(5)  # let the last node's role labels and reconciles settle
        finally:
            probe.terminate()
            probe.wait(10)
    finally:
        lab("down", timeout=180)

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({max(values):.2f})"

    print(f"\n{len(rounds)} rounds, medians (max):")
    print(f"  whole command (5 nodes): {med([r['wall_s'] for r in rounds])} s")
    for name in NODES:
        print(f"  {name}: {med([r['per_node_s'][name] for r in rounds])} s from the reboot command to node_ready")
    print(f"  longest API gap per round: {med([r['api']['longest_gap_s'] for r in rounds])} s")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
