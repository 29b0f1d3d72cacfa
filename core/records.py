"""The share's records: one validated shape per file under ``<share>/<cluster>/``.

Every record is a frozen pydantic dataclass (so the writers' ``dataclasses.asdict`` and
``dataclasses.replace`` keep working and the JSON on disk stays byte for byte what it was),
parsed from the file's bytes by :func:`parse`:

* unknown keys are ignored: a newer agent that adds a key during a rolling upgrade must not
  crash the older ones that still read the file (pydantic's ``extra="ignore"``);
* a wrong shape is refused as a whole: JSON that does not parse (a file cut short), a JSON
  value that is not an object (``[]``), a key of the wrong type (``"generation": "1a"``,
  strict mode: no string-to-number coercion, no ``true`` for ``1``), a node name that is not
  an RFC 1123 label, an address that is not an IP address, a URL that is not ``http(s)`` to
  that address. :func:`parse` raises :class:`InvalidRecord`, naming the file and the dotted
  field; :class:`core.share.ShareStore` turns that into one ``invalid_record`` event and a
  skip (or, for ``cluster.json`` and ``join.json``, whose readers cannot go on without them,
  a :class:`core.share.ShareError` that every loop already survives).

What each file holds, field by field: docs/share-protocol.md. No I/O here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import time
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass

from core import noderoles
from core.config import NODE_NAME_RE
from core.versions import parse as parse_version

# defer_build: a record's validator (its pydantic-core schema) is built the first time the
# record is parsed or made, not when this module is imported (pydantic's ConfigDict.defer_build;
# pydantic 2.14 pydantic/_internal/_dataclasses.py complete_dataclass honours it for dataclasses,
# a pydantic that does not just builds them at import as before). Building all of them cost the
# agent ~25 ms of CPU before its first share operation; a worker's boot builds none, a control
# node's only ClusterState (docs/benchmarks.md section 12, tests/unit/test_import_budget.py).
RECORD = ConfigDict(extra="ignore", defer_build=True)

# A boot id: the kernel's (a UUID) or the lab's per-root one; never whitespace or a newline.
BOOT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SHA256_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
# A snapshot file (core.share.ShareStore.save_snapshot):
#   gen<generation>-r<etcd revision>-<etcd cluster id, 16 hex>-<unix ms>.db, and the names
#   written before revisions were recorded, gen<generation>-<unix ms>.db (revision unknown).
SNAPSHOT_NAME_RE = re.compile(
    r"^gen(?P<generation>0|[1-9][0-9]{0,17})"
    r"(?:-r(?P<revision>0|[1-9][0-9]{0,18})-(?P<cluster_id>[0-9a-f]{16}))?"
    r"-(?P<ms>[0-9]{1,18})\.db$"
)


def node_name(v: str) -> str:
    """``v`` when it is a lower-case RFC 1123 label (a Kubernetes Node name, ``NODE_NAME_RE``),
    else ``ValueError``. Every name that becomes a path, a config line or an API call passes
    through here first."""
    if not isinstance(v, str) or not NODE_NAME_RE.match(v):
        raise ValueError(f"{v!r} is not a node name (a lower-case RFC 1123 label: a-z, 0-9, '-', at most 63)")
    return v


def credential_word(v: str) -> bool:
    """Whether ``v`` can be a bearer credential: one word of printable characters, not empty
    (an empty one would let an empty ``Bearer`` header through)."""
    return bool(v) and not any(c.isspace() for c in v) and v.isprintable()


def ip_address(v: str) -> str:
    """``v`` in its canonical form when it is an IPv4 or IPv6 address, else ``ValueError``."""
    return str(ipaddress.ip_address(v))


def boot_id(v: str) -> str:
    """``v`` when it looks like a boot id (``BOOT_ID_RE``), else ``ValueError``."""
    if not BOOT_ID_RE.match(v):
        raise ValueError(f"{v[:40]!r} is not a boot id")
    return v


NodeName = Annotated[str, AfterValidator(node_name)]
IPAddress = Annotated[str, AfterValidator(ip_address)]
BootId = Annotated[str, AfterValidator(boot_id)]
Count = Annotated[int, Field(ge=0)]


@dataclass(frozen=True, config=RECORD)
class LeaderRecord:
    """Who leads the current generation. ``epoch`` grows by one with every claim, ever."""

    node: NodeName
    address: IPAddress
    boot_id: BootId
    epoch: Count
    claimed_at: float


@dataclass(frozen=True, config=RECORD)
class HeartbeatRecord:
    """``heartbeats/<node>`` as written: what a node last said about itself (its age is the
    file's mtime, :class:`core.share.Heartbeat`). Keys older writers always wrote are
    required; ``etcd_index`` only while a survivor reports its raft index."""

    node: NodeName
    boot_id: BootId
    role: str
    phase: str
    generation: Count
    etcd_index: Count | None = None


@dataclass(frozen=True, config=RECORD)
class Incarnation:
    """``incarnations/<node>.json``: the boot in which a control node's etcd member was made
    (its init or join completed), and in which generation. While the node heartbeats from that
    boot, the member's data is alive; a new boot id proves it gone (RAM root)."""

    node: NodeName
    boot_id: BootId
    generation: Count
    at: float


LOSS_KINDS = ("fenced", "accepted")


def loss_kind(v: str) -> str:
    """``v`` when it is one of :data:`LOSS_KINDS`, else ``ValueError``."""
    if v not in LOSS_KINDS:
        raise ValueError(f"{v!r} is not one of {', '.join(LOSS_KINDS)}")
    return v


@dataclass(frozen=True, config=RECORD)
class LossProof:
    """``losses/<node>.json``: proof that the etcd data of one incarnation of a control node is
    gone, other than a new boot id (docs/recovery.md, "Proof, not silence"). ``kind`` is
    ``fenced`` (the Warewulf server power-cycled the node and its power control said so) or
    ``accepted`` (an operator asserted the loss: ``ek8s recover --accept-loss-of``). It covers
    exactly the incarnation it names (``boot_id``, ``generation`` and ``incarnation_at``, the
    incarnation record's own ``at`` copied, compared for equality: no clock is compared), so a
    node that rejoins afterwards, even within the same boot, records a new incarnation the
    proof does not cover. ``by`` is who proved it (a user, the fence service on a host),
    ``how`` the means, ``at`` when (the writer's clock, shown only)."""

    node: NodeName
    boot_id: BootId
    generation: Count
    incarnation_at: float
    kind: Annotated[str, AfterValidator(loss_kind)]
    by: str
    how: str
    at: float
    reason: str = ""

    def covers(self, inc: Incarnation) -> bool:
        """Whether this proof is about incarnation ``inc`` (same node, boot, generation and
        recording)."""
        return (self.node, self.boot_id, self.generation, self.incarnation_at) == (
            inc.node,
            inc.boot_id,
            inc.generation,
            inc.at,
        )


@dataclass(frozen=True, config=RECORD)
class FenceRequest:
    """``fence-requests/<node>.json``: a survivor asks the Warewulf server's fence service to
    power-cycle ``node`` so that the data of the incarnation named (``boot_id``,
    ``generation``, ``incarnation_at``: the incarnation record's own ``at``) is proven gone.
    ``requested_by`` the survivor, ``at`` its clock (shown only)."""

    node: NodeName
    boot_id: BootId
    generation: Count
    incarnation_at: float
    requested_by: NodeName
    at: float


def _member_url(url_text: str, address: str | None) -> str:
    """``url_text`` when it is ``http(s)://<address>:<port>`` and nothing more (no path, query,
    user or fragment): it is where peers send the bearer token. Else ``ValueError``."""
    try:
        url = urlsplit(url_text)
        port = url.port
    except ValueError as err:
        raise ValueError(str(err)) from None
    if url.scheme not in ("http", "https") or port is None or url.username or url.password:
        raise ValueError("must be http(s)://<address>:<port>")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError("must be http(s)://<address>:<port>, without a path")
    host = url.hostname or ""
    try:
        same = address is not None and ipaddress.ip_address(host) == ipaddress.ip_address(address)
    except ValueError:
        same = False
    if not same:
        raise ValueError(f"its host {host[:80]!r} is not the member's address")
    return url_text


@dataclass(frozen=True, config=RECORD)
class MemberRecord:
    """``members/<node>.json``: one control node of the current generation. Validated before
    it can reach haproxy.cfg or keepalived.conf: the name is an RFC 1123 label, the address an
    IP address, the URL ``http(s)`` to that address with a port (1-65535)."""

    name: NodeName
    address: IPAddress
    phylactery_url: str
    boot_id: BootId
    generation: Count
    registered_at: float = dataclasses.field(default_factory=time.time)

    @field_validator("phylactery_url")
    @classmethod
    def _url_to_address(cls, v: str, info: ValidationInfo) -> str:
        return _member_url(v, info.data.get("address"))


@dataclass(frozen=True, config=RECORD)
class JoinMaterial:
    """``join.json``: what kubeadm needs to join, never the admin kubeconfig.

    ``token`` is a kubeadm bootstrap token (``[a-z0-9]{6}.[a-z0-9]{16}``), ``ca_cert_hashes``
    the ``sha256:<hex>`` pins of the cluster CA's SubjectPublicKeyInfo, ``certificate_key`` the
    64-hex-digit AES-256 key that decrypts the ``kubeadm-certs`` Secret. Times are Unix seconds.
    """

    generation: Count
    epoch: Count
    api_server_endpoint: str
    token: str
    token_expires_at: float
    ca_cert_hashes: list[str]
    certificate_key: str
    certificate_key_expires_at: float
    ca_cert: str
    published_by: NodeName
    published_at: float = dataclasses.field(default_factory=time.time)


@dataclass(frozen=True, config=RECORD)
class SlotHolder:
    """The holder of the control-plane join slot: its node, the boot that took the slot and
    when (Unix seconds)."""

    node: NodeName
    boot_id: BootId
    since: float


@dataclass(frozen=True, config=RECORD)
class JoinSlot:
    """``join_slot.json``: ``{"holder": null}`` or ``{"holder": {node, boot_id, since}}``."""

    holder: SlotHolder | None = None


@dataclass(frozen=True, config=RECORD)
class WorkerSlot:
    """One worker's join slot: the boot that took it and when (Unix seconds, nodes' clocks)."""

    boot_id: BootId
    since: float


@dataclass(frozen=True, config=RECORD)
class WorkerJoinSlots:
    """``worker_join_slots.json``: ``{"holders": {node: {boot_id, since}}, "window": w,
    "decreased_at": t}``: the holders and the admission window (:mod:`core.admission`; slots,
    a float; absent in a file written before it: a new window), last halved at ``t`` (Unix
    seconds, 0 for never)."""

    holders: dict[NodeName, WorkerSlot] = dataclasses.field(default_factory=dict)
    window: Annotated[float, Field(ge=0.0, le=1e6, allow_inf_nan=False)] | None = None
    decreased_at: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0


@dataclass(frozen=True, config=RECORD)
class ReformClaim:
    """``reform.json``: the survivor that claimed the re-forming of etcd in ``generation``."""

    generation: Count
    node: NodeName
    boot_id: BootId
    at: float


def kubernetes_release(v: str) -> str:
    """``v`` when it is ``v<major>.<minor>.<patch>`` (:func:`core.versions.parse`), else
    ``ValueError``."""
    parse_version(v)
    return v


KubernetesRelease = Annotated[str, AfterValidator(kubernetes_release)]
ImageName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]
NodeState = Literal["old", "moving", "new", "failed", "returning"]
RolloutPhase = Literal["rolling", "stopped", "done", "rolling_back", "rolled_back"]
Role = Literal["control", "worker"]


@dataclass(frozen=True, config=RECORD)
class RolloutNode:
    """One node of a rollout: its name, role (``control`` or ``worker``), the Warewulf image it
    comes from and the one it goes to (a per-node override: ``wwctl node set --image``, 4.5
    ``--container``), and its state (``old``:
    on the old image, untouched; ``moving``: cordoned, drained, switched to the new image and
    rebooting; ``new``: back at the new version; ``failed``: its step failed; ``returning``:
    switched back to the old image; the moves: :data:`core.upgrade.NODE_MOVES`)."""

    name: NodeName
    role: Role
    state: NodeState
    old_image: ImageName
    new_image: ImageName


@dataclass(frozen=True, config=RECORD)
class RolloutRecord:
    """``rollout.json``: the rolling upgrade of the cluster (:mod:`core.upgrade`), written by
    ``ek8s upgrade`` on the Warewulf server after each step so that ``--resume`` and
    ``--rollback`` continue from it and ``ek8s status`` shows it. ``from_version`` and
    ``to_version`` are ``v1.M.P``; ``nodes`` in rollout order (control nodes first);
    ``cluster_config`` and ``addons`` whether kubeadm's cluster-wide steps are done (the
    ClusterConfiguration's ``kubernetesVersion``; kube-proxy and CoreDNS); ``revision`` grows
    by one with every write (a writer that read an older one lost a race); times are Unix
    seconds; ``error`` says why a stopped rollout stopped. Refused as a whole: a node named
    twice, a worker before a control node, ``to_version`` not above ``from_version``."""

    cluster: str
    distribution: Literal["kubeadm", "k3s"]
    from_version: KubernetesRelease
    to_version: KubernetesRelease
    max_unavailable: Annotated[int, Field(ge=1)]
    phase: RolloutPhase
    nodes: list[RolloutNode]
    started_at: float
    updated_at: float
    cluster_config: bool = False
    addons: bool = False
    revision: Count = 0
    error: str = ""

    @field_validator("to_version")
    @classmethod
    def _upward(cls, v: str, info: ValidationInfo) -> str:
        frm = info.data.get("from_version")
        if frm is not None:
            a, b = parse_version(frm), parse_version(v)
            if not (a < b and b.major == a.major and b.minor - a.minor <= 1):
                raise ValueError(f"{v} is not one step up from {frm} (one minor at a time, never down)")
        return v

    @field_validator("nodes")
    @classmethod
    def _ordered(cls, v: list[RolloutNode]) -> list[RolloutNode]:
        names = [n.name for n in v]
        if len(set(names)) != len(names):
            raise ValueError("a node is named twice")
        roles = [n.role for n in v]
        if "worker" in roles and "control" in roles[roles.index("worker") :]:
            raise ValueError("a worker comes before a control node (control nodes first)")
        return v


@dataclass(frozen=True, config=RECORD)
class InventoryNode:
    """One node of a published inventory: its ``role`` (``control`` or ``worker``), its
    ``address`` and what the inventory wants on its Node: ``labels`` (key -> value),
    ``taints`` (``key[=value]:Effect``) and extra ``roles`` (core/noderoles.py formats)."""

    role: str
    address: IPAddress
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    taints: list[str] = dataclasses.field(default_factory=list)
    roles: list[str] = dataclasses.field(default_factory=list)

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if v not in ("control", "worker"):
            raise ValueError("must be control or worker")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return noderoles.parse_labels(v)

    @field_validator("taints")
    @classmethod
    def _taints(cls, v: list[str]) -> list[str]:
        return [str(t) for t in noderoles.parse_taints(v)]

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        return list(noderoles.parse_roles(v))

    @property
    def scheduling(self) -> noderoles.NodeRoles:
        """``labels``, ``taints`` and ``roles`` as a :class:`core.noderoles.NodeRoles`."""
        return noderoles.NodeRoles(self.labels, noderoles.parse_taints(self.taints), tuple(self.roles))


@dataclass(frozen=True, config=RECORD)
class PublishedInventory:
    """``inventory.json``: the cluster's nodes as the operator's inventory names them,
    published by ``ek8s warewulf apply`` (or ``ek8s warewulf roles``) on the Warewulf server.
    Phylactery reads it to put each Node's labels, taints and roles in line, and refuses to
    prune for a join a node it does not list (a node.yaml of another cluster)."""

    cluster: NodeName
    nodes: dict[NodeName, InventoryNode]
    published_by: str
    published_at: float

    def refusal(self, name: str, address: str, role: str | None = None) -> str | None:
        """Why node ``name`` at ``address`` (in ``role``, when given) is not one of this
        cluster's nodes, or None when the inventory lists it so: a node.yaml of another
        cluster, or a machine given another's name, is stopped before it joins."""
        listed = self.nodes.get(name)
        if listed is None:
            where = "does not list it"
        elif listed.address != address:
            where = f"lists it at {listed.address}"
        elif role is not None and listed.role != role:
            where = f"lists it as a {listed.role} node"
        else:
            return None
        return (
            f"{name} ({address}) is not a node of cluster {self.cluster}: the inventory published by "
            f"{self.published_by} {where} (a node.yaml of another cluster?)"
        )


@dataclass(frozen=True, config=RECORD)
class PreviousCredential:
    """``<credential file>.previous``: the value a rotation replaced, still accepted until
    ``valid_until`` (Unix seconds), and when it was rotated (:mod:`core.credentials`)."""

    token: str
    valid_until: float
    rotated_at: float

    @field_validator("token")
    @classmethod
    def _one_word(cls, v: str) -> str:
        if not credential_word(v):
            raise ValueError("not one word of printable characters")
        return v


@dataclass(frozen=True, config=RECORD)
class EventRecord:
    """One line of ``events.jsonl``: the keys every writer sets. Events carry more keys of
    their own (``epoch``, ``attempt``, ...), kept by :func:`event_line` beside these."""

    t: float
    node: str
    generation: int
    event: str
    message: str = ""


class InvalidRecord(ValueError):
    """A share file whose content does not have its record's shape. ``file`` is its path
    relative to the cluster directory, ``field`` the dotted path of the first offending key
    (empty when the file as a whole is wrong: not JSON, not an object), ``reason`` what is
    wrong with it."""

    def __init__(self, file: str, field: str, reason: str) -> None:
        self.file, self.field, self.reason = file, field, reason
        super().__init__(f"{file}: field {field!r}: {reason}" if field else f"{file}: {reason}")


T = TypeVar("T")
_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def parse(record: type[T], raw: bytes | str, file: str) -> T:
    """Parse ``raw`` (a file's bytes) as ``record`` in pydantic's strict JSON mode: unknown
    keys ignored, a wrong shape refused. Raises :class:`InvalidRecord` naming ``file`` and the
    field."""
    adapter = _ADAPTERS.get(record)
    if adapter is None:
        adapter = _ADAPTERS[record] = TypeAdapter(record)
    try:
        parsed: T = adapter.validate_json(raw, strict=True)
        return parsed
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        reason = first["msg"].removeprefix("Value error, ")
        if first["type"] == "json_invalid":
            reason = "not valid JSON: " + reason.removeprefix("Invalid JSON: ")
        elif not field and first["type"] in ("dataclass_type", "model_type", "dict_type"):
            reason = "not a JSON object"
        raise InvalidRecord(file, field, reason) from None


def event_line(raw: str) -> dict[str, Any] | None:
    """One line of ``events.jsonl`` as a dict (every key kept), or None when it is not an event
    record (not JSON, not an object, a common key of the wrong type)."""
    try:
        parsed = parse(EventRecord, raw, "events.jsonl")
    except InvalidRecord:
        return None
    d = json.loads(raw)  # valid JSON object: parse() accepted it
    return {**d, **dataclasses.asdict(parsed)}


def snapshot_checksum(text: str, snapshot_name: str) -> str:
    """The hex digest in a ``<snapshot>.sha256`` companion (``sha256sum`` format: ``<64 hex>
    <two spaces> <file name>``) when it names ``snapshot_name``. Raises :class:`InvalidRecord`."""
    file = f"snapshots/{snapshot_name}.sha256"
    parts = text.split()
    if len(parts) != 2 or not SHA256_HEX_RE.match(parts[0]):
        raise InvalidRecord(file, "", "not '<sha256 hex>  <file name>'")
    if parts[1] != snapshot_name:
        raise InvalidRecord(file, "name", f"names {parts[1][:80]!r}, not {snapshot_name}")
    return parts[0]


def snapshot_secret(text: str, snapshot_name: str) -> str | None:
    """The secret in a ``<snapshot>.token`` companion (one line, no whitespace), None when the
    file is empty. Raises :class:`InvalidRecord` for anything else."""
    value = text.strip()
    if not value:
        return None
    if any(c.isspace() for c in value) or not value.isprintable():
        raise InvalidRecord(f"snapshots/{snapshot_name}.token", "", "not one word of printable characters")
    return value


@dataclasses.dataclass(frozen=True)
class SnapshotName:
    """What a snapshot's file name says (docs/share-protocol.md, "Snapshots").

    ``generation``: the cluster generation whose etcd it holds; ``revision``: the etcd revision
    it holds at least (the ``header.revision`` of ``maintenance/status`` asked of the same member
    just before the snapshot; None for a name written before revisions were recorded);
    ``cluster_id``: the etcd cluster id of that member (its ``header.cluster_id``, 16 lower-case
    hex digits; None with the revision); ``written_ms``: the writer's wall clock at the save,
    Unix milliseconds: a tie-break and for display only, never an order of data.
    """

    generation: int
    revision: int | None
    cluster_id: str | None
    written_ms: int

    @property
    def order(self) -> tuple[int, int, int]:
        """The sort key, oldest data first: ``(generation, revision, written_ms)``, with an
        unknown revision as -1, below every known revision of its generation. Within one
        generation etcd's revision only grows (a re-form with ``--force-new-cluster`` or
        k3s's ``--cluster-reset`` keeps the data and its revision; a restore into the next
        generation keeps the snapshot's), so the higher revision holds the newer data
        whatever the writers' clocks say."""
        return (self.generation, -1 if self.revision is None else self.revision, self.written_ms)

    def file_name(self) -> str:
        """The file name this describes (the inverse of :func:`snapshot_name`)."""
        if self.revision is None or self.cluster_id is None:
            return f"gen{self.generation}-{self.written_ms}.db"
        return f"gen{self.generation}-r{self.revision}-{self.cluster_id}-{self.written_ms}.db"


def snapshot_name(name: str) -> SnapshotName | None:
    """The :class:`SnapshotName` of a snapshot file name (``gen<G>-r<revision>-<cluster id
    hex>-<unix ms>.db``, or the older ``gen<G>-<unix ms>.db``), None for any other name."""
    m = SNAPSHOT_NAME_RE.match(name)
    if m is None:
        return None
    revision = m.group("revision")
    return SnapshotName(
        generation=int(m.group("generation")),
        revision=int(revision) if revision is not None else None,
        cluster_id=m.group("cluster_id"),
        written_ms=int(m.group("ms")),
    )


def snapshot_order(name: str) -> tuple[int, int, int] | None:
    """:attr:`SnapshotName.order` of a snapshot file name, None for any other name."""
    parsed = snapshot_name(name)
    return parsed.order if parsed else None
