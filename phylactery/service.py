"""Phylactery: keeps HAProxy and keepalived in line with the control plane (docs/phylactery.md).

On start it registers its node in the member registry, renders and applies HAProxy and
keepalived (starting them if needed), then asks every other registered Phylactery to refresh.
After that it reconciles whenever asked (``POST /v1/refresh``) and every
``phylactery.reconcile_interval_s`` seconds, so a refresh that never arrived heals anyway.

Refreshes coalesce: while a reconcile runs, any number of further requests cause at most one
more reconcile, and an unchanged config is never reloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from core import recovery
from core.bootid import boot_id
from core.config import NodeConfig
from core.drivers import Driver, DriverError
from core.etcd import EtcdClient, EtcdError, member_answers
from core.fileperm import ensure_dir
from core.logs import get_logger
from core.services import ServiceError, service_manager
from core.share import MemberRecord, ShareError, ShareStore
from phylactery import daemons, render
from phylactery.prune import PruneRefused, PruneResult, prune_node

log = get_logger(__name__, "phylactery")
SNAPSHOT_TAKER_CHECK_S = 5.0  # how often a control node asks whether its member leads etcd
REAP_INTERVAL_S = 5.0  # how often the reaper looks for members whose node lost its data


class Phylactery:
    """One node's service. ``cfg`` is the node's validated node.yaml (a control node);
    ``driver`` answers everything distribution-specific (PKI, etcd, join material, prunes)."""

    def __init__(self, cfg: NodeConfig, driver: Driver) -> None:
        self.cfg = cfg
        self.driver = driver
        self.store = ShareStore(cfg.share.path, cfg.cluster, cfg.node.name)
        self.services = service_manager(cfg.service_manager, cfg.root)
        self.boot_id = boot_id(cfg.root)
        self.haproxy = daemons.haproxy(cfg.root, self.services)
        self.keepalived = daemons.keepalived(cfg.root, self.services, render.render_check_script(cfg.vip.port))
        self.stats_socket = daemons.haproxy_stats_socket(cfg.root)
        self.generation = 0
        self.last_reconcile: dict[str, Any] = {}
        self.started = False
        self._join_material_lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        """This node's Phylactery base URL, ``http://<node address>:<port>``."""
        return f"http://{self.cfg.node.address}:{self.cfg.phylactery.port}"

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Register, apply configs once (HAProxy and keepalived running on return), notify
        peers, then keep reconciling in the background."""
        ensure_dir(self.stats_socket.parent)
        ensure_dir(self.cfg.root / "run/keepalived")
        self.store.ensure()
        await self.register()
        await self.reconcile("start")
        self._tasks = [
            asyncio.create_task(self._reconciler()),
            asyncio.create_task(self._periodic()),
            asyncio.create_task(self._notify_peers()),
            asyncio.create_task(self._snapshots()),
            asyncio.create_task(self._reaper()),
        ]
        # Import the kubernetes client now, off the request path (it takes ~0.3 s).
        self._tasks.append(asyncio.create_task(asyncio.to_thread(_warm_imports)))
        self.started = True

    async def stop(self) -> None:
        """Cancel the background tasks (reconciler, periodic reconcile, snapshots, peer notices)."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def register(self) -> None:
        """Write this node's member record for the current generation; on a change of
        generation (after the first start), tell the peers so they re-read the registry."""
        state = await asyncio.to_thread(self.store.read_state)
        changed = self.started and state.generation != self.generation
        self.generation = state.generation
        record = MemberRecord(
            name=self.cfg.node.name,
            address=self.cfg.node.address,
            phylactery_url=self.url,
            boot_id=self.boot_id,
            generation=state.generation,
        )
        await asyncio.to_thread(self.store.register_member, record)
        log.info("registered in the member registry", extra={"generation": state.generation})
        if changed:
            self._tasks.append(asyncio.create_task(self._notify_peers()))

    # -- reconcile --------------------------------------------------------------------
    def request_refresh(self) -> None:
        """Ask for a reconcile soon; many requests while one runs make one more run."""
        self._dirty.set()

    async def _reconciler(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.reconcile("refresh")
            except (daemons.ConfigRejected, ServiceError, ShareError, OSError) as err:
                # The next refresh or period tries again; the installed configs stay as they were.
                log.error("reconcile failed", extra={"error": str(err)})

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.phylactery.reconcile_interval_s)
            self._dirty.set()

    async def reconcile(self, reason: str) -> dict[str, Any]:
        """Re-read the registry, render both configs, apply what changed."""
        state = await asyncio.to_thread(self.store.read_state)
        if state.generation != self.generation:
            await self.register()
        members = await asyncio.to_thread(self.store.members)
        if not any(m.name == self.cfg.node.name for m in members):
            await self.register()
            members = await asyncio.to_thread(self.store.members)
        c = self.cfg
        haproxy_cfg = render.render_haproxy(
            node=c.node.name,
            cluster=c.cluster,
            generation=state.generation,
            members=[render.Backend(m.name, m.address) for m in members],
            frontend_port=c.vip.port,
            api_port=c.kubernetes.api_server_port,
            stats_socket=str(self.stats_socket),
            server_state_file=str(daemons.haproxy_server_state_file(c.root)),
        )
        keepalived_cfg = render.render_keepalived(
            node=c.node.name,
            cluster=c.cluster,
            generation=state.generation,
            address=c.node.address,
            interface=c.node.interface,
            peers=[m.address for m in members],
            vip=c.vip.address,
            prefix_length=c.vip.prefix_length,
            virtual_router_id=c.vip.virtual_router_id,
            advert_int=c.vip.advert_interval_s,
            is_leader=state.leader is not None and state.leader.node == c.node.name,
            check_script=str(c.root / "etc/keepalived/check_haproxy.sh"),
        )
        result = {
            "reason": reason,
            "at": time.time(),
            "generation": state.generation,
            "members": [m.name for m in members],
            "haproxy": await asyncio.to_thread(self.haproxy.apply, haproxy_cfg),
            "keepalived": await asyncio.to_thread(self.keepalived.apply, keepalived_cfg),
        }
        if result["haproxy"] == "unchanged":
            # A reload signalled while HAProxy's master was still taking the previous one can
            # be lost (seen in the lab: two reloads 0.3 s apart, the second never happened), and
            # the file on disk then reads "unchanged" for ever. Compare what runs instead.
            running = set(await asyncio.to_thread(daemons.backend_states, self.stats_socket))
            if running and running != {m.name for m in members}:
                why = f"HAProxy serves {sorted(running)}, the registry lists {sorted(m.name for m in members)}"
                await asyncio.to_thread(self.haproxy.reload, why)
                result["haproxy"] = "reloaded"
        self.last_reconcile = result
        if result["haproxy"] != "unchanged" or result["keepalived"] != "unchanged":
            log.info(
                "reconciled",
                extra={k: v for k, v in result.items() if k not in ("at",)},
            )
        return result

    async def _snapshots(self) -> None:
        """On the node whose member leads etcd: save an etcd snapshot to the share every
        ``snapshot_interval_s``, and at once after every change of the etcd membership (the
        newest ``snapshots_keep`` are kept), so a restore never brings back members that left.
        Whether this node's member leads is asked every :data:`SNAPSHOT_TAKER_CHECK_S`; only
        the leader's node asks for the member list every second."""
        interval = self.cfg.phylactery.snapshot_interval_s
        if interval <= 0:
            return
        last_at, last_members = time.monotonic(), frozenset[int]()
        takes, checked_at = False, -SNAPSHOT_TAKER_CHECK_S
        while True:
            await asyncio.sleep(min(interval, 1.0))
            try:
                if time.monotonic() - checked_at >= SNAPSHOT_TAKER_CHECK_S:
                    checked_at, takes = time.monotonic(), await self._leads_etcd()
                if not takes:
                    last_members = frozenset()
                    continue
                members = await self._member_ids()
                changed = members is not None and members != last_members and bool(last_members)
                if members is not None and not last_members:
                    last_members = members
                if changed or time.monotonic() - last_at >= interval:
                    last_at, last_members = time.monotonic(), members or last_members
                    await self.save_snapshot()
            except (EtcdError, DriverError, OSError) as err:  # keep trying; the log says why
                log.warning("etcd snapshot failed", extra={"error": str(err)})

    async def _leads_etcd(self) -> bool:
        """Whether this node's etcd member is the etcd leader (``maintenance/status``: its
        ``header.member_id`` is the ``leader``). False without a local member. A leader that
        loses its quorum steps down (etcd's check-quorum), so its data is the cluster's newest.
        Raises :class:`core.etcd.EtcdError` when the local member does not answer."""
        ctx = self.driver.etcd_client_context()
        if ctx is None:
            return False
        async with EtcdClient([self.driver.etcd_endpoint], ctx, timeout_s=2.0) as etcd:
            return _leader_id(await etcd.status()) is not None

    async def _member_ids(self) -> frozenset[int] | None:
        """The IDs of the etcd members as the local member lists them (None without one)."""
        ctx = self.driver.etcd_client_context()
        if ctx is None:
            return None
        async with EtcdClient([self.driver.etcd_endpoint], ctx, timeout_s=2.0) as etcd:
            return frozenset(m.id for m in await etcd.member_list())

    async def save_snapshot(self) -> Path | None:
        """One snapshot to the share if the generation is ready and this node's member leads
        etcd (any control node: the generation's first leader may be gone for good); returns
        its path, or None when this node is not the one to take it. The driver takes it with
        the distribution's tool (k3s: ``k3s etcd-snapshot save``) and names the secret a
        restore needs, kept beside it (:meth:`core.drivers.base.Driver.save_snapshot`).
        Raises :class:`core.etcd.EtcdError` when etcd does not answer,
        :class:`core.drivers.DriverError` when the tool fails, ``OSError`` from the share."""
        state = await asyncio.to_thread(self.store.read_state)
        ctx = self.driver.etcd_client_context()
        if ctx is None or not state.ready or not await self._leads_etcd():
            return None
        taken = await asyncio.to_thread(self.driver.save_snapshot)
        path = await asyncio.to_thread(
            self.store.save_snapshot, state.generation, taken.data, self.cfg.phylactery.snapshots_keep, taken.secret
        )
        log.info("etcd snapshot saved", extra={"path": str(path), "bytes": len(taken.data), "tool": taken.tool})
        return path

    async def _reaper(self) -> None:
        """Every ``REAP_INTERVAL_S``: :meth:`reap_one`, on one control node at a time."""
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                await self.reap_one()
            except (EtcdError, OSError, ShareError) as err:
                log.warning("reaping dead etcd members failed", extra={"error": str(err)})

    async def reap_one(self) -> str | None:
        """Remove one etcd member whose node rebooted (new boot id: its data is gone) or has
        been dead past the lease TTL, while the remaining members keep quorum; kubeadm's
        check-etcd refuses every control-plane join while any listed member is unreachable
        (``cmd/kubeadm/app/phases/etcd/local.go``, ``CheckLocalEtcdClusterStatus``). Only the
        node whose member leads etcd reaps, one member per call, and it reads the share (the
        members' incarnations and heartbeats) only when a member does not answer, so a healthy
        cluster's reaper costs the share nothing. Each removal is recorded as the
        ``member_reaped`` event. Returns the removed member's name, or None."""
        ctx = self.driver.etcd_client_context()
        if ctx is None:
            return None
        async with EtcdClient([self.driver.etcd_endpoint], ctx, timeout_s=3.0) as etcd:
            me = _leader_id(await etcd.status())
            if me is None:
                return None
            members = await etcd.member_list()
            others = [m for m in members if m.id != me]
            answers = await asyncio.gather(*(member_answers(m, ctx) for m in others))
            if all(answers):
                return None
            state = await asyncio.to_thread(self.store.read_state)
            incarnations = await asyncio.to_thread(self.store.incarnations)
            names = [n for n, i in incarnations.items() if i.generation == state.generation]
            heartbeats = await asyncio.to_thread(self.store.heartbeats, names)
            a = recovery.assess(state.generation, incarnations, heartbeats, self.cfg.timeouts.lease_ttl_s)
            joining = await asyncio.to_thread(self.store.join_slot_holder, self.cfg.timeouts.lease_ttl_s)
            node_of = {m.id: self.driver.etcd_member_node(m.name) for m in members}
            name = recovery.reapable(list(node_of.values()), a, joining)
            if name is None:
                return None
            doomed = next(m for m in members if node_of[m.id] == name)
            remaining = len(members) - 1
            await etcd.member_remove(doomed.id)
        fate = a.fates[name].value
        why = f"removed etcd member {doomed.name}: its node {fate} (data gone); {remaining} members left"
        log.info(why, extra={"member": doomed.name})
        await asyncio.to_thread(self.store.record_event, "member_reaped", state.generation, why, member=doomed.name)
        return doomed.name

    async def _notify_peers(self) -> None:
        """POST /v1/refresh to every other registered Phylactery (best effort)."""
        token = await asyncio.to_thread(self.store.read_token)
        members = await asyncio.to_thread(self.store.members)
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def _one(m: MemberRecord) -> None:
                try:
                    async with http.post(
                        m.phylactery_url + "/v1/refresh", headers={"Authorization": f"Bearer {token}"}
                    ) as resp:
                        log.info("asked peer to refresh", extra={"peer": m.name, "status": resp.status})
                except (aiohttp.ClientError, TimeoutError, OSError) as err:
                    log.info("peer did not take the refresh", extra={"peer": m.name, "error": str(err)})

            await asyncio.gather(*(_one(m) for m in members if m.name != self.cfg.node.name))

    # -- join material ----------------------------------------------------------------
    async def ensure_join_material(self) -> dict[str, Any]:
        """Make sure ``join.json`` holds join material that the API still accepts; the driver
        replaces what expired (kubeadm deletes ``kubeadm-certs`` after 2 h and a token after
        its TTL). Serialised, so a burst of joiners causes one renewal.

        Returns ``{"refreshed": [...], "token_expires_at", "certificate_key_expires_at"}``
        (Unix seconds; no secrets). Raises ``LookupError`` when the generation is not ready,
        :class:`core.drivers.ApiUnavailable` when the API does not answer,
        :class:`core.drivers.DriverError` when the distribution's command fails.
        """
        async with self._join_material_lock:
            state = await asyncio.to_thread(self.store.read_state)
            try:
                published = await asyncio.to_thread(self.store.read_join_material)
            except FileNotFoundError:
                published = None
            if not state.ready or published is None or published.generation != state.generation:
                raise LookupError(f"generation {state.generation} is not ready; the leader publishes join material")
            material, refreshed = await asyncio.to_thread(self.driver.renew_join_material, published)
            if refreshed:
                await asyncio.to_thread(self.store.refresh_join_material, material)
                log.info("join material refreshed", extra={"refreshed": refreshed})
            return {
                "refreshed": refreshed,
                "token_expires_at": material.token_expires_at,
                "certificate_key_expires_at": material.certificate_key_expires_at,
            }

    # -- prune and status -------------------------------------------------------------
    async def prune(self, name: str, address: str, boot_id: str) -> PruneResult:
        """Remove what the node ``name``/``address`` left behind in an earlier boot (:func:`prune_node`
        with what the driver says to prune), asked by its incarnation ``boot_id``. Raises
        ``ValueError`` for this node itself, :class:`phylactery.prune.PruneRefused` when another
        incarnation of the node is alive (its heartbeat is fresh and from another boot: two
        machines with one name, or a request that is not the node's own), and
        :class:`phylactery.prune.PruneError` when the API or etcd does not answer."""
        hb = await asyncio.to_thread(self.store.read_heartbeat, name)
        if hb is not None and hb.boot_id != boot_id and hb.age_s < self.cfg.timeouts.liveness_ttl_s(hb.role):
            raise PruneRefused(
                f"{name} is alive in another boot ({hb.boot_id}, heartbeat {hb.age_s:.1f}s old) than the "
                f"requester's ({boot_id}): two machines with one name, or not its own request; nothing removed"
            )
        return await prune_node(
            name=name,
            address=address,
            self_name=self.cfg.node.name,
            kubeconfig=self.driver.admin_kubeconfig,
            etcd_endpoint=self.driver.etcd_endpoint,
            etcd_context=self.driver.etcd_client_context(),
            kinds=self.driver.prune_kinds,
            member_node=self.driver.etcd_member_node,
        )

    def vip_held(self) -> bool:
        """Whether the VIP is on one of this node's interfaces (``psutil.net_if_addrs``)."""
        return any(a.address == self.cfg.vip.address for addrs in psutil.net_if_addrs().values() for a in addrs)

    async def status(self) -> dict[str, Any]:
        """The ``GET /v1/status`` document (keys documented in docs/phylactery.md)."""
        state = await asyncio.to_thread(self.store.read_state)
        members = await asyncio.to_thread(self.store.members)
        backends = await asyncio.to_thread(daemons.backend_states, self.stats_socket)
        etcd = await self._etcd_status()
        return {
            "node": self.cfg.node.name,
            "role": self.cfg.role,
            "cluster": self.cfg.cluster,
            "generation": state.generation,
            "ready": state.ready,
            "leader": state.leader.node if state.leader else None,
            "members": [
                {"name": m.name, "address": m.address, "phylactery_url": m.phylactery_url, "boot_id": m.boot_id}
                for m in members
            ],
            "haproxy": {
                "running": self.services.is_running("haproxy"),
                "reloads": self.haproxy.reloads,
                "backends": [{"name": n, "status": s} for n, s in sorted(backends.items())],
            },
            "keepalived": {
                "running": self.services.is_running("keepalived"),
                "reloads": self.keepalived.reloads,
                "vip": self.cfg.vip.address,
                "vip_held": self.vip_held(),
            },
            "etcd": etcd,
            "last_reconcile": self.last_reconcile,
        }

    async def _etcd_status(self) -> dict[str, Any]:
        """``{"members": [...], "quorum": bool | None, "error": str | None}`` of the local etcd
        member. The member list is served locally (etcd 3.4), so quorum is checked with a
        linearizable read; None when this node runs no etcd member yet."""
        ctx = self.driver.etcd_client_context()
        if ctx is None:
            return {"members": [], "quorum": None, "error": None}
        out: dict[str, Any] = {"members": [], "quorum": None, "error": None}
        async with EtcdClient([self.driver.etcd_endpoint], ctx, timeout_s=2.0) as etcd:
            try:
                out["members"] = [
                    {**m.to_json(), "node": self.driver.etcd_member_node(m.name)} for m in await etcd.member_list()
                ]
                await etcd.get("/registry/health")
                out["quorum"] = True
            except (EtcdError, OSError) as err:
                out["quorum"] = False if out["members"] else None
                out["error"] = str(err)
        return out


def _warm_imports() -> None:
    import kubernetes.client
    import kubernetes.config  # noqa: F401


def _leader_id(status: dict[str, Any]) -> int | None:
    """This member's ID when ``status`` (etcd's ``maintenance/status``) says it leads etcd
    (its ``header.member_id`` is the ``leader``), else None."""
    me = int(status.get("header", {}).get("member_id", 0))
    return me if me == int(status.get("leader", -1)) else None
