"""What the controllers ask the local etcd member, behind a small interface the unit tests
fake: ``maintenance/status``, ``cluster/member/list`` and ``member/remove`` through
:class:`core.etcd.EtcdClient` (etcd's v3 JSON gateway), and whether another member answers."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from core.etcd import EtcdClient, EtcdMember


class EtcdMembers(Protocol):
    """The calls the reaper makes on the local member (:class:`core.etcd.EtcdClient`'s)."""

    async def status(self) -> dict[str, Any]: ...

    async def member_list(self) -> list[EtcdMember]: ...

    async def member_remove(self, member_id: int) -> None: ...


# (endpoint, client TLS context) -> an async context manager giving the local member's client
Connect = Callable[[str, ssl.SSLContext], AbstractAsyncContextManager[EtcdMembers]]
# (member, client TLS context) -> whether it answers on one of its client URLs
Answers = Callable[[EtcdMember, ssl.SSLContext], Awaitable[bool]]


def connect(endpoint: str, context: ssl.SSLContext) -> AbstractAsyncContextManager[EtcdMembers]:
    """The real :data:`Connect`: an :class:`core.etcd.EtcdClient` on ``endpoint``, 3 s a call."""
    return EtcdClient([endpoint], context, timeout_s=3.0)


def leader_id(status: dict[str, Any]) -> int | None:
    """This member's ID when ``status`` (etcd's ``maintenance/status``) says it leads etcd
    (its ``header.member_id`` is the ``leader``), else None."""
    try:
        me = int(status.get("header", {}).get("member_id", 0))
        return me if me == int(status.get("leader", -1)) else None
    except (TypeError, ValueError, AttributeError):
        return None
