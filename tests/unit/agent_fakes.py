"""Stand-ins for what the agent drives, so its decisions run without root or daemons.

The share store is the real :class:`core.share.ShareStore` on a temp directory (it is what
fences a deposed leader's writes; a fake would hide exactly what these tests must catch).
Faked: the Kubernetes driver, the network probes, the service manager, the clock, and the
background executor (jobs run when the test says).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from core.config import NodeConfig, parse_config
from core.drivers import Credentials, DriverError, InitResult, SnapshotTaken
from core.etcd import LocalView
from core.services import ServiceError
from core.share import JoinMaterial, ShareStore
from leader.agent import Agent


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ManualExecutor(Executor):
    """Jobs wait until :meth:`run_pending`; the agent sees them running until then."""

    def __init__(self) -> None:
        self.pending: list[tuple[Future[Any], Callable[[], Any]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.pending.append((future, lambda: fn(*args, **kwargs)))
        return future

    def run_pending(self) -> None:
        while self.pending:
            future, fn = self.pending.pop(0)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as err:  # the job's own failure, handed to the agent
                future.set_exception(err)


class FakeDriver:
    """Records what the agent asked; ``fail`` makes a command raise :class:`DriverError`."""

    name = "kubeadm"
    prune_kinds: tuple[str, ...] = ("node", "etcd_member")
    restores_snapshots = True
    restore_needs_secret = False
    control_only_fields: tuple[str, ...] = ("certificate_key",)
    etcd_endpoint = "https://127.0.0.1:2379"
    kubelet_service = "kubelet"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.joined = False
        self.aborted = 0
        self.whole_cluster_resets = 0

    def _cmd(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise DriverError(["kubeadm", name], 1, f"emulated {name} failure")

    def new_credentials(self, restore_secret: str | None = None) -> Credentials:
        self.restore_secret = restore_secret
        return Credentials(restore_secret or "abcdef.0123456789abcdef", "0" * 64)

    def save_snapshot(self) -> SnapshotTaken:
        return SnapshotTaken(b"snapshot", None, "fake")

    def init(self, credentials: Credentials, restore_from: Path | None = None) -> InitResult:
        self._cmd("init")
        self.joined = True
        return InitResult(admin_kubeconfig=b"admin kubeconfig", ca_cert_pem=b"CA PEM")

    def join_material(self, result: InitResult, credentials: Credentials, generation: int, epoch: int) -> JoinMaterial:
        return material(generation, epoch)

    def join(self, material: JoinMaterial) -> None:
        self._cmd("join")
        self.joined = True

    def renew_join_material(
        self, material: JoinMaterial, parts: tuple[str, ...] = ("token", "certificate_key")
    ) -> tuple[JoinMaterial, list[str]]:
        return material, []

    def reset(self, whole_cluster: bool = False) -> None:
        self._cmd("reset")
        self.whole_cluster_resets += int(whole_cluster)
        self.joined = False

    def abort(self) -> None:
        self.aborted += 1

    def is_joined(self) -> bool:
        return self.joined

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.conf"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.conf"

    def etcd_client_context(self) -> None:
        return None

    def etcd_member_node(self, member_name: str) -> str:
        return member_name

    def has_etcd_data(self) -> bool:
        return self.joined

    def reform_etcd(self) -> None:
        self._cmd("reform")


class FakeProbes:
    def __init__(self) -> None:
        self.api = False
        self.node: bool | None = None
        self.phylactery = True
        self.posts: list[tuple[str, str, dict[str, Any]]] = []
        self.tokens: list[str] = []  # the credential each post carried
        self.etcd: LocalView | None = None
        # The member list a quorum agrees on, by node name, through other Phylacteries (None:
        # no quorum answered).
        self.quorum: list[str] | None = None
        self.quorum_asked: list[list[str]] = []  # the Phylactery URLs of each such question
        self.answers: dict[str, tuple[int, Any]] = {}
        # node_found's answer; None: as api and node_ready say (while the API answers, a Node
        # whose Ready is known exists).
        self.found: bool | None = None
        self.found_calls = 0
        self.readyz: tuple[int | None, float] | None = None  # api_readyz's answer; None: as api says
        self.other_ca: set[str] = set()  # addresses where an API server of another CA answers

    def api_ready(self, ca_pem: bytes) -> bool:
        return self.api and bool(ca_pem)

    def api_readyz(self, ca_pem: bytes) -> tuple[int | None, float]:
        if not ca_pem:
            return None, 0.0
        if self.readyz is not None:
            return self.readyz
        return (200, 0.01) if self.api else (None, 1.0)

    def node_ready(self) -> bool | None:
        return self.node

    def node_found(self) -> bool | None:
        self.found_calls += 1
        if self.found is not None:
            return self.found
        return None if not self.api or self.node is None else True

    def phylactery_healthy(self, url: str) -> bool:
        return self.phylactery

    def serves_another_ca(self, address: str, ca_pem: bytes) -> bool:
        return address in self.other_ca

    def etcd_view(self) -> LocalView | None:
        return self.etcd

    def quorum_members(self, urls: list[str], token: str) -> list[str] | None:
        self.quorum_asked.append(urls)
        return self.quorum

    def post(self, url: str, path: str, token: str, body: dict[str, Any], timeout_s: float) -> tuple[int, Any]:
        self.posts.append((url, path, body))
        self.tokens.append(token)
        if path in self.answers:
            return self.answers[path]
        return 200, {"refreshed": []} if path == "/v1/join-material" else {}


class FakeServices:
    def __init__(self) -> None:
        self.running: set[str] = set()
        self.started: list[str] = []
        self.restarted: list[str] = []
        self.fail_restart: set[str] = set()

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, wait: bool = True) -> None:
        self.started.append(name)
        self.running.add(name)

    def reload(self, name: str, sig: int) -> None: ...

    def stop(self, name: str, timeout_s: float = 5.0) -> None:
        self.running.discard(name)

    def restart(self, name: str) -> None:
        if name in self.fail_restart:
            raise ServiceError(f"{name}: no recorded command to restart it with")
        self.restarted.append(name)
        self.running.add(name)

    def is_running(self, name: str) -> bool:
        return name in self.running

    def pid(self, name: str) -> int | None:
        return None


def material(generation: int, epoch: int) -> JoinMaterial:
    return JoinMaterial(
        generation=generation,
        epoch=epoch,
        api_server_endpoint="vip.kubernetes.local:8443",
        token="abcdef.0123456789abcdef",
        token_expires_at=0.0,
        ca_cert_hashes=["sha256:" + "0" * 64],
        certificate_key="0" * 64,
        certificate_key_expires_at=0.0,
        ca_cert="CA PEM",
        published_by="control0",
    )


def node_config(tmp: Path, name: str, role: str = "control", **settings: Any) -> NodeConfig:
    address = {"control0": "10.0.0.21", "control1": "10.0.0.22", "control2": "10.0.0.23"}.get(name, "10.0.0.41")
    data: dict[str, Any] = {
        "role": role,
        "node": {"name": name, "address": address},
        "share": {"path": str(tmp / "share")},
        "root": str(tmp / "roots" / name),
        "service_manager": "process",
        "timeouts": {"lease_ttl_s": 30, "join_attempts": 3, "join_backoff_s": 2, "cluster_lost_grace_s": 60},
    }
    for key, value in settings.items():
        section, _, leaf = key.partition("__")
        if leaf:
            data.setdefault(section, {})[leaf] = value
        else:
            data[section] = value
    return parse_config(data, Path(f"{name}.yaml"))


class Harness:
    """One agent with its fakes; ``cycle()`` runs one cycle and returns its sentence."""

    def __init__(self, tmp: Path, name: str = "control0", role: str = "control", **settings: Any) -> None:
        self.cfg = node_config(tmp, name, role, **settings)
        self.store = ShareStore(self.cfg.share.path, self.cfg.cluster, name, role=role)
        self.driver = FakeDriver(tmp / "roots" / name)
        self.probes = FakeProbes()
        self.services = FakeServices()
        self.clock = FakeClock()
        self.executor = ManualExecutor()
        self.agent = Agent(
            self.cfg,
            store=self.store,
            driver=self.driver,
            services=self.services,
            probes=self.probes,
            boot_id=f"boot-{name}",
            config_path=tmp / f"{name}.yaml",
            executor=self.executor,
            clock=self.clock,
        )
        self.agent.host_prepared.set()
        self.agent.boot()

    def cycle(self) -> str:
        return self.agent.run_cycle()

    def finish_jobs(self) -> None:
        self.executor.run_pending()

    @property
    def state(self) -> str:
        return self.agent.state.name

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.store.events() if e["event"] == name and e["node"] == self.cfg.node.name]


def age_heartbeat(store: ShareStore, node: str, seconds: float) -> None:
    """Make ``node``'s heartbeat ``seconds`` older on the share's clock."""
    path = store.dir / "heartbeats" / node
    if not path.exists():  # a worker's, in the node tree
        path = store.nodes_dir / "heartbeats" / node
    t = path.stat().st_mtime - seconds
    os.utime(path, (t, t))


def ready_generation(share: Path, leader: str = "control0") -> ShareStore:
    """A generation made ready by ``leader`` through the store's own verbs."""
    store = ShareStore(share, "default", leader)
    store.ensure()
    store.ensure_credentials()  # what the leader's Phylactery makes at its start
    from leader.election import rule_for

    state, action, _ = store.attempt_leadership("10.0.0.21", f"boot-{leader}", rule_for("control", leader, "b", 30))
    assert action == "lead"
    fence = state.claim()
    assert fence is not None
    store.publish_join_material(fence, material(fence.generation, fence.epoch))
    store.mark_ready(fence)
    store.record_incarnation(f"boot-{leader}", fence.generation)  # its init made an etcd member
    return store
