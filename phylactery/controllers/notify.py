"""The peer-notify controller: ask every other registered Phylactery to refresh (``POST
/v1/refresh`` with the bearer token), once at start and whenever this node registers in a new
generation, so the peers re-read the registry at once instead of at their next period."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp

from core.logs import get_logger
from core.share import MemberRecord, ShareError

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

    async def notify_peers(self) -> list[str]:
        """POST /v1/refresh to every other registered Phylactery (best effort: a peer that
        does not answer is only logged). Returns the peers that took it."""
        p = self.p
        token = await asyncio.to_thread(p.store.read_token)
        members = await asyncio.to_thread(p.store.members)
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def _one(m: MemberRecord) -> str | None:
                try:
                    async with http.post(
                        m.phylactery_url + "/v1/refresh", headers={"Authorization": f"Bearer {token}"}
                    ) as resp:
                        log.info("asked peer to refresh", extra={"peer": m.name, "status": resp.status})
                        return m.name if resp.status < 300 else None
                except (aiohttp.ClientError, TimeoutError, OSError) as err:
                    log.info("peer did not take the refresh", extra={"peer": m.name, "error": str(err)})
                    return None

            done = await asyncio.gather(*(_one(m) for m in members if m.name != p.cfg.node.name))
        return [n for n in done if n is not None]
