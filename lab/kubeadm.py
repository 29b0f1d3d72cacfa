"""EMULATED kubeadm for the lab: exactly the subset of kubeadm's CLI the driver calls, with the
phases, order, waits and messages of kubeadm 1.32 where the project depends on them.

Paths below are under ``cmd/kubeadm/app/`` in kubernetes/kubernetes (v1.32).

* ``kubeadm init --config F --upload-certs [--rootfs R]``: preflight, the cluster PKI (ECDSA
  P-256), admin.conf, super-admin.conf and kubelet.conf, the static Pod manifests of etcd and
  the emulated kube-apiserver (``phases/etcd/local.go``, ``phases/controlplane``), the
  emulated kubelet, which runs them (:mod:`lab.kubelet`), the wait for etcd and the API
  server, then through the control-plane endpoint (the VIP) the ``kubeadm-config``
  ConfigMap, the sealed ``kubeadm-certs`` Secret, the bootstrap token and ``cluster-info``.
* ``kubeadm join --config F [--rootfs R] [--skip-phases P,...]``, in kubeadm's phase order
  (``cmd/join.go``): ``preflight`` (``kubelet.conf`` must not exist; token discovery:
  ``cluster-info`` JWS for the token, CA pin); on a control node ``control-plane-prepare``
  (download ``kubeadm-certs``, this node's certificates, admin.conf, the kube-apiserver
  manifest) and ``check-etcd`` (``cmd/phases/join/checketcd.go``,
  ``phases/etcd/local.go`` ``CheckLocalEtcdClusterStatus``: the status of *every* member,
  :meth:`ClusterEtcd.cluster_status`); ``kubelet-start`` (the same-name Node check of
  ``cmd/phases/join/kubelet.go``, then the kubelet's certificate, a CSR for workers, and the
  kubelet); on a control node ``control-plane-join/etcd``
  (``phases/etcd/local.go`` ``CreateStackedEtcdStaticPodManifestFile``: add this node's
  member as a learner, write the etcd manifest, promote, ``WaitForClusterAvailable``) and
  the wait for its API server. ``JoinConfiguration.skipPhases`` (or ``--skip-phases``) may
  name ``check-etcd``; ``JoinConfiguration.timeouts.etcdAPICall`` (Go duration, default
  ``2m0s``) bounds each etcd call's retries as in kubeadm.
* ``kubeadm reset -f [--rootfs R]`` (``cmd/reset.go``, ``cmd/phases/reset/
  removeetcdmember.go``, ``cleanupnode.go``): reads ``kubeadm-config`` and this node's
  registration through the API server with admin.conf, removes this node's etcd member *by
  peer URL* through the members the API server's control-plane Nodes lead to, only warns
  when it cannot ("[reset] Failed to remove etcd member: ..., please manually remove this
  etcd member using etcdctl"), and wipes ``/var/lib/etcd`` either way; stops the kubelet
  and the static pods' processes; deletes ``/etc/kubernetes`` and ``/var/lib/kubelet``.
* ``kubeadm token create TOKEN --ttl D`` and ``kubeadm init phase upload-certs --upload-certs
  --certificate-key KEY``, through the control-plane endpoint with the node's admin.conf.

Behaviour that matters here, as kubeadm 1.32 has it:

* **A peer URL that is still a member is reused, not refused.** ``util/etcd/etcd.go``
  ``addMember`` lists the members first and, when one has this node's peer URL, skips
  ``member add`` ("The peer URL ... already exists. Skipping etcd member addition",
  kubernetes#127491, in 1.32 and backported to 1.28-1.31); ``MemberPromote`` returns early
  for a voting member ("Member ... already promoted."). The manifest then starts a new etcd
  with that member's name, ``--initial-cluster-state=existing`` and an empty data
  directory: the real etcd takes the old identity, the leader sends it a commit index its
  empty log does not have, and it panics (``tocommit(N) is out of range [lastIndex(0)].
  Was the raft log corrupted, truncated, or lost?``, etcd-io/etcd#10254); the kubelet
  restarts it with back-off; ``WaitForClusterAvailable`` (8 tries, 5 s apart, each asking
  every member for up to ``etcdAPICall``) gives up: ``error execution phase
  control-plane-join/etcd: error creating local etcd static pod manifest file: timeout
  waiting for etcd cluster to be available``. (That is real etcd's doing, so it happens when
  the leader is one that replicated to the old member; a leader elected after the old member
  died knows no commit index for it, the empty member catches up under the old identity and
  the join succeeds.) With a *dead* stale member the join stops earlier, at check-etcd.
* **check-etcd** fails with ``etcd cluster is not healthy: failed to dial endpoint
  https://<addr>:2379 with maintenance client: context deadline exceeded`` when any member
  with a name that is not a learner does not answer within ``etcdAPICall``: a dead member
  that nobody removed blocks every later control-plane join.
* **The same-name Node refusal** ("a Node with name ... and status "Ready" already exists")
  comes in ``kubelet-start``, after the certificates, kubeconfigs, manifests and
  check-etcd: a refused control-plane join leaves those files behind.
* Errors print ``error execution phase <phase>: <message>`` on stderr, as kubeadm does.

Where it still differs from kubeadm 1.32:

* etcd endpoints come from the control-plane Nodes' InternalIPs, not from the etcd Pods'
  ``kubeadm.kubernetes.io/etcd.advertise-client-urls`` annotation (there are no Pods in the
  emulated API); kubeadm replaces them with the member list at once (``Sync``), as here;
* reset takes this node's API endpoint from its local kube-apiserver manifest, where kubeadm
  reads it from the API server's mirror Pod (which the kubelet copies from that manifest),
  and does not read the ``kubelet-config`` ConfigMap;
* etcd calls are retried every 0.1 s, where kubeadm retries every 0.5 s
  (``EtcdAPICallRetryInterval``): ``--join-seconds`` models kubeadm's duration;
* discovery fails at once when ``cluster-info`` has no signature for the token, where kubeadm
  polls until its discovery timeout (``DefaultDiscoveryTimeout``, 5 min);
* the kubelet's client certificate of a control node is issued by kubeadm itself (no TLS
  bootstrap), and only the etcd and kube-apiserver static pods exist.

Paths are taken relative to ``--rootfs`` (kubeadm chroots there; we prefix), also inside the
manifests. Durations from ``$EK8S_EMULATION`` (``init_s``, ``join_s``) are spent where kubeadm
waits for the control plane. docs/lab.md says what else is emulated.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hmac
import ipaddress
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from core.etcd import EtcdClient, EtcdError, EtcdMember, client_ssl_context
from core.fileperm import ensure_dir, write_atomic
from core.joinmaterial import TOKEN_RE, ca_cert_hash
from core.services import ProcessServices
from lab import emulation, pki
from lab.nodekit import Api, Root, ToolError, ctx_for, etcd_argv, wait_local_api

CERTS_TTL_S = 7200.0  # the kubeadm-certs Secret's lifetime (constants.go: DefaultCertTokenDuration, 2 h)
CERT_FILES = [
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
]


class KubeadmError(ToolError):
    """A refusal or failure; :func:`main` prints ``error execution phase <phase>: <message>``
    on stderr (the phase :func:`phase` set last, e.g. ``kubelet-start``), as kubeadm does,
    and exits 1."""


_PHASE: list[str] = []  # the workflow phase running now (kubeadm's phase runner names it in errors)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Run the block as kubeadm's workflow phase ``name`` (``check-etcd``,
    ``control-plane-join/etcd`` ...): an error escaping it is reported under that name."""
    _PHASE.append(name)
    yield  # an exception leaves the name on the stack for main() to print
    _PHASE.pop()


def klog(level: int, msg: str) -> None:
    """A line kubeadm logs only at ``--v=<level>`` or higher (klog ``V(level).Info``); printed
    here always, marked with its level, so the lab's logs show what kubeadm decided."""
    print(f"[v={level}] {msg}", flush=True)


def warn(msg: str, source: str) -> None:
    """A klog warning as kubeadm prints it on stderr (``W<MMDD> <time> <pid> <file>] msg``;
    klog adds the line number, which the emulation does not pretend to know)."""
    t = time.time()
    stamp = time.strftime("%m%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1e6):06d}"
    print(f"W{stamp} {os.getpid():>7} {source}] {msg}", file=sys.stderr, flush=True)


class Phases:
    """Seconds spent per phase of one emulated command, appended as a JSON line to
    ``timings.jsonl`` beside ``$EK8S_EMULATION`` (the lab's benchmark reads it)."""

    def __init__(self) -> None:
        import psutil

        self.started = psutil.Process().create_time()
        self.last = time.time()
        self.phases: dict[str, float] = {"python_start": round(self.last - self.started, 3)}
        self.node = ""

    def mark(self, name: str) -> None:
        """Charge the seconds since the last mark to phase ``name`` (added up if repeated)."""
        now = time.time()
        self.phases[name] = round(self.phases.get(name, 0.0) + now - self.last, 3)
        self.last = now

    def save(self, command: str, ok: bool) -> None:
        """Append ``{t, node, command, ok, phases}`` to ``timings.jsonl`` beside the file
        ``$EK8S_EMULATION`` names; nothing without it. Raises ``OSError``."""
        path = os.environ.get(emulation.ENV)
        if not path:
            return
        line = {"t": time.time(), "node": self.node, "command": command, "ok": ok, "phases": self.phases}
        with open(Path(path).parent / "timings.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


PHASES = Phases()


def say(msg: str) -> None:
    """One line of progress on stdout, flushed (the driver logs kubeadm's output as it comes)."""
    print(msg, flush=True)


def load_docs(path: Path) -> dict[str, dict[str, Any]]:
    """The documents of a kubeadm ``--config`` file by ``kind`` (``InitConfiguration``,
    ``ClusterConfiguration``, ``JoinConfiguration``). Raises :class:`KubeadmError` unless each
    is ``kubeadm.k8s.io/v1beta4`` (the only API version the driver writes), ``OSError`` and
    ``yaml.YAMLError``."""
    docs = {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}
    for d in docs.values():
        if d.get("apiVersion") != "kubeadm.k8s.io/v1beta4":
            raise KubeadmError(f"{path}: unsupported apiVersion {d.get('apiVersion')!r} for {d['kind']}")
    return docs


_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_duration(text: str) -> float:
    """A Go duration (``2m0s``, ``86400s``, ``500ms``, ``1.5h``) in seconds. Raises
    ``ValueError`` on anything else."""
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)", text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


@dataclass(frozen=True)
class Timeouts:
    """The ``timeouts`` of a v1beta4 Init/Join/ResetConfiguration that the emulation honours
    (``apis/kubeadm/v1beta4``, defaults from ``constants.go``), in seconds. ``etcd_api_call_s``
    bounds the retries of each etcd call (``EtcdAPICall``, 2 min)."""

    etcd_api_call_s: float = 120.0

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Timeouts:
        """From a configuration document's ``timeouts`` (Go durations). Raises
        :class:`KubeadmError` on a malformed one."""
        t = doc.get("timeouts") or {}
        try:
            return cls(etcd_api_call_s=go_duration(t["etcdAPICall"]) if "etcdAPICall" in t else 120.0)
        except ValueError as err:
            raise KubeadmError(f"timeouts.etcdAPICall: {err}") from err


# -- control-plane pieces ---------------------------------------------------------------
MANIFESTS = "/etc/kubernetes/manifests"
ETCD_POD = "etcd"
APISERVER_POD = "kube-apiserver"
ETCD_CLIENT_URLS_ANNOTATION = "kubeadm.kubernetes.io/etcd.advertise-client-urls"
APISERVER_ENDPOINT_ANNOTATION = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"


def node_certs(r: Root, name: str, address: str, cluster: dict[str, Any], ca: pki.Pair, etcd_ca: pki.Pair) -> None:
    """apiserver, etcd server/peer, etcd clients: what each control-plane node makes itself
    (``phases/certs/certlist.go``). SANs as ``util/pkiutil/pki_helpers.go`` gives them: the
    apiserver's node name, ``kubernetes.default.svc...``, the first service IP, ``address``
    (an IPv4 string), the endpoint's host and ``certSANs``; etcd's node name, ``localhost``,
    ``address`` and ``127.0.0.1`` (kubeadm also adds ``::1``). Raises ``KeyError`` when
    ``cluster`` (a ClusterConfiguration dict) lacks ``controlPlaneEndpoint`` or
    ``networking.serviceSubnet``, ``OSError`` on write."""
    endpoint_host = cluster["controlPlaneEndpoint"].rsplit(":", 1)[0]
    service_ip = str(next(ipaddress.IPv4Network(cluster["networking"]["serviceSubnet"]).hosts()))
    sans = [*cluster.get("apiServer", {}).get("certSANs", []), endpoint_host]
    ips = (*(s for s in sans if _is_ip(s)), address, service_ip)
    dns = (name, "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
    dns += tuple(s for s in sans if not _is_ip(s))
    pki.write_pair(r.pki, "apiserver", pki.issue(ca, "kube-apiserver", dns=dns, ips=ips, server=True))
    pki.write_pair(r.pki, "apiserver-etcd-client", pki.issue(etcd_ca, "kube-apiserver-etcd-client", client=True))
    etcd_dir = r.pki / "etcd"
    both = {"dns": (name, "localhost"), "ips": (address, "127.0.0.1"), "server": True, "client": True}
    pki.write_pair(etcd_dir, "server", pki.issue(etcd_ca, name, **both))  # type: ignore[arg-type]
    pki.write_pair(etcd_dir, "peer", pki.issue(etcd_ca, name, **both))  # type: ignore[arg-type]
    pki.write_pair(etcd_dir, "healthcheck-client", pki.issue(etcd_ca, "kube-etcd-healthcheck-client", client=True))


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def local_etcd(r: Root) -> EtcdClient:
    """An etcd client for this node's member (``https://127.0.0.1:2379``) with the
    ``healthcheck-client`` certificate kubeadm's own etcd calls use; 5 s per request."""
    return EtcdClient(["https://127.0.0.1:2379"], healthcheck_context(r), timeout_s=5.0)


def healthcheck_context(r: Root) -> ssl.SSLContext:
    """TLS context with ``pki/etcd/healthcheck-client`` (``util/etcd/etcd.go``
    ``NewFromCluster``). Raises ``OSError`` when the files are missing."""
    d = r.pki / "etcd"
    return client_ssl_context(d / "ca.crt", d / "healthcheck-client.crt", d / "healthcheck-client.key")


def static_pod(name: str, command: list[str], annotations: dict[str, str], volumes: dict[str, Path]) -> dict[str, Any]:
    """A static Pod manifest as kubeadm writes one (``util/staticpod/utils.go``
    ``ComponentPod``): ``metadata.name`` is the component (the kubelet names the mirror Pod
    ``<name>-<node>``), namespace ``kube-system``, labels ``component`` and ``tier:
    control-plane``, one container named ``name`` running ``command``, host network,
    ``system-node-critical``, and each of ``volumes`` (name -> host path) as a
    ``DirectoryOrCreate`` hostPath mounted at the same path. No image: the emulated kubelet
    runs the command directly."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": annotations,
            "labels": {"component": name, "tier": "control-plane"},
            "name": name,
            "namespace": "kube-system",
        },
        "spec": {
            "containers": [
                {
                    "command": command,
                    "name": name,
                    "resources": {},
                    "volumeMounts": [{"mountPath": str(p), "name": v} for v, p in volumes.items()],
                }
            ],
            "hostNetwork": True,
            "priority": 2000001000,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [
                {"hostPath": {"path": str(p), "type": "DirectoryOrCreate"}, "name": v} for v, p in volumes.items()
            ],
        },
        "status": {},
    }


def write_static_pod(r: Root, name: str, pod: dict[str, Any]) -> Path:
    """Write ``manifests/<name>.yaml`` atomically (through a hidden temporary file, which the
    kubelet never reads), as ``staticpod.WriteStaticPodToDisk`` does. Returns its path."""
    path = r(f"{MANIFESTS}/{name}.yaml")
    ensure_dir(path.parent)
    write_atomic(path, yaml.safe_dump(pod, sort_keys=True), mode=0o600)
    return path


def write_etcd_manifest(
    r: Root, emu: emulation.Emulation, name: str, address: str, initial_cluster: str, state: str
) -> Path:
    """``manifests/etcd.yaml`` for this node's member (``phases/etcd/local.go``
    ``GetEtcdPodSpec``): :func:`etcd_argv` with the data in ``/var/lib/etcd``. The emulated
    kubelet starts it; nothing here waits for it. Returns the manifest's path."""
    data_dir, certs = r("/var/lib/etcd"), r.pki / "etcd"
    argv = etcd_argv(
        emu.etcd,
        name,
        data_dir,
        certs,
        [f"https://{address}:2379", "https://127.0.0.1:2379"],
        f"https://{address}:2380",
        initial_cluster,
        state,
    )
    ensure_dir(data_dir)
    pod = static_pod(
        ETCD_POD,
        argv,
        {ETCD_CLIENT_URLS_ANNOTATION: f"https://{address}:2379"},
        {"etcd-certs": certs, "etcd-data": data_dir},
    )
    return write_static_pod(r, ETCD_POD, pod)


def write_apiserver_manifest(r: Root, emu: emulation.Emulation, address: str, port: int, version: str) -> Path:
    """``manifests/kube-apiserver.yaml`` running :mod:`lab.apiserver` on ``0.0.0.0:port``
    (``port`` is ``bindPort``) with storage in the local etcd member; its settings go to
    ``/etc/kubernetes/emulated/kube-apiserver.json``. The annotation carries the advertise
    address as kubeadm's does (``phases/controlplane/manifests.go``). Returns the path."""
    conf = {
        "bind_address": "0.0.0.0",
        "advertise_address": address,
        "port": port,
        "version": version,
        "tls_cert": str(r.pki / "apiserver.crt"),
        "tls_key": str(r.pki / "apiserver.key"),
        "client_ca": str(r.pki / "ca.crt"),
        "pki_dir": str(r.pki),
        "etcd_servers": ["https://127.0.0.1:2379"],
        "etcd_ca": str(r.pki / "etcd/ca.crt"),
        "etcd_cert": str(r.pki / "apiserver-etcd-client.crt"),
        "etcd_key": str(r.pki / "apiserver-etcd-client.key"),
        "node_monitor_grace_s": emu.node_monitor_grace_s,
    }
    path = r("/etc/kubernetes/emulated/kube-apiserver.json")
    ensure_dir(path.parent)
    write_atomic(path, json.dumps(conf, indent=1))
    pod = static_pod(
        APISERVER_POD,
        [emu.python, "-m", "lab.apiserver", "--config", str(path)],
        {APISERVER_ENDPOINT_ANNOTATION: f"{address}:{port}"},
        {"k8s-certs": r.pki, "emulated-config": path.parent},
    )
    return write_static_pod(r, APISERVER_POD, pod)


def read_static_pod(r: Root, name: str) -> dict[str, Any] | None:
    """``manifests/<name>.yaml`` as a dict, or None when it is missing or not YAML."""
    try:
        doc = yaml.safe_load(r(f"{MANIFESTS}/{name}.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


async def _wait_etcd(client: EtcdClient, timeout_s: float) -> None:
    """Until the member answers a read, polled every 50 ms. Raises :class:`KubeadmError`
    after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await client.get("/registry/health")
            return
        except EtcdError as err:
            if time.monotonic() > deadline:
                raise KubeadmError(f"[etcd] local etcd member not healthy after {timeout_s:.0f}s: {err}") from err
            await asyncio.sleep(0.05)


def kubelet_flags(registration: dict[str, Any], control_plane: bool) -> list[str]:
    """The kubelet flags kubeadm derives from ``nodeRegistration`` beyond ``node-ip``:
    ``--node-labels`` from ``kubeletExtraArgs`` (v1beta4's list of ``{name, value}``), and the
    taints as ``--register-with-taints`` (``phases/kubelet/flags.go``). kubeadm passes the
    taints of a joining worker this way and applies a control node's in its mark-control-plane
    phase (the given ones, or the control-plane taint when none are given); the emulation
    registers both with the Node, so the Node ends up the same without that phase's patch."""
    flags = []
    for arg in registration.get("kubeletExtraArgs") or []:
        if arg.get("name") == "node-labels":
            flags += ["--node-labels", str(arg.get("value", ""))]
    taints = registration.get("taints")
    if taints is None and control_plane:
        taints = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    if taints:
        text = ",".join(
            f"{t['key']}={t['value']}:{t['effect']}" if t.get("value") else f"{t['key']}:{t['effect']}" for t in taints
        )
        flags += ["--register-with-taints", text]
    return flags


def start_kubelet(
    r: Root, emu: emulation.Emulation, name: str, address: str, control_plane: bool, extra: list[str] | None = None
) -> None:
    """(Re)start :mod:`lab.kubelet` for Node ``name`` at ``address`` (IPv4 string) with the
    node's ``kubelet.conf`` and the static pods of ``/etc/kubernetes/manifests``; a running
    kubelet is stopped first (``TryStopKubelet``, then ``TryStartKubelet``: its static pods
    keep running and the new kubelet adopts them). Control-plane Nodes get the
    ``node-role.kubernetes.io/control-plane`` label. ``extra``: flags from
    :func:`kubelet_flags`. Returns without waiting."""
    argv = [
        emu.python,
        "-m",
        "lab.kubelet",
        "--kubeconfig",
        str(r("/etc/kubernetes/kubelet.conf")),
        "--node-name",
        name,
        "--node-ip",
        address,
        "--interval",
        str(emu.kubelet_interval_s),
        "--pki-dir",
        str(r("/var/lib/kubelet/pki")),
        "--pod-manifest-path",
        str(r(MANIFESTS)),
        "--node-root",
        str(r.root),
    ]
    if control_plane:
        argv.append("--control-plane")
    argv += extra or []
    ensure_dir(r("/var/lib/kubelet"))
    if under_systemd(r):
        # As kubeadm on a systemd host: the flags in kubeadm-flags.env, then `systemctl
        # restart kubelet` (the lab overlay's kubelet.service reads them).
        write_atomic(r(KUBEADM_FLAGS), f"KUBELET_KUBEADM_ARGS={shlex.quote(shlex.join(argv[3:]))}\n")
        res = subprocess.run(["systemctl", "restart", "kubelet.service"], capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise KubeadmError(f"[kubelet-start] systemctl restart kubelet failed: {res.stderr.strip()}")
    else:
        services = ProcessServices(r.root)
        services.stop("kubelet")
        services.start("kubelet", argv)
    say("[kubelet-start] Starting the kubelet")


KUBEADM_FLAGS = "/var/lib/kubelet/kubeadm-flags.env"


def under_systemd(r: Root) -> bool:
    """Whether this node's services are systemd units: the root is ``/`` and systemd is the
    init (``/run/systemd/system`` exists, sd_booted(3)), as in the lab's machines. Then the
    kubelet is ``kubelet.service`` (its static pods outlive a restart of the node agent's
    unit, as containers do on a node); otherwise a process of the lab."""
    return r.root == Path("/") and Path("/run/systemd/system").is_dir()


# -- kubeadm's etcd client (util/etcd/etcd.go) -------------------------------------------
ETCD_TIMEOUT_S = 2.0  # etcdTimeout: each call
ETCD_RETRY_S = 0.1  # kubeadm: EtcdAPICallRetryInterval, 500 ms
HEALTHY_CHECK_RETRIES = 8  # phases/etcd/local.go etcdHealthyCheckRetries
HEALTHY_CHECK_INTERVAL_S = 5.0  # ... etcdHealthyCheckInterval
ERR_NO_MEMBER_ID = "no member id found for peer URL"  # util/etcd ErrNoMemberIDForPeerURL


class ClusterEtcd:
    """kubeadm's etcd ``Client`` (``util/etcd/etcd.go``) for ``endpoints``
    (``https://host:2379``), with the node's ``healthcheck-client`` certificate. Reads go to
    every endpoint at once and the first answer wins (clientv3's balancer); a change goes to
    one endpoint that answers. Each call is retried every :data:`ETCD_RETRY_S` seconds for up
    to ``api_call_s`` (``EtcdAPICall``). Methods raise :class:`KubeadmError` with kubeadm's
    wording when the retries run out."""

    def __init__(self, r: Root, endpoints: list[str], api_call_s: float) -> None:
        self.ctx = healthcheck_context(r)
        self.endpoints = list(dict.fromkeys(endpoints))
        self.api_call_s = api_call_s

    def _client(self, endpoint: str) -> EtcdClient:
        return EtcdClient([endpoint], self.ctx, timeout_s=ETCD_TIMEOUT_S)

    async def _first(self, call: Callable[[EtcdClient], Awaitable[Any]]) -> tuple[str, Any]:
        """(endpoint, answer) of the first endpoint that answers ``call``; raises
        :class:`core.etcd.EtcdError` with every endpoint's error when none does."""

        async def one(ep: str) -> tuple[str, Any]:
            async with self._client(ep) as c:
                return ep, await call(c)

        tasks = [asyncio.create_task(one(ep)) for ep in self.endpoints]
        errors = []
        try:
            for fut in asyncio.as_completed(tasks):
                try:
                    return await fut
                except EtcdError as err:
                    errors.append(str(err))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        raise EtcdError("; ".join(errors) or "etcdclient: no available endpoints")

    async def _retry(self, what: str, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """``attempt()`` until it returns, for up to ``api_call_s`` seconds
        (``wait.PollUntilContextTimeout``); each distinct failure is logged at ``--v=5``.
        Raises the last :class:`core.etcd.EtcdError`."""
        deadline = time.monotonic() + self.api_call_s
        seen: set[str] = set()
        while True:
            try:
                return await attempt()
            except EtcdError as err:
                if str(err) not in seen:
                    klog(5, f"{what}: {err}")
                    seen.add(str(err))
                if time.monotonic() + ETCD_RETRY_S > deadline:
                    raise
            await asyncio.sleep(ETCD_RETRY_S)

    async def sync(self) -> None:
        """``Sync``: the endpoints become the client URLs of the members that have a name (have
        started) and are not learners (clientv3 ``Client.Sync``)."""

        async def attempt() -> list[str]:
            _, members = await self._first(lambda c: c.member_list())
            return [u for m in members if m.name and not m.is_learner for u in m.client_urls]

        try:
            self.endpoints = list(dict.fromkeys(await self._retry("Failed to sync etcd endpoints", attempt)))
        except EtcdError as err:
            raise KubeadmError(f"error syncing endpoints with etcd: {err}") from err
        klog(1, f"etcd endpoints read from etcd: {','.join(self.endpoints)}")

    async def list_members(self) -> list[EtcdMember]:
        """``listMembers``."""

        async def attempt() -> list[EtcdMember]:
            return list((await self._first(lambda c: c.member_list()))[1])

        try:
            return list(await self._retry("Failed to get etcd member list", attempt))
        except EtcdError as err:
            raise KubeadmError(str(err)) from err

    async def add_member_as_learner(self, name: str, peer: str) -> list[tuple[str, str]]:
        """``AddMemberAsLearner`` (``addMember``): list the members and, when one already has
        ``peer`` as its first peer URL, skip the add and reuse that member (kubernetes#127491);
        otherwise add a learner, and take etcd's "Peer URLs already exists" as the same case.
        Returns ``(name, peer URL)`` of every member, this node's member under ``name``, an
        unnamed member under its hex id; adds this node's client URL to the endpoints."""

        async def attempt() -> list[EtcdMember]:
            ep, members = await self._first(lambda c: c.member_list())
            if any(m.peer_urls and m.peer_urls[0] == peer for m in members):
                klog(
                    5, f'The peer URL "{peer}" for the added etcd member already exists. Skipping etcd member addition'
                )
                return list(members)
            klog(1, f'[etcd] Adding etcd member "{peer}" as learner')
            async with self._client(ep) as c:
                try:
                    return list((await c.member_add([peer], learner=True))[1])
                except EtcdError as err:
                    if "Peer URLs already exists" not in str(err):
                        raise
                    klog(5, "The peer URL for the added etcd member already exists. Fetching the existing etcd members")
                    return list(await c.member_list())

        try:
            members = await self._retry("Failed to add etcd member", attempt)
        except EtcdError as err:
            raise KubeadmError(str(err)) from err
        host = urlsplit(peer).hostname or ""
        self.endpoints.append(f"https://{host}:2379")
        return [
            (name if m.peer_urls[0] == peer else (m.name or f"{m.id:x}"), m.peer_urls[0])
            for m in members
            if m.peer_urls
        ]

    async def member_id(self, peer: str) -> int:
        """``GetMemberID``: the id of the member whose first peer URL is ``peer``; raises
        :class:`KubeadmError` ``no member id found for peer URL`` when there is none."""
        for m in await self.list_members():
            if m.peer_urls and m.peer_urls[0] == peer:
                return m.id
        raise KubeadmError(ERR_NO_MEMBER_ID)

    async def _is_learner(self, member_id: int) -> bool:
        return any(m.id == member_id and m.is_learner for m in await self.list_members())

    async def member_promote(self, member_id: int) -> None:
        """``MemberPromote``: returns at once when the member already votes ("Member ...
        already promoted."); else promotes it, retrying until it has caught up."""
        if not await self._is_learner(member_id):
            klog(1, f"[etcd] Member {member_id:x} already promoted.")
            return
        klog(1, f"[etcd] Promoting a learner as a voting member: {member_id:x}")

        async def attempt() -> None:
            if not await self._is_learner(member_id):
                klog(1, f"[etcd] Member {member_id:x} was already promoted.")
                return
            ep, _ = await self._first(lambda c: c.status())
            async with self._client(ep) as c:
                await c.member_promote(member_id)
            klog(1, f"[etcd] The learner was promoted as a voting member: {member_id:x}")

        try:
            await self._retry(f"[etcd] Promoting the learner {member_id:x} failed", attempt)
        except EtcdError as err:
            raise KubeadmError(str(err)) from err

    async def remove_member(self, member_id: int) -> list[EtcdMember]:
        """``RemoveMember``: retried while etcd refuses; a member that is already gone counts
        as removed. Returns the members left."""

        async def attempt() -> None:
            ep, _ = await self._first(lambda c: c.status())
            async with self._client(ep) as c:
                try:
                    await c.member_remove(member_id)
                except EtcdError as err:
                    if "member not found" not in str(err):
                        raise
                    klog(5, f"Member was already removed, because member {member_id:x} was not found")

        try:
            await self._retry("Failed to remove etcd member", attempt)
        except EtcdError as err:
            raise KubeadmError(str(err)) from err
        return await self.list_members()

    async def cluster_status(self) -> None:
        """``getClusterStatus`` (what ``CheckClusterHealth`` calls): the status of each
        endpoint in turn, each retried for up to ``api_call_s``. Raises :class:`KubeadmError`
        with the first endpoint that never answers: ``failed to dial endpoint <url> with
        maintenance client: context deadline exceeded`` (clientv3's words when it cannot
        connect), or etcd's own refusal."""
        for ep in list(self.endpoints):

            async def attempt(ep: str = ep) -> None:
                async with self._client(ep) as c:
                    await c.status()

            try:
                await self._retry(f"Failed to get etcd status for {ep}", attempt)
            except EtcdError as err:
                if "no etcd endpoint answered" in str(err):
                    raise KubeadmError(
                        f"failed to dial endpoint {ep} with maintenance client: context deadline exceeded"
                    ) from err
                raise KubeadmError(str(err)) from err

    async def wait_for_cluster_available(
        self, retries: int = HEALTHY_CHECK_RETRIES, interval_s: float = HEALTHY_CHECK_INTERVAL_S
    ) -> None:
        """``WaitForClusterAvailable``: :meth:`cluster_status` up to ``retries`` times,
        ``interval_s`` apart. Raises :class:`KubeadmError` ``timeout waiting for etcd cluster
        to be available``."""
        for i in range(retries):
            if i > 0:
                klog(1, f"[etcd] Waiting {interval_s:g}s until next retry")
                await asyncio.sleep(interval_s)
            klog(
                2,
                f"[etcd] attempting to see if all cluster endpoints ({self.endpoints}) are available {i + 1}/{retries}",
            )
            try:
                await self.cluster_status()
                return
            except ToolError as err:
                klog(1, f"[etcd] Attempt failed with error: {err}")
        raise KubeadmError("timeout waiting for etcd cluster to be available")


def etcd_endpoints(api: Api) -> list[str]:
    """``getEtcdEndpoints``, emulated: ``https://<InternalIP>:2379`` of every control-plane
    Node (kubeadm reads the etcd Pods' advertise-client-urls annotation; both are replaced by
    the member list at once). Raises :class:`KubeadmError` when there is none."""
    code, nodes = api.call("GET", "/api/v1/nodes")
    if code != 200:
        raise KubeadmError(f"could not retrieve the list of etcd endpoints: HTTP {code}")
    endpoints = [
        f"https://{a['address']}:2379"
        for n in nodes["items"]
        if "node-role.kubernetes.io/control-plane" in n["metadata"].get("labels", {})
        for a in n.get("status", {}).get("addresses", [])
        if a["type"] == "InternalIP"
    ]
    if not endpoints:
        raise KubeadmError("could not retrieve the list of etcd endpoints: no control-plane Node has an InternalIP")
    return endpoints


async def etcd_from_cluster(r: Root, api: Api, timeouts: Timeouts) -> ClusterEtcd:
    """``NewFromCluster``: a :class:`ClusterEtcd` on :func:`etcd_endpoints`, synced with the
    member list. Raises :class:`KubeadmError` (``OSError`` without the client certificate)."""
    endpoints = etcd_endpoints(api)
    klog(1, f"etcd endpoints read from pods: {','.join(endpoints)}")
    try:
        etcd = ClusterEtcd(r, endpoints, timeouts.etcd_api_call_s)
    except OSError as err:
        raise KubeadmError(f"error creating etcd client for {endpoints} endpoints: {err}") from err
    await etcd.sync()
    return etcd


def check_etcd(r: Root, api: Api, timeouts: Timeouts) -> None:
    """The ``check-etcd`` phase (``cmd/phases/join/checketcd.go``,
    ``CheckLocalEtcdClusterStatus``): every member's status must answer. Raises
    :class:`KubeadmError` ``etcd cluster is not healthy: ...`` otherwise."""
    say("[check-etcd] Checking that the etcd cluster is healthy")

    async def _check() -> None:
        etcd = await etcd_from_cluster(r, api, timeouts)
        try:
            await etcd.cluster_status()
        except ToolError as err:
            raise KubeadmError(f"etcd cluster is not healthy: {err}") from err

    asyncio.run(_check())


def pad_to(total_s: float, command: str) -> None:
    """Make this command last ``total_s`` seconds in all (the emulation's own work included),
    as a measured kubeadm duration includes pulling images and starting components."""
    remaining = total_s - (time.time() - PHASES.started)
    if remaining > 0:
        say(f"[emulation] kubeadm {command} is set to take {total_s:g}s; waiting {remaining:.2f}s more")
        time.sleep(remaining)
        PHASES.mark("emulated_duration_pad")


def _b64(b: bytes | str) -> str:
    return base64.b64encode(b.encode() if isinstance(b, str) else b).decode()


# -- init -------------------------------------------------------------------------------
def init(r: Root, docs: dict[str, dict[str, Any]], upload_certs: bool, ignore: set[str] | None = None) -> None:
    """``kubeadm init``, in kubeadm's phase order: preflight, certs (the cluster PKI),
    kubeconfig (admin.conf, super-admin.conf, kubelet.conf), the etcd and kube-apiserver
    static Pod manifests, kubelet-start (the emulated kubelet, which starts both),
    wait-control-plane (local etcd, then the local API server), then through the
    control-plane endpoint: the ``kubeadm-config`` ConfigMap (waiting up to 120 s for the
    VIP), ``kubeadm-certs`` (with ``upload_certs``), the bootstrap token and
    ``cluster-info`` (``phases/bootstraptoken/clusterinfo``).

    ``docs`` from :func:`load_docs`; ``ignore`` holds preflight check names, of which only
    ``DirAvailable--var-lib-etcd`` means anything here (start etcd on restored data). Raises
    :class:`KubeadmError` on a preflight error or a component that does not come up within
    60 s; ``KeyError`` when a document lacks a field the driver always writes.
    """
    emu = emulation.load()
    ic, cc = docs["InitConfiguration"], docs["ClusterConfiguration"]
    name = ic["nodeRegistration"]["name"]
    PHASES.node = name
    address = ic["localAPIEndpoint"]["advertiseAddress"]
    port = int(ic["localAPIEndpoint"].get("bindPort", 6443))
    endpoint = cc["controlPlaneEndpoint"]
    say(f"[init] Using Kubernetes version: {cc['kubernetesVersion']} (EMULATED kubeadm, ephemeral-k8s lab)")
    with phase("preflight"):
        say("[preflight] Running pre-flight checks")
        if r(f"{MANIFESTS}/kube-apiserver.yaml").exists():
            raise KubeadmError(
                "[preflight] Some fatal errors occurred:\n\t"
                "[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: "
                "/etc/kubernetes/manifests/kube-apiserver.yaml already exists"
            )
        etcd_dir = r("/var/lib/etcd")
        if etcd_dir.exists() and any(etcd_dir.iterdir()):
            if "DirAvailable--var-lib-etcd" not in (ignore or set()):
                raise KubeadmError(
                    "[preflight] Some fatal errors occurred:\n\t"
                    "[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty"
                )
            say("[preflight] /var/lib/etcd is not empty: starting etcd on the existing (restored) data")
    started = time.monotonic()
    with phase("certs"):
        ca, etcd_ca, fp_ca = pki.new_ca("kubernetes"), pki.new_ca("etcd-ca"), pki.new_ca("front-proxy-ca")
        pki.write_pair(r.pki, "ca", ca)
        pki.write_pair(r.pki / "etcd", "ca", etcd_ca)
        pki.write_pair(r.pki, "front-proxy-ca", fp_ca)
        pub, key = pki.sa_keypair()
        write_atomic(r.pki / "sa.pub", pub)
        write_atomic(r.pki / "sa.key", key)
        node_certs(r, name, address, cc, ca, etcd_ca)
        say('[certs] Using certificateDir folder "/etc/kubernetes/pki"; generated the cluster PKI (ECDSA-P256)')
    cluster_name = cc.get("clusterName", "kubernetes")
    server = f"https://{endpoint}"
    with phase("kubeconfig"):
        admin = pki.issue(ca, "kubernetes-admin", orgs=("kubeadm:cluster-admins",), client=True)
        write_atomic(
            r("/etc/kubernetes/admin.conf"), pki.kubeconfig(server, ca[0], admin, "kubernetes-admin", cluster_name)
        )
        superadmin = pki.issue(ca, "kubernetes-super-admin", orgs=("system:masters",), client=True)
        write_atomic(
            r("/etc/kubernetes/super-admin.conf"),
            pki.kubeconfig(server, ca[0], superadmin, "kubernetes-super-admin", cluster_name),
        )
        kubelet = pki.issue(ca, f"system:node:{name}", orgs=("system:nodes",), client=True)
        write_atomic(
            r("/etc/kubernetes/kubelet.conf"),
            pki.kubeconfig(server, ca[0], kubelet, f"system:node:{name}", cluster_name),
        )
        say('[kubeconfig] Writing "admin.conf", "super-admin.conf" and "kubelet.conf" kubeconfig files')
    PHASES.mark("certs_and_kubeconfigs")
    with phase("etcd"):
        say(f'[etcd] Creating static Pod manifest for local etcd in "{MANIFESTS}"')
        write_etcd_manifest(r, emu, name, address, f"{name}=https://{address}:2380", "new")
    with phase("control-plane"):
        say('[control-plane] Creating static Pod manifest for "kube-apiserver"')
        write_apiserver_manifest(r, emu, address, port, cc["kubernetesVersion"])
    with phase("kubelet-start"):
        flags = kubelet_flags(ic.get("nodeRegistration") or {}, control_plane=True)
        start_kubelet(r, emu, name, address, control_plane=True, extra=flags)
    PHASES.mark("manifests_and_kubelet")

    async def _etcd_up() -> None:
        async with local_etcd(r) as c:
            await _wait_etcd(c, 60)

    with phase("wait-control-plane"):
        asyncio.run(_etcd_up())
        PHASES.mark("etcd_ready")
        wait_local_api(address, port, ca[0])
        PHASES.mark("apiserver_ready")
    say(f"[wait-control-plane] The control plane is up after {time.monotonic() - started:.2f}s")

    # From here kubeadm talks to the control-plane endpoint (the VIP through HAProxy).
    api = Api(server, ctx_for(ca[0], superadmin, r.pki))
    with phase("upload-config/kubeadm"):
        code, body = api.wait(
            "PUT",
            "/api/v1/namespaces/kube-system/configmaps/kubeadm-config",
            {
                "metadata": {"name": "kubeadm-config"},
                "data": {"ClusterConfiguration": yaml.safe_dump(cc)},
            },
            timeout_s=120,
        )
        _expect(code, body, "[upload-config] kubeadm-config", (200, 201))
        say(f"[upload-config] Stored the configuration in ConfigMap kubeadm-config through {endpoint}")
    PHASES.mark("vip_wait_and_upload_config")
    if upload_certs:
        with phase("upload-certs"):
            upload_certificates(r, api, ic["certificateKey"], emu.certs_ttl_s)
    with phase("bootstrap-token"):
        token = ic["bootstrapTokens"][0]
        ttl = token.get("ttl", "86400s")
        create_token(api, token["token"], f"{emu.token_ttl_s}s" if emu.token_ttl_s is not None else ttl)
        kubeconfig = yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "", "cluster": {"server": server, "certificate-authority-data": _b64(ca[0])}}],
            }
        )
        code, body = api.call(
            "PUT",
            "/api/v1/namespaces/kube-public/configmaps/cluster-info",
            {
                "metadata": {"name": "cluster-info"},
                "data": {"kubeconfig": kubeconfig},
            },
        )
        _expect(code, body, "[bootstrap-token] cluster-info", (200, 201))
        say("[bootstrap-token] Created the cluster-info ConfigMap in kube-public")
    PHASES.mark("upload_certs_and_token")
    pad_to(emu.init_s, "init")
    say(f"Your Kubernetes control-plane has initialized successfully! (emulated, {time.monotonic() - started:.2f}s)")


def _expect(code: int, body: Any, what: str, ok: tuple[int, ...]) -> None:
    if code not in ok:
        msg = body.get("message") if isinstance(body, dict) else body
        raise KubeadmError(f"{what}: HTTP {code}: {msg}")


def upload_certificates(r: Root, api: Api, certificate_key: str, ttl_s: float = CERTS_TTL_S) -> None:
    """The ``kubeadm-certs`` Secret: each of ``CERT_FILES`` sealed with ``certificate_key``
    (:func:`lab.pki.seal`), keys with ``/`` turned to ``-`` (``copycerts.go``). kubeadm
    gives it an owner reference to a 2 h token so that it goes with the token; here it
    carries an ``ek8s.lab/expires-at`` annotation ``ttl_s`` seconds ahead (2 h; ``kubeadm
    init`` passes the emulation's ``certs_ttl_s``). Raises
    :class:`KubeadmError` unless the API answers 200 or 201, ``OSError`` for a missing file."""
    data = {f.replace("/", "-"): _b64(pki.seal(certificate_key, (r.pki / f).read_bytes())) for f in CERT_FILES}
    secret = {
        "metadata": {
            "name": "kubeadm-certs",
            "annotations": {"ek8s.lab/expires-at": str(time.time() + ttl_s)},
        },
        "type": "Opaque",
        "data": data,
    }
    code, body = api.call("PUT", "/api/v1/namespaces/kube-system/secrets/kubeadm-certs", secret)
    _expect(code, body, "[upload-certs] kubeadm-certs", (200, 201))
    say('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace')


def create_token(api: Api, token: str, ttl: str) -> None:
    """The ``bootstrap-token-<id>`` Secret for ``token`` (``<id>.<secret>``) as kubeadm writes
    it (``apis/bootstraptoken/v1/utils.go``; format in ``k8s.io/cluster-bootstrap/token/api``):
    usable for authentication and signing, extra group
    ``system:bootstrappers:kubeadm:default-node-token``, ``expiration`` in RFC 3339. ``ttl``
    is a Go duration (``24h0m0s``, ``86400s``; ``kubeadm init`` passes the emulation's
    ``token_ttl_s`` when set). Raises
    :class:`KubeadmError` for a malformed token or ttl, or when the API refuses the Secret."""
    m = TOKEN_RE.match(token)
    if not m:
        raise KubeadmError(
            f'[bootstrap-token] the bootstrap token "{token}" was not of the form "[a-z0-9]{{6}}.[a-z0-9]{{16}}"'
        )
    seconds = _duration(ttl)
    expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))
    secret = {
        "metadata": {"name": f"bootstrap-token-{m.group(1)}"},
        "type": "bootstrap.kubernetes.io/token",
        "data": {
            "token-id": _b64(m.group(1)),
            "token-secret": _b64(m.group(2)),
            "expiration": _b64(expiration),
            "usage-bootstrap-authentication": _b64("true"),
            "usage-bootstrap-signing": _b64("true"),
            "auth-extra-groups": _b64("system:bootstrappers:kubeadm:default-node-token"),
        },
    }
    code, body = api.call("PUT", f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{m.group(1)}", secret)
    _expect(code, body, "[bootstrap-token] token secret", (200, 201))
    say(f"[bootstrap-token] Created bootstrap token {m.group(1)} (expires {expiration})")


def _duration(ttl: str) -> float:
    """A token ttl (a Go duration: ``24h0m0s``, ``86400s``, ``2h``) in seconds. Raises
    :class:`KubeadmError` on another shape."""
    try:
        return go_duration(ttl)
    except ValueError:
        raise KubeadmError(f"invalid token ttl {ttl!r}") from None


# -- join -------------------------------------------------------------------------------
def discover(jc: dict[str, Any]) -> tuple[str, bytes, str]:
    """Token discovery (``discovery/token/token.go``): fetch ``cluster-info`` anonymously
    without checking TLS (waiting up to 60 s for an answer), check the JWS for our token id
    and the CA pin (``sha256:<hex>`` of the CA's SubjectPublicKeyInfo, ``util/pubkeypin``).
    ``jc`` is the JoinConfiguration dict. Returns (``https://`` server URL, CA PEM, token).
    Raises :class:`KubeadmError` at once on any refusal (kubeadm polls for a missing signature
    until its discovery timeout, and asks a second time over verified TLS)."""
    bt = jc["discovery"]["bootstrapToken"]
    token, endpoint = bt["token"], bt["apiServerEndpoint"]
    m = TOKEN_RE.match(token)
    if not m:
        raise KubeadmError(
            f'[discovery] the bootstrap token "{token}" was not of the form "[a-z0-9]{{6}}.[a-z0-9]{{16}}"'
        )
    tid, tsecret = m.group(1), m.group(2)
    api = Api(f"https://{endpoint}", ctx_for(None))
    code, cm = api.wait("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info", timeout_s=60)
    _expect(code, cm, "[discovery] cluster-info", (200,))
    kubeconfig = cm["data"]["kubeconfig"]
    sig = cm["data"].get(f"jws-kubeconfig-{tid}")
    if not sig:
        raise KubeadmError(
            "couldn't validate the identity of the API Server: could not find a JWS signature in the "
            f'cluster-info ConfigMap for token ID "{tid}" (the token is unknown or has expired)'
        )
    from lab.apiserver import jws_signature

    if not hmac.compare_digest(sig, jws_signature(tid, tsecret, kubeconfig.encode())):
        raise KubeadmError(
            "couldn't validate the identity of the API Server: "
            "failed to verify JWS signature of received cluster info object"
        )
    doc = yaml.safe_load(kubeconfig)
    ca_pem = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])
    actual = ca_cert_hash(ca_pem)
    pins = bt.get("caCertHashes") or []
    if pins and actual not in pins:
        raise KubeadmError(
            f'cluster CA found in cluster-info ConfigMap is invalid: none of the public keys "{actual}" are pinned'
        )
    say(f"[discovery] Cluster info signature and contents are valid; CA pinned ({actual[:19]}...)")
    return f"https://{endpoint}", ca_pem, token


def check_node_name(api: Api, name: str) -> None:
    """Raise :class:`KubeadmError` when a Node ``name`` exists and its Ready condition is True
    (``cmd/phases/join/kubelet.go``, in kubelet-start); a NotReady or Unknown Node is fine, as
    in kubeadm."""
    code, node = api.call("GET", f"/api/v1/nodes/{name}")
    if code != 200:
        return
    for c in node.get("status", {}).get("conditions", []):
        if c.get("type") == "Ready" and c.get("status") == "True":
            raise KubeadmError(
                f'a Node with name "{name}" and status "Ready" already exists in the cluster. You must delete the '
                "existing Node or change the name of this new joining Node"
            )


def join(r: Root, docs: dict[str, dict[str, Any]], skip_phases: frozenset[str] = frozenset()) -> None:
    """``kubeadm join`` in kubeadm 1.32's phase order (the module says what each does):
    preflight (``kubelet.conf`` must not exist, :func:`discover`); on a control node
    control-plane-prepare (:func:`download_certs`, its certificates, admin.conf, the
    kube-apiserver manifest) and check-etcd (:func:`check_etcd`, unless skipped);
    kubelet-start (the same-name Node check, the kubelet's certificate: a CSR signed by the
    emulated API server on a worker, then ``kubelet.conf`` and the kubelet); on a control
    node control-plane-join/etcd (:func:`join_etcd`) and the wait for the local API server.

    ``docs`` from :func:`load_docs`; ``skip_phases`` adds to the JoinConfiguration's
    ``skipPhases`` (only ``check-etcd`` can be skipped here). Raises :class:`KubeadmError` on
    each refusal the module lists, ``KeyError`` when the JoinConfiguration lacks a field the
    driver always writes.
    """
    emu = emulation.load()
    jc = docs["JoinConfiguration"]
    name = jc["nodeRegistration"]["name"]
    control = jc.get("controlPlane")
    skip = set(jc.get("skipPhases") or []) | set(skip_phases)
    timeouts = Timeouts.of(jc)
    PHASES.node = name
    started = time.monotonic()
    with phase("preflight"):
        say(f"[preflight] Running pre-flight checks (EMULATED kubeadm, ephemeral-k8s lab) for {name}")
        if r("/etc/kubernetes/kubelet.conf").exists():
            raise KubeadmError(
                "[preflight] Some fatal errors occurred:\n\t[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: "
                "/etc/kubernetes/kubelet.conf already exists"
            )
        server, ca_pem, token = discover(jc)
        if control:
            say("[preflight] Running pre-flight checks before initializing the new control plane instance")
    PHASES.mark("discovery")
    ensure_dir(r.pki)
    boot = Api(server, ctx_for(ca_pem), bearer=token)
    cluster_name = "kubernetes"
    api: Api | None = None
    address = ""
    port = 6443
    if control:
        address = control["localAPIEndpoint"]["advertiseAddress"]
        port = int(control["localAPIEndpoint"].get("bindPort", 6443))
        with phase("control-plane-prepare/download-certs"):
            download_certs(r, boot, control["certificateKey"])
        with phase("control-plane-prepare/certs"):
            ca = pki.read_pair(r.pki, "ca")
            admin = pki.issue(ca, "kubernetes-admin", orgs=("kubeadm:cluster-admins",), client=True)
            api = Api(server, ctx_for(ca_pem, admin, r.pki))
            code, cm = api.call("GET", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
            _expect(code, cm, "[preflight] kubeadm-config", (200,))
            cc = yaml.safe_load(cm["data"]["ClusterConfiguration"])
            cluster_name = cc.get("clusterName", cluster_name)
            node_certs(r, name, address, cc, ca, pki.read_pair(r.pki / "etcd", "ca"))
            say('[certs] Using certificateDir folder "/etc/kubernetes/pki"; generated this node\'s certificates')
        with phase("control-plane-prepare/kubeconfig"):
            write_atomic(
                r("/etc/kubernetes/admin.conf"),
                pki.kubeconfig(server, ca_pem, admin, "kubernetes-admin", cluster_name),
            )
            say('[kubeconfig] Writing "admin.conf" kubeconfig file')
        with phase("control-plane-prepare/control-plane"):
            say(f'[control-plane] Using manifest folder "{MANIFESTS}"')
            say('[control-plane] Creating static Pod manifest for "kube-apiserver"')
            write_apiserver_manifest(r, emu, address, port, cc.get("kubernetesVersion", "v1.32.1"))
        PHASES.mark("control_plane_prepare")
        if "check-etcd" in skip:
            klog(1, "[check-etcd] skipped (skipPhases)")
        else:
            with phase("check-etcd"):
                check_etcd(r, api, timeouts)
            PHASES.mark("check_etcd")
    with phase("kubelet-start"):
        if not control:
            write_atomic(r.pki / "ca.crt", ca_pem)
        check_node_name(boot, name)
        if control:
            kubelet = pki.issue(pki.read_pair(r.pki, "ca"), f"system:node:{name}", orgs=("system:nodes",), client=True)
        else:
            kubelet = tls_bootstrap(boot, name)
        write_atomic(
            r("/etc/kubernetes/kubelet.conf"),
            pki.kubeconfig(server, ca_pem, kubelet, f"system:node:{name}", cluster_name),
        )
        node_ip = next(a["value"] for a in jc["nodeRegistration"].get("kubeletExtraArgs", []) if a["name"] == "node-ip")
        flags = kubelet_flags(jc["nodeRegistration"], control_plane=bool(control))
        start_kubelet(r, emu, name, node_ip, control_plane=bool(control), extra=flags)
    PHASES.mark("kubelet_start")
    if control and api is not None:
        with phase("control-plane-join/etcd"):
            try:
                join_etcd(r, emu, api, name, address, timeouts)
            except ToolError as err:
                raise KubeadmError(f"error creating local etcd static pod manifest file: {err}") from err
        PHASES.mark("etcd_join")
        with phase("wait-control-plane"):
            wait_local_api(address, port, ca_pem)
        PHASES.mark("apiserver_ready")
    pad_to(emu.join_s, "join")
    what = "control-plane node" if control else "node"
    say(f"This {what} has joined the cluster (emulated, {time.monotonic() - started:.2f}s)")


def tls_bootstrap(boot: Api, name: str) -> pki.Pair:
    """The kubelet's TLS bootstrap, done by kubeadm here: a CSR for ``system:node:<name>``
    with the bootstrap token, signed at once by the emulated API server (the CSR approver and
    signer). Returns the (certificate, key) PEM pair. Raises :class:`KubeadmError`."""
    csr_pem, key = pki.new_csr(f"system:node:{name}", ("system:nodes",))
    code, body = boot.call(
        "POST",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"generateName": "csr-"},
            "spec": {
                "request": _b64(csr_pem),
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "usages": ["digital signature", "client auth"],
            },
        },
    )
    _expect(code, body, "[kubelet-start] TLS bootstrap", (201,))
    say("[kubelet-start] TLS bootstrap: the kubelet client certificate was signed")
    return base64.b64decode(body["status"]["certificate"]), key


def download_certs(r: Root, api: Api, certificate_key: str) -> None:
    """Fetch ``kubeadm-certs`` with the bootstrap token and write each file, unsealed with
    ``certificate_key``, under the node's pki directory (``copycerts.go``, ``DownloadCerts``).
    Raises :class:`KubeadmError` when the Secret is gone (expired) or the key does not open
    it, with kubeadm's messages."""
    code, secret = api.call("GET", "/api/v1/namespaces/kube-system/secrets/kubeadm-certs")
    if code == 404:
        raise KubeadmError(
            'error downloading certs: error downloading the secret: secret "kubeadm-certs" was not found in the '
            '"kube-system" Namespace. This Secret might have expired. Please, run `kubeadm init phase upload-certs '
            "--upload-certs` on a control plane to generate a new one"
        )
    _expect(code, secret, "[download-certs]", (200,))
    from cryptography.exceptions import InvalidTag

    for f in CERT_FILES:
        try:
            data = pki.unseal(certificate_key, base64.b64decode(secret["data"][f.replace("/", "-")]))
        except (InvalidTag, ValueError) as err:
            raise KubeadmError(
                "error downloading certs: error decoding secret data with provided key: "
                "cipher: message authentication failed"
            ) from err
        path = r.pki / f
        ensure_dir(path.parent)
        write_atomic(path, data)
    say('[download-certs] Downloaded the certificates from Secret "kubeadm-certs"')


def join_etcd(r: Root, emu: emulation.Emulation, api: Api, name: str, address: str, timeouts: Timeouts) -> None:
    """``CreateStackedEtcdStaticPodManifestFile`` with EtcdLearnerMode (on by default in 1.32):
    :meth:`ClusterEtcd.add_member_as_learner` (which reuses a member that already has this
    node's peer URL), the etcd manifest with ``--initial-cluster-state=existing`` (the kubelet
    starts it), :meth:`ClusterEtcd.member_promote` (at once for a member that already votes)
    and :meth:`ClusterEtcd.wait_for_cluster_available`. Raises :class:`KubeadmError` with
    kubeadm's message when a step runs out of retries."""
    peer = f"https://{address}:2380"

    async def _join() -> None:
        etcd = await etcd_from_cluster(r, api, timeouts)
        klog(1, f"[etcd] Adding etcd member: {peer}")
        cluster = await etcd.add_member_as_learner(name, peer)
        say("[etcd] Announced new etcd member joining to the existing etcd cluster")
        klog(1, f"Updated etcd member list: {cluster}")
        PHASES.mark("etcd_member_add")
        say('[etcd] Creating static Pod manifest for "etcd"')
        write_etcd_manifest(r, emu, name, address, ",".join(f"{n}={u}" for n, u in cluster), "existing")
        await etcd.member_promote(await etcd.member_id(peer))
        PHASES.mark("etcd_promote")
        say(
            "[etcd] Waiting for the new etcd member to join the cluster. This can take up to "
            f"{HEALTHY_CHECK_RETRIES * HEALTHY_CHECK_INTERVAL_S:.0f}s"
        )
        await etcd.wait_for_cluster_available()

    asyncio.run(_join())


# -- reset ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResetConfig:
    """What ``kubeadm reset`` reads from the cluster (``FetchInitConfigurationFromCluster``):
    the API client (admin.conf), the ClusterConfiguration, this node's name (from
    ``kubelet.conf``'s client certificate) and its API advertise address."""

    api: Api
    cluster: dict[str, Any]
    node: str
    address: str


def _node_name(r: Root) -> str:
    """``GetNodeName``: the CN of ``kubelet.conf``'s client certificate without
    ``system:node:``, else the host name."""
    from cryptography import x509

    try:
        _, _, (cert, _) = pki.parse_kubeconfig(r("/etc/kubernetes/kubelet.conf").read_bytes())
        cn = x509.load_pem_x509_certificate(cert).subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        return str(cn[0].value).removeprefix("system:node:")
    except (OSError, ValueError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return os.uname().nodename


def reset_config(r: Root) -> ResetConfig | None:
    """The cluster's view of this node, or None (with kubeadm's warning) when it cannot be
    had: no admin.conf, no answer from the API, no Node of this name (a Node deleted before
    the reset: kubeadm then removes no etcd member), no kube-apiserver manifest to take the
    advertise address from (kubeadm reads the mirror Pod's annotation)."""
    admin = r("/etc/kubernetes/admin.conf")
    if not admin.exists():
        klog(1, f"[reset] Could not obtain a client set from the kubeconfig file: {admin}")
        return None
    say('[reset] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...')
    say("[reset] Use 'kubeadm init phase upload-config --config your-config-file' to re-upload it.")
    try:
        api = admin_api(r)
        try:
            code, cm = api.call("GET", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        except OSError as err:
            raise KubeadmError(f"failed to get config map: {err}") from err
        if code != 200:
            raise KubeadmError(f"failed to get config map: HTTP {code}: {_message(cm)}")
        cluster = yaml.safe_load(cm["data"]["ClusterConfiguration"])
        node = _node_name(r)
        try:
            code, body = api.call("GET", f"/api/v1/nodes/{node}")
        except OSError as err:
            raise KubeadmError(f"failed to get node registration: failed to get corresponding node: {err}") from err
        if code != 200:
            raise KubeadmError(f"failed to get node registration: failed to get corresponding node: {_message(body)}")
        pod = read_static_pod(r, APISERVER_POD) or {}
        endpoint = (pod.get("metadata", {}).get("annotations") or {}).get(APISERVER_ENDPOINT_ANNOTATION)
        if not endpoint:
            raise KubeadmError(
                f'failed to getAPIEndpoint: could not retrieve API endpoints for node "{node}" using pod annotations: '
                f'API server pod for node name "{node}" has 0 entries, only one was expected'
            )
        return ResetConfig(api, cluster, node, endpoint.rsplit(":", 1)[0])
    except (ToolError, OSError, KeyError, TypeError, yaml.YAMLError) as err:
        warn(f"[reset] Unable to fetch the kubeadm-config ConfigMap from cluster: {err}", "reset.go")
        return None


def _message(body: Any) -> str:
    return str(body.get("message") if isinstance(body, dict) else body)


async def remove_stacked_etcd_member(r: Root, cfg: ResetConfig, timeouts: Timeouts) -> None:
    """``RemoveStackedEtcdMemberFromCluster`` (``phases/etcd/local.go``): through the members
    the API server's control-plane Nodes lead to, remove the member whose peer URL is
    ``https://<advertise address>:2380``; nothing when it is the only member left and this
    node's. Raises :class:`KubeadmError` (``no member id found for peer URL`` when no member
    has it, etcd's refusal when the retries run out)."""
    etcd = await etcd_from_cluster(r, cfg.api, timeouts)
    members = await etcd.list_members()
    if len(members) == 1 and f"https://{cfg.address}:2379" in etcd.endpoints:
        klog(1, "[etcd] This is the only remaining etcd member, skip removing it")
        return
    peer = f"https://{cfg.address}:2380"
    klog(2, f"[etcd] get the member id from peer: {peer}")
    member_id = await etcd.member_id(peer)
    klog(1, f"[etcd] removing etcd member: {peer}, id: {member_id}")
    left = await etcd.remove_member(member_id)
    klog(1, f"[etcd] Updated etcd member list: {[(m.name, m.peer_urls[0] if m.peer_urls else '') for m in left]}")


def _shown(r: Root, path: Path) -> str:
    """``path`` as the node sees it (without the ``--rootfs`` prefix)."""
    try:
        return "/" + str(path.relative_to(r.root))
    except ValueError:
        return str(path)


def _clean_dir(path: Path) -> None:
    """``CleanDir``: delete what is in ``path``, keep ``path``."""
    for child in path.iterdir() if path.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def remove_etcd_member_phase(r: Root, cfg: ResetConfig | None, timeouts: Timeouts) -> None:
    """The ``remove-etcd-member`` phase (``cmd/phases/reset/removeetcdmember.go``): with the
    cluster's config, :func:`remove_stacked_etcd_member`, warning when it fails and wiping the
    data directory when it worked; then wipe the data directory in any case when it is not
    empty. The data directory is the config's (``/var/lib/etcd``) or, without one, the
    ``etcd-data`` volume of ``manifests/etcd.yaml``."""
    data_dir = r("/var/lib/etcd")
    if cfg is None:
        warn("[reset] No kubeadm config, using etcd pod spec to get data directory", "removeetcdmember.go")
        pod = read_static_pod(r, ETCD_POD)
        if pod is not None:
            paths = [
                v.get("hostPath", {}).get("path")
                for v in pod.get("spec", {}).get("volumes", [])
                if v.get("name") == "etcd-data"
            ]
            if not paths or not paths[0]:
                say("[reset] No etcd config found. Assuming external etcd")
                say("[reset] Please, manually reset etcd to prevent further issues")
                return
            data_dir = Path(paths[0])
    else:
        try:
            asyncio.run(remove_stacked_etcd_member(r, cfg, timeouts))
        except (ToolError, OSError, EtcdError) as err:
            warn(
                f"[reset] Failed to remove etcd member: {err}, please manually remove this etcd member using etcdctl",
                "removeetcdmember.go",
            )
        else:
            _clean_dir(data_dir)
            say(f"[reset] Deleted contents of the etcd data directory: {_shown(r, data_dir)}")
    if data_dir.is_dir() and any(data_dir.iterdir()):
        _clean_dir(data_dir)
        say(f"[reset] Deleted contents of the etcd data directory: {_shown(r, data_dir)}")


def reset(r: Root, skip_phases: frozenset[str] = frozenset()) -> None:
    """``kubeadm reset -f`` (``cmd/reset.go``): :func:`reset_config`, preflight, the
    ``remove-etcd-member`` phase (:func:`remove_etcd_member_phase`), then ``cleanup-node``:
    stop the kubelet, then the static pods' processes (kube-apiserver, etcd: kubeadm removes
    their containers), delete ``/etc/kubernetes``, ``/var/lib/kubelet`` and whatever is left
    in ``/var/lib/etcd``. A member that cannot be removed is a warning, never an error; the
    etcd retries take up to ``EtcdAPICall`` (2 min) when etcd keeps refusing. ``skip_phases``
    (``--skip-phases``, kubeadm's ``reset`` phases: ``remove-etcd-member``, ...) leaves those
    out. Never raises for "nothing to reset"."""
    say("[reset] Resetting this node (EMULATED kubeadm, ephemeral-k8s lab)")
    timeouts = Timeouts()
    cfg = reset_config(r)
    say("[preflight] Running pre-flight checks")
    if "remove-etcd-member" in skip_phases:
        say("[reset] Skipping phase remove-etcd-member")
    else:
        with phase("remove-etcd-member"):
            remove_etcd_member_phase(r, cfg, timeouts)
    with phase("cleanup-node"):
        services = ProcessServices(r.root)
        say("[reset] Stopping the kubelet service")
        if under_systemd(r):
            subprocess.run(["systemctl", "stop", "kubelet.service"], capture_output=True, text=True, timeout=60)
        else:
            services.stop("kubelet")
        for svc in (APISERVER_POD, ETCD_POD):
            services.stop(svc)
        say('[reset] Unmounting mounted directories in "/var/lib/kubelet"')
        for d in ("/etc/kubernetes", "/var/lib/kubelet", "/var/lib/etcd"):
            shutil.rmtree(r(d), ignore_errors=True)
        say(
            "[reset] Deleting contents of directories: [/etc/kubernetes/manifests /var/lib/kubelet /etc/kubernetes/pki]"
        )
        say(
            "[reset] Deleting files: [/etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf "
            "/etc/kubernetes/kubelet.conf /etc/kubernetes/bootstrap-kubelet.conf "
            "/etc/kubernetes/controller-manager.conf /etc/kubernetes/scheduler.conf]"
        )


def admin_api(r: Root) -> Api:
    """The API through the control-plane endpoint with this node's admin.conf, as kubeadm's
    token and upload-certs commands use it."""
    path = r("/etc/kubernetes/admin.conf")
    if not path.exists():
        raise KubeadmError(f"{path} not found: run this on a control-plane node")
    server, ca_pem, cert = pki.parse_kubeconfig(path.read_bytes())
    return Api(server, ctx_for(ca_pem, cert, r.pki))


def token_create(r: Root, token: str, ttl: str) -> None:
    """``kubeadm token create TOKEN --ttl D``."""
    create_token(admin_api(r), token, ttl)
    print(token, flush=True)


def upload_certs(r: Root, certificate_key: str) -> None:
    """``kubeadm init phase upload-certs --upload-certs --certificate-key KEY``."""
    if not re.fullmatch(r"[0-9a-f]{64}", certificate_key):
        raise KubeadmError("the certificate key must be 32 bytes, hex-encoded (64 characters)")
    upload_certificates(r, admin_api(r), certificate_key)


def main(argv: list[str] | None = None) -> int:
    """The ``kubeadm`` shim's entry: ``init``, ``init phase upload-certs``, ``join``
    (``--skip-phases``), ``reset -f`` and ``token create``, each with ``--rootfs``. Returns 0,
    or 1 after printing ``error execution phase <phase>: <message>`` on stderr for a
    :class:`KubeadmError`, ``OSError``, ``KeyError`` or :class:`core.etcd.EtcdError`; records
    the phases either way (:class:`Phases`). argparse exits 2 on bad arguments."""
    p = argparse.ArgumentParser(prog="kubeadm", description="EMULATED kubeadm (ephemeral-k8s lab only)")
    p.add_argument("--rootfs", default=None)
    sub = p.add_subparsers(dest="cmd", required=True)
    for cmd in ("init", "join"):
        sp = sub.add_parser(cmd)
        sp.add_argument("--config")
        sp.add_argument("--rootfs", default=None)
        if cmd == "init":
            sp.add_argument("--upload-certs", action="store_true")
            sp.add_argument("--certificate-key", default=None)
            sp.add_argument("--ignore-preflight-errors", default="")
            sp.add_argument("phase", nargs="*", help="'phase upload-certs' only")
        else:
            sp.add_argument("--skip-phases", default="")
    sp = sub.add_parser("reset")
    sp.add_argument("-f", "--force", action="store_true")
    sp.add_argument("--rootfs", default=None)
    sp.add_argument("--skip-phases", default="")
    sp = sub.add_parser("token")
    sp.add_argument("action", choices=["create"])
    sp.add_argument("token")
    sp.add_argument("--ttl", default="24h0m0s")
    sp.add_argument("--rootfs", default=None)
    args = p.parse_args(argv)
    r = Root(args.rootfs)
    os.umask(0o077)
    command = "upload-certs" if args.cmd == "init" and args.phase else args.cmd
    try:
        if args.cmd == "reset":
            if not args.force:
                raise KubeadmError("the emulated kubeadm only supports non-interactive 'reset -f'")
            reset(r, frozenset(p for p in args.skip_phases.split(",") if p))
        elif args.cmd == "token":
            token_create(r, args.token, args.ttl)
        elif args.cmd == "init" and args.phase:
            if args.phase != ["phase", "upload-certs"] or not args.upload_certs or not args.certificate_key:
                raise KubeadmError(
                    "the emulation supports 'init phase upload-certs --upload-certs --certificate-key KEY'"
                )
            upload_certs(r, args.certificate_key)
        else:
            if not args.config:
                raise KubeadmError("--config is required")
            docs = load_docs(r(args.config))
            if args.cmd == "init":
                init(r, docs, args.upload_certs, set(filter(None, args.ignore_preflight_errors.split(","))))
            else:
                join(r, docs, frozenset(filter(None, args.skip_phases.split(","))))
    except (ToolError, OSError, KeyError, EtcdError) as err:
        where = _PHASE[-1] if _PHASE else args.cmd
        print(f"error execution phase {where}: {err}", file=sys.stderr, flush=True)
        print("To see the stack trace of this error execute with --v=5 or higher", file=sys.stderr, flush=True)
        PHASES.save(command, ok=False)
        return 1
    PHASES.save(command, ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
