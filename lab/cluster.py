"""The local lab (docs/lab.md): a cluster of network namespaces on one Linux machine.

Real: the node agent and Phylactery (the same code as on a node), etcd, HAProxy, keepalived
with VRRP, file locks on the shared directory. EMULATED: kubeadm, kube-apiserver and kubelet
(:mod:`lab.kubeadm`, :mod:`lab.apiserver`, :mod:`lab.kubelet`).

Everything the lab makes is under its directory (default ``/run/ek8s-lab``: node roots,
the share, logs, ``lab.json``), in namespaces named ``<prefix>-*`` and in
``/etc/netns/<prefix>-*``; :meth:`Lab.down` removes all of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock

from core.fileperm import ensure_dir, write_atomic
from core.share import ShareStore, clusters_on
from core.versions import DEFAULT_KUBERNETES_VERSION
from lab import forkclient, netns, runners
from lab.emulation import ENV as EMULATION_ENV
from lab.emulation import Emulation, etcd_version
from lab.state import (
    CLUSTER,
    MANAGER,
    PREFIX_LEN,
    PROBE_TIMEOUT_S,
    SECOND_CLUSTER,
    SECOND_VIP,
    SECOND_VIP_NAME,
    SECOND_VRID,
    VIP,
    VIP_NAME,
    LabError,
    LabNode,
    LabState,
    control_address,
    merge,
    worker_address,
)


def _etcd_before_35(etcd: str) -> bool:
    """Whether ``etcd`` is older than 3.5 (False when it cannot say)."""
    try:
        return etcd_version(etcd) < (3, 5, 0)
    except (OSError, ValueError, subprocess.SubprocessError):
        return False


FORK_SERVER_START_S = 30.0  # how long create waits for the fork server's socket


class Lab:
    """One lab, identified by its directory and namespace prefix (namespaces ``<prefix>-*``).

    Methods that touch namespaces raise :class:`lab.netns.NetnsError` when an ``ip`` command
    that must succeed fails, or any ``ip`` command hangs or cannot start.
    """

    def __init__(self, directory: Path = Path("/run/ek8s-lab"), prefix: str = "ek8s") -> None:
        self.dir = directory
        self.prefix = prefix
        self.node_overrides: dict[str, dict[str, Any]] = {}  # create()'s, per node
        self.state_path = directory / "lab.json"

    # -- state --------------------------------------------------------------------------
    def load(self) -> LabState:
        """Read ``lab.json``. Raises :class:`LabError` when there is none; ``ValueError``,
        ``TypeError`` or ``KeyError`` when it is not a lab's (:meth:`down` tolerates the first
        two)."""
        try:
            d = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            raise LabError(f"no lab at {self.dir} (run 'ek8s lab up' first)") from None
        d["nodes"] = [LabNode(**n) for n in d["nodes"]]
        return LabState(**d)

    def save(self, state: LabState) -> None:
        """Replace ``lab.json`` with ``state`` (atomically, under ``lab.json.lock``)."""
        with FileLock(str(self.state_path) + ".lock"):
            write_atomic(self.state_path, json.dumps(asdict(state), indent=1) + "\n", 0o644)

    def save_nodes(self, state: LabState, *nodes: LabNode) -> None:
        """Write ``nodes`` (records of ``state``) into ``lab.json`` as it is on disk now, under
        ``lab.json.lock``: several ``ek8s lab`` commands may run at once (a fence service's
        power command boots one node while another crashes a second), and a whole-state save
        from each would undo the other's pid."""
        with FileLock(str(self.state_path) + ".lock"):
            on_disk = self.load()
            mine = {n.name: n for n in nodes}
            on_disk.nodes = [mine.get(n.name, n) for n in on_disk.nodes]
            write_atomic(self.state_path, json.dumps(asdict(on_disk), indent=1) + "\n", 0o644)

    @property
    def share(self) -> Path:
        """The directory every node mounts as its share (``<dir>/share``)."""
        return self.dir / "share"

    # -- up -----------------------------------------------------------------------------
    def create(
        self,
        control: int,
        workers: int,
        emulation: Emulation,
        overrides: dict[str, Any] | None = None,
        mode: str = runners.PROCESSES,
        node_overrides: dict[str, dict[str, Any]] | None = None,
    ) -> LabState:
        """Make namespaces, node roots, node.yaml files and the share; start nothing.

        ``control`` and ``workers`` are node counts; ``emulation`` is written to
        ``emulation.json`` for the ``bin/kubeadm`` shim; ``overrides`` are node.yaml fields
        (nested dicts) merged into every node's, then ``node_overrides[<node>]`` into that
        node's (:func:`second_cluster` makes those of a second cluster); ``mode`` picks the node runner
        (:mod:`lab.runners`), which writes each node's configuration. Returns the state,
        saved in ``lab.json``. Raises :class:`LabError` when not root, a tool is missing, a
        lab exists already, ``control`` < 1, ``dir`` is too long for the UNIX sockets below
        it or the fork server does not start; machines add :class:`lab.image.ImageError` (no
        image), :class:`lab.runners.RunnerError` and :class:`manager.wwrender.RenderError`.
        """
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, VRRP)")
        host_tools = ("ip", "haproxy", "keepalived") if mode == runners.PROCESSES else ("ip",)
        for tool in host_tools:
            if shutil.which(tool) is None:
                raise LabError(f"{tool} not found; run 'make lab' or install haproxy keepalived iproute2")
        # etcdutl came with etcd 3.5 (3.4's etcdctl restores snapshots itself).
        etcd_tools = (emulation.etcd, emulation.etcdctl, emulation.etcdutl) if mode == runners.PROCESSES else ()
        for tool in etcd_tools:
            if shutil.which(tool) is None and not (tool == emulation.etcdutl and _etcd_before_35(emulation.etcd)):
                raise LabError(f"{tool} not found; run 'make etcd' (the lab's etcd 3.5, docs/lab.md)")
        if self.state_path.exists() or netns.existing(self.prefix):
            raise LabError(f"a lab already exists ({self.dir}, namespaces {self.prefix}-*); run 'ek8s lab down' first")
        if control < 1:
            raise LabError("--control must be at least 1")
        # HAProxy's stats socket lives at <dir>/nodes/<node>/run/haproxy/admin.sock; a UNIX
        # socket path has at most 107 bytes.
        longest = len(str(self.dir / "nodes" / "control0" / "run/haproxy/admin.sock"))
        if longest > 100:
            raise LabError(f"--dir {self.dir} is too long for UNIX socket paths below it; use a shorter one")
        self.node_overrides = node_overrides or {}
        unknown = set(self.node_overrides) - {f"control{i}" for i in range(control)}
        unknown -= {f"worker{i}" for i in range(workers)}
        if unknown:
            raise LabError(f"no node {', '.join(sorted(unknown))} in a lab of {control} + {workers} nodes")
        ensure_dir(self.dir, 0o700)
        ensure_dir(self.share, 0o700)
        # The cluster's trees exist before any node mounts them, as `ek8s warewulf apply`
        # makes them on the Warewulf server (a worker machine binds only <cluster>/nodes).
        self.store().ensure()
        for other in sorted({str(o["cluster"]) for o in self.node_overrides.values() if "cluster" in o} - {CLUSTER}):
            ShareStore(self.share, other, "lab").ensure()  # --second-cluster's trees too
        ensure_dir(self.dir / "logs", 0o700)
        bin_dir = ensure_dir(self.dir / "bin", 0o700)
        emu_path = self.dir / "emulation.json"
        emulation.dump(emu_path)
        # The node's own settings when its boot set them (a per-node image: lab/nodeimage.py).
        forked = mode == runners.PROCESSES and emulation.fork_server
        for tool, where in (("kubeadm", "lab/kubeadm/"), ("k3s", "lab/k3s.py")):
            # Through the fork server (lab/forkclient.py), or an interpreter of its own.
            sock = str(self.fork_socket) if forked else ""
            run = shlex.join(forkclient.launcher(tool, sys.executable, sock))
            export = f"export {forkclient.SOCKET_ENV}={shlex.quote(sock)}\n" if forked else ""
            shim = bin_dir / tool
            shim.write_text(
                f"#!/bin/sh\n# EMULATED {tool} (ephemeral-k8s lab): see {where}\n"
                f'export {EMULATION_ENV}="${{{EMULATION_ENV}:-{emu_path}}}"\n{export}exec {run} "$@"\n'
            )
            shim.chmod(0o700)
        nodes = [(f"control{i}", "control", control_address(i)) for i in range(control)]
        nodes += [(f"worker{i}", "worker", worker_address(i)) for i in range(workers)]
        hosts = "127.0.0.1 localhost\n" + f"{VIP} {VIP_NAME}\n" + f"{SECOND_VIP} {SECOND_VIP_NAME}\n"
        hosts += f"{MANAGER} manager\n"
        hosts += "".join(f"{addr} {name}\n" for name, _, addr in nodes)
        state = LabState(
            prefix=self.prefix, dir=str(self.dir), share=str(self.share), emulation=asdict(emulation), mode=mode
        )
        self.save(state)
        netns.create_hub(self.prefix)
        state.manager = netns.add_node(self.prefix, "manager", MANAGER, PREFIX_LEN, hosts)
        self.start_prober(state)
        # It imports the emulated tools (~1 s) while the nodes' namespaces are made.
        fork_server = self.start_fork_server(state) if forked else None
        for name, role, addr in nodes:
            ns = netns.add_node(self.prefix, name, addr, PREFIX_LEN, hosts)
            root = self.dir / "nodes" / name
            cfg_path = self.dir / "config" / f"{name}.yaml"
            state.nodes.append(
                LabNode(
                    name=name,
                    role=role,
                    address=addr,
                    ns=ns,
                    root=str(root),
                    config=str(cfg_path),
                    log=str(self.dir / "logs" / f"{name}.log"),
                )
            )
        self.save(state)
        self.runner(state).configure(self, state, emulation, overrides or {})
        self.save(state)
        if fork_server is not None:
            self.wait_fork_server(fork_server)
        return state

    @staticmethod
    def runner(state: LabState) -> runners.NodeRunner:
        """The node runner of this lab's mode (:mod:`lab.runners`)."""
        return runners.runner(state.mode)

    def node_config(
        self,
        name: str,
        role: str,
        address: str,
        root: Path,
        kubeadm: Path,
        overrides: dict[str, Any],
        version: str = DEFAULT_KUBERNETES_VERSION,
    ) -> dict[str, Any]:
        """The node.yaml Warewulf would render for this node (docs/config.md), with the lab's
        paths: its own root, the emulated ``kubeadm`` and ``k3s`` beside it (``overrides``
        pick the distribution), ``service_manager: process``; the VIP
        ``10.0.0.99`` as ``vip.kubernetes.local:8443``; ``kubernetes.version`` the emulated
        tools' ``version``. ``overrides`` are merged last."""
        cfg: dict[str, Any] = {
            "cluster": CLUSTER,
            "role": role,
            "node": {"name": name, "address": address, "interface": "eth0"},
            "share": {"path": str(self.share)},
            "vip": {"address": VIP, "hostname": VIP_NAME, "port": 8443, "prefix_length": PREFIX_LEN},
            "kubernetes": {
                "version": version,
                "kubeadm": str(kubeadm),
                "k3s": str(kubeadm.parent / "k3s"),
                "extra_sans": [MANAGER],
            },
            "root": str(root),
            "service_manager": "process",
        }
        merge(cfg, overrides)
        merge(cfg, self.node_overrides.get(name, {}))
        return cfg

    def boot(self, state: LabState, node: LabNode) -> None:
        """Boot the node from a fresh root through its runner (processes: its agent in its
        namespace, as ek8s-node.service would at boot, output to ``node.log``; machines: a
        machine booting the image). Not waited for (it runs until stopped, so no timeout):
        :meth:`stop_node` and :meth:`down` end it. Sets ``node.pid``; the caller saves."""
        self.runner(state).boot(self, state, node)

    # -- faults -------------------------------------------------------------------------
    def stop_node(self, state: LabState, node: LabNode, crash: bool) -> None:
        """Stop every process of ``node``: SIGTERM first (a clean shutdown, SIGKILL after 5 s),
        or SIGKILL with the cable pulled at the same moment (``crash``: nothing it held answers
        any more); a machine is powered off, or killed with its cable pulled. Saves the node."""
        self.runner(state).stop(self, state, node, crash)
        self.save_nodes(state, node)

    def boot_node(self, state: LabState, node: LabNode) -> float:
        """Boot ``node`` as a PXE boot would: a fresh root (its tmpfs is gone), cable in,
        agent started. Returns the boot time (Unix seconds). Raises :class:`LabError` while its
        agent still runs."""
        if node.pid and _alive(node.pid):
            raise LabError(f"{node.name} is running; reboot or crash it first")
        netns.set_link(self.prefix, node.name, up=True)
        booted = time.time()
        self.boot(state, node)
        self.save_nodes(state, node)
        return booted

    def reboot_nodes(self, state: LabState, names: list[str], timeout_s: float = 180) -> float:
        """Reboot ``names`` together (processes: clean stop, wiped roots, boot; machines:
        ``systemctl reboot`` inside, :meth:`reboot_machines`); return seconds from boot (the
        reboot command for machines) to the last ``node_ready``. Raises :class:`LabError` as
        :meth:`wait_ready`."""
        if state.mode == runners.MACHINES:
            booted = time.time()
            self.reboot_machines(state, [state.node(n) for n in names])
        else:
            for name in names:
                self.stop_node(state, state.node(name), crash=False)
            booted = time.time()
            for name in names:
                self.boot_node(state, state.node(name))
        return self.wait_ready(state, timeout_s, since=booted, names=names) - booted

    def reboot_machines(self, state: LabState, nodes: list[LabNode]) -> None:
        """Run ``systemctl reboot`` inside each machine (as an operator on the node would);
        each machine's launcher boots it again on an empty RAM root. Returns once systemd
        took the job. Raises :class:`LabError` when a machine is not running or refuses."""
        for node in nodes:
            argv = self.runner(state).exec_argv(state, node, ["systemctl", "reboot"])
            res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if res.returncode != 0:
                raise LabError(f"{node.name}: systemctl reboot failed ({res.returncode}): {res.stderr.strip()}")

    def wait_whole(self, state: LabState, timeout_s: float = 60) -> dict[str, Any]:
        """Wait until the cluster is whole: every node Ready in the API and no other Node, one
        etcd member per control node, every HAProxy with exactly the control nodes UP, one VIP
        holder. Polls :meth:`report` every 0.5 s; returns it; raises :class:`LabError` with
        the last one when ``timeout_s`` seconds pass."""
        control = sorted(n.name for n in state.nodes if n.role == "control")
        deadline = time.monotonic() + timeout_s
        while True:
            r = self.report(state)
            nodes = r["nodes"]
            whole = (
                all(n["ready"] for n in nodes)
                and r["api_nodes"] == sorted(n.name for n in state.nodes)
                and r["etcd_members"] == len(control)
                and all(r["haproxy_backends_up"].get(c) == len(control) for c in control)
                and r["vip_holder"] in control
            )
            if whole:
                return r
            if time.monotonic() > deadline:
                raise LabError(f"cluster not whole after {timeout_s:.0f}s: {json.dumps(r)[:2000]}")
            time.sleep(0.5)

    def start_all(self, state: LabState) -> None:
        """Boot every node's agent at (nearly) the same moment; ``t0`` records it. Saves."""
        state.t0 = time.time()
        for node in state.nodes:
            self.boot(state, node)
        self.save(state)

    # -- waiting and reporting ----------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        """The share's ``events.jsonl`` (docs/share-protocol.md), oldest first, of every
        cluster on the share (a lab with a second cluster has two); unparseable lines are
        skipped, and there are none before the first agent writes one."""
        names = clusters_on(self.share)
        if names in ([], [CLUSTER]):
            return self.store().events()
        merged = [e for name in names for e in ShareStore(self.share, name, "lab").events()]
        return sorted(merged, key=lambda e: float(e["t"]))

    def store(self) -> ShareStore:
        """The lab's share, read through the share store like any operator tool."""
        return ShareStore(self.share, CLUSTER, "lab")

    def wait_ready(
        self, state: LabState, timeout_s: float, since: float, names: list[str] | None = None, progress: Any = None
    ) -> float:
        """Wait for a ``node_ready`` event after ``since`` from each node in ``names`` (all by
        default). ``since`` is in Unix seconds; ``progress(event, seconds since t0)`` sees
        every event from ``since`` on, once. Returns the time of the last one (Unix seconds). Raises :class:`LabError`
        after ``timeout_s`` seconds, or when a waited-for agent exits (with its log's tail)."""
        wanted = set(names or [n.name for n in state.nodes])
        deadline = time.monotonic() + timeout_s
        seen: dict[str, float] = {}
        shown = 0
        while True:
            events = self.events()
            for e in events[shown:]:
                if e["t"] >= since and progress:
                    progress(e, e["t"] - state.t0)
            shown = len(events)
            for e in events:
                if e["event"] == "node_ready" and e["t"] >= since and e["node"] in wanted:
                    seen.setdefault(e["node"], e["t"])
            if set(seen) >= wanted:
                return max(seen.values())
            for n in state.nodes:
                if n.name in wanted and n.pid and not _alive(n.pid):
                    raise LabError(f"the agent of {n.name} exited; last lines of {n.log}:\n{_tail(Path(n.log))}")
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(wanted - set(seen)))
                raise LabError(f"not Ready after {timeout_s:.0f}s: {missing} (logs in {self.dir}/logs)")
            time.sleep(0.1)

    @property
    def probe_socket(self) -> Path:
        """The UNIX socket of the lab's prober (:func:`lab.probe.serve`)."""
        return self.dir / "probe.sock"

    def start_prober(self, state: LabState) -> None:
        """Start the prober daemon in the manager namespace (it goes when the namespace is
        deleted); its output goes to ``logs/probe.log``. Not waited for: until its socket
        answers, :meth:`probe` says so and the waits poll again."""
        self._in_manager(state, "probe", ["lab.probe", "serve", "--socket", str(self.probe_socket)])

    def _in_manager(self, state: LabState, log: str, module_argv: list[str]) -> subprocess.Popen[bytes]:
        """``python -m <module_argv>`` in the manager namespace, in a session of its own, its
        output to ``logs/<log>.log``."""
        with open(self.dir / "logs" / f"{log}.log", "ab") as out:
            return subprocess.Popen(
                ["ip", "netns", "exec", state.manager, sys.executable, "-m", *module_argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    @property
    def fork_socket(self) -> Path:
        """The UNIX socket of the lab's fork server (:mod:`lab.forkserver`)."""
        return self.dir / "fork.sock"

    def start_fork_server(self, state: LabState) -> subprocess.Popen[bytes]:
        """Start the fork server in the manager namespace (it goes when the namespace is
        deleted; its children run in the nodes' namespaces and go with theirs); its output
        goes to ``logs/forkserver.log``. :meth:`wait_fork_server` waits for it."""
        return self._in_manager(state, "forkserver", ["lab.forkserver", "--socket", str(self.fork_socket)])

    def wait_fork_server(self, proc: subprocess.Popen[bytes], timeout_s: float = FORK_SERVER_START_S) -> None:
        """Return once the fork server ``proc`` has its socket (it imports the emulated tools
        first, ~1 s). Raises :class:`LabError` with its log's tail when it exits or has no
        socket within ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        while not self.fork_socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"the lab's fork server did not start:\n{_tail(self.dir / 'logs' / 'forkserver.log')}")
            time.sleep(0.05)

    def ask(self, request: dict[str, Any], timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any] | None:
        """One request to the prober (:func:`lab.probe.answer` gives the shapes), or None when
        it does not run or answer within ``timeout_s`` seconds."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout_s)
                sock.connect(str(self.probe_socket))
                sock.sendall(json.dumps(request).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        break
                    data += chunk
            return dict(json.loads(data))
        except (OSError, ValueError):
            return None

    def api(self, method: str, *args: Any, group: str = "CoreV1Api", **kwargs: Any) -> dict[str, Any] | None:
        """``<group>.<method>`` (``CoreV1Api`` or ``PolicyV1Api``) through the VIP with the
        operator's kubeconfig, from the manager namespace, by the prober (:func:`lab.probe.api_call`
        gives the answer's shape); None when the prober does not answer."""
        return self.ask(
            {"op": "api", "kubeconfig": str(self.store().admin_kubeconfig_path), "method": method,
             "args": list(args), "kwargs": kwargs, "group": group},
        )  # fmt: skip

    def probe(self, state: LabState) -> dict[str, Any]:
        """Ask the cluster from inside the lab's network: the prober's document
        (:func:`lab.probe.probe`), or ``{"nodes": "<why>", "phylactery": {}}`` while it does
        not answer (it starts with the lab's namespaces)."""
        urls = {n.name: f"https://{n.address}:9999" for n in state.nodes if n.role == "control"}
        store = self.store()
        doc = self.ask(
            {
                "op": "probe",
                "kubeconfig": str(store.admin_kubeconfig_path),
                "phylactery": urls,
                # As the operator's ek8s status: the control-only tree's CA and credential.
                "ca_file": str(store.phylactery_ca_path("control")),
                "token_file": str(store.token_path),
            }
        )
        if doc is None or "nodes" not in doc:
            return {"nodes": f"the lab's prober does not answer on {self.probe_socket}", "phylactery": {}}
        return doc

    def vip_holder(self, state: LabState) -> str | None:
        """The node whose namespace has the VIP, the names joined by commas when several do
        (split brain), or None."""
        holders = [n.name for n in state.nodes if VIP in netns.addresses(n.ns)]
        return holders[0] if len(holders) == 1 else (",".join(holders) if holders else None)

    def report(self, state: LabState) -> dict[str, Any]:
        """The report (keys in docs/lab.md, "Report"): seconds since the agents started, and
        the cluster now, plus ``emulated_kubeadm`` (:meth:`timings`). Never raises for a
        cluster that does not answer: what the probe could not read is under ``errors``."""
        events = [e for e in self.events() if e["t"] >= state.t0]

        def first(name: str) -> float | None:
            ts = [e["t"] - state.t0 for e in events if e["event"] == name]
            return round(min(ts), 3) if ts else None

        ready = [e["t"] - state.t0 for e in events if e["event"] == "node_ready"]
        seen = {e["node"] for e in events if e["event"] == "node_ready"}
        probe = self.probe(state)
        api = probe.get("nodes")
        api_nodes = {n["name"]: n for n in api} if isinstance(api, list) else {}
        phyl = probe.get("phylactery", {})
        etcd_counts = [len(s["etcd"]["members"]) for s in phyl.values() if isinstance(s, dict) and s["etcd"]["members"]]
        store = self.store()
        cluster = store.read_state().to_json() if store.exists() else {}
        return {
            "leader_claimed_s": first("leader_claimed"),
            "api_ready_s": first("api_ready"),
            "leader_ready_s": first("leader_ready"),
            "all_nodes_ready_s": round(max(ready), 3) if ready and seen >= {n.name for n in state.nodes} else None,
            "nodes": [
                {
                    "name": n.name,
                    "role": n.role,
                    "address": n.address,
                    "ready": bool(api_nodes.get(n.name, {}).get("ready")),
                }
                for n in state.nodes
            ],
            "api_nodes": sorted(api_nodes),
            "etcd_members": max(etcd_counts) if etcd_counts else 0,
            "haproxy_backends_up": {
                name: sum(1 for b in s["haproxy"]["backends"] if b["status"].startswith("UP"))
                if isinstance(s, dict)
                else 0
                for name, s in phyl.items()
            },
            "vip_holder": self.vip_holder(state),
            "generation": cluster.get("generation"),
            "leader": (cluster.get("leader") or {}).get("node"),
            "share": str(self.share),
            "emulated_kubeadm": self.timings(state),
            "events": [
                {
                    "t": round(e["t"] - state.t0, 3),
                    "node": e["node"],
                    "event": e["event"],
                    **{k: e[k] for k in ("kubeadm_s", "attempt", "epoch", "first_share_op_s", "cpu_s") if k in e},
                }
                for e in events
            ],
            "errors": {
                k: v
                for k, v in {
                    "api": api if isinstance(api, str) else None,
                    **{f"phylactery:{k}": v for k, v in phyl.items() if isinstance(v, str)},
                }.items()
                if v
            },
        }

    def timings(self, state: LabState) -> list[dict[str, Any]]:
        """Every emulated kubeadm command since the agents started, from ``timings.jsonl``
        (:class:`lab.kubeadm.workflow.Timings`; phases by their full names): ``{t, node,
        command, ok, phases: {name: seconds}}`` with ``t`` in seconds since ``t0``."""
        lines = []
        # Process mode: beside <dir>/emulation.json; machines: in <dir>/emulation/, bound in.
        for path in (self.dir / "timings.jsonl", self.dir / "emulation" / "timings.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                lines += path.read_text().splitlines()
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                d = json.loads(line)
                if d["t"] >= state.t0:
                    out.append(d | {"t": round(d["t"] - state.t0, 3)})
        return out

    # -- down ---------------------------------------------------------------------------
    def processes(self, state: LabState | None) -> list[psutil.Process]:
        """Every process of this lab now: the node runners (agents, machine launchers), what
        runs in the lab's namespaces (nodes, the manager with the prober), and anything whose
        command line names the lab's directory; never this process or its parents."""
        pids = {n.pid for n in state.nodes if n.pid} if state else set()
        pids.update(netns.pids_in(netns.existing(self.prefix)))
        me = psutil.Process()
        mine = {me.pid, *(p.pid for p in me.parents())}  # `ek8s lab --dir <dir> down` itself
        found = []
        for pid in pids - mine:
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(pid))
        for p in psutil.process_iter(["cmdline"]):
            if p.pid not in pids | mine and str(self.dir) in " ".join(p.info["cmdline"] or []):
                found.append(p)
        return found

    def down(self) -> list[str]:
        """Remove every namespace, process, /etc/netns entry and file of this lab, and the
        machines' cgroups. Idempotent. Returns only when none of the lab's processes is left,
        zombies included (:meth:`wait_gone`).
        Returns what was removed (``namespace <name>``, ``directory <path>``), for the operator."""
        removed = []
        try:
            state: LabState | None = self.load()
        except (LabError, ValueError, TypeError):
            state = None
        procs = self.processes(state)
        running = [n for n in state.nodes if n.pid and _alive(n.pid)] if state else []
        for n in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(n.pid, signal.SIGTERM)
        if state and state.mode == runners.MACHINES:
            # The launchers have nspawn power their machines off; wait for that (the
            # machines' mounts live in the launchers' mount namespaces and go with them).
            deadline = time.monotonic() + runners.MACHINE_STOP_TIMEOUT_S
            while time.monotonic() < deadline and any(_alive(n.pid) for n in running):
                time.sleep(0.1)
            for n in running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(n.pid, signal.SIGKILL)
            netns.kill_all_in([n.ns for n in state.nodes], grace_s=0.0, sig=signal.SIGKILL)
            for n in state.nodes:
                runners.MachineRunner.remove_cgroups(self, n)
        namespaces = sorted(netns.existing(self.prefix), key=lambda s: s.endswith("-hub"))
        netns.delete_all(namespaces)  # every namespace's processes stopped together, the hub deleted last
        removed += [f"namespace {ns}" for ns in namespaces]
        for etc in Path("/etc/netns").glob(f"{self.prefix}-*"):
            shutil.rmtree(etc, ignore_errors=True)
        left = wait_gone(procs, DOWN_REAP_S)
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
            removed.append(f"directory {self.dir}")
        removed += [f"(still there after {DOWN_REAP_S:.0f}s: process {p.pid})" for p in left]
        return removed


DOWN_REAP_S = 30.0  # how long `down` waits for the lab's processes, zombies included, to be gone


def wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Until none of ``procs`` exists any more, zombies included (a killed process stays a
    zombie until its parent reaps it: this process reaps its own children, orphans wait for
    init): SIGKILL to any still running, every 0.1 s, for up to ``timeout_s`` seconds. A
    zombie whose parent is a live process outside the lab (a test runner that started a
    node's agent, say) is that parent's to reap, not the lab's: it is not waited for.
    Returns those still there then."""
    deadline = time.monotonic() + timeout_s
    left = list(procs)
    lab_pids = {p.pid for p in procs}
    while True:
        still = []
        for p in left:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(p.pid, os.WNOHANG)  # our own child: reap it
            try:
                if not p.is_running():  # gone, or its pid reused (create time differs)
                    continue
                if p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
                elif p.ppid() not in (1, os.getpid()) and p.ppid() not in lab_pids:
                    continue  # held by a live parent outside the lab
            except psutil.NoSuchProcess:
                continue
            except psutil.Error:
                pass
            still.append(p)
        left = still
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


_alive = runners.alive


def second_cluster(nodes: list[str]) -> dict[str, dict[str, Any]]:
    """``node_overrides`` that make ``nodes`` a second cluster beside the lab's own: cluster
    :data:`lab.state.SECOND_CLUSTER` on the same share, its own VIP (``10.0.0.20`` as
    ``vip-b.kubernetes.local``, in every namespace's hosts) and VRRP router id (52), as two
    inventories on one Warewulf server make them (docs/operations.md)."""
    vip = {"address": SECOND_VIP, "hostname": SECOND_VIP_NAME, "virtual_router_id": SECOND_VRID}
    return {n: {"cluster": SECOND_CLUSTER, "vip": dict(vip)} for n in nodes}


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
