"""The site's node inventory (``warewulf_conf/inventory.yaml``), validated like node.yaml.

An inventory names one cluster and its nodes as the operator knows them: name, MAC address,
IPv4 address, role. Names may be hostlists (``control[0-2]``, Slurm/Warewulf syntax, expanded
with ``python-hostlist``); a hostlist entry takes its first ``address`` and counts up, as
``wwctl node add n[1-4] --ipaddr`` does, and a list of ``mac`` addresses, one per node.

The cluster-wide settings reuse node.yaml's own models (:class:`core.config.VipSettings`,
:class:`core.config.KubernetesSettings`), so a value the inventory accepts is one the node
accepts. :func:`load_inventory` raises :class:`InventoryError` (exit 2 in the CLI) naming the
file and the dotted field (``nodes.1.mac``); nothing is written or run before it passes.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

import hostlist
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.config import (
    NODE_NAME_RE,
    ClusterName,
    IPv4,
    KubernetesSettings,
    Labels,
    Roles,
    Taints,
    VipSettings,
    format_errors,
    network_overlap,
)
from core.noderoles import NodeRoles
from core.records import InventoryNode, PublishedInventory
from manager import yamlfile

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_WW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class InventoryError(Exception):
    """The inventory cannot be used. ``str()`` names the file and each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarewulfSettings(_Strict):
    """How the nodes look to Warewulf (``wwctl`` flags, see :func:`manager.wwplan.plan`).

    ``version`` "auto" asks ``wwctl version``. ``netdev`` is the device name (``--netdev``),
    ``netmask`` a dotted IPv4 mask, ``gateway`` an IPv4 address string: these three go on the
    role profiles' network device ``default``. ``nameservers`` (IPv4 address strings) become
    network tags ``DNS1``, ``DNS2``... on each node's device (4.7.0's ``profile set`` drops
    ``--nettagadd``; docs/warewulf.md). Overlay lists ``None`` mean the version's defaults:
    4.5's role profiles repeat ``wwinit`` and ``generic`` (a list set anywhere replaces
    Warewulf's built-in default); 4.6+ append only ek8s's to the ``default`` profile's. A
    list given here goes before ek8s's overlays on the role profiles.
    """

    version: Literal["auto", "4.5", "4.6", "4.7"] = "auto"
    netdev: str = "net0"
    netmask: str = "255.255.255.0"
    gateway: IPv4 | None = None
    nameservers: list[IPv4] = Field(default_factory=list)
    system_overlays: list[str] | None = None
    runtime_overlays: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_cluster_profile(cls, data: object) -> object:
        if isinstance(data, dict) and "profile" in data:
            raise ValueError(
                "profile: the single cluster profile is gone; ek8s keeps one profile per role, "
                "<cluster>-control and <cluster>-worker (docs/warewulf.md); remove this field"
            )
        return data

    @field_validator("netmask")
    @classmethod
    def _netmask(cls, v: str) -> str:
        ipaddress.IPv4Network(f"0.0.0.0/{v}")
        return v

    @field_validator("netdev")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _WW_NAME.match(v):
            raise ValueError("must be letters, digits, '.', '_' or '-'")
        return v


class ShareExport(_Strict):
    """The NFS share: exported by the Warewulf server (to its own network, as Warewulf's
    exports template does), mounted by every node at ``path``."""

    path: Path = Path("/share")

    @field_validator("path")
    @classmethod
    def _path(cls, v: Path) -> Path:
        if not v.is_absolute() or v == Path("/"):
            raise ValueError("must be an absolute path other than /")
        return v


# Node images image_builder/build.sh makes, per distribution and role (Containerfile.base,
# .control, .k3s): kubeadm's workers need no HAProxy or keepalived; k3s's one image serves both
# roles (one binary, `k3s server` or `k3s agent`, started by the overlay's units).
DEFAULT_IMAGES = {
    "kubeadm": {"control": "ek8s-control", "worker": "ek8s-base"},
    "k3s": {"control": "ek8s-k3s", "worker": "ek8s-k3s"},
}
# The CNI manifest the kubeadm images carry (Containerfile.base); k3s runs its own flannel.
KUBEADM_CNI = Path("/usr/local/lib/ek8s/manifests/cni.yaml")


class NodeImages(_Strict):
    """Warewulf node image (4.5: "container") per role, built by image_builder/. Defaults
    depend on ``kubernetes.distribution`` (:data:`DEFAULT_IMAGES`; filled in by
    :class:`Inventory` before validation)."""

    control: str = DEFAULT_IMAGES["kubeadm"]["control"]
    worker: str = DEFAULT_IMAGES["kubeadm"]["worker"]


def _hostlist_names(v: str) -> list[str]:
    """The node names of hostlist ``v``; ``ValueError`` for a bad hostlist or name."""
    try:
        names = hostlist.expand_hostlist(v)
    except hostlist.BadHostlist as err:
        raise ValueError(f"not a hostlist: {err}") from None
    for n in names:
        if not NODE_NAME_RE.match(n):
            raise ValueError(f"{n!r} must be a lower-case RFC 1123 label, as for a Kubernetes Node")
    return list(names)


class Scheduling(_Strict):
    """Labels, taints and extra roles for Nodes (core/noderoles.py formats): ``labels`` a
    mapping (or ``key=value`` strings), ``taints`` ``key[=value]:Effect`` strings, ``roles``
    names that become ``node-role.kubernetes.io/<role>`` labels."""

    labels: Labels = Field(default_factory=dict)
    taints: Taints = ()
    roles: Roles = ()

    @property
    def scheduling(self) -> NodeRoles:
        """These as a :class:`core.noderoles.NodeRoles`."""
        return NodeRoles(self.labels, self.taints, self.roles)


class RoleGroup(Scheduling):
    """A group of nodes that share labels, taints or roles (GPU nodes, a Slurm partition,
    storage nodes): ``nodes`` a hostlist of the inventory's nodes, across entries."""

    nodes: str

    @field_validator("nodes")
    @classmethod
    def _hostlist(cls, v: str) -> str:
        _hostlist_names(v)
        return v


class NodeGroup(Scheduling):
    """One inventory entry: a node, or a hostlist of nodes with consecutive addresses.

    ``name`` is a hostlist (``control[0-2]``) of RFC 1123 labels; ``address`` the IPv4 address
    string of its first node; ``mac`` one MAC per node, stored lower-case with colons (a single
    string and ``-`` separators are accepted); ``labels``, ``taints``, ``roles`` for each of
    its nodes (:class:`Scheduling`).
    """

    name: str
    role: Literal["control", "worker"]
    address: IPv4
    mac: list[str]

    @field_validator("mac", mode="before")
    @classmethod
    def _mac_list(cls, v: object) -> object:
        items = v if isinstance(v, list) else [v]
        for item in items:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                raise ValueError(f"{item!r} is a number, not a MAC address (aa:bb:cc:dd:ee:ff)")
        return items

    @field_validator("mac")
    @classmethod
    def _macs(cls, v: list[str]) -> list[str]:
        out = [m.lower().replace("-", ":") for m in v]
        for m in out:
            if not _MAC.match(m):
                raise ValueError(f"{m!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
        return out

    @field_validator("name")
    @classmethod
    def _hostlist(cls, v: str) -> str:
        _hostlist_names(v)
        return v

    @model_validator(mode="after")
    def _one_mac_each(self) -> NodeGroup:
        n = len(hostlist.expand_hostlist(self.name))
        if len(self.mac) != n:
            raise ValueError(f"mac: {self.name} is {n} node(s) but {len(self.mac)} MAC address(es) are given")
        return self


class Node(BaseModel):
    """One expanded node: ``address`` an IPv4 address string, ``mac`` ``aa:bb:cc:dd:ee:ff``,
    ``scheduling`` its labels, taints and roles (its entry's, its groups' on top)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    name: str
    role: Literal["control", "worker"]
    address: str
    mac: str
    scheduling: NodeRoles = NodeRoles()


class Inventory(_Strict):
    """The whole inventory file (``warewulf_conf/inventory.yaml``; docs/warewulf.md).

    Validation also refuses a name, address or MAC used twice, no control node, a VIP that
    is a node's address or outside the nodes' network, and Pod, Service and node networks
    that overlap (:func:`core.config.network_overlap`) (``ValueError`` inside pydantic, which
    :func:`load_inventory` reports as :class:`InventoryError`). Only the fields
    :meth:`cluster_tags` lists reach the nodes.
    """

    cluster: ClusterName = "default"
    warewulf: WarewulfSettings = WarewulfSettings()
    share: ShareExport = ShareExport()
    vip: VipSettings = VipSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    node_images: NodeImages = NodeImages()
    # Manifest the leader applies once the API is up (the CNI), as a path inside the node image
    # (image_builder/Containerfile.base puts it there; not under /opt, which Warewulf exports).
    # Default: KUBEADM_CNI for kubeadm, none for k3s (its own flannel; docs.k3s.io "Networking").
    cni_manifest: Path | None = KUBEADM_CNI
    on_cluster_lost: Literal["reinit", "restore", "wait"] = "reinit"
    nodes: list[NodeGroup]
    # Labels, taints and roles of groups of nodes (across entries), applied in order over each
    # entry's own (docs/operations.md, "Roles from the inventory").
    groups: list[RoleGroup] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _distribution_defaults(cls, data: object) -> object:
        """Fill in what depends on ``kubernetes.distribution`` and was left out: the node
        images (:data:`DEFAULT_IMAGES`) and, for k3s, no CNI manifest."""
        if not isinstance(data, dict):
            return data
        kube = data.get("kubernetes")
        distribution = kube.get("distribution", "kubeadm") if isinstance(kube, dict) else "kubeadm"
        if distribution not in DEFAULT_IMAGES:
            return data  # refused by KubernetesSettings, naming the field
        data = dict(data)
        images = data.get("node_images")
        if images is None or isinstance(images, dict):
            data["node_images"] = DEFAULT_IMAGES[distribution] | (images or {})
        if distribution == "k3s" and "cni_manifest" not in data:
            data["cni_manifest"] = None
        return data

    @model_validator(mode="after")
    def _images_fit_the_distribution(self) -> Inventory:
        # A k3s cluster booted from the kubeadm images would find no k3s binary, and the k3s
        # image has no ek8s CNI manifest: refused here rather than at every node's boot.
        if self.kubernetes.distribution == "k3s":
            kubeadm_images = set(DEFAULT_IMAGES["kubeadm"].values())
            for role in ("control", "worker"):
                image = getattr(self.node_images, role)
                if image in kubeadm_images:
                    raise ValueError(
                        f"node_images.{role}: {image} is a kubeadm node image; kubernetes.distribution k3s "
                        f"boots {DEFAULT_IMAGES['k3s'][role]} (image_builder/build.sh --variants k3s)"
                    )
            if self.cni_manifest == KUBEADM_CNI:
                raise ValueError(
                    f"cni_manifest: {KUBEADM_CNI} is in the kubeadm images only; k3s runs its own flannel "
                    "(leave cni_manifest out or set it to null)"
                )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Inventory:
        nodes = self.expanded()
        seen: dict[str, str] = {}
        for n in nodes:
            for kind, value in (("name", n.name), ("address", n.address), ("mac", n.mac)):
                key = f"{kind}:{value}"
                if key in seen:
                    raise ValueError(f"nodes: {kind} {value} is used by both {seen[key]} and {n.name}")
                seen[key] = n.name
        if not any(n.role == "control" for n in nodes):
            raise ValueError("nodes: at least one control node is needed")
        for i, group in enumerate(self.groups):
            unknown = [n for n in _hostlist_names(group.nodes) if f"name:{n}" not in seen]
            if unknown:
                raise ValueError(f"groups.{i}.nodes: {', '.join(unknown)} not in the inventory's nodes")
        if f"address:{self.vip.address}" in seen:
            raise ValueError(f"vip.address: {self.vip.address} is also a node's address")
        net = self.network
        for n in nodes:
            if ipaddress.IPv4Address(n.address) not in net:
                raise ValueError(f"nodes: {n.name} ({n.address}) is outside the nodes' network {net}")
        if ipaddress.IPv4Address(self.vip.address) not in net:
            raise ValueError(f"vip.address: {self.vip.address} is outside the nodes' network {net}")
        clash = network_overlap(
            {
                "kubernetes.pod_subnet": self.kubernetes.pod_subnet,
                "kubernetes.service_subnet": self.kubernetes.service_subnet,
                "the nodes' network (nodes.0.address/warewulf.netmask)": net,
            }
        )
        if clash:
            raise ValueError(clash)
        return self

    def quorum_warning(self) -> str | None:
        """Why the number of control nodes is a poor one for etcd, or None for an odd number of
        at least 3. etcd accepts writes while a majority of its members (one per control node)
        is up, so 1 or 2 control nodes survive the loss of none, and an even number survives
        as many losses as one fewer would (etcd FAQ, "Why an odd number of cluster members?":
        etcd.io/docs/v3.5/faq/). Not refused: a lab or a test cluster may want it."""
        n = sum(1 for node in self.expanded() if node.role == "control")
        majority = n // 2 + 1
        if n >= 3 and n % 2:
            return None
        what = f"{n} control node{'s' if n > 1 else ''}"
        if n < 3:
            return (
                f"nodes: {what}: etcd needs {majority} of {n} members to accept writes, so the loss of any "
                "control node stops the cluster; 3 control nodes survive the loss of one"
            )
        return (
            f"nodes: {what}: etcd needs {majority} of {n} members to accept writes, so it survives the loss of "
            f"{n - majority}, as {n - 1} control nodes do; an even number adds a member to every vote without "
            f"surviving more losses: use {n - 1} or {n + 1}"
        )

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The nodes' network: the first node's address with ``warewulf.netmask``."""
        first = self.nodes[0].address
        return ipaddress.IPv4Network(f"{first}/{self.warewulf.netmask}", strict=False)

    def role_profile(self, role: str) -> str:
        """The Warewulf profile of ``role`` ("control" or "worker"): ``<cluster>-<role>``. It
        carries the role's node image, root, overlays, network defaults and every tag
        node.yaml.ww reads (the cluster's and ``ek8s_role``)."""
        return f"{self.cluster}-{role}"

    @property
    def roles(self) -> list[str]:
        """The roles the inventory's nodes have, control first."""
        present = {n.role for n in self.nodes}
        return [r for r in ("control", "worker") if r in present]

    def expanded(self) -> list[Node]:
        """Every node, hostlists expanded, in file order. Addresses count up within an entry;
        ``scheduling`` is its entry's, then each of ``groups`` naming the node on top, in order
        (a later one wins per label key and per taint key and effect; roles add up)."""
        member_of = [(set(hostlist.expand_hostlist(g.nodes)), g.scheduling) for g in self.groups]
        out: list[Node] = []
        for group in self.nodes:
            start = ipaddress.IPv4Address(group.address)
            for i, name in enumerate(hostlist.expand_hostlist(group.name)):
                roles = group.scheduling
                for names, scheduling in member_of:
                    if name in names:
                        roles = roles.merged(scheduling)
                out.append(Node(name=name, role=group.role, address=str(start + i), mac=group.mac[i], scheduling=roles))
        return out

    def cluster_tags(self) -> dict[str, str]:
        """Tags on the cluster's profile, read by the overlay's ``node.yaml.ww`` (keys ``ek8s_*``,
        values strings as Warewulf stores tags; ``ek8s_cni_manifest`` only when set)."""
        tags = {
            "ek8s_cluster": self.cluster,
            "ek8s_share": str(self.share.path),
            "ek8s_vip": self.vip.address,
            "ek8s_vip_prefix": str(self.vip.prefix_length),
            "ek8s_vip_hostname": self.vip.hostname,
            "ek8s_vip_port": str(self.vip.port),
            "ek8s_vrid": str(self.vip.virtual_router_id),
            "ek8s_distribution": self.kubernetes.distribution,
            "ek8s_k8s_version": self.kubernetes.version,
            "ek8s_pod_subnet": self.kubernetes.pod_subnet,
            "ek8s_service_subnet": self.kubernetes.service_subnet,
            "ek8s_on_cluster_lost": self.on_cluster_lost,
        }
        if self.cni_manifest is not None:
            tags["ek8s_cni_manifest"] = str(self.cni_manifest)
        return tags


def published(inv: Inventory, user: str, at: float) -> PublishedInventory:
    """What ``inventory.json`` on the share says of ``inv`` (:class:`core.records.PublishedInventory`):
    every node's role, address, labels, taints and roles, published by ``user`` at ``at``
    (Unix seconds)."""
    nodes = {
        n.name: InventoryNode(
            role=n.role,
            address=n.address,
            labels=dict(n.scheduling.labels),
            taints=[str(t) for t in n.scheduling.taints],
            roles=list(n.scheduling.roles),
        )
        for n in inv.expanded()
    }
    return PublishedInventory(cluster=inv.cluster, nodes=nodes, published_by=user, published_at=at)


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file.

    Returns the frozen :class:`Inventory`. Raises :class:`InventoryError` when the file is
    missing, not YAML, or invalid; the message names the file and each bad field by its
    dotted path (``nodes.0.mac``). Reads only. Unquoted MACs such as ``52:54:00:00:00:21``
    read as written, not as YAML 1.1 base-60 numbers (:func:`manager.yamlfile.load`).
    """
    p = Path(path)
    data = yamlfile.read(p, InventoryError, "inventory")
    if not isinstance(data, dict):
        raise InventoryError(f"{p}: invalid inventory\n  (top level): must be a mapping")
    try:
        return Inventory.model_validate(data)
    except ValidationError as err:
        raise InventoryError(format_errors(p, err, "inventory")) from None
