"""Phylactery holds under abuse: a real aiohttp server on loopback over TLS, behind its
connection guard, with 2,000 slow clients (slowloris: each opened a connection and never
finished its TLS handshake) still serves ``/healthz`` and an authenticated prune within 1 s; a
handshake, a head or a body that does not arrive in time is cut off. No namespace, no daemon:
loopback and a free port only."""

from __future__ import annotations

import asyncio
import resource
import ssl
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from phylactery.app import serve
from phylactery.guard import ConnectionGuard, GuardedSite
from phylactery.service import Phylactery
from tests.unit.test_phylactery_http import loopback_tls, make_phylactery

SLOW_CLIENTS = 2000


def raise_fd_limit(needed: int) -> None:
    """This process's own soft limit on open files, up to its hard limit (no root needed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def port_of(runner: web.AppRunner) -> int:
    [site] = runner.sites
    assert isinstance(site, GuardedSite)
    return site.bound_port


async def timed(coro_fn) -> tuple[float, int, object]:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    status, body = await coro_fn()
    return time.monotonic() - t0, status, body


def phylactery(tmp_path: Path) -> Phylactery:
    p = make_phylactery(tmp_path)
    p.started = True  # HAProxy and keepalived run (start() needs the daemons: not this test)
    p.driver.prune_kinds = ()  # type: ignore[misc]  # nothing to reach: the prune itself answers 200
    return p


def test_2000_slow_clients_leave_healthz_and_a_prune_within_1s(tmp_path: Path) -> None:
    raise_fd_limit(3 * SLOW_CLIENTS + 512)  # both ends of every connection live in this process
    p = phylactery(tmp_path)

    server_tls, client_tls = loopback_tls(p, tmp_path / "tls")

    async def main() -> None:
        guard = ConnectionGuard()
        runner = await serve(p, "127.0.0.1", 0, server_tls, guard)
        writers: list[asyncio.StreamWriter] = []
        try:
            url = f"https://127.0.0.1:{port_of(runner)}"
            for _ in range(SLOW_CLIENTS):
                # TCP only: the TLS handshake never comes (a ClientHello's first bytes at most).
                _, w = await asyncio.open_connection("127.0.0.1", port_of(runner))
                w.write(b"\x16\x03\x01\x02")
                writers.append(w)
            deadline = time.monotonic() + 30
            while guard.evicted + len(guard.open) < SLOW_CLIENTS:  # the server took them all in
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert len(guard.open) == guard.limit < SLOW_CLIENTS, "capped"
            token = p.store.read_token()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

                async def healthz() -> tuple[int, object]:
                    async with http.get(url + "/healthz", ssl=client_tls) as r:
                        return r.status, await r.json()

                async def prune() -> tuple[int, object]:
                    body = {"name": "control1", "address": "10.0.0.22", "boot_id": "boot-control1"}
                    headers = {"Authorization": f"Bearer {token}"}
                    async with http.post(url + "/v1/prune", json=body, headers=headers, ssl=client_tls) as r:
                        return r.status, await r.json()

                h_s, h_status, h_body = await timed(healthz)
                p_s, p_status, p_body = await timed(prune)
            assert (h_status, h_body) == (200, {"ok": True, "node": "control0"})
            assert p_status == 200 and p_body == {
                "name": "control1",
                "address": "10.0.0.22",
                "deleted_nodes": [],
                "removed_etcd_members": [],
                "deleted_secrets": [],
            }
            assert h_s < 1.0 and p_s < 1.0, (h_s, p_s)
            assert guard.evicted >= SLOW_CLIENTS - guard.limit
        finally:
            for w in writers:
                w.close()
            await runner.cleanup()

    asyncio.run(main())


async def closed(r: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection without an answer (over TLS an abort may
    also show as a reset or an unfinished TLS close)."""
    try:
        return await asyncio.wait_for(r.read(), 5) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def test_a_handshake_head_or_body_that_does_not_arrive_in_time_is_cut_off(tmp_path: Path) -> None:
    p = phylactery(tmp_path)
    server_tls, client_tls = loopback_tls(p, tmp_path / "tls")

    async def main() -> None:
        guard = ConnectionGuard(head_timeout_s=0.3)
        runner = await serve(p, "127.0.0.1", 0, server_tls, guard, body_timeout_s=0.3)
        try:
            port = port_of(runner)
            r, w = await asyncio.open_connection("127.0.0.1", port)  # no handshake at all
            assert await closed(r), "closed at the head deadline, handshake included"
            assert guard.timed_out + guard.handshakes_failed == 1
            w.close()
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            assert await closed(r), "closed without an answer"
            w.close()
            token = p.store.read_token()
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls)
            head = f"POST /v1/prune HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n"
            w.write(head.encode() + b'{"name": ')  # the head in time, the body never
            answer = await asyncio.wait_for(r.readuntil(b"within 0.3s"), 5)
            assert answer.startswith(b"HTTP/1.1 408 ") and b"body not received within 0.3s" in answer
            w.close()
            # A kept-alive connection that answered must send its next head in time too.
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await asyncio.wait_for(r.readuntil(b'"node": "control0"}'), 5)
            assert first.startswith(b"HTTP/1.1 200 ")
            assert await closed(r), "idle after its answer: closed"
            w.close()
        finally:
            await runner.cleanup()

    asyncio.run(main())
