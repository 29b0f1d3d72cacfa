"""Phylactery's HTTP API (aiohttp, JSON, over TLS). Who may call what (docs/security.md):

==========================  ==================  ===============================================
``GET /healthz``            anyone              liveness: ``{"ok": true, "node": ...}``
``GET /v1/status``          anyone / control    without the control credential only
                                                ``{"ok": bool}``; with it node, role,
                                                generation, members, HAProxy backends, etcd
``GET /metrics``            anyone              Prometheus text format: Phylactery's metrics
``GET /v1/etcd``            control             the etcd members, each with whether it
                                                answers and leads (``ek8s node``)
``POST /v1/refresh``        control             re-read members, regenerate, reload if changed
``POST /v1/prune``          control or worker   body ``{"name", "address", "boot_id"}``: remove
                                                that node's stale Node, etcd member (and k3s
                                                node-password Secret); a worker only its own
``POST /v1/join-material``  control             make sure ``join.json`` holds a token and
                                                certificate key the API still accepts
``POST /v1/remove``         control             body ``{"name", "address", "user"}``: the
                                                operator takes that node out for good (etcd
                                                member, Node); refused (409) when etcd would
                                                not stay safe or the node still runs
==========================  ==================  ===============================================

Credentials are bearer tokens (:mod:`core.credentials`), told apart by
:class:`phylactery.auth.Authorizer`, which re-reads them from the share (rotation). Errors are
JSON ``{"error": "..."}`` with a 4xx status (401 no or unknown credential, 403 a credential
that does not allow the call or the prune, 400 bad body naming the field, 408 a body not sent
within ``BODY_TIMEOUT_S``, 409 asked to prune the serving node or a node alive in another
boot, 413 a body over 64 KiB) or 503 when a store needed for pruning, or the share, does not
answer; never a traceback, never a boot id. Connections are capped and must finish their TLS
handshake and send each request's head in time (:mod:`phylactery.guard`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import signal
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from core.credentials import CONTROL
from core.drivers import ApiUnavailable, DriverError
from core.logs import get_logger
from core.notify import ServiceNotifier
from core.records import BOOT_ID_RE, NODE_NAME_RE
from core.share import EpochSuperseded, ShareError
from phylactery import metrics
from phylactery.auth import ROUTES, Authorizer
from phylactery.guard import HEAD_TIMEOUT_S, ConnectionGuard, GuardedSite
from phylactery.prune import PruneError, PruneForbidden, PruneRefused, Requester
from phylactery.service import Phylactery

log = get_logger(__name__, "http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PHYLACTERY: web.AppKey[Phylactery] = web.AppKey("phylactery", Phylactery)
AUTH: web.AppKey[Authorizer] = web.AppKey("authorizer", Authorizer)
# Request key: the credential the request proved ("control", "worker") or None. aiohttp
# 3.12+ has typed request keys; the nodes' older aiohttp (>= 3.9) takes a string.
CALLER: Any = web.RequestKey("caller", object) if hasattr(web, "RequestKey") else "ek8s.caller"
PRUNES: web.AppKey[metrics.PruneCounts] = web.AppKey("prunes", metrics.PruneCounts)
GUARD: web.AppKey[ConnectionGuard] = web.AppKey("guard", ConnectionGuard)
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout_s", float)
BODY_TIMEOUT_S = 10.0  # a request's body, from its head on
MAX_BODY = 64 * 1024  # bytes; aiohttp answers 413 beyond


def error(status: int, message: str) -> web.Response:
    """A JSON error answer ``{"error": message}`` with HTTP ``status``."""
    return web.json_response({"error": message}, status=status)


@web.middleware
async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection guard a request's head arrived (its deadline is off) and when its
    answer is done (the next head is due in time)."""
    guard = request.app[GUARD]
    guard.request_started(request.transport)
    try:
        return await handler(request)
    finally:
        guard.request_done(request.transport)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error: 503 when the share or a file does not answer,
    500 (logged with its traceback) for anything unexpected."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error(exc.status, exc.reason)
        raise
    except (ShareError, OSError) as err:
        log.warning("request failed: the share does not answer", extra={"path": request.path, "error": str(err)})
        return error(503, f"the share does not answer: {err}")
    except Exception:
        log.exception("request failed", extra={"path": request.path})
        return error(500, "internal error; see the Phylactery log")


@web.middleware
async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell which credential the request carries (``request[CALLER]``) and refuse a call
    :data:`phylactery.auth.ROUTES` does not allow it: 401 without a known credential, 403
    with one that does not allow this call."""
    caller = await request.app[AUTH].identify(request.headers.get("Authorization", ""))
    request[CALLER] = caller
    allowed = ROUTES.get((request.method, request.path))
    if allowed is not None:
        if caller is None:
            return error(401, "missing or unknown credential (Authorization: Bearer <credential>)")
        if caller not in allowed:
            needs = " or ".join(sorted(allowed))
            return error(403, f"the {caller} credential may not call {request.method} {request.path}: it needs {needs}")
    return await handler(request)


async def healthz(request: web.Request) -> web.StreamResponse:
    """200 once HAProxy and keepalived run with a config from the registry and while every
    background loop runs; 503 before, and while a loop that failed waits to start again
    (``loops_down``: loop name -> its exception)."""
    p = request.app[PHYLACTERY]
    ok, down = p.health()
    body: dict[str, Any] = {"ok": ok, "node": p.cfg.node.name}
    if down:
        body["loops_down"] = down
    return web.json_response(body, status=200 if ok else 503)


async def status(request: web.Request) -> web.StreamResponse:
    """``GET /v1/status``: with the control credential the document of
    :meth:`Phylactery.status` (keys in docs/phylactery.md); without it only ``{"ok": bool}``
    (healthy or not: the topology, addresses and etcd URLs are the control nodes' business)."""
    p = request.app[PHYLACTERY]
    if request.get(CALLER) != CONTROL:
        ok, _ = p.health()
        return web.json_response({"ok": ok})
    return web.json_response(await p.status())


async def refresh(request: web.Request) -> web.StreamResponse:
    """``POST /v1/refresh``: 202, and a reconcile soon (requests coalesce)."""
    request.app[PHYLACTERY].request_refresh()
    return web.json_response({"accepted": True}, status=202)


async def _json_body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, read within the app's body timeout (:data:`BODY_TIMEOUT_S`).
    Raises 400 (not JSON, not an object, nested too deep), 408 (too slow) and 413 (too large,
    aiohttp's own)."""
    timeout = request.app[BODY_TIMEOUT]
    try:
        raw = await asyncio.wait_for(request.read(), timeout)
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason=f"body not received within {timeout:g}s") from None
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise web.HTTPBadRequest(reason="body is not valid JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="body must be a JSON object")
    return body


async def prune(request: web.Request) -> web.StreamResponse:
    """``POST /v1/prune`` with ``{"name", "address", "boot_id"}`` (the requester's boot):
    200 with what was removed; 400 bad body; 403 a worker's credential asking for another
    node than the one it is sent from (docs/security.md); 409 the serving node, or a node
    whose current incarnation is alive (docs/recovery.md); 503 a store did not answer."""
    body = await _json_body(request)
    name, address, boot = body.get("name"), body.get("address"), body.get("boot_id")
    if not isinstance(name, str) or not name:
        return error(400, "field 'name': a node name (string) is required")
    if not NODE_NAME_RE.match(name):
        return error(400, f"field 'name': {name[:80]!r} is not a node name (a lower-case RFC 1123 label)")
    if not isinstance(address, str):
        return error(400, "field 'address': an IPv4 address (string) is required")
    if not isinstance(boot, str) or not boot:
        return error(400, "field 'boot_id': the requester's boot id (string) is required")
    if not BOOT_ID_RE.match(boot):
        return error(400, f"field 'boot_id': {boot[:80]!r} is not a boot id")
    try:
        address = str(ipaddress.IPv4Address(address))
    except ValueError:
        return error(400, f"field 'address': {address[:80]!r} is not an IPv4 address")
    p = request.app[PHYLACTERY]
    counts = request.app[PRUNES].by_outcome
    requester = Requester(credential=str(request[CALLER]), address=peer_address(request), boot_id=boot)
    try:
        result = await p.prune(name, address, boot, requester)
    except PruneForbidden as err:
        log.warning("prune forbidden", extra={"node_": name, "credential": requester.credential, "error": str(err)})
        counts["refused"] += 1
        return error(403, str(err))
    except (ValueError, PruneRefused) as err:
        log.warning("prune refused", extra={"node_": name, "error": str(err)})
        counts["refused"] += 1
        return error(409, str(err))
    except PruneError as err:
        counts["failed"] += 1
        return error(503, str(err))
    counts["pruned"] += 1
    log.info("pruned", extra=result.to_json())
    return web.json_response(result.to_json())


def peer_address(request: web.Request) -> str:
    """The IP address the request came from (the TCP peer; no proxy stands in front of
    Phylactery), IPv4-mapped IPv6 addresses in their IPv4 form; "" when unknown."""
    remote = request.remote or ""
    try:
        ip = ipaddress.ip_address(remote)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


async def etcd_members(request: web.Request) -> web.StreamResponse:
    """``GET /v1/etcd``: :meth:`Phylactery.etcd_members` (the control credential only: member
    names and URLs are the control nodes' business, as in ``/v1/status``)."""
    return web.json_response(await request.app[PHYLACTERY].etcd_members())


USER_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


async def remove(request: web.Request) -> web.StreamResponse:
    """``POST /v1/remove`` with ``{"name", "address", "user"}`` (``user``: who decided, for
    the log): 200 with what was removed; 400 bad body; 409 refused (unsafe for etcd, the node
    still runs, or this node itself); 503 etcd or the API did not answer."""
    body = await _json_body(request)
    name, address, user = body.get("name"), body.get("address"), body.get("user")
    if not isinstance(name, str) or not NODE_NAME_RE.match(name):
        return error(400, "field 'name': a node name (a lower-case RFC 1123 label) is required")
    if not isinstance(address, str):
        return error(400, "field 'address': an IPv4 address (string) is required")
    try:
        address = str(ipaddress.IPv4Address(address))
    except ValueError:
        return error(400, f"field 'address': {address[:80]!r} is not an IPv4 address")
    if not isinstance(user, str) or not USER_RE.match(user):
        return error(400, "field 'user': who decided (1-64 letters, digits, '.', '_', '@', '-') is required")
    try:
        result = await request.app[PHYLACTERY].remove(name, address)
    except (ValueError, PruneRefused) as err:
        log.warning("remove refused", extra={"node_": name, "user": user, "error": str(err)})
        return error(409, str(err))
    except PruneError as err:
        return error(503, str(err))
    log.info("removed on the operator's decision", extra={"user": user, **result.to_json()})
    return web.json_response(result.to_json())


async def join_material(request: web.Request) -> web.StreamResponse:
    """Ensure the published join material is still accepted (refresh what expired)."""
    try:
        result = await request.app[PHYLACTERY].ensure_join_material()
    except LookupError as err:
        return error(409, str(err))
    except (ApiUnavailable, EpochSuperseded) as err:
        return error(503, str(err))
    except DriverError as err:
        log.error("join material refresh failed", extra={"error": str(err)})
        return error(503, f"{request.app[PHYLACTERY].driver.name} failed: {err}")
    return web.json_response(result)


async def prometheus(request: web.Request) -> web.StreamResponse:
    """``GET /metrics``: Prometheus text format (docs/metrics.md), no token needed."""
    body = await metrics.render(request.app[PHYLACTERY], request.app[PRUNES])
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


def make_app(
    phylactery: Phylactery,
    authorizer: Authorizer | None = None,
    guard: ConnectionGuard | None = None,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> web.Application:
    """The aiohttp application; starting Phylactery itself is :func:`run`'s job.
    ``authorizer`` tells the credentials apart (default: from Phylactery's share); ``guard``
    is the connection guard of the site that serves it (:func:`serve`); a request's body must
    arrive within ``body_timeout_s`` of its head."""
    app = web.Application(middlewares=[guarded, json_errors, authorize], client_max_size=MAX_BODY)
    app[PHYLACTERY] = phylactery
    app[AUTH] = authorizer or Authorizer(phylactery.store)
    app[PRUNES] = metrics.PruneCounts()
    app[GUARD] = guard or ConnectionGuard()
    app[BODY_TIMEOUT] = body_timeout_s
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/metrics", prometheus)
    app.router.add_post("/v1/refresh", refresh)
    app.router.add_post("/v1/prune", prune)
    app.router.add_post("/v1/join-material", join_material)
    app.router.add_get("/v1/etcd", etcd_members)
    app.router.add_post("/v1/remove", remove)
    return app


def systemd_status(p: Phylactery) -> str:
    """``STATUS=`` of ``phylactery.service``: generation, registered members, HAProxy and
    keepalived's state, from what Phylactery holds (no I/O)."""
    members = p.last_reconcile.get("members") or []
    daemons = "HAProxy and keepalived running" if p.started else "starting HAProxy and keepalived"
    return f"generation {p.generation}, {len(members)} members registered ({', '.join(members)}); {daemons}"


async def keep_systemd_told(p: Phylactery, notifier: ServiceNotifier, every_s: float = 2.0) -> None:
    """``WATCHDOG=1`` at half of ``WatchdogSec=`` and ``STATUS=`` when it changes, from the event
    loop: an event loop blocked (a synchronous share call on a hung NFS mount) stops both, and
    systemd restarts the unit."""
    last = ""
    step = min(every_s, notifier.ping_every_s or every_s)
    while True:
        status = systemd_status(p)
        if status != last:
            notifier.status(status)
            last = status
        notifier.watchdog()
        await asyncio.sleep(step)


async def serve(
    phylactery: Phylactery,
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    guard: ConnectionGuard | None = None,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> web.AppRunner:
    """Serve Phylactery's API on ``host``:``port`` (port 0: a free one) over ``tls`` (None:
    plain HTTP, for tests on loopback only; a node always serves TLS, :func:`run`) behind a
    connection guard (:mod:`phylactery.guard`). Returns the runner (``runner.cleanup()``
    stops it; its one site's ``bound_port`` is the port)."""
    guard = guard or ConnectionGuard()
    app = make_app(phylactery, guard=guard, body_timeout_s=body_timeout_s)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=HEAD_TIMEOUT_S)
    await runner.setup()
    await GuardedSite(runner, guard, host, port, tls).start()
    return runner


def run(phylactery: Phylactery) -> None:
    """Start Phylactery (register, apply configs, notify peers), then serve until SIGTERM."""

    async def _main() -> None:
        # Serve first: peers that register meanwhile can ask us to refresh (the request is
        # kept and handled once start() has applied the first config).
        phylactery.store.ensure()
        tls = await asyncio.to_thread(phylactery.server_tls)
        guard = ConnectionGuard()
        runner = await serve(phylactery, "0.0.0.0", phylactery.cfg.phylactery.port, tls, guard)
        log.info("serving", extra={"port": phylactery.cfg.phylactery.port, "max_connections": guard.limit})
        notifier.ready(f"serving on port {phylactery.cfg.phylactery.port}; registering")
        alive = asyncio.create_task(keep_systemd_told(phylactery, notifier))
        await phylactery.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
        alive.cancel()
        notifier.stopping(f"stopping; generation {phylactery.generation}")
        await phylactery.stop()
        await runner.cleanup()

    notifier = ServiceNotifier()

    asyncio.run(_main())
