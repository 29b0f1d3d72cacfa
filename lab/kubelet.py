"""EMULATED kubelet for the lab: static pods from a manifest directory, Node registration and
status, nothing else.

Static pods (``pkg/kubelet/config/file.go``, ``pkg/kubelet/kuberuntime``): every
``--check-interval`` seconds (0.1 s by default; the real kubelet watches the directory with
inotify and re-lists it every 20 s) it stats ``--pod-manifest-path`` and its files, and reads
a file again only when its name, inode, size or mtime changed (as an inotify event would
say); the processes are checked and the pods synced on such a change and otherwise once a
second, the real kubelet's PLEG relist period (``pkg/kubelet/kubelet.go``
``genericPlegRelistPeriod``, 1 s), so an exited static pod is noticed within ~1 s as there. Each file there that is
not hidden (the real kubelet skips names starting with ``.``, so an atomic write through a
``.name.tmp`` file is never half-read) and decodes as a ``v1`` ``Pod`` is a desired pod; its
first container's ``command`` + ``args`` is run directly (no image, no container runtime) as
the node service named after the container (``etcd``, ``kube-apiserver``) through
:class:`core.services.ProcessServices`, so pid file and log are where ``kubeadm reset`` and
``ek8s lab down`` find them (``<root>/run/ek8s/services/<name>.pid``,
``<root>/var/log/ek8s/<name>.log``). As the real kubelet does:

* a changed command (the container's hash changes) stops the running process (SIGTERM,
  SIGKILL after 30 s, the pod's default grace period) and starts the new command at once;
* a manifest that disappears, or no longer decodes as a Pod (the real file source drops it,
  logging "Could not process manifest file"), stops its process;
* a process that exits is restarted with CrashLoopBackOff: at once the first time, then 10 s,
  20 s, 40 s ... at most 300 s after its previous start (``kuberuntime_manager.go``
  ``doBackOff``, ``flowcontrol.Backoff``); a changed command starts from no back-off;
* a process of a known static pod (``STATIC_SERVICES``) that runs with no manifest for it, or
  with another command than its manifest's, is stopped or restarted when the kubelet starts
  (the real kubelet kills containers of pods it no longer wants); one that runs exactly the
  manifest's command is adopted, not restarted;
* stopping the kubelet (SIGTERM) leaves its static pods running, as stopping the kubelet
  service leaves containers running.

Node status (``pkg/kubelet/kubelet_node_status.go``), in a thread of its own so a slow API
never delays the static pods: it reads ``--kubeconfig`` (client certificate
``system:node:<name>``), registers the Node (retried every 0.2 s until the API answers, as
the kubelet retries registration with back-off), and every ``--interval`` seconds replaces
its status with ``Ready=True`` and a fresh ``lastHeartbeatTime``, over one kept-alive HTTPS
connection as the real kubelet's client-go keeps one (HTTP/2) connection (a failed or closed
connection is replaced at the next request; a request on a reused connection that the
server had closed is sent once more on a new one), so a status update costs no TLS handshake
on either side. When it stops posting, the
emulated kube-controller-manager in :mod:`lab.apiserver` turns Ready Unknown after the grace
period. A Node deleted while the kubelet runs is **not** registered again, as no supported
kubelet does (:func:`core.versions.kubelet_reregisters_deleted_node`: ``registrationCompleted``
stays true; kubernetes#71398, #115761): every status update then fails with the kubelet's
``Error updating node status, will retry`` ``error getting node "<name>": nodes "<name>" not
found``, five tries a round (``nodeStatusUpdateRetry``), then ``Unable to update node status``
``update node status exceeds retry count``, until the kubelet restarts (a restart registers
it). ``--version`` is the kubelet's version (its ``kubeletVersion`` and the behaviour above).
It registers the Node with the labels of ``--node-labels`` and the taints of
``--register-with-taints`` (both only at registration, as the real kubelet:
``kubelet_node_status.go`` ``initialNode``), and refuses to start, as the real one does, with a
``kubernetes.io``/``k8s.io`` label a kubelet may not set.

Ports as the kubelet's: ``/healthz`` on 127.0.0.1:10248 (``healthzPort``, what kubeadm's
kubelet-check polls) and a listener on 10250 (the kubelet's API, whose port kubeadm's preflight
checks; the emulation accepts and closes connections there). A port that is taken is logged
and left (the real kubelet would exit).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import json
import os
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from core import noderoles, versions
from core.bootid import boot_id
from core.services import ProcessServices

# The static pods kubeadm writes; a running one of these with no manifest is stopped at start.
STATIC_SERVICES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
HEALTHZ_PORT = 10248  # kubelet --healthz-port (KubeletConfiguration healthzPort)
KUBELET_PORT = 10250  # kubelet --port
NODE_STATUS_UPDATE_RETRY = 5  # pkg/kubelet nodeStatusUpdateRetry
BACKOFF_INITIAL_S = 10.0  # kubelet's CrashLoopBackOff: initial 10 s, doubling
BACKOFF_MAX_S = 300.0  # ... up to 5 min
STOP_GRACE_S = 30.0  # a Pod's default terminationGracePeriodSeconds
RELIST_S = 1.0  # pkg/kubelet genericPlegRelistPeriod: how often the pods' processes are checked


def log(msg: str) -> None:
    """One line on stdout (the service log), with the time as the kubelet's klog has it."""
    print(f"{time.strftime('%H:%M:%S')} emulated kubelet: {msg}", flush=True)


def rfc3339(t: float) -> str:
    """Unix seconds as the API's timestamp format, UTC to the second (``2006-01-02T15:04:05Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# -- static pods ------------------------------------------------------------------------
@dataclass(frozen=True)
class StaticPod:
    """A manifest's pod: ``service`` is its first container's name, ``argv`` that container's
    ``command`` + ``args``, ``pod`` ``<metadata.name>-<node>_<namespace>`` as kubelet events
    name a static pod."""

    service: str
    argv: tuple[str, ...]
    pod: str


def read_manifest(path: Path, node: str) -> StaticPod:
    """The :class:`StaticPod` in ``path``. Raises ``ValueError`` when the file is not a ``v1``
    ``Pod`` with a first container that has a name and a command, ``OSError`` when it cannot
    be read, ``yaml.YAMLError`` when it is not YAML."""
    doc = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(doc, dict) or doc.get("apiVersion") != "v1" or doc.get("kind") != "Pod":
        raise ValueError("not a v1 Pod")
    meta = doc.get("metadata") or {}
    containers = (doc.get("spec") or {}).get("containers") or []
    if not containers or not containers[0].get("name") or not containers[0].get("command"):
        raise ValueError("the Pod's first container needs a name and a command")
    c = containers[0]
    argv = tuple(str(a) for a in [*c["command"], *(c.get("args") or [])])
    pod = f"{meta.get('name', c['name'])}-{node}_{meta.get('namespace', 'default')}"
    return StaticPod(str(c["name"]), argv, pod)


class StaticPods:
    """The static pods of one node: :meth:`sync` makes the running processes match the
    manifests in ``manifest_dir``; ``now`` is ``time.monotonic`` (tests may pass a fake)."""

    def __init__(self, manifest_dir: Path, root: Path, node: str, now: Any = time.monotonic) -> None:
        self.dir, self.node, self.now = manifest_dir, node, now
        self.services = ProcessServices(root)
        self.started: dict[str, float] = {}  # service -> when we last started it
        self.backoff: dict[str, float] = {}  # service -> back-off for its next restart
        self.argv: dict[str, tuple[str, ...]] = {}  # service -> the command we run for it
        self.waiting: set[str] = set()  # services in back-off, already logged
        self.bad: dict[Path, str] = {}  # manifests that do not decode, already logged
        # path -> (its stat signature, the pod or the error it decoded to): a file is read
        # again only when the signature changes, as the real kubelet re-reads on inotify.
        self.decoded: dict[Path, tuple[tuple[int, int, int], StaticPod | Exception]] = {}

    def signature(self) -> tuple[tuple[str, int, int, int], ...] | None:
        """Name, inode, size and mtime (ns) of every non-hidden file in the manifest
        directory, sorted; None when there is no directory. A changed signature is what an
        inotify event on the directory would have told the real kubelet."""
        try:
            entries = [e for e in os.scandir(self.dir) if not e.name.startswith(".")]
        except FileNotFoundError:
            return None
        out = []
        for e in entries:
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            if e.is_file():
                out.append((e.name, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(sorted(out))

    def desired(self) -> dict[str, StaticPod]:
        """service -> :class:`StaticPod` for every manifest that decodes (a missing directory
        is no pods)."""
        out: dict[str, StaticPod] = {}
        try:
            paths = sorted(p for p in self.dir.iterdir() if not p.name.startswith(".") and p.is_file())
        except FileNotFoundError:
            return out
        seen = set(paths)
        for path in [p for p in self.decoded if p not in seen]:
            del self.decoded[path]
        for path in paths:
            try:
                st = path.stat()
                sig = (st.st_ino, st.st_size, st.st_mtime_ns)
                cached = self.decoded.get(path)
                if cached is not None and cached[0] == sig:
                    if isinstance(cached[1], Exception):
                        raise cached[1]
                    sp = cached[1]
                else:
                    try:
                        sp = read_manifest(path, self.node)
                    except (ValueError, yaml.YAMLError) as err:
                        self.decoded[path] = (sig, err)
                        raise
                    self.decoded[path] = (sig, sp)
            except (OSError, ValueError, yaml.YAMLError) as err:
                if self.bad.get(path) != str(err):
                    log(f'Could not process manifest file path="{path}": {err}')
                    self.bad[path] = str(err)
                continue
            self.bad.pop(path, None)
            out[sp.service] = sp
        return out

    def _running_argv(self, service: str) -> tuple[str, ...] | None:
        pid = self.services.pid(service)
        if pid is None:
            return None
        try:
            return tuple(psutil.Process(pid).cmdline())
        except psutil.Error:
            return None

    def adopt(self) -> None:
        """At start: adopt what runs exactly as its manifest says; stop static-pod services
        that run without a manifest (a changed command is restarted by the next :meth:`sync`)."""
        want = self.desired()
        for service in sorted(set(STATIC_SERVICES) | set(want)):
            running = self._running_argv(service)
            if running is None:
                continue
            if service not in want:
                log(f"killing {service}: no static pod manifest for it")
                self.services.stop(service, STOP_GRACE_S)
            elif running == want[service].argv:
                log(f'adopted running container {service} of static pod "{want[service].pod}"')
                self.argv[service] = running
                self.started[service] = self.now()
            else:
                self.argv[service] = running  # sync() sees the difference and restarts it

    def sync(self) -> None:
        """One pass: start, restart (changed command, or exited after its back-off) and stop
        (manifest gone) as the module says. Raises :class:`core.services.ServiceError` when a
        command cannot be started at all (the caller logs it and tries again)."""
        want = self.desired()
        for service in [s for s in self.argv if s not in want]:
            log(f"static pod of {service} removed: stopping its container")
            self.services.stop(service, STOP_GRACE_S)
            self.argv.pop(service, None)
            self.started.pop(service, None)
            self.backoff.pop(service, None)
            self.waiting.discard(service)
        for service, sp in want.items():
            running = self.services.is_running(service)
            known = self.argv.get(service)
            if known is not None and known != sp.argv:
                if running:
                    log(f'container {service} of static pod "{sp.pod}" has a changed command: killing it to restart')
                    self.services.stop(service, STOP_GRACE_S)
                self.backoff.pop(service, None)  # a new container hash: no back-off history
                self.started.pop(service, None)
                running = False
            if running:
                continue
            last = self.started.get(service)
            if last is not None and self.now() - last > 2 * BACKOFF_MAX_S:
                self.backoff.pop(service, None)  # it ran long enough: its back-off is forgotten
            if last is not None:
                delay = self.backoff.get(service, 0.0)
                if self.now() - last < delay:
                    if service not in self.waiting:
                        log(
                            f"Back-off {delay:g}s restarting failed container={service} pod={sp.pod} "
                            f"(see {self.services.log_path(service)})"
                        )
                        self.waiting.add(service)
                    continue
                self.backoff[service] = min(BACKOFF_MAX_S, max(BACKOFF_INITIAL_S, 2 * delay))
                log(f'container {service} of static pod "{sp.pod}" exited: restarting it')
            else:
                log(f'starting container {service} of static pod "{sp.pod}"')
            self.waiting.discard(service)
            self.services.start(service, list(sp.argv))
            self.argv[service] = sp.argv
            self.started[service] = self.now()


def run_static_pods(pods: StaticPods, interval_s: float, stop: threading.Event) -> None:
    """:meth:`StaticPods.adopt`, then until ``stop`` is set: every ``interval_s`` seconds the
    manifests' :meth:`StaticPods.signature`, and :meth:`StaticPods.sync` when it changed (the
    real kubelet's inotify) or :data:`RELIST_S` after the previous sync (its PLEG relist);
    errors are logged and the next pass tries again."""
    pods.adopt()
    last_sig: object = ()  # never a signature: the first pass syncs
    last_sync = float("-inf")
    while not stop.is_set():
        try:
            sig = pods.signature()
            if sig != last_sig or time.monotonic() - last_sync >= RELIST_S:
                last_sig, last_sync = sig, time.monotonic()
                pods.sync()
        except Exception as err:  # the kubelet keeps going whatever one pass hits
            last_sig = ()  # try the whole pass again next time
            log(f"static pod sync failed: {type(err).__name__}: {err}")
        stop.wait(interval_s)


# -- node status ------------------------------------------------------------------------
def _context(kubeconfig: Path, workdir: Path) -> tuple[str, ssl.SSLContext]:
    from lab.pki import parse_kubeconfig

    server, ca, (cert, key) = parse_kubeconfig(kubeconfig.read_bytes())
    ctx = ssl.create_default_context(cadata=ca.decode())
    pem = workdir / "kubelet-client-current.pem"
    pem.write_bytes(cert + key)
    pem.chmod(0o600)
    ctx.load_cert_chain(str(pem))
    return server, ctx


class ApiConnection:
    """One kept-alive HTTPS connection to ``server`` (``https://host:port``) with ``ctx``, as
    the kubelet's client keeps one: :meth:`request` reuses it, and opens a new one when there
    is none or the server closed the idle one (then the request is sent once more, on the new
    connection; a fresh connection's failure is raised)."""

    def __init__(self, server: str, ctx: ssl.SSLContext) -> None:
        url = urllib.parse.urlsplit(server)
        self.host, self.port, self.ctx = url.hostname or "", url.port or 443, ctx
        self.conn: http.client.HTTPSConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, body: object, timeout: float = 5) -> int:
        """The HTTP status of ``method path`` with ``body`` as JSON. Raises ``OSError`` when
        the API cannot be reached or answers no HTTP (the connection is dropped)."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        for reused in (self.conn is not None, False):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)
            elif self.conn.sock is not None:
                self.conn.sock.settimeout(timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException) as err:
                self.close()
                if reused and isinstance(err, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
                    continue  # the server closed the idle connection: once more, on a new one
                raise err if isinstance(err, OSError) else OSError(f"{type(err).__name__}: {err}") from err
            if resp.will_close:
                self.close()
            return int(resp.status)
        raise OSError("unreachable")  # the loop returns or raises


class _Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path.split("?")[0] == "/healthz"
        body = b"ok" if ok else b"404 page not found\n"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def serve_ports(healthz_port: int = HEALTHZ_PORT, port: int = KUBELET_PORT) -> None:
    """Start the kubelet's ports in daemon threads (see the module): ``/healthz`` on
    127.0.0.1:``healthz_port`` (10248), and a listener on 0.0.0.0:``port`` (10250) that
    accepts and closes. 0 leaves one out (the kubelet's ``--healthz-port=0``)."""

    class Server(http.server.ThreadingHTTPServer):
        allow_reuse_address = True
        daemon_threads = True

    if healthz_port:
        try:
            healthz = Server(("127.0.0.1", healthz_port), _Healthz)
            threading.Thread(target=healthz.serve_forever, daemon=True).start()
        except OSError as err:
            log(f"healthz server on 127.0.0.1:{healthz_port} failed to start: {err}")
    if not port:
        return
    try:
        api = socket.create_server(("0.0.0.0", port), reuse_port=False)
    except OSError as err:
        log(f"listener on :{port} failed to start: {err}")
        return

    def accept() -> None:
        while True:
            conn, _ = api.accept()
            with contextlib.suppress(OSError):
                conn.close()

    threading.Thread(target=accept, daemon=True).start()


def post_status(args: argparse.Namespace, server: str, ctx: ssl.SSLContext, stop: threading.Event) -> None:
    """Register the Node and post its status until ``stop`` is set (see the module)."""
    api = ApiConnection(server, ctx)
    labels = {**args.labels, "kubernetes.io/hostname": args.node_name, "kubernetes.io/os": "linux"}
    if args.control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
    node = {
        "metadata": {"name": args.node_name, "labels": labels},
        "spec": {"taints": [t.to_api() for t in args.taints]} if args.taints else {},
        "status": {"addresses": [{"type": "InternalIP", "address": args.node_ip}]},
    }
    node_info = {
        "architecture": "amd64",
        # The kubelet reports the kernel's boot id (cadvisor's MachineInfo.BootID, read from
        # /proc/sys/kernel/random/boot_id); a lab node's is core.bootid's, as its agent's.
        "bootID": boot_id(args.node_root),
        "containerRuntimeVersion": "emulated://0",
        "kernelVersion": os.uname().release,
        "kubeProxyVersion": "",
        "kubeletVersion": f"{args.version}-emulated",
        "machineID": args.node_name,
        "operatingSystem": "linux",
        "osImage": "ephemeral-k8s lab (emulated kubelet)",
        "systemUUID": args.node_name,
    }
    registered = False
    failed = ""
    reregisters = versions.kubelet_reregisters_deleted_node(args.version)
    while not stop.is_set():
        try:
            if not registered:
                code = api.request("POST", "/api/v1/nodes", node, timeout=2)
                registered = code in (201, 409)
                log(f"register node {args.node_name}: HTTP {code}")
                if not registered:
                    stop.wait(0.2)
                    continue
            now = rfc3339(time.time())
            status = {
                "addresses": [
                    {"type": "InternalIP", "address": args.node_ip},
                    {"type": "Hostname", "address": args.node_name},
                ],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status (emulated)",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "nodeInfo": node_info,
            }
            code = api.request("PUT", f"/api/v1/nodes/{args.node_name}/status", {"status": status})
            if code == 404 and reregisters:
                registered = False
                continue
            if code == 404:  # deleted while we run: tryUpdateNodeStatus fails every try
                missing = f'error getting node "{args.node_name}": nodes "{args.node_name}" not found'
                for _ in range(NODE_STATUS_UPDATE_RETRY):
                    log(f'"Error updating node status, will retry" err="{missing}"')
                log('"Unable to update node status" err="update node status exceeds retry count"')
            failed = ""
        except OSError as err:
            if str(err) != failed:  # once per distinct failure, not every 0.2 s
                log(f"{'registration' if not registered else 'status update'} failed: {err}")
                failed = str(err)
            if not registered:
                stop.wait(0.2)
                continue
        stop.wait(args.interval)


def node_flags(labels_flag: str, taints_flag: str) -> tuple[dict[str, str], tuple[noderoles.Taint, ...]]:
    """``--node-labels`` and ``--register-with-taints`` (comma-separated) as the kubelet reads
    them, with its check (``cmd/kubelet/app/options/options.go`` ``ValidateKubeletFlags``): a
    label in the ``kubernetes.io`` or ``k8s.io`` namespace that a kubelet may not set on its
    own Node (:func:`core.noderoles.kubelet_may_set`) stops the kubelet. Raises
    ``ValueError`` with the kubelet's message."""
    labels = noderoles.parse_labels([i for i in labels_flag.split(",") if i])
    unknown = sorted(k for k in labels if not noderoles.kubelet_may_set(k))
    if unknown:
        raise ValueError(
            f"unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: {unknown}\n"
            "--node-labels in the 'kubernetes.io' namespace must begin with an allowed prefix "
            "(kubelet.kubernetes.io, node.kubernetes.io) or be in the specifically allowed set"
        )
    return labels, noderoles.parse_taints([i for i in taints_flag.split(",") if i])


def _version(text: str) -> str:
    try:
        return str(versions.parse(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    """Run the emulated kubelet until SIGTERM (exit 0, leaving static pods running).

    ``--kubeconfig`` is the node's ``kubelet.conf``; ``--node-ip`` an IPv4 address string;
    ``--interval`` seconds between status updates (the real default is 10 s);
    ``--pki-dir`` where the client certificate PEM goes (a temporary directory by default);
    ``--pod-manifest-path`` the static pod directory (``/etc/kubernetes/manifests`` on a
    node; none: no static pods); ``--node-root`` the node's root, below which services keep
    pid files and logs (``/`` on a node); ``--check-interval`` seconds between two reads of
    the manifests; ``--version`` the kubelet's version (``v1.36.4``); ``--healthz-port`` and
    ``--port`` its ports (0: none, as a kubelet outside a lab node's namespace must). Raises at start what
    :func:`lab.pki.parse_kubeconfig` raises, or ``OSError`` (``ssl.SSLError`` is one) when
    the kubeconfig cannot be read or used.
    """
    p = argparse.ArgumentParser(description="EMULATED kubelet (ephemeral-k8s lab only)")
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--node-name", required=True)
    p.add_argument("--node-ip", required=True)
    p.add_argument("--control-plane", action="store_true")
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--pki-dir", type=Path, default=None)
    p.add_argument("--pod-manifest-path", type=Path, default=None)
    p.add_argument("--node-root", type=Path, default=Path("/"))
    p.add_argument("--check-interval", type=float, default=0.1)
    p.add_argument("--node-labels", default="", help="k=v,... set at registration")
    p.add_argument("--register-with-taints", default="", help="k=v:Effect,... set at registration")
    p.add_argument("--version", default=versions.DEFAULT_KUBERNETES_VERSION, type=_version)
    p.add_argument("--healthz-port", type=int, default=HEALTHZ_PORT)
    p.add_argument("--port", type=int, default=KUBELET_PORT)
    args = p.parse_args(argv)
    try:
        args.labels, args.taints = node_flags(args.node_labels, args.register_with_taints)
    except ValueError as err:
        log(f"failed to validate kubelet flags: {err}")
        return 1
    stop = threading.Event()
    pods_thread: threading.Thread | None = None

    def _terminate(*_: object) -> None:
        # Let a static pod pass finish (a process started but not yet in its pid file would
        # be lost to `kubeadm reset`), then exit; the static pods keep running.
        stop.set()
        if pods_thread is not None:
            pods_thread.join(timeout=3)
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, _terminate)
    log(f"starting {args.version} for node {args.node_name} (static pods from {args.pod_manifest_path})")
    serve_ports(args.healthz_port, args.port)
    if args.pod_manifest_path is not None:
        pods = StaticPods(args.pod_manifest_path, args.node_root, args.node_name)
        pods_thread = threading.Thread(target=run_static_pods, args=(pods, args.check_interval, stop), daemon=True)
        pods_thread.start()
    workdir = args.pki_dir or Path(tempfile.mkdtemp())
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    server, ctx = _context(args.kubeconfig, workdir)
    post_status(args, server, ctx, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
