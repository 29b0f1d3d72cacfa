"""Phylactery holds under abuse: a connection cap and a deadline for each request's head.

aiohttp's server has no deadline for a request's head on every version the nodes may run
(``aiohttp>=3.9``), nor a cap on connections: 140 clients that each sent half a request and
waited exhausted a 128-fd limit, and ``/healthz``, prunes and joins through that node all
failed (issue 19). So every connection goes through a :class:`ConnectionGuard`:

* a connection must deliver a request's head (everything up to the blank line, which is when
  aiohttp hands the request to the middlewares) within :data:`HEAD_TIMEOUT_S` of opening, and
  the next one within as long after each answer; otherwise it is closed (slowloris). The body
  has its own deadline, ``BODY_TIMEOUT_S`` in :mod:`phylactery.app`;
* at most ``limit`` connections are open at once: :func:`connection_limit`, 1024 or fewer when
  the process's file descriptor limit is lower (the unit raises it: ``LimitNOFILE=65536``).
  A connection that arrives at the cap takes the place of the oldest one that has not sent a
  request head yet (an attacker's half-open connection, never a request being served); when
  every connection is serving a request, the new one is closed at once.

The guard wraps the protocol aiohttp makes for each connection (:class:`GuardedSite` builds
the listening socket with it), and the app's first middleware tells it when a request's head
arrived and when its answer is done (:meth:`ConnectionGuard.request_started`,
:meth:`ConnectionGuard.request_done`).
"""

from __future__ import annotations

import asyncio
import resource
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from core.logs import get_logger

log = get_logger(__name__, "http")

HEAD_TIMEOUT_S = 10.0  # a request's head, from the connection's start or the last answer
MAX_CONNECTIONS = 1024  # open connections at most
FD_RESERVE = 128  # descriptors kept for everything else (etcd clients, the share, the daemons)


def connection_limit(max_connections: int = MAX_CONNECTIONS) -> int:
    """The connection cap: ``max_connections``, or the process's soft ``RLIMIT_NOFILE`` less
    :data:`FD_RESERVE` when that is lower (at least 16), so accepting never fails with
    ``EMFILE`` (which makes asyncio stop accepting for a second)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(16, min(max_connections, soft - FD_RESERVE))


class _Connection(asyncio.Protocol):
    """One accepted connection: the guard's bookkeeping around aiohttp's own protocol."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.serving = 0  # requests whose head arrived and whose answer is not done
        self.deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.guard.admit(self):
            transport.abort()
            return
        self.admitted = True
        self.inner.connection_made(transport)
        self.arm()

    def arm(self) -> None:
        """Close this connection unless a request's head arrives within the head timeout."""
        self.disarm()
        self.deadline = self.guard.loop.call_later(self.guard.head_timeout_s, self.expire)

    def disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def expire(self) -> None:
        self.deadline = None
        if self.serving == 0 and self.transport is not None:
            self.guard.timed_out += 1
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.admitted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self.guard.forget(self)
        if self.admitted:
            self.inner.connection_lost(exc)


class ConnectionGuard:
    """The connections of one server: at most ``limit`` open, each closed when no request's
    head arrives within ``head_timeout_s`` (seconds). Counts ``refused`` (arrived at the cap
    while every connection was serving), ``evicted`` (closed to make room: no request head
    yet) and ``timed_out`` connections."""

    def __init__(self, limit: int | None = None, head_timeout_s: float = HEAD_TIMEOUT_S) -> None:
        self.limit = connection_limit() if limit is None else limit
        self.head_timeout_s = head_timeout_s
        self.open: dict[asyncio.Transport, _Connection] = {}  # in the order they arrived
        self.refused = self.evicted = self.timed_out = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` that guards what ``make`` builds."""
        return lambda: _Connection(self, make())

    def admit(self, conn: _Connection) -> bool:
        """Make room for ``conn`` if needed; False when every open connection is serving."""
        if len(self.open) >= self.limit:
            idle = next((c for c in self.open.values() if c.serving == 0), None)
            if idle is None:
                self.refused += 1
                return False
            self.evicted += 1
            self.forget(idle)
            if idle.transport is not None:
                idle.transport.abort()
        assert conn.transport is not None
        self.open[conn.transport] = conn
        return True

    def forget(self, conn: _Connection) -> None:
        if conn.transport is not None:
            self.open.pop(conn.transport, None)

    def request_started(self, transport: Any) -> None:
        """A request's head arrived on ``transport``: its deadline is off while it is served."""
        conn = self.open.get(transport)
        if conn is not None:
            conn.serving += 1
            conn.disarm()

    def request_done(self, transport: Any) -> None:
        """The answer on ``transport`` is done: the next request's head is due in time."""
        conn = self.open.get(transport)
        if conn is not None:
            conn.serving = max(0, conn.serving - 1)
            if conn.serving == 0:
                conn.arm()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through ``guard`` (``host`` empty: every address).
    ``port`` 0 picks a free port; :attr:`bound_port` says which."""

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, host: str, port: int) -> None:
        super().__init__(runner, backlog=1024)
        self.guard, self.host, self.port = guard, host, port
        self.bound_port = port

    @property
    def name(self) -> str:
        return f"http://{self.host or '0.0.0.0'}:{self.bound_port}"

    async def start(self) -> None:
        """Listen (``SO_REUSEADDR``), each accepted connection guarded."""
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard.factory(server),
            self.host or None,
            self.port,
            backlog=self._backlog,
            reuse_address=True,
            family=socket.AF_INET if not self.host or ":" not in self.host else socket.AF_INET6,
        )
        self.bound_port = self._server.sockets[0].getsockname()[1]
