"""EMULATED kube-apiserver for the lab (no Kubernetes binaries can be installed here).

What is real: TLS with the cluster CA, client-certificate authentication, storage of every
object as JSON in the node's real etcd member (keys as the real API server uses them,
``/registry/minions/<name>``, ``/registry/secrets/<ns>/<name>`` ...), ``resourceVersion`` as
the key's etcd ``mod_revision``, creates as an etcd transaction on ``create_revision == 0``
(two API servers cannot both create one name) and every update as one on the
``mod_revision`` it read (a ``resourceVersion`` the client sent must be that one), so the API
is exactly as available and as consistent as etcd's quorum.

What is emulated, as far as the node agent, Phylactery, the official ``kubernetes`` client,
the emulated kubeadm/k3s/kubelet and the real ``kubectl`` (Debian's 1.32 and 1.36) need it:

* ``/healthz``, ``/livez``, ``/readyz`` (anonymous; ``/readyz`` reads etcd; ``?verbose``,
  ``?exclude=``, ``/readyz/<check>``), ``/version`` (anonymous);
* discovery, aggregated (``apidiscovery.k8s.io/v2``, and ``v2beta1`` before 1.33) and legacy,
  for authenticated users (:mod:`lab.apiresources`);
* the resources of :data:`lab.apiresources.RESOURCES` with get, list, create, update (PUT),
  patch (JSON merge patch; a strategic merge patch is applied as a merge patch, which is the
  same for maps and replaces lists; JSON patch) and delete; ``nodes/status`` and
  ``pods/status``; list ``fieldSelector`` (the kind's field labels), ``labelSelector``,
  ``limit``/``continue``; create options ``fieldValidation``, ``fieldManager`` (checked, not
  used: no managed fields), ``dryRun=All``; server-side tables for ``kubectl get``
  (:mod:`lab.apitables`), ``PartialObjectMetadata``; request bodies in JSON, YAML or, for
  ConfigMap, Secret and Namespace, protobuf (:mod:`lab.apiproto`; ``kubectl create`` sends
  it); answers in JSON (or YAML when asked), never protobuf;
* ``Status`` errors as the real server words them (:mod:`lab.apimachinery`): 404
  ``NotFound``, 409 ``AlreadyExists``/``Conflict``, 422 ``Invalid`` (object names, ConfigMap and
  Secret keys), 400 ``BadRequest``, 403 ``Forbidden``, 405 ``MethodNotAllowed`` (watch and
  deletecollection are not served), 406, 415; an etcd failure after the retries is a 500
  ``InternalError`` Status, never a bare 500;
* admission as far as the lab meets it: NamespaceLifecycle (creating in a missing namespace:
  404; in a terminating one: 403; ``default``, ``kube-system``, ``kube-public`` cannot be
  deleted); deleting a Namespace deletes what is in it at once (the real namespace controller
  does it after the answer) and then the Namespace;
* the system namespaces controller (``pkg/controlplane/controller/systemnamespaces``):
  ``default``, ``kube-system``, ``kube-public``, ``kube-node-lease`` are created when missing,
  at start and every minute; until they are, they count as existing for admission;
* a scheduler binding Pods to Nodes, PodDisruptionBudgets and the eviction API
  (:mod:`lab.workloads`), with the NodeRestriction admission plugin's rule for the labels a
  node registers its own Node with;
* kube-controller-manager's node lifecycle controller (:class:`NodeLifecycle`): a Node whose
  status this API server has not seen change for ``node_monitor_grace_s`` seconds (40 s,
  ``--node-monitor-grace-period``) since it first saw it gets ``Ready=Unknown``, written
  to etcd as the real controller writes it. Timed from the first observation, not from
  ``lastHeartbeatTime``: after a restart (an etcd restore, a new control node) the Nodes
  whose stored condition is still True read Ready for the grace period;
* bootstrap tokens (``bootstrap-token-<id>`` Secrets with ``expiration``) as bearer
  credentials, the ``cluster-info`` JWS signature per live token, and a CSR endpoint that
  signs kubelet client certificates at once (the CSR approver and signer; the CSR is not
  stored);
* the TTL of the ``kubeadm-certs`` Secret (``ek8s.lab/expires-at`` annotation);
* with a ``k3s`` section in its config, the part of k3s's supervisor that shares the API
  port (:class:`K3sSupervisor`): ``/cacerts``, ``/v1-k3s/server-bootstrap``, ``/db/info``
  and ``/v1-k3s/client-kubelet.crt`` with k3s's node-password check.

Where it knowingly differs: a PUT of a missing object creates it (the emulated kubeadm relies
on it; the real server answers 404 for these kinds); no watch, no OpenAPI (``kubectl
explain`` and client-side validation of ``kubectl create -f`` need ``/openapi/v2`` or ``v3``:
use ``--validate=false``), no server-side apply, no managed fields, no mirror Pods, no node
Leases (``kubectl describe node`` says it failed to get the Lease); a continue token reads
the current data from its key on (the real one reads the snapshot of its revision).

Authorisation is coarse: cluster admins and control-plane components may do anything;
nodes may manage their own Node; bootstrap tokens may read cluster-info, kubeadm-certs and
Nodes and submit CSRs; bootstrap tokens and nodes may read kubeadm-config; any authenticated
user may list Nodes and read discovery; anonymous
users reach health endpoints, ``/version`` and cluster-info only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import copy
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from cryptography import x509

from core.etcd import EtcdClient, EtcdError, client_ssl_context, retry_transient
from core.versions import DEFAULT_KUBERNETES_VERSION
from lab import apimachinery as am
from lab import apiproto, apiresources, apitables, pki
from lab.apiresources import Resource, Target
from lab.pki import jws_signature
from lab.workloads import Workloads, node_label_refusal

log = logging.getLogger("emulated-kube-apiserver")
ADMIN_GROUPS = {"system:masters", "kubeadm:cluster-admins"}
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")
TABLE_KINDS = {("meta.k8s.io", v, "Table") for v in ("v1", "v1beta1")}
PARTIAL = {
    ("meta.k8s.io", v, k) for v in ("v1", "v1beta1") for k in ("PartialObjectMetadata", "PartialObjectMetadataList")
}
BODY_TYPES = [am.JSON, am.YAML, am.PROTOBUF]
PATCH_TYPES = ["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"]
MAX_BODY = 3 * 1024 * 1024  # the real server's request body limit (3 MiB)


def rfc3339(t: float) -> str:
    """Unix seconds as the API's timestamp format, UTC to the second (``...T15:04:05Z``)."""
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s: str) -> float:
    """Inverse of :func:`rfc3339`: Unix seconds. Raises ``ValueError`` on any other format
    (fractional seconds or an offset included)."""
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()


def minor_of(version: str) -> int:
    """The minor of a ``v1.M.P`` version (``v1.32.1+k3s1`` included); 32 when unreadable."""
    m = re.match(r"v?\d+\.(\d+)", version)
    return int(m.group(1)) if m else 32


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, ``null`` removes a key, anything
    else (lists included) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = json_merge_patch(out.get(k), v)
    return out


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (``add``, ``remove``, ``replace``, ``test``, ``copy``, ``move``) on
    a copy of ``doc``. Raises ``ValueError`` naming the failing operation."""
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise ValueError("a JSON patch is a list of operations")

    def walk(path: str) -> tuple[Any, str]:
        if not path.startswith("/"):
            raise ValueError(f"invalid path {path!r}")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    def get(path: str) -> Any:
        parent, last = walk(path)
        return parent[int(last)] if isinstance(parent, list) else parent[last]

    def add(path: str, value: Any) -> None:
        parent, last = walk(path)
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), value)
        else:
            parent[last] = value

    def remove(path: str) -> Any:
        parent, last = walk(path)
        return parent.pop(int(last)) if isinstance(parent, list) else parent.pop(last)

    for op in ops:
        try:
            kind, path = op["op"], op["path"]
            if kind == "add":
                add(path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, copy.deepcopy(op["value"]))
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ValueError(f"testing value {path} failed")
            elif kind in ("copy", "move"):
                value = copy.deepcopy(get(op["from"])) if kind == "copy" else remove(op["from"])
                add(path, value)
            else:
                raise ValueError(f"Unexpected kind: {kind}")
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise ValueError(f"doc is missing path: {op.get('path') if isinstance(op, dict) else op}: {err}") from None
    return doc


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


def allowed(user: User | None, verb: str, r: Resource, ns: str, name: str, sub: str) -> bool:
    """The coarse authorisation of the module docstring, standing in for RBAC and the Node
    authorizer: ``verb`` on ``r`` (``sub``: a subresource) named ``name`` in ``ns``."""
    if r.name == "configmaps" and ns == "kube-public" and name == "cluster-info" and verb == "get":
        return True  # kubeadm's RBAC lets anyone read cluster-info
    if user is None:
        return False
    if user.admin:
        return True
    if user.bootstrapper:
        if r.name == "secrets" and ns == "kube-system" and name == "kubeadm-certs" and verb == "get":
            return True  # the kubeadm:get-kubeadm-certs Role
        if r.name == "certificatesigningrequests" and verb == "create":
            return True
        if r.name == "nodes" and not sub and verb in ("get", "list"):
            return True
    if (user.bootstrapper or "system:nodes" in user.groups) and (r.name, ns, name, verb) == (
        "configmaps",
        "kube-system",
        "kubeadm-config",
        "get",
    ):
        return True  # kubeadm's kubeadm:nodes-kubeadm-config Role (phases/uploadconfig/uploadconfig.go)
    if r.name == "nodes":
        if verb == "list" and not sub:
            return True
        if user.name == f"system:node:{name}" and (sub == "status" or verb in ("get", "create")):
            return True
    return False


def forbidden(user: User | None, verb: str, r: Resource, ns: str, name: str, sub: str) -> am.StatusError:
    """RBAC's refusal: ``<resource> "<name>" is forbidden: User "<user>" cannot <verb>
    resource "<resource>" in API group "<group>" in the namespace "<ns>"`` (or ``at the
    cluster scope``)."""
    who = user.name if user else "system:anonymous"
    what = f"{r.name}/{sub}" if sub else r.name
    where = f'in the namespace "{ns}"' if ns else "at the cluster scope"
    return am.forbidden(
        r.group, r.name, name, f'User "{who}" cannot {verb} resource "{what}" in API group "{r.group}" {where}'
    )


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

    ``conf`` is the JSON :func:`lab.kubeadm.controlplane.write_apiserver_manifest` writes:
    ``pki_dir`` (the cluster CA, to sign kubelet CSRs), ``etcd_servers`` (client URLs) with
    ``etcd_ca``, ``etcd_cert``, ``etcd_key`` (paths), ``node_monitor_grace_s`` (seconds),
    ``version`` (``v1.M.P``, the ClusterConfiguration's ``kubernetesVersion``,
    :data:`core.versions.DEFAULT_KUBERNETES_VERSION` without one: what ``/version`` reports
    and what decides the discovery versions), ``advertise_address`` (optional, for
    ``serverAddressByClientCIDRs``); :func:`main` reads the rest. Raises ``OSError`` when a
    file it names cannot be read. A request whose etcd call still fails after the retries is
    answered with a 500 ``InternalError`` Status.
    """

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        ctx = client_ssl_context(Path(conf["etcd_ca"]), Path(conf["etcd_cert"]), Path(conf["etcd_key"]))
        self.etcd = EtcdClient(conf["etcd_servers"], ctx, timeout_s=3.0)
        self.grace_s = float(conf.get("node_monitor_grace_s", 40.0))
        # The CA that signs client certificates (kubeadm: "ca"; k3s: "client-ca").
        self.ca = pki.read_pair(Path(conf["pki_dir"]), conf.get("signing_ca", "ca"))
        self.version = str(conf.get("version") or DEFAULT_KUBERNETES_VERSION)
        self.minor = minor_of(self.version)
        addr = conf.get("advertise_address")
        self.server_address = f"{addr}:{conf.get('port', 6443)}" if addr else None
        self.workloads = Workloads(self)

    # -- storage (retrying etcd's transient refusals, like the real storage layer) ---------
    async def _kv(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One etcd KV call (``/v3/kv/range``, ``put``, ``txn``, ``deleterange``) through
        etcd's JSON gateway; transient refusals are retried (6 steps, about 3 s of backoff).
        Raises :class:`core.etcd.EtcdError`."""
        return await retry_transient(lambda: self.etcd.call(path, body), steps=6)

    async def get(self, key: str) -> bytes | None:
        """The raw value at ``key`` in etcd, or None. Raises as :meth:`_kv`."""
        data = await self._kv("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    async def get_prefix(self, prefix: str) -> list[tuple[str, bytes]]:
        """(key, raw value) of every key under ``prefix``, in etcd's order; raises as :meth:`_kv`."""
        return [(k, raw) for k, raw, _ in (await self._range(prefix))[0]]

    async def _range(self, prefix: str) -> tuple[list[tuple[str, bytes, int]], int]:
        """(key, raw value, mod_revision) under ``prefix`` in key order, and the store's revision."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        data = await self._kv("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end)})
        items = [
            (
                base64.b64decode(kv["key"]).decode(),
                base64.b64decode(kv.get("value", "")),
                int(kv.get("mod_revision", 0)),
            )
            for kv in data.get("kvs") or []
        ]
        return items, int((data.get("header") or {}).get("revision", 0))

    async def put(self, key: str, value: bytes) -> None:
        """Store ``value`` at ``key``; raises as :meth:`_kv`."""
        await self._kv("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    async def delete(self, key: str) -> int:
        """Delete ``key``; returns how many keys went (0 or 1). Raises as :meth:`_kv`."""
        data = await self._kv("/v3/kv/deleterange", {"key": _b64(key)})
        return int(data.get("deleted", 0))

    def _decode(self, raw: bytes, revision: int) -> dict[str, Any]:
        obj = json.loads(raw)
        obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
        return obj

    @staticmethod
    def _encode(obj: dict[str, Any]) -> bytes:
        """The stored JSON: the object without ``resourceVersion`` (etcd's revision is it)."""
        meta = dict(obj.get("metadata") or {})
        meta.pop("resourceVersion", None)
        return json.dumps({**obj, "metadata": meta}).encode()

    async def load(self, key: str) -> dict[str, Any] | None:
        """The object at ``key`` (JSON, ``resourceVersion`` its etcd ``mod_revision``), or
        None when absent or past its ``ek8s.lab/expires-at`` annotation (Unix seconds; deleted
        then, as the garbage collector deletes ``kubeadm-certs`` with the token that owns it).
        Raises as :meth:`_kv`."""
        data = await self._kv("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        if not kvs:
            return None
        obj = self._decode(base64.b64decode(kvs[0].get("value", "")), int(kvs[0].get("mod_revision", 0)))
        if self._expired(obj):
            await self.delete(key)
            return None
        return obj

    async def store(self, key: str, obj: dict[str, Any]) -> None:
        """Write ``obj`` as JSON (create or replace); raises as :meth:`_kv`."""
        await self.put(key, self._encode(obj))

    async def create(self, key: str, obj: dict[str, Any]) -> int | None:
        """Write ``obj`` only if ``key`` does not exist (an etcd transaction on
        ``create_revision == 0``, as the etcd3 storage creates). Returns the new revision, or
        None when the key exists. Raises as :meth:`_kv`."""
        k = _b64(key)
        data = await self._kv(
            "/v3/kv/txn",
            {
                "compare": [{"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}],
                "success": [{"request_put": {"key": k, "value": _b64(self._encode(obj))}}],
            },
        )
        return int(data["header"]["revision"]) if data.get("succeeded") else None

    async def update(self, key: str, obj: dict[str, Any], expect: int | None) -> int | None:
        """Write ``obj``; with ``expect``, only if the key's ``mod_revision`` is still that (a
        transaction, as a guaranteed update). Returns the new revision, or None when the key
        changed meanwhile. Raises as :meth:`_kv`."""
        k = _b64(key)
        put = {"request_put": {"key": k, "value": _b64(self._encode(obj))}}
        if expect is None:
            data = await self._kv("/v3/kv/txn", {"success": [put]})
        else:
            cmp = {"key": k, "result": "EQUAL", "target": "MOD", "mod_revision": str(expect)}
            data = await self._kv("/v3/kv/txn", {"compare": [cmp], "success": [put]})
        return int(data["header"]["revision"]) if data.get("succeeded") else None

    def _expired(self, obj: dict[str, Any]) -> bool:
        exp = (obj.get("metadata", {}).get("annotations") or {}).get("ek8s.lab/expires-at")
        try:
            return exp is not None and float(exp) < time.time()
        except ValueError:
            return False

    async def token_valid(self, token_id: str, secret: str | None = None) -> bool:
        """Whether ``bootstrap-token-<token_id>`` exists in ``kube-system``, has not passed its
        ``expiration`` (RFC 3339) and, when ``secret`` is given, holds that ``token-secret``
        (the Secret format of ``k8s.io/cluster-bootstrap/token/api``)."""
        obj = await self.load(f"/registry/secrets/kube-system/bootstrap-token-{token_id}")
        if obj is None:
            return False
        try:
            data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        except (ValueError, binascii.Error):
            return False
        if secret is not None and not hmac.compare_digest(data.get("token-secret", ""), secret):
            return False
        exp = data.get("expiration")
        try:
            return not (exp and parse_rfc3339(exp) < time.time())
        except ValueError:
            return False

    # -- authentication -------------------------------------------------------------
    async def user(self, request: web.Request) -> User | None:
        """The request's :class:`User` from its client certificate (the TLS layer has checked
        it against the cluster CA) or its ``Authorization: Bearer <id>.<secret>`` bootstrap
        token; None for an anonymous request. Raises :class:`lab.apimachinery.StatusError`
        401 for a bearer token that is unknown, expired or wrong, as the real API server
        refuses it."""
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
            raise am.unauthorized()
        return None

    # -- answers ----------------------------------------------------------------------
    @staticmethod
    def answer(
        obj: Any, status: int = 200, media: am.MediaType | None = None, headers: dict[str, str] | None = None
    ) -> web.Response:
        """``obj`` as JSON (or YAML when ``media`` says so) with ``media``'s Content-Type."""
        media = media or am.MediaType(am.JSON)
        if media.mime == am.YAML:
            body = yaml.safe_dump(obj, sort_keys=False).encode()
        else:
            body = json.dumps(obj, separators=(",", ":")).encode()
        return web.Response(body=body, status=status, headers={"Content-Type": media.content_type(), **(headers or {})})

    def error(self, err: am.StatusError) -> web.Response:
        """The ``Status`` of ``err``, as JSON."""
        return self.answer(err.status(), err.code)

    @web.middleware
    async def statuses(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every failure becomes a ``Status``: :class:`lab.apimachinery.StatusError` as it
        is, an etcd failure after the retries and any other exception as a 500
        ``InternalError`` (``Internal error occurred: ...``; the traceback goes to the log, not
        to the client), aiohttp's own HTTP errors (a body over 3 MiB: 413) with their code."""
        try:
            return await handler(request)
        except am.StatusError as err:
            return self.error(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reason = {413: "RequestEntityTooLarge", 405: "MethodNotAllowed", 404: "NotFound"}.get(
                exc.status, "BadRequest"
            )
            return self.error(am.StatusError(exc.status, reason, exc.reason))
        except EtcdError as err:
            log.info("%s %s: etcd: %s", request.method, request.path, err)
            return self.error(
                am.StatusError(
                    500, "InternalError", f"Internal error occurred: {err}", {"causes": [{"message": str(err)}]}
                )
            )
        except Exception as err:
            log.exception("%s %s failed", request.method, request.path)
            return self.error(
                am.StatusError(500, "InternalError", f"Internal error occurred: {type(err).__name__}: {err}")
            )

    # -- discovery --------------------------------------------------------------------
    async def discovery(self, request: web.Request, t: Target) -> web.StreamResponse:
        """``/api``, ``/apis``, ``/apis/<group>``, ``/api/v1``, ``/apis/<group>/v1`` for any
        authenticated user (the ``system:discovery`` ClusterRole); aggregated when the Accept
        header asks for ``apidiscovery.k8s.io`` (with an ETag), legacy otherwise."""
        if request.method != "GET":
            raise am.method_not_allowed()
        if await self.user(request) is None:
            raise am.StatusError(
                403, "Forbidden", f'forbidden: User "system:anonymous" cannot get path "{request.path}"', {}
            )
        if t.discovery in ("api", "apis"):
            media = am.negotiate(request.headers.get("Accept", ""), apiresources.discovery_kinds(self.minor))
            if media.convert is not None:
                doc = apiresources.aggregated(t.discovery, media.convert[1])
                tag = apiresources.etag(doc)
                headers = {"ETag": tag, "Vary": "Accept", "Cache-Control": "public"}
                if request.headers.get("If-None-Match") == tag:
                    return web.Response(status=304, headers=headers)
                return self.answer(doc, 200, media, headers)
            doc = (
                apiresources.api_versions(self.server_address)
                if t.discovery == "api"
                else apiresources.api_group_list()
            )
            return self.answer(doc, 200, media)
        media = am.negotiate(request.headers.get("Accept", ""), set())
        if t.discovery == "group":
            return self.answer(apiresources.api_group(t.group), 200, media)
        return self.answer(apiresources.api_resource_list(t.group, t.version), 200, media)

    # -- resources --------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Every ``/api`` and ``/apis`` path (and any other path: 404): resolve it against
        the catalog, authorise the verb, and serve it. The health and version paths take GET
        only: another method there is a 405."""
        if request.path.split("/")[1] in ("healthz", "livez", "readyz", "version"):
            raise am.method_not_allowed()
        t = apiresources.resolve(request.path)
        if t.discovery:
            return await self.discovery(request, t)
        r = t.resource
        assert r is not None
        verb = self._verb(request, t)
        user = await self.user(request)
        if verb != "create" and not allowed(user, verb, r, t.namespace, t.name, t.subresource):
            raise forbidden(user, verb, r, t.namespace, t.name, t.subresource)
        if verb == "list":
            return await self.list_objects(request, t)
        if verb == "get":
            return await self.get_one(request, t)
        if verb == "create":
            return await self.create_one(request, t, user)
        if verb == "update":
            return await self.update_one(request, t)
        if verb == "patch":
            return await self.patch_one(request, t)
        return await self.delete_one(request, t)

    def _verb(self, request: web.Request, t: Target) -> str:
        """The request's verb (``requestinfo.go``), checked against what this server serves:
        405 ``MethodNotAllowed`` for a method the path does not take or a verb not served
        (watch, deletecollection), 404 for a namespaced object named without its namespace."""
        r, m = t.resource, request.method
        assert r is not None
        if r.namespaced and not t.namespace and t.name:
            raise am.path_not_found()
        if m == "GET":
            watch = request.query.get("watch", "").lower() in ("1", "true")
            verb = "get" if t.name else ("watch" if watch else "list")
        elif m == "POST" and not t.name:
            verb = "create"
        elif m == "PUT" and t.name:
            verb = "update"
        elif m == "PATCH" and t.name:
            verb = "patch"
        elif m == "DELETE":
            verb = "delete" if t.name else "deletecollection"
        else:
            raise am.method_not_allowed()
        if r.namespaced and not t.namespace and verb != "list":
            raise am.method_not_allowed()
        served = apiresources.STATUS_VERBS if t.subresource else r.verbs
        if verb not in served:
            raise am.method_not_supported(r.group, r.name, verb)
        return verb

    def _output(self, request: web.Request, allows: set[tuple[str, str, str]]) -> tuple[am.MediaType, str]:
        """The negotiated answer type and ``includeObject`` (``Metadata`` by default).
        Raises 400 for another ``includeObject``, 406 when nothing fits."""
        media = am.negotiate(request.headers.get("Accept", ""), allows)
        include = request.query.get("includeObject", "") or "Metadata"
        if include not in ("Metadata", "Object", "None"):
            raise am.bad_request(f'unrecognized includeObject value: "{include}"')
        return media, include

    async def list_objects(self, request: web.Request, t: Target) -> web.StreamResponse:
        """A list, filtered by the selectors, paged by ``limit``/``continue``; as a
        ``<Kind>List``, a ``Table`` or a ``PartialObjectMetadataList``."""
        r = t.resource
        assert r is not None
        opts = am.list_options(dict(request.query))
        am.check_field_labels(opts.fields, r.field_labels)
        media, include = self._output(request, TABLE_KINDS | PARTIAL)
        if media.convert and media.convert[2] == "PartialObjectMetadata":
            raise am.not_acceptable(["you requested PartialObjectMetadata, but the requested object is a list"])
        items, revision = [], 0
        if r.prefix is not None:
            prefix = r.collection(t.namespace)
            rows, revision = await self._range(prefix)
            for key, raw, rev in rows:
                rel = key[len(prefix) :]
                if opts.continue_from and rel < opts.continue_from:
                    continue
                obj = self._decode(raw, rev)
                if self._expired(obj) or not am.fields_match(obj, opts.fields) or not am.labels_match(obj, opts.labels):
                    continue
                items.append((rel, obj))
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if opts.limit and len(items) > opts.limit:
            meta["continue"] = am.encode_continue(revision, items[opts.limit - 1][0])
            if not opts.fields and not opts.labels:
                meta["remainingItemCount"] = len(items) - opts.limit
            items = items[: opts.limit]
        objs = [o for _, o in items]
        if media.convert and media.convert[2] == "Table":
            return self.answer(apitables.table(r.kind, objs, meta, time.time(), media.convert[1], include), 200, media)
        if media.convert:
            ver = media.convert[1]
            partial = [apitables.partial_metadata(o, ver) for o in objs]
            doc = {
                "kind": "PartialObjectMetadataList",
                "apiVersion": f"meta.k8s.io/{ver}",
                "metadata": meta,
                "items": partial,
            }
            return self.answer(doc, 200, media)
        doc = {"kind": f"{r.kind}List", "apiVersion": r.group_version, "metadata": meta, "items": objs}
        return self.answer(doc, 200, media)

    async def _load(self, t: Target) -> dict[str, Any]:
        r = t.resource
        assert r is not None and r.prefix is not None
        obj = await self.load(r.key(t.namespace, t.name))
        if obj is None:
            raise am.not_found(r.group, r.name, t.name)
        return obj

    async def get_one(self, request: web.Request, t: Target) -> web.StreamResponse:
        """One object (404 when absent), as itself, a one-row ``Table`` or its
        ``PartialObjectMetadata``; ``cluster-info`` signed per live bootstrap token."""
        r = t.resource
        assert r is not None
        media, include = self._output(request, TABLE_KINDS | PARTIAL)
        if media.convert and media.convert[2] == "PartialObjectMetadataList":
            raise am.not_acceptable(["you requested PartialObjectMetadataList, but the requested object is not a list"])
        obj = await self._load(t)
        if r.name == "configmaps" and t.namespace == "kube-public" and t.name == "cluster-info":
            obj = await self._signed_cluster_info(obj)
        if media.convert and media.convert[2] == "Table":
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            return self.answer(apitables.table(r.kind, [obj], meta, time.time(), media.convert[1], include), 200, media)
        if media.convert:
            return self.answer(apitables.partial_metadata(obj, media.convert[1]), 200, media)
        return self.answer(obj, 200, media)

    async def _body(self, request: web.Request, r: Resource) -> dict[str, Any]:
        """The request body as an object: JSON, YAML, or protobuf for the kinds
        :mod:`lab.apiproto` reads. Raises 415 for another Content-Type, 400 for a body that
        does not decode into an object."""
        # No Content-Type is JSON, the first serializer (NegotiateInputSerializerForMediaType):
        # the official Python client (37.x) sends JSON bodies without one.
        ctype = request.content_type if request.headers.get("Content-Type") else am.JSON
        raw = await request.read()
        try:
            if ctype == am.PROTOBUF:
                body: Any = apiproto.decode_object(raw)
            elif ctype == am.YAML:
                body = yaml.safe_load(raw)
            elif ctype == am.JSON:
                body = json.loads(raw)
            else:
                raise am.unsupported_media_type(BODY_TYPES)
        except apiproto.ProtoError as err:
            if "reads protobuf only" in str(err):
                raise am.unsupported_media_type(
                    [am.JSON, am.YAML, f"{am.PROTOBUF} ({', '.join(sorted(k for _, k in apiproto.KINDS))})"]
                ) from None
            raise am.bad_request(f'{r.kind} in version "{r.version}" cannot be handled as a {r.kind}: {err}') from None
        except (ValueError, yaml.YAMLError) as err:
            raise am.bad_request(f"couldn't get version/kind; json parse error: {err}") from None
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise am.bad_request(
                f'{r.kind} in version "{r.version}" cannot be handled as a {r.kind}: the object is not a {r.kind}'
            )
        return body

    def _check_body(self, body: dict[str, Any], t: Target) -> dict[str, Any]:
        """Type and namespace checks of a create or update body (``handlers/create.go``):
        400 when ``apiVersion`` or ``kind`` name another type or the namespace differs from the
        request's; fills both in, and the namespace."""
        r = t.resource
        assert r is not None
        api_version, kind = body.get("apiVersion"), body.get("kind")
        if api_version and api_version != r.group_version:
            raise am.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({r.group_version})"
            )
        if kind and kind != r.kind:
            raise am.bad_request(f"the kind in the data ({kind}) does not match the expected kind ({r.kind})")
        body.update(apiVersion=r.group_version, kind=r.kind)
        meta = body.setdefault("metadata", {})
        if meta.get("namespace") and meta["namespace"] != t.namespace:
            raise am.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if r.namespaced:
            meta["namespace"] = t.namespace
        return body

    @staticmethod
    def _check_options(query: Any, kind: str) -> bool:
        """``fieldValidation`` (Ignore, Warn, Strict), ``fieldManager`` (at most 128
        characters) and ``dryRun`` (All) of a create, update or patch: 422 on another value
        (``ValidateCreateOptions``). Returns whether it is a dry run."""
        errors = []
        fv = query.get("fieldValidation", "")
        if fv not in ("", "Ignore", "Warn", "Strict"):
            errors.append(
                am.FieldError("Unsupported", "fieldValidation", fv, 'supported values: "Ignore", "Strict", "Warn"')
            )
        if len(query.get("fieldManager", "")) > 128:
            errors.append(
                am.FieldError("Invalid", "fieldManager", query["fieldManager"], "must be no more than 128 characters")
            )
        dry = query.getall("dryRun", []) if hasattr(query, "getall") else []
        if any(d != "All" for d in dry):
            errors.append(am.FieldError("Unsupported", "dryRun", dry, 'supported values: "All"'))
        if errors:
            raise am.invalid("meta.k8s.io", kind, "", errors)
        return bool(dry)

    def _validate(self, r: Resource, obj: dict[str, Any]) -> None:
        """The kind's validation as far as the lab meets it (``pkg/apis/core/validation``):
        the name (a DNS label for Namespaces, a subdomain otherwise), ConfigMap and Secret
        keys, a Secret's base64 data, a Pod's containers. Raises 422 ``Invalid`` or 400."""
        meta = obj["metadata"]
        errors = am.name_errors(meta, label=r.kind == "Namespace")
        if r.kind in ("ConfigMap", "Secret"):
            for key in list(obj.get("data") or {}) + list(obj.get("binaryData") or {}):
                field = (
                    "binaryData"
                    if key in (obj.get("binaryData") or {}) and key not in (obj.get("data") or {})
                    else "data"
                )
                errors += [am.FieldError("Invalid", f"{field}[{key}]", key, msg) for msg in am.config_key_errors(key)]
        if r.kind == "Secret":
            for key, value in (obj.get("data") or {}).items():
                try:
                    base64.b64decode(str(value), validate=True)
                except (ValueError, binascii.Error) as err:
                    raise am.bad_request(
                        f'Secret in version "v1" cannot be handled as a Secret: '
                        f"illegal base64 data for key {key!r}: {err}"
                    ) from None
        if r.kind == "Pod" and not (obj.get("spec") or {}).get("containers"):
            errors.append(am.FieldError("Required", "spec.containers", detail=""))
        if errors:
            raise am.invalid(r.group, r.kind, meta.get("name", ""), errors)

    @staticmethod
    def _defaults(r: Resource, obj: dict[str, Any]) -> None:
        """Defaults the real registry sets on create: a Secret's ``type`` (``Opaque``) and its
        ``stringData`` folded into ``data``; a Namespace's ``kubernetes`` finalizer, ``Active``
        phase and ``kubernetes.io/metadata.name`` label; a Pod's ``Pending`` phase."""
        meta = obj["metadata"]
        if r.kind == "Secret":
            obj.setdefault("type", "Opaque")
            for k, v in (obj.pop("stringData", None) or {}).items():
                obj.setdefault("data", {})[k] = _b64(str(v))
        elif r.kind == "Namespace":
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {})["phase"] = obj.get("status", {}).get("phase") or "Active"
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        elif r.kind == "Pod":
            obj.setdefault("status", {}).setdefault("phase", "Pending")

    async def _admit_namespace(self, r: Resource, ns: str) -> None:
        """NamespaceLifecycle (``plugin/pkg/admission/namespace/lifecycle``) for a create in
        ``ns``: 404 when it does not exist (the system namespaces always do), 403 while it is
        terminating."""
        if not r.namespaced:
            return
        space = await self.load(f"/registry/namespaces/{ns}")
        if space is None:
            if ns in SYSTEM_NAMESPACES:
                return
            raise am.not_found("", "namespaces", ns)
        if (space.get("status") or {}).get("phase") == "Terminating":
            raise am.forbidden(
                r.group, r.name, "", f"unable to create new content in namespace {ns} because it is being terminated"
            )

    async def create_one(self, request: web.Request, t: Target, user: User | None) -> web.StreamResponse:
        """POST to a collection: decode, check, admit, default and store the object (an
        etcd create: 409 ``AlreadyExists`` when the name is taken); 201 with it. A
        ``generateName`` gets 5 random characters as the real name generator does."""
        r = t.resource
        assert r is not None
        body = self._check_body(await self._body(request, r), t)
        meta = body["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
            )
        if not allowed(user, "create", r, t.namespace, str(meta.get("name", "")), ""):
            raise forbidden(user, "create", r, t.namespace, "", "")
        dry = self._check_options(request.query, "CreateOptions")
        if r.name == "certificatesigningrequests":
            return self._sign_csr(body)
        self._validate(r, body)
        await self._admit_namespace(r, t.namespace)
        if r.name == "nodes" and user is not None and not user.admin:
            why = node_label_refusal(str(meta.get("name", "")), dict(meta.get("labels") or {}))
            if why is not None:
                raise am.forbidden(r.group, r.name, str(meta.get("name", "")), why)
        self._defaults(r, body)
        meta.pop("resourceVersion", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=rfc3339(time.time()))
        if r.name == "pods" and not dry:
            await self.workloads.admit_pod(body)
        if dry:
            return self.answer(body, 201)
        assert r.prefix is not None
        revision = await self.create(r.key(t.namespace, meta["name"]), body)
        if revision is None:
            raise am.already_exists(r.group, r.name, meta["name"])
        meta["resourceVersion"] = str(revision)
        return self.answer(body, 201)

    async def update_one(self, request: web.Request, t: Target) -> web.StreamResponse:
        """PUT of an object: replace it (kept: ``uid``, ``creationTimestamp``); with a
        ``resourceVersion`` only if it is still current (409 ``Conflict``); of ``/status``:
        only its ``status`` (404 when the object is missing). A missing object is created
        (201): see the module docstring. As the real storage's ``GuaranteedUpdate``, every
        write is a transaction on what was read (the key's ``mod_revision``, or its absence),
        tried again from a fresh read when the key changed meanwhile (3 tries, then 409): a
        kubelet's status update racing a ``kubectl delete node`` gets 404, never brings the
        Node back."""
        r = t.resource
        assert r is not None and r.prefix is not None
        body = self._check_body(await self._body(request, r), t)
        dry = self._check_options(request.query, "UpdateOptions")
        meta = body["metadata"]
        if meta.get("name") and meta["name"] != t.name:
            raise am.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({t.name})"
            )
        meta["name"] = t.name
        key = r.key(t.namespace, t.name)
        want = meta.get("resourceVersion")
        for _ in range(3):
            current = await self.load(key)
            if current is not None and want and want != current["metadata"].get("resourceVersion"):
                break
            if t.subresource:
                if current is None:
                    raise am.not_found(r.group, r.name, t.name)
                new = {**current, "status": body.get("status") or {}}
            else:
                new = json.loads(json.dumps(body))  # each try starts from the request's object
                self._validate(r, new)
                if current is None:
                    await self._admit_namespace(r, t.namespace)
                    self._defaults(r, new)
                    new["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=rfc3339(time.time()))
                else:
                    for k in ("uid", "creationTimestamp"):
                        if current["metadata"].get(k):
                            new["metadata"][k] = current["metadata"][k]
            if dry:
                return self.answer(new, 200 if current is not None else 201)
            if current is None:
                revision = await self.create(key, new)
            else:
                revision = await self.update(key, new, int(current["metadata"]["resourceVersion"]))
            if revision is not None:
                new["metadata"]["resourceVersion"] = str(revision)
                return self.answer(new, 200 if current is not None else 201)
            if want:
                break
        raise am.conflict(
            r.group,
            r.name,
            t.name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )

    async def patch_one(self, request: web.Request, t: Target) -> web.StreamResponse:
        """PATCH of an object or its ``/status``: a JSON merge patch (a strategic merge
        patch is applied as one), or a JSON patch; ``name``, ``namespace``, ``uid`` and
        ``creationTimestamp`` are kept; written only if the object did not change meanwhile
        (tried 3 times). 404 when absent, 415 for another patch type (server-side apply), 422
        for an invalid result."""
        r = t.resource
        assert r is not None and r.prefix is not None
        ctype = request.content_type
        if ctype not in PATCH_TYPES:
            raise am.unsupported_media_type(PATCH_TYPES)
        try:
            patch = json.loads(await request.read())
        except ValueError as err:
            raise am.bad_request(f"error decoding patch: {err}") from None
        dry = self._check_options(request.query, "PatchOptions")
        key = r.key(t.namespace, t.name)
        for _ in range(3):
            current = await self._load(t)
            try:
                patched = json_patch(current, patch) if ctype == PATCH_TYPES[0] else json_merge_patch(current, patch)
            except ValueError as err:
                raise am.StatusError(
                    422, "Invalid", f"the server rejected our request due to an error in our request: {err}"
                ) from None
            if not isinstance(patched, dict):
                raise am.bad_request("the patch does not leave an object")
            if t.subresource:
                patched = {**current, "status": patched.get("status") or {}}
            meta = patched.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise am.bad_request("metadata must be an object")
            for k in ("name", "namespace", "uid", "creationTimestamp"):
                if k in current["metadata"]:
                    meta[k] = current["metadata"][k]
            patched.update(apiVersion=r.group_version, kind=r.kind)
            self._validate(r, patched)
            if dry:
                return self.answer(patched)
            revision = await self.update(key, patched, int(current["metadata"]["resourceVersion"]))
            if revision is not None:
                meta["resourceVersion"] = str(revision)
                return self.answer(patched)
        raise am.conflict(
            r.group,
            r.name,
            t.name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )

    async def delete_one(self, request: web.Request, t: Target) -> web.StreamResponse:
        """DELETE of an object: 404 when absent; a ``Status`` ``Success`` naming it, or for a
        Namespace (not ``default``, ``kube-system``, ``kube-public``: 403) the Namespace as it
        was marked ``Terminating`` once its contents and it are deleted."""
        r = t.resource
        assert r is not None and r.prefix is not None
        obj = await self._load(t)
        dry = self._check_options(request.query, "DeleteOptions")
        if r.name == "namespaces":
            if t.name in IMMORTAL_NAMESPACES:
                raise am.forbidden(r.group, r.name, t.name, "this namespace may not be deleted")
            obj.setdefault("status", {})["phase"] = "Terminating"
            obj["metadata"]["deletionTimestamp"] = rfc3339(time.time())
            if dry:
                return self.answer(obj)
            await self.store(r.key("", t.name), obj)
            for inner in apiresources.RESOURCES:
                if inner.namespaced and inner.prefix is not None:
                    for key, _ in await self.get_prefix(inner.collection(t.name)):
                        await self.delete(key)
            await self.delete(r.key("", t.name))
            return self.answer(obj)
        if not dry:
            await self.delete(r.key(t.namespace, t.name))
            if r.name == "pods":
                await self.workloads.removed(obj)
        details = {"name": t.name, "kind": r.name, "uid": obj["metadata"].get("uid", "")}
        if r.group:
            details["group"] = r.group
        return self.answer(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        )

    async def _signed_cluster_info(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Add ``jws-kubeconfig-<id>`` for every live bootstrap token (the bootstrap signer)."""
        payload = obj.get("data", {}).get("kubeconfig", "").encode()
        for _, raw in await self.get_prefix("/registry/secrets/kube-system/bootstrap-token-"):
            secret = json.loads(raw)
            try:
                data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
            except (ValueError, binascii.Error):
                continue
            tid = data.get("token-id", "")
            if tid and await self.token_valid(tid):
                obj.setdefault("data", {})[f"jws-kubeconfig-{tid}"] = jws_signature(
                    tid, data.get("token-secret", ""), payload
                )
        return obj

    # -- certificate signing (approver + signer of kube-controller-manager) ------------
    def _sign_csr(self, body: dict[str, Any]) -> web.StreamResponse:
        """``POST /apis/certificates.k8s.io/v1/certificatesigningrequests`` (bootstrap tokens,
        admins): a CSR whose CN starts with ``system:node:`` comes back at once with
        ``status.certificate`` (base64 PEM, 1 year, O ``system:nodes``) and an ``Approved``
        condition, as kube-controller-manager's approver and signer would do later (422 for
        other CNs or a request that is not a PEM CSR). The CSR is not stored."""
        try:
            csr = x509.load_pem_x509_csr(base64.b64decode((body.get("spec") or {})["request"]))
            cn = str(csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value)
        except (KeyError, IndexError, TypeError, ValueError, binascii.Error):
            raise am.invalid(
                "certificates.k8s.io", "CertificateSigningRequest", body["metadata"].get("name", ""),
                [am.FieldError("Invalid", "spec.request", "", "PEM block type must be CERTIFICATE REQUEST")],
            ) from None  # fmt: skip
        if not cn.startswith("system:node:"):
            raise am.invalid(
                "certificates.k8s.io", "CertificateSigningRequest", body["metadata"].get("name", ""),
                [am.FieldError("Invalid", "spec.request", cn, "only kubelet client certificates are signed here")],
            )  # fmt: skip
        cert, _ = pki.issue(self.ca, cn, orgs=("system:nodes",), client=True, public_key=csr.public_key())  # type: ignore[arg-type]
        body.setdefault("status", {})["certificate"] = base64.b64encode(cert).decode()
        body["status"]["conditions"] = [{"type": "Approved", "status": "True", "reason": "AutoApproved"}]
        return self.answer(body, 201)

    # -- health and version ----------------------------------------------------------------
    async def _health(self, request: web.Request, name: str, checks: tuple[str, ...]) -> web.StreamResponse:
        """``/healthz``, ``/livez``, ``/readyz`` and ``/<endpoint>/<check>`` as
        ``apiserver/pkg/server/healthz`` answers: ``ok`` (200); with ``?verbose`` one
        ``[+]<check> ok`` line per check and ``<name> check passed``; a failing check (etcd's
        read, one try, 3 s) gives 500 with ``[-]etcd failed: reason withheld`` and ``<name>
        check failed`` (the reason goes to the log). ``?exclude=<check>`` skips one."""
        only = request.match_info.get("check")
        if only is not None and only not in checks:
            raise am.path_not_found()
        run = [only] if only else [c for c in checks if c not in request.query.getall("exclude", [])]
        lines, failed = [], False
        for check in run:
            ok = True
            if check == "etcd":
                try:
                    await self.etcd.get("/registry/health")
                except EtcdError as err:
                    log.info("%s: etcd check failed: %s", name, err)
                    ok = False
            lines.append(f"[+]{check} ok" if ok else f"[-]{check} failed: reason withheld")
            failed |= not ok
        if only:
            return web.Response(status=500, text=lines[0] + "\n") if failed else web.Response(text="ok")
        if failed:
            return web.Response(status=500, text="\n".join(lines) + f"\n{name} check failed\n")
        if "verbose" in request.query:
            return web.Response(text="\n".join(lines) + f"\n{name} check passed\n")
        return web.Response(text="ok")

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        """``/healthz`` and ``/livez`` (checks ``ping``, ``log``: they do not read etcd)."""
        return await self._health(request, request.path.strip("/").split("/")[0], ("ping", "log"))

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        """``/readyz`` (checks ``ping``, ``log``, ``etcd``)."""
        return await self._health(request, "readyz", ("ping", "log", "etcd"))

    async def version_info(self, request: web.Request) -> web.StreamResponse:
        """``/version`` and ``/version/`` (anonymous; the official Python client's
        ``VersionApi.get_code`` asks the latter and needs every field of apimachinery's
        ``version.Info``): ``major``, ``minor`` and ``gitVersion`` from the configured version,
        ``platform`` ``emulated``, the build fields empty."""
        return self.answer(
            {"major": "1", "minor": str(self.minor), "gitVersion": self.version, "gitCommit": "", "gitTreeState": "",
             "buildDate": "", "goVersion": "", "compiler": "gc", "platform": "emulated"}
        )  # fmt: skip

    # -- the system namespaces controller ------------------------------------------------
    async def system_namespaces(self, period_s: float = 60.0, retry_s: float = 5.0) -> None:
        """Create the missing system namespaces (``systemnamespaces`` controller) every
        ``period_s`` seconds, every ``retry_s`` while etcd refuses, until cancelled."""
        r = apiresources.resource("", "namespaces")
        while True:
            try:
                for ns in SYSTEM_NAMESPACES:
                    if await self.load(r.key("", ns)) is None:
                        obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                        self._defaults(r, obj)
                        obj["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=rfc3339(time.time()))
                        if await self.create(r.key("", ns), obj) is not None:
                            log.info("created system namespace %s", ns)
                delay = period_s
            except EtcdError as err:
                log.info("system namespaces: etcd: %s", err)
                delay = retry_s
            await asyncio.sleep(delay)

    def app(self) -> web.Application:
        """The aiohttp application with every route above, the :class:`NodeLifecycle` and
        system namespaces controllers running beside them; closes the etcd client on cleanup."""
        app = web.Application(middlewares=[self.statuses], client_max_size=MAX_BODY)
        r = app.router
        for path in ("/healthz", "/livez"):
            r.add_get(path, self.healthz)
            r.add_get(path + "/{check}", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/readyz/{check}", self.readyz)
        r.add_get("/version", self.version_info)
        r.add_get("/version/", self.version_info)
        self.workloads.routes(r)  # before the catch-all below, which takes every other path
        if "k3s" in self.conf:
            K3sSupervisor(self, self.conf["k3s"]).routes(r)
        r.add_route("*", "/{tail:.*}", self.dispatch)

        lifecycle = NodeLifecycle(self, self.grace_s)
        tasks: list[asyncio.Task[None]] = []

        async def _start(_: web.Application) -> None:
            tasks.append(asyncio.create_task(lifecycle.run()))
            tasks.append(asyncio.create_task(self.system_namespaces()))
            tasks.append(asyncio.create_task(_schedule(self.workloads)))

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
    * ``POST /db/snapshot`` (``pkg/etcd/snapshot_handler.go``, k3s 1.29+), basic auth as
      ``server``, body ``{"operation": "save", "name": [N], "dir": D}``: this server takes a
      snapshot of its etcd member (``/v3/maintenance/snapshot``) into ``D`` (a node path;
      default ``server/db/snapshots``, made 0700; another must exist) as
      ``<N>-<this node>-<unix seconds>`` (0600) and answers ``{"created": [<file name>]}``;
      another operation gets 400 "invalid snapshot operation" (only save is emulated). The
      ``snapshot`` part of ``conf`` names ``node_name``, ``root`` (the node's root, for
      ``--rootfs``) and ``default_dir``;
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
        r.add_post("/db/snapshot", self.db_snapshot)
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
                    {
                        "ID": m.id,
                        "name": m.name,
                        "peerURLs": list(m.peer_urls),
                        "clientURLs": list(m.client_urls),
                        "isLearner": m.is_learner,
                    }
                    for m in members
                ]
            }
        )

    async def db_snapshot(self, request: web.Request) -> web.StreamResponse:
        """``k3s etcd-snapshot save``'s request (see the class)."""
        if self._basic_user(request, ("server",)) is None:
            return web.Response(status=401, text="Unauthorized")
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "request body is not JSON"}, status=400)
        if not isinstance(body, dict) or body.get("operation") != "save":
            return web.json_response({"error": "invalid snapshot operation"}, status=400)
        conf = self.conf.get("snapshot") or {}
        default = str(conf.get("default_dir", "/var/lib/rancher/k3s/server/db/snapshots"))
        where = str(body.get("dir") or default)
        names = body.get("name") or ["on-demand"]
        directory = Path(str(conf.get("root", "/"))) / where.lstrip("/")
        if where == default:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif not directory.is_dir():
            err = f"failed to get etcd-snapshot-dir: stat {where}: no such file or directory"
            return web.json_response({"error": err}, status=500)
        try:
            data = await self.api.etcd.snapshot()
        except EtcdError as err:
            return web.json_response({"error": f"failed to save snapshot: {err}"}, status=500)
        name = f"{names[0]}-{conf.get('node_name', 'node')}-{int(time.time())}"
        path = directory / name
        tmp = path.with_name(f".{name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        log.info("etcd snapshot %s saved (%d bytes)", path, len(data))
        return web.json_response({"created": [name]})

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
        backlog=listen_backlog(),
        access_log=None,
        print=None,
        handle_signals=True,
    )


def listen_backlog(path: Path = Path("/proc/sys/net/core/somaxconn")) -> int:
    """The listen backlog the real kube-apiserver gets: Go's ``net.Listen`` passes the
    kernel's ``net.core.somaxconn`` (``net/sock_linux.go`` ``maxListenerBacklog``; 4096 on
    kernels since 5.4), where aiohttp's default is 128: a full accept queue makes the kernel
    drop SYNs, which HAProxy's 200 ms ``timeout connect`` turns into a closed connection the
    real server would not cause. (At 3 + 100 no queue overflowed either way,
    docs/benchmarks.md section 12: fidelity, not the cause of the failed joins there.) 4096
    when the file cannot be read."""
    try:
        return max(128, int(path.read_text()))
    except (OSError, ValueError):
        return 4096


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
