"""EMULATED kubeadm for the lab: exactly the subset of kubeadm's CLI the driver calls.

* ``kubeadm init --config F --upload-certs [--rootfs R]``: cluster PKI (ECDSA P-256), a real
  etcd member (TLS, client-certificate auth, as kubeadm's static pod runs it), the emulated
  API server, admin.conf/kubelet.conf, the ``kubeadm-config`` ConfigMap, the sealed
  ``kubeadm-certs`` Secret, the bootstrap token Secret and ``cluster-info``, the emulated
  kubelet. Uploads go through the control-plane endpoint (the VIP), as kubeadm's do.
* ``kubeadm join --config F [--rootfs R]``: token discovery (``cluster-info`` JWS for the token,
  CA pin check), the Node name check, TLS bootstrap (CSR) for workers; for
  ``controlPlane``: download and unseal ``kubeadm-certs``, ``member add`` in the real etcd,
  start its etcd member and API server.
* ``kubeadm reset -f [--rootfs R]``: remove this node's etcd member when etcd answers, stop
  its processes, wipe ``/etc/kubernetes``, ``/var/lib/etcd``, ``/var/lib/kubelet``.
* ``kubeadm token create TOKEN --ttl D`` and ``kubeadm init phase upload-certs --upload-certs
  --certificate-key KEY``, through the control-plane endpoint with the node's admin.conf.

It refuses, with messages modelled on kubeadm 1.32's, where kubeadm does (paths under
``cmd/kubeadm/app/`` in kubernetes/kubernetes): existing manifests or kubelet.conf
(``preflight/checks.go``), an expired or unknown token and a CA hash that does not match
(``discovery/token/token.go``), a Ready Node of the same name (``cmd/phases/join/kubelet.go``),
an expired ``kubeadm-certs`` Secret or a wrong certificate key
(``phases/copycerts/copycerts.go``). The real etcd under it refuses a peer URL already in its
member list and a membership change without quorum.

Where it differs from kubeadm 1.32:

* a join whose peer URL is still a member fails here on etcd's refusal; kubeadm 1.32 skips
  ``member add`` and reuses the stale member (``util/etcd/etcd.go``, kubernetes#127491), and
  the new node's empty etcd crash-loops (etcd-io/etcd#10254);
* no check-etcd phase (``cmd/phases/join/checketcd.go``, ``CheckLocalEtcdClusterStatus``): a
  dead member still blocks a control-plane join, but through etcd refusing the member add
  (``etcdserver: unhealthy cluster``, retried for about a minute) instead of kubeadm's "etcd
  cluster is not healthy";
* discovery fails at once when ``cluster-info`` has no signature for the token, where kubeadm
  polls until its discovery timeout (``DefaultDiscoveryTimeout``, 5 min);
* the same-name Node check runs right after discovery, where kubeadm runs it in kubelet-start,
  after control-plane-prepare (certificates, kubeconfigs, manifests) and check-etcd;
* ``reset`` removes the member through the local etcd, only while it runs, where kubeadm finds
  etcd through the API server and removes the member by peer URL
  (``cmd/phases/reset/removeetcdmember.go``).

Paths are taken relative to ``--rootfs`` (kubeadm chroots there; we prefix). Durations from
``$EK8S_EMULATION`` (``init_s``, ``join_s``) are spent where kubeadm waits for the control
plane. docs/lab.md says what else is emulated.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import ipaddress
import json
import os
import re
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from core.etcd import EtcdClient, EtcdError, kubeadm_client_context, retry_transient
from core.fileperm import ensure_dir, write_atomic
from core.joinmaterial import TOKEN_RE, ca_cert_hash
from core.services import ProcessServices
from lab import emulation, pki

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


class KubeadmError(Exception):
    """A refusal or failure; :func:`main` prints ``error execution phase <command>: <message>``
    on stderr, as kubeadm does (kubeadm names its phase, e.g. ``kubelet-start``), and exits 1."""


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


class Root:
    """Node paths under ``--rootfs``."""

    def __init__(self, rootfs: str | None) -> None:
        self.root = Path(rootfs or "/")

    def __call__(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def pki(self) -> Path:
        """``/etc/kubernetes/pki`` under the root (kubeadm's ``certificatesDir`` default)."""
        return self("/etc/kubernetes/pki")


# -- a minimal API client (urllib; the real kubeadm uses client-go) ---------------------
class Api:
    """An API server at ``server`` (``https://host:port``) over ``ctx``, optionally with a
    bootstrap token as bearer (``<id>.<secret>``)."""

    def __init__(self, server: str, ctx: ssl.SSLContext, bearer: str | None = None) -> None:
        self.server, self.ctx, self.bearer = server.rstrip("/"), ctx, bearer

    def call(self, method: str, path: str, body: object | None = None, timeout: float = 5.0) -> tuple[int, Any]:
        """One request with ``body`` as JSON. Returns (HTTP status, the answer parsed as JSON
        when it starts with ``{``, else its text); error statuses are returned, not raised.
        Raises ``OSError`` (``URLError``, ``ssl.SSLError``, a timeout after ``timeout``
        seconds) when there is no answer."""
        headers = {"Content-Type": "application/json"}
        if self.bearer:
            headers["Authorization"] = f"Bearer {self.bearer}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
                raw = resp.read()
                return int(resp.status), (json.loads(raw) if raw.startswith(b"{") else raw.decode())
        except urllib.error.HTTPError as err:
            raw = err.read()
            return int(err.code), (json.loads(raw) if raw.startswith(b"{") else raw.decode())

    def wait(self, method: str, path: str, body: object | None = None, timeout_s: float = 60.0) -> tuple[int, Any]:
        """:meth:`call` every 50 ms until the endpoint answers at all (kubeadm's API client
        retries likewise); returns that answer. Raises :class:`KubeadmError` after
        ``timeout_s`` seconds without one."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                return self.call(method, path, body)
            except (OSError, urllib.error.URLError) as err:
                last = err
                time.sleep(0.05)
        raise KubeadmError(f"{self.server}{path}: no answer in {timeout_s:.0f}s: {last}")


def ctx_for(ca_pem: bytes | None, cert: pki.Pair | None = None, workdir: Path | None = None) -> ssl.SSLContext:
    """A TLS client context trusting ``ca_pem`` (no verification at all when None, as
    kubeadm's first, insecure request for ``cluster-info``); with ``cert`` and ``workdir``,
    it presents that client certificate (written to ``workdir/client.pem``, 0600)."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else ssl._create_unverified_context()
    if cert is not None and workdir is not None:
        pem = workdir / "client.pem"
        write_atomic(pem, cert[0] + cert[1])
        ctx.load_cert_chain(str(pem))
    return ctx


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


# -- control-plane pieces ---------------------------------------------------------------
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


def etcd_client(r: Root, endpoints: list[str]) -> EtcdClient:
    """An etcd client for ``endpoints`` (``https://host:2379``) with the node's
    ``healthcheck-client`` certificate, as kubeadm's own etcd calls use; 5 s per request."""
    return EtcdClient(endpoints, kubeadm_client_context(r.pki), timeout_s=5.0)


def etcd_argv(
    etcd: str,
    name: str,
    data_dir: Path,
    pki_etcd: Path,
    client_urls: list[str],
    peer_url: str,
    initial_cluster: str,
    state: str,
) -> list[str]:
    """etcd's command line as kubeadm's static pod sets it (``phases/etcd/local.go``,
    ``getEtcdCommand``): TLS with client certificates on both the client and the peer side.
    ``client_urls[0]`` is advertised; all are listened on. ``state`` is ``new`` or
    ``existing``; ``initial_cluster`` is ``name=peer URL,...``. ``--strict-reconfig-check``
    is etcd's default, spelled out; kubeadm's metrics URL and corruption check are left out."""
    return [
        etcd,
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--advertise-client-urls={client_urls[0]}",
        f"--listen-client-urls={','.join(client_urls)}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster={initial_cluster}",
        f"--initial-cluster-state={state}",
        f"--cert-file={pki_etcd / 'server.crt'}",
        f"--key-file={pki_etcd / 'server.key'}",
        "--client-cert-auth=true",
        f"--trusted-ca-file={pki_etcd / 'ca.crt'}",
        f"--peer-cert-file={pki_etcd / 'peer.crt'}",
        f"--peer-key-file={pki_etcd / 'peer.key'}",
        "--peer-client-cert-auth=true",
        f"--peer-trusted-ca-file={pki_etcd / 'ca.crt'}",
        "--strict-reconfig-check=true",
        "--snapshot-count=10000",
        "--logger=zap",
        "--log-outputs=stderr",
    ]


def start_etcd(r: Root, emu: emulation.Emulation, name: str, address: str, initial_cluster: str, state: str) -> None:
    """Start the real etcd (``emu.etcd``) as a detached process, as the kubelet would run the
    static pod, with its data in ``/var/lib/etcd``; write ``manifests/etcd.yaml`` (the
    command line, what preflight looks for). Returns without waiting for it to answer."""
    argv = etcd_argv(
        emu.etcd,
        name,
        r("/var/lib/etcd"),
        r.pki / "etcd",
        [f"https://{address}:2379", "https://127.0.0.1:2379"],
        f"https://{address}:2380",
        initial_cluster,
        state,
    )
    ensure_dir(r("/var/lib/etcd"))
    ensure_dir(r("/etc/kubernetes/manifests"))
    write_atomic(r("/etc/kubernetes/manifests/etcd.yaml"), yaml.safe_dump({"emulated": True, "command": argv}))
    ProcessServices(r.root).start("etcd", argv)
    say(f"[etcd] Started etcd member {name!r} (real etcd, {state} cluster)")


async def _wait_etcd(client: EtcdClient, timeout_s: float, learner: bool = False) -> None:
    """Until the member answers (a learner refuses reads, so only its status is asked)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await client.status()
            if not learner:
                await client.get("/registry/health")
            return
        except EtcdError as err:
            if time.monotonic() > deadline:
                raise KubeadmError(f"[etcd] local etcd member not healthy after {timeout_s:.0f}s: {err}") from err
            await asyncio.sleep(0.05)


def start_apiserver(r: Root, emu: emulation.Emulation, address: str, port: int, version: str) -> None:
    """Start :mod:`lab.apiserver` on ``0.0.0.0:port`` (``port`` is ``bindPort``, 6443 by
    default) with storage in the local etcd member, from ``manifests/kube-apiserver.json``; a
    ``kube-apiserver.yaml`` marker is what preflight looks for. Returns without waiting."""
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
    path = r("/etc/kubernetes/manifests/kube-apiserver.json")
    ensure_dir(path.parent)
    write_atomic(path, json.dumps(conf, indent=1))
    write_atomic(
        r("/etc/kubernetes/manifests/kube-apiserver.yaml"), yaml.safe_dump({"emulated": True, "config": str(path)})
    )
    ProcessServices(r.root).start("kube-apiserver", [emu.python, "-m", "lab.apiserver", "--config", str(path)])
    say("[control-plane] Started the emulated kube-apiserver")


def wait_local_api(address: str, port: int, ca_pem: bytes, timeout_s: float = 60.0) -> None:
    """Poll ``https://address:port/readyz`` (this node's API server, not the VIP) every 50 ms
    until 200, as kubeadm's wait-control-plane does. Raises :class:`KubeadmError` after
    ``timeout_s`` seconds (kubeadm waits up to 4 min)."""
    api = Api(f"https://{address}:{port}", ctx_for(ca_pem))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            code, _ = api.call("GET", "/readyz", timeout=2)
            if code == 200:
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise KubeadmError(f"[api-check] the API server at {address}:{port} is not ready after {timeout_s:.0f}s")


def start_kubelet(r: Root, emu: emulation.Emulation, name: str, address: str, control_plane: bool) -> None:
    """Start :mod:`lab.kubelet` for Node ``name`` at ``address`` (IPv4 string) with the
    node's ``kubelet.conf``; control-plane Nodes get the ``node-role.kubernetes.io/
    control-plane`` label. Returns without waiting."""
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
    ]
    if control_plane:
        argv.append("--control-plane")
    ensure_dir(r("/var/lib/kubelet"))
    ProcessServices(r.root).start("kubelet", argv)
    say("[kubelet-start] Started the emulated kubelet")


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
    """``kubeadm init``: preflight, the cluster PKI, admin.conf, super-admin.conf and
    kubelet.conf (``phases/kubeconfig``), etcd and the API server, then through the
    control-plane endpoint: the ``kubeadm-config`` ConfigMap (waiting up to 120 s for the VIP),
    ``kubeadm-certs`` (with ``upload_certs``), the kubelet, the bootstrap token and
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
    if r("/etc/kubernetes/manifests/kube-apiserver.yaml").exists():
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
    ca, etcd_ca, fp_ca = pki.new_ca("kubernetes"), pki.new_ca("etcd-ca"), pki.new_ca("front-proxy-ca")
    pki.write_pair(r.pki, "ca", ca)
    pki.write_pair(r.pki / "etcd", "ca", etcd_ca)
    pki.write_pair(r.pki, "front-proxy-ca", fp_ca)
    pub, key = pki.sa_keypair()
    write_atomic(r.pki / "sa.pub", pub)
    write_atomic(r.pki / "sa.key", key)
    node_certs(r, name, address, cc, ca, etcd_ca)
    say("[certs] Generated the cluster PKI (ECDSA-P256)")
    cluster_name = cc.get("clusterName", "kubernetes")
    server = f"https://{endpoint}"
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
        r("/etc/kubernetes/kubelet.conf"), pki.kubeconfig(server, ca[0], kubelet, f"system:node:{name}", cluster_name)
    )
    say("[kubeconfig] Wrote admin.conf, super-admin.conf and kubelet.conf")
    PHASES.mark("certs_and_kubeconfigs")

    start_etcd(r, emu, name, address, f"{name}=https://{address}:2380", "new")
    start_apiserver(r, emu, address, port, cc["kubernetesVersion"])
    PHASES.mark("spawn_etcd_and_apiserver")

    async def _etcd_up() -> None:
        async with etcd_client(r, ["https://127.0.0.1:2379"]) as c:
            await _wait_etcd(c, 60)

    asyncio.run(_etcd_up())
    PHASES.mark("etcd_ready")
    wait_local_api(address, port, ca[0])
    PHASES.mark("apiserver_ready")
    say(f"[wait-control-plane] The control plane is up after {time.monotonic() - started:.2f}s")

    # From here kubeadm talks to the control-plane endpoint (the VIP through HAProxy).
    api = Api(server, ctx_for(ca[0], superadmin, r.pki))
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
        upload_certificates(r, api, ic["certificateKey"], emu)
    start_kubelet(r, emu, name, address, control_plane=True)
    token = ic["bootstrapTokens"][0]
    create_token(api, token["token"], token.get("ttl", "86400s"), emu)
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
    PHASES.mark("upload_certs_token_kubelet")
    pad_to(emu.init_s, "init")
    say(f"Your Kubernetes control-plane has initialized successfully! (emulated, {time.monotonic() - started:.2f}s)")


def _expect(code: int, body: Any, what: str, ok: tuple[int, ...]) -> None:
    if code not in ok:
        msg = body.get("message") if isinstance(body, dict) else body
        raise KubeadmError(f"{what}: HTTP {code}: {msg}")


def upload_certificates(r: Root, api: Api, certificate_key: str, emu: emulation.Emulation) -> None:
    """The ``kubeadm-certs`` Secret: each of ``CERT_FILES`` sealed with ``certificate_key``
    (:func:`lab.pki.seal`), keys with ``/`` turned to ``-`` (``copycerts.go``). kubeadm
    gives it an owner reference to a 2 h token so that it goes with the token; here it
    carries an ``ek8s.lab/expires-at`` annotation ``emu.certs_ttl_s`` seconds ahead. Raises
    :class:`KubeadmError` unless the API answers 200 or 201, ``OSError`` for a missing file."""
    data = {f.replace("/", "-"): _b64(pki.seal(certificate_key, (r.pki / f).read_bytes())) for f in CERT_FILES}
    secret = {
        "metadata": {
            "name": "kubeadm-certs",
            "annotations": {"ek8s.lab/expires-at": str(time.time() + emu.certs_ttl_s)},
        },
        "type": "Opaque",
        "data": data,
    }
    code, body = api.call("PUT", "/api/v1/namespaces/kube-system/secrets/kubeadm-certs", secret)
    _expect(code, body, "[upload-certs] kubeadm-certs", (200, 201))
    say('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace')


def create_token(api: Api, token: str, ttl: str, emu: emulation.Emulation) -> None:
    """The ``bootstrap-token-<id>`` Secret for ``token`` (``<id>.<secret>``) as kubeadm writes
    it (``apis/bootstraptoken/v1/utils.go``; format in ``k8s.io/cluster-bootstrap/token/api``):
    usable for authentication and signing, extra group
    ``system:bootstrappers:kubeadm:default-node-token``, ``expiration`` in RFC 3339. ``ttl``
    is a Go duration (``24h0m0s``, ``86400s``); ``emu.token_ttl_s`` overrides it. Raises
    :class:`KubeadmError` for a malformed token or ttl, or when the API refuses the Secret."""
    m = TOKEN_RE.match(token)
    if not m:
        raise KubeadmError(
            f'[bootstrap-token] the bootstrap token "{token}" was not of the form "[a-z0-9]{{6}}.[a-z0-9]{{16}}"'
        )
    seconds = emu.token_ttl_s if emu.token_ttl_s is not None else _duration(ttl)
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
    """Go durations as kubeadm prints them (``24h0m0s``, ``86400s``, ``2h``)."""
    total, num = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for ch in ttl:
        if ch.isdigit() or ch == ".":
            num += ch
        elif ch in units and num:
            total += float(num) * units[ch]
            num = ""
        else:
            raise KubeadmError(f"invalid token ttl {ttl!r}")
    return total


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
    (``cmd/phases/join/kubelet.go``); a NotReady or Unknown Node is fine, as in kubeadm."""
    code, node = api.call("GET", f"/api/v1/nodes/{name}")
    if code != 200:
        return
    for c in node.get("status", {}).get("conditions", []):
        if c.get("type") == "Ready" and c.get("status") == "True":
            raise KubeadmError(
                f'a Node with name "{name}" and status "Ready" already exists in the cluster. You must delete the '
                "existing Node or change the name of this new joining Node"
            )


def join(r: Root, docs: dict[str, dict[str, Any]]) -> None:
    """``kubeadm join``: preflight (``kubelet.conf`` must not exist), :func:`discover`, the
    same-name Node check, then on a control node :func:`download_certs`, its own certificates,
    admin.conf, :func:`join_etcd` and the API server; on a worker the kubelet's TLS bootstrap
    (a CSR signed at once by the emulated API server). Then ``kubelet.conf`` and the kubelet.

    ``docs`` from :func:`load_docs`. Raises :class:`KubeadmError` on each refusal the module
    lists, ``KeyError`` when the JoinConfiguration lacks a field the driver always writes.
    """
    emu = emulation.load()
    jc = docs["JoinConfiguration"]
    name = jc["nodeRegistration"]["name"]
    control = jc.get("controlPlane")
    say(f"[preflight] Running pre-flight checks (EMULATED kubeadm, ephemeral-k8s lab) for {name}")
    if r("/etc/kubernetes/kubelet.conf").exists():
        raise KubeadmError(
            "[preflight] Some fatal errors occurred:\n\t[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: "
            "/etc/kubernetes/kubelet.conf already exists"
        )
    started = time.monotonic()
    PHASES.node = name
    server, ca_pem, token = discover(jc)
    PHASES.mark("discovery")
    ensure_dir(r.pki)
    boot = Api(server, ctx_for(ca_pem), bearer=token)
    check_node_name(boot, name)
    cluster_name = "kubernetes"
    if control:
        address = control["localAPIEndpoint"]["advertiseAddress"]
        port = int(control["localAPIEndpoint"].get("bindPort", 6443))
        download_certs(r, boot, control["certificateKey"])
        ca = pki.read_pair(r.pki, "ca")
        admin = pki.issue(ca, "kubernetes-admin", orgs=("kubeadm:cluster-admins",), client=True)
        api = Api(server, ctx_for(ca_pem, admin, r.pki))
        code, cm = api.call("GET", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        _expect(code, cm, "[preflight] kubeadm-config", (200,))
        cc = yaml.safe_load(cm["data"]["ClusterConfiguration"])
        cluster_name = cc.get("clusterName", cluster_name)
        node_certs(r, name, address, cc, ca, pki.read_pair(r.pki / "etcd", "ca"))
        write_atomic(
            r("/etc/kubernetes/admin.conf"), pki.kubeconfig(server, ca_pem, admin, "kubernetes-admin", cluster_name)
        )
        kubelet = pki.issue(ca, f"system:node:{name}", orgs=("system:nodes",), client=True)
        say("[certs] Using the existing cluster CA; generated this node's certificates")
        PHASES.mark("download_certs_and_certs")
        join_etcd(r, emu, api, name, address)
        start_apiserver(r, emu, address, port, cc.get("kubernetesVersion", "v1.32.1"))
        wait_local_api(address, port, ca_pem)
        PHASES.mark("apiserver_ready")
    else:
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
        kubelet = (base64.b64decode(body["status"]["certificate"]), key)
        write_atomic(r.pki / "ca.crt", ca_pem)
        say("[kubelet-start] TLS bootstrap: the kubelet client certificate was signed")
        PHASES.mark("tls_bootstrap")
    write_atomic(
        r("/etc/kubernetes/kubelet.conf"), pki.kubeconfig(server, ca_pem, kubelet, f"system:node:{name}", cluster_name)
    )
    pad_to(emu.join_s, "join")
    address_ip = next(a["value"] for a in jc["nodeRegistration"].get("kubeletExtraArgs", []) if a["name"] == "node-ip")
    start_kubelet(r, emu, name, address_ip, control_plane=bool(control))
    PHASES.mark("kubelet_start")
    what = "control-plane node" if control else "node"
    say(f"This {what} has joined the cluster (emulated, {time.monotonic() - started:.2f}s)")


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


def join_etcd(r: Root, emu: emulation.Emulation, api: Api, name: str, address: str) -> None:
    """Add this node's etcd member as a learner, start it, wait for it, promote it: kubeadm
    1.32's EtcdLearnerMode (``util/etcd/etcd.go``, ``AddMemberAsLearner``, ``MemberPromote``),
    retrying etcd's transient refusals with backoff as kubeadm does. The other members'
    client URLs are ``https://<InternalIP>:2379`` of the control-plane Nodes (kubeadm reads
    them from the etcd Pods). Raises :class:`KubeadmError` when there is none, when etcd
    refuses for good (a peer URL that is still a member: see the module), or when the local
    member is not healthy within 60 s."""
    code, nodes = api.call("GET", "/api/v1/nodes")
    _expect(code, nodes, "[etcd] list control-plane nodes", (200,))
    endpoints = [
        f"https://{a['address']}:2379"
        for n in nodes["items"]
        if "node-role.kubernetes.io/control-plane" in n["metadata"].get("labels", {})
        for a in n.get("status", {}).get("addresses", [])
        if a["type"] == "InternalIP" and a["address"] != address
    ]
    if not endpoints:
        raise KubeadmError("[etcd] no control-plane node with an etcd member found")
    peer = f"https://{address}:2380"

    async def _add() -> tuple[int, str]:
        async with etcd_client(r, endpoints) as c:
            new, members = await _retry(lambda: c.member_add([peer], learner=True), f"adding etcd learner {peer}")
            parts = [f"{m.name or name}={m.peer_urls[0]}" for m in members if m.peer_urls]
            return new.id, ",".join(parts)

    member_id, initial = asyncio.run(_add())
    PHASES.mark("etcd_member_add")
    say(f"[etcd] Added etcd learner {name} ({peer}); initial cluster {initial}")
    start_etcd(r, emu, name, address, initial, "existing")
    PHASES.mark("etcd_spawn")

    async def _promote() -> None:
        async with etcd_client(r, ["https://127.0.0.1:2379"]) as c:
            await _wait_etcd(c, 60, learner=True)
        async with etcd_client(r, endpoints) as c:
            await _retry(lambda: c.member_promote(member_id), f"promoting etcd learner {name}")
        async with etcd_client(r, ["https://127.0.0.1:2379"]) as c:
            await _wait_etcd(c, 60)

    asyncio.run(_promote())
    PHASES.mark("etcd_start_and_promote")
    say("[etcd] The local etcd member is healthy and has joined the cluster")


async def _retry(call: Any, what: str) -> Any:
    """kubeadm retries etcd membership changes with exponential backoff; so does this."""
    try:
        return await retry_transient(call, on_retry=lambda err, d: say(f"[etcd] {what}: {err}; retrying in {d:.2f}s"))
    except EtcdError as err:
        raise KubeadmError(f"[etcd] error {what}: {err}") from err


# -- reset ------------------------------------------------------------------------------
def reset(r: Root) -> None:
    """``kubeadm reset -f``: remove this node's etcd member through the local etcd when it
    runs and is not the last member (5 s at most; a failure is printed and ignored, as
    kubeadm's ``phases/reset/removeetcdmember.go`` does), stop the kubelet, API server and
    etcd, and delete ``/etc/kubernetes``, ``/var/lib/etcd`` and ``/var/lib/kubelet``. Never
    raises for "nothing to reset"."""
    say("[reset] Resetting this node (EMULATED kubeadm, ephemeral-k8s lab)")
    services = ProcessServices(r.root)
    if (r.pki / "apiserver-etcd-client.crt").exists() and services.is_running("etcd"):

        async def _remove() -> None:
            async with etcd_client(r, ["https://127.0.0.1:2379"]) as c:
                me = (await c.status()).get("header", {}).get("member_id")
                if me is not None and len(await c.member_list()) > 1:
                    await c.member_remove(int(me))
                    say("[reset] Removed this node's etcd member")

        try:
            asyncio.run(asyncio.wait_for(_remove(), 5))
        except (EtcdError, TimeoutError, OSError) as err:
            say(f"[reset] could not remove this node's etcd member (continuing): {err}")
    for svc in ("kubelet", "kube-apiserver", "etcd"):
        services.stop(svc)
    for d in ("/etc/kubernetes", "/var/lib/etcd", "/var/lib/kubelet"):
        shutil.rmtree(r(d), ignore_errors=True)
    say(
        "[reset] Stopped the emulated control plane and kubelet; "
        "deleted /etc/kubernetes, /var/lib/etcd, /var/lib/kubelet"
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
    create_token(admin_api(r), token, ttl, emulation.load())
    print(token, flush=True)


def upload_certs(r: Root, certificate_key: str) -> None:
    """``kubeadm init phase upload-certs --upload-certs --certificate-key KEY``."""
    if not re.fullmatch(r"[0-9a-f]{64}", certificate_key):
        raise KubeadmError("the certificate key must be 32 bytes, hex-encoded (64 characters)")
    upload_certificates(r, admin_api(r), certificate_key, emulation.load())


def main(argv: list[str] | None = None) -> int:
    """The ``kubeadm`` shim's entry: ``init``, ``init phase upload-certs``, ``join``,
    ``reset -f`` and ``token create``, each with ``--rootfs``. Returns 0, or 1 after printing
    ``error execution phase <command>: <message>`` on stderr for a :class:`KubeadmError`,
    ``OSError``, ``KeyError`` or :class:`core.etcd.EtcdError`; records the phases either way
    (:class:`Phases`). argparse exits 2 on bad arguments."""
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
    sp = sub.add_parser("reset")
    sp.add_argument("-f", "--force", action="store_true")
    sp.add_argument("--rootfs", default=None)
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
            reset(r)
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
                join(r, docs)
    except (KubeadmError, OSError, KeyError, EtcdError) as err:
        print(f"error execution phase {args.cmd}: {err}", file=sys.stderr, flush=True)
        PHASES.save(command, ok=False)
        return 1
    PHASES.save(command, ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
