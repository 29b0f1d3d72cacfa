"""The peer-notify controller: ask every other live Phylactery to refresh (``POST /v1/refresh``
with the control credential, over TLS verified with the Phylactery CA), once at start and
whenever this node registers in a new generation, so the peers re-read the registry at once
instead of at their next period. A member whose node has not heartbeated within the liveness
TTL (down, or gone for good) gets nothing: no credential goes to an address that may be
another machine's now (:func:`leader.peers.peer_urls` applies the same rule)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp

from core.credentials import CONTROL
from core.logs import get_logger
from core.share import MemberRecord, ShareError
from core.tls import TrustedCA, is_https

if TYPE_CHECKING:
    from phylactery.service import Phylactery

log = get_logger(__name__, "phylactery")
PEER_TIMEOUT_S = 2.0  # one peer's answer to a refresh, at most


class PeerNotifier:
    """Loop ``notify_peers`` of Phylactery ``p``: notifies once per :meth:`request`
    (requests while it notifies make one more round)."""

    name = "notify_peers"

    def __init__(self, p: Phylactery) -> None:
        self.p = p
        self.ca = TrustedCA(p.store.read_phylactery_ca)  # the control-only tree's copy
        self._wanted = asyncio.Event()
        self._wanted.set()  # the first round, at start

    def request(self) -> None:
        """Notify the peers soon."""
        self._wanted.set()

    async def run(self) -> None:
        """One round per request; a round the share does not allow (no token, no registry) is
        logged and tried again at the next request."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.notify_peers()
            except (ShareError, OSError) as err:
                log.warning("cannot notify the peers", extra={"error": str(err)})

    def live_peers(self) -> list[MemberRecord]:
        """The other registered members reached over HTTPS whose node heartbeated within the
        control nodes' liveness TTL (one probe touch, one heartbeat read each)."""
        p = self.p
        others = [m for m in p.store.members() if m.name != p.cfg.node.name and is_https(m.phylactery_url)]
        beats = p.store.heartbeats([m.name for m in others])
        ttl = p.cfg.timeouts.liveness_ttl_s("control")
        return [m for m in others if (hb := beats.get(m.name)) is not None and hb.age_s < ttl]

    async def notify_peers(self) -> list[str]:
        """POST /v1/refresh to every other live Phylactery (best effort: a peer that does not
        answer is only logged). Returns the peers that took it."""
        p = self.p
        token = await asyncio.to_thread(p.store.read_credential, CONTROL)
        tls = await asyncio.to_thread(self.ca.context)
        members = await asyncio.to_thread(self.live_peers)
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def _one(m: MemberRecord) -> str | None:
                try:
                    async with http.post(
                        m.phylactery_url + "/v1/refresh", headers={"Authorization": f"Bearer {token}"}, ssl=tls
                    ) as resp:
                        log.info("asked peer to refresh", extra={"peer": m.name, "status": resp.status})
                        return m.name if resp.status < 300 else None
                except aiohttp.ClientConnectorCertificateError as err:
                    self.ca.forget()  # the CA may have been replaced: read it again next round
                    log.warning("peer's certificate not verified", extra={"peer": m.name, "error": str(err)})
                    return None
                except (aiohttp.ClientError, TimeoutError, OSError) as err:
                    log.info("peer did not take the refresh", extra={"peer": m.name, "error": str(err)})
                    return None

            done = await asyncio.gather(*(_one(m) for m in members))
        return [n for n in done if n is not None]
