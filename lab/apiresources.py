"""EMULATED: what the emulated API server (:mod:`lab.apiserver`) serves, and its discovery.

The catalog (:data:`RESOURCES`) lists the resources the lab's objects live in: Nodes,
Namespaces, ConfigMaps, Secrets, Pods (there are none: the emulated kubelet runs its static
pods without mirror Pods, so lists are empty), Events (for ``kubectl describe``), Leases
(``coordination.k8s.io``) and CertificateSigningRequests (``certificates.k8s.io``: create
only, as the kubelet's TLS bootstrap uses it). Each entry carries what the real registry
says about it: kind, scope, short names, categories, etcd key prefix (``/registry/minions/``
for Nodes, as kube-apiserver stores them), the field labels its list takes
(``pkg/apis/core/v1/conversion.go``), and the verbs *this* server implements (create,
delete, get, list, patch, update; no watch, no deletecollection), so ``kubectl
api-resources`` shows what works here.

Discovery, as kubectl 1.32 and 1.36 read it (client-go ``discovery/discovery_client.go``):

* aggregated discovery (``apidiscovery.k8s.io/v2`` ``APIGroupDiscoveryList``, GA in 1.30)
  on ``/api`` and ``/apis`` when the Accept header asks for it; ``v2beta1`` too when the
  served version is older than 1.33 (apiserver feature ``AggregatedDiscoveryRemoveBetaType``,
  on by default from 1.33). With an ``ETag`` (sha512 of the document, ``Vary: Accept``) and
  304 on ``If-None-Match`` (``pkg/endpoints/discovery/aggregated/etag.go``);
* the legacy documents otherwise: ``APIVersions`` on ``/api``, ``APIGroupList`` on
  ``/apis``, ``APIGroup`` on ``/apis/<group>``, ``APIResourceList`` on ``/api/v1`` and
  ``/apis/<group>/<version>`` (subresources as ``nodes/status``).

:func:`resolve` maps a request path onto the catalog as the API server's request-info
resolver does (``apiserver/pkg/endpoints/request/requestinfo.go``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from lab.apimachinery import path_not_found

VERBS = ("create", "delete", "get", "list", "patch", "update")
STATUS_VERBS = ("get", "patch", "update")
POD_FIELDS = (
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
)
EVENT_FIELDS = (
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)


@dataclass(frozen=True)
class Resource:
    """One served resource. ``group`` is ``""`` for core; ``prefix`` the etcd key prefix
    (``<prefix><namespace>/<name>`` or ``<prefix><name>``; None: not stored);
    ``field_labels`` the field selectors its lists take (None: only ``metadata.name`` and
    ``metadata.namespace``, the default conversion); ``subresources`` take
    :data:`STATUS_VERBS`."""

    group: str
    version: str
    name: str
    kind: str
    namespaced: bool
    prefix: str | None
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = VERBS
    subresources: tuple[str, ...] = ()
    field_labels: tuple[str, ...] | None = None

    @property
    def singular(self) -> str:
        """``singularName``: the kind in lower case."""
        return self.kind.lower()

    @property
    def group_version(self) -> str:
        """``v1`` or ``<group>/<version>``: the objects' ``apiVersion``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def key(self, namespace: str, name: str) -> str:
        """The etcd key of object ``name`` (in ``namespace`` when namespaced)."""
        assert self.prefix is not None
        return f"{self.prefix}{namespace}/{name}" if self.namespaced else f"{self.prefix}{name}"

    def collection(self, namespace: str) -> str:
        """The etcd prefix of a list: one namespace, or all of them when ``namespace`` is empty."""
        assert self.prefix is not None
        return f"{self.prefix}{namespace}/" if self.namespaced and namespace else self.prefix


RESOURCES = (
    Resource("", "v1", "configmaps", "ConfigMap", True, "/registry/configmaps/", ("cm",)),
    Resource("", "v1", "events", "Event", True, "/registry/events/", ("ev",), field_labels=EVENT_FIELDS),
    Resource(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        "/registry/namespaces/",
        ("ns",),
        field_labels=("metadata.name", "status.phase"),
    ),
    Resource(
        "",
        "v1",
        "nodes",
        "Node",
        False,
        "/registry/minions/",
        ("no",),
        subresources=("status",),
        field_labels=("metadata.name", "spec.unschedulable"),
    ),
    Resource(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        "/registry/pods/",
        ("po",),
        ("all",),
        subresources=("status",),
        field_labels=POD_FIELDS,
    ),
    Resource(
        "",
        "v1",
        "secrets",
        "Secret",
        True,
        "/registry/secrets/",
        field_labels=("metadata.name", "metadata.namespace", "type"),
    ),
    Resource(
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        False,
        None,
        ("csr",),
        verbs=("create",),
    ),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True, "/registry/leases/"),
)
BY_PATH = {(r.group, r.version, r.name): r for r in RESOURCES}
GROUPS = ("certificates.k8s.io", "coordination.k8s.io")  # /apis order: the real server's priority order


def resource(group: str, name: str) -> Resource:
    """The catalog entry for ``name`` in ``group`` (its only version). Raises ``KeyError``."""
    return next(r for r in RESOURCES if r.group == group and r.name == name)


# -- legacy discovery (apimachinery meta/v1 APIVersions, APIGroupList, APIResourceList) ------
def api_versions(server_address: str | None) -> dict[str, Any]:
    """``GET /api``: ``APIVersions`` (``serverAddressByClientCIDRs`` when the server knows
    its advertise ``host:port``)."""
    doc: dict[str, Any] = {"kind": "APIVersions", "versions": ["v1"]}
    if server_address:
        doc["serverAddressByClientCIDRs"] = [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    return doc


def _group_doc(group: str) -> dict[str, Any]:
    gv = {"groupVersion": f"{group}/v1", "version": "v1"}
    return {"name": group, "versions": [gv], "preferredVersion": gv}


def api_group_list() -> dict[str, Any]:
    """``GET /apis``: ``APIGroupList`` of the named groups."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group_doc(g) for g in GROUPS]}


def api_group(group: str) -> dict[str, Any]:
    """``GET /apis/<group>``: ``APIGroup``."""
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_doc(group)}


def api_resource_list(group: str, version: str) -> dict[str, Any]:
    """``GET /api/v1`` or ``/apis/<group>/<version>``: ``APIResourceList``, resources and their
    subresources (``nodes/status``) sorted by name."""
    out: list[dict[str, Any]] = []
    for r in sorted((r for r in RESOURCES if (r.group, r.version) == (group, version)), key=lambda r: r.name):
        entry: dict[str, Any] = {
            "name": r.name,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        out.append(entry)
        for sub in r.subresources:
            out.append(
                {"name": f"{r.name}/{sub}", "singularName": "", "namespaced": r.namespaced, "kind": r.kind,
                 "verbs": list(STATUS_VERBS)}
            )  # fmt: skip
    doc: dict[str, Any] = {"kind": "APIResourceList", "groupVersion": f"{group}/{version}" if group else version}
    if group:
        doc["apiVersion"] = "v1"
    doc["resources"] = out
    return doc


# -- aggregated discovery (k8s.io/api apidiscovery/v2 types.go) ------------------------------
def _discovery_resource(r: Resource) -> dict[str, Any]:
    kind = {"group": r.group, "version": r.version, "kind": r.kind}
    entry: dict[str, Any] = {
        "resource": r.name,
        "responseKind": kind,
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    if r.subresources:
        entry["subresources"] = [
            {"subresource": s, "responseKind": kind, "verbs": list(STATUS_VERBS)} for s in r.subresources
        ]
    return entry


def aggregated(root: str, version: str = "v2") -> dict[str, Any]:
    """``APIGroupDiscoveryList`` of ``apidiscovery.k8s.io/<version>`` for ``root`` (``api``:
    the core group, whose item has no name; ``apis``: the named groups), each version
    ``freshness: Current``."""
    groups = [""] if root == "api" else list(GROUPS)
    items = []
    for g in groups:
        resources = sorted((r for r in RESOURCES if r.group == g), key=lambda r: r.name)
        meta: dict[str, Any] = {"creationTimestamp": None}
        if g:
            meta = {"name": g, **meta}
        version_doc = {
            "version": "v1",
            "resources": [_discovery_resource(r) for r in resources],
            "freshness": "Current",
        }
        items.append({"metadata": meta, "versions": [version_doc]})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }


def etag(doc: dict[str, Any]) -> str:
    """The discovery ETag: upper-case hex sha512 of the document's JSON, quoted
    (``calculateETag`` and ``ServeHTTPWithETag``)."""
    return '"' + hashlib.sha512(json.dumps(doc, separators=(",", ":")).encode()).hexdigest().upper() + '"'


def discovery_kinds(minor: int) -> set[tuple[str, str, str]]:
    """The aggregated discovery conversions a server of minor version ``minor`` serves:
    ``v2``, and ``v2beta1`` before 1.33 (``AggregatedDiscoveryRemoveBetaType``)."""
    kinds = {("apidiscovery.k8s.io", "v2", "APIGroupDiscoveryList")}
    if minor < 33:
        kinds.add(("apidiscovery.k8s.io", "v2beta1", "APIGroupDiscoveryList"))
    return kinds


# -- request paths (requestinfo.go) ---------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """What a path names: a discovery document (``discovery``: ``api``, ``apis``, ``group``,
    ``resources``; with ``group``/``version``) or a ``resource`` with ``namespace``, ``name``
    and ``subresource`` (``""`` when absent)."""

    discovery: str = ""
    group: str = ""
    version: str = ""
    resource: Resource | None = None
    namespace: str = ""
    name: str = ""
    subresource: str = ""


def resolve(path: str) -> Target:
    """Map ``path`` (``/api/v1/namespaces/default/configmaps/x`` ...) onto the catalog.
    Raises :class:`lab.apimachinery.StatusError` 404 (``the server could not find the
    requested resource``) for a group, version, resource or subresource not served, or a path
    of another shape."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        if len(parts) == 1:
            return Target("api")
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"]:
        if len(parts) == 1:
            return Target("apis")
        if parts[1] not in GROUPS:
            raise path_not_found()
        if len(parts) == 2:
            return Target("group", parts[1])
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise path_not_found()
    if version != "v1":
        raise path_not_found()
    if not rest:
        return Target("resources", group, version)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in BY_PATH:
        namespace, rest = rest[1], rest[2:]
    r = BY_PATH.get((group, version, rest[0]))
    if r is None or len(rest) > 3 or (namespace and not r.namespaced):
        raise path_not_found()
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if sub and sub not in r.subresources:
        raise path_not_found()
    return Target(group=group, version=version, resource=r, namespace=namespace, name=name, subresource=sub)
