"""Phylactery holds under abuse: a real aiohttp server on loopback, behind its connection guard,
with 2,000 slow clients (slowloris: each sent half a request head and waits) still serves
``/healthz`` and an authenticated prune within 1 s; a head or a body that does not arrive in
time is cut off. No namespace, no daemon: loopback and a free port only."""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from phylactery.app import serve
from phylactery.guard import ConnectionGuard, GuardedSite
from phylactery.service import Phylactery
from tests.unit.test_phylactery_http import make_phylactery

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

    async def main() -> None:
        guard = ConnectionGuard()
        runner = await serve(p, "127.0.0.1", 0, guard)
        writers: list[asyncio.StreamWriter] = []
        try:
            url = f"http://127.0.0.1:{port_of(runner)}"
            for _ in range(SLOW_CLIENTS):
                _, w = await asyncio.open_connection("127.0.0.1", port_of(runner))
                w.write(b"POST /v1/prune HTTP/1.1\r\nHost: phylactery\r\nAuthorization: Bear")
                writers.append(w)
            deadline = time.monotonic() + 30
            while guard.evicted + len(guard.open) < SLOW_CLIENTS:  # the server took them all in
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert len(guard.open) == guard.limit < SLOW_CLIENTS, "capped"
            token = p.store.read_token()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

                async def healthz() -> tuple[int, object]:
                    async with http.get(url + "/healthz") as r:
                        return r.status, await r.json()

                async def prune() -> tuple[int, object]:
                    body = {"name": "control1", "address": "10.0.0.22", "boot_id": "boot-control1"}
                    headers = {"Authorization": f"Bearer {token}"}
                    async with http.post(url + "/v1/prune", json=body, headers=headers) as r:
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


def test_a_request_head_or_body_that_does_not_arrive_in_time_is_cut_off(tmp_path: Path) -> None:
    p = phylactery(tmp_path)

    async def main() -> None:
        guard = ConnectionGuard(head_timeout_s=0.3)
        runner = await serve(p, "127.0.0.1", 0, guard, body_timeout_s=0.3)
        try:
            port = port_of(runner)
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            assert await asyncio.wait_for(r.read(), 5) == b"", "closed without an answer"
            assert guard.timed_out == 1
            w.close()
            token = p.store.read_token()
            r, w = await asyncio.open_connection("127.0.0.1", port)
            head = f"POST /v1/prune HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n"
            w.write(head.encode() + b'{"name": ')  # the head in time, the body never
            answer = await asyncio.wait_for(r.read(), 5)
            assert answer.startswith(b"HTTP/1.1 408 ") and b"body not received within 0.3s" in answer
            w.close()
            # A kept-alive connection that answered must send its next head in time too.
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await asyncio.wait_for(r.readuntil(b'"node": "control0"}'), 5)
            assert first.startswith(b"HTTP/1.1 200 ")
            assert await asyncio.wait_for(r.read(), 5) == b"", "idle after its answer: closed"
            w.close()
        finally:
            await runner.cleanup()

    asyncio.run(main())
