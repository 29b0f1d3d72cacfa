"""EMULATED Pods, PodDisruptionBudgets and the eviction API for the lab's API server, as far as
a node's maintenance needs them (cordon, drain, reboot: docs/operations.md). No container
runs: a Pod is an object in etcd, "running" while it is bound to a Node whose Ready condition
is True.

What is emulated, and from where (kubernetes/kubernetes v1.32):

* **NodeRestriction** for a node's own Node (``plugin/pkg/admission/noderestriction/admission.go``
  ``admitNode``): a kubelet registering its Node may set only the labels a kubelet may set
  (:func:`node_label_refusal`). Patching a Node is :mod:`lab.apiserver`'s (admins only there:
  the emulation lets a node update only its Node's status).
* **Pods** are :mod:`lab.apiserver`'s resource (create, get, list, patch, delete); it calls
  :meth:`Workloads.admit_pod` on a create and :meth:`Workloads.removed` after a delete. A Pod
  created without ``nodeName`` is bound by the emulated scheduler to a Ready Node that is not cordoned and whose
  ``NoSchedule``/``NoExecute`` taints it tolerates, the one with the fewest Pods; none: it
  stays ``Pending`` until one fits (checked every 2 s, :meth:`Workloads.schedule_pending`).
* **ReplicaSets**, only their effect: when a Pod whose controller is a ReplicaSet goes
  (evicted or deleted), a replacement ``<owner>-<5 chars>`` with its labels and spec is created
  and scheduled, as the ReplicaSet controller and the scheduler would.
* **PodDisruptionBudgets** (``policy/v1``, ``minAvailable``/``maxUnavailable`` as integers,
  ``selector.matchLabels``): the status the disruption controller keeps is computed on each
  read (``pkg/controller/disruption/disruption.go``): ``expectedPods`` the matching Pods,
  ``currentHealthy`` those bound to a Ready Node, ``desiredHealthy`` ``minAvailable`` (or
  expected minus ``maxUnavailable``), ``disruptionsAllowed`` the difference, never below 0.
* **Eviction** (``POST .../pods/{name}/eviction``, ``pkg/registry/core/pod/storage/eviction.go``):
  a Pod under no budget is deleted; under more than one, 500 "This pod has more than one
  PodDisruptionBudget, which the eviction subresource does not support."; a healthy Pod whose
  budget allows no disruption, 429 TooManyRequests "Cannot evict pod as it would violate the
  pod's disruption budget." with the cause "The disruption budget <name> needs <n> healthy
  pods and has <m> currently"; an unhealthy Pod may go while the budget is met
  (``unhealthyPodEvictionPolicy: IfHealthyBudget``, the default).

Where it differs: no graceful termination (an evicted Pod is gone at once), no pod GC (Pods
bound to a deleted Node stay), no Deployments or ReplicaSet objects, percentages refused.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from core import noderoles

if TYPE_CHECKING:
    from lab.apiserver import ApiServer

NODES = "/registry/minions/"
PODS = "/registry/pods/"
PDBS = "/registry/poddisruptionbudgets/"


def status_error(code: int, reason: str, message: str) -> web.Response:
    """A ``v1 Status`` failure (apimachinery ``metav1.Status``) with HTTP status ``code`` and
    ``reason`` (``NotFound``, ``Forbidden``, ``AlreadyExists``...), as the API server answers
    an error; the ``kubernetes`` client raises it as ``ApiException``."""
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason}
    return web.json_response({**body, "code": code}, status=code)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: ``patch`` applied to ``target`` (a new object; ``null`` removes a key, lists
    and scalars replace)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def node_ready(node: dict[str, Any]) -> bool:
    """The Node's Ready condition is True."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in node.get("status", {}).get("conditions", [])
    )


def tolerates(pod: dict[str, Any], taint: dict[str, Any]) -> bool:
    """Whether one of ``pod``'s tolerations matches ``taint`` (``Exists`` with no key matches
    all; an empty effect matches every effect), as ``v1.Toleration.ToleratesTaint``."""
    for t in pod.get("spec", {}).get("tolerations") or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def fits(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    """A Pod may be scheduled onto ``node``: Ready, not cordoned, every NoSchedule/NoExecute
    taint tolerated."""
    if not node_ready(node) or node.get("spec", {}).get("unschedulable"):
        return False
    taints = node.get("spec", {}).get("taints") or []
    return all(tolerates(pod, t) for t in taints if t.get("effect") in ("NoSchedule", "NoExecute"))


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """``selector.matchLabels`` all present in ``labels`` (an empty selector matches nothing
    in policy/v1, as the disruption controller reads it)."""
    want = selector.get("matchLabels") or {}
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


def controller_of(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The owner reference with ``controller: true``, or None."""
    for ref in pod.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"


def node_label_refusal(node_name: str, labels: dict[str, str]) -> str | None:
    """NodeRestriction's refusal of a node registering its own Node with ``labels``, or None.
    The control-plane label is kubeadm's mark-control-plane phase's (admin credential) on a
    real node; the emulated kubelet registers it itself (lab/kubelet.py), so it alone passes."""
    bad = sorted(k for k in labels if not noderoles.kubelet_may_set(k) and k != CONTROL_PLANE_LABEL)
    if bad:
        return f'node "{node_name}" is not allowed to set the following labels: {", ".join(bad)}'
    return None


class Workloads:
    """The routes and the scheduler/ReplicaSet stand-ins of one emulated API server."""

    def __init__(self, api: ApiServer) -> None:
        self.api = api

    def routes(self, r: web.UrlDispatcher) -> None:
        """Add the routes the API server's resources do not serve (eviction, budgets): before
        its catch-all route."""
        r.add_post("/api/v1/namespaces/{ns}/pods/{name}/eviction", self.evict)
        r.add_get("/apis/policy/v1/poddisruptionbudgets", self.all_pdbs)
        r.add_route("*", "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", self.pdbs)
        r.add_route("*", "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}", self.pdb)

    async def _admin(self, request: web.Request) -> web.Response | None:
        user = await self.api.user(request)
        if user is None or not user.admin:
            who = user.name if user else "system:anonymous"
            return status_error(403, "Forbidden", f'User "{who}" cannot {request.method.lower()} {request.path}')
        return None

    # -- nodes and pods -------------------------------------------------------------------
    async def nodes(self) -> dict[str, dict[str, Any]]:
        return {k.rsplit("/", 1)[1]: json.loads(v) for k, v in await self.api.get_prefix(NODES)}

    async def admit_pod(self, pod: dict[str, Any]) -> None:
        """A Pod being created (``metadata`` filled in): bound at once when a Node fits
        (:meth:`bind`), else left ``Pending``."""
        pod.setdefault("spec", {})
        await self.bind(pod, await self.nodes())

    async def create_pod(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store a new Pod (a ReplicaSet's replacement) in ``ns``, scheduled; returns it."""
        from lab.apiserver import rfc3339

        body.update(kind="Pod", apiVersion="v1")
        body["metadata"].update(namespace=ns, uid=secrets.token_hex(16), creationTimestamp=rfc3339(time.time()))
        body.setdefault("spec", {})
        body["status"] = {"phase": "Pending"}
        await self.admit_pod(body)
        await self.api.store(f"{PODS}{ns}/{body['metadata']['name']}", body)
        return body

    async def bind(self, pod: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> None:
        """Schedule ``pod`` (in place): its own ``nodeName``, else the fitting Node with the
        fewest Pods; bound Pods are ``Running`` (no kubelet runs them: docs above)."""
        spec = pod["spec"]
        if not spec.get("nodeName"):
            fitting = sorted(n for n, node in nodes.items() if fits(pod, node))
            if not fitting:
                return
            counts = {n: 0 for n in fitting}
            for _, raw in await self.api.get_prefix(PODS):
                bound = json.loads(raw).get("spec", {}).get("nodeName")
                if bound in counts:
                    counts[bound] += 1
            spec["nodeName"] = min(fitting, key=lambda n: (counts[n], n))
        pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}

    async def schedule_pending(self) -> list[str]:
        """Bind every Pending Pod that fits a Node now; returns their names."""
        nodes = await self.nodes()
        bound = []
        for key, raw in await self.api.get_prefix(PODS):
            pod = json.loads(raw)
            if pod.get("spec", {}).get("nodeName"):
                continue
            await self.bind(pod, nodes)
            if pod["spec"].get("nodeName"):
                await self.api.store(key, pod)
                bound.append(pod["metadata"]["name"])
        return bound

    async def remove(self, pod: dict[str, Any]) -> None:
        """Delete ``pod``, then :meth:`removed`."""
        meta = pod["metadata"]
        await self.api.delete(f"{PODS}{meta['namespace']}/{meta['name']}")
        await self.removed(pod)

    async def removed(self, pod: dict[str, Any]) -> None:
        """``pod`` was deleted: a ReplicaSet's gets its replacement (see the module)."""
        meta = pod["metadata"]
        owner = controller_of(pod)
        if owner is None or owner.get("kind") != "ReplicaSet":
            return
        spec = {k: v for k, v in pod.get("spec", {}).items() if k != "nodeName"}
        name = f"{owner['name']}-{secrets.token_hex(3)[:5]}"
        body = {
            "metadata": {"name": name, "labels": meta.get("labels") or {}, "ownerReferences": [owner]},
            "spec": spec,
        }
        await self.create_pod(meta["namespace"], body)

    # -- disruption budgets and eviction ---------------------------------------------------
    async def budget_status(self, pdb: dict[str, Any]) -> dict[str, Any]:
        """The PDB's ``status`` as the disruption controller would keep it (module docstring)."""
        ns = pdb["metadata"]["namespace"]
        selector = pdb.get("spec", {}).get("selector") or {}
        nodes = await self.nodes()
        pods = [json.loads(v) for _, v in await self.api.get_prefix(f"{PODS}{ns}/")]
        covered = [p for p in pods if matches(selector, p.get("metadata", {}).get("labels") or {})]
        healthy = sum(1 for p in covered if self.healthy(p, nodes))
        spec = pdb.get("spec", {})
        desired = (
            int(spec["minAvailable"]) if "minAvailable" in spec else len(covered) - int(spec.get("maxUnavailable", 0))
        )
        return {
            "expectedPods": len(covered),
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "disruptionsAllowed": max(0, healthy - desired),
        }

    @staticmethod
    def healthy(pod: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> bool:
        node = nodes.get(pod.get("spec", {}).get("nodeName") or "")
        return node is not None and node_ready(node)

    async def evict(self, request: web.Request) -> web.StreamResponse:
        """``POST .../pods/{name}/eviction`` (admins): see the module docstring."""
        if (refused := await self._admin(request)) is not None:
            return refused
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = await self.api.load(f"{PODS}{ns}/{name}")
        if pod is None:
            return status_error(404, "NotFound", f'pods "{name}" not found')
        labels = pod.get("metadata", {}).get("labels") or {}
        budgets = [
            json.loads(v)
            for _, v in await self.api.get_prefix(f"{PDBS}{ns}/")
            if matches(json.loads(v).get("spec", {}).get("selector") or {}, labels)
        ]
        if len(budgets) > 1:
            return status_error(
                500, "InternalError", "This pod has more than one PodDisruptionBudget, which the eviction "
                "subresource does not support."
            )  # fmt: skip
        if budgets:
            status = await self.budget_status(budgets[0])
            healthy = self.healthy(pod, await self.nodes())
            met = status["currentHealthy"] >= status["desiredHealthy"]
            blocked = status["disruptionsAllowed"] <= 0 if healthy else not met
            if blocked:
                body = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                    "reason": "TooManyRequests",
                    "code": 429,
                    "details": {
                        "causes": [
                            {
                                "reason": "DisruptionBudget",
                                "message": f"The disruption budget {budgets[0]['metadata']['name']} needs "
                                f"{status['desiredHealthy']} healthy pods and has {status['currentHealthy']} currently",
                            }
                        ]
                    },
                }
                return web.json_response(body, status=429)
        await self.remove(pod)
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}, status=201)

    async def with_status(self, pdb: dict[str, Any]) -> dict[str, Any]:
        return {**pdb, "status": await self.budget_status(pdb)}

    async def all_pdbs(self, request: web.Request) -> web.StreamResponse:
        """``GET /apis/policy/v1/poddisruptionbudgets`` (admins), with their status."""
        if (refused := await self._admin(request)) is not None:
            return refused
        items = [await self.with_status(json.loads(v)) for _, v in await self.api.get_prefix(PDBS)]
        return web.json_response(
            {"kind": "PodDisruptionBudgetList", "apiVersion": "policy/v1", "metadata": {}, "items": items}
        )

    async def pdbs(self, request: web.Request) -> web.StreamResponse:
        """``.../namespaces/{ns}/poddisruptionbudgets``: POST creates, GET lists (admins)."""
        if (refused := await self._admin(request)) is not None:
            return refused
        ns = request.match_info["ns"]
        if request.method != "POST":
            items = [await self.with_status(json.loads(v)) for _, v in await self.api.get_prefix(f"{PDBS}{ns}/")]
            return web.json_response(
                {"kind": "PodDisruptionBudgetList", "apiVersion": "policy/v1", "metadata": {}, "items": items}
            )
        body = await request.json()
        name = body.get("metadata", {}).get("name", "")
        spec = body.get("spec", {})
        for field in ("minAvailable", "maxUnavailable"):
            if field in spec and not isinstance(spec[field], int):
                return status_error(422, "Invalid", f"spec.{field}: the emulated API server takes integers only")
        if await self.api.load(f"{PDBS}{ns}/{name}") is not None:
            return status_error(409, "AlreadyExists", f'poddisruptionbudgets "{name}" already exists')
        body.update(kind="PodDisruptionBudget", apiVersion="policy/v1")
        body["metadata"]["namespace"] = ns
        await self.api.store(f"{PDBS}{ns}/{name}", body)
        return web.json_response(await self.with_status(body), status=201)

    async def pdb(self, request: web.Request) -> web.StreamResponse:
        """``.../poddisruptionbudgets/{name}``: GET (with status), DELETE (admins)."""
        if (refused := await self._admin(request)) is not None:
            return refused
        ns, name = request.match_info["ns"], request.match_info["name"]
        obj = await self.api.load(f"{PDBS}{ns}/{name}")
        if obj is None:
            return status_error(404, "NotFound", f'poddisruptionbudgets "{name}" not found')
        if request.method == "DELETE":
            await self.api.delete(f"{PDBS}{ns}/{name}")
            return web.json_response(obj)
        return web.json_response(await self.with_status(obj))
