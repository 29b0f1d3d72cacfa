"""etcd's v3 API through its JSON gateway (grpc-gateway), over HTTPS with a client certificate.

kubeadm's etcd accepts only client-certificate TLS (``--client-cert-auth``); ``aetcd`` opens
plaintext gRPC channels only and ``etcd3`` does not import with protobuf >= 4, so this module
speaks the gateway's JSON over aiohttp instead. Where the gateway answers is the
distribution's: kubeadm's etcd serves it with gRPC on every client URL
(``https://<node>:2379``); k3s sets ``--listen-client-http-urls=https://127.0.0.1:2382``
(etcd >= 3.4.25/3.5.8), so its client URLs speak gRPC only and the gateway answers only on
that loopback URL (each driver's ``etcd_endpoint``). Other members are therefore never
asked through the gateway: :func:`member_answers` judges them by a TLS handshake on their
client URL, which both answer. Paths and shapes are etcd's ``etcdserverpb`` messages as the
gateway maps them (checked against etcd 3.4.23 and 3.5.16):

* ``POST /v3/cluster/member/list|add|remove``, ``POST /v3/maintenance/status``;
* ``POST /v3/kv/range|put|deleterange`` with base64 keys and values.

64-bit ids (member ``ID``, revisions) travel as decimal strings in the gateway's JSON; this
module hands them out as ``int``. Use a client certificate signed by the etcd CA
(``apiserver-etcd-client`` or ``healthcheck-client``), never etcd's server key pair.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp


class EtcdError(Exception):
    """etcd refused or could not be reached. ``str()`` has the endpoint, path and etcd's
    own message (``etcdserver: peerURL exists``, ``etcdserver: unhealthy cluster``...)."""


@dataclass(frozen=True)
class EtcdMember:
    """One member as ``/v3/cluster/member/list`` reports it (``ID`` as an int, URLs as strings)."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False

    @property
    def peer_hosts(self) -> set[str]:
        """Hosts of the peer URLs, parsed (never a substring match of an address)."""
        return {urlsplit(u).hostname or "" for u in self.peer_urls}

    def to_json(self) -> dict[str, Any]:
        """The member for JSON answers: ``id`` in hex (as ``etcdctl member list`` prints it)."""
        return {
            "id": f"{self.id:x}",
            "name": self.name,
            "peer_urls": list(self.peer_urls),
            "client_urls": list(self.client_urls),
            "is_learner": self.is_learner,
        }


def client_ssl_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """TLS context trusting the etcd CA and presenting a client certificate."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def kubeadm_client_context(pki: Path) -> ssl.SSLContext:
    """:func:`client_ssl_context` for the ``apiserver-etcd-client`` pair of a kubeadm PKI
    directory (``/etc/kubernetes/pki``): the client kubeadm itself uses for etcd."""
    return client_ssl_context(pki / "etcd/ca.crt", pki / "apiserver-etcd-client.crt", pki / "apiserver-etcd-client.key")


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _member(d: dict[str, Any]) -> EtcdMember:
    return EtcdMember(
        id=int(d.get("ID", 0)),
        name=d.get("name", ""),
        peer_urls=tuple(d.get("peerURLs", ())),
        client_urls=tuple(d.get("clientURLs", ())),
        is_learner=bool(d.get("isLearner", False)),
    )


async def member_answers(member: EtcdMember, context: ssl.SSLContext, timeout_s: float = 1.0) -> bool:
    """Whether ``member`` completes a TLS handshake on one of its client URLs with
    ``context`` (a client certificate of the cluster's etcd CA, the member's server
    certificate checked against that CA and the URL's host): a live etcd member does, on
    kubeadm's client URLs and on k3s's alike (which speak gRPC only: the JSON gateway is not
    there to ask), whether or not it has quorum; a member whose node rebooted (RAM root) or
    died does not. ``timeout_s`` bounds each URL's connection and handshake."""
    for url in member.client_urls:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 2379
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout_s
            )
        except (OSError, TimeoutError, ssl.SSLError, ValueError):
            continue
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout_s)
        return True
    return False


# etcd refusals that clear by themselves: the strict reconfiguration check refuses member
# add/remove until the handling member has been connected to its peers for 5 s
# (HealthInterval), a learner cannot be promoted before it caught up, an endpoint may be
# starting. kubeadm's etcd client retries these with exponential backoff; so do we.
TRANSIENT = (
    "unhealthy cluster",
    "in sync with leader",
    "not enough started members",
    "no etcd endpoint answered",
    "leader changed",
    "no leader",
    "request timed out",
)


def is_transient(err: EtcdError) -> bool:
    """Whether ``err`` is one of :data:`TRANSIENT`, refusals that clear by themselves."""
    return any(t in str(err) for t in TRANSIENT)


async def retry_transient(
    call: Callable[[], Awaitable[Any]],
    *,
    steps: int = 12,
    first_delay_s: float = 0.25,
    factor: float = 1.5,
    on_retry: Callable[[EtcdError, float], None] | None = None,
) -> Any:
    """Await ``call()``, retrying transient :class:`EtcdError` with exponential backoff
    (0.25 s x 1.5^n, 12 steps: about 60 s in all). Other errors propagate at once."""
    delay = first_delay_s
    for step in range(1, steps + 1):
        try:
            return await call()
        except EtcdError as err:
            if not is_transient(err) or step == steps:
                raise
            if on_retry is not None:
                on_retry(err, delay)
            await asyncio.sleep(delay)
            delay *= factor
    raise AssertionError("unreachable")


class EtcdClient:
    """A few etcd v3 calls against one or more client URLs (tried in order).

    ``endpoints`` are ``https://host:2379`` URLs; ``ssl_context`` from
    :func:`client_ssl_context`; ``timeout_s`` bounds each request in seconds. Use as an async
    context manager or call :meth:`close`.
    """

    def __init__(self, endpoints: list[str], ssl_context: ssl.SSLContext, timeout_s: float = 5.0) -> None:
        self.endpoints = endpoints
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl))
        return self._session

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers; raise
        :class:`EtcdError` with etcd's message on a refusal or when none answers."""
        errors = []
        for ep in self.endpoints:
            url = ep.rstrip("/") + path
            try:
                async with self._http().post(url, json=body) as resp:
                    data = await resp.json(content_type=None)
                    if resp.status != 200 or (isinstance(data, dict) and "error" in data):
                        msg = data.get("message") or data.get("error") if isinstance(data, dict) else data
                        raise EtcdError(f"{url}: HTTP {resp.status}: {msg}")
                    return data if isinstance(data, dict) else {}
            except EtcdError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
                errors.append(f"{url}: {type(err).__name__}: {err}")
        raise EtcdError("no etcd endpoint answered: " + "; ".join(errors))

    # -- cluster membership -----------------------------------------------------------
    async def member_list(self, linearizable: bool = False) -> list[EtcdMember]:
        """Every member, learners included (``POST /v3/cluster/member/list``). By default the
        answering member's own view (no quorum needed); with ``linearizable`` the list a
        quorum agrees on (etcd 3.5's ``MemberListRequest.linearizable``, etcd-io/etcd
        ``api/etcdserverpb/rpc.proto`` v3.5; ``clientv3`` sets it by default since v3.5):
        a member without quorum refuses it (:class:`EtcdError`)."""
        data = await self.call("/v3/cluster/member/list", {"linearizable": True} if linearizable else {})
        return [_member(m) for m in data.get("members", [])]

    async def member_add(self, peer_urls: list[str], learner: bool = False) -> tuple[EtcdMember, list[EtcdMember]]:
        """Add a member (a non-voting learner with ``learner``); returns (the new member, every
        member). etcd refuses a peer URL that exists and, with ``--strict-reconfig-check``, any
        add while the member handling it has not been connected to every voting member for
        5 s (``etcdserver: unhealthy cluster``) or a voting add that would lose quorum."""
        body: dict[str, Any] = {"peerURLs": peer_urls}
        if learner:
            body["isLearner"] = True
        data = await self.call("/v3/cluster/member/add", body)
        return _member(data["member"]), [_member(m) for m in data.get("members", [])]

    async def member_promote(self, member_id: int) -> None:
        """Make a learner a voting member; etcd refuses until it has caught up with the leader."""
        await self.call("/v3/cluster/member/promote", {"ID": str(member_id)})

    async def member_remove(self, member_id: int) -> None:
        """Remove member ``member_id``; etcd refuses a removal that would lose quorum."""
        await self.call("/v3/cluster/member/remove", {"ID": str(member_id)})

    async def status(self) -> dict[str, Any]:
        """``/v3/maintenance/status`` of the first endpoint that answers."""
        return await self.call("/v3/maintenance/status", {})

    async def snapshot(self, timeout_s: float = 120.0) -> bytes:
        """The whole backend as ``etcdctl snapshot save`` would write it: the gateway streams
        ``POST /v3/maintenance/snapshot`` as JSON lines ``{"result": {"blob": <base64>}}``."""
        errors = []
        for ep in self.endpoints:
            url = ep.rstrip("/") + "/v3/maintenance/snapshot"
            try:
                async with self._http().post(url, json={}, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                    if resp.status != 200:
                        raise EtcdError(f"{url}: HTTP {resp.status}: {(await resp.text())[:200]}")
                    blobs = []
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        msg = json.loads(line)
                        if "error" in msg:
                            raise EtcdError(f"{url}: {msg['error'].get('message', msg['error'])}")
                        blobs.append(base64.b64decode(msg.get("result", {}).get("blob", "")))
                    return b"".join(blobs)
            except EtcdError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as err:
                errors.append(f"{url}: {type(err).__name__}: {err}")
        raise EtcdError("no etcd endpoint answered: " + "; ".join(errors))

    # -- key-value --------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None when absent (a linearizable read: it needs quorum)."""
        data = await self.call("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    async def get_prefix(self, prefix: str) -> list[tuple[str, bytes]]:
        """``(key, value)`` pairs of every key starting with ``prefix`` (non-empty)."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        data = await self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end)})
        return [
            (base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")))
            for kv in data.get("kvs") or []
        ]

    async def put(self, key: str, value: bytes) -> None:
        """Set ``key`` to ``value``."""
        await self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    async def delete(self, key: str) -> int:
        """Delete ``key``; returns how many keys were deleted (0 or 1)."""
        data = await self.call("/v3/kv/deleterange", {"key": _b64(key)})
        return int(data.get("deleted", 0))


@dataclass(frozen=True)
class LocalView:
    """What one etcd member says about itself and its cluster, read without quorum.

    ``members`` from ``member/list`` (served from the member's own view in etcd 3.4/3.5, so it
    answers without quorum); ``member_id`` and ``raft_index`` from ``maintenance/status``;
    ``quorum``: a linearizable read succeeded (etcd needs a majority for it)."""

    members: tuple[EtcdMember, ...]
    member_id: int
    raft_index: int
    quorum: bool


def local_view(endpoint: str, context: ssl.SSLContext, timeout_s: float = 2.0) -> LocalView:
    """:class:`LocalView` of the member at ``endpoint``; blocking, bounded by ``timeout_s``
    per request. Raises :class:`EtcdError` when the member itself does not answer."""

    async def _read() -> LocalView:
        async with EtcdClient([endpoint], context, timeout_s=timeout_s) as etcd:
            status = await etcd.status()
            members = await etcd.member_list()
            try:
                await etcd.get("/registry/health")
                quorum = True
            except EtcdError:
                quorum = False
        return LocalView(
            members=tuple(members),
            member_id=int(status.get("header", {}).get("member_id", 0)),
            raft_index=int(status.get("raftIndex", 0)),
            quorum=quorum,
        )

    return asyncio.run(_read())


def wait_single_member_quorum(endpoint: str, context: ssl.SSLContext, timeout_s: float) -> LocalView:
    """Poll the member at ``endpoint`` until it is the only member and has quorum (what
    ``--force-new-cluster`` leads to); returns its view. Raises :class:`EtcdError` with the last
    reason after ``timeout_s`` seconds."""
    import time

    deadline = time.monotonic() + timeout_s
    last = "not asked yet"
    while time.monotonic() < deadline:
        try:
            view = local_view(endpoint, context, timeout_s=2.0)
            if view.quorum and len(view.members) == 1:
                return view
            last = f"{len(view.members)} members, quorum {view.quorum}"
        except EtcdError as err:
            last = str(err)
        time.sleep(0.2)
    raise EtcdError(f"{endpoint}: not a one-member cluster with quorum after {timeout_s:.0f}s ({last})")
