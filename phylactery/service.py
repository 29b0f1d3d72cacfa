"""Phylactery: keeps HAProxy and keepalived in line with the control plane (docs/phylactery.md).

This module is the service's life cycle and its answers: start (register, apply configs once,
then the controllers), stop, join material, prune, status. The background work is done by one
controller per loop (:mod:`phylactery.controllers`: reconcile, peer notices, etcd snapshots,
the reaper), each run by a :class:`core.supervise.Supervisor` that logs, counts
(``ek8s_loop_failures_total``), backs off and starts again a loop that raised; ``/healthz``
answers 503 while one is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any

import psutil

from core import quorum
from core.bootid import boot_id
from core.config import NodeConfig
from core.credentials import WORKER
from core.drivers import Driver
from core.etcd import EtcdClient, EtcdError, member_answers
from core.fileperm import ensure_dir, write_atomic
from core.logs import get_logger
from core.records import node_name
from core.services import service_manager
from core.share import ShareStore
from core.supervise import Supervisor
from phylactery import controllers, daemons, render
from phylactery.prune import PruneError, PruneForbidden, PruneRefused, PruneResult, Requester, prune_node

log = get_logger(__name__, "phylactery")


class Phylactery:
    """One node's service. ``cfg`` is the node's validated node.yaml (a control node);
    ``driver`` answers everything distribution-specific (PKI, etcd, join material, prunes)."""

    def __init__(self, cfg: NodeConfig, driver: Driver, supervisor: Supervisor | None = None) -> None:
        self.cfg = cfg
        self.driver = driver
        self.store = ShareStore(cfg.share.path, cfg.cluster, cfg.node.name)
        self.services = service_manager(cfg.service_manager, cfg.root)
        self.boot_id = boot_id(cfg.root)
        self.haproxy = daemons.haproxy(cfg.root, self.services)
        self.keepalived = daemons.keepalived(cfg.root, self.services, render.render_check_script(cfg.vip.port))
        self.stats_socket = daemons.haproxy_stats_socket(cfg.root)
        self.vrrp_realtime = daemons.vrrp_realtime_allowed()
        self.started = False
        self.supervisor = supervisor or Supervisor("phylactery")
        self._join_material_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.controllers = controllers.register(self)
        for name, _ in self.controllers.loops():
            self.supervisor.register(name)  # exported at 0 before they ever fail

    @property
    def url(self) -> str:
        """This node's Phylactery base URL, ``https://<node address>:<port>`` (the member
        record's ``phylactery_url``; the server certificate names that address)."""
        return f"https://{self.cfg.node.address}:{self.cfg.phylactery.port}"

    @property
    def tls_dir(self) -> Path:
        """Where this node keeps its server certificate and key: its RAM root, never the share."""
        return self.cfg.host_path("/run/ek8s/phylactery")

    def server_tls(self) -> ssl.SSLContext:
        """Make sure the share holds the credentials and the CA (the first Phylactery of a
        cluster makes them, :meth:`core.share.ShareStore.ensure_credentials`), issue this
        node's server certificate from the CA (:func:`core.tls.issue_server_certificate`,
        written ``0600`` under :attr:`tls_dir`) and return the server's TLS context. Raises
        ``OSError`` and :class:`core.share.ShareError` from the share."""
        from core.tls import issue_server_certificate, server_context

        self.store.ensure_credentials()
        cert, key = issue_server_certificate(
            self.store.read_phylactery_ca_pair(), self.cfg.node.name, self.cfg.node.address
        )
        d = ensure_dir(self.tls_dir)
        write_atomic(d / "server.key", key)
        write_atomic(d / "server.crt", cert)
        return server_context(str(d / "server.crt"), str(d / "server.key"))

    @property
    def generation(self) -> int:
        """The generation this node registered in (the reconcile controller's)."""
        return self.controllers.reconcile.generation

    @generation.setter
    def generation(self, value: int) -> None:
        self.controllers.reconcile.generation = value

    @property
    def last_reconcile(self) -> dict[str, Any]:
        """What the last reconcile did (``/v1/status``)."""
        return self.controllers.reconcile.last_result

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Register, apply configs once (HAProxy and keepalived running on return), then run
        every controller under the supervisor (the peers are notified first thing)."""
        ensure_dir(self.stats_socket.parent)
        ensure_dir(self.cfg.root / "run/keepalived")
        if not self.vrrp_realtime:
            log.warning(
                "keepalived's VRRP process runs at nice -20, not on real-time scheduling: this node "
                "lacks CAP_SYS_RESOURCE, without which keepalived loses its RLIMIT_RTTIME at a reload "
                "and the kernel kills the process (docs/phylactery.md, keepalived)",
                extra={"vrrp_priority": render.VRRP_NICE},
            )
        self.store.ensure()
        await self.controllers.reconcile.register()
        await self.controllers.reconcile.reconcile("start")
        self.start_loops()
        # Import the kubernetes client now, off the request path (it takes ~0.3 s).
        self._tasks.append(asyncio.create_task(asyncio.to_thread(_warm_imports)))
        self.started = True

    def start_loops(self) -> None:
        """Start every controller's loop as a task under the supervisor."""
        self._tasks += [
            asyncio.create_task(self.supervisor.run(name, body), name=name) for name, body in self.controllers.loops()
        ]

    async def stop(self) -> None:
        """Cancel the controllers' tasks and wait for them to end."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def request_refresh(self) -> None:
        """Ask for a reconcile soon (``POST /v1/refresh``); requests coalesce."""
        self.controllers.reconcile.request()

    def health(self) -> tuple[bool, dict[str, str]]:
        """``/healthz``: whether Phylactery serves (started, and no loop down), and the loops
        that are down with their exception."""
        down = self.supervisor.down()
        return self.started and not down, down

    # -- join material ----------------------------------------------------------------
    async def ensure_join_material(self, parts: tuple[str, ...] = ("token", "certificate_key")) -> dict[str, Any]:
        """Make sure ``join.json`` holds join material that the API still accepts; the driver
        replaces what expired of ``parts`` (kubeadm deletes ``kubeadm-certs`` after 2 h and a
        token after its TTL). Serialised, so a burst of joiners causes one renewal. The
        join-material controller asks for the token only (what workers join with); the
        certificate key, which unlocks the CA keys, is uploaded again only when a control node
        asks (``POST /v1/join-material``, control credential).

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
            material, refreshed = await asyncio.to_thread(self.driver.renew_join_material, published, parts)
            if refreshed:
                await asyncio.to_thread(self.store.refresh_join_material, material, self.driver.control_only_fields)
                log.info("join material refreshed", extra={"refreshed": refreshed})
            return {
                "refreshed": refreshed,
                "token_expires_at": material.token_expires_at,
                "certificate_key_expires_at": material.certificate_key_expires_at,
            }

    # -- prune and status -------------------------------------------------------------
    async def prune(self, name: str, address: str, boot_id: str, requester: Requester | None = None) -> PruneResult:
        """Remove what the node ``name``/``address`` left behind in an earlier boot
        (:func:`prune_node` with what the driver says to prune), asked by its incarnation
        ``boot_id`` through ``requester`` (the credential it proved and the address it asked
        from; None: the control credential). Raises ``ValueError`` for a name that is no
        node's (RFC 1123) and for this node itself; :class:`phylactery.prune.PruneForbidden`
        when a worker's request does not come from ``address`` or names a Node that is not at
        its address; :class:`phylactery.prune.PruneRefused` when another incarnation of the
        node is alive (its heartbeat is fresh and from another boot: two machines with one
        name, or a request that is not the node's own); :class:`phylactery.prune.PruneError`
        when the API or etcd does not answer. No answer ever holds a boot id."""
        node_name(name)  # ValueError before any path or API call
        requester = requester or Requester(credential="control", address=address, boot_id=boot_id)
        if requester.credential == WORKER and requester.address != address:
            raise PruneForbidden(
                f"the request comes from {requester.address}, not from {address}: the worker credential "
                "prunes only the node it is sent from; nothing removed"
            )
        inventory = await asyncio.to_thread(self.store.read_inventory)
        if inventory is not None and inventory.cluster == self.cfg.cluster:
            why = inventory.refusal(name, address)
            if why is not None:
                raise PruneRefused(f"{why}; nothing removed")
        # A refusal guard, not proof: a control node's heartbeat from the control tree, a
        # worker's from the node tree (which any worker can write: at worst it holds a prune back).
        hb = await asyncio.to_thread(self.store.read_any_heartbeat, name)
        if hb is not None and hb.boot_id != boot_id and hb.age_s < self.cfg.timeouts.liveness_ttl_s(hb.role):
            raise PruneRefused(
                f"{name} is alive in another boot than the requester's (heartbeat {hb.age_s:.1f}s old): "
                "two machines with one name, or not its own request; nothing removed"
            )
        return await self._prune_node(name, address, requester)

    async def remove(self, name: str, address: str) -> PruneResult:
        """Take the node ``name``/``address`` out of the cluster for good, on the operator's
        decision (``ek8s node remove``, ``POST /v1/remove``): its etcd member, its Node (and
        k3s's node-password Secret), as :func:`phylactery.prune.prune_node` removes them, but
        without the prune's check that no other boot of the node is alive: the operator
        decided, and the node was powered off first. Refused (:class:`PruneRefused`) when the
        removal is not safe for etcd (:func:`core.quorum.removal_refusal`: the last member,
        fewer than two control nodes, or no quorum after it) or when the node's member still
        answers (it runs, and would join again). Raises ``ValueError`` for a name that is no
        node's and for this node itself, :class:`PruneError` when etcd or the API does not
        answer."""
        node_name(name)
        if name == self.cfg.node.name:
            raise ValueError(f"refusing to remove {name} from its own Phylactery: ask another control node's")
        if self.driver.etcd_client_context() is None:
            raise PruneError("this node runs no etcd member yet: ask another control node's Phylactery")
        view = await self.etcd_members()
        if view["error"] is not None:
            raise PruneError(f"etcd: {view['error']}")
        members = [quorum.Member(m["node"], m["is_learner"], m["answers"]) for m in view["members"]]
        why = quorum.removal_refusal(members, name)
        if why is not None:
            raise PruneRefused(why)
        return await self._prune_node(name, address, None)

    async def _prune_node(self, name: str, address: str, requester: Requester | None) -> PruneResult:
        """:func:`phylactery.prune.prune_node` with this node's driver (kubeconfig, etcd
        endpoint and client certificate, prune kinds, member-name rule); ``requester`` None is
        the control credential."""
        return await prune_node(
            name=name,
            address=address,
            self_name=self.cfg.node.name,
            kubeconfig=self.driver.admin_kubeconfig,
            etcd_endpoint=self.driver.etcd_endpoint,
            etcd_context=self.driver.etcd_client_context(),
            kinds=self.driver.prune_kinds,
            requester=requester,
            member_node=self.driver.etcd_member_node,
        )

    async def etcd_members(self) -> dict[str, Any]:
        """``GET /v1/etcd``: ``{"members": [...], "error": str | None}``, each member as
        :meth:`core.etcd.EtcdMember.to_json` plus ``node`` (whose it is), ``answers`` (its own
        ``maintenance/status`` answered within 1 s) and ``leader`` (it leads etcd). Empty, with
        the reason in ``error``, when this node runs no member or it does not answer."""
        ctx = self.driver.etcd_client_context()
        if ctx is None:
            return {"members": [], "error": "no etcd member on this node"}
        async with EtcdClient([self.driver.etcd_endpoint], ctx, timeout_s=2.0) as etcd:
            try:
                leader = int((await etcd.status()).get("leader", 0))
                members = await etcd.member_list()
            except (EtcdError, OSError, ValueError) as err:
                return {"members": [], "error": str(err)}
        answers = await asyncio.gather(*(member_answers(m, ctx) for m in members))
        return {
            "members": [
                {
                    **m.to_json(),
                    "node": self.driver.etcd_member_node(m.name),
                    "answers": ok,
                    "leader": m.id == leader,
                }
                for m, ok in zip(members, answers, strict=True)
            ],
            "error": None,
        }

    def vip_held(self) -> bool:
        """Whether the VIP is on one of this node's interfaces (``psutil.net_if_addrs``)."""
        return any(a.address == self.cfg.vip.address for addrs in psutil.net_if_addrs().values() for a in addrs)

    async def status(self) -> dict[str, Any]:
        """The ``GET /v1/status`` document for the control credential (keys documented in
        docs/phylactery.md); without it the API answers only :meth:`health`."""
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
            # No boot ids: a boot id is what a prune of a live node would need to pass.
            "members": [{"name": m.name, "address": m.address, "phylactery_url": m.phylactery_url} for m in members],
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
                # What the rendered keepalived.conf asks for its VRRP process (docs/phylactery.md).
                "scheduling": "realtime" if self.vrrp_realtime else f"nice {render.VRRP_NICE}",
            },
            "etcd": etcd,
            "last_reconcile": self.last_reconcile,
        }

    async def _etcd_status(self) -> dict[str, Any]:
        """``{"members": [...], "quorum": bool | None, "error": str | None}`` of the local etcd
        member; None when this node runs no etcd member yet. The list is read linearizably
        (etcd 3.5's ``member/list`` with ``linearizable``): ``quorum`` true means a majority
        agreed on it, which is what a node asks before it believes its own member was removed
        (``leader/agent.py``); without quorum the member's own view, with ``quorum`` false."""
        ctx = self.driver.etcd_client_context()
        if ctx is None:
            return {"members": [], "quorum": None, "error": None}
        out: dict[str, Any] = {"members": [], "quorum": None, "error": None}

        def listed(members: list[Any]) -> list[dict[str, Any]]:
            return [{**m.to_json(), "node": self.driver.etcd_member_node(m.name)} for m in members]

        async with EtcdClient([self.driver.etcd_endpoint], ctx, timeout_s=2.0) as etcd:
            try:
                out["members"] = listed(await etcd.member_list(linearizable=True))
                out["quorum"] = True
            except (EtcdError, OSError) as err:
                out["error"] = str(err)
                try:
                    out["members"] = listed(await etcd.member_list())
                    out["quorum"] = False
                except (EtcdError, OSError) as local:
                    out["error"] = str(local)
        return out


def _warm_imports() -> None:
    import kubernetes.client
    import kubernetes.config  # noqa: F401
