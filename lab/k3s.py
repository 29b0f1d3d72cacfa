"""EMULATED k3s for the lab: ``k3s server`` and ``k3s agent`` as the k3s driver runs them, with
embedded etcd as a REAL etcd member, the emulated kube-apiserver (:mod:`lab.apiserver`, with
k3s's supervisor routes) and the emulated kubelet (:mod:`lab.kubelet`) as its children.

Facts from k3s-io/k3s (paths in that repository) and docs.k3s.io; messages are k3s's:

* **Tokens** (``pkg/clientaccess/token.go``): a joiner downloads ``GET <server>/cacerts``
  (a server that does not answer: ``failed to get CA certs: ...``), compares its sha256 with
  the token's ``K10<hash>`` ("token CA hash does not match the Cluster CA certificate hash:
  X != Y") and then authenticates as the token's user (``server`` or ``node``, k3s's passwd
  users, ``pkg/daemons/control/deps/deps.go``); a wrong secret gets ``401 Unauthorized``.
* **Joining servers** fetch the cluster's certificates from ``/v1-k3s/server-bootstrap``
  (k3s: bootstrap data encrypted with the token), then join etcd as k3s's ``ETCD.join`` does
  (``pkg/etcd/etcd.go``): the member list comes from ``/db/info``; a member with this node's
  peer address and this member's name (or no name) is reused, anything else means
  ``MemberAddAsLearner``, so a stale member on this address under another name makes real
  etcd refuse: ``joining etcd cluster: etcdserver: Peer URLs already exists``. Members are
  named ``<node>-<first 8 hex digits of a UUID>`` (``setName``), kept in
  ``server/db/etcd/name``. k3s promotes learners from the leader (``manageLearners``); the
  emulation promotes its own learner once etcd runs.
* **Node password** (``pkg/nodepassword``, the agent's ``getNodeNamedHostFile``/
  ``ensureNodePassword``): every node keeps a random ``/etc/rancher/node/password`` and sends
  it when it asks for its kubelet certificate; the servers keep the first one in the
  ``<node>.node-password.k3s`` Secret and answer 403 to another, and the node logs "Waiting to
  retrieve agent configuration; server is not ready: Node password rejected, duplicate hostname
  or contents of '/etc/rancher/node/password' may not match server node-passwd entry, try
  enabling a unique node name with the --with-node-id flag" and retries every 5 s, for ever.
* ``--cluster-reset`` (``ETCD.Reset``): etcd restarts on the local data with
  ``--force-new-cluster``; once it runs alone k3s says "Managed etcd cluster membership has been
  reset, restart without --cluster-reset flag now" and exits 0. A server whose etcd data exists
  starts etcd on it without joining anything.
* A fatal error prints ``level=fatal msg="..."`` and exits 1 (the service stops). A server
  URL that does not answer is fatal for a joining server; the emulated agent gives up the
  same way (whether k3s's agent retries it instead was not checked).

Where it differs from k3s: one process per component (etcd, kube-apiserver, kubelet are
children, not in-process; SIGTERM stops them with k3s), one etcd CA for server and peer
certificates, a plain sha256 in the node-password Secret, the kubelet of an agent talks to
the VIP directly (k3s: through its local load balancer on 127.0.0.1:6444), bootstrap data
handed out as-is over TLS (k3s encrypts it with the token), no containerd, flannel or
addons. ``--rootfs R`` puts every node path under R (real k3s has no such flag). Durations
``init_s``/``join_s`` from ``$EK8S_EMULATION`` pad a start as for the emulated kubeadm.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from core.drivers.k3s import ca_hash, parse_token
from core.etcd import EtcdClient, EtcdError, client_ssl_context
from core.fileperm import ensure_dir, write_atomic
from lab import emulation, pki
from lab.kubeadm import Root, ctx_for, etcd_argv, wait_local_api

PASSWORD_RETRY_S = 5.0  # the agent retries its config every 5 s
BOOTSTRAP_FILES = ("server-ca", "client-ca", "etcd/server-ca")


class K3sFatal(Exception):
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
        self.started = time.time()

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

    def start_etcd(self, name: str, initial_cluster: str, state: str, force_new: bool = False) -> None:
        data = self.p("server/db/etcd")
        ensure_dir(data)
        argv = etcd_argv(
            self.emu.etcd,
            name,
            data,
            self.tls / "etcd",
            [f"https://{self.address}:2379", "https://127.0.0.1:2379"],
            f"https://{self.address}:2380",
            initial_cluster,
            state,
        )
        self.spawn("etcd", [*argv, "--force-new-cluster"] if force_new else argv)

    def local_etcd(self) -> EtcdClient:
        etcd = self.tls / "etcd"
        ctx = client_ssl_context(etcd / "server-ca.crt", etcd / "client.crt", etcd / "client.key")
        return EtcdClient(["https://127.0.0.1:2379"], ctx, timeout_s=3.0)

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
            "version": "v1.32.1+k3s1",
            "tls_cert": str(self.tls / "serving-kube-apiserver.crt"),
            "tls_key": str(self.tls / "serving-kube-apiserver.key"),
            "client_ca": str(self.tls / "client-ca.crt"),
            "pki_dir": str(self.tls),
            "signing_ca": "client-ca",
            "etcd_servers": ["https://127.0.0.1:2379"],
            "etcd_ca": str(self.tls / "etcd/server-ca.crt"),
            "etcd_cert": str(self.tls / "etcd/client.crt"),
            "etcd_key": str(self.tls / "etcd/client.key"),
            "node_monitor_grace_s": self.emu.node_monitor_grace_s,
            "k3s": {
                "server_ca": str(self.tls / "server-ca.crt"),
                "passwd": str(self.p("server/cred/passwd")),
                "bootstrap": str(self.p("server/cred/bootstrap.json")),
            },
        }
        path = self.p("server/emulated/kube-apiserver.json")
        ensure_dir(path.parent)
        write_atomic(path, json.dumps(conf, indent=1))
        self.spawn("kube-apiserver", [self.emu.python, "-m", "lab.apiserver", "--config", str(path)])

    def finish_server(self, pad_s: float) -> None:
        """Wait for the local API, pad the start to ``pad_s`` seconds in all, get this node's
        kubelet certificate through the local supervisor (the node-password check), write
        k3s.yaml, start the kubelet."""
        ca = (self.tls / "server-ca.crt").read_bytes()
        try:
            wait_local_api("127.0.0.1", self.port, ca)
        except Exception as err:
            raise K3sFatal(f"starting kubernetes: {err}") from err
        self.pad(pad_s, "server")
        local = f"https://127.0.0.1:{self.port}"
        users = self.users()
        cert = self.kubelet_cert(local, ca, "node", users["node"])
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


def server(node: Node, cluster_reset: bool) -> None:
    """``k3s server``: a new cluster (``cluster-init``), a start on existing etcd data, a
    join (``server:``), or ``--cluster-reset``. Raises :class:`K3sFatal`."""
    cfg = node.cfg
    if not cfg.get("token"):
        raise K3sFatal("starting kubernetes: preparing server: token is required")
    has_data = node.p("server/db/etcd/member").is_dir()
    if cluster_reset:
        if not has_data:
            raise K3sFatal("etcd: cluster-reset requires existing etcd data")
        name = node.etcd_name(fresh=False)
        node.start_etcd(name, f"{name}=https://{node.address}:2380", "new", force_new=True)
        node.wait_etcd()
        logline("info", "Managed etcd cluster membership has been reset, restart without --cluster-reset flag now")
        node.stop_children()
        return
    if has_data:
        logline("info", "Starting etcd on existing data (this server is already a member)")
        name = node.etcd_name(fresh=False)
        node.node_certs()
        node.start_etcd(name, f"{name}=https://{node.address}:2380", "existing")
    elif cfg.get("server"):
        join_server(node)
    else:
        if not cfg.get("cluster-init"):
            raise K3sFatal("emulated k3s: only embedded etcd (cluster-init) is emulated")
        tls = ensure_dir(node.tls)
        for name, cn in (("server-ca", "k3s-server-ca"), ("client-ca", "k3s-client-ca")):
            pki.write_pair(tls, name, pki.new_ca(f"{cn}@{int(time.time())}"))
        pki.write_pair(tls / "etcd", "server-ca", pki.new_ca(f"etcd-server-ca@{int(time.time())}"))
        node.write_cred(_secret(cfg["token"]), _secret(cfg.get("agent-token") or cfg["token"]))
        node.node_certs()
        name = node.etcd_name(fresh=True)
        logline("info", f"Starting etcd for new cluster as member {name}")
        node.start_etcd(name, f"{name}=https://{node.address}:2380", "new")
    node.wait_etcd()
    node.start_apiserver()
    node.finish_server(node.emu.join_s if cfg.get("server") else node.emu.init_s)
    logline("info", "k3s is up and running (EMULATED)")


def join_server(node: Node) -> None:
    """Bootstrap data and etcd membership from the server named by ``server:``."""
    cfg = node.cfg
    try:
        token = parse_token(cfg["token"])
    except ValueError as err:
        raise K3sFatal(f"starting kubernetes: preparing server: {err}") from err
    url = cfg["server"]
    ca = node.cacerts(url, token.ca_hash)
    try:
        bundle = json.loads(node.get(url, "/v1-k3s/server-bootstrap", ca, "server", token.secret, {}))
        info = json.loads(node.get(url, "/db/info", ca, "server", token.secret, {}))
    except urllib.error.HTTPError as err:
        raise K3sFatal(
            f"starting kubernetes: preparing server: failed to get bootstrap data: {url}/v1-k3s/server-bootstrap: "
            f"{err.code} {err.reason}"
        ) from err
    for name in BOOTSTRAP_FILES:
        where = node.tls / name
        pair = (base64.b64decode(bundle[name]["crt"]), base64.b64decode(bundle[name]["key"]))
        pki.write_pair(ensure_dir(where.parent), where.name, pair)
    cred = ensure_dir(node.p("server/cred"))
    write_atomic(cred / "passwd", bundle["passwd"]["text"])
    users = node.users()
    node.write_cred(users["server"], users["node"])
    node.node_certs()
    name = node.etcd_name(fresh=True)
    peer = f"https://{node.address}:2380"
    client_urls = [u for m in info["members"] for u in m.get("clientURLs", [])]

    async def _add() -> list[str]:
        etcd = node.tls / "etcd"
        ctx = client_ssl_context(etcd / "server-ca.crt", etcd / "client.crt", etcd / "client.key")
        async with EtcdClient(client_urls, ctx, timeout_s=5.0) as c:
            members = await c.member_list()
            add, cluster = True, []
            for m in members:
                for p in m.peer_urls:
                    if urlsplit(p).hostname == node.address and m.name in (name, ""):
                        add = False
                    cluster.append(f"{m.name or name}={p}")
            if add:
                logline("info", f"Adding {peer} to etcd cluster {cluster}")
                try:
                    await c.member_add([peer], learner=True)
                except EtcdError as err:
                    raise K3sFatal(
                        f"starting kubernetes: preparing server: start managed database: joining etcd cluster: {err}"
                    ) from err
                cluster.append(f"{name}={peer}")
            return cluster

    cluster = asyncio.run(_add())
    logline("info", f"Starting etcd for cluster {cluster}")
    node.start_etcd(name, ",".join(cluster), "existing")
    node.wait_etcd()

    async def _promote() -> None:
        # Through the voting members: a learner answers neither reads nor member calls.
        deadline = time.monotonic() + 60
        etcd = node.tls / "etcd"
        ctx = client_ssl_context(etcd / "server-ca.crt", etcd / "client.crt", etcd / "client.key")
        async with EtcdClient(client_urls, ctx, timeout_s=5.0) as c:
            while True:
                try:
                    mine = [m for m in await c.member_list() if m.peer_urls and m.peer_urls[0] == peer]
                    if mine and not mine[0].is_learner:
                        return
                    if mine:
                        await c.member_promote(mine[0].id)
                        logline("info", f"Promoted learner {name} to a voting member")
                        return
                except EtcdError as err:
                    if time.monotonic() > deadline:
                        raise K3sFatal(f"etcd learner {name} was not promoted: {err}") from err
                await asyncio.sleep(0.2)

    asyncio.run(_promote())


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


def main(argv: list[str] | None = None) -> int:
    """``k3s server|agent --config FILE [--rootfs R] [--cluster-reset]``: runs until SIGTERM
    (``--cluster-reset``: until the reset is done). Exit 1 with ``level=fatal`` on a refusal."""
    p = argparse.ArgumentParser(prog="k3s", description="EMULATED k3s (ephemeral-k8s lab only)")
    p.add_argument("command", choices=["server", "agent"])
    p.add_argument("--config", "-c", default="/etc/rancher/k3s/config.yaml")
    p.add_argument("--rootfs", default=None)
    p.add_argument("--cluster-reset", action="store_true")
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
            server(node, args.cluster_reset)
            if args.cluster_reset:
                return 0
        else:
            agent(node)
    except K3sFatal as err:
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


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
