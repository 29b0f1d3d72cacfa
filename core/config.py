"""The node's facts and settings: ``/etc/ek8s/node.yaml``, validated on load.

Warewulf renders this file per node from its registry (overlay template ``node.yaml.ww``);
the lab writes it for each emulated node. The schema is documented field by field in
``docs/config.md``. Every decision the agent takes starts from a :class:`NodeConfig`.

Loading never writes anything: an invalid file raises :class:`ConfigError`, which the CLI
turns into exit code 2 with the file name and the dotted path of the offending field.

A node.yaml that Warewulf rendered says so (``rendered_by: warewulf``) and must then carry
every fact of :data:`WAREWULF_FACTS` instead of taking the defaults: Warewulf renders a node
whose profile is missing without the profile's tags, with only a warning, and such a file
would otherwise pass as ``cluster: default`` with the default VIP.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core import noderoles, versions

# RFC 1123 label, as Kubernetes requires for Node names (and etcd member names).
NODE_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")

Seconds = Annotated[float, Field(gt=0)]
# A dotted IPv4 address as ipaddress parses it (leading zeros are refused as ambiguous).
IPv4 = Annotated[str, AfterValidator(lambda v: str(ipaddress.IPv4Address(v)))]


def _cluster_name(v: str) -> str:
    if not NODE_NAME_RE.match(v):
        raise ValueError("must be a lower-case RFC 1123 label; it names a share directory")
    return v


ClusterName = Annotated[str, AfterValidator(_cluster_name)]

# The facts a node.yaml rendered by Warewulf must carry (dotted node.yaml path -> the cluster
# profile's tag that node.yaml.ww reads it from; manager.inventory.Inventory.cluster_tags sets
# them all). Every cluster-wide fact the plan always sets: a default would let one node
# disagree with the others (another share directory, VIP, VRRP id or pod subnet). The CNI
# manifest (ek8s_cni_manifest) is optional: an inventory may have none.
WAREWULF_FACTS: dict[str, str] = {
    "cluster": "ek8s_cluster",
    "share.path": "ek8s_share",
    "vip.address": "ek8s_vip",
    "vip.prefix_length": "ek8s_vip_prefix",
    "vip.hostname": "ek8s_vip_hostname",
    "vip.port": "ek8s_vip_port",
    "vip.virtual_router_id": "ek8s_vrid",
    "kubernetes.distribution": "ek8s_distribution",
    "kubernetes.version": "ek8s_k8s_version",
    "kubernetes.pod_subnet": "ek8s_pod_subnet",
    "kubernetes.service_subnet": "ek8s_service_subnet",
    "on_cluster_lost": "ek8s_on_cluster_lost",
}


def network_overlap(networks: dict[str, str | ipaddress.IPv4Network]) -> str | None:
    """Why two of ``networks`` (``{what it is, as named in the file: IPv4 network}``, e.g.
    ``{"kubernetes.pod_subnet": "10.0.0.0/8", ...}``) cannot both be used, or None when no two
    of them share an address: the first overlapping pair in order, both named.

    Pod, Service and node addresses must be told apart: a Pod network that overlaps a host
    network breaks routing ("Creating a cluster with kubeadm", kubernetes.io: "your Pod network
    must not overlap with any of the host networks"), and a Service address inside the nodes'
    or the Pods' network is taken by kube-proxy's rules from whoever else owns it."""
    nets = {what: ipaddress.IPv4Network(net) for what, net in networks.items()}
    names = list(nets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if nets[a].overlaps(nets[b]):
                return f"{a} {nets[a]} overlaps {b} {nets[b]}: Pod, Service and node addresses must not share a range"
    return None


class ConfigError(Exception):
    """node.yaml cannot be used. ``str()`` names the file and each bad field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A node's labels, taints and extra roles (core.noderoles): a mapping or list as written by
# hand, or one space-separated string as Warewulf's tags carry them (node.yaml.ww).
Labels = Annotated[dict[str, str], BeforeValidator(noderoles.parse_labels)]
Taints = Annotated[
    tuple[noderoles.Taint, ...],
    BeforeValidator(noderoles.parse_taints),
    PlainSerializer(lambda ts: [str(t) for t in ts]),
]
Roles = Annotated[tuple[str, ...], BeforeValidator(noderoles.parse_roles)]


class NodeFacts(_Strict):
    """This node as Warewulf knows it. ``labels``, ``taints`` and ``roles`` are the inventory's
    for this node (tags ``ek8s_labels``, ``ek8s_taints``, ``ek8s_roles``; core/noderoles.py):
    given to the kubelet at join, as far as a kubelet may set them."""

    name: str
    address: IPv4
    interface: str = "eth0"
    labels: Labels = Field(default_factory=dict)
    taints: Taints = ()
    roles: Roles = ()

    @property
    def scheduling(self) -> noderoles.NodeRoles:
        """``labels``, ``taints`` and ``roles`` as one :class:`core.noderoles.NodeRoles`."""
        return noderoles.NodeRoles(self.labels, self.taints, self.roles)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NODE_NAME_RE.match(v):
            raise ValueError("must be a lower-case RFC 1123 label (a-z, 0-9, '-'), as for a Node")
        return v

    @field_validator("address", mode="before")
    @classmethod
    def _address_given(cls, v: object, info: ValidationInfo) -> object:
        # Warewulf renders a node without an address on its primary device as "" (4.5, a
        # string) or "<nil>" (4.6, an empty net.IP's String()).
        if v is None or (isinstance(v, str) and v.strip() in ("", "<nil>")):
            name = info.data.get("name", "this node")
            raise ValueError(
                f"{name} has no address ({v!r}); set one on its primary network device "
                f"(`wwctl node set {name} --netname NETWORK --ipaddr ADDRESS`) and rebuild the overlays"
            )
        return v


class ShareSettings(_Strict):
    """The NFS share every node mounts (``/share`` in the proof of concept)."""

    path: Path = Path("/share")


class VipSettings(_Strict):
    """The control-plane endpoint: keepalived's virtual address, HAProxy's frontend port."""

    address: IPv4 = "10.0.0.99"
    prefix_length: int = Field(24, ge=1, le=32)
    hostname: str = "vip.kubernetes.local"
    port: int = Field(8443, ge=1, le=65535)
    virtual_router_id: int = Field(51, ge=1, le=255)
    # VRRPv3 advertisement interval (RFC 5798 section 5.2.7: centiseconds, so 0.01-40.95 s).
    # A backup takes over after Master_Down_Interval = 3 intervals + Skew_Time
    # ((256 - priority) / 256 intervals; priority 100: 0.61), so 0.1 s moves the VIP 0.36 s
    # after the holder's last advert (0.5 s: 1.8 s; VRRPv2's whole seconds: 3.6 s). A false
    # takeover needs the holder's adverts stalled for those 0.36 s: keepalived's VRRP process
    # runs with real-time scheduling (keepalived.conf vrrp_rt_priority; nice -20 on a node
    # without CAP_SYS_RESOURCE, docs/phylactery.md) so CPU load does not stall it;
    # docs/benchmarks.md sections 10 and 15 have the soaks that count them.
    advert_interval_s: float = Field(0.1, ge=0.01, le=40.95)

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not _HOSTNAME.match(v):
            raise ValueError("must be a DNS name")
        return v


class KubernetesSettings(_Strict):
    """What the distribution is asked to build: kubeadm (``kubeadm.k8s.io/v1beta4``
    ClusterConfiguration, :mod:`core.drivers.kubeadm`) or k3s with embedded etcd
    (``/etc/rancher/k3s/config.yaml``, :mod:`core.drivers.k3s`). ``version`` is what kubeadm
    installs, and it selects the behaviours that differ between the supported minors
    (:mod:`core.versions`); k3s runs the version of its executable, which should match."""

    distribution: Literal["kubeadm", "k3s"] = "kubeadm"
    version: str = versions.DEFAULT_KUBERNETES_VERSION
    pod_subnet: str = "10.249.0.0/16"
    service_subnet: str = "10.96.0.0/12"
    api_server_port: int = Field(6443, ge=1, le=65535)
    extra_sans: list[str] = Field(default_factory=lambda: ["10.0.0.13"])
    # The kubeadm and k3s executables; the lab points them at its emulated ones.
    kubeadm: str = "kubeadm"
    k3s: str = "k3s"
    # etcd's offline tools, which restore a snapshot on the node (kubeadm: etcdutl; etcdctl
    # only while the version's etcd is 3.5, core.versions.etcdctl_restores_snapshots). Names
    # are looked up on PATH; the lab points them at its etcd's.
    etcdutl: str = "etcdutl"
    etcdctl: str = "etcdctl"
    # Manifests applied by the leader once the control plane is up (the CNI first).
    manifests: list[Path] = Field(default_factory=list)
    # Offline image archives baked into the node image; imported at boot beside the election.
    image_archives: Path = Path("/var/lib/ek8s/images")
    # The operator's ceiling: at most this many workers join and wait for their Node Ready at
    # once (a slot on the share, timeouts.worker_join_slot_s at most). Control-plane joins run
    # one at a time regardless.
    worker_join_concurrency: int = Field(1000, ge=1, le=1000)
    # "adaptive": below the ceiling, the admission window on the share follows the API
    # servers' distress signals (core/admission.py); "fixed": the ceiling is the pace.
    worker_join_admission: Literal["adaptive", "fixed"] = "adaptive"

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        versions.supported(v)  # ValueError: not v1.M.P, or a minor this project does not know
        return v

    @field_validator("pod_subnet", "service_subnet")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return str(ipaddress.IPv4Network(v, strict=True))

    @model_validator(mode="after")
    def _subnets_apart(self) -> KubernetesSettings:
        clash = network_overlap(
            {"kubernetes.pod_subnet": self.pod_subnet, "kubernetes.service_subnet": self.service_subnet}
        )
        if clash:
            raise ValueError(clash)
        return self


class PhylacterySettings(_Strict):
    """Phylactery's port and periods (seconds): reconciles, etcd snapshots to the share."""

    port: int = Field(9999, ge=1, le=65535)
    reconcile_interval_s: Seconds = 30.0
    # The generation's leader saves an etcd snapshot to the share this often (0: never) and
    # keeps the newest ``snapshots_keep`` (on_cluster_lost: restore starts from the latest).
    snapshot_interval_s: float = Field(60.0, ge=0)
    snapshots_keep: int = Field(5, ge=1, le=1000)


class MetricsSettings(_Strict):
    """Prometheus metrics (docs/metrics.md): every agent writes its own in node_exporter's
    textfile collector format to ``textfile_dir/ek8s.prom`` (atomically, at most every
    ``textfile_interval_s`` seconds and on a new phase); Phylactery serves them with its own
    at ``GET /metrics`` on control nodes."""

    textfile_dir: Path = Path("/var/lib/node_exporter/textfile_collector")
    textfile_interval_s: Seconds = 15.0


class Timeouts(_Strict):
    """Every wait the agent does, in seconds."""

    lease_ttl_s: Seconds = 30.0
    heartbeat_interval_s: Seconds = 2.0
    # The share's load budget in steady state (docs/share-protocol.md): a control node in WATCH
    # heartbeats this often (its freshness feeds the lease TTL and etcd recovery) and re-reads
    # cluster.json this often; a worker heartbeats this often in every state (its liveness is
    # its Node's Ready condition) and, in WATCH, reads cluster.json and probes the API behind
    # the VIP this often.
    steady_heartbeat_interval_s: Seconds = 10.0
    watch_share_interval_s: Seconds = 5.0
    worker_heartbeat_interval_s: Seconds = 90.0
    worker_watch_interval_s: float = Field(10.0, ge=1, le=60)
    worker_share_interval_s: Seconds = 30.0
    # A worker waiting for a ready generation polls cluster.json with a backoff up to this
    # (each wait drawn between half of it and all of it: jitter).
    worker_follow_max_s: float = Field(2.0, gt=0, le=60)
    poll_interval_s: float = Field(0.2, gt=0, le=5)
    # A ready generation whose API has not answered behind the VIP for this long, while some
    # etcd member is only silent (not proven gone), has its wait recorded (recovery_waiting);
    # a generation is lost only when every member's data is proven gone (docs/recovery.md).
    cluster_lost_grace_s: Seconds = 60.0
    join_attempts: int = Field(5, ge=1, le=100)
    # A worker holds a join slot (kubernetes.worker_join_concurrency) at most this long.
    worker_join_slot_s: Seconds = 120.0
    join_backoff_s: Seconds = 2.0
    node_ready_s: Seconds = 300.0
    command_s: Seconds = 600.0

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Timeouts:
        if self.heartbeat_interval_s * 2 > self.lease_ttl_s:
            raise ValueError("heartbeat_interval_s must be at most half of lease_ttl_s")
        return self

    def heartbeat_every_s(self, role: str, steady: bool) -> float:
        """How often a node of ``role`` heartbeats: a worker every
        ``worker_heartbeat_interval_s``; a control node every ``heartbeat_interval_s``, or in
        steady state every ``steady_heartbeat_interval_s`` but at least three times per lease
        TTL (its lease, the join slot and etcd recovery judge its heartbeat's freshness)."""
        if role != "control":
            return self.worker_heartbeat_interval_s
        if not steady:
            return self.heartbeat_interval_s
        return max(self.heartbeat_interval_s, min(self.steady_heartbeat_interval_s, self.lease_ttl_s / 3))

    def liveness_ttl_s(self, role: str) -> float:
        """How old a heartbeat of a node of ``role`` may be while the node counts as alive:
        the lease TTL for control nodes, three worker heartbeats (at least the lease TTL) for
        workers, which heartbeat rarely."""
        if role == "control":
            return self.lease_ttl_s
        return max(self.lease_ttl_s, 3 * self.worker_heartbeat_interval_s)


class NodeConfig(_Strict):
    """The whole of node.yaml. ``root`` prefixes every path the agent touches on the node."""

    cluster: ClusterName = "default"
    role: Literal["control", "worker"]
    node: NodeFacts
    share: ShareSettings = ShareSettings()
    vip: VipSettings = VipSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    phylactery: PhylacterySettings = PhylacterySettings()
    timeouts: Timeouts = Timeouts()
    metrics: MetricsSettings = MetricsSettings()
    # What a control node does with a lost cluster: start a new generation ("reinit"), start
    # one from the latest etcd snapshot on the share ("restore"; reinit when there is none),
    # or keep waiting for the operator ("wait").
    on_cluster_lost: Literal["reinit", "restore", "wait"] = "restore"
    # How a silent control node's loss can be proven without the operator: "warewulf-power"
    # asks the Warewulf server's ek8s-fence service (ek8s fence serve) to power-cycle it
    # (wwctl power cycle) before a survivor acts; "none": wait for its boot or for
    # 'ek8s recover --accept-loss-of' (docs/recovery.md, "Fencing").
    fencing: Literal["none", "warewulf-power"] = "none"
    root: Path = Path("/")
    service_manager: Literal["systemd", "process"] = "systemd"
    # Who wrote the file: "warewulf" (overlay template node.yaml.ww) requires WAREWULF_FACTS.
    rendered_by: Literal["warewulf"] | None = None

    @field_validator("share", "vip", "kubernetes", "phylactery", "timeouts", mode="before")
    @classmethod
    def _empty_section(cls, v: object) -> object:
        # A section rendered with no keys (Warewulf tags absent) reads as null: use the defaults.
        return {} if v is None else v

    @field_validator("kubernetes")
    @classmethod
    def _apart_from_the_nodes(cls, v: KubernetesSettings, info: ValidationInfo) -> KubernetesSettings:
        vip = info.data.get("vip")
        if isinstance(vip, VipSettings):
            nodes = ipaddress.IPv4Network(f"{vip.address}/{vip.prefix_length}", strict=False)
            clash = network_overlap(
                {
                    "kubernetes.pod_subnet": v.pod_subnet,
                    "kubernetes.service_subnet": v.service_subnet,
                    "the nodes' network (vip.address/vip.prefix_length)": nodes,
                }
            )
            if clash:
                raise ValueError(clash)
        return v

    @field_validator("root")
    @classmethod
    def _root(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError("must be an absolute path")
        return v

    @property
    def is_control(self) -> bool:
        """Whether this node is a control node (runs etcd, the API, Phylactery)."""
        return self.role == "control"

    @property
    def metrics_textfile(self) -> Path:
        """The agent's node_exporter textfile, ``<metrics.textfile_dir>/ek8s.prom`` under :attr:`root`."""
        return self.host_path(self.metrics.textfile_dir) / "ek8s.prom"

    def host_path(self, path: str | Path) -> Path:
        """Map an absolute node path (``/etc/kubernetes``) under :attr:`root`."""
        p = Path(path)
        return self.root / p.relative_to("/") if p.is_absolute() else self.root / p


def format_errors(path: Path, err: ValidationError, what: str = "node config") -> str:
    """One line for the file, then ``  dotted.field: message`` per error (shared with the inventory)."""
    lines = [f"{path}: invalid {what}"]
    for e in err.errors():
        loc = ".".join(str(part) for part in e["loc"]) or "(top level)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def missing_warewulf_facts(data: dict[str, object]) -> list[str]:
    """The :data:`WAREWULF_FACTS` (dotted paths, in that order) absent from parsed node.yaml
    ``data``, plus ``node.address``; empty when the file was not rendered by Warewulf."""
    if data.get("rendered_by") != "warewulf":
        return []
    missing = []
    for dotted in (*WAREWULF_FACTS, "node.address"):
        value: object = data
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            missing.append(dotted)
    return missing


def _missing_facts_error(source: Path, data: dict[str, object], missing: list[str]) -> str:
    node = data.get("node")
    name = node.get("name") if isinstance(node, dict) else None
    name = name if isinstance(name, str) else "NODE"
    lines = [
        f"{source}: invalid node config",
        f"  rendered by Warewulf without facts of node {name}'s cluster profile: is the profile missing?"
        f" (Warewulf renders on with a warning, 'Profile not found'; see `wwctl node list -a {name}`)",
    ]
    for dotted in missing:
        tag = WAREWULF_FACTS.get(dotted)
        how = f"profile tag {tag}" if tag else f"`wwctl node set {name} --ipaddr`"
        lines.append(f"  {dotted}: missing ({how})")
    return "\n".join(lines)


def parse_config(data: object, source: Path) -> NodeConfig:
    """Validate already-parsed YAML. Raises :class:`ConfigError` naming ``source``.

    A file rendered by Warewulf (``rendered_by: warewulf``) without some of
    :data:`WAREWULF_FACTS` is refused before anything else, one line per missing fact with
    the profile tag that should have carried it.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: invalid node config\n  (top level): must be a mapping")
    missing = missing_warewulf_facts(data)
    if missing:
        raise ConfigError(_missing_facts_error(source, data, missing))
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(source, err)) from None


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate node.yaml.

    Returns the frozen :class:`NodeConfig`. Raises :class:`ConfigError` when the file is
    missing, is not YAML, or fails validation; the message names the file and every bad
    field by its dotted path (``kubernetes.pod_subnet: ...``). Reads only.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError(f"{p}: cannot read node config: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    return parse_config(data, p)
