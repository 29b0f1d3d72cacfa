"""EMULATED: the server-side tables of kube-apiserver (``Accept: application/json;as=Table;
v=v1;g=meta.k8s.io``, what ``kubectl get`` asks for): the column definitions and row cells
of each kind the emulated API server (:mod:`lab.apiserver`) stores, as
``pkg/printers/internalversion/printers.go`` (kubernetes/kubernetes, 1.32 to 1.36) defines
them, generated "wide" as the server always does (``pkg/printers/storage``
``TableConvertor``: ``GenerateOptions{Wide: true}``; kubectl hides the priority-1 columns
unless ``-o wide``); any other kind gets the default convertor's Name and Created At
(``apiserver/pkg/registry/rest/table.go``). Pure functions of the stored objects and a clock.

Left out: a Pod's init containers and sidecars in its Ready/Status/Restarts cells (the lab
has no Pods; a Pod is judged by its containers only), column descriptions (kubectl does not
print them; they are short texts here, the real ones are the API's field docs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lab.apimachinery import since

Obj = dict[str, Any]
Column = dict[str, Any]


def col(name: str, typ: str = "string", priority: int = 0, fmt: str = "", description: str = "") -> Column:
    """A ``TableColumnDefinition``."""
    c: Column = {"name": name, "type": typ, "format": fmt, "description": description or name, "priority": priority}
    return c


NAME = col("Name", fmt="name", description="Name must be unique within a namespace.")
AGE = col(
    "Age", description="CreationTimestamp is a timestamp representing the server time when this object was created."
)


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _age(obj: Obj, now: float) -> str:
    return since(_meta(obj).get("creationTimestamp"), now)


# -- Node (printNode) -----------------------------------------------------------------------
NODE_COLUMNS = [
    NAME,
    col("Status", description="The status of the node"),
    col("Roles", description="The roles of the node"),
    AGE,
    col("Version", description="Kubelet Version reported by the node."),
    col("Internal-IP", priority=1, description="List of addresses reachable to the node."),
    col("External-IP", priority=1, description="List of addresses reachable to the node."),
    col("OS-Image", priority=1, description="OS Image reported by the node from /etc/os-release."),
    col("Kernel-Version", priority=1, description="Kernel Version reported by the node."),
    col("Container-Runtime", priority=1, description="ContainerRuntime Version reported by the node."),
]


def node_roles(node: Obj) -> list[str]:
    """``findNodeRoles``: ``node-role.kubernetes.io/<role>`` label keys and the value of a
    ``kubernetes.io/role`` label, sorted."""
    roles = set()
    for k, v in (_meta(node).get("labels") or {}).items():
        if k.startswith("node-role.kubernetes.io/") and k[len("node-role.kubernetes.io/") :]:
            roles.add(k[len("node-role.kubernetes.io/") :])
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    return sorted(roles)


def _address(node: Obj, kind: str) -> str:
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == kind:
            return str(a.get("address", ""))
    return "<none>"


def node_row(node: Obj, now: float) -> list[Any]:
    """``printNode``: Ready or NotReady from the Ready condition (``Unknown`` without one),
    ``,SchedulingDisabled`` when unschedulable, the roles (``<none>``), age, kubelet version,
    then the wide cells (first InternalIP and ExternalIP, OS image, kernel, runtime;
    ``<unknown>`` when empty)."""
    status = node.get("status") or {}
    states = []
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            states = ["Ready" if c.get("status") == "True" else "NotReady"]
    if not states:
        states = ["Unknown"]
    if (node.get("spec") or {}).get("unschedulable"):
        states.append("SchedulingDisabled")
    info = status.get("nodeInfo") or {}
    return [
        _meta(node).get("name", ""),
        ",".join(states),
        ",".join(node_roles(node)) or "<none>",
        _age(node, now),
        info.get("kubeletVersion", ""),
        _address(node, "InternalIP"),
        _address(node, "ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


# -- Pod (printPod) -------------------------------------------------------------------------
POD_COLUMNS = [
    NAME,
    col("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
    col("Status", description="The aggregate status of the containers in this pod."),
    col("Restarts", description="The number of times the containers in this pod have been restarted."),
    AGE,
    col("IP", priority=1, description="podIP address allocated to the pod."),
    col("Node", priority=1, description="NodeName is a request to schedule this pod onto a specific node."),
    col("Nominated Node", priority=1, description="nominatedNodeName is set only when this pod preempts other pods."),
    col("Readiness Gates", priority=1, description="If specified, all readiness gates will be evaluated."),
]


def pod_row(pod: Obj, now: float) -> list[Any]:
    """``printPod`` without init containers: ready/total containers, the phase or the last
    container's waiting/terminated reason (``Terminating`` once deleted), the restarts, age,
    then IP, node, nominated node and readiness gates (``<none>`` when unset)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or ""
    ready = restarts = 0
    for cs in reversed(status.get("containerStatuses") or []):
        restarts += int(cs.get("restartCount") or 0)
        state = cs.get("state") or {}
        waiting, term = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif term and term.get("reason"):
            reason = term["reason"]
        elif term:
            reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode', 0)}"
        elif cs.get("ready") and state.get("running") is not None:
            ready += 1
    if _meta(pod).get("deletionTimestamp") and status.get("phase") not in ("Succeeded", "Failed"):
        reason = "Terminating"
    ips = status.get("podIPs") or []
    gates = spec.get("readinessGates") or []
    gates_cell = "<none>"
    if gates:
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        gates_cell = f"{sum(1 for g in gates if conds.get(g.get('conditionType')) == 'True')}/{len(gates)}"
    return [
        _meta(pod).get("name", ""),
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        str(restarts),
        _age(pod, now),
        (ips[0].get("ip") if ips else "") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_cell,
    ]


# -- ConfigMap, Secret, Namespace, Lease, Event ----------------------------------------------
CONFIGMAP_COLUMNS = [NAME, col("Data", description="Data contains the configuration data."), AGE]


def configmap_row(cm: Obj, now: float) -> list[Any]:
    """``printConfigMap``: name, number of data and binaryData keys, age."""
    return [_meta(cm).get("name", ""), len(cm.get("data") or {}) + len(cm.get("binaryData") or {}), _age(cm, now)]


SECRET_COLUMNS = [
    NAME,
    col("Type", description="Used to facilitate programmatic handling of secret data."),
    col("Data", description="Data contains the secret data."),
    AGE,
]


def secret_row(s: Obj, now: float) -> list[Any]:
    """``printSecret``: name, type, number of data keys, age."""
    return [_meta(s).get("name", ""), s.get("type", ""), len(s.get("data") or {}), _age(s, now)]


NAMESPACE_COLUMNS = [NAME, col("Status", description="The status of the namespace"), AGE]


def namespace_row(ns: Obj, now: float) -> list[Any]:
    """``printNamespace``: name, phase, age."""
    return [_meta(ns).get("name", ""), (ns.get("status") or {}).get("phase", ""), _age(ns, now)]


LEASE_COLUMNS = [NAME, col("Holder", description="holderIdentity contains the identity of the holder."), AGE]


def lease_row(lease: Obj, now: float) -> list[Any]:
    """``printLease``: name, holder identity, age."""
    return [_meta(lease).get("name", ""), (lease.get("spec") or {}).get("holderIdentity") or "", _age(lease, now)]


EVENT_COLUMNS = [
    col("Last Seen", description="The time at which the most recent occurrence of this event was recorded."),
    col("Type", description="Type of this event (Normal, Warning)."),
    col("Reason", description="This should be a short, machine understandable string."),
    col("Object", description="The object that this event is about."),
    col("Subobject", priority=1, description="The field of the object this event is about."),
    col("Source", priority=1, description="The component reporting this event."),
    col("Message", description="A human-readable description of the status of this operation."),
    col("First Seen", priority=1, description="The time at which the event was first recorded."),
    col("Count", priority=1, description="The number of times this event has occurred."),
    col("Name", priority=1, fmt="name", description="Name must be unique within a namespace."),
]


def event_row(ev: Obj, now: float) -> list[Any]:
    """``printEvent`` (wide): last seen (``lastTimestamp``, else the first), type, reason,
    ``kind/name`` of the involved object, its field path, source (component, host; or the
    reporting controller and instance), message, first seen (``firstTimestamp``, else
    ``eventTime``), count (1 for a singleton; a series' count), name."""
    first = since(ev.get("firstTimestamp"), now) if ev.get("firstTimestamp") else since(ev.get("eventTime"), now)
    last = since(ev.get("lastTimestamp"), now) if ev.get("lastTimestamp") else first
    count = ev.get("count") or 0
    series = ev.get("series")
    if series:
        last, count = since(series.get("lastObservedTime"), now), series.get("count") or 0
    elif not count:
        count = 1
    inv = ev.get("involvedObject") or {}
    kind = str(inv.get("kind", "")).lower()
    target = f"{kind}/{inv['name']}" if inv.get("name") else kind
    src = ev.get("source") or {}
    component = src.get("component") or ev.get("reportingController") or ""
    host = src.get("host") or ev.get("reportingInstance") or ""
    source = f"{component}, {host}" if host else component
    return [
        last,
        ev.get("type", ""),
        ev.get("reason", ""),
        target,
        inv.get("fieldPath", ""),
        source,
        str(ev.get("message", "")).strip(),
        first,
        int(count),
        _meta(ev).get("name", ""),
    ]


# -- the default convertor -------------------------------------------------------------------
DEFAULT_COLUMNS = [
    NAME,
    col(
        "Created At",
        typ="date",
        description="CreationTimestamp is a timestamp representing the server time when this object was created.",
    ),
]


def default_row(obj: Obj, now: float) -> list[Any]:
    """``defaultTableConvertor``: name and ``creationTimestamp`` (RFC 3339)."""
    return [_meta(obj).get("name", ""), _meta(obj).get("creationTimestamp") or "0001-01-01T00:00:00Z"]


Printer = tuple[list[Column], Callable[[Obj, float], list[Any]]]
PRINTERS: dict[str, Printer] = {
    "Node": (NODE_COLUMNS, node_row),
    "Pod": (POD_COLUMNS, pod_row),
    "ConfigMap": (CONFIGMAP_COLUMNS, configmap_row),
    "Secret": (SECRET_COLUMNS, secret_row),
    "Namespace": (NAMESPACE_COLUMNS, namespace_row),
    "Lease": (LEASE_COLUMNS, lease_row),
    "Event": (EVENT_COLUMNS, event_row),
}


def partial_metadata(obj: Obj, version: str) -> Obj:
    """``meta.AsPartialObjectMetadata``: the object's metadata as a
    ``PartialObjectMetadata`` of ``meta.k8s.io/<version>``."""
    return {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}", "metadata": _meta(obj)}


def table(
    kind: str, items: list[Obj], list_meta: Obj, now: float, version: str = "v1", include: str = "Metadata"
) -> Obj:
    """A ``Table`` of ``meta.k8s.io/<version>`` for ``items`` of ``kind`` (``asTable`` in
    apiserver ``pkg/endpoints/handlers/response.go``): the kind's columns and a row per item
    whose ``object`` is per ``include`` (``includeObject``: ``Metadata``, the default, a
    ``PartialObjectMetadata``; ``Object`` the item; ``None`` null); ``list_meta`` gives the
    ``resourceVersion``, ``continue`` and ``remainingItemCount``."""
    columns, row = PRINTERS.get(kind, (DEFAULT_COLUMNS, default_row))
    rows = []
    for item in items:
        r: Obj = {"cells": row(item, now)}
        if include == "Object":
            r["object"] = item
        elif include == "None":
            r["object"] = None
        else:
            r["object"] = partial_metadata(item, version)
        rows.append(r)
    meta = {k: v for k, v in list_meta.items() if k in ("resourceVersion", "continue", "remainingItemCount")}
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": meta,
        "columnDefinitions": columns,
        "rows": rows,
    }
