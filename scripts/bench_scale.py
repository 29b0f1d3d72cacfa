#!/usr/bin/env python3
"""The lab at scale (docs/benchmarks.md, "Scale"): for each size, boot 3 control nodes and N
workers from nothing, wait until every node is Ready, then measure the share's load.

Per run: ``leader_ready_s``, ``all_nodes_ready_s`` and the time from ``leader_ready`` to the last
worker's ``node_ready`` (events on the share); the lab's peak memory (sum of the RSS of every
process in the lab's namespaces, sampled every second from boot to all Ready); CPU seconds of
our agents and Phylacteries against the emulated and real parts (kubeadm, API server, kubelet;
etcd, HAProxy, keepalived); share operations per node per second during formation (each
agent's counters at its first textfile after all Ready, over the seconds since boot) and in
steady state (over ``--steady-s`` seconds afterwards), from the share store's counters that
every agent writes to its metrics textfile.

Run it alone, under the lab lock, as root:

    flock /tmp/ek8s-lab.lock .venv/bin/python scripts/bench_scale.py --workers 2 25 50 100 --runs 1

``--init-seconds``/``--join-seconds`` set the emulated kubeadm's step times;
``--admission adaptive unbounded`` alternates, run by run in this one process, the default
adaptive join admission with ``worker_join_admission: fixed`` at a ceiling of 1000 (no bound);
``--fork-server on off`` alternates labs with and without the lab's fork server for the
emulated tools (lab/forkserver.py); ``--steady-s 0`` skips the steady-state window. Per run
it also reports the admission window left on the share, the ``join_admission`` (distress)
events and the agents' ``cpu_s`` at ``node_ready`` per role (median).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from lab import netns
from lab.cluster import Lab

TEXTFILE = "var/lib/node_exporter/textfile_collector/ek8s.prom"
PAGE = 4096
TICKS = 100  # USER_HZ


def _proc(pid: int) -> tuple[str, int, float] | None:
    """(command line and `` comm=<name>``, RSS bytes, CPU seconds) of ``pid``, or None when it
    is gone. A tool the lab's fork server forked has the server's command line and the tool's
    name."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        cmd += " comm=" + Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None
    return cmd, rss, (int(stat[11]) + int(stat[12])) / TICKS


def kind(cmd: str) -> str:
    """Which part a process is: ours (agent, phylactery), emulated, or a real daemon; the lab's
    fork server (its own CPU: importing the tools once, accepting and forking)."""
    if "lab.forkserver" in cmd:
        tool = cmd.rsplit(" comm=", 1)[-1]
        return f"emulated {tool}" if tool in ("kubeadm", "kubelet", "k3s") else "fork server"
    for needle, name in (
        ("-m leader", "agent"),
        ("-m phylactery", "phylactery"),
        ("lab.kubeadm", "emulated kubeadm"),
        ("lab.apiserver", "emulated API server"),
        ("lab.kubelet", "emulated kubelet"),
        ("etcd", "etcd"),
        ("haproxy", "haproxy"),
        ("keepalived", "keepalived"),
    ):
        if needle in cmd:
            return name
    return "other"


def lab_processes(lab: Lab) -> dict[int, tuple[str, int, float]]:
    """Every process in the nodes' namespaces and the manager's (the fork server)."""
    out = {}
    state = lab.load()
    for ns in [n.ns for n in state.nodes] + [state.manager]:
        for pid in netns.pids(ns):
            p = _proc(pid)
            if p is not None:
                out[pid] = p
    return out


def agent_ops(root: Path) -> tuple[float, float]:
    """(the agent's share operations so far, when its textfile was written)."""
    path = root / TEXTFILE
    total = 0.0
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            if s.name == "ek8s_share_operations_total" and s.labels.get("process") == "agent":
                total += s.value
    return total, path.stat().st_mtime


STRACE_CALLS = (
    "openat,newfstatat,statx,stat,lstat,fstat,rename,renameat,renameat2,fsync,"
    "utimensat,unlink,unlinkat,flock,getdents64,mkdir,fchmod,write,read"
)


def strace_counts(path: Path, share: str) -> dict[str, int]:
    """System calls in an ``strace -f -y`` log that touched the share (a path or an fd under it)."""
    counts: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        if share not in line or "resumed>" in line:
            continue
        call = line.split(None, 1)[1].split("(", 1)[0] if line[:1].isdigit() else line.split("(", 1)[0]
        counts[call] = counts.get(call, 0) + 1
    return dict(sorted(counts.items()))


ADMISSION = {
    "adaptive": {},  # node.yaml's defaults: the adaptive window under a ceiling of 1000
    "unbounded": {"worker_join_admission": "fixed", "worker_join_concurrency": 1000},
}


def listen_overflows(ns: str) -> int:
    """``TcpExtListenOverflows`` of network namespace ``ns`` (/proc/net/netstat, counted per
    namespace): how often a listening socket's accept queue was full and a SYN or a handshake's
    last ACK was dropped. -1 when it cannot be read."""
    res = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/netstat"], capture_output=True, text=True)
    lines = [ln.split() for ln in res.stdout.splitlines() if ln.startswith("TcpExt:")]
    if res.returncode != 0 or len(lines) < 2:
        return -1
    return int(dict(zip(lines[0], lines[1], strict=False)).get("ListenOverflows", -1))


def haproxy_says(logs: list[Path]) -> dict[str, int]:
    """How often the control nodes' HAProxy logged a backend going DOWN or UP, and a backend
    with no server left (``logs``: their output, ``<root>/var/log/ek8s/haproxy.log`` in
    process mode)."""
    said = {"DOWN": 0, "UP": 0, "no server available": 0}
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            if "kube-apiserver/" in line and " is DOWN" in line:
                said["DOWN"] += 1
            elif "kube-apiserver/" in line and " is UP" in line:
                said["UP"] += 1
            if "has no server available" in line:
                said["no server available"] += 1
    return said


def one_run(
    workers: int,
    steady_s: float,
    strace_node: str | None = None,
    join_concurrency: int | None = None,
    admission: str = "adaptive",
    init_s: float = 0.0,
    join_s: float = 0.0,
    fork_server: bool = True,
) -> dict[str, Any]:
    lab = Lab(Path("/run/ek8s-scale"), "ek8sc")
    lab.down()
    from lab.emulation import Emulation

    kubernetes: dict[str, Any] = dict(ADMISSION[admission])
    if join_concurrency:
        kubernetes["worker_join_concurrency"] = join_concurrency
    overrides = {"kubernetes": kubernetes} if kubernetes else {}
    state = lab.create(3, workers, Emulation(init_s=init_s, join_s=join_s, fork_server=fork_server), overrides)
    peak, cpu_seen = [0], {}  # peak RSS; CPU seconds by pid (last seen), processes end

    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            procs = lab_processes(lab)
            peak[0] = max(peak[0], sum(rss for _, rss, _ in procs.values()))
            for pid, (cmd, _, cpu) in procs.items():
                cpu_seen[pid] = (kind(cmd), cpu)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        lab.start_all(state)
        sampler.start()
        last = lab.wait_ready(state, 900, since=state.t0)
        stop.set()
        sampler.join()
        report_events = lab.events()
        leader_ready = min(e["t"] for e in report_events if e["event"] == "leader_ready")
        worker_ready = [e["t"] for e in report_events if e["event"] == "node_ready" and e["node"].startswith("worker")]
        roles = {n.name: n.role for n in state.nodes}
        cpu_to_ready: dict[str, list[float]] = {}
        for e in report_events:
            if e["event"] == "node_ready" and e.get("cpu_s") is not None:
                cpu_to_ready.setdefault(roles.get(e["node"], "?"), []).append(float(e["cpu_s"]))
        # Why joins failed: the agents' messages with numbers blanked, most frequent first.
        why = collections.Counter(
            re.sub(r"\d+(\.\d+)?", "N", str(e.get("message", ""))) for e in report_events if e["event"] == "join_failed"
        )
        overflows = {n.name: listen_overflows(n.ns) for n in state.nodes if n.role == "control"}
        haproxy = haproxy_says([Path(n.root) / "var/log/ek8s/haproxy.log" for n in state.nodes if n.role == "control"])
        window = lab.store().worker_join_window(join_concurrency or 1000)
        admission_doc = {
            "mode": admission,
            "window_left": round(window.size, 1),
            "distress": [(e["signal"], e["window"]) for e in report_events if e["event"] == "join_admission"],
        }
        formed_doc = {
            "workers": workers,
            "leader_ready_s": round(leader_ready - state.t0, 2),
            "all_nodes_ready_s": round(last - state.t0, 2),
            "leader_ready_to_last_worker_s": round(max(worker_ready) - leader_ready, 2) if worker_ready else None,
            "join_failed": sum(1 for e in report_events if e["event"] == "join_failed"),
            "join_failed_why": why.most_common(8),
            "listen_overflows": overflows,
            "haproxy": haproxy,
            "admission": admission_doc,
            "agent_cpu_s_to_ready": {r: _stats(v) for r, v in cpu_to_ready.items()},
        }
        if steady_s <= 0:
            return formed_doc
        time.sleep(16)  # every agent's textfile rewritten in WATCH
        formed = {n.name: (n.role, *agent_ops(Path(n.root))) for n in state.nodes}
        tracer = None
        if strace_node:
            trace = Path(f"/tmp/bench-scale-strace-{strace_node}.log")
            pid = state.node(strace_node).pid
            argv = ["strace", "-f", "-y", "-qq", "-e", f"trace={STRACE_CALLS}", "-o", str(trace), "-p", str(pid)]
            tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
            ops_before = agent_ops(Path(state.node(strace_node).root))
        time.sleep(steady_s)
        strace_doc = None
        if tracer is not None and strace_node:
            tracer.terminate()
            tracer.wait(10)
            ops_after = agent_ops(Path(state.node(strace_node).root))
            strace_doc = {
                "node": strace_node,
                "seconds": steady_s,
                "syscalls_on_share": strace_counts(trace, str(lab.share)),
                "counted_ops": ops_after[0] - ops_before[0],
                "counted_over_s": round(ops_after[1] - ops_before[1], 1),
            }
        steady: dict[str, list[float]] = {"control": [], "worker": []}
        formation: dict[str, list[float]] = {"control": [], "worker": []}
        for n in state.nodes:
            role, ops0, at0 = formed[n.name]
            ops1, at1 = agent_ops(Path(n.root))
            steady[role].append((ops1 - ops0) / max(1.0, at1 - at0))
            formation[role].append(ops0 / max(1.0, at0 - state.t0))
        cpu: dict[str, float] = {}
        for k, c in cpu_seen.values():
            cpu[k] = round(cpu.get(k, 0.0) + c, 1)
        return {
            **formed_doc,
            "peak_rss_mib": round(peak[0] / 2**20),
            "cpu_s": cpu,
            "share_ops_per_s_steady": {r: _stats(v) for r, v in steady.items() if v},
            "share_ops_per_s_formation": {r: _stats(v) for r, v in formation.items() if v},
            "strace": strace_doc,
        }
    finally:
        stop.set()
        lab.down()


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def plot(reports: list[dict[str, Any]], path: Path) -> None:
    """Draw how formation time and share load grow with the number of workers: medians per
    size of ``all_nodes_ready_s``, ``leader_ready_s`` and the median steady share operations
    per second of a worker and a control node (reports with an ``error`` are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_size: dict[int, list[dict[str, Any]]] = {}
    for r in reports:
        if "error" not in r:
            by_size.setdefault(int(r["workers"]), []).append(r)
    sizes = sorted(by_size)

    def series(get: Any) -> list[float]:
        return [statistics.median(get(r) for r in by_size[n]) for n in sizes]

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(sizes, series(lambda r: r["all_nodes_ready_s"]), "o-", label="every node Ready")
    left.plot(sizes, series(lambda r: r["leader_ready_s"]), "s--", label="leader_ready")
    left.set(xlabel="workers (3 control nodes)", ylabel="seconds from boot", title="Formation (lab, 2 cores)")
    left.legend()
    right.plot(sizes, series(lambda r: r["share_ops_per_s_steady"]["control"]["median"]), "o-", label="control node")
    right.plot(sizes, series(lambda r: r["share_ops_per_s_steady"]["worker"]["median"]), "s-", label="worker")
    right.axhline(1.0, color="grey", linestyle=":", label="budget, control")
    right.axhline(0.2, color="grey", linestyle="--", label="budget, worker")
    right.set(xlabel="workers (3 control nodes)", ylabel="share operations / s", title="Steady share load per node")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[2, 25, 50, 100])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steady-s", type=float, default=90.0)
    p.add_argument("--json", type=Path, default=Path("bench-scale.json"))
    p.add_argument("--strace", metavar="NODE", help="strace NODE's agent during the steady window (first run)")
    p.add_argument("--join-concurrency", type=int, help="kubernetes.worker_join_concurrency (default: node.yaml's)")
    p.add_argument("--init-seconds", type=float, default=0.0, help="emulated kubeadm init's total time")
    p.add_argument("--join-seconds", type=float, default=0.0, help="emulated kubeadm join's total time")
    p.add_argument("--admission", nargs="+", choices=sorted(ADMISSION), default=["adaptive"])
    p.add_argument(
        "--fork-server",
        nargs="+",
        choices=["on", "off"],
        default=["on"],
        help="the lab's fork server for the emulated tools (both: alternated run by run)",
    )
    p.add_argument("--plot", type=Path, metavar="PNG", help="draw the reports (with --from, without running)")
    p.add_argument("--from", dest="sources", type=Path, nargs="+", metavar="JSON", help="reports of earlier runs")
    args = p.parse_args()
    if args.sources:
        reports = [r for src in args.sources for r in json.loads(src.read_text())]
        plot(reports, args.plot or Path("scale.png"))
        return 0
    results = []
    for workers in args.workers:
        for run in range(args.runs):
            for admission, forked in [(a, f) for a in args.admission for f in args.fork_server]:
                # alternated: the machine's load changes both alike
                try:
                    r = one_run(
                        workers,
                        args.steady_s,
                        args.strace if run == 0 else None,
                        args.join_concurrency,
                        admission,
                        args.init_seconds,
                        args.join_seconds,
                        forked == "on",
                    )
                    r["worker_join_concurrency"] = args.join_concurrency or 1000
                except Exception as err:  # one failed size must not cost the others
                    r = {"workers": workers, "error": f"{type(err).__name__}: {err}"[:2000]}
                r["run"] = run + 1
                r["admission_mode"] = admission
                r["fork_server"] = forked
                print(json.dumps(r), flush=True)
                results.append(r)
                args.json.write_text(json.dumps(results, indent=1) + "\n")
    summary: dict[str, list[float]] = {}
    for r in results:
        if "error" not in r and r.get("leader_ready_to_last_worker_s") is not None:
            key = f"{r['workers']} {r['admission_mode']}, fork server {r.get('fork_server', 'on')}"
            summary.setdefault(key, []).append(r["leader_ready_to_last_worker_s"])
    for key, values in sorted(summary.items()):
        print(f"3 + {key}: leader_ready -> last worker Ready, median {statistics.median(values):.2f} s of {values}")
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
