"""EMULATED kube-apiserver for the lab (no Kubernetes binaries can be installed here).

What is real: TLS with the cluster CA, client-certificate authentication, storage of every
object as JSON in the node's real etcd member (keys as the real API server uses them,
``/registry/minions/<name>``, ``/registry/secrets/<ns>/<name>`` ...), so the API is exactly
as available as etcd's quorum.

What is emulated, and only as far as the node agent, Phylactery and the official
``kubernetes`` client need it:

* ``/healthz``, ``/livez``, ``/readyz`` (anonymous; ``/readyz`` reads etcd), ``/version``;
* Nodes (list, get, create, delete, status update, patch), ConfigMaps and Secrets in a
  namespace; Pods, PodDisruptionBudgets and the eviction API (:mod:`lab.workloads`), with the
  NodeRestriction admission plugin's rules for a node's own Node;
* kube-controller-manager's node lifecycle controller (:class:`NodeLifecycle`): a Node whose
  status this API server has not seen change for ``node_monitor_grace_s`` seconds (40 s,
  ``--node-monitor-grace-period``) since it first saw it gets ``Ready=Unknown``, written
  to etcd as the real controller writes it. Timed from the first observation, not from
  ``lastHeartbeatTime``: after a restart (an etcd restore, a new control node) the Nodes
  whose stored condition is still True read Ready for the grace period;
* bootstrap tokens (``bootstrap-token-<id>`` Secrets with ``expiration``) as bearer
  credentials, the ``cluster-info`` JWS signature per live token, and a CSR endpoint that
  signs kubelet client certificates at once (the CSR approver and signer);
* the TTL of the ``kubeadm-certs`` Secret (``ek8s.lab/expires-at`` annotation);
* with a ``k3s`` section in its config, the part of k3s's supervisor that shares the API
  port (:class:`K3sSupervisor`): ``/cacerts``, ``/v1-k3s/server-bootstrap``, ``/db/info``
  and ``/v1-k3s/client-kubelet.crt`` with k3s's node-password check.

Authorisation is coarse: cluster admins and control-plane components may do anything;
nodes may manage their own Node; bootstrap tokens may read cluster-info, kubeadm-certs and
Nodes and submit CSRs; anonymous users reach health endpoints and cluster-info only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import ssl
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from core import noderoles
from core.etcd import EtcdClient, EtcdError, client_ssl_context, retry_transient
from lab import pki
from lab.workloads import Workloads

log = logging.getLogger("emulated-kube-apiserver")
ADMIN_GROUPS = {"system:masters", "kubeadm:cluster-admins"}
KINDS = {"configmaps": "ConfigMap", "secrets": "Secret"}
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


def rfc3339(t: float) -> str:
    """Unix seconds as the API's timestamp format, UTC to the second (``...T15:04:05Z``)."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s: str) -> float:
    """Inverse of :func:`rfc3339`: Unix seconds. Raises ``ValueError`` on any other format
    (fractional seconds or an offset included)."""
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def jws_signature(token_id: str, token_secret: str, payload: bytes) -> str:
    """Detached JWS (HS256, ``kid`` the token id) over ``payload`` keyed by the token secret,
    as the bootstrap signer writes into ``cluster-info`` as ``jws-kubeconfig-<token id>``
    (``pkg/controller/bootstrap/bootstrapsigner.go``, ``k8s.io/cluster-bootstrap/token/jws``
    ``ComputeDetachedSignature``). Returns ``header..signature`` (base64url, no padding)."""
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": token_id}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(payload).rstrip(b"=")
    sig = hmac.new(token_secret.encode(), header + b"." + body, hashlib.sha256).digest()
    return (header + b".." + base64.urlsafe_b64encode(sig).rstrip(b"=")).decode()


def status_error(code: int, reason: str, message: str) -> web.Response:
    """A ``v1 Status`` failure (apimachinery ``metav1.Status``) with HTTP status ``code`` and
    ``reason`` such as ``NotFound``, ``Forbidden``, ``AlreadyExists``, as the API server
    answers an error; the ``kubernetes`` client raises it as ``ApiException``."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


class User:
    """Who a request comes from: the client certificate's CN and O (name and groups, as the
    API server's x509 authenticator reads them), or ``system:bootstrap:<token id>`` in
    ``system:bootstrappers`` for a valid bootstrap token. Never anonymous: that is None."""

    def __init__(self, name: str, groups: set[str]) -> None:
        self.name, self.groups = name, groups

    @property
    def admin(self) -> bool:
        """May do anything: groups ``system:masters`` (super-admin.conf) or
        ``kubeadm:cluster-admins`` (admin.conf, kubeadm 1.29+), or a ``system:kube-*``
        component. Stands in for RBAC, which is not emulated."""
        return bool(self.groups & ADMIN_GROUPS) or self.name.startswith("system:kube-")

    @property
    def bootstrapper(self) -> bool:
        """Authenticated with a bootstrap token (group ``system:bootstrappers``)."""
        return "system:bootstrappers" in self.groups


class NodeLifecycle:
    """kube-controller-manager's node lifecycle controller, as far as Ready goes
    (``pkg/controller/nodelifecycle/node_lifecycle_controller.go``, ``tryUpdateNodeHealth``).

    For each Node it keeps when it last saw the Node's status change (``probeTimestamp``), set
    to *now* when it sees the Node for the first time ("Missing timestamp for Node %s.
    Assuming now as a timestamp."). A Node whose Ready condition is True and whose status has
    not changed for ``grace_s`` seconds since then gets Ready ``Unknown``
    (``NodeStatusUnknown``, "Kubelet stopped posting node status."), written to the Node in
    etcd. So a controller that starts over (each emulated API server runs one; the real one
    restarts with its leader election, e.g. after an etcd restore) leaves Nodes stored Ready
    as Ready for ``grace_s`` seconds from its first look, however old their last heartbeat.
    ``now`` is ``time.monotonic`` (tests may pass a fake)."""

    def __init__(self, server: ApiServer, grace_s: float, now: Any = time.monotonic) -> None:
        self.server, self.grace_s, self.now = server, grace_s, now
        self.probe: dict[str, tuple[str, float]] = {}  # node -> (status as seen, when it changed)

    @staticmethod
    def _ready(node: dict[str, Any]) -> dict[str, Any] | None:
        for cond in node.get("status", {}).get("conditions", []):
            if cond.get("type") == "Ready":
                return dict(cond)
        return None

    async def monitor(self) -> list[str]:
        """One pass (``--node-monitor-period``): list the Nodes, time each, mark the overdue
        ones Unknown. Returns the names marked. Raises :class:`core.etcd.EtcdError` when etcd
        does not answer (the next pass tries again)."""
        marked = []
        seen = set()
        for key, raw in await self.server.get_prefix("/registry/minions/"):
            node = json.loads(raw)
            name = key.rsplit("/", 1)[1]
            seen.add(name)
            observed = json.dumps(node.get("status", {}), sort_keys=True)
            prev = self.probe.get(name)
            if prev is None:
                log.info("Missing timestamp for Node %s. Assuming now as a timestamp.", name)
            if prev is None or prev[0] != observed:
                self.probe[name] = (observed, self.now())
                continue
            ready = self._ready(node)
            if ready is None or ready.get("status") != "True" or self.now() - prev[1] <= self.grace_s:
                continue
            # Re-read right before writing: a kubelet that posted meanwhile wins.
            current = await self.server.load(key)
            if current is None or json.dumps(current.get("status", {}), sort_keys=True) != observed:
                continue
            for cond in current["status"]["conditions"]:
                if cond.get("type") == "Ready":
                    cond.update(
                        status="Unknown",
                        reason="NodeStatusUnknown",
                        message="Kubelet stopped posting node status.",
                        lastTransitionTime=rfc3339(time.time()),
                    )
            await self.server.store(key, current)
            self.probe[name] = (json.dumps(current["status"], sort_keys=True), self.now())
            log.info("node %s: Ready -> Unknown (no status change for %.0fs)", name, self.grace_s)
            marked.append(name)
        for gone in set(self.probe) - seen:
            del self.probe[gone]
        return marked

    async def run(self, period_s: float = 1.0) -> None:
        """:meth:`monitor` every ``period_s`` seconds (the real ``--node-monitor-period`` is
        5 s) until cancelled; etcd errors are logged and retried."""
        while True:
            try:
                await self.monitor()
            except EtcdError as err:
                log.info("node lifecycle: etcd: %s", err)
            await asyncio.sleep(period_s)


class ApiServer:
    """The emulated API server's handlers and storage.

    ``conf`` is the JSON :func:`lab.kubeadm.write_apiserver_manifest` writes: ``pki_dir`` (the cluster
    CA, to sign kubelet CSRs), ``etcd_servers`` (client URLs) with ``etcd_ca``, ``etcd_cert``,
    ``etcd_key`` (paths), ``node_monitor_grace_s`` (seconds), ``version``; :func:`main` reads
    the rest. Raises ``OSError`` when a file it names cannot be read. A handler whose etcd call
    still fails after the retries ends in aiohttp's plain HTTP 500.
    """

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        ctx = client_ssl_context(Path(conf["etcd_ca"]), Path(conf["etcd_cert"]), Path(conf["etcd_key"]))
        self.etcd = EtcdClient(conf["etcd_servers"], ctx, timeout_s=3.0)
        self.grace_s = float(conf.get("node_monitor_grace_s", 40.0))
        # The CA that signs client certificates (kubeadm: "ca"; k3s: "client-ca").
        self.ca = pki.read_pair(Path(conf["pki_dir"]), conf.get("signing_ca", "ca"))

    # -- storage (retrying etcd's transient refusals, like the real storage layer) ---------
    async def get(self, key: str) -> bytes | None:
        """The raw value at ``key`` in etcd, or None. Transient etcd refusals are retried
        (6 steps, about 3 s of backoff); raises :class:`core.etcd.EtcdError` after that, as
        for any other refusal."""
        return await retry_transient(lambda: self.etcd.get(key), steps=6)

    async def get_prefix(self, prefix: str) -> list[tuple[str, bytes]]:
        """(key, raw value) of every key under ``prefix``, in etcd's order; retries as :meth:`get`."""
        return await retry_transient(lambda: self.etcd.get_prefix(prefix), steps=6)

    async def put(self, key: str, value: bytes) -> None:
        """Store ``value`` at ``key``; retries as :meth:`get`."""
        await retry_transient(lambda: self.etcd.put(key, value), steps=6)

    async def delete(self, key: str) -> int:
        """Delete ``key``; returns how many keys went (0 or 1). Retries as :meth:`get`."""
        return await retry_transient(lambda: self.etcd.delete(key), steps=6)

    async def load(self, key: str) -> dict[str, Any] | None:
        """The object at ``key`` (JSON), or None when absent or past its
        ``ek8s.lab/expires-at`` annotation (Unix seconds; deleted then, as the garbage collector
        deletes ``kubeadm-certs`` with the token that owns it). Raises as :meth:`get`."""
        raw = await self.get(key)
        obj = json.loads(raw) if raw else None
        if obj and self._expired(obj):
            await self.delete(key)
            return None
        return obj

    async def store(self, key: str, obj: dict[str, Any]) -> None:
        """Write ``obj`` as JSON with a new ``metadata.resourceVersion`` (a nanosecond clock,
        not etcd's revision: the emulation has no watch or optimistic concurrency)."""
        obj.setdefault("metadata", {})["resourceVersion"] = str(time.time_ns())
        await self.put(key, json.dumps(obj).encode())

    def _expired(self, obj: dict[str, Any]) -> bool:
        exp = (obj.get("metadata", {}).get("annotations") or {}).get("ek8s.lab/expires-at")
        return exp is not None and float(exp) < time.time()

    async def token_valid(self, token_id: str, secret: str | None = None) -> bool:
        """Whether ``bootstrap-token-<token_id>`` exists in ``kube-system``, has not passed its
        ``expiration`` (RFC 3339) and, when ``secret`` is given, holds that ``token-secret``
        (the Secret format of ``k8s.io/cluster-bootstrap/token/api``)."""
        obj = await self.load(f"/registry/secrets/kube-system/bootstrap-token-{token_id}")
        if obj is None:
            return False
        data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        if secret is not None and not hmac.compare_digest(data.get("token-secret", ""), secret):
            return False
        exp = data.get("expiration")
        return not (exp and parse_rfc3339(exp) < time.time())

    # -- authentication -------------------------------------------------------------
    async def user(self, request: web.Request) -> User | None:
        """The request's :class:`User` from its client certificate (the TLS layer has checked
        it against the cluster CA) or its ``Authorization: Bearer <id>.<secret>`` bootstrap
        token; None for an anonymous request. Raises ``web.HTTPUnauthorized`` (401) for a
        bearer token that is unknown, expired or wrong, as the real API server refuses it."""
        transport = request.transport
        sslobj = transport.get_extra_info("ssl_object") if transport else None
        der = sslobj.getpeercert(binary_form=True) if sslobj else None
        if der:
            cert = x509.load_der_x509_certificate(der)
            cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
            orgs = cert.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)
            return User(str(cn[0].value) if cn else "", {str(o.value) for o in orgs})
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[7:].strip()
            tid, _, secret = token.partition(".")
            if await self.token_valid(tid, secret):
                return User(f"system:bootstrap:{tid}", {"system:bootstrappers"})
            raise web.HTTPUnauthorized(text=json.dumps({"kind": "Status", "message": "Unauthorized"}))
        return None

    # -- nodes ----------------------------------------------------------------------

    async def nodes(self, request: web.Request) -> web.StreamResponse:
        """``/api/v1/nodes``: GET lists every Node (as stored: the kubelets' status, Ready
        Unknown where :class:`NodeLifecycle` wrote it; any authenticated user), any other
        method (POST) creates one (admins, or the node itself: ``system:node:<name>``): 201, or
        409 AlreadyExists. 403 when anonymous."""
        user = await self.user(request)
        if user is None:
            return status_error(
                403, "Forbidden", 'nodes is forbidden: User "system:anonymous" cannot list resource "nodes"'
            )
        if request.method == "GET":
            items = [json.loads(v) for _, v in await self.get_prefix("/registry/minions/")]
            return web.json_response(
                {
                    "kind": "NodeList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(time.time_ns())},
                    "items": items,
                }
            )
        body = await request.json()
        name = body.get("metadata", {}).get("name", "")
        if not (user.admin or user.name == f"system:node:{name}"):
            return status_error(403, "Forbidden", f"{user.name} may not create node {name}")
        labels = body.get("metadata", {}).get("labels") or {}
        # NodeRestriction (lab/workloads.py). The control-plane label is kubeadm's
        # mark-control-plane phase's (admin credential) on a real node; the emulated kubelet
        # registers it itself (lab/kubelet.py), so it alone passes here.
        forbidden = sorted(k for k in labels if not noderoles.kubelet_may_set(k) and k != CONTROL_PLANE_LABEL)
        if not user.admin and forbidden:
            return status_error(
                403, "Forbidden", f'node "{name}" is not allowed to set the following labels: {", ".join(forbidden)}'
            )
        key = f"/registry/minions/{name}"
        if await self.load(key) is not None:
            return status_error(409, "AlreadyExists", f'nodes "{name}" already exists')
        body.update(kind="Node", apiVersion="v1")
        body["metadata"].update(
            creationTimestamp=rfc3339(time.time()), uid=hashlib.sha1(f"{name}{time.time_ns()}".encode()).hexdigest()
        )
        await self.store(key, body)
        return web.json_response(body, status=201)

    async def node(self, request: web.Request) -> web.StreamResponse:
        """``/api/v1/nodes/{name}``: GET (admins, bootstrap tokens, the node itself; kubeadm
        join reads the Node this way for its same-name check) and DELETE (admins); 404 when
        absent, 405 for other methods."""
        user = await self.user(request)
        name = request.match_info["name"]
        if user is None or not (user.admin or user.bootstrapper or user.name == f"system:node:{name}"):
            return status_error(403, "Forbidden", f'nodes "{name}" is forbidden')
        key = f"/registry/minions/{name}"
        obj = await self.load(key)
        if request.method == "GET":
            if obj is None:
                return status_error(404, "NotFound", f'nodes "{name}" not found')
            return web.json_response(obj)
        if request.method == "DELETE":
            if not user.admin:
                return status_error(403, "Forbidden", f"{user.name} may not delete nodes")
            if obj is None:
                return status_error(404, "NotFound", f'nodes "{name}" not found')
            await self.delete(key)
            return web.json_response(
                {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name, "kind": "nodes"}}
            )
        return status_error(405, "MethodNotAllowed", request.method)

    async def node_status(self, request: web.Request) -> web.StreamResponse:
        """``/api/v1/nodes/{name}/status``: replace the Node's ``status`` with the body's (any
        method; admins or the node itself), as the kubelet's status update does; 404 when
        the Node does not exist."""
        user = await self.user(request)
        name = request.match_info["name"]
        if user is None or not (user.admin or user.name == f"system:node:{name}"):
            return status_error(403, "Forbidden", f'nodes "{name}" is forbidden')
        key = f"/registry/minions/{name}"
        obj = await self.load(key)
        if obj is None:
            return status_error(404, "NotFound", f'nodes "{name}" not found')
        obj["status"] = (await request.json()).get("status", {})
        await self.store(key, obj)
        return web.json_response(obj)

    # -- configmaps and secrets -------------------------------------------------------
    async def objects(self, request: web.Request) -> web.StreamResponse:
        """ConfigMaps and Secrets in a namespace: POST creates in the collection (any other
        method lists it); GET, PUT (create or replace: 201 or 200) and DELETE by name; 405 for
        other methods by name. Admins may do all; anyone may GET
        ``kube-public/cluster-info`` (signed per live token on the way out, see
        :func:`jws_signature`); bootstrap tokens may GET ``kube-system/kubeadm-certs``
        (kubeadm grants this through the ``kubeadm:get-kubeadm-certs`` Role). Other requests
        get 403."""
        ns, res = request.match_info["ns"], request.match_info["res"]
        name = request.match_info.get("name")
        user = await self.user(request)
        public = ns == "kube-public" and res == "configmaps" and name == "cluster-info" and request.method == "GET"
        kubeadm_certs = ns == "kube-system" and res == "secrets" and name == "kubeadm-certs" and request.method == "GET"
        if not (public or (user and (user.admin or (user.bootstrapper and kubeadm_certs)))):
            who = user.name if user else "system:anonymous"
            return status_error(
                403, "Forbidden", f'{res} "{name}" is forbidden: User "{who}" cannot {request.method.lower()} it'
            )
        prefix = f"/registry/{res}/{ns}/"
        if name is None:
            if request.method == "POST":
                body = await request.json()
                name = body.get("metadata", {}).get("name", "")
                if await self.load(prefix + name) is not None:
                    return status_error(409, "AlreadyExists", f'{res} "{name}" already exists')
                body.update(kind=KINDS[res], apiVersion="v1")
                body["metadata"]["namespace"] = ns
                await self.store(prefix + name, body)
                return web.json_response(body, status=201)
            items = [json.loads(v) for _, v in await self.get_prefix(prefix)]
            return web.json_response({"kind": KINDS[res] + "List", "apiVersion": "v1", "metadata": {}, "items": items})
        obj = await self.load(prefix + name)
        if request.method == "GET":
            if obj is None:
                return status_error(404, "NotFound", f'{res} "{name}" not found')
            if public:
                obj = await self._signed_cluster_info(obj)
            return web.json_response(obj)
        if request.method == "PUT":  # create or replace
            body = await request.json()
            body.update(kind=KINDS[res], apiVersion="v1")
            body.setdefault("metadata", {}).update(name=name, namespace=ns)
            await self.store(prefix + name, body)
            return web.json_response(body, status=200 if obj is not None else 201)
        if request.method == "DELETE":
            if obj is None:
                return status_error(404, "NotFound", f'{res} "{name}" not found')
            await self.delete(prefix + name)
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        return status_error(405, "MethodNotAllowed", request.method)

    async def _signed_cluster_info(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Add ``jws-kubeconfig-<id>`` for every live bootstrap token (the bootstrap signer)."""
        payload = obj.get("data", {}).get("kubeconfig", "").encode()
        for _, raw in await self.get_prefix("/registry/secrets/kube-system/bootstrap-token-"):
            secret = json.loads(raw)
            data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
            tid = data.get("token-id", "")
            if tid and await self.token_valid(tid):
                obj["data"][f"jws-kubeconfig-{tid}"] = jws_signature(tid, data.get("token-secret", ""), payload)
        return obj

    # -- certificate signing (approver + signer of kube-controller-manager) ------------
    async def csr(self, request: web.Request) -> web.StreamResponse:
        """``POST /apis/certificates.k8s.io/v1/certificatesigningrequests`` (bootstrap tokens,
        admins): a CSR whose CN starts with ``system:node:`` comes back at once with
        ``status.certificate`` (base64 PEM, 1 year, O ``system:nodes``) and an ``Approved``
        condition, as kube-controller-manager's approver and signer would do later (422 for
        other CNs). The CSR is not stored."""
        user = await self.user(request)
        if user is None or not (user.admin or user.bootstrapper):
            return status_error(403, "Forbidden", "certificatesigningrequests is forbidden")
        body = await request.json()
        csr = x509.load_pem_x509_csr(base64.b64decode(body["spec"]["request"]))
        cn = str(csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value)
        if not cn.startswith("system:node:"):
            return status_error(422, "Invalid", "only kubelet client certificates are signed here")
        cert, _ = pki.issue(self.ca, cn, orgs=("system:nodes",), client=True, public_key=csr.public_key())  # type: ignore[arg-type]
        body.setdefault("status", {})["certificate"] = base64.b64encode(cert).decode()
        body["status"]["conditions"] = [{"type": "Approved", "status": "True", "reason": "AutoApproved"}]
        return web.json_response(body, status=201)

    # -- health -----------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.StreamResponse:
        """``/healthz`` and ``/livez``: always ``ok`` (200), anonymous."""
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        """``/readyz``, anonymous: ``ok`` (200) when the local etcd member answers a read
        (one try, 3 s), otherwise 500 with ``[-]etcd failed: ...``, like the real check."""
        try:
            await self.etcd.get("/registry/health")
        except EtcdError as err:
            return web.Response(status=500, text=f"[-]etcd failed: {err}\nreadyz check failed")
        return web.Response(text="ok")

    async def version(self, request: web.Request) -> web.StreamResponse:
        """``/version``: ``major``, ``minor`` 32, ``gitVersion`` from the config, ``platform``
        ``emulated``."""
        return web.json_response(
            {"major": "1", "minor": "32", "gitVersion": self.conf.get("version", "v1.32.1"), "platform": "emulated"}
        )

    def app(self) -> web.Application:
        """The aiohttp application with every route above and the :class:`NodeLifecycle`
        controller running beside them; closes the etcd client on cleanup."""
        app = web.Application()
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/livez", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/version", self.version)
        workloads = Workloads(self)
        workloads.routes(r)  # PATCH on a Node first: the routes below take every other method
        r.add_route("*", "/api/v1/nodes", self.nodes)
        r.add_route("*", "/api/v1/nodes/{name}", self.node)
        r.add_route("*", "/api/v1/nodes/{name}/status", self.node_status)
        r.add_route("*", "/api/v1/namespaces/{ns}/{res:configmaps|secrets}", self.objects)
        r.add_route("*", "/api/v1/namespaces/{ns}/{res:configmaps|secrets}/{name}", self.objects)
        r.add_post("/apis/certificates.k8s.io/v1/certificatesigningrequests", self.csr)
        if "k3s" in self.conf:
            K3sSupervisor(self, self.conf["k3s"]).routes(r)

        lifecycle = NodeLifecycle(self, self.grace_s)
        tasks: list[asyncio.Task[None]] = []

        async def _start(_: web.Application) -> None:
            tasks.append(asyncio.create_task(lifecycle.run()))
            tasks.append(asyncio.create_task(_schedule(workloads)))

        async def _close(_: web.Application) -> None:
            for task in tasks:
                task.cancel()
            await self.etcd.close()

        app.on_startup.append(_start)
        app.on_cleanup.append(_close)
        return app


async def _schedule(workloads: Workloads, period_s: float = 2.0) -> None:
    """The emulated scheduler's retry: bind Pending Pods that fit a Node now, every ``period_s``."""
    while True:
        await asyncio.sleep(period_s)
        try:
            await workloads.schedule_pending()
        except EtcdError as err:
            log.info("scheduler: etcd: %s", err)


class K3sSupervisor:
    """EMULATED: the routes of k3s's supervisor that joining nodes use, on the API port as in
    k3s (``pkg/server/router.go``; paths and answers from ``pkg/clientaccess/token.go`` and
    ``pkg/nodepassword/nodepassword.go`` in k3s-io/k3s). ``conf``: ``server_ca`` (the CA
    bundle file), ``passwd`` (k3s's ``server/cred/passwd``: ``<secret>,<user>,<user>,<group>``
    lines for the users ``server`` and ``node``), ``bootstrap`` (a JSON file of the cluster's
    certificates and keys, base64, that ``/v1-k3s/server-bootstrap`` hands to joining servers).

    * ``GET /cacerts``, anonymous: the CA bundle's bytes (a joiner hashes them against its
      token's ``K10<hash>``);
    * ``GET /v1-k3s/server-bootstrap`` and ``GET /db/info`` (etcd's member list), HTTP basic
      auth as ``server``; 401 otherwise;
    * ``GET /v1-k3s/client-kubelet.crt``, basic auth as ``node`` or ``server``, headers
      ``k3s-Node-Name`` and ``k3s-Node-Password``: the first password seen for a node is kept
      (its sha256) in the ``<node>.node-password.k3s`` Secret of ``kube-system``; a different
      one later gets 403 (the agent then says "Node password rejected, ..."); else a client
      certificate ``system:node:<node>`` (O ``system:nodes``) and its key, PEM, from the
      client CA. (k3s hashes with its own salted scheme; the emulation keeps a plain sha256.)
    """

    def __init__(self, api: ApiServer, conf: dict[str, Any]) -> None:
        self.api, self.conf = api, conf

    def _users(self) -> dict[str, str]:
        users = {}
        for line in Path(self.conf["passwd"]).read_text().splitlines():
            parts = line.split(",")
            if len(parts) >= 2:
                users[parts[1]] = parts[0]
        return users

    def _basic_user(self, request: web.Request, allowed: tuple[str, ...]) -> str | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return None
        try:
            user, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return None
        known = self._users().get(user)
        if user in allowed and known is not None and hmac.compare_digest(known, secret):
            return user
        return None

    def routes(self, r: web.UrlDispatcher) -> None:
        """Add the supervisor's routes to ``r``."""
        r.add_get("/cacerts", self.cacerts)
        r.add_get("/v1-k3s/server-bootstrap", self.server_bootstrap)
        r.add_get("/db/info", self.db_info)
        r.add_get("/v1-k3s/client-kubelet.crt", self.client_kubelet)

    async def cacerts(self, request: web.Request) -> web.StreamResponse:
        """The server CA bundle, anonymous."""
        return web.Response(body=Path(self.conf["server_ca"]).read_bytes(), content_type="text/plain")

    async def server_bootstrap(self, request: web.Request) -> web.StreamResponse:
        """The cluster's certificates and keys (JSON), for the ``server`` user only."""
        if self._basic_user(request, ("server",)) is None:
            return web.Response(status=401, text="Unauthorized")
        return web.Response(body=Path(self.conf["bootstrap"]).read_bytes(), content_type="application/json")

    async def db_info(self, request: web.Request) -> web.StreamResponse:
        """``{"members": [{"name", "peerURLs", "clientURLs", "ID"}]}``, for the ``server`` user."""
        if self._basic_user(request, ("server",)) is None:
            return web.Response(status=401, text="Unauthorized")
        try:
            members = await self.api.etcd.member_list()
        except EtcdError as err:
            return web.Response(status=503, text=str(err))
        return web.json_response(
            {
                "members": [
                    {"ID": str(m.id), "name": m.name, "peerURLs": list(m.peer_urls), "clientURLs": list(m.client_urls)}
                    for m in members
                ]
            }
        )

    async def client_kubelet(self, request: web.Request) -> web.StreamResponse:
        """The node-password check, then a kubelet client certificate (see the class)."""
        if self._basic_user(request, ("node", "server")) is None:
            return web.Response(status=401, text="Unauthorized")
        node = request.headers.get("k3s-Node-Name", "")
        password = request.headers.get("k3s-Node-Password", "")
        if not node or not password:
            return web.Response(status=400, text="node name and password headers are required")
        key = f"/registry/secrets/kube-system/{node}.node-password.k3s"
        digest = hashlib.sha256(password.encode()).hexdigest()
        stored = await self.api.load(key)
        if stored is None:
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "k3s.cattle.io/node-password",
                "metadata": {"name": f"{node}.node-password.k3s", "namespace": "kube-system"},
                "data": {"hash": base64.b64encode(digest.encode()).decode()},
            }
            await self.api.store(key, secret)
        elif base64.b64decode(stored.get("data", {}).get("hash", "")).decode() != digest:
            return web.Response(status=403, text="Forbidden")
        cert, key_pem = pki.issue(self.api.ca, f"system:node:{node}", orgs=("system:nodes",), client=True)
        return web.Response(body=cert + key_pem, content_type="text/plain")


def server_ssl(conf: dict[str, Any]) -> ssl.SSLContext:
    """TLS server context from ``conf``'s ``tls_cert``/``tls_key`` (paths); client
    certificates are optional (anonymous and bearer requests have none) and, when sent, must
    chain to ``client_ca``. Raises ``OSError`` (``ssl.SSLError``) on unusable files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(conf["tls_cert"], conf["tls_key"])
    ctx.load_verify_locations(conf["client_ca"])
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def main(argv: list[str] | None = None) -> None:
    """``--config FILE``: serve on ``bind_address:port`` from that JSON until SIGTERM or
    SIGINT. Raises ``OSError``, ``KeyError`` or ``ValueError`` on an unusable config."""
    parser = argparse.ArgumentParser(description="EMULATED kube-apiserver (ephemeral-k8s lab only)")
    parser.add_argument("--config", required=True, help="JSON written by the emulated kubeadm")
    args = parser.parse_args(argv)
    conf = json.loads(Path(args.config).read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s emulated-kube-apiserver %(message)s")
    log.info(
        "serving on %s:%s (emulated; storage in etcd %s)", conf["bind_address"], conf["port"], conf["etcd_servers"]
    )
    web.run_app(
        ApiServer(conf).app(),
        host=conf["bind_address"],
        port=int(conf["port"]),
        ssl_context=server_ssl(conf),
        access_log=None,
        print=None,
        handle_signals=True,
    )


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
