"""EMULATED kubeadm's etcd (lab only): kubeadm's etcd client (``util/etcd/etcd.go``) against
the lab's real etcd members, and the phases that use it: ``check-etcd``
(``cmd/phases/join/checketcd.go``, ``phases/etcd/local.go`` ``CheckLocalEtcdClusterStatus``),
adding this node's member on a control-plane join
(``CreateStackedEtcdStaticPodManifestFile``, with EtcdLearnerMode, on since 1.29 and GA in
1.32), and removing it on reset (``RemoveStackedEtcdMemberFromCluster``). Their messages and
retries are the same in every supported version; where they run differs
(:func:`core.versions.kubeadm_etcd_join_phase`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from core.etcd import EtcdClient, EtcdError, EtcdMember, client_ssl_context
from lab import emulation
from lab.kubeadm.config import Timeouts
from lab.kubeadm.controlplane import write_etcd_manifest
from lab.kubeadm.workflow import TIMINGS, KubeadmError, klog, say
from lab.nodekit import Api, Root, ToolError


def local_etcd(r: Root) -> EtcdClient:
    """An etcd client for this node's member (``https://127.0.0.1:2379``) with the
    ``healthcheck-client`` certificate kubeadm's own etcd calls use; 5 s per request."""
    return EtcdClient(["https://127.0.0.1:2379"], healthcheck_context(r), timeout_s=5.0)


def healthcheck_context(r: Root) -> ssl.SSLContext:
    """TLS context with ``pki/etcd/healthcheck-client`` (``util/etcd/etcd.go``
    ``NewFromCluster``). Raises ``OSError`` when the files are missing."""
    d = r.pki / "etcd"
    return client_ssl_context(d / "ca.crt", d / "healthcheck-client.crt", d / "healthcheck-client.key")


async def wait_etcd(client: EtcdClient, timeout_s: float) -> None:
    """Until the member answers a read, polled every 50 ms. Raises :class:`KubeadmError`
    after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await client.get("/registry/health")
            return
        except EtcdError as err:
            if time.monotonic() > deadline:
                raise KubeadmError(f"[etcd] local etcd member not healthy after {timeout_s:.0f}s: {err}") from err
            await asyncio.sleep(0.05)


ETCD_TIMEOUT_S = 2.0  # etcdTimeout: each call
ETCD_RETRY_S = 0.1  # kubeadm: EtcdAPICallRetryInterval, 500 ms
HEALTHY_CHECK_RETRIES = 8  # phases/etcd/local.go etcdHealthyCheckRetries
HEALTHY_CHECK_INTERVAL_S = 5.0  # ... etcdHealthyCheckInterval
ERR_NO_MEMBER_ID = "no member id found for peer URL"  # util/etcd ErrNoMemberIDForPeerURL


class ClusterEtcd:
    """kubeadm's etcd ``Client`` (``util/etcd/etcd.go``) for ``endpoints``
    (``https://host:2379``), with the node's ``healthcheck-client`` certificate. Reads go to
    every endpoint at once and the first answer wins (clientv3's balancer); a change goes to
    one endpoint that answers. Each call is retried every :data:`ETCD_RETRY_S` seconds for up
    to ``api_call_s`` (``EtcdAPICall``). Methods raise :class:`KubeadmError` with kubeadm's
    wording when the retries run out."""

    def __init__(self, r: Root, endpoints: list[str], api_call_s: float) -> None:
        self.ctx = healthcheck_context(r)
        self.endpoints = list(dict.fromkeys(endpoints))
        self.api_call_s = api_call_s

    def _client(self, endpoint: str) -> EtcdClient:
        return EtcdClient([endpoint], self.ctx, timeout_s=ETCD_TIMEOUT_S)

    async def _first(self, call: Callable[[EtcdClient], Awaitable[Any]]) -> tuple[str, Any]:
        """(endpoint, answer) of the first endpoint that answers ``call``; raises
        :class:`core.etcd.EtcdError` with every endpoint's error when none does."""

        async def one(ep: str) -> tuple[str, Any]:
            async with self._client(ep) as c:
                return ep, await call(c)

        tasks = [asyncio.create_task(one(ep)) for ep in self.endpoints]
        errors = []
        try:
            for fut in asyncio.as_completed(tasks):
                try:
                    return await fut
                except EtcdError as err:
                    errors.append(str(err))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        raise EtcdError("; ".join(errors) or "etcdclient: no available endpoints")

    async def _retry(self, what: str, attempt: Callable[[], Awaitable[Any]]) -> Any:
        """``attempt()`` until it returns, for up to ``api_call_s`` seconds
        (``wait.PollUntilContextTimeout``); each distinct failure is logged at ``--v=5``.
        Raises the last :class:`core.etcd.EtcdError`."""
        deadline = time.monotonic() + self.api_call_s
        seen: set[str] = set()
        while True:
            try:
                return await attempt()
            except EtcdError as err:
                if str(err) not in seen:
                    klog(5, f"{what}: {err}")
                    seen.add(str(err))
                if time.monotonic() + ETCD_RETRY_S > deadline:
                    raise
            await asyncio.sleep(ETCD_RETRY_S)

    async def sync(self) -> None:
        """``Sync``: the endpoints become the client URLs of the members that have a name (have
        started) and are not learners (clientv3 ``Client.Sync``)."""

        async def attempt() -> list[str]:
            _, members = await self._first(lambda c: c.member_list())
            return [u for m in members if m.name and not m.is_learner for u in m.client_urls]

        try:
            self.endpoints = list(dict.fromkeys(await self._retry("Failed to sync etcd endpoints", attempt)))
        except EtcdError as err:
            raise KubeadmError(f"error syncing endpoints with etcd: {err}") from err
        klog(1, f"etcd endpoints read from etcd: {','.join(self.endpoints)}")

    async def list_members(self) -> list[EtcdMember]:
        """``listMembers``."""

        async def attempt() -> list[EtcdMember]:
            return list((await self._first(lambda c: c.member_list()))[1])

        try:
            return list(await self._retry("Failed to get etcd member list", attempt))
        except EtcdError as err:
            raise KubeadmError(str(err)) from err

    async def add_member_as_learner(self, name: str, peer: str) -> list[tuple[str, str]]:
        """``AddMemberAsLearner`` (``addMember``): list the members and, when one already has
        ``peer`` as its first peer URL, skip the add and reuse that member (kubernetes#127491);
        otherwise add a learner, and take etcd's "Peer URLs already exists" as the same case.
        Returns ``(name, peer URL)`` of every member, this node's member under ``name``, an
        unnamed member under its hex id; adds this node's client URL to the endpoints."""

        async def attempt() -> list[EtcdMember]:
            ep, members = await self._first(lambda c: c.member_list())
            if any(m.peer_urls and m.peer_urls[0] == peer for m in members):
                klog(
                    5, f'The peer URL "{peer}" for the added etcd member already exists. Skipping etcd member addition'
                )
                return list(members)
            klog(1, f'[etcd] Adding etcd member "{peer}" as learner')
            async with self._client(ep) as c:
                try:
                    return list((await c.member_add([peer], learner=True))[1])
                except EtcdError as err:
                    if "Peer URLs already exists" not in str(err):
                        raise
                    klog(5, "The peer URL for the added etcd member already exists. Fetching the existing etcd members")
                    return list(await c.member_list())

        try:
            members = await self._retry("Failed to add etcd member", attempt)
        except EtcdError as err:
            raise KubeadmError(str(err)) from err
        host = urlsplit(peer).hostname or ""
        self.endpoints.append(f"https://{host}:2379")
        return [
            (name if m.peer_urls[0] == peer else (m.name or f"{m.id:x}"), m.peer_urls[0])
            for m in members
            if m.peer_urls
        ]

    async def member_id(self, peer: str) -> int:
        """``GetMemberID``: the id of the member whose first peer URL is ``peer``; raises
        :class:`KubeadmError` ``no member id found for peer URL`` when there is none."""
        for m in await self.list_members():
            if m.peer_urls and m.peer_urls[0] == peer:
                return m.id
        raise KubeadmError(ERR_NO_MEMBER_ID)

    async def _is_learner(self, member_id: int) -> bool:
        return any(m.id == member_id and m.is_learner for m in await self.list_members())

    async def member_promote(self, member_id: int) -> None:
        """``MemberPromote``: returns at once when the member already votes ("Member ...
        already promoted."); else promotes it, retrying until it has caught up."""
        if not await self._is_learner(member_id):
            klog(1, f"[etcd] Member {member_id:x} already promoted.")
            return
        klog(1, f"[etcd] Promoting a learner as a voting member: {member_id:x}")

        async def attempt() -> None:
            if not await self._is_learner(member_id):
                klog(1, f"[etcd] Member {member_id:x} was already promoted.")
                return
            ep, _ = await self._first(lambda c: c.status())
            async with self._client(ep) as c:
                await c.member_promote(member_id)
            klog(1, f"[etcd] The learner was promoted as a voting member: {member_id:x}")

        try:
            await self._retry(f"[etcd] Promoting the learner {member_id:x} failed", attempt)
        except EtcdError as err:
            raise KubeadmError(str(err)) from err

    async def remove_member(self, member_id: int) -> list[EtcdMember]:
        """``RemoveMember``: retried while etcd refuses; a member that is already gone counts
        as removed. Returns the members left."""

        async def attempt() -> None:
            ep, _ = await self._first(lambda c: c.status())
            async with self._client(ep) as c:
                try:
                    await c.member_remove(member_id)
                except EtcdError as err:
                    if "member not found" not in str(err):
                        raise
                    klog(5, f"Member was already removed, because member {member_id:x} was not found")

        try:
            await self._retry("Failed to remove etcd member", attempt)
        except EtcdError as err:
            raise KubeadmError(str(err)) from err
        return await self.list_members()

    async def cluster_status(self) -> None:
        """``getClusterStatus`` (what ``CheckClusterHealth`` calls): the status of each
        endpoint in turn, each retried for up to ``api_call_s``. Raises :class:`KubeadmError`
        with the first endpoint that never answers: ``failed to dial endpoint <url> with
        maintenance client: context deadline exceeded`` (clientv3's words when it cannot
        connect), or etcd's own refusal."""
        for ep in list(self.endpoints):

            async def attempt(ep: str = ep) -> None:
                async with self._client(ep) as c:
                    await c.status()

            try:
                await self._retry(f"Failed to get etcd status for {ep}", attempt)
            except EtcdError as err:
                if "no etcd endpoint answered" in str(err):
                    raise KubeadmError(
                        f"failed to dial endpoint {ep} with maintenance client: context deadline exceeded"
                    ) from err
                raise KubeadmError(str(err)) from err

    async def wait_for_cluster_available(
        self, retries: int = HEALTHY_CHECK_RETRIES, interval_s: float = HEALTHY_CHECK_INTERVAL_S
    ) -> None:
        """``WaitForClusterAvailable``: :meth:`cluster_status` up to ``retries`` times,
        ``interval_s`` apart. Raises :class:`KubeadmError` ``timeout waiting for etcd cluster
        to be available``."""
        for i in range(retries):
            if i > 0:
                klog(1, f"[etcd] Waiting {interval_s:g}s until next retry")
                await asyncio.sleep(interval_s)
            klog(
                2,
                f"[etcd] attempting to see if all cluster endpoints ({self.endpoints}) are available {i + 1}/{retries}",
            )
            try:
                await self.cluster_status()
                return
            except ToolError as err:
                klog(1, f"[etcd] Attempt failed with error: {err}")
        raise KubeadmError("timeout waiting for etcd cluster to be available")


def etcd_endpoints(api: Api) -> list[str]:
    """``getEtcdEndpoints``, emulated: ``https://<InternalIP>:2379`` of every control-plane
    Node (kubeadm reads the etcd Pods' advertise-client-urls annotation; both are replaced by
    the member list at once). Raises :class:`KubeadmError` when there is none."""
    code, nodes = api.call("GET", "/api/v1/nodes")
    if code != 200:
        raise KubeadmError(f"could not retrieve the list of etcd endpoints: HTTP {code}")
    endpoints = [
        f"https://{a['address']}:2379"
        for n in nodes["items"]
        if "node-role.kubernetes.io/control-plane" in n["metadata"].get("labels", {})
        for a in n.get("status", {}).get("addresses", [])
        if a["type"] == "InternalIP"
    ]
    if not endpoints:
        raise KubeadmError("could not retrieve the list of etcd endpoints: no control-plane Node has an InternalIP")
    return endpoints


async def etcd_from_cluster(r: Root, api: Api, timeouts: Timeouts) -> ClusterEtcd:
    """``NewFromCluster``: a :class:`ClusterEtcd` on :func:`etcd_endpoints`, synced with the
    member list. Raises :class:`KubeadmError` (``OSError`` without the client certificate)."""
    endpoints = etcd_endpoints(api)
    klog(1, f"etcd endpoints read from pods: {','.join(endpoints)}")
    try:
        etcd = ClusterEtcd(r, endpoints, timeouts.etcd_api_call_s)
    except OSError as err:
        raise KubeadmError(f"error creating etcd client for {endpoints} endpoints: {err}") from err
    await etcd.sync()
    return etcd


def check_etcd(r: Root, api: Api, timeouts: Timeouts) -> None:
    """The ``check-etcd`` phase (``cmd/phases/join/checketcd.go``,
    ``CheckLocalEtcdClusterStatus``): every member's status must answer. Raises
    :class:`KubeadmError` ``etcd cluster is not healthy: ...`` otherwise."""
    say("[check-etcd] Checking that the etcd cluster is healthy")

    async def _check() -> None:
        etcd = await etcd_from_cluster(r, api, timeouts)
        try:
            await etcd.cluster_status()
        except ToolError as err:
            raise KubeadmError(f"etcd cluster is not healthy: {err}") from err

    asyncio.run(_check())


def join_etcd(r: Root, emu: emulation.Emulation, api: Api, name: str, address: str, timeouts: Timeouts) -> None:
    """``CreateStackedEtcdStaticPodManifestFile`` with EtcdLearnerMode (GA in 1.32):
    :meth:`ClusterEtcd.add_member_as_learner` (which reuses a member that already has this
    node's peer URL), the etcd manifest with ``--initial-cluster-state=existing`` (the kubelet
    starts it), :meth:`ClusterEtcd.member_promote` (at once for a member that already votes)
    and :meth:`ClusterEtcd.wait_for_cluster_available`. Raises :class:`KubeadmError` with
    kubeadm's message when a step runs out of retries."""
    peer = f"https://{address}:2380"

    async def _join() -> None:
        etcd = await etcd_from_cluster(r, api, timeouts)
        klog(1, f"[etcd] Adding etcd member: {peer}")
        cluster = await etcd.add_member_as_learner(name, peer)
        say("[etcd] Announced new etcd member joining to the existing etcd cluster")
        klog(1, f"Updated etcd member list: {cluster}")
        TIMINGS.mark("etcd_member_add")
        say('[etcd] Creating static Pod manifest for "etcd"')
        write_etcd_manifest(r, emu, name, address, ",".join(f"{n}={u}" for n, u in cluster), "existing")
        await etcd.member_promote(await etcd.member_id(peer))
        TIMINGS.mark("etcd_promote")
        say(
            "[etcd] Waiting for the new etcd member to join the cluster. This can take up to "
            f"{HEALTHY_CHECK_RETRIES * HEALTHY_CHECK_INTERVAL_S:.0f}s"
        )
        await etcd.wait_for_cluster_available()

    asyncio.run(_join())


async def remove_stacked_etcd_member(r: Root, api: Api, address: str, timeouts: Timeouts) -> None:
    """``RemoveStackedEtcdMemberFromCluster`` (``phases/etcd/local.go``): through the members
    the API server's control-plane Nodes lead to (``api``, admin.conf), remove the member
    whose peer URL is ``https://<address>:2380`` (``address``: this node's advertise
    address); nothing when it is the only member left and this node's. Raises
    :class:`KubeadmError` (``no member id found for peer URL`` when no member has it, etcd's
    refusal when the retries run out)."""
    etcd = await etcd_from_cluster(r, api, timeouts)
    members = await etcd.list_members()
    if len(members) == 1 and f"https://{address}:2379" in etcd.endpoints:
        klog(1, "[etcd] This is the only remaining etcd member, skip removing it")
        return
    peer = f"https://{address}:2380"
    klog(2, f"[etcd] get the member id from peer: {peer}")
    member_id = await etcd.member_id(peer)
    klog(1, f"[etcd] removing etcd member: {peer}, id: {member_id}")
    left = await etcd.remove_member(member_id)
    klog(1, f"[etcd] Updated etcd member list: {[(m.name, m.peer_urls[0] if m.peer_urls else '') for m in left]}")
