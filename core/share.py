"""The share (NFS) protocol, v1: the cluster's coordination store.

Everything about the file layout under ``<share>/<cluster>/`` lives in this module; the rest of
the code speaks to :class:`ShareStore` through a few verbs (read a snapshot, attempt to lead,
heartbeat, mark ready, publish join material, register a member, record an event), the way
Patroni's DCS classes hide etcd/Consul/ZooKeeper. ``docs/share-protocol.md`` documents every
file and field.

NFS rules followed here (docs/share-protocol.md):

* mutual exclusion with ``filelock`` on ``cluster.lock``, a file that is never deleted
  (``flock`` on NFS becomes a POSIX lock arbitrated by the server); the lock is held only for
  short read-decide-write sections, never across ``kubeadm init``;
* every write is atomic (temp + fsync + rename, :mod:`core.fileperm`), ``0700``/``0600``;
* waits re-``open()`` files that already exist (``cluster.json`` exists from the first boot on)
  instead of waiting for a file to appear, because the NFS client caches negative lookups;
* liveness is judged on the share's clock: a heartbeat's mtime is compared with the mtime of
  a probe file this node has just touched on the same share.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic.dataclasses import dataclass as record

from core.admission import INITIAL, Signal, Window
from core.config import NODE_NAME_RE
from core.credentials import CONTROL, GRACE_S, KINDS, WORKER, CredentialSet, new_token
from core.fileperm import PUBLIC_FILE_MODE, append_line, ensure_dir, touch, write_atomic
from core.logs import get_logger
from core.records import (
    RECORD,
    Count,
    FenceRequest,
    HeartbeatRecord,
    Incarnation,
    InvalidRecord,
    JoinMaterial,
    JoinSlot,
    LeaderRecord,
    LossProof,
    MemberRecord,
    PreviousCredential,
    PublishedInventory,
    ReformClaim,
    RolloutRecord,
    SlotHolder,
    SnapshotName,
    WorkerJoinSlots,
    WorkerSlot,
    credential_word,
    event_line,
    node_name,
    parse,
    snapshot_checksum,
    snapshot_name,
)
from core.records import snapshot_secret as parse_snapshot_secret

if TYPE_CHECKING:
    from filelock import FileLock

__all__ = [
    "Count",
    "FenceRequest",
    "Incarnation",
    "InvalidRecord",
    "JoinMaterial",
    "LeaderRecord",
    "LossProof",
    "MemberRecord",
    "PublishedInventory",
]

log = get_logger(__name__, "share")
T = TypeVar("T")

PROTOCOL = 1
LOCK_TIMEOUT_S = 30.0
# One invalid_record event per file and field at most this often (seconds), per store: a bad
# file read every second must not flood events.jsonl (docs/share-protocol.md).
INVALID_RECORD_EVERY_S = 600.0
# events.jsonl is rotated once it reaches EVENTS_MAX_BYTES (about 5,000 events, a few full
# rebuilds of a 123-node cluster): it becomes events.jsonl.1, and so on up to EVENTS_KEEP.
EVENTS_MAX_BYTES = 1 << 20
EVENTS_KEEP = 3
# Where snapshots of generations outside the current lineage are kept (set_aside_snapshots).
SET_ASIDE_DIR = "old"
# A rotated file whose mtime (the share's clock) is this much older than ``since`` holds no
# event at or after ``since`` (events carry their writer's clock, which may run ahead).
EVENTS_CLOCK_SKEW_S = 300.0


# The share's roles: "control" (control nodes, Phylactery, and the operator's ek8s on the
# Warewulf server: both trees) and "worker" (the node tree ``nodes/`` only).
ROLES = ("control", WORKER)
# The node tree's ownership (docs/security.md, "The share split"): its export squashes a
# worker's root to the anonymous uid and gid 65534 (``anonuid``/``anongid`` in the export).
# What control nodes write there for workers is root's, group ANON_GID, 0640, in 0750
# directories a worker cannot write; the directories workers write (heartbeats/, events/,
# slots/) are 0770, group ANON_GID. Local users of a worker (other uids) read none of it.
ANON_GID = 65534
NODE_FILE_MODE = 0o640
NODE_DIR_MODE = 0o750
NODE_WRITABLE_DIR_MODE = 0o770
NODE_WRITABLE_DIRS = ("heartbeats", "events", "slots")
# What a worker's copy of join.json leaves out unless the driver says (both secrets).
WITHHELD = ("certificate_key", "token")

OP_KINDS = ("reads", "stats", "writes", "renames", "fsyncs", "locks")


class OpCounters:
    """How many operations one :class:`ShareStore` made on the share, by kind (thread-safe).

    ``reads``: a file opened and read; ``stats``: a ``stat``, an existence check, a directory
    listing or a glob; ``writes``: a file created, written, touched, appended to or removed;
    ``renames`` and ``fsyncs``; ``locks``: an acquisition of ``cluster.lock`` or
    ``events.lock``. An atomic write counts one write, one fsync and one rename.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(OP_KINDS, 0)

    def add(self, **kinds: int) -> None:
        """Count ``kinds`` (e.g. ``reads=1``); an unknown kind raises ``KeyError``."""
        with self._lock:
            for kind, n in kinds.items():
                if kind not in self._counts:
                    raise KeyError(kind)
                self._counts[kind] += n

    def snapshot(self) -> dict[str, int]:
        """The counts so far by kind, and ``total``: a new dict, safe to keep."""
        with self._lock:
            out = dict(self._counts)
        out["total"] = sum(out.values())
        return out


class ShareError(Exception):
    """The share is unusable (unreadable state, lock not obtained in time, bad JSON)."""


class InvalidShareRecord(ShareError):
    """A record a reader cannot do without (``cluster.json``, ``join.json``, the bearer token)
    does not have its shape; ``invalid`` says which file and field. Reported once as the
    ``invalid_record`` event; the caller skips its turn as for any :class:`ShareError`."""

    def __init__(self, invalid: InvalidRecord) -> None:
        self.invalid = invalid
        super().__init__(str(invalid))


class ControlTreeRefused(ShareError):
    """A worker's store was asked for a record of the control-only tree (the certificate key,
    the control or server token, kube.config, snapshots, control nodes' heartbeats...): a
    worker mounts only ``nodes/`` (docs/share-protocol.md, "Two trees"). Nothing was read or
    written."""


class EpochSuperseded(Exception):
    """The caller's claim is no longer the current one (a newer epoch, a new generation, or
    the claim was released); the caller must stop acting as leader. Nothing was written."""


@dataclass(frozen=True)
class Fence:
    """A leader's proof of its claim, returned by :meth:`ShareStore.attempt_leadership`:
    leader-only writes carry it, and the store refuses them once any part has changed."""

    generation: int
    epoch: int
    node: str

    def holds(self, state: ClusterState) -> bool:
        """Whether ``state`` (read under the lock) still records this claim."""
        leader = state.leader
        return (
            state.generation == self.generation
            and state.epoch == self.epoch
            and leader is not None
            and leader.node == self.node
            and leader.epoch == self.epoch
        )


@record(frozen=True, config=RECORD)
class ClusterState:
    """Contents of ``cluster.json``, the one record every decision starts from (validated:
    :mod:`core.records`; ``protocol`` and any key a newer writer adds are ignored)."""

    generation: Count = 0
    epoch: Count = 0
    leader: LeaderRecord | None = None
    ready: bool = False
    ready_at: float | None = None
    reason: str = ""
    updated_at: float = 0.0
    restore_from: str | None = None  # snapshot the generation's leader initialises etcd from

    def claim(self) -> Fence | None:
        """The recorded leader's claim as a :class:`Fence`, or None without a leader."""
        if self.leader is None:
            return None
        return Fence(generation=self.generation, epoch=self.leader.epoch, node=self.leader.node)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``cluster.json`` (with ``protocol``)."""
        d = asdict(self)
        d["protocol"] = PROTOCOL
        return d

    @classmethod
    def from_json(cls, raw: bytes | str) -> ClusterState:
        """Parse ``cluster.json``'s bytes; missing keys take their defaults (older writers),
        unknown keys are ignored (newer ones). Raises :class:`core.records.InvalidRecord`."""
        return parse(cls, raw, "cluster.json")


@dataclass(frozen=True)
class Heartbeat:
    """``heartbeats/<node>``: what a node last said about itself, and how old that is."""

    node: str
    boot_id: str
    role: str
    phase: str
    generation: int
    age_s: float  # share clock: probe mtime - heartbeat mtime
    # The raft index of the node's etcd member, reported while quorum is lost (who holds the
    # most recent data re-forms etcd: docs/recovery.md); None otherwise.
    etcd_index: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of the share taken at one moment.

    ``now`` is the share's clock (Unix seconds) and ``leader_heartbeat`` the recorded
    leader's heartbeat, both read only when the snapshot was taken ``with leases``
    (``leases_read``); a cycle that needs no lease pays neither the probe write nor the read.
    """

    state: ClusterState
    now: float = 0.0
    leader_heartbeat: Heartbeat | None = None
    leases_read: bool = True

    def leader_alive(self, ttl_s: float) -> bool:
        """The recorded leader's own boot heartbeats, fresher than ``ttl_s`` (seconds).
        Raises ``RuntimeError`` on a snapshot taken without leases."""
        if not self.leases_read:
            raise RuntimeError("snapshot taken without leases: leader liveness unknown")
        hb, leader = self.leader_heartbeat, self.state.leader
        return leader is not None and hb is not None and hb.boot_id == leader.boot_id and hb.age_s < ttl_s


@dataclass(frozen=True)
class EventCursor:
    """Where a reader of ``events.jsonl`` stopped (:meth:`ShareStore.read_events`): the file
    it read last, by ``(st_dev, st_ino)`` (a rotation renames the file, so the identity
    follows it to ``events.jsonl.1``), and the bytes of it consumed, up to a whole line.
    ``file`` is None before anything was read."""

    file: tuple[int, int] | None = None
    offset: int = 0
    # Where the reader stopped in the workers' timeline (``nodes/events/``), read beside the
    # control tree's by a control store; None before anything was read there.
    nodes: EventCursor | None = None


def mounted_trees(cluster: str, role: str) -> tuple[str, ...]:
    """The trees of the share a node of ``role`` mounts, relative to the share, parent first,
    each at the same path below node.yaml's ``share.path``: a control node the control-only
    tree ``<cluster>`` and the node tree ``<cluster>/nodes`` in it (its own mount: a file
    system of its own on the server, docs/security.md), a worker the node tree only. The one
    rule the exports of ``ek8s warewulf plan/apply`` (manager/wwconf.py) and the lab's
    machines (lab/runners.py) both follow. Raises ``ValueError`` for another role."""
    if role == WORKER:
        return (f"{cluster}/nodes",)
    if role == "control":
        return (cluster, f"{cluster}/nodes")
    raise ValueError(f"{role!r} is no node role (control, worker)")


def clusters_on(share: Path) -> list[str]:
    """The clusters ``share`` holds: its directories with a ``cluster.json``, sorted. Empty
    when ``share`` is missing; ``OSError`` when it cannot be listed."""
    try:
        return sorted(p.parent.name for p in share.glob("*/cluster.json"))
    except FileNotFoundError:
        return []


class ShareStore:
    """The cluster directory ``<share>/<cluster>/`` and its verbs.

    ``node`` is the name of the node using the store (it names the node's heartbeat and probe
    files). Every method may raise ``OSError`` from the file system and :class:`ShareError`.
    """

    # events.jsonl's rotation (docs/share-protocol.md); a test may lower them on one store.
    events_max_bytes = EVENTS_MAX_BYTES
    events_keep = EVENTS_KEEP

    def __init__(
        self, share: Path, cluster: str, node: str, record_invalid: bool = True, role: str = "control"
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"{role!r} is no share role ({', '.join(ROLES)})")
        self.role = role  # "worker": the node tree only (docs/share-protocol.md, "Two trees")
        self.record_invalid = record_invalid  # False: bad records are logged, not recorded as events
        self._beats: dict[str, int] = {}  # boot id -> mtime (ns) of our last heartbeat
        self._invalid_lock = threading.Lock()
        self._invalid_reported: dict[tuple[str, str], float] = {}  # (file, field) -> monotonic
        self._generation_seen = 0  # the last generation read, for events about bad records
        self.dir = share / cluster
        self.cluster = cluster
        self.node = node
        self.ops = OpCounters()  # this store's operations on the share (operation_counts())
        # The share's lock files and their modes; each FileLock (and filelock itself) is made
        # when first taken (_file_lock), so a boot reaches the share before importing filelock.
        self._lock_files: dict[str, tuple[Path, int]] = {
            "cluster": (self.dir / "cluster.lock", 0o600),
            "slots": (self.dir / "nodes" / "slots" / "slots.lock", 0o660),
            "events": (self.events_path.with_name("events.lock"), 0o600),
        }
        self._file_locks: dict[str, FileLock] = {}
        self._file_locks_made = threading.Lock()

    # -- layout: which tree each record lives in (docs/share-protocol.md, "Two trees") -----
    def _c(self, *parts: str) -> Path:
        """A path in the control-only tree ``<share>/<cluster>/``. Raises
        :class:`ControlTreeRefused` on a worker's store: workers do not mount that tree."""
        if self.role == WORKER:
            raise ControlTreeRefused(
                f"{'/'.join(parts)} is in the control-only tree, which a worker does not mount "
                f"(node {self.node}: only {self.nodes_dir} is its share)"
            )
        return self.dir.joinpath(*parts)

    def _n(self, *parts: str) -> Path:
        """A path in the node tree ``<share>/<cluster>/nodes/`` (every role)."""
        return self.nodes_dir.joinpath(*parts)

    def _own(self, *parts: str) -> Path:
        """A path in the tree of this store's role: the node tree for a worker, the control
        tree otherwise (heartbeats, the probe file, events)."""
        return self._n(*parts) if self.role == WORKER else self._c(*parts)

    @property
    def _state_path(self) -> Path:
        """``cluster.json``; a worker reads the node tree's public copy (same content)."""
        return self._own("cluster.json")

    def _heartbeat_path(self, node: str) -> Path:
        """``heartbeats/<node>`` in this store's role's tree: control nodes' heartbeats (proof
        for recovery, leases, slots) in the control tree, workers' in the node tree."""
        return self._own("heartbeats", node_name(node))

    @property
    def events_path(self) -> Path:
        """The timeline this store appends to: ``events.jsonl`` in the control tree, or a
        worker's ``nodes/events/events.jsonl`` (a control store reads both through
        :meth:`events` or :meth:`read_events`)."""
        return self._n("events", "events.jsonl") if self.role == WORKER else self._c("events.jsonl")

    def _event_files(self, path: Path | None = None) -> list[Path]:
        """``events.jsonl`` (``path``, default :attr:`events_path`), then ``events.jsonl.1``
        ... ``.<events_keep>``: newest first."""
        path = self.events_path if path is None else path
        return [path] + [path.with_name(f"events.jsonl.{k}") for k in range(1, self.events_keep + 1)]

    @property
    def admin_kubeconfig_path(self) -> Path:
        """``kube.config``, for clients that need a file path (the operator's kubectl)."""
        return self._c("kube.config")

    @property
    def token_path(self) -> Path:
        """``phylactery.token``: the control credential's current value (0600)."""
        return self._credential_path(CONTROL)

    @property
    def nodes_dir(self) -> Path:
        """``nodes/``: the node tree, the only part of the cluster's directory a worker will
        mount (docs/security.md, "The share split"). What a worker needs goes there."""
        return self.dir / "nodes"

    def _credential_path(self, kind: str) -> Path:
        """Where credential ``kind``'s current value lives: the control credential in the
        control-only tree, the worker credential in the node tree."""
        if kind == CONTROL:
            return self._c("phylactery.token")
        if kind == WORKER:
            return self._n("phylactery-worker.token")
        raise ValueError(f"{kind!r} is no credential (control, worker)")

    def _ca_paths(self) -> tuple[Path, Path]:
        """(certificate, key) of Phylactery's CA in the control-only tree."""
        return self._c("phylactery-ca.crt"), self._c("phylactery-ca.key")

    def phylactery_ca_path(self, role: str = "control") -> Path:
        """The Phylactery CA certificate a node of ``role`` trusts: control nodes and the
        operator the control-only tree's copy, workers the node tree's (which every worker
        can write, so no control node reads it). For ``curl --cacert`` and Prometheus."""
        return self._ca_paths()[0] if role == "control" else self._n("phylactery-ca.crt")

    # -- counted file system operations (every access to the share goes through these) --
    def operation_counts(self) -> dict[str, int]:
        """This store's share operations so far by kind, with ``total`` (:class:`OpCounters`)."""
        return self.ops.snapshot()

    def _atomic(self, path: Path, data: bytes | str) -> None:
        self.ops.add(writes=1, fsyncs=1, renames=1)
        if self.role != WORKER and self.nodes_dir in path.parents:
            write_atomic(path, data, NODE_FILE_MODE)  # for workers to read: group ANON_GID
            _share_group(path)
        else:
            write_atomic(path, data)

    def _exists(self, path: Path) -> bool:
        self.ops.add(stats=1)
        return path.exists()

    def _unlink(self, path: Path) -> None:
        self.ops.add(writes=1)
        path.unlink(missing_ok=True)

    def _glob(self, d: Path, pattern: str) -> list[Path]:
        """``d.glob(pattern)``, sorted; empty when ``d`` is missing (one listing)."""
        self.ops.add(stats=1)
        try:
            return sorted(d.glob(pattern))
        except FileNotFoundError:
            return []

    # -- set-up -----------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the cluster directory, its subdirectories and ``cluster.json`` (generation
        0, no leader) if missing. Idempotent; under the lock. Credentials are
        :meth:`ensure_credentials`' (control side only)."""
        if self.role == WORKER:
            # The node tree is the worker's mount, made by the control side or the Warewulf
            # server (``ek8s warewulf apply``); a worker only adds a missing directory it
            # writes, where it may (its modes are the control side's to set).
            for sub in NODE_WRITABLE_DIRS:
                self.ops.add(stats=1)
                if not self._n(sub).is_dir():
                    self._n(sub).mkdir(mode=NODE_WRITABLE_DIR_MODE, parents=True, exist_ok=True)
            return
        ensure_dir(self.dir)
        for sub in ("heartbeats", "members", "incarnations"):
            ensure_dir(self._c(sub))
        self.ensure_node_tree()
        self.ops.add(stats=4)
        if self._exists(self._state_path) and not self._exists(self._n("cluster.json")):
            moved = self.migrate_layout()  # the first start of this version on an old share
            if moved:
                log.info("share moved to the layout by role", extra={"moved": moved})
        with self._locked():
            if not self._exists(self._state_path):
                self._write_state(ClusterState(reason="share initialised", updated_at=time.time()))
            slot = self._c("join_slot.json")
            if not self._exists(slot):
                self._atomic(slot, json.dumps({"holder": None}))

    def ensure_node_tree(self) -> None:
        """Create the node tree ``nodes/`` with its modes and group (:data:`ANON_GID`, when
        this process may set it): ``nodes/`` and ``members/`` 0750, the directories workers
        write (:data:`NODE_WRITABLE_DIRS`) 0770. Control side only; idempotent."""
        self._c("nodes")
        dirs = [("", NODE_DIR_MODE), ("members", NODE_DIR_MODE)]
        dirs += [(d, NODE_WRITABLE_DIR_MODE) for d in NODE_WRITABLE_DIRS]
        for sub, mode in dirs:
            path = ensure_dir(self._n(sub) if sub else self.nodes_dir, mode)
            _share_group(path)
        self.ops.add(stats=2 + len(NODE_WRITABLE_DIRS))

    def migrate_layout(self, dry_run: bool = False) -> list[str]:
        """Move a share written before the split by role (every record in ``<cluster>/``) to
        the two trees (docs/share-protocol.md, "Migration"); control side only, under the lock,
        idempotent (a share already in the new layout gives ``[]``). Returns one line per
        change, ``from -> to``; with ``dry_run`` nothing is written.

        * workers' heartbeats (``heartbeats/<node>`` whose record says ``role: worker``) move
          to ``nodes/heartbeats/`` by rename (their mtime, the share's clock, is kept); one
          that is already there and newer wins, the old one is removed;
        * ``worker_join_slots.json`` moves to ``nodes/slots/``;
        * ``nodes/cluster.json``, ``nodes/join.json``, ``nodes/inventory.json`` and
          ``nodes/members/`` are written from
          the control tree's records. The worker copy of ``join.json`` withholds the server
          token when ``certificate_key`` holds a k3s secure token (``K10...``: the agent token,
          core/drivers/k3s.py), else the certificate key (kubeadm);
        * the worker credential gets the node tree's mode and group.

        Nothing is deleted but what was moved; the timeline (``events.jsonl``) stays where it
        is, with the workers' earlier events in it."""
        self._c("heartbeats")
        if not self._exists(self._state_path):
            return []
        done: list[str] = []
        if not dry_run:
            self.ensure_node_tree()
        with self._locked():
            for path in self._glob(self._c("heartbeats"), "*"):
                if not NODE_NAME_RE.match(path.name):
                    continue
                try:
                    record = self._record(HeartbeatRecord, path)
                except (OSError, InvalidRecord):
                    continue
                if record.role != WORKER:
                    continue
                target = self._n("heartbeats", path.name)
                done.append(f"heartbeats/{path.name} -> nodes/heartbeats/{path.name}")
                if dry_run:
                    continue
                if target.exists() and target.stat().st_mtime >= path.stat().st_mtime:
                    self._unlink(path)
                else:
                    self.ops.add(renames=1)
                    os.rename(path, target)
            slots = self._c("worker_join_slots.json")
            if self._exists(slots):
                done.append("worker_join_slots.json -> nodes/slots/worker_join_slots.json")
                if not dry_run:
                    self.ops.add(renames=1)
                    os.rename(slots, self._n("slots", "worker_join_slots.json"))
            if not self._exists(self._n("cluster.json")):
                done.append("cluster.json -> nodes/cluster.json (a copy)")
                if not dry_run:
                    self._write_public_state(self.read_state())
            if self._exists(self._c("join.json")) and not self._exists(self._n("join.json")):
                material = self._required(JoinMaterial, self._c("join.json"))
                k3s = material.certificate_key.startswith("K10")
                withheld = ("token",) if k3s else ("certificate_key",)
                done.append(f"join.json -> nodes/join.json (a copy without {withheld[0]})")
                if not dry_run:
                    self._write_worker_join_material(material, withheld)
            if self._exists(self._c("inventory.json")) and not self._exists(self._n("inventory.json")):
                done.append("inventory.json -> nodes/inventory.json (a copy)")
                if not dry_run:
                    self._atomic(self._n("inventory.json"), self._read_bytes(self._c("inventory.json")))
            for path in self._glob(self._c("members"), "*.json"):
                if not self._exists(self._n("members", path.name)):
                    done.append(f"members/{path.name} -> nodes/members/{path.name} (a copy)")
                    if not dry_run:
                        self._atomic(self._n("members", path.name), self._read_bytes(path))
            token = self._n("phylactery-worker.token")
            if self._exists(token) and token.stat().st_mode & 0o777 != NODE_FILE_MODE:
                done.append("nodes/phylactery-worker.token: mode 0640, group 65534")
                if not dry_run:
                    os.chmod(token, NODE_FILE_MODE)
                    _share_group(token)
        return done

    def _file_lock(self, which: str) -> FileLock:
        """The ``filelock.FileLock`` on lock file ``which`` (``cluster``, ``slots``, ``events``),
        made on first use (one per store and file, also when threads ask at once); acquiring
        it waits at most ``LOCK_TIMEOUT_S`` seconds, then raises ``filelock.Timeout``."""
        with self._file_locks_made:
            lock = self._file_locks.get(which)
            if lock is None:
                from filelock import FileLock  # ~15 ms of imports, paid by the first lock taken

                path, mode = self._lock_files[which]
                lock = self._file_locks[which] = FileLock(str(path), timeout=LOCK_TIMEOUT_S, mode=mode)
            return lock

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """``cluster.lock`` (control tree; refused on a worker's store)."""
        self._c("cluster.lock")
        self.ops.add(locks=1)
        try:
            with self._file_lock("cluster"):
                yield
        except TimeoutError as err:
            raise ShareError(f"{self.dir}/cluster.lock: not obtained in {LOCK_TIMEOUT_S}s") from err

    @contextmanager
    def _slots_locked(self) -> Iterator[None]:
        """``nodes/slots/slots.lock``: the worker join slots' lock, every role."""
        self.ops.add(locks=1)
        try:
            with self._file_lock("slots"):
                yield
        except TimeoutError as err:
            raise ShareError(f"{self.nodes_dir}/slots/slots.lock: not obtained in {LOCK_TIMEOUT_S}s") from err

    # -- reading records (core/records.py): a bad one is reported once and skipped --------
    def _read_bytes(self, path: Path) -> bytes:
        self.ops.add(reads=1)
        with open(path, "rb") as f:
            return f.read()

    def _record(self, record: type[T], path: Path) -> T:
        """``path`` parsed as ``record``. Raises ``FileNotFoundError`` and
        :class:`core.records.InvalidRecord` (not reported yet)."""
        return parse(record, self._read_bytes(path), str(path.relative_to(self.dir)))

    def _record_or_none(self, record: type[T], path: Path) -> T | None:
        """``path`` parsed as ``record``; None when it is missing or invalid (reported)."""
        try:
            return self._record(record, path)
        except FileNotFoundError:
            return None
        except InvalidRecord as invalid:
            self.report_invalid(invalid)
            return None

    def _required(self, record: type[T], path: Path) -> T:
        """``path`` parsed as ``record``. Raises ``FileNotFoundError``, and
        :class:`InvalidShareRecord` (reported) for a wrong shape."""
        try:
            return self._record(record, path)
        except InvalidRecord as invalid:
            self.report_invalid(invalid, logged=False)  # the caller says it, with the error
            raise InvalidShareRecord(invalid) from None

    def report_invalid(self, invalid: InvalidRecord, logged: bool = True) -> None:
        """Say that a share file does not have its record's shape: a log line (unless
        ``logged`` is False: the caller raises it) and, when the store records them, the event
        ``invalid_record`` (``file``, ``field``; ``node`` is this store's), at most once per
        file and field every :data:`INVALID_RECORD_EVERY_S`, so a bad file read every second
        does not flood ``events.jsonl``. Never raises: a share too broken to take the event
        is only logged."""
        key, now = (invalid.file, invalid.field), time.monotonic()
        with self._invalid_lock:
            last = self._invalid_reported.get(key)
            if last is not None and now - last < INVALID_RECORD_EVERY_S:
                return
            self._invalid_reported[key] = now
        fields = {"file": invalid.file, "field": invalid.field}
        if logged:
            log.warning(f"invalid record on the share, skipped: {invalid}", extra=fields)
        if not self.record_invalid:
            return
        try:
            self.record_event("invalid_record", self._generation_seen, str(invalid), **fields)
        except (OSError, ShareError) as err:
            log.warning("cannot record invalid_record", extra={**fields, "error": str(err)})

    def read_state(self) -> ClusterState:
        """Re-open ``cluster.json`` (close-to-open revalidation) and parse it. Raises
        :class:`InvalidShareRecord` (reported as ``invalid_record``) when it has a wrong shape."""
        try:
            state = self._required(ClusterState, self._state_path)
        except FileNotFoundError:
            if self.role != WORKER:
                raise
            # No control node has written the share yet: a worker waits for one.
            return ClusterState(reason="no control node has initialised the share yet")
        self._generation_seen = state.generation
        return state

    def share_now(self) -> float:
        """The share's clock, in Unix seconds: the mtime of our probe file, just touched."""
        self.ops.add(writes=1, stats=1)
        return touch(self._own("heartbeats", f".probe-{self.node}"))

    def read_heartbeat(self, node: str, now: float | None = None) -> Heartbeat | None:
        """The heartbeat of ``node`` with its age on the share clock, or None if absent.

        From this store's role's tree: on a control store the control tree's, which only
        control nodes (and the Warewulf server) can write, so it is what recovery, leases and
        slots take as proof; a worker's store reads the node tree. A worker's heartbeat is
        :meth:`read_worker_heartbeat`'s."""
        return self._heartbeat_at(self._heartbeat_path(node), node, now)

    def read_worker_heartbeat(self, node: str, now: float | None = None) -> Heartbeat | None:
        """The heartbeat of worker ``node`` from the node tree (``nodes/heartbeats/<node>``),
        or None. Every worker can write every file there: it is proof of nothing, only a reason
        to hold back (Phylactery's prune guard refuses while it is fresh)."""
        return self._heartbeat_at(self._n("heartbeats", node_name(node)), node, now)

    def read_any_heartbeat(self, node: str, now: float | None = None) -> Heartbeat | None:
        """``node``'s heartbeat from the control tree, else from the node tree (a control
        store; a worker's reads its tree only). For showing and for refusing (Phylactery's
        prune guard), never as proof that a node is gone or rebooted: a worker can write any
        node-tree heartbeat, a control node's name included."""
        now = self.share_now() if now is None else now
        found = self.read_heartbeat(node, now)
        if found is None and self.role != WORKER:
            found = self.read_worker_heartbeat(node, now)
        return found

    def _heartbeat_at(self, path: Path, node: str, now: float | None) -> Heartbeat | None:
        now = self.share_now() if now is None else now
        self.ops.add(reads=1)
        try:
            with open(path, "rb") as f:
                self.ops.add(stats=1)
                mtime = os.fstat(f.fileno()).st_mtime
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            d = parse(HeartbeatRecord, raw, f"heartbeats/{node}")
            if d.node != node:
                raise InvalidRecord(f"heartbeats/{node}", "node", f"names {d.node}, not {node}")
        except InvalidRecord as invalid:
            self.report_invalid(invalid)
            return None
        return Heartbeat(
            node=d.node,
            boot_id=d.boot_id,
            role=d.role,
            phase=d.phase,
            generation=d.generation,
            age_s=max(0.0, now - mtime),
            etcd_index=d.etcd_index,
        )

    def heartbeat_names(self) -> list[str]:
        """Every node that ever reported to this cluster's share, sorted: the names of the
        heartbeat files that are node names (RFC 1123 labels; anything else is no node's), in
        both trees on a control store (control nodes', workers'), the node tree on a worker's."""
        dirs = [self._n("heartbeats")] if self.role == WORKER else [self._c("heartbeats"), self._n("heartbeats")]
        names = {p.name for d in dirs for p in self._glob(d, "*") if NODE_NAME_RE.match(p.name)}
        return sorted(names)

    def exists(self) -> bool:
        """Whether the share holds this cluster (its ``cluster.json``)."""
        return self._exists(self._state_path)

    def snapshot(self, leases: bool = True) -> Snapshot:
        """Read ``cluster.json`` once; with ``leases`` also the share's clock (one probe
        touch) and the leader's heartbeat. Raises ``FileNotFoundError`` before
        :meth:`ensure`, :class:`ShareError` on bad JSON, ``OSError`` from the share."""
        state = self.read_state()
        if not leases:
            return Snapshot(state=state, leases_read=False)
        now = self.share_now()
        hb = self.read_heartbeat(state.leader.node, now) if state.leader else None
        return Snapshot(state=state, now=now, leader_heartbeat=hb)

    # -- writing ----------------------------------------------------------------------
    def _write_state(self, state: ClusterState) -> None:
        """``cluster.json`` (control tree), then its public copy for workers."""
        self._atomic(self._c("cluster.json"), json.dumps(state.to_json(), indent=1) + "\n")
        self._write_public_state(state)

    def _write_public_state(self, state: ClusterState) -> None:
        """``nodes/cluster.json``: what workers follow (generation, epoch, ready, the leader's
        name and address). The same record, so one parser reads both; nothing in it is a
        secret, and nothing in the node tree is proof of anything to a control node."""
        self._atomic(self._n("cluster.json"), json.dumps(state.to_json(), indent=1) + "\n")

    def heartbeat(
        self, boot_id: str, role: str, phase: str, generation: int, etcd_index: int | None = None
    ) -> str | None:
        """Rewrite ``heartbeats/<node>``; its new mtime is the share's clock.

        Returns the boot id of another writer when one rewrote this node's heartbeat since our
        last beat (two machines with the same node name: docs/recovery.md), else None."""
        path = self._heartbeat_path(self.node)
        other = None
        last = self._beats.get(boot_id)
        if last is not None:
            try:
                self.ops.add(stats=1)
                if os.stat(path).st_mtime_ns != last:
                    found = self._record(HeartbeatRecord, path).boot_id
                    other = found if found != boot_id else None
            except FileNotFoundError:
                pass
            except InvalidRecord as invalid:  # rewritten below with a valid one
                self.report_invalid(invalid)
        payload: dict[str, Any] = {
            "node": self.node,
            "boot_id": boot_id,
            "role": role,
            "phase": phase,
            "generation": generation,
        }
        if etcd_index is not None:
            payload["etcd_index"] = etcd_index
        self._atomic(path, json.dumps(payload))
        self.ops.add(stats=1)
        self._beats[boot_id] = os.stat(path).st_mtime_ns
        return other

    # -- incarnations and the re-form claim (docs/recovery.md) --------------------------
    def record_incarnation(self, boot_id: str, generation: int) -> None:
        """Write ``incarnations/<node>.json``: this node's etcd member was made in this boot."""
        record = Incarnation(node=self.node, boot_id=boot_id, generation=generation, at=time.time())
        self._atomic(self._c("incarnations", f"{self.node}.json"), json.dumps(asdict(record)) + "\n")

    def incarnations(self) -> dict[str, Incarnation]:
        """Every recorded incarnation by node name. A record with a wrong shape, or filed under
        another node's name, is reported (``invalid_record``) and skipped."""
        out = {}
        for p in self._glob(self._c("incarnations"), "*.json"):
            inc = self._named(Incarnation, p, "node")
            if inc is not None:
                out[inc.node] = inc
        return out

    def record_loss(self, proof: LossProof) -> None:
        """Write ``losses/<node>.json`` (replacing an earlier proof for that node): the data of
        the incarnation ``proof`` names is proven gone (a fence, an operator's acceptance).
        Readers: :func:`core.recovery.assess_share`."""
        d = self.dir / "losses"
        ensure_dir(d)
        self._atomic(d / f"{proof.node}.json", json.dumps(asdict(proof)) + "\n")

    def losses(self) -> dict[str, LossProof]:
        """Every recorded :class:`LossProof` by node name (one listing; nothing read when there
        is none). A bad record is reported (``invalid_record``) and proves nothing."""
        out = {}
        for p in self._glob(self.dir / "losses", "*.json"):
            proof = self._named(LossProof, p, "node")
            if proof is not None:
                out[proof.node] = proof
        return out

    def request_fence(self, inc: Incarnation, requested_by: str) -> bool:
        """File ``fence-requests/<node>.json`` for incarnation ``inc`` (the fence service's
        input, docs/recovery.md "Fencing"). Returns False, writing nothing, when a request for
        that same incarnation is already filed."""
        d = self.dir / "fence-requests"
        path = d / f"{inc.node}.json"
        held = self._record_or_none(FenceRequest, path) if self._exists(path) else None
        if held is not None and (held.boot_id, held.generation, held.incarnation_at) == (
            inc.boot_id,
            inc.generation,
            inc.at,
        ):
            return False
        ensure_dir(d)
        request = FenceRequest(inc.node, inc.boot_id, inc.generation, inc.at, requested_by, time.time())
        self._atomic(path, json.dumps(asdict(request)) + "\n")
        return True

    def fence_requests(self) -> dict[str, FenceRequest]:
        """Every filed :class:`FenceRequest` by node (a bad one is reported and skipped)."""
        out = {}
        for p in self._glob(self.dir / "fence-requests", "*.json"):
            req = self._named(FenceRequest, p, "node")
            if req is not None:
                out[req.node] = req
        return out

    def remove_fence_request(self, node: str) -> None:
        """Remove ``node``'s fence request (done, or no longer needed)."""
        self._unlink(self.dir / "fence-requests" / f"{node}.json")

    def _named(self, record: type[T], path: Path, key: str) -> T | None:
        """A per-node record (``<dir>/<node>.json``) whose ``key`` must name the node of its
        file name; None when missing, invalid or filed under another name (reported)."""
        found = self._record_or_none(record, path)
        if found is not None and getattr(found, key) != path.stem:
            name = getattr(found, key)
            self.report_invalid(InvalidRecord(str(path.relative_to(self.dir)), key, f"names {name}, not {path.stem}"))
            return None
        return found

    def heartbeats(self, names: list[str]) -> dict[str, Heartbeat | None]:
        """The heartbeats of ``names`` on one reading of the share's clock."""
        now = self.share_now()
        return {n: self.read_heartbeat(n, now) for n in names}

    def claim_reform(self, generation: int, boot_id: str, lease_ttl_s: float) -> str | None:
        """Claim the re-forming of etcd in ``generation`` (``reform.json``), so that exactly one
        survivor does it. Returns None when the claim is ours (new, or already ours), else the
        node that holds a claim from a boot that still heartbeats."""
        with self._locked():
            path = self._c("reform.json")
            held = self._record_or_none(ReformClaim, path)  # an invalid claim is no claim
            if held is not None and held.generation == generation and held.node != self.node:
                hb = self.read_heartbeat(held.node)
                if hb is not None and hb.boot_id == held.boot_id and hb.age_s < lease_ttl_s:
                    return held.node
            claim = {"generation": generation, "node": self.node, "boot_id": boot_id, "at": time.time()}
            self._atomic(path, json.dumps(claim) + "\n")
            return None

    def attempt_leadership(self, address: str, boot_id: str, decide: Any) -> tuple[ClusterState, str, str]:
        """Run one election round under the lock.

        ``decide(snapshot) -> (action, why)`` is the pure election rule
        (:func:`leader.election.decide`); action is ``"lead"``, ``"follow"`` or ``"join"``.
        On ``"lead"`` this writes the claim (``epoch + 1``; generation 1 on a fresh share),
        the ``leader`` file of the proof of concept and a first heartbeat before releasing
        the lock. Returns ``(state after the round, action, why)``.
        """
        if self.role == WORKER:  # workers never lead: the rule decides on the public record
            snap = self.snapshot(leases=False)
            action, why = decide(snap)
            if action == "lead":
                raise ControlTreeRefused(f"{self.node} is a worker: workers never lead")
            return snap.state, action, why
        with self._locked():
            snap = self.snapshot()
            action, why = decide(snap)
            state = snap.state
            if action == "lead":
                now = time.time()
                record = LeaderRecord(
                    node=self.node,
                    address=address,
                    boot_id=boot_id,
                    epoch=state.epoch + 1,
                    claimed_at=now,
                )
                state = replace(
                    state,
                    generation=max(state.generation, 1),
                    epoch=record.epoch,
                    leader=record,
                    ready=False,
                    ready_at=None,
                    reason=why,
                    updated_at=now,
                )
                self.heartbeat(boot_id, "control", "lead", state.generation)
                self._write_state(state)
                self._atomic(
                    self._c("leader"),
                    f"{self.node}\n" + json.dumps(asdict(record) | {"generation": state.generation}) + "\n",
                )
            return state, action, why

    @contextmanager
    def _fenced(self, fence: Fence) -> Iterator[ClusterState]:
        """The one path of leader-only writes: under the lock, with ``fence`` checked against
        ``cluster.json`` re-read there. Raises :class:`EpochSuperseded` (nothing written)."""
        with self._locked():
            state = self.read_state()
            if not fence.holds(state):
                current = f"generation {state.generation}, epoch {state.epoch}, leader "
                current += state.leader.node if state.leader else "none"
                raise EpochSuperseded(
                    f"claim of {fence.node} (generation {fence.generation}, epoch {fence.epoch}) "
                    f"superseded: the share records {current}"
                )
            yield state

    def publish_join_material(self, fence: Fence, material: JoinMaterial, withheld: tuple[str, ...] = WITHHELD) -> None:
        """Write ``join.json`` (leader-only, fenced): the first join material of the
        generation; and the workers' copy ``nodes/join.json`` without the fields
        ``withheld`` (the driver's :attr:`core.drivers.Driver.control_only_fields`: kubeadm's
        certificate key, k3s's server token; by default both secrets)."""
        with self._fenced(fence):
            self._write_join_material(material, withheld)

    def _write_join_material(self, material: JoinMaterial, withheld: tuple[str, ...]) -> None:
        self._atomic(self._c("join.json"), json.dumps(asdict(material), indent=1) + "\n")
        self._write_worker_join_material(material, withheld)

    def _write_worker_join_material(self, material: JoinMaterial, withheld: tuple[str, ...]) -> None:
        """``nodes/join.json``: ``material`` without the fields ``withheld``."""
        blank: dict[str, Any] = {name: "" for name in withheld}
        if "certificate_key" in withheld:
            blank["certificate_key_expires_at"] = 0.0
        public = replace(material, **blank)
        self._atomic(self._n("join.json"), json.dumps(asdict(public), indent=1) + "\n")

    def write_admin_kubeconfig(self, fence: Fence, content: bytes) -> None:
        """``kube.config`` (leader-only, fenced): the admin kubeconfig, for the operator only,
        never a join credential."""
        with self._fenced(fence):
            self._atomic(self.admin_kubeconfig_path, content)

    def mark_ready(self, fence: Fence) -> ClusterState:
        """Declare the generation ready (``cluster.json`` and ``leader_ready``; leader-only,
        fenced). Returns the new state; raises :class:`EpochSuperseded` for a deposed leader,
        which must reset itself instead."""
        with self._fenced(fence) as state:
            now = time.time()
            state = replace(state, ready=True, ready_at=now, reason="control plane up", updated_at=now)
            self._write_state(state)
            self._atomic(
                self._c("leader_ready"),
                json.dumps({"generation": state.generation, "epoch": fence.epoch, "node": self.node, "ready_at": now})
                + "\n",
            )
            return state

    def release_leadership(self, fence: Fence, reason: str) -> bool:
        """Give up a claim whose generation is not ready yet (an agent stopped during init),
        so that another control node takes over now instead of after the lease. Returns
        whether it was released; a ready generation, or a claim already superseded, is kept."""
        try:
            with self._fenced(fence) as state:
                if state.ready:
                    return False
                self._write_state(replace(state, leader=None, reason=reason, updated_at=time.time()))
                self._unlink(self._c("leader"))
                return True
        except EpochSuperseded:
            return False

    def start_generation(
        self, reason: str, expected: int | None = None, restore_from: Path | None = None
    ) -> ClusterState | None:
        """Begin generation ``current + 1`` with no leader (``ek8s reset``, a lost cluster).

        With ``expected``, only if the generation is still ``expected`` (several nodes may
        conclude the same thing at once; one bump is enough). Removes the previous
        generation's ``leader``, ``leader_ready``, ``join.json`` and ``kube.config``. Without
        ``restore_from`` the new generation starts from nothing: it has no parent in the
        snapshots' lineage, so every snapshot of the earlier generations is set aside into
        ``snapshots/old/`` (:meth:`set_aside_snapshots`; recorded as the event
        ``snapshots_set_aside``) and no later restore takes the pre-reset data silently.
        Returns the new state, or None when another node already moved on.
        """
        moved: list[Path] = []
        with self._locked():
            state = self.read_state()
            if expected is not None and state.generation != expected:
                return None
            state = ClusterState(
                generation=state.generation + 1,
                epoch=state.epoch,
                leader=None,
                ready=False,
                reason=reason,
                updated_at=time.time(),
                restore_from=str(restore_from) if restore_from else None,
            )
            self._write_state(state)
            for name in ("leader_ready", "leader", "join.json", "kube.config"):
                self._unlink(self._c(name))
            for name in ("join.json", "slots/worker_join_slots.json"):
                self._unlink(self._n(*name.split("/")))
            self._atomic(self._c("join_slot.json"), json.dumps({"holder": None}))
            if restore_from is None:
                moved = self.set_aside_snapshots(below=state.generation)
        if moved:
            gens = sorted({n.generation for p in moved if (n := snapshot_name(p.name))})
            message = (
                f"generation {state.generation} starts from nothing: {len(moved)} snapshots of generation "
                f"{', '.join(map(str, gens))} moved to snapshots/{SET_ASIDE_DIR}/ (kept, never restored by themselves)"
            )
            log.info(message)
            self.record_event("snapshots_set_aside", state.generation, message, count=len(moved))
        return state

    def rebuild(self, reason: str) -> ClusterState:
        """The operator's rebuild (``ek8s reset``, ``ek8s bench``): a new generation, recorded
        as the event ``generation_started``. Returns the new state."""
        state = self.start_generation(reason)
        assert state is not None  # without ``expected`` a new generation always starts
        self.record_event("generation_started", state.generation, reason)
        return state

    # -- join material and admin kubeconfig -------------------------------------------------
    def refresh_join_material(self, material: JoinMaterial, withheld: tuple[str, ...] = WITHHELD) -> None:
        """Replace ``join.json`` with refreshed material (any live control node's Phylactery,
        not only the leader): only while ``material.generation`` is the current, ready
        generation. Raises :class:`EpochSuperseded` otherwise (nothing written)."""
        with self._locked():
            state = self.read_state()
            if not state.ready or state.generation != material.generation:
                raise EpochSuperseded(
                    f"join material of generation {material.generation} not written: the share records "
                    f"generation {state.generation} ({'ready' if state.ready else 'not ready'})"
                )
            self._write_join_material(material, withheld)

    def read_join_material(self) -> JoinMaterial:
        """Parse ``join.json`` (a worker's store: the node tree's copy, without the withheld
        secrets). Raises ``FileNotFoundError`` before the leader published it,
        :class:`InvalidShareRecord` (reported) when it has a wrong shape."""
        return self._required(JoinMaterial, self._own("join.json"))

    def read_admin_kubeconfig(self) -> bytes | None:
        """``kube.config`` for the operator (``ek8s kubeconfig``), or None before a leader
        wrote it for the current generation."""
        self.ops.add(reads=1)
        try:
            return self.admin_kubeconfig_path.read_bytes()
        except FileNotFoundError:
            return None

    def read_token(self) -> str:
        """The control credential's current value (:meth:`read_credential` of ``control``)."""
        return self.read_credential(CONTROL)

    # -- Phylactery's credentials and CA (core/credentials.py, core/tls.py) --------------
    def ensure_credentials(self) -> None:
        """Make what Phylactery's authorisation and TLS need, if missing (control side only:
        Phylactery at its start, ``ek8s credentials rotate``): the control credential
        (``phylactery.token``), the worker credential (``nodes/phylactery-worker.token``),
        the CA (``phylactery-ca.key``, then ``phylactery-ca.crt``; both made again when either
        is missing) and its copy in the node tree (``nodes/phylactery-ca.crt``, written again
        when it differs from the control tree's: a worker may have changed it). Idempotent;
        under the lock."""
        from core.tls import make_ca

        self.ensure_node_tree()
        with self._locked():
            for kind in KINDS:
                path = self._credential_path(kind)
                if not self._exists(path):
                    self._atomic(path, new_token() + "\n")
            cert_path, key_path = self._ca_paths()
            if not (self._exists(key_path) and self._exists(cert_path)):
                cert, key = make_ca(self.cluster)
                self._atomic(key_path, key)
                self.ops.add(writes=1, fsyncs=1, renames=1)
                write_atomic(cert_path, cert, PUBLIC_FILE_MODE)
                log.info("Phylactery CA made", extra={"file": str(cert_path)})
            cert = self._read_bytes(cert_path)
            copy = self.phylactery_ca_path("worker")
            try:
                same = self._read_bytes(copy) == cert
            except FileNotFoundError:
                same = False
            if not same:
                self.ops.add(writes=1, fsyncs=1, renames=1)
                write_atomic(copy, cert, PUBLIC_FILE_MODE)

    def read_credential(self, kind: str) -> str:
        """Credential ``kind``'s current value, what a client sends (``control`` or
        ``worker``, :mod:`core.credentials`). Raises ``FileNotFoundError`` before any
        Phylactery made it, :class:`InvalidShareRecord` (reported) when the file is not one
        word of printable characters, ``ValueError`` for an unknown kind."""
        path = self._credential_path(kind)
        token = self._read_bytes(path).decode("utf-8", "replace").strip()
        if not credential_word(token):
            invalid = InvalidRecord(str(path.relative_to(self.dir)), "", "not one word of printable characters")
            self.report_invalid(invalid)
            raise InvalidShareRecord(invalid)
        return token

    def read_credentials(self, kind: str) -> CredentialSet:
        """What a server accepts for ``kind``: the current value and, after a rotation, the
        previous one until its end (``<file>.previous``; a previous record with a wrong shape
        is reported and ignored). Raises as :meth:`read_credential`."""
        current = self.read_credential(kind)
        path = self._credential_path(kind)
        previous = self._record_or_none(PreviousCredential, path.with_name(path.name + ".previous"))
        if previous is None:
            return CredentialSet(kind, current)
        return CredentialSet(kind, current, previous.token, previous.valid_until)

    def rotate_credentials(self, kinds: tuple[str, ...] = KINDS, grace_s: float = GRACE_S) -> list[CredentialSet]:
        """Replace each credential of ``kinds`` with a new value; the old one stays accepted
        for ``grace_s`` seconds (``<file>.previous``, written before the new value, so a
        reader in between sees the old value twice, never neither), or not at all with
        ``grace_s`` 0. Under the lock. Returns the new sets. Phylacteries re-read credentials
        within seconds (``phylactery/auth.py``); clients read them before every call."""
        now = time.time()
        out = []
        self.ensure_node_tree()
        with self._locked():
            for kind in kinds:
                path = self._credential_path(kind)
                previous_path = path.with_name(path.name + ".previous")
                try:
                    old: str | None = self.read_credential(kind)
                except (FileNotFoundError, InvalidShareRecord):
                    old = None
                if old is not None and grace_s > 0:
                    record = PreviousCredential(token=old, valid_until=now + grace_s, rotated_at=now)
                    self._atomic(previous_path, json.dumps(asdict(record)) + "\n")
                else:
                    self._unlink(previous_path)
                self._atomic(path, new_token() + "\n")
                out.append(self.read_credentials(kind))
        return out

    def read_phylactery_ca(self, role: str = "control") -> bytes:
        """The Phylactery CA certificate (PEM) a node of ``role`` trusts
        (:meth:`phylactery_ca_path`). Raises ``FileNotFoundError`` before the first
        Phylactery made it."""
        return self._read_bytes(self.phylactery_ca_path(role))

    def read_phylactery_ca_pair(self) -> tuple[bytes, bytes]:
        """The CA's certificate and key (PEM), from the control-only tree: what a Phylactery
        issues its server certificate with. Raises ``FileNotFoundError``."""
        cert_path, key_path = self._ca_paths()
        return self._read_bytes(cert_path), self._read_bytes(key_path)

    # -- members ----------------------------------------------------------------------
    def register_member(self, member: MemberRecord) -> None:
        """Write ``members/<name>.json`` (each node writes only its own record; the record was
        validated when it was made, :class:`core.records.MemberRecord`)."""
        self._atomic(self._c("members", f"{member.name}.json"), json.dumps(asdict(member)) + "\n")
        # The workers' copy: where they send their prune (TLS against the CA vouches for it).
        self._atomic(self._n("members", f"{member.name}.json"), json.dumps(asdict(member)) + "\n")

    def remove_member(self, name: str) -> None:
        """Delete ``members/<name>.json`` (a control node taken out of service for good).
        Raises ``ValueError`` when ``name`` is not a node name."""
        self._unlink(self._c("members", f"{node_name(name)}.json"))
        self._unlink(self._n("members", f"{node_name(name)}.json"))

    def members(self, generation: int | None = None) -> list[MemberRecord]:
        """Registered control nodes, sorted by name; only ``generation``'s if given.

        HAProxy backends and keepalived peers come from every record whatever its generation:
        the set of control nodes outlives a generation, and right after a new one starts its
        members re-register one by one (dead backends are marked DOWN by health checks).

        Every record is validated first (:class:`core.records.MemberRecord`: an RFC 1123 name
        that is its file's, an IP address, a URL to that address): one that is not is reported
        as ``invalid_record`` and left out, so it never reaches haproxy.cfg or keepalived.conf."""
        out = []
        for p in self._glob(self._own("members"), "*.json"):
            m = self._named(MemberRecord, p, "name")
            if m is not None and (generation is None or m.generation == generation):
                out.append(m)
        return out

    # -- the rolling upgrade (core/upgrade.py) ----------------------------------------
    @property
    def _rollout_path(self) -> Path:
        """``rollout.json``: control-only tree (``ek8s upgrade`` on the Warewulf server)."""
        return self._c("rollout.json")

    def read_rollout(self) -> RolloutRecord | None:
        """``rollout.json`` (:class:`core.records.RolloutRecord`), or None when there is none.
        Raises :class:`InvalidShareRecord` (reported as ``invalid_record``) for a wrong shape:
        a rollout nobody can read must stop ``ek8s upgrade``, not start another."""
        try:
            return self._required(RolloutRecord, self._rollout_path)
        except FileNotFoundError:
            return None

    def write_rollout(self, rollout: RolloutRecord, expect_revision: int | None) -> RolloutRecord:
        """Write ``rollout`` with ``revision`` one above the stored one, under the lock, if the
        stored record's revision is ``expect_revision`` (None: there must be none, or only a
        finished one: ``done`` or ``rolled_back``). Returns what was written. Raises
        :class:`ShareError` when another writer got there first (compare and swap: two
        ``ek8s upgrade`` runs never both drive one cluster)."""
        with self._locked():
            try:
                stored = self._record(RolloutRecord, self._rollout_path)
            except FileNotFoundError:
                stored = None
            except InvalidRecord as invalid:
                self.report_invalid(invalid, logged=False)
                raise InvalidShareRecord(invalid) from None
            if expect_revision is None:
                if stored is not None and stored.phase not in ("done", "rolled_back"):
                    raise ShareError(f"a rollout to {stored.to_version} is {stored.phase} (revision {stored.revision})")
            elif stored is None or stored.revision != expect_revision:
                seen = "none" if stored is None else f"revision {stored.revision}"
                raise ShareError(f"rollout.json changed under us (expected revision {expect_revision}, found {seen})")
            rev = 0 if stored is None else stored.revision + 1
            out = replace(rollout, revision=rev)
            self._atomic(self._rollout_path, json.dumps(asdict(out), indent=1) + "\n")
            return out

    def forget_node(self, name: str) -> list[str]:
        """Forget a node taken out of service for good (``ek8s node remove``): its heartbeat
        (control tree or node tree), incarnation, member record and its node tree copy, its
        worker join slot and the control-plane join slot if it holds it (per-node credentials,
        once the share holds any, belong here too). Control side only. Returns the records
        removed (paths relative to the cluster directory); a replacement with the same name
        then starts from nothing here. Raises ``ValueError`` when ``name`` is not a node name."""
        node_name(name)
        removed = []
        paths = [
            self._c("heartbeats", name),
            self._n("heartbeats", name),
            self._c("incarnations", f"{name}.json"),
            self._c("members", f"{name}.json"),
            self._n("members", f"{name}.json"),
        ]
        for path in paths:
            if self._exists(path):
                self._unlink(path)
                removed.append(str(path.relative_to(self.dir)))
        with self._slots_locked():
            slots = self._worker_slots_path
            held = self._record_or_none(WorkerJoinSlots, slots)
            if held is not None and name in held.holders:
                rest = {n: h for n, h in held.holders.items() if n != name}
                self._atomic(slots, json.dumps(asdict(replace(held, holders=rest))))
                removed.append(str(slots.relative_to(self.dir)))
        with self._locked():
            slot = self._record_or_none(JoinSlot, self._c("join_slot.json"))
            if slot is not None and slot.holder is not None and slot.holder.node == name:
                self._atomic(self._c("join_slot.json"), json.dumps({"holder": None}))
                removed.append("join_slot.json")
        return removed

    # -- the published inventory (labels, taints, roles; the cluster's node list) --------
    def publish_inventory(self, inventory: PublishedInventory) -> None:
        """Write ``inventory.json`` (0600, atomic) and its node tree copy
        ``nodes/inventory.json`` (0640, group :data:`ANON_GID`: a worker's agent reads it
        before it joins, and cannot write it), making the cluster directory and its node tree
        if the cluster never booted yet. Written by the operator's commands on the Warewulf
        server; control side only."""
        ensure_dir(self._c())
        self.ensure_node_tree()
        data = json.dumps(asdict(inventory), indent=1) + "\n"
        self._atomic(self._c("inventory.json"), data)
        self._atomic(self._n("inventory.json"), data)

    def read_inventory(self) -> PublishedInventory | None:
        """``inventory.json``, or None when none was published (or it has a wrong shape:
        reported as ``invalid_record``). A worker's store reads the node tree's copy, the
        control side the control tree's."""
        return self._record_or_none(PublishedInventory, self._own("inventory.json"))

    # -- etcd snapshots ---------------------------------------------------------------
    def save_snapshot(
        self,
        generation: int,
        data: bytes,
        keep: int,
        *,
        revision: int,
        cluster_id: int,
        secret: str | None = None,
    ) -> Path:
        """Write ``snapshots/gen<G>-r<revision>-<cluster id hex>-<unix ms>.db`` (0600, atomic);
        with ``secret`` (what a restore of this snapshot needs beside the file: k3s's server
        token secret, with which k3s encrypted its bootstrap data in etcd) ``.db.token`` beside
        it (0600); then its checksum (``.db.sha256``, ``sha256sum`` format, written last: a
        snapshot without one is incomplete). Then retention, per generation: of generation
        ``generation``'s snapshots all but the newest ``keep`` (by revision, not by clock:
        :attr:`core.records.SnapshotName.order`) are deleted with their companions; another
        generation's are never touched here (an older generation's are the lineage's parent,
        or are set aside by :meth:`set_aside_snapshots`).

        ``revision`` is the etcd revision the snapshot holds at least and ``cluster_id`` the
        etcd cluster id (uint64), both from the ``header`` of ``maintenance/status`` asked of
        the member the snapshot is taken from, just before it (etcd's snapshot stream carries
        no header: etcd ``server/etcdserver/api/v3rpc/maintenance.go`` ``Snapshot``, v3.5.16;
        the backend snapshot it streams is taken after the request arrives and commits the
        pending batch first, ``server/mvcc/backend/backend.go`` ``Snapshot``, so it holds
        every revision applied before). The unix ms is this writer's clock: a tie-break and
        for display only. Returns the new file. Raises ``OSError`` from the share and
        ``ValueError`` for a negative revision or a cluster id outside uint64."""
        if revision < 0 or not 0 <= cluster_id < 2**64:
            raise ValueError(f"snapshot revision {revision} / cluster id {cluster_id}: out of range")
        self.ops.add(stats=1)
        d = ensure_dir(self._c("snapshots"))
        name = SnapshotName(generation, revision, f"{cluster_id:016x}", int(time.time() * 1000))
        path = d / name.file_name()
        write_atomic(path, data)
        if secret is not None:
            self._atomic(_secret_path(path), secret + "\n")
        self._atomic(_checksum_path(path), f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
        same = [p for p, n in self._snapshot_names(d) if n.generation == generation]
        for old in same[keep:]:
            self._remove_snapshot(old)
        return path

    def newest_valid_snapshot(self, with_secret: bool = False) -> Path | None:
        """The snapshot a new generation restores: the newest valid one of the highest
        generation that has a valid one, among those in ``snapshots/`` (the current lineage);
        newest by etcd revision within the generation, never by a writer's clock. When the
        current generation has none yet (it was restored and lost again before its first
        snapshot), that is the previous generation's newest: the snapshot the current one was
        restored from, or one at least as new, which is the lineage's parent. Generations
        before one that started from nothing are not there: starting it set their snapshots
        aside (:meth:`set_aside_snapshots`), and they are never restored by themselves.

        Valid: its content matches its checksum (and, ``with_secret``, it has its secret beside
        it: k3s cannot restore a snapshot without the token it was taken with). A snapshot
        that does not (cut short, damaged on the share, no checksum yet) is skipped; a checksum
        file that is not ``sha256sum``'s line for its snapshot is reported as
        ``invalid_record`` too. None when no snapshot is valid."""
        for path in self.snapshots():
            if with_secret and self.snapshot_secret(path) is None:
                continue
            try:
                text = self._read_bytes(_checksum_path(path)).decode("utf-8", "replace")
                expected = snapshot_checksum(text, path.name)
                actual = hashlib.sha256(self._read_bytes(path)).hexdigest()
            except OSError:
                continue
            except InvalidRecord as invalid:
                self.report_invalid(invalid)
                continue
            if expected == actual:
                return path
        return None

    def snapshot_secret(self, snapshot: Path) -> str | None:
        """The secret kept beside ``snapshot`` (``.db.token``), or None when it has none (or
        one that is not a single word: reported as ``invalid_record``)."""
        try:
            text = self._read_bytes(_secret_path(snapshot)).decode("utf-8", "replace")
            return parse_snapshot_secret(text, snapshot.name)
        except OSError:
            return None
        except InvalidRecord as invalid:
            self.report_invalid(invalid)
            return None

    def snapshots(self, set_aside: bool = False) -> list[Path]:
        """Saved snapshots in ``snapshots/`` (with ``set_aside``: in ``snapshots/old/``), newest
        data first: by (generation, etcd revision), the writer's clock only breaking ties
        (:attr:`core.records.SnapshotName.order`; a name without a revision, from before
        revisions were recorded, sorts below every known revision of its generation). A file
        ``gen*-*.db`` of another name is reported (``invalid_record``, field ``name``) and left
        out."""
        d = self._c("snapshots", SET_ASIDE_DIR) if set_aside else self._c("snapshots")
        return [p for p, _ in self._snapshot_names(d)]

    def snapshot_listing(self, set_aside: bool = False) -> list[tuple[Path, SnapshotName]]:
        """:meth:`snapshots` with what each name says (:class:`core.records.SnapshotName`)."""
        d = self._c("snapshots", SET_ASIDE_DIR) if set_aside else self._c("snapshots")
        return self._snapshot_names(d)

    def _snapshot_names(self, d: Path) -> list[tuple[Path, SnapshotName]]:
        found = []
        for p in self._glob(d, "gen*-*.db"):
            parsed = snapshot_name(p.name)
            if parsed is None:
                why = "not gen<G>-r<revision>-<cluster id hex>-<unix ms>.db (nor gen<G>-<unix ms>.db)"
                self.report_invalid(InvalidRecord(f"{d.name}/{p.name}", "name", why))
            else:
                found.append((parsed, p))
        found.sort(key=lambda np: (np[0].order, np[1].name), reverse=True)
        return [(p, n) for n, p in found]

    def _remove_snapshot(self, path: Path) -> None:
        """Delete a snapshot: its checksum first (a snapshot without one is never restored),
        then the file, then its secret."""
        self._unlink(_checksum_path(path))
        self._unlink(path)
        self._unlink(_secret_path(path))

    def set_aside_snapshots(self, below: int) -> list[Path]:
        """Move every snapshot of a generation below ``below`` from ``snapshots/`` into
        ``snapshots/old/`` (same names; 0700 directory), each with its ``.db.token`` and
        ``.db.sha256``: kept for the operator, listed by ``ek8s status``, never restored by
        :meth:`newest_valid_snapshot` (an operator who wants one back moves it, with its
        companions, into ``snapshots/``). The checksum moves first, so that a snapshot cut off
        from it half-way is never restored from ``snapshots/``; a name already taken in
        ``old/`` is replaced. Called when a generation starts from nothing (``ek8s reset``,
        ``reinit``, a lost cluster without a snapshot): its lineage has no parent. Returns the
        moved snapshots' new paths, newest first. Raises ``OSError`` from the share."""
        d = self._c("snapshots")
        moving = [p for p, n in self._snapshot_names(d) if n.generation < below]
        if not moving:
            return []
        old = ensure_dir(d / SET_ASIDE_DIR)
        moved = []
        for path in moving:
            for part in (_checksum_path(path), path, _secret_path(path)):
                self.ops.add(renames=1)
                try:
                    os.replace(part, old / part.name)
                except FileNotFoundError:
                    continue
            moved.append(old / path.name)
        return moved

    # -- control-plane join slot ------------------------------------------------------
    def try_join_slot(self, boot_id: str, ttl_s: float) -> str | None:
        """Take the control-plane join slot unless a live node holds it.

        Control-plane joins run one at a time (each adds an etcd member; etcd refuses a second
        ``member add`` while the previous member has not started). The slot is a lease, not
        a held lock: its holder is dead once its heartbeat is older than ``ttl_s``. Returns
        None when taken, or the name of the live holder.
        """
        with self._locked():
            path = self._c("join_slot.json")
            holder = self.join_slot_holder(ttl_s)
            if holder is not None and holder != self.node:
                return holder
            mine = SlotHolder(node=self.node, boot_id=boot_id, since=time.time())
            self._atomic(path, json.dumps(asdict(JoinSlot(holder=mine))))
            return None

    def join_slot_holder(self, ttl_s: float) -> str | None:
        """The node that holds the control-plane join slot and is alive (its heartbeat, from
        the boot that took the slot, is younger than ``ttl_s``), or None. A slot file with a
        wrong shape holds nobody (reported as ``invalid_record``; the next taker rewrites it)."""
        slot = self._record_or_none(JoinSlot, self._c("join_slot.json"))
        holder = slot.holder if slot is not None else None
        if holder is None:
            return None
        hb = self.read_heartbeat(holder.node)
        if hb is not None and hb.boot_id == holder.boot_id and hb.age_s < ttl_s:
            return holder.node
        return None

    def release_join_slot(self) -> None:
        """Free the slot if we hold it."""
        with self._locked():
            path = self._c("join_slot.json")
            slot = self._record_or_none(JoinSlot, path)
            if slot is not None and slot.holder is not None and slot.holder.node == self.node:
                self._atomic(path, json.dumps({"holder": None}))

    # -- worker join slots and their admission window (core/admission.py) ---------------
    @property
    def _worker_slots_path(self) -> Path:
        """``nodes/slots/worker_join_slots.json``: in the node tree, which workers mount."""
        return self._n("slots", "worker_join_slots.json")

    def _worker_slots(self, ceiling: int, initial: float = INITIAL) -> tuple[WorkerJoinSlots, Window]:
        """``worker_join_slots.json`` (empty when missing or of a wrong shape, reported) and
        its window (a new generation's, ``initial`` slots, when the file has none)."""
        slots = self._record_or_none(WorkerJoinSlots, self._worker_slots_path) or WorkerJoinSlots()
        if slots.window is None:
            return slots, Window.start(ceiling, initial)
        return slots, Window(slots.window, slots.decreased_at)

    def _write_worker_slots(self, holders: dict[str, WorkerSlot], window: Window) -> None:
        record = WorkerJoinSlots(holders=holders, window=round(window.size, 3), decreased_at=window.decreased_at)
        self._atomic(self._worker_slots_path, json.dumps(asdict(record)))

    def try_worker_join_slot(
        self, boot_id: str, ceiling: int, hold_s: float, initial: float = INITIAL
    ) -> tuple[int, int] | None:
        """Take a worker join slot (``worker_join_slots.json``) if fewer workers than the
        admission window allows hold one (:meth:`core.admission.Window.slots`, at most
        ``ceiling``, the operator's ``kubernetes.worker_join_concurrency``): each joining
        worker costs the API servers TLS handshakes, bootstrap-token lookups and a CSR, and at
        100 workers together the lab's API behind the VIP stopped answering its health checks
        (docs/benchmarks.md, scale). A slot is held until its holder releases it or for
        ``hold_s`` seconds (workers heartbeat too rarely to judge a holder by it; a crashed
        holder costs its slot that long); a node that holds one and booted again takes it
        over. The file is read without the lock first, so a worker waiting for a full window
        costs one read per look; the take is a read-decide-write under
        ``nodes/slots/slots.lock`` with an atomic rename, which keeps the window. ``initial``:
        a new generation's window (the ceiling for ``worker_join_admission: fixed``).

        Returns None when this node holds a slot now, else (live holders, slots allowed)."""

        def live(slots: WorkerJoinSlots) -> dict[str, WorkerSlot]:
            now = time.time()  # the nodes' clocks (NTP), not the share's: hold_s is minutes
            return {n: h for n, h in slots.holders.items() if now - h.since < hold_s}

        slots, window = self._worker_slots(ceiling, initial)
        peek, allowed = live(slots), window.slots(ceiling)
        if self.node not in peek and len(peek) >= allowed:
            return len(peek), allowed
        with self._slots_locked():
            slots, window = self._worker_slots(ceiling, initial)
            holders, allowed = live(slots), window.slots(ceiling)
            if self.node not in holders and len(holders) >= allowed:
                return len(holders), allowed
            holders[self.node] = WorkerSlot(boot_id=boot_id, since=time.time())
            self._write_worker_slots(holders, window)
            return None

    def release_worker_join_slot(self) -> None:
        """Give back this node's worker join slot, if it holds one (the window stays)."""
        with self._slots_locked():
            slots = self._record_or_none(WorkerJoinSlots, self._worker_slots_path)
            holders = dict(slots.holders) if slots is not None else {}
            if slots is not None and holders.pop(self.node, None) is not None:
                self._atomic(self._worker_slots_path, json.dumps(asdict(replace(slots, holders=holders))))

    def worker_join_signal(self, signal: Signal, ceiling: int) -> Window:
        """Apply what this worker saw of the control plane (:class:`core.admission.Signal`) to
        the admission window: one read-decide-write under ``nodes/slots/slots.lock``, written
        with an atomic rename (temp + fsync + rename), so a crash leaves the old window or the new one.
        Returns the window after it."""
        with self._slots_locked():
            slots, window = self._worker_slots(ceiling)
            after = window.after(signal, time.time(), ceiling)
            if after != window or slots.window is None:
                self._write_worker_slots(dict(slots.holders), after)
            return after

    def worker_join_window(self, ceiling: int) -> Window:
        """The admission window as the share holds it now (one read, no lock)."""
        return self._worker_slots(ceiling)[1]

    # -- events -----------------------------------------------------------------------
    def record_event(self, event: str, generation: int, message: str = "", **fields: Any) -> None:
        """Append one JSON line to ``events.jsonl`` (``t`` in Unix seconds, this node's clock)
        under ``events.lock``; when that makes the file ``events_max_bytes`` or longer, rotate
        it under the same lock: ``events.jsonl.<k>`` becomes ``.<k+1>`` (the oldest, at
        ``events_keep``, is deleted) and ``events.jsonl`` becomes ``.1``, so the next event
        starts a new file. The size is the append's own file offset, no extra round trip."""
        line = {
            "t": time.time(),
            "node": self.node,
            "generation": generation,
            "event": event,
            "message": message,
            **fields,
        }
        self.ops.add(locks=1, writes=1, fsyncs=1)
        with self._file_lock("events"):
            size = append_line(self.events_path, json.dumps(line, sort_keys=False))
            if size >= self.events_max_bytes:
                self._rotate_events()

    def _rotate_events(self) -> None:
        """Shift the timeline's files one place older (caller holds ``events.lock``)."""
        files = self._event_files()
        self._unlink(files[-1])
        for newer, older in zip(reversed(files[:-1]), reversed(files[1:]), strict=True):
            self.ops.add(renames=1)
            try:
                os.rename(newer, older)
            except FileNotFoundError:
                continue

    def events(self, since: float | None = None) -> list[dict[str, Any]]:
        """Every event, oldest first, across ``events.jsonl`` and its rotated files; with
        ``since`` (Unix seconds) only those with ``t >= since``, and rotated files last written
        well before it (their mtime, the share's clock, older than ``since`` minus
        ``EVENTS_CLOCK_SKEW_S``) are not read. Unparseable lines are skipped."""
        found, _ = self.read_events(None, since)
        return found if since is None else [e for e in found if float(e.get("t", 0)) >= since]

    def read_events(
        self, cursor: EventCursor | None = None, since: float | None = None
    ) -> tuple[list[dict[str, Any]], EventCursor]:
        """The events appended after ``cursor`` (None: every event), oldest first, and the
        cursor to pass next time: how ``ek8s events --follow`` tails the timeline across
        rotations. ``since`` only skips whole rotated files (see :meth:`events`).

        A control store reads two timelines, the control tree's ``events.jsonl`` and the
        workers' ``nodes/events/events.jsonl`` (each with its rotations), and merges what
        each call found by ``t``; a worker's store reads the workers' only."""
        if self.role == WORKER:
            return self._read_timeline(self._event_files(), cursor, since)
        found, mine = self._read_timeline(self._event_files(), cursor, since)
        workers = self._event_files(self._n("events", "events.jsonl"))
        more, theirs = self._read_timeline(workers, cursor.nodes if cursor is not None else None, since)
        merged = sorted(found + more, key=lambda e: float(e.get("t", 0))) if more else found
        return merged, replace(mine, nodes=theirs)

    def _read_timeline(
        self, files: list[Path], cursor: EventCursor | None, since: float | None
    ) -> tuple[list[dict[str, Any]], EventCursor]:
        """One timeline's events after ``cursor`` (``files``: newest first), as :meth:`read_events`.

        The files are opened newest first and kept open while they are read: a rotation
        between two opens only moves files towards older names, so none is missed, and a file
        met twice under two names (same inode) is read once. A line being appended (no newline
        yet) is left for the next call. Unparseable lines are skipped. Opens each file again
        on every call (NFS close-to-open consistency), never waits for one to appear."""
        handles: list[tuple[Any, tuple[int, int], float]] = []
        seen: set[tuple[int, int]] = set()
        try:
            for path in files:
                self.ops.add(reads=1, stats=1)
                try:
                    f = open(path, "rb")  # noqa: SIM115 (closed below, all together)
                except FileNotFoundError:
                    continue
                st = os.fstat(f.fileno())
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    f.close()
                    continue
                seen.add(key)
                handles.append((f, key, st.st_mtime))
            handles.reverse()  # oldest first
            start = 0
            if cursor is not None and cursor.file is not None:
                at = [i for i, (_, key, _) in enumerate(handles) if key == cursor.file]
                start = at[0] if at else 0  # rotated out of reach: everything left is newer
            elif since is not None:
                while start < len(handles) - 1 and handles[start][2] < since - EVENTS_CLOCK_SKEW_S:
                    start += 1
            out: list[dict[str, Any]] = []
            new_cursor = EventCursor(None, 0) if cursor is None else replace(cursor, nodes=None)
            for i in range(start, len(handles)):
                f, key, _ = handles[i]
                offset = cursor.offset if cursor is not None and key == cursor.file else 0
                f.seek(offset)
                data = f.read()
                whole = data[: data.rfind(b"\n") + 1]
                for raw in whole.splitlines():
                    event = event_line(raw.decode(errors="replace"))
                    if event is not None:  # not an event record ([], a wrong type): skipped
                        out.append(event)
                new_cursor = EventCursor(key, offset + len(whole))
            return out, new_cursor
        finally:
            for f, _, _ in handles:
                f.close()


def _checksum_path(snapshot: Path) -> Path:
    """``<snapshot>.sha256`` beside a snapshot file."""
    return snapshot.with_name(snapshot.name + ".sha256")


def _secret_path(snapshot: Path) -> Path:
    """``<snapshot>.token`` beside a snapshot file: the secret its restore needs (k3s)."""
    return snapshot.with_name(snapshot.name + ".token")


def _share_group(path: Path) -> None:
    """Give ``path`` the group :data:`ANON_GID` (what a worker's squashed root is on the node
    tree's export) when this process may (root); elsewhere (unit tests, a non-root
    operator) the mode alone applies."""
    if os.geteuid() == 0:
        os.chown(path, -1, ANON_GID)
