"""The reconcile controller: this node's member record, haproxy.cfg and keepalived.conf in line
with the member registry on the share.

Refreshes coalesce: while a reconcile runs, any number of requests (``POST /v1/refresh``,
:meth:`ReconcileController.request`) cause at most one more, and the loop reconciles by itself
every ``phylactery.reconcile_interval_s`` (30 s) after the last one, so a refresh that never
arrived heals anyway. An unchanged config is never reloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import TYPE_CHECKING, Any

from core.fileperm import FILE_MODE
from core.logs import get_logger
from core.services import ServiceError
from core.share import MemberRecord, ShareError
from core.tls import client_context
from phylactery import daemons, render

if TYPE_CHECKING:
    from phylactery.service import Phylactery

log = get_logger(__name__, "reconcile")


class ReconcileController:
    """Loop ``reconcile`` of Phylactery ``p``. ``generation`` is the generation this node
    registered in; ``last_result`` what the last reconcile did (``/v1/status``)."""

    name = "reconcile"

    def __init__(self, p: Phylactery) -> None:
        self.p = p
        self.generation = 0
        self.last_result: dict[str, Any] = {}
        self._dirty = asyncio.Event()

    def request(self) -> None:
        """Ask for a reconcile soon; many requests while one runs make one more run."""
        self._dirty.set()

    async def run(self) -> None:
        """Reconcile on every request and ``reconcile_interval_s`` after the last reconcile.
        A failure the next turn may heal (the daemons refused a config, the share or a service
        manager did not answer) is logged and the installed configs stay as they were."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.p.cfg.phylactery.reconcile_interval_s)
            reason = "refresh" if self._dirty.is_set() else "period"
            self._dirty.clear()
            try:
                await self.reconcile(reason)
            except (daemons.ConfigRejected, render.RenderRefused, ServiceError, ShareError, OSError) as err:
                log.error("reconcile failed", extra={"reason": reason, "error": str(err)})

    async def register(self) -> None:
        """Write this node's member record for the current generation; on a change of
        generation (after the first start), have the peers told so they re-read the registry."""
        p = self.p
        state = await asyncio.to_thread(p.store.read_state)
        changed = p.started and state.generation != self.generation
        self.generation = state.generation
        record = MemberRecord(
            name=p.cfg.node.name,
            address=p.cfg.node.address,
            phylactery_url=p.url,
            boot_id=p.boot_id,
            generation=state.generation,
        )
        await asyncio.to_thread(p.store.register_member, record)
        log.info("registered in the member registry", extra={"generation": state.generation})
        if changed:
            p.controllers.notify.request()

    def generation_ca(self, generation: int) -> str | None:
        """The cluster CA (PEM) of ``generation`` from its published join material, which
        HAProxy's checks verify the API servers against; None before that generation's is
        published (``join.json`` absent or of an earlier generation) or when it is not a
        certificate (logged: the checks then stay unverified rather than the config refused)."""
        try:
            material = self.p.store.read_join_material()
        except (OSError, ShareError):
            return None
        if material.generation != generation:
            return None
        try:
            client_context(material.ca_cert.encode())
        except (ssl.SSLError, ValueError) as err:
            log.error("join.json's ca_cert is no certificate; checks unverified", extra={"error": str(err)})
            return None
        return material.ca_cert

    async def reconcile(self, reason: str) -> dict[str, Any]:
        """Re-read the registry, render both configs, apply what changed. Returns what it did
        (``reason``, ``at``, ``generation``, ``members``, ``haproxy``, ``keepalived``: each
        ``unchanged``, ``reloaded`` or ``started``; ``verify``: the CA file HAProxy's checks
        verify against, or ``none``). Raises what :meth:`run` logs."""
        p, c = self.p, self.p.cfg
        state = await asyncio.to_thread(p.store.read_state)
        if state.generation != self.generation:
            await self.register()
        members = await asyncio.to_thread(p.store.members)
        if not any(m.name == c.node.name for m in members):
            await self.register()
            members = await asyncio.to_thread(p.store.members)
        ca_pem = await asyncio.to_thread(self.generation_ca, state.generation)
        ca_file = daemons.haproxy_ca_file(c.root, ca_pem) if ca_pem else None
        p.haproxy.extra_files = {ca_file: (ca_pem, FILE_MODE)} if ca_pem and ca_file else {}
        haproxy_cfg = render.render_haproxy(
            node=c.node.name,
            cluster=c.cluster,
            generation=state.generation,
            members=[render.Backend(m.name, m.address) for m in members],
            frontend_port=c.vip.port,
            api_port=c.kubernetes.api_server_port,
            stats_socket=str(p.stats_socket),
            server_state_file=str(daemons.haproxy_server_state_file(c.root)),
            ca_file=str(ca_file) if ca_file else "",
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
            realtime=p.vrrp_realtime,
        )
        result = {
            "reason": reason,
            "at": time.time(),
            "generation": state.generation,
            "members": [m.name for m in members],
            "haproxy": await asyncio.to_thread(p.haproxy.apply, haproxy_cfg),
            "keepalived": await asyncio.to_thread(p.keepalived.apply, keepalived_cfg),
        }
        if result["haproxy"] == "unchanged":
            # A reload signalled while HAProxy's master was still taking the previous one can
            # be lost (seen in the lab: two reloads 0.3 s apart, the second never happened), and
            # the file on disk then reads "unchanged" for ever. Compare what runs instead.
            running = set(await asyncio.to_thread(daemons.backend_states, p.stats_socket))
            if running and running != {m.name for m in members}:
                why = f"HAProxy serves {sorted(running)}, the registry lists {sorted(m.name for m in members)}"
                await asyncio.to_thread(p.haproxy.reload, why)
                result["haproxy"] = "reloaded"
        await asyncio.to_thread(daemons.remove_other_ca_files, c.root, ca_file)
        result["verify"] = ca_file.name if ca_file else "none"
        self.last_result = result
        if result["haproxy"] != "unchanged" or result["keepalived"] != "unchanged":
            log.info("reconciled", extra={k: v for k, v in result.items() if k not in ("at",)})
        return result
