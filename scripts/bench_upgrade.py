#!/usr/bin/env python3
"""Benchmark a rolling upgrade by reimaging: `ek8s upgrade --to TO` of a 3 + 2 lab (processes,
kubeadm or k3s, emulated steps of `--init-seconds`/`--join-seconds`) at FROM, run from the lab's
manager namespace as from a Warewulf server, with a 10 Hz read of a ConfigMap through the VIP
(lab/apiprobe.py) the whole time. Each run boots its own lab and tears it down.

Per run: the command's wall time (its start to its exit: kubeadm's ClusterConfiguration, 3
control nodes one at a time, kube-proxy, 2 workers; k3s: 3 servers then 2 agents), the longest
gap between two successful reads through the VIP, and per node its downtime from the share's
events: from the `node_reimage` event (just before the image switch and the reboot) to the
node's next `node_ready` (the driver's own wait adds the etcd and HAProxy checks of a control
node after that). Prints medians (max) per distribution and writes every figure as JSON.

    flock /tmp/ek8s-lab.lock .venv/bin/python scripts/bench_upgrade.py --runs 3 \\
        --init-seconds 11 --join-seconds 10 --json bench-upgrade.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from core.share import ShareStore
from lab import apiprobe
from lab.apiprobe import summary
from lab.cluster import Lab
from lab.command import DAY2_SETTINGS, lab_cmd, set_args

LAB_DIR, PREFIX = Path("/run/ek8s-benchu"), "ek8sbu"
NODES = ["control0", "control1", "control2", "worker0", "worker1"]


def lab(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``ek8s lab ARGS`` on the bench's own lab."""
    return lab_cmd(LAB_DIR, PREFIX, *args, timeout=timeout)


def downtime(events: list[dict[str, Any]]) -> dict[str, float]:
    """Per node, seconds from its ``node_reimage`` event to its next ``node_ready``."""
    out = {}
    for name in NODES:
        begun = next(e["t"] for e in events if e["event"] == "node_reimage" and e.get("target") == name)
        ready = next(e["t"] for e in events if e["event"] == "node_ready" and e["node"] == name and e["t"] > begun)
        out[name] = round(ready - begun, 2)
    return out


def one_run(distribution: str, args: argparse.Namespace) -> dict[str, Any]:
    """Boot the lab at ``args.from_version``, upgrade it to ``args.to_version``, tear it down."""
    lab("down", timeout=180)
    sets = set_args(DAY2_SETTINGS)  # as tests/lab/test_upgrade.py runs its lab
    try:
        up = lab("up", "--control", "3", "--workers", "2", "--timeout", "300", "--distribution", distribution,
                 "--kubernetes-version", args.from_version, "--init-seconds", str(args.init_seconds),
                 "--join-seconds", str(args.join_seconds), *sets)  # fmt: skip
        if up.returncode != 0:
            raise SystemExit(f"lab up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
        the_lab = Lab(LAB_DIR, PREFIX)
        state = the_lab.load()
        store = ShareStore(LAB_DIR / "share", "default", "bench")
        probe_out = LAB_DIR / "probe.jsonl"
        probe = apiprobe.start(the_lab, state, store.admin_kubeconfig_path, probe_out)
        verb = f"{sys.executable} -m manager lab --dir {LAB_DIR} --prefix {PREFIX}"
        try:
            time.sleep(2)
            started = time.time()
            res = lab("exec", "manager", "--", sys.executable, "-m", "manager", "upgrade", "--yes",
                      "--share", str(LAB_DIR / "share"), "--to", args.to_version, "--distribution", distribution,
                      "--drain-timeout", "60", "--timeout", "300",
                      "--image-command", f"{verb} image {{node}} {{image}}",
                      "--reboot-command", f"{verb} reboot --no-wait {{node}}")  # fmt: skip
            ended = time.time()
            time.sleep(1)
        finally:
            probe.terminate()
            probe.wait(10)
        if res.returncode != 0:
            raise SystemExit(f"ek8s upgrade failed:\n{res.stdout[-4000:]}\n{res.stderr[-3000:]}")
        api = summary(probe_out, started, ended)
        if (api["longest_gap_s"] or 0.0) > KEEP_GAP_S:
            api["kept"] = keep_evidence(probe_out, res.stdout)
        return {
            "distribution": distribution,
            "total_s": round(ended - started, 2),
            "api": api,
            "per_node_s": downtime(store.events(since=started)),
        }
    finally:
        lab("down", timeout=180)


KEEP_GAP_S = 2.0  # an API gap longer than this keeps the lab's logs for a look afterwards


def keep_evidence(probe_out: Path, driver_out: str) -> str:
    """Copy the probe's lines, the lab's logs (every node's agent, Phylactery, keepalived,
    HAProxy), the share's events and the driver's output to a new directory under /tmp before
    the lab goes; returns its path."""
    kept = Path(tempfile.mkdtemp(prefix="ek8s-bench-upgrade-gap-", dir="/tmp"))
    shutil.copy(probe_out, kept / "probe.jsonl")
    shutil.copytree(LAB_DIR / "logs", kept / "logs", dirs_exist_ok=True)
    for events in (LAB_DIR / "share").glob("*/events.jsonl*"):
        shutil.copy(events, kept / events.name)
    (kept / "upgrade.out").write_text(driver_out)
    return str(kept)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--distribution", choices=["kubeadm", "k3s", "both"], default="both")
    p.add_argument("--from", dest="from_version", default="v1.34.2")
    p.add_argument("--to", dest="to_version", default="v1.35.2")
    p.add_argument("--init-seconds", type=float, default=11.0, help="the proof of concept's kubeadm init")
    p.add_argument("--join-seconds", type=float, default=10.0, help="the proof of concept's kubeadm join")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    distributions = ["kubeadm", "k3s"] if args.distribution == "both" else [args.distribution]
    runs: list[dict[str, Any]] = []
    for d in distributions:
        for i in range(args.runs):
            r = one_run(d, args)
            runs.append(r)
            print(f"{d} run {i + 1}: {r['total_s']}s, longest API gap {r['api']['longest_gap_s']}s, {r['per_node_s']}")
            if args.json:
                args.json.write_text(json.dumps(runs, indent=1) + "\n")

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({max(values):.2f})"

    for d in distributions:
        mine = [r for r in runs if r["distribution"] == d]
        print(f"\n{d}, {len(mine)} runs, {args.from_version} -> {args.to_version}, medians (max):")
        print(f"  ek8s upgrade, start to exit: {med([r['total_s'] for r in mine])} s")
        print(f"  longest API gap: {med([r['api']['longest_gap_s'] for r in mine])} s")
        print(f"  failed probe reads: {med([r['api']['failed'] for r in mine])} of {mine[0]['api']['tries']}")
        for name in NODES:
            print(f"  {name}: {med([r['per_node_s'][name] for r in mine])} s from node_reimage to node_ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
