#!/usr/bin/env python3
"""CPU of the lab's emulated kubeadm, API server and kubelet per emulated node
(docs/benchmarks.md, "Emulation CPU per node").

``--micro`` measures without a lab (no root, no lock): the CPU of a fresh interpreter
importing each emulated tool (median of 9), the static-pod loop of the emulated kubelet over
20 s (a worker: no manifests; a control node: 4 manifests running ``sleep``), and the CPU of
one status update, client and a threaded TLS server in this process (median of 5 x 40): a
new TLS connection each time (as the kubelet did before) against one kept-alive connection.
Run it with ``PYTHONPATH`` at another tree to compare trees:

    .venv/bin/python scripts/bench_emulation.py --micro

Otherwise it boots 3 control nodes + ``--workers`` from nothing (process mode, 0 s steps), waits until
every node is Ready, then reads from ``/proc`` (proc(5) ``stat`` fields 14-17, clock ticks):

* the commands each agent ran and waited for: ``cutime + cstime`` of the agent, which is the
  emulated ``kubeadm`` (init, join, token and certificate commands; kubeadm's ``reset`` when
  one ran) and the few ``modprobe`` calls of its kernel preparation. They exit before anyone
  could sample them; the kernel adds a reaped child's CPU to its parent's. With the lab's
  fork server (:mod:`lab.forkserver`, the default) the agent's child is the small client and
  the command is the server's child: the server's ``cutime + cstime`` counts too, and its own
  CPU (importing the tools once, then accepting and forking) is ``fork_server``;
* the long-lived emulated processes still running: ``kube-apiserver`` (``-m lab.apiserver``)
  and ``kubelet`` (``-m lab.kubelet``), ``utime + stime``;

at Ready ("formation") and again ``--steady-s`` seconds later ("steady", per minute). Each
``--runs`` run prints one JSON line; the last line is the medians. ``--compare`` runs each of
the ``--runs`` twice, without the fork server (``--no-fork-server``'s lab) and with it,
alternating, and gives both medians and their ratio. Run it alone, under the lab lock, as
root:

    flock /tmp/ek8s-lab.lock .venv/bin/python scripts/bench_emulation.py --workers 20 --runs 3 --compare
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
    """(command line and name, own CPU seconds, reaped children's CPU seconds) of ``pid``, or
    None. A tool the fork server forked has the server's command line and the tool's name."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        cmd += " comm=" + Path(f"/proc/{pid}/comm").read_text().strip()
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the ")": field 3 (state) is f[0], so utime (14) is f[11], stime f[12], cutime f[13], cstime f[14].
    return cmd, (int(f[11]) + int(f[12])) / TICKS, (int(f[13]) + int(f[14])) / TICKS


def snapshot(lab: Lab, agent_pids: set[int]) -> dict[str, float]:
    """CPU seconds so far of the emulated parts in every node's namespace and of the fork
    server in the manager's (see the module)."""
    out = {"kubeadm_commands": 0.0, "apiserver": 0.0, "kubelet": 0.0, "fork_server": 0.0}
    state = lab.load()
    for pid in netns.pids(state.manager):
        s = _stat(pid)
        if s is not None and "lab.forkserver" in s[0]:
            out["fork_server"] += s[1]
            out["kubeadm_commands"] += s[2]
    for node in state.nodes:
        for pid in netns.pids(node.ns):
            s = _stat(pid)
            if s is None:
                continue
            cmd, own, children = s
            if pid in agent_pids:
                out["kubeadm_commands"] += children
            elif "lab.apiserver" in cmd:
                out["apiserver"] += own
            elif "lab.kubelet" in cmd or cmd.endswith(" comm=kubelet"):
                out["kubelet"] += own
    return out


def one_run(workers: int, steady_s: float, fork_server: bool = True) -> dict[str, Any]:
    """One lab of 3 + ``workers``: formation and steady CPU of the emulated parts."""
    lab = Lab(Path("/run/ek8s-emubench"), "ek8se")
    lab.down()
    state = lab.create(3, workers, Emulation(fork_server=fork_server), {})
    try:
        lab.start_all(state)
        lab.wait_ready(state, 900, since=state.t0)
        agents = {n.pid for n in lab.load().nodes}
        formed = snapshot(lab, agents)
        time.sleep(steady_s)
        later = snapshot(lab, agents)
        nodes = 3 + workers
        return {
            "fork_server": fork_server,
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


def import_cpu(module: str, runs: int = 9) -> float:
    """Median CPU seconds (user + system) of a fresh interpreter that imports ``module``."""
    code = (
        "import resource, sys, importlib; importlib.import_module(sys.argv[1]); "
        "r = resource.getrusage(resource.RUSAGE_SELF); print(r.ru_utime + r.ru_stime)"
    )
    import subprocess

    argv = [sys.executable, "-c", code, module]
    runs_s = [float(subprocess.run(argv, capture_output=True, text=True, check=True).stdout) for _ in range(runs)]
    return statistics.median(runs_s)


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def static_pod_loop_cpu(manifests: int, seconds: float = 20.0) -> float:
    """CPU seconds of :func:`lab.kubelet.run_static_pods` (0.1 s check interval) over
    ``seconds`` with ``manifests`` static pods running ``sleep`` (stopped afterwards)."""
    import tempfile
    import threading

    import yaml

    from core.fileperm import write_atomic
    from core.services import ProcessServices
    from lab.kubeadm.controlplane import static_pod
    from lab.kubelet import StaticPods, run_static_pods

    root = Path(tempfile.mkdtemp(prefix="ek8s-emubench-"))
    man = root / "manifests"
    man.mkdir()
    names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"][:manifests]
    for name in names:
        write_atomic(man / f"{name}.yaml", yaml.safe_dump(static_pod(name, ["sleep", "1000"], {}, {})))
    stop = threading.Event()
    loop = threading.Thread(target=run_static_pods, args=(StaticPods(man, root, "n1"), 0.1, stop), daemon=True)
    loop.start()
    try:
        time.sleep(2.0)  # the pods started
        c0 = _cpu()
        time.sleep(seconds)
        return _cpu() - c0
    finally:
        stop.set()
        loop.join(5)
        for name in names:
            ProcessServices(root).stop(name, 2)
        shutil.rmtree(root, ignore_errors=True)


def status_update_cpu() -> dict[str, float]:
    """Milliseconds of CPU per status update (PUT), client and a threaded TLS server in this
    process: a new TLS connection each (urllib) and :class:`lab.kubelet.ApiConnection` when
    this tree has it. Medians of 5 x 40 updates."""
    import http.server
    import ssl
    import tempfile
    import threading
    import urllib.request

    from lab import kubelet, pki

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    ca = pki.new_ca("kubernetes")
    cert, key = pki.issue(ca, "kube-apiserver", ips=("127.0.0.1",), server=True)
    with tempfile.TemporaryDirectory(prefix="ek8s-emubench-") as tmp:
        pem = Path(tmp) / "server.pem"
        pem.write_bytes(cert + key)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(str(pem))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    ctx = ssl.create_default_context(cadata=ca[0].decode())
    body = json.dumps({"status": {}}).encode()

    def new_connection() -> None:
        req = urllib.request.Request(url + "/api/v1/nodes/w0/status", data=body, method="PUT")
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            resp.read()

    ways: dict[str, Any] = {"new TLS connection each": new_connection}
    if hasattr(kubelet, "ApiConnection"):
        api = kubelet.ApiConnection(url, ctx)
        ways["kept-alive connection"] = lambda: api.request("PUT", "/api/v1/nodes/w0/status", {"status": {}})
    samples: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(5):
        for name, way in ways.items():
            c0 = _cpu()
            for _ in range(40):
                way()
            samples[name].append((_cpu() - c0) / 40 * 1000)
    server.shutdown()
    server.server_close()
    return {k: round(statistics.median(v), 2) for k, v in samples.items()}


def micro() -> dict[str, Any]:
    """The ``--micro`` figures (see the module)."""
    return {
        "import_cpu_s": {m: round(import_cpu(m), 3) for m in ("lab.kubeadm.cli", "lab.kubelet", "lab.apiserver")},
        "static_pod_loop_cpu_s_per_20s": {
            "worker": round(static_pod_loop_cpu(0), 3),
            "control": round(static_pod_loop_cpu(4), 3),
        },
        "status_update_cpu_ms": status_update_cpu(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steady-s", type=float, default=30.0)
    p.add_argument("--json", type=Path, default=Path("bench-emulation.json"))
    p.add_argument("--micro", action="store_true", help="the figures that need no lab (see above)")
    p.add_argument("--compare", action="store_true", help="each run without the fork server, then with it")
    p.add_argument("--no-fork-server", action="store_true", help="labs without the fork server")
    args = p.parse_args()
    if args.micro:
        print(json.dumps(micro(), indent=1), flush=True)
        return 0
    modes = [False, True] if args.compare else [not args.no_fork_server]
    runs = []
    for _ in range(args.runs):
        for fork_server in modes:
            runs.append(one_run(args.workers, args.steady_s, fork_server))
            print(json.dumps(runs[-1]), flush=True)
    keys = ("formation_cpu_s_per_node", "steady_cpu_s_per_node_per_min")
    medians = {
        ("with fork server" if m else "without fork server"): {
            k: statistics.median(r[k] for r in runs if r["fork_server"] == m) for k in keys
        }
        for m in modes
    }
    if args.compare:
        a, b = medians["with fork server"], medians["without fork server"]
        medians["ratio, with / without"] = {k: round(a[k] / b[k], 3) if b[k] else 0.0 for k in keys}
    args.json.write_text(json.dumps({"runs": runs, "median": medians}, indent=1) + "\n")
    print(json.dumps({"median": medians}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
