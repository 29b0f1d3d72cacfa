"""Who is asking: the bearer credential of a request, told apart as ``control`` or ``worker``.

Phylactery accepts two credentials (:mod:`core.credentials`): the control credential, for
everything, and the worker credential, for a worker's prune of itself. Both live on the share
and are rotated there (``ek8s credentials rotate``, ``ek8s reset``), so an :class:`Authorizer`
re-reads them: every :data:`REREAD_S` seconds, and when a request brings a credential it does
not know (at most once per :data:`MISS_REREAD_S`; such a request waits for that read), so a
client that read a new value a moment ago is not refused, while a flood of bad guesses costs at
most one share read a second and waits up to a second each. The previous value of a rotated
credential is accepted until its end.

What each route needs is :data:`ROUTES`; :mod:`phylactery.app` enforces it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from core.credentials import CONTROL, KINDS, WORKER, CredentialSet
from core.logs import get_logger
from core.share import ShareError, ShareStore

log = get_logger(__name__, "http")

REREAD_S = 5.0  # credentials re-read at least this often (seconds)
MISS_REREAD_S = 1.0  # an unknown credential re-reads them at most this often

# Who may call what (method, path) -> the credentials allowed; a route absent here needs none.
# GET /v1/status answers everyone, but only ``{"ok": ...}`` without the control credential.
ROUTES: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/refresh"): frozenset({CONTROL}),
    ("POST", "/v1/join-material"): frozenset({CONTROL}),
    ("POST", "/v1/prune"): frozenset({CONTROL, WORKER}),
    ("GET", "/v1/etcd"): frozenset({CONTROL}),  # ek8s node: the members' names and URLs
    ("POST", "/v1/remove"): frozenset({CONTROL}),  # ek8s node remove: the operator's decision
}


def bearer(header: str) -> str | None:
    """The credential in an ``Authorization: Bearer <credential>`` header, or None (no header,
    another scheme, an empty credential)."""
    scheme, _, given = header.partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return None
    return given


class Authorizer:
    """Tells which credential a request carries, from ``store``'s current credentials.
    ``clock`` gives Unix seconds (the previous value's end is one)."""

    def __init__(self, store: ShareStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._sets: dict[str, CredentialSet] = {}
        self._read_started = float("-inf")  # time.monotonic() when the last read began
        self._pending: asyncio.Task[None] | None = None  # the next read, shared by its waiters

    async def _read(self, delay_s: float) -> None:
        """Read both credentials after ``delay_s``. A credential that cannot be read keeps its
        last value (a share that does not answer refuses no one it accepted a moment ago)."""
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        self._read_started = time.monotonic()
        for kind in KINDS:
            try:
                self._sets[kind] = await asyncio.to_thread(self.store.read_credentials, kind)
            except (OSError, ShareError) as err:
                log.warning("cannot read a credential; keeping the last one", extra={"kind": kind, "error": str(err)})

    def _next_read(self) -> asyncio.Task[None]:
        """The read every waiter shares: the pending one, or a new one that starts once
        :data:`MISS_REREAD_S` has passed since the last one began."""
        if self._pending is None or self._pending.done():
            delay = max(0.0, MISS_REREAD_S - (time.monotonic() - self._read_started))
            self._pending = asyncio.get_running_loop().create_task(self._read(delay))
        return self._pending

    def _match(self, given: str) -> str | None:
        now = self.clock()
        found = None
        for kind in KINDS:  # every set is compared, in constant time each
            s = self._sets.get(kind)
            if s is not None and s.accepts(given, now) and found is None:
                found = kind
        return found

    async def identify(self, header: str) -> str | None:
        """``control``, ``worker`` or None for the ``Authorization`` header ``header``."""
        given = bearer(header)
        if given is None:
            return None
        arrived = time.monotonic()
        if arrived - self._read_started >= REREAD_S:
            await asyncio.shield(self._next_read())
        kind = self._match(given)
        # Unknown: perhaps rotated since the last read. Wait for a read that began after this
        # request arrived (at most one a MISS_REREAD_S, shared by every request waiting).
        while kind is None and self._read_started < arrived:
            await asyncio.shield(self._next_read())
            kind = self._match(given)
        return kind
