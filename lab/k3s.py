"""EMULATED k3s for the lab: ``k3s server`` and ``k3s agent`` as the k3s driver runs them, with
embedded etcd as a REAL etcd member, the emulated kube-apiserver (:mod:`lab.apiserver`, with
k3s's supervisor routes) and the emulated kubelet (:mod:`lab.kubelet`) as its children.

Facts from k3s-io/k3s (paths in that repository) and docs.k3s.io; messages are k3s's:

* **Tokens** (``pkg/clientaccess/token.go``): a joiner downloads ``GET <server>/cacerts``
  (a server that does not answer: ``failed to get CA certs: ...``), compares its sha256 with
  the token's ``K10<hash>`` ("token CA hash does not match the Cluster CA certificate hash:
  X != Y") and then authenticates as the token's user (``server`` or ``node``, k3s's passwd
  users, ``pkg/daemons/control/deps/deps.go``); a wrong secret gets ``401 Unauthorized``.
* **Embedded etcd** (``pkg/etcd/etcd.go``, ``cluster()`` and its ``listen*URLs``; k3s
  v1.29-v1.32): a real etcd with k3s's flags (:func:`etcd_command`): gRPC alone on
  ``https://127.0.0.1:2379,https://<node-ip>:2379``, the HTTP JSON gateway only on
  ``https://127.0.0.1:2382``, metrics on ``http://127.0.0.1:2381``, heartbeat 500 ms, election
  timeout 5000 ms; loopback only and ``--force-new-cluster`` during ``--cluster-reset``.
* **Joining servers** fetch the cluster's certificates from ``/v1-k3s/server-bootstrap``
  (k3s: bootstrap data encrypted with the token), then join etcd as ``ETCD.join`` does, every
  second for ever while etcd answers "too many learner members" or "unhealthy cluster" or the
  member list cannot be had ("Waiting for other members to finish joining etcd cluster:
  ..."): the member list comes from ``/db/info``; any member k3s takes for this node (name up
  to its last ``-``, any address) that is not this member is fatal, "etcd cluster join
  failed: duplicate node name found, please use a unique name for this node"; a member with
  this node's peer address and this member's name (or no name: added, never started) is
  reused; anything else means ``member add --learner`` (the real ``etcdctl``, gRPC, through
  the voting members' client URLs), so a stale member on this address under another node's
  name makes etcd refuse ("etcd cluster join failed: etcdserver: Peer URLs already exists",
  fatal). Members are named ``<node>-<first 8 hex digits of a UUID>`` (``setName``), kept in
  ``server/db/etcd/name``. The learner is promoted only by the etcd leader's
  ``manageLearners`` (every server runs it: a 15 s tick; a learner whose raft applied index
  has not moved for 5 min is removed); until then ``testClusterDB``
  (``pkg/cluster/managed.go``) logs "Failed to test data store connection: this server has
  not yet been promoted from learner to voting member" every 5 s, and the API server waits.
* **Node password** (``pkg/nodepassword``, the agent's ``getNodeNamedHostFile``/
  ``ensureNodePassword``): every node keeps a random ``/etc/rancher/node/password`` and sends
  it when it asks for its kubelet certificate; the servers keep the first one in the
  ``<node>.node-password.k3s`` Secret and answer 403 to another, and the node logs "Waiting to
  retrieve agent configuration; server is not ready: Node password rejected, duplicate hostname
  or contents of '/etc/rancher/node/password' may not match server node-passwd entry, try
  enabling a unique node name with the --with-node-id flag" and retries every 5 s, for ever.
* ``--cluster-reset`` (``ETCD.Reset``): a new member name, ``db/reset-flag`` touched, etcd on
  the local data with ``--force-new-cluster`` (loopback only); its 5 s ticker tests the member
  and once it runs alone k3s stops etcd, waits 5 s, says "Managed etcd cluster membership has
  been reset, restart without --cluster-reset flag now" and exits 0. A server whose etcd data
  exists (its WAL directory) starts etcd on it without joining anything.
* **Bootstrap data in etcd** (``pkg/cluster/storage.go``, ``encrypt.go``): a new cluster keeps
  its CA pairs and passwd under ``/bootstrap/<first 12 hex digits of sha256(token secret)>``,
  AES-GCM with a PBKDF2-HMAC-SHA1 key (4096 rounds, 32 bytes) from the token secret and an
  8-character salt, stored as ``<salt>:<base64(nonce + sealed)>``.
* ``--cluster-reset --cluster-reset-restore-path=P`` (``ETCD.Reset``/``ETCD.Restore``,
  ``pkg/cluster/managed.go``): "etcd: snapshot path does not exist: P" / "... must be a file,
  not a directory: P"; the old ``db/etcd`` is moved to ``db/etcd-old-<unix ts>`` ("Pre-restore
  etcd database moved to ..."); the snapshot is restored as a one-member cluster under a new
  member name (the real ``etcdutl snapshot restore`` here; ``etcdctl`` with etcd 3.4), then the
  reset above on it; once the member passes its test the bootstrap data is read back with the
  configured token: another token's key gives "bootstrap data already found and encrypted
  with different token" (fatal); the certificates come back from it, passwd takes the
  configured tokens (k3s's ``EnsureUser``); k3s says "Managed etcd cluster membership has been
  reset, restart without --cluster-reset flag now. Backup and delete ${datadir}/server/db on
  each peer etcd server and rejoin the nodes" and exits 0. A plain ``--cluster-reset`` while
  ``reset-flag`` exists is refused ("Managed etcd cluster membership was previously reset,
  please remove the cluster-reset flag and start k3s normally. If you need to perform another
  cluster reset, you must first manually delete the <file> file"); the next normal start
  removes the flag and deletes its own node's node-password Secret (the one restored from the
  snapshot holds an older password).
* ``k3s etcd-snapshot save [--node-name N] [--name on-demand] [--dir D] [--etcd-server U]
  [--etcd-token T]`` (``pkg/cli/etcdsnapshot``, ``pkg/etcd/snapshot_handler.go``; k3s 1.29+):
  the token from ``--etcd-token`` or ``server/token`` ("open ...: no such file or directory"
  without one), the server's CA checked against it, then ``POST <U>/db/snapshot`` as the
  ``server`` user: the running server (:class:`lab.apiserver.K3sSupervisor`) takes a snapshot
  of its member (etcd's ``/v3/maintenance/snapshot``, the bytes ``etcdctl snapshot save``
  writes) to ``D/<name>-<its node>-<unix seconds>`` (0600; ``D`` defaults to
  ``server/db/snapshots``, made 0700; another ``D`` must exist) and answers the files it made;
  the command says "Snapshot <file> saved." for each, or fails "see server log for details:
  ..." (401 for a wrong token).
* **Versions**: each part runs the version of the image the node booted
  (:mod:`lab.nodeimage`). Like k3s, nothing here compares versions: the supervisor serves its
  CA, bootstrap data and kubelet certificates to a server or agent of any version
  (``pkg/server/handlers/handlers.go``; k3s-io/k3s#943: "There should probably be some
  version checking"), so an agent newer than the servers is *not* refused; real k3s fails
  then only where the supervisor's answers changed (#2996). ``ek8s upgrade`` keeps the order.
* A fatal error prints ``level=fatal msg="..."`` and exits 1 (the service stops). A server
  URL that does not answer is fatal for a joining server; the emulated agent gives up the
  same way (whether k3s's agent retries it instead was not checked).

Where it differs from k3s: one process per component (etcd, kube-apiserver, kubelet are
children, not in-process; SIGTERM stops them with k3s), one etcd CA for server and peer
certificates, a plain sha256 in the node-password Secret, the kubelet of an agent talks to
the VIP directly (k3s: through its local load balancer on 127.0.0.1:6444), bootstrap data
handed out as-is over TLS (k3s encrypts it with the token), no containerd, flannel or
addons; the emulated parts speak etcd's JSON gateway on loopback 2382 (k3s's speak gRPC on
2379); ``ETCD.Test`` neither defragments nor disarms alarms; the join, ``manageLearners`` and
the reset's ticker start with etcd (k3s: once its container runtime is ready). ``--rootfs R``
puts every node path under R (real k3s has no such flag). Durations ``init_s``/``join_s``
from ``$EK8S_EMULATION`` pad a start as for the emulated kubeadm.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from core.drivers.k3s import ca_hash, parse_token
from core.etcd import EtcdClient, EtcdError, EtcdMember, client_ssl_context
from core.fileperm import ensure_dir, write_atomic
from lab import emulation, pki
from lab.nodekit import Root, ToolError, ctx_for, etcd_argv, wait_local_api

PASSWORD_RETRY_S = 5.0  # the agent retries its config every 5 s
# k3s's embedded etcd (pkg/etcd/etcd.go, cluster() and the listen*URLs helpers): gRPC on the
# client port (loopback and the node's address), the HTTP JSON gateway only on loopback 2382
# (--listen-client-http-urls, "to free the listen URLs for dedicated use by GRPC",
# etcd-io/etcd#15402), metrics on loopback 2381, raft timings 500 ms / 5000 ms.
LOOPBACK = "127.0.0.1"
CLIENT_PORT, PEER_PORT, METRICS_PORT, CLIENT_HTTP_PORT = 2379, 2380, 2381, 2382
HEARTBEAT_MS, ELECTION_MS = 500, 5000
LOCAL_GATEWAY = f"https://{LOOPBACK}:{CLIENT_HTTP_PORT}"  # the JSON API this node's parts use
# k3s's join and learner management (pkg/etcd/etcd.go, v1.29-v1.32): the join is retried
# every second for ever on the refusals below; the etcd leader's manageLearners promotes
# learners every 15 s and removes one whose raft applied index has not moved for 5 min;
# testClusterDB (pkg/cluster/managed.go) checks the local member every 5 s until it votes.
JOIN_RETRY_S = 1.0
RETRIED_JOIN_ERRORS = ("too many learner members", "unhealthy cluster")  # rpctypes.ErrTooManyLearners, ErrUnhealthy
MANAGE_TICK_S = 15.0  # manageTickerTime
LEARNER_MAX_STALL_S = 300.0  # learnerMaxStallTime
TEST_INTERVAL_S = 5.0  # testClusterDB
RESET_TICK_S = 5.0  # ETCD.Reset: a 5 s ticker, then 5 s for etcd to shut down before the exit
LEARNER_PROGRESS_KEY = "k3s/etcd/learnerProgress"
DUPLICATE_NAME = "duplicate node name found, please use a unique name for this node"
BOOTSTRAP_FILES = ("server-ca", "client-ca", "etcd/server-ca")
RESET_DONE = "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now. " + (
    "Backup and delete ${datadir}/server/db on each peer etcd server and rejoin the nodes"
)
DIFFERENT_TOKEN = "bootstrap data already found and encrypted with different token"


def storage_key(secret: str) -> str:
    """``/bootstrap/<first 12 hex digits of sha256(secret)>`` (k3s's ``storageKey``)."""
    return "/bootstrap/" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def _aes_key(secret: str, salt: str) -> bytes:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA1(), length=32, salt=salt.encode(), iterations=4096)  # SHA1: k3s's own choice
    return kdf.derive(secret.encode())


def encrypt(secret: str, plaintext: bytes) -> bytes:
    """k3s's bootstrap encryption: ``<8-character salt>:<base64(nonce + AES-GCM sealed)>``."""
    salt = secrets.token_hex(4)
    nonce = os.urandom(12)
    sealed = AESGCM(_aes_key(secret, salt)).encrypt(nonce, plaintext, None)
    return f"{salt}:{base64.b64encode(nonce + sealed).decode()}".encode()


def decrypt(secret: str, data: bytes) -> bytes:
    """The inverse of :func:`encrypt`. Raises :class:`K3sFatal` ("cipher: message
    authentication failed", Go's message) when the secret is not the one it was sealed with."""
    salt, _, body = data.decode().partition(":")
    raw = base64.b64decode(body)
    try:
        return AESGCM(_aes_key(secret, salt)).decrypt(raw[:12], raw[12:], None)
    except InvalidTag as err:
        raise K3sFatal("cipher: message authentication failed") from err


def etcd_command(
    etcd: str, name: str, address: str, data: Path, pki_etcd: Path, initial_cluster: str, state: str, reset: bool
) -> list[str]:
    """etcd's command line as k3s's ``cluster()`` (``pkg/etcd/etcd.go``) configures its
    embedded etcd: client URLs ``https://127.0.0.1:2379,https://<address>:2379`` (advertised:
    the node's), peer URLs ``https://127.0.0.1:2380,https://<address>:2380``, metrics
    ``http://127.0.0.1:2381``, the HTTP JSON gateway only on ``https://127.0.0.1:2382``
    (``--listen-client-http-urls``), heartbeat 500 ms, election timeout 5000 ms, 10000
    snapshot count, the initial corruption check; with ``reset`` (``--cluster-reset``)
    loopback only ("to avoid having peers connect mid-process": client, advertised client and
    peer URLs on 127.0.0.1) and ``--force-new-cluster``.

    An etcd without ``--listen-client-http-urls`` (Debian 12's 3.4.23, which the lab ran
    before; kept for the comparison in docs/benchmarks.md) gets what that lab gave it: 2382
    as one more client URL (gRPC and JSON on every client URL) and etcd's default timings."""
    loop = f"https://{LOOPBACK}"
    client, peer = f"https://{address}:{CLIENT_PORT}", f"https://{address}:{PEER_PORT}"
    listen_client = [f"{loop}:{CLIENT_PORT}"] + ([] if reset else [client])
    listen_peer = [f"{loop}:{PEER_PORT}"] + ([] if reset else [peer])
    advertise = f"{loop}:{CLIENT_PORT}" if reset else client
    metrics = [f"http://{LOOPBACK}:{METRICS_PORT}"]
    extra = ("--experimental-initial-corrupt-check=true", *(("--force-new-cluster",) if reset else ()))
    if emulation.splits_client_http(emulation.etcd_version(etcd)):
        return etcd_argv(
            etcd, name, data, pki_etcd, [advertise], peer, initial_cluster, state,
            listen_client_urls=listen_client, listen_peer_urls=listen_peer, listen_metrics_urls=metrics,
            listen_client_http_urls=[f"{loop}:{CLIENT_HTTP_PORT}"], heartbeat_ms=HEARTBEAT_MS,
            election_ms=ELECTION_MS, extra=extra,
        )  # fmt: skip
    return etcd_argv(
        etcd, name, data, pki_etcd, [advertise], peer, initial_cluster, state,
        listen_client_urls=[*listen_client, f"{loop}:{CLIENT_HTTP_PORT}"], listen_peer_urls=listen_peer,
        listen_metrics_urls=metrics, extra=extra,
    )  # fmt: skip


def member_node(member_name: str) -> str:
    """The node k3s takes an etcd member for, by k3s's own rule in ``ETCD.join``: the name up
    to its last ``-`` (when that is past the second character), else the whole name. Hence
    "duplicate node name" for a member of this node's name with any suffix."""
    cut = member_name.rfind("-")
    return member_name[:cut] if cut > 1 else member_name


class K3sFatal(ToolError):
    """A refusal k3s reports with ``level=fatal`` before it exits 1."""


def logline(level: str, msg: str) -> None:
    """One line as k3s logs it (logrus text format), flushed."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f'time="{stamp}" level={level} msg="{msg}"', flush=True)


class Node:
    """One emulated k3s process: its config, paths and children."""

    def __init__(self, root: Root, config: dict[str, Any], emu: emulation.Emulation) -> None:
        self.r, self.cfg, self.emu = root, config, emu
        self.name: str = config["node-name"]
        self.address: str = config["node-ip"]
        self.port = int(config.get("https-listen-port", 6443))
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        # From the process's start, interpreter start-up included, as the emulated kubeadm pads.
        self.started = emulation.process_started()

    # -- paths --------------------------------------------------------------------------
    def p(self, rel: str) -> Path:
        """``/var/lib/rancher/k3s/<rel>`` under the root."""
        return self.r(f"/var/lib/rancher/k3s/{rel}")

    @property
    def tls(self) -> Path:
        return self.p("server/tls")

    # -- children -----------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str]) -> None:
        """Start a component in this process group (a SIGTERM to k3s's group stops it too),
        its output in ``<root>/var/log/ek8s/k3s-<name>.log``."""
        logs = ensure_dir(self.r("/var/log/ek8s"))
        with open(logs / f"k3s-{name}.log", "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.children.append((name, proc))
        logline("info", f"Running {name} (emulated k3s child pid {proc.pid})")

    def stop_children(self) -> None:
        for _, child in reversed(self.children):
            if child.poll() is None:
                child.terminate()
        for _, child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    # -- node password ----------------------------------------------------------------------
    def node_password(self) -> str:
        """``/etc/rancher/node/password``, made (random, 0600) when missing."""
        path = self.r("/etc/rancher/node/password")
        if not path.exists():
            ensure_dir(path.parent)
            write_atomic(path, secrets.token_hex(16) + "\n")
        return path.read_text().strip()

    # -- talking to a server ------------------------------------------------------------------
    def cacerts(self, server: str, want_hash: str) -> bytes:
        """``GET <server>/cacerts`` without verification, then the token's hash check."""
        try:
            with urllib.request.urlopen(server.rstrip("/") + "/cacerts", context=ctx_for(None), timeout=10) as resp:
                bundle: bytes = resp.read()
        except (OSError, urllib.error.URLError) as err:
            raise K3sFatal(f'failed to get CA certs: Get "{server}/cacerts": {err}') from err
        got = ca_hash(bundle)
        if want_hash and got != want_hash:
            raise K3sFatal(f"token CA hash does not match the Cluster CA certificate hash: {want_hash} != {got}")
        return bundle

    def get(self, server: str, path: str, ca: bytes, user: str, secret: str, headers: dict[str, str]) -> bytes:
        """An authenticated GET; raises :class:`urllib.error.HTTPError` on an error status
        and :class:`K3sFatal` when there is no answer."""
        auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
        req = urllib.request.Request(server.rstrip("/") + path, headers={"Authorization": f"Basic {auth}", **headers})
        try:
            with urllib.request.urlopen(req, context=ctx_for(ca), timeout=10) as resp:
                body: bytes = resp.read()
                return body
        except urllib.error.HTTPError:
            raise
        except (OSError, urllib.error.URLError) as err:
            raise K3sFatal(f"{server}{path}: {err}") from err

    def kubelet_cert(self, server: str, ca: bytes, user: str, secret: str) -> pki.Pair:
        """``/v1-k3s/client-kubelet.crt`` with the node password; a 403 is k3s's node-password
        refusal, logged and retried every :data:`PASSWORD_RETRY_S` seconds for ever."""
        headers = {"k3s-Node-Name": self.name, "k3s-Node-Password": self.node_password(), "k3s-Node-IP": self.address}
        while True:
            try:
                body = self.get(server, "/v1-k3s/client-kubelet.crt", ca, user, secret, headers)
            except urllib.error.HTTPError as err:
                if err.code != 403:
                    raise K3sFatal(f"{server}/v1-k3s/client-kubelet.crt: {err.code} {err.reason}") from err
                logline(
                    "info",
                    "Waiting to retrieve agent configuration; server is not ready: Node password rejected, "
                    "duplicate hostname or contents of '/etc/rancher/node/password' may not match server "
                    "node-passwd entry, try enabling a unique node name with the --with-node-id flag",
                )
                time.sleep(PASSWORD_RETRY_S)
                continue
            end = body.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")
            return body[:end], body[end:]

    def start_kubelet(self, server: str, ca: bytes, cert: pki.Pair, control: bool) -> None:
        """Write ``agent/kubelet.kubeconfig`` (``server`` as its API) and run :mod:`lab.kubelet`."""
        kubeconfig = self.p("agent/kubelet.kubeconfig")
        ensure_dir(kubeconfig.parent)
        write_atomic(kubeconfig, pki.kubeconfig(server, ca, cert, f"system:node:{self.name}", "default"))
        argv = [self.emu.python, "-m", "lab.kubelet", "--kubeconfig", str(kubeconfig), "--node-name", self.name]
        argv += ["--node-ip", self.address, "--interval", str(self.emu.kubelet_interval_s)]
        argv += ["--pki-dir", str(self.p("agent/pki")), "--node-root", str(self.r.root)]
        argv += ["--version", self.emu.kubernetes_version]
        # k3s hands node-label and node-taint to its kubelet (registration only).
        labels, taints = self.cfg.get("node-label") or [], self.cfg.get("node-taint") or []
        argv += ["--node-labels", ",".join(labels)] if labels else []
        argv += ["--register-with-taints", ",".join(taints)] if taints else []
        self.spawn("kubelet", [*argv, "--control-plane"] if control else argv)

    # -- server pieces ----------------------------------------------------------------------
    def node_certs(self) -> None:
        """Serving, etcd server/peer and client pairs of this server from the cluster CAs."""
        server_ca = pki.read_pair(self.tls, "server-ca")
        client_ca = pki.read_pair(self.tls, "client-ca")
        etcd_ca = pki.read_pair(self.tls / "etcd", "server-ca")
        sans = [str(s) for s in self.cfg.get("tls-san", [])]
        ips = (*(s for s in sans if s.replace(".", "").isdigit()), self.address, "127.0.0.1")
        names = (self.name, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
        dns = (*names, *(s for s in sans if not s.replace(".", "").isdigit()))
        pki.write_pair(
            self.tls, "serving-kube-apiserver", pki.issue(server_ca, "kube-apiserver", dns=dns, ips=ips, server=True)
        )
        pki.write_pair(
            self.tls, "client-admin", pki.issue(client_ca, "system:admin", orgs=("system:masters",), client=True)
        )
        etcd = self.tls / "etcd"
        both = {"dns": (self.name, "localhost"), "ips": (self.address, "127.0.0.1"), "server": True, "client": True}
        pki.write_pair(etcd, "server", pki.issue(etcd_ca, self.name, **both))  # type: ignore[arg-type]
        pki.write_pair(etcd, "peer", pki.issue(etcd_ca, self.name, **both))  # type: ignore[arg-type]
        pki.write_pair(etcd, "client", pki.issue(etcd_ca, "etcd-client", client=True))
        write_atomic(etcd / "ca.crt", etcd_ca[0])  # the name etcd_argv passes to etcd

    def etcd_name(self, fresh: bool) -> str:
        """``server/db/etcd/name``: ``<node>-<8 hex digits>``, new when ``fresh`` or missing."""
        path = self.p("server/db/etcd/name")
        if fresh or not path.exists():
            ensure_dir(path.parent)
            write_atomic(path, f"{self.name}-{uuid.uuid4().hex[:8]}")
        return path.read_text().strip()

    @property
    def peer_url(self) -> str:
        """``https://<node-ip>:2380`` (``peerURL``)."""
        return f"https://{self.address}:{PEER_PORT}"

    def start_etcd(self, name: str, initial_cluster: str, state: str, reset: bool = False) -> None:
        """The real etcd as k3s's ``cluster()`` runs it (:func:`etcd_command`); ``reset``:
        ``--cluster-reset``, loopback only and ``--force-new-cluster``."""
        data = self.p("server/db/etcd")
        ensure_dir(data)
        os.chmod(data, 0o700)
        argv = etcd_command(self.emu.etcd, name, self.address, data, self.tls / "etcd", initial_cluster, state, reset)
        self.spawn("etcd", argv)

    def local_etcd(self, ctx: ssl.SSLContext | None = None) -> EtcdClient:
        """A JSON client of the local member through etcd's gateway on loopback 2382, with
        ``ctx`` or one from the files on disk now. (k3s's own parts speak gRPC on 2379; the
        emulation speaks the JSON gateway k3s keeps on 2382.)"""
        etcd = self.tls / "etcd"
        if ctx is None:
            ctx = client_ssl_context(etcd / "server-ca.crt", etcd / "client.crt", etcd / "client.key")
        return EtcdClient([LOCAL_GATEWAY], ctx, timeout_s=3.0)

    def etcdctl(self, endpoints: list[str], *args: str, timeout_s: float = 30.0) -> Any:
        """The real ``etcdctl`` (gRPC, v3) with this server's etcd client pair against
        ``endpoints`` (other members' client URLs, which serve gRPC only), ``-w json``;
        returns its answer, parsed (None when it printed nothing). Raises :class:`EtcdError`
        with etcdctl's message ("etcdserver: unhealthy cluster", "context deadline
        exceeded"...) when it fails."""
        etcd = self.tls / "etcd"
        argv = [self.emu.etcdctl, f"--endpoints={','.join(endpoints)}", f"--cacert={etcd / 'server-ca.crt'}"]
        argv += [f"--cert={etcd / 'client.crt'}", f"--key={etcd / 'client.key'}", "--dial-timeout=2s"]
        argv += ["--command-timeout=20s", "-w", "json", *args]
        try:
            res = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout_s, env={**os.environ, "ETCDCTL_API": "3"}
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise EtcdError(f"etcdctl {' '.join(args)}: {err}") from err
        if res.returncode != 0:
            lines = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
            raise EtcdError(lines[-1].removeprefix("Error:").strip() if lines else res.stderr.strip()[-300:])
        return json.loads(res.stdout) if res.stdout.strip() else None

    def wait_etcd(self, timeout_s: float = 60.0) -> None:
        """Until the local member answers its status (a learner does; it refuses reads)."""

        async def _wait() -> None:
            deadline = time.monotonic() + timeout_s
            async with self.local_etcd() as c:
                while True:
                    try:
                        await c.status()
                        return
                    except EtcdError as err:
                        if time.monotonic() > deadline:
                            raise K3sFatal(f"starting kubernetes: etcd did not become ready: {err}") from err
                        await asyncio.sleep(0.1)

        asyncio.run(_wait())

    def start_apiserver(self) -> None:
        """:mod:`lab.apiserver` on ``0.0.0.0:<https-listen-port>`` with the supervisor routes."""
        conf = {
            "bind_address": "0.0.0.0",
            "advertise_address": self.address,
            "port": self.port,
            # k3s's version is its Kubernetes version with a +k3s suffix; the lab's, or the
            # version of the image this node booted (lab/nodeimage.py).
            "version": f"{self.emu.kubernetes_version}+k3s1",
            "tls_cert": str(self.tls / "serving-kube-apiserver.crt"),
            "tls_key": str(self.tls / "serving-kube-apiserver.key"),
            "client_ca": str(self.tls / "client-ca.crt"),
            "pki_dir": str(self.tls),
            "signing_ca": "client-ca",
            # k3s's API server speaks gRPC to 127.0.0.1:2379; the emulated one speaks etcd's
            # JSON gateway, which k3s keeps on loopback 2382.
            "etcd_servers": [LOCAL_GATEWAY],
            "etcd_ca": str(self.tls / "etcd/server-ca.crt"),
            "etcd_cert": str(self.tls / "etcd/client.crt"),
            "etcd_key": str(self.tls / "etcd/client.key"),
            "node_monitor_grace_s": self.emu.node_monitor_grace_s,
            "k3s": {
                "server_ca": str(self.tls / "server-ca.crt"),
                "passwd": str(self.p("server/cred/passwd")),
                "bootstrap": str(self.p("server/cred/bootstrap.json")),
                "snapshot": {
                    "node_name": self.name,
                    "root": str(self.r.root),
                    "default_dir": "/var/lib/rancher/k3s/server/db/snapshots",
                },
            },
        }
        path = self.p("server/emulated/kube-apiserver.json")
        ensure_dir(path.parent)
        write_atomic(path, json.dumps(conf, indent=1))
        self.spawn("kube-apiserver", [self.emu.python, "-m", "lab.apiserver", "--config", str(path)])

    def finish_server(self, pad_s: float) -> None:
        """Wait for the local API, get this node's kubelet certificate through the local
        supervisor (the node-password check), pad the start to ``pad_s`` seconds in all (from
        the process's start, as the emulated kubeadm), write k3s.yaml, start the kubelet."""
        ca = (self.tls / "server-ca.crt").read_bytes()
        try:
            wait_local_api("127.0.0.1", self.port, ca)
        except Exception as err:
            raise K3sFatal(f"starting kubernetes: {err}") from err
        self.after_reset()
        local = f"https://127.0.0.1:{self.port}"
        users = self.users()
        cert = self.kubelet_cert(local, ca, "node", users["node"])
        self.pad(pad_s, "server")  # the start's total, up to the files the driver waits for
        admin = self.r("/etc/rancher/k3s/k3s.yaml")
        ensure_dir(admin.parent)
        write_atomic(admin, pki.kubeconfig(local, ca, pki.read_pair(self.tls, "client-admin"), "default", "default"))
        self.start_kubelet(local, ca, cert, control=True)

    def users(self) -> dict[str, str]:
        out = {}
        for line in self.p("server/cred/passwd").read_text().splitlines():
            parts = line.split(",")
            out[parts[1]] = parts[0]
        return out

    def write_cred(self, server_secret: str, agent_secret: str) -> None:
        """k3s's passwd file and the token files (``server/token``, ``node-token``, ``agent-token``)."""
        cred = ensure_dir(self.p("server/cred"))
        write_atomic(cred / "passwd", f"{server_secret},server,server,k3s:server\n{agent_secret},node,node,k3s:agent\n")
        ca = (self.tls / "server-ca.crt").read_bytes()
        token = f"K10{ca_hash(ca)}::server:{server_secret}"
        for name in ("token", "node-token"):
            write_atomic(self.p(f"server/{name}"), token + "\n")
        write_atomic(self.p("server/agent-token"), f"K10{ca_hash(ca)}::node:{agent_secret}\n")
        bundle: dict[str, dict[str, str]] = {"passwd": {"text": (cred / "passwd").read_text()}}
        for f in BOOTSTRAP_FILES:
            crt, key = pki.read_pair(self.tls, f)
            bundle[f] = {"crt": base64.b64encode(crt).decode(), "key": base64.b64encode(key).decode()}
        write_atomic(cred / "bootstrap.json", json.dumps(bundle))

    @property
    def reset_flag(self) -> Path:
        """``server/db/reset-flag``: a cluster reset was done (``etcd.ResetFile``)."""
        return self.p("server/db/reset-flag")

    def save_bootstrap(self, secret: str, ctx: ssl.SSLContext | None = None) -> None:
        """Put the bootstrap data (``server/cred/bootstrap.json``) into etcd, encrypted with
        ``secret``, under :func:`storage_key` (k3s's ``Cluster.save``); ``ctx`` as in
        :meth:`local_etcd`."""
        data = encrypt(secret, self.p("server/cred/bootstrap.json").read_bytes())

        async def _put() -> None:
            async with self.local_etcd(ctx) as c:
                await c.put(storage_key(secret), data)

        asyncio.run(_put())

    def read_bootstrap(self, secret: str, ctx: ssl.SSLContext | None = None) -> dict[str, Any] | None:
        """The bootstrap data in etcd sealed with ``secret``; None when etcd holds none.
        Raises :class:`K3sFatal` with k3s's message when it holds another token's."""

        async def _read() -> list[tuple[str, bytes]]:
            async with self.local_etcd(ctx) as c:
                return await c.get_prefix("/bootstrap/")

        found = dict(asyncio.run(_read()))
        if storage_key(secret) in found:
            loaded: dict[str, Any] = json.loads(decrypt(secret, found[storage_key(secret)]))
            return loaded
        if found:
            raise K3sFatal(DIFFERENT_TOKEN)
        return None

    def write_bootstrap_files(self, bundle: dict[str, Any]) -> None:
        """The certificate pairs and passwd of a bootstrap bundle, to disk."""
        for name in BOOTSTRAP_FILES:
            where = self.tls / name
            pair = (base64.b64decode(bundle[name]["crt"]), base64.b64decode(bundle[name]["key"]))
            pki.write_pair(ensure_dir(where.parent), where.name, pair)
        cred = ensure_dir(self.p("server/cred"))
        write_atomic(cred / "passwd", bundle["passwd"]["text"])

    def after_reset(self) -> None:
        """The first normal start after a cluster reset: remove ``reset-flag`` and delete this
        node's node-password Secret (``Cluster.start``, ``deleteNodePasswdSecret``: the one
        in the restored data may hold an older password)."""
        if not self.reset_flag.exists():
            return
        key = f"/registry/secrets/kube-system/{self.name}.node-password.k3s"

        async def _delete() -> None:
            async with self.local_etcd() as c:
                await c.delete(key)

        asyncio.run(_delete())
        self.reset_flag.unlink(missing_ok=True)
        logline("info", f"Deleted the node password secret of {self.name} after the cluster reset")

    def pad(self, total_s: float, what: str) -> None:
        remaining = total_s - (time.time() - self.started)
        if remaining > 0:
            logline("info", f"[emulation] k3s {what} is set to take {total_s:g}s; waiting {remaining:.2f}s more")
            time.sleep(remaining)


def _secret(value: str) -> str:
    """A bare secret or the secret of a secure token."""
    try:
        return parse_token(value).secret
    except ValueError:
        return value


def new_cas(node: Node) -> None:
    """The cluster CAs a new server makes (server, client, etcd server CA)."""
    tls = ensure_dir(node.tls)
    for name, cn in (("server-ca", "k3s-server-ca"), ("client-ca", "k3s-client-ca")):
        pki.write_pair(tls, name, pki.new_ca(f"{cn}@{int(time.time())}"))
    pki.write_pair(tls / "etcd", "server-ca", pki.new_ca(f"etcd-server-ca@{int(time.time())}"))


class NotReady(Exception):
    """The local etcd member does not pass k3s's ``ETCD.Test`` yet (a learner, not listed, or
    no answer); k3s logs it and tests again."""


class RetryJoin(Exception):
    """A join refusal k3s retries every second for ever; ``str()`` is the line it logs."""


def test_member(node: Node, name: str) -> list[EtcdMember]:
    """k3s's ``ETCD.Test`` of the local member (``pkg/etcd/etcd.go``): it must answer, be a
    voting member and be listed with this ``name`` and this node's peer URL; returns the
    member list. Raises :class:`NotReady` with k3s's reason. (k3s also defragments and
    disarms alarms here; the emulation does not.)"""

    async def _test() -> list[EtcdMember]:
        async with node.local_etcd() as c:
            status = await c.status()
            if status.get("isLearner"):
                raise NotReady("this server has not yet been promoted from learner to voting member")
            return await c.member_list()

    try:
        members = asyncio.run(_test())
    except EtcdError as err:
        raise NotReady(str(err)) from err
    if any(m.name == name and node.peer_url in m.peer_urls for m in members):
        return members
    found = [f"{m.name}={m.peer_urls[0]}" for m in members if m.peer_urls]
    raise NotReady(f"this server is a not a member of the etcd cluster. Found {found}, expect: {name}={node.peer_url}")


def test_cluster_db(node: Node, name: str) -> None:
    """``testClusterDB`` (``pkg/cluster/managed.go``): :func:`test_member` now and then every
    :data:`TEST_INTERVAL_S` seconds until it passes, logging "Failed to test data store
    connection: <why>" each time it does not (a joined learner waits here for the etcd
    leader's ``manageLearners`` to promote it). k3s starts its API server only after it."""
    while True:
        try:
            test_member(node, name)
            logline("info", "etcd data store connection OK")
            return
        except NotReady as err:
            logline("info", f"Failed to test data store connection: {err}")
        time.sleep(TEST_INTERVAL_S)


def finish_reset(node: Node, name: str, rebootstrap: Callable[[], None] | None = None) -> None:
    """The rest of ``ETCD.Reset``: every :data:`RESET_TICK_S` seconds :func:`test_member`;
    once it passes, ``rebootstrap`` (the restore's reconciliation of the bootstrap data), and
    when this member is alone under ``name`` k3s cancels etcd, gives it 5 s to shut down and
    says :data:`RESET_DONE` (then exits 0)."""
    while True:
        time.sleep(RESET_TICK_S)
        try:
            members = test_member(node, name)
        except NotReady as err:
            logline("warning", f"cluster reset: {err}")
            continue
        if rebootstrap is not None:
            rebootstrap()
        if len(members) == 1 and members[0].name == name:
            break
    node.stop_children()
    node.children.clear()
    time.sleep(RESET_TICK_S)
    logline("info", RESET_DONE)


def restore(node: Node, restore_path: str) -> None:
    """``--cluster-reset --cluster-reset-restore-path``: see the module. Raises :class:`K3sFatal`."""
    cfg = node.cfg
    snapshot = node.r(restore_path)
    if not snapshot.exists():
        raise K3sFatal(f"etcd: snapshot path does not exist: {restore_path}")
    if snapshot.is_dir():
        raise K3sFatal(f"etcd: snapshot path must be a file, not a directory: {restore_path}")
    secret, agent_secret = _secret(cfg["token"]), _secret(cfg.get("agent-token") or cfg["token"])
    restored_as = node.etcd_name(fresh=False)  # ETCD.Restore runs under the current name
    db = node.p("server/db/etcd")
    if db.exists():
        old = db.with_name(f"etcd-old-{int(time.time())}")
        db.rename(old)
        logline("info", f"Pre-restore etcd database moved to {old}")
    peer = node.peer_url
    tool = node.emu.etcdutl if Path(node.emu.etcdutl).exists() else node.emu.etcdctl  # etcd 3.4: etcdctl
    argv = [tool, "snapshot", "restore", str(snapshot), f"--name={restored_as}"]
    argv += [f"--initial-cluster={restored_as}={peer}", f"--initial-advertise-peer-urls={peer}", f"--data-dir={db}"]
    res = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=300)
    if res.returncode != 0:
        raise K3sFatal(f"etcd: restoring {restore_path}: {(res.stdout + res.stderr).strip()[-400:]}")
    logline("info", f"Restored etcd snapshot {restore_path} as member {restored_as}")
    # ETCD.Reset then takes a new member name (setName(true)), touches reset-flag and starts
    # etcd on the restored data as a new one-member cluster, on loopback only.
    name = node.etcd_name(fresh=True)
    write_atomic(node.reset_flag, "")
    # Certificates of a fresh server until the bootstrap data says otherwise (k3s makes its own too).
    if not (node.tls / "server-ca.crt").exists():
        new_cas(node)
    node.write_cred(secret, agent_secret)
    node.node_certs()
    node.start_etcd(name, f"{name}={peer}", "new", reset=True)
    node.wait_etcd()
    etcd = node.tls / "etcd"  # the running member's certificates, before the restored CAs replace them
    ctx = client_ssl_context(etcd / "server-ca.crt", etcd / "client.crt", etcd / "client.key")

    def rebootstrap() -> None:
        bundle = node.read_bootstrap(secret, ctx)
        if bundle is not None:
            logline("info", "Reconciling bootstrap data between datastore and disk")
            node.write_bootstrap_files(bundle)
        node.write_cred(secret, agent_secret)  # the configured tokens win (passwd EnsureUser)
        node.save_bootstrap(secret, ctx)

    finish_reset(node, name, rebootstrap)
    node.node_certs()  # this server's certificates from the restored CAs


def server(node: Node, cluster_reset: bool, restore_path: str | None = None) -> None:
    """``k3s server``: a new cluster (``cluster-init``), a start on existing etcd data, a
    join (``server:``), or ``--cluster-reset`` (with ``restore_path``: from that snapshot).
    Then ``testClusterDB`` (:func:`test_cluster_db`), the API server, the kubelet, and the
    etcd leader's learner management (:func:`manage_learners`). Raises :class:`K3sFatal`."""
    cfg = node.cfg
    if not cfg.get("token"):
        raise K3sFatal("starting kubernetes: preparing server: token is required")
    has_data = node.p("server/db/etcd/member/wal").is_dir()  # ETCD.IsInitialized
    if cluster_reset and restore_path:
        restore(node, restore_path)
        return
    if cluster_reset:
        if node.reset_flag.exists():
            raise K3sFatal(
                "starting kubernetes: preparing server: start managed database: Managed etcd cluster membership was "
                "previously reset, please remove the cluster-reset flag and start k3s normally. If you need to "
                "perform another cluster reset, you must first manually delete the "
                "/var/lib/rancher/k3s/server/db/reset-flag file"
            )
        if not has_data:
            raise K3sFatal("etcd: cluster-reset requires existing etcd data")
        name = node.etcd_name(fresh=True)  # ETCD.Reset: setName(true)
        write_atomic(node.reset_flag, "")
        logline("info", "Starting etcd for new cluster, cluster-reset=true")
        node.start_etcd(name, f"{name}={node.peer_url}", "new", reset=True)
        node.wait_etcd()
        finish_reset(node, name)
        return
    if has_data:
        logline("info", "Starting etcd for existing cluster member")
        name = node.etcd_name(fresh=False)
        node.node_certs()
        node.start_etcd(name, f"{name}={node.peer_url}", "existing")
    elif cfg.get("server"):
        name = join_server(node)
    else:
        if not cfg.get("cluster-init"):
            raise K3sFatal("emulated k3s: only embedded etcd (cluster-init) is emulated")
        new_cas(node)
        node.write_cred(_secret(cfg["token"]), _secret(cfg.get("agent-token") or cfg["token"]))
        node.node_certs()
        name = node.etcd_name(fresh=True)
        logline("info", "Starting etcd for new cluster, cluster-reset=false")
        node.start_etcd(name, f"{name}={node.peer_url}", "new")
        node.wait_etcd()
        node.save_bootstrap(_secret(cfg["token"]))
    node.wait_etcd()
    test_cluster_db(node, name)
    node.start_apiserver()
    node.finish_server(node.emu.join_s if cfg.get("server") else node.emu.init_s)
    threading.Thread(target=manage_learners, args=(node,), name="manageLearners", daemon=True).start()
    logline("info", "k3s is up and running (EMULATED)")


def join_server(node: Node) -> str:
    """Bootstrap data from the server named by ``server:``, then k3s's ``ETCD.join``
    (:func:`join_once`) every :data:`JOIN_RETRY_S` seconds for ever while it is refused with
    one of :data:`RETRIED_JOIN_ERRORS` or the member list cannot be had (each refusal
    logged), then etcd started to join; returns the member's name. Raises :class:`K3sFatal`
    for any other refusal, as k3s's ``logrus.Fatalf("etcd cluster join failed: %v")``."""
    cfg = node.cfg
    try:
        token = parse_token(cfg["token"])
    except ValueError as err:
        raise K3sFatal(f"starting kubernetes: preparing server: {err}") from err
    url = cfg["server"]
    ca = node.cacerts(url, token.ca_hash)
    try:
        bundle = json.loads(node.get(url, "/v1-k3s/server-bootstrap", ca, "server", token.secret, {}))
    except urllib.error.HTTPError as err:
        raise K3sFatal(
            f"starting kubernetes: preparing server: failed to get bootstrap data: {url}/v1-k3s/server-bootstrap: "
            f"{err.code} {err.reason}"
        ) from err
    node.write_bootstrap_files(bundle)
    users = node.users()
    node.write_cred(users["server"], users["node"])
    node.node_certs()
    name = node.etcd_name(fresh=False)  # setName(false): a new name unless the name file exists
    while True:
        try:
            cluster = join_once(node, url, ca, token.secret, name)
            break
        except RetryJoin as err:
            logline("info", str(err))
            time.sleep(JOIN_RETRY_S)
    logline("info", f"Starting etcd to join cluster with members {cluster}")
    node.start_etcd(name, ",".join(cluster), "existing")
    return name


def join_once(node: Node, url: str, ca: bytes, secret: str, name: str) -> list[str]:
    """One try of k3s's ``ETCD.join`` (``pkg/etcd/etcd.go``), from the member list the
    server at ``url`` answers on ``/db/info``: a member named ``name`` at this node's address
    (or an unnamed one there: a member added but never started) is this node's, and no member
    is added; any *other* member that k3s takes for this node (:func:`member_node`, any
    suffix, any address) is fatal: "duplicate node name found, please use a unique name for
    this node" (the name file removed first); else ``member add --learner`` of this node's
    peer URL through the voting members' client URLs (gRPC: the real ``etcdctl``). Returns
    the ``--initial-cluster`` entries. Raises :class:`RetryJoin` (no member list; etcd's "too
    many learner members" or "unhealthy cluster") or :class:`K3sFatal`."""
    try:
        info = json.loads(node.get(url, "/db/info", ca, "server", secret, {}))
    except (urllib.error.HTTPError, K3sFatal, ValueError) as err:
        raise RetryJoin(
            f"Waiting to retrieve etcd cluster member list: failed to get MemberList from server: {err}"
        ) from err
    members = info.get("members") or []
    client_urls = [
        u
        for m in members
        if not m.get("isLearner") and not any(urlsplit(c).hostname == node.address for c in m.get("clientURLs", []))
        for u in m.get("clientURLs", [])
    ]
    add, cluster = True, []
    for m in members:
        member_name = m.get("name", "")
        for peer in m.get("peerURLs", []):
            host = urlsplit(peer).hostname
            if member_name == "" and host == node.address:
                member_name = name  # an uninitialised joining member on our address is us
            if member_name == name and host == node.address:
                add = False
            cluster.append(f"{member_name}={m['peerURLs'][0]}")
        if member_name != name and member_node(member_name) == node.name:
            node.p("server/db/etcd/name").unlink(missing_ok=True)
            raise K3sFatal(f"etcd cluster join failed: {DUPLICATE_NAME}")
    if add:
        logline("info", f"Adding member {name}={node.peer_url} to etcd cluster {cluster}")
        try:
            node.etcdctl(client_urls, "member", "add", name, f"--peer-urls={node.peer_url}", "--learner")
        except EtcdError as err:
            if any(t in str(err) for t in RETRIED_JOIN_ERRORS):
                raise RetryJoin(f"Waiting for other members to finish joining etcd cluster: {err}") from err
            raise K3sFatal(f"etcd cluster join failed: {err}") from err
        cluster.append(f"{name}={node.peer_url}")
    return cluster


def track_learner(
    progress: dict[str, Any], member_id: int, member_name: str, applied: int | None, now: float
) -> tuple[dict[str, Any], str]:
    """k3s's ``trackLearnerProgress`` after a failed promotion: ``progress`` is the record
    kept in etcd (``k3s/etcd/learnerProgress``: ``id``, ``name``, ``raftAppliedIndex``,
    ``lastProgress`` in unix seconds), ``applied`` the learner's raft applied index (None
    when it does not answer). Returns the record to keep and what to do: ``"progress"`` (a
    new learner, or its index moved), ``"stalled"`` (k3s warns "Learner X stalled at
    RaftAppliedIndex=N for D") or ``"remove"`` (stalled over :data:`LEARNER_MAX_STALL_S`:
    k3s removes it, "Removed learner X from etcd cluster")."""
    if progress.get("name") != member_name or progress.get("id") != member_id:
        progress = {"id": member_id, "name": member_name, "raftAppliedIndex": 0, "lastProgress": now}
    progress = dict(progress)
    if applied is not None and int(progress.get("raftAppliedIndex", 0)) < applied:
        progress["raftAppliedIndex"], progress["lastProgress"] = applied, now
    last = float(progress["lastProgress"])
    if now - last > LEARNER_MAX_STALL_S:
        return progress, "remove"
    return progress, ("progress" if last == now else "stalled")


def manage_learners_once(node: Node) -> list[str]:
    """One tick of k3s's ``manageLearners`` on this server: nothing unless its member leads
    etcd; then every learner is promoted if etcd allows it ("can only promote a learner
    member which is in sync with leader" otherwise), else its progress is tracked
    (:func:`track_learner`, the record in etcd) and a learner stalled for 5 min removed.
    Returns what it did, one line each (also logged). Raises :class:`EtcdError`."""

    async def _local() -> tuple[bool, dict[str, Any], list[EtcdMember]]:
        async with node.local_etcd() as c:
            status = await c.status()
            if int(status.get("header", {}).get("member_id", 0)) != int(status.get("leader", -1)):
                return False, {}, []
            raw = await c.get(LEARNER_PROGRESS_KEY)
            return True, (json.loads(raw) if raw else {}), await c.member_list()

    leads, progress, members = asyncio.run(_local())
    done: list[str] = []
    for m in (m for m in members if leads and m.is_learner):

        async def _promote(member_id: int = m.id) -> None:
            async with node.local_etcd() as c:
                await c.member_promote(member_id)

        try:
            asyncio.run(_promote())
            done.append(f"Promoted learner {m.name}")
            logline("info", done[-1])
            continue
        except EtcdError:
            pass
        applied: int | None = None
        if m.client_urls:
            try:
                status = node.etcdctl(list(m.client_urls), "endpoint", "status", timeout_s=10.0)
                applied = int(status[0]["Status"].get("raftAppliedIndex", 0)) if status else None
            except (EtcdError, KeyError, IndexError, TypeError, ValueError):
                applied = None
        now = time.time()
        progress, action = track_learner(progress, m.id, m.name, applied, now)

        async def _act(
            member_id: int = m.id, record: str = json.dumps(progress), remove: bool = action == "remove"
        ) -> None:
            async with node.local_etcd() as c:
                if remove:
                    await c.member_remove(member_id)
                else:
                    await c.put(LEARNER_PROGRESS_KEY, record.encode())

        if action == "stalled":
            stalled_s = now - float(progress["lastProgress"])
            logline(
                "warning",
                f"Learner {m.name} stalled at RaftAppliedIndex={progress['raftAppliedIndex']} for {stalled_s:.0f}s",
            )
        asyncio.run(_act())
        if action == "remove":
            done.append(f"Removed learner {m.name} from etcd cluster")
            logline("warning", done[-1])
    return done


def manage_learners(node: Node) -> None:
    """k3s's ``manageLearners`` loop: :func:`manage_learners_once` every
    :data:`MANAGE_TICK_S` seconds for as long as the server runs (a thread of the emulated
    k3s; an error is logged and the next tick tries again)."""
    while True:
        time.sleep(MANAGE_TICK_S)
        try:
            manage_learners_once(node)
        except Exception as err:  # k3s logs and goes on: a dead loop would leave learners unpromoted
            logline("error", f"Failed to manage etcd learners: {type(err).__name__}: {err}")


def agent(node: Node) -> None:
    """``k3s agent``: the CA check, the kubelet certificate (node-password check), the kubelet."""
    cfg = node.cfg
    url = cfg.get("server")
    if not url or not cfg.get("token"):
        raise K3sFatal("--server and --token are required")
    try:
        token = parse_token(cfg["token"])
    except ValueError as err:
        raise K3sFatal(str(err)) from err
    ca = node.cacerts(url, token.ca_hash)
    cert = node.kubelet_cert(url, ca, token.user, token.secret)
    node.pad(node.emu.join_s, "agent")
    node.start_kubelet(url, ca, cert, control=False)
    logline("info", "k3s agent is up and running (EMULATED)")


def snapshot_save(r: Root, args: argparse.Namespace) -> int:
    """``k3s etcd-snapshot save`` as k3s 1.29+ runs it (``pkg/cli/etcdsnapshot``): the token
    from ``--etcd-token`` or ``server/token``, the CA of ``--etcd-server`` checked against it
    (``/cacerts``), then ``POST <etcd-server>/db/snapshot`` as the ``server`` user with
    ``{"operation": "save", "name": [N], "dir": D}``: the running server takes the snapshot
    (:class:`lab.apiserver.K3sSupervisor`) and answers the files it created, which this logs
    as "Snapshot <file> saved.". A refusal is fatal, "see server log for details: ...".
    Returns the exit code."""
    data_dir = "/var/lib/rancher/k3s/server"
    token = args.etcd_token
    if not token:
        try:
            token = r(f"{data_dir}/token").read_text().strip()
        except OSError:
            logline("fatal", f"open {data_dir}/token: no such file or directory")
            return 1
    server = args.etcd_server.rstrip("/")
    body = {"operation": "save", "name": [args.name], **({"dir": args.dir} if args.dir else {})}
    try:
        parsed = parse_token(token) if token.startswith("K10") else None
        secret = parsed.secret if parsed else token
        node = Node(r, {"node-name": args.node_name or "snapshot", "node-ip": LOOPBACK}, emulation.load())
        ca = node.cacerts(server, parsed.ca_hash if parsed else "")
        auth = base64.b64encode(f"server:{secret}".encode()).decode()
        req = urllib.request.Request(
            f"{server}/db/snapshot",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=ctx_for(ca), timeout=300) as resp:
                answer = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace").strip()
            raise K3sFatal(
                f"see server log for details: {server}/db/snapshot: {err.code} {err.reason}: {detail}"
            ) from err
        except (OSError, urllib.error.URLError) as err:
            raise K3sFatal(f"see server log for details: {server}/db/snapshot: {err}") from err
    except (ToolError, ValueError) as err:
        logline("fatal", str(err))
        return 1
    for name in answer.get("created") or []:
        logline("info", f"Snapshot {name} saved.")
    return 0


def snapshot_main(argv: list[str]) -> int:
    """``k3s etcd-snapshot save ...`` (the only subcommand emulated)."""
    p = argparse.ArgumentParser(prog="k3s etcd-snapshot", description="EMULATED k3s etcd-snapshot")
    p.add_argument("subcommand", choices=["save"])
    p.add_argument("--config", "-c", default="/etc/rancher/k3s/config.yaml")
    p.add_argument("--rootfs", default=None)
    p.add_argument("--node-name", default="")
    p.add_argument("--name", default="on-demand")
    p.add_argument("--dir", "--etcd-snapshot-dir", dest="dir", default="")
    p.add_argument("--etcd-server", "-s", default="https://127.0.0.1:6443")
    p.add_argument("--etcd-token", "-t", default="")
    args = p.parse_args(argv)
    return snapshot_save(Root(args.rootfs), args)


def main(argv: list[str] | None = None) -> int:
    """``k3s server|agent --config FILE [--rootfs R] [--cluster-reset
    [--cluster-reset-restore-path P]]``: runs until SIGTERM (``--cluster-reset``: until the
    reset is done); ``k3s etcd-snapshot save ...``. Exit 1 with ``level=fatal`` on a refusal."""
    argv = sys.argv[1:] if argv is None else argv
    emulation.record_cmdline("k3s")
    if argv[:1] == ["etcd-snapshot"]:
        return snapshot_main(argv[1:])
    p = argparse.ArgumentParser(prog="k3s", description="EMULATED k3s (ephemeral-k8s lab only)")
    p.add_argument("command", choices=["server", "agent"])
    p.add_argument("--config", "-c", default="/etc/rancher/k3s/config.yaml")
    p.add_argument("--rootfs", default=None)
    p.add_argument("--cluster-reset", action="store_true")
    p.add_argument("--cluster-reset-restore-path", default=None)
    args = p.parse_args(argv)
    r = Root(args.rootfs)
    try:
        config = yaml.safe_load(r(args.config).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        logline("fatal", f"reading {args.config}: {err}")
        return 1
    node = Node(r, config, emulation.load())

    def _term(*_: object) -> None:
        # k3s stops its in-process components with it; here they are children.
        node.stop_children()
        os._exit(0)

    signal.signal(signal.SIGTERM, _term)
    logline("info", f"Starting k3s {args.command} (EMULATED k3s, ephemeral-k8s lab) as {node.name}")
    try:
        if args.command == "server":
            server(node, args.cluster_reset, args.cluster_reset_restore_path)
            if args.cluster_reset:
                return 0
        else:
            agent(node)
    except ToolError as err:
        logline("fatal", str(err))
        node.stop_children()
        return 1
    while True:
        time.sleep(0.2)
        dead = [name for name, c in node.children if c.poll() is not None]
        if dead:
            # In k3s these run in its own process: one of them failing takes k3s down.
            logline("fatal", f"{dead[0]} exited (emulated k3s child)")
            node.stop_children()
            return 1


def run() -> int:
    """``python -m lab.k3s``'s entry (and the fork server's): :func:`main` under umask 077."""
    os.umask(0o077)
    return main()


if __name__ == "__main__":
    sys.exit(run())
