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

**TLS under the guard.** Phylactery serves HTTPS (docs/security.md). Were TLS done by the
listening server (``create_server(ssl=...)``), a connection would reach the guard only after
its handshake: clients that open connections and never finish a handshake would hold file
descriptors outside the cap. So the site listens in plain TCP and each guarded connection,
once admitted, upgrades itself with ``loop.start_tls`` (asyncio's public API; the handshake
within the head deadline, ``ssl_handshake_timeout``); aiohttp's protocol then sees the
decrypted stream. The cap, the eviction of the oldest connection without a request head and
the head deadline therefore count from the TCP connection, handshake included.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import ssl
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
    """One accepted connection: the guard's bookkeeping around aiohttp's own protocol, and
    the TLS upgrade when the guard serves TLS."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None  # the TCP connection
        self.app_transport: asyncio.BaseTransport | None = None  # what aiohttp writes to
        self.admitted = False
        self.made = False  # aiohttp's protocol has its transport
        self.serving = 0  # requests whose head arrived and whose answer is not done
        self.deadline: asyncio.TimerHandle | None = None
        self.handshake: asyncio.Task[None] | None = None
        # Decrypted bytes that arrive between the handshake's end and start_tls returning
        # (TLS 1.3 clients send their request with their Finished message): kept for aiohttp.
        self.early: list[bytes] = []
        self.early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.guard.admit(self):
            transport.abort()
            return
        self.admitted = True
        self.arm()
        if self.guard.tls is None:
            self._made(transport)
        else:
            transport.pause_reading()  # the ClientHello waits in the kernel for start_tls
            self.handshake = self.guard.loop.create_task(self._start_tls(transport, self.guard.tls))

    async def _start_tls(self, transport: asyncio.Transport, tls: ssl.SSLContext) -> None:
        """Upgrade to TLS within the head deadline; a failed or late handshake closes it."""
        try:
            app = await self.guard.loop.start_tls(
                transport, self, tls, server_side=True, ssl_handshake_timeout=self.guard.head_timeout_s
            )
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError, RuntimeError):
            self.guard.handshakes_failed += 1
            self.disarm()
            self.guard.forget(self)
            transport.abort()
            return
        if app is None or transport.is_closing():
            self.guard.forget(self)
            return
        self._made(app)

    def _made(self, app: asyncio.BaseTransport) -> None:
        self.app_transport = app
        self.guard.serving_on[app] = self
        self.made = True
        self.inner.connection_made(app)
        early, self.early = self.early, []
        for data in early:
            self.inner.data_received(data)
        if self.early_eof and not self.inner.eof_received():
            app.close()

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
        if self.made:
            self.inner.data_received(data)
        elif self.admitted:
            self.early.append(data)

    def eof_received(self) -> bool | None:
        if self.made:
            return self.inner.eof_received()
        self.early_eof = True
        return True  # keep the transport open until aiohttp has the request

    def pause_writing(self) -> None:
        if self.made:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.made:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self.guard.forget(self)
        if self.made:
            self.made = False
            self.inner.connection_lost(exc)


class ConnectionGuard:
    """The connections of one server: at most ``limit`` open, each closed when no request's
    head arrives within ``head_timeout_s`` (seconds). Counts ``refused`` (arrived at the cap
    while every connection was serving), ``evicted`` (closed to make room: no request head
    yet), ``timed_out`` connections and ``handshakes_failed`` (TLS handshakes that failed or
    did not finish in time)."""

    def __init__(
        self, limit: int | None = None, head_timeout_s: float = HEAD_TIMEOUT_S, tls: ssl.SSLContext | None = None
    ) -> None:
        self.limit = connection_limit() if limit is None else limit
        self.head_timeout_s = head_timeout_s
        self.tls = tls  # set by GuardedSite: each admitted connection upgrades itself
        self.open: dict[asyncio.Transport, _Connection] = {}  # TCP connections, in the order they arrived
        self.serving_on: dict[Any, _Connection] = {}  # aiohttp's transport -> its connection
        self.refused = self.evicted = self.timed_out = self.handshakes_failed = 0
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
        if conn.app_transport is not None:
            self.serving_on.pop(conn.app_transport, None)

    def request_started(self, transport: Any) -> None:
        """A request's head arrived on ``transport`` (aiohttp's): its deadline is off while
        it is served."""
        conn = self.serving_on.get(transport)
        if conn is not None:
            conn.serving += 1
            conn.disarm()

    def request_done(self, transport: Any) -> None:
        """The answer on ``transport`` is done: the next request's head is due in time."""
        conn = self.serving_on.get(transport)
        if conn is not None:
            conn.serving = max(0, conn.serving - 1)
            if conn.serving == 0:
                conn.arm()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through ``guard`` (``host`` empty: every address),
    each upgraded to TLS with ``tls`` when given (see the module). ``port`` 0 picks a free
    port; :attr:`bound_port` says which."""

    def __init__(
        self, runner: web.BaseRunner, guard: ConnectionGuard, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> None:
        super().__init__(runner, backlog=1024)
        self.guard, self.host, self.port = guard, host, port
        guard.tls = tls
        self.bound_port = port

    @property
    def name(self) -> str:
        scheme = "https" if self.guard.tls is not None else "http"
        return f"{scheme}://{self.host or '0.0.0.0'}:{self.bound_port}"

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
