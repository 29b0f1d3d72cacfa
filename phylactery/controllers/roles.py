"""The roles controller: every Node's labels, taints and extra roles in line with the
inventory the operator published (``inventory.json``; docs/operations.md, "Roles").

Why Phylactery and not the node agent: a worker's agent holds only its kubelet's credential,
and the NodeRestriction admission plugin forbids a node to change its own taints or to set
``node-role.kubernetes.io/*`` labels (``plugin/pkg/admission/noderestriction/admission.go``);
a worker's root must not gain more than a worker's rights. Phylactery runs on control nodes
with the admin credential, and the published inventory is written by the Warewulf server, not
by any node. What a kubelet may set itself it sets at registration (node.yaml, from the same
inventory's tags), so a rebooted node comes back with them at once; this controller adds the
rest and follows inventory changes without a reboot.

Every :data:`ROLES_INTERVAL_S`, on the node whose etcd member leads etcd only (one writer),
:meth:`RolesController.reconcile_once` reads ``inventory.json`` (one share read), lists the
Nodes and patches those that differ with :func:`core.noderoles.node_patch` (JSON merge patch),
touching only the keys the inventory manages. Each turn returns the sentence saying what it
did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.etcd import EtcdError
from core.logs import get_logger
from core.noderoles import node_patch
from core.probes import kube_client, kube_errors
from core.share import ShareError
from phylactery.controllers import etcdview

if TYPE_CHECKING:
    from phylactery.service import Phylactery

log = get_logger(__name__, "phylactery")
ROLES_INTERVAL_S = 10.0  # how often the etcd leader's node compares the Nodes with the inventory


class NodesApi(Protocol):
    """The two Node calls the controller makes (the real one is :class:`KubeNodes`)."""

    def list(self) -> list[dict[str, Any]]: ...

    def patch(self, name: str, patch: dict[str, Any]) -> None: ...


class KubeNodes:
    """:class:`NodesApi` through the official ``kubernetes`` client with ``kubeconfig`` (the
    node's admin.conf). ``list`` gives each Node as ``{"name", "labels", "taints",
    "annotations"}`` (taints as the API's JSON); ``patch`` sends a JSON merge patch. Both
    raise what :func:`core.probes.kube_errors` lists."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def _api(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(kube_client(self.kubeconfig))

    def list(self) -> list[dict[str, Any]]:
        api = self._api()
        out = []
        for n in api.list_node(_request_timeout=5).items:
            raw = api.api_client.sanitize_for_serialization(n)
            meta, spec = raw.get("metadata") or {}, raw.get("spec") or {}
            out.append(
                {
                    "name": meta.get("name", ""),
                    "labels": meta.get("labels") or {},
                    "annotations": meta.get("annotations") or {},
                    "taints": spec.get("taints") or [],
                }
            )
        return out

    def patch(self, name: str, patch: dict[str, Any]) -> None:
        self._api().patch_node(name, patch, _request_timeout=5, _content_type="application/merge-patch+json")


def describe(patch: dict[str, Any]) -> str:
    """A short account of a :func:`core.noderoles.node_patch`: labels set and removed, taints."""
    labels = patch.get("metadata", {}).get("labels", {})
    parts = [f"+{k}={v}" for k, v in labels.items() if v is not None]
    parts += [f"-{k}" for k, v in labels.items() if v is None]
    if "spec" in patch:
        taints = patch["spec"]["taints"]
        parts.append("taints " + (",".join(f"{t['key']}:{t['effect']}" for t in taints) or "none"))
    if not parts:
        parts.append("annotations")
    return " ".join(parts)


class RolesController:
    """Loop ``roles`` of Phylactery ``p``. ``nodes`` makes the Node API (a fake in tests);
    ``connect`` reaches the local etcd member (to know whether it leads)."""

    name = "roles"

    def __init__(
        self,
        p: Phylactery,
        nodes: Callable[[], NodesApi] | None = None,
        connect: etcdview.Connect = etcdview.connect,
    ) -> None:
        self.p = p
        self.nodes = nodes or (lambda: KubeNodes(p.driver.admin_kubeconfig))
        self.connect = connect
        self.last_sentence = ""

    async def run(self) -> None:
        """:meth:`reconcile_once` every :data:`ROLES_INTERVAL_S`; a turn whose etcd, API or
        share does not answer is logged and the next one tries again."""
        failures: tuple[type[BaseException], ...] = (EtcdError, ShareError, *kube_errors())
        while True:
            await asyncio.sleep(ROLES_INTERVAL_S)
            try:
                self.last_sentence = await self.reconcile_once()
            except failures as err:
                log.warning("putting the Nodes' roles in line failed", extra={"error": str(err)})

    async def leads(self) -> bool:
        """Whether this node's etcd member leads etcd (False without a local member)."""
        ctx = self.p.driver.etcd_client_context()
        if ctx is None:
            return False
        async with self.connect(self.p.driver.etcd_endpoint, ctx) as etcd:
            return etcdview.leader_id(await etcd.status()) is not None

    async def reconcile_once(self) -> str:
        """One turn (see the module). Returns its sentence; raises
        :class:`core.etcd.EtcdError`, :class:`core.share.ShareError` and what
        :func:`core.probes.kube_errors` lists when etcd, the share or the API does not answer."""
        if not await self.leads():
            return "my etcd member does not lead etcd: its leader's node puts the Nodes' roles in line"
        inventory = await asyncio.to_thread(self.p.store.read_inventory)
        if inventory is None:
            return "no inventory published (ek8s warewulf apply): Nodes keep what their kubelets registered"
        if inventory.cluster != self.p.cfg.cluster:
            return f"inventory.json names cluster {inventory.cluster}, not {self.p.cfg.cluster}: ignored"
        api = self.nodes()
        changed = []
        for node in await asyncio.to_thread(api.list):
            entry = inventory.nodes.get(node["name"])
            if entry is None:
                continue
            patch = node_patch(node["labels"], node["taints"], node["annotations"], entry.scheduling)
            if patch is None:
                continue
            await asyncio.to_thread(api.patch, node["name"], patch)
            changed.append(f"{node['name']} ({describe(patch)})")
        if not changed:
            return "every Node is in line with the inventory"
        why = f"put {len(changed)} Node(s) in line with the inventory: " + "; ".join(changed)
        log.info(why)
        return why
