"""Remove what a rebooted node left behind, so that kubeadm or k3s lets it join again.

kubeadm refuses to join a node whose name belongs to a Node that is still Ready, and a new
etcd member cannot be added while a member with the same peer URL exists (kubeadm 1.32 even
reuses it); k3s also refuses a node whose ``/etc/rancher/node/password`` differs from the one
its servers stored, which on a RAM root is every rebooted node. Before every join the node
asks a live Phylactery to run :func:`prune_node`, which is idempotent (pruning twice, or a
node that left nothing behind, removes nothing and succeeds). The driver's ``prune_kinds``
say which of these apply:

* ``node``: Kubernetes Nodes named ``name`` or whose ``InternalIP`` is ``address`` (official
  ``kubernetes`` client, this node's admin kubeconfig), each judged by :func:`judge_nodes`;
* ``etcd_member``: the members the driver takes for node ``name`` (its
  ``etcd_member_node``: kubeadm names members as their node; k3s ``<node>-<8 hex digits>``
  and refuses a join while any member maps to the node's name, whatever its address) or
  whose peer URL's host is ``address`` (parsed, never a substring match), through the etcd
  JSON gateway of this node's member with the driver's etcd client certificate; none that
  still answers (:func:`core.etcd.member_answers`);
* ``node_password``: the ``<node>.node-password.k3s`` Secrets in ``kube-system`` of
  ``name`` and of every Node deleted above (k3s's ``pkg/nodepassword``; the refusal it
  prevents is k3s-io/k3s#802's "Node password rejected, ...").

The serving node never prunes itself.

**Who asks decides what may go** (:class:`Requester`, docs/security.md). With the control
credential a prune removes what belongs to ``name`` or sits on ``address``, but never a Node
of another name that is Ready (a live node at that address is another node's, not a leftover).
With the worker credential a worker prunes itself only: the request comes from ``address``
(the service checks it), the Node named ``name`` must have that ``InternalIP`` as its kubelet
reports it (else :class:`PruneForbidden`, nothing removed), and what goes must belong to an
earlier incarnation: a Node whose ``status.nodeInfo.bootID`` (the kubelet reports the kernel's
boot id, ``/proc/sys/kernel/random/boot_id``) is the requester's own boot stays; Nodes of
other names at the address stay; etcd members go only when both their name and their peer URL
are the node's; a node-password Secret only with its Node.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.credentials import CONTROL, WORKER
from core.etcd import EtcdClient, EtcdError, EtcdMember, member_answers, retry_transient
from core.probes import kube_client, kube_errors


class PruneError(Exception):
    """A store needed for pruning did not answer (the caller should try another node)."""


class PruneRefused(Exception):
    """The node asked about is not stale: its current incarnation is alive (a fresh heartbeat
    from another boot, or an etcd member that still answers). Nothing was removed."""


class PruneForbidden(Exception):
    """The requester's credential does not allow this prune (a worker naming another node,
    or asking from another address). Nothing was removed; HTTP 403."""


@dataclass(frozen=True)
class Requester:
    """Who asks for a prune: the ``credential`` it proved (``control`` or ``worker``), the
    ``address`` its request came from (the TCP peer), and its ``boot_id`` (from the body)."""

    credential: str
    address: str
    boot_id: str


@dataclass(frozen=True)
class NodeFacts:
    """What a prune needs to know of one Node, as its kubelet reported it: ``internal_ips``
    (``status.addresses`` of type ``InternalIP``), ``boot_id`` (``status.nodeInfo.bootID``,
    "" before the kubelet posted status) and ``ready`` (the ``Ready`` condition is True)."""

    name: str
    internal_ips: frozenset[str]
    boot_id: str = ""
    ready: bool = False


def judge_nodes(
    nodes: list[NodeFacts], name: str, address: str, requester: Requester, keep: str
) -> tuple[list[str], list[dict[str, str]]]:
    """Which Nodes a prune of ``name``/``address`` removes, for ``requester``, never ``keep``
    (the serving node): returns (names to delete, ``[{"name", "why"}]`` of those matched and
    kept). Raises :class:`PruneForbidden` when a worker names a Node that is not at its
    address. A pure function of what the API listed (the rules are in the module's text)."""
    doomed: list[str] = []
    kept: list[dict[str, str]] = []
    worker = requester.credential == WORKER
    for n in nodes:
        if n.name == keep or (n.name != name and address not in n.internal_ips):
            continue
        if n.name == name:
            if worker and address not in n.internal_ips:
                where = ", ".join(sorted(n.internal_ips)) or "not reported"
                raise PruneForbidden(
                    f"Node {name}'s InternalIP is {where}, not the requester's address {address}: "
                    "the worker credential prunes only the node it is sent from; nothing removed"
                )
            if worker and n.boot_id and n.boot_id == requester.boot_id:
                kept.append({"name": n.name, "why": "it is the requester's current incarnation (the same boot)"})
                continue
            doomed.append(n.name)
            continue
        # Another name at this address.
        if worker:
            kept.append({"name": n.name, "why": "another node's name at this address: only a control node prunes it"})
        elif n.ready:
            kept.append({"name": n.name, "why": f"Ready: a live node at {address}, not a leftover of {name}"})
        elif n.boot_id and n.boot_id == requester.boot_id:
            kept.append({"name": n.name, "why": "it is the requester's current incarnation (the same boot)"})
        else:
            doomed.append(n.name)
    return doomed, kept


@dataclass
class PruneResult:
    """What one prune removed: Node names and etcd members (JSON as ``POST /v1/prune`` answers)."""

    name: str
    address: str
    deleted_nodes: list[str] = field(default_factory=list)
    removed_etcd_members: list[dict[str, Any]] = field(default_factory=list)
    deleted_secrets: list[str] = field(default_factory=list)
    kept_nodes: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The answer of ``POST /v1/prune`` (``deleted_secrets``: ``namespace/name``;
        ``kept_nodes``: Nodes that matched and were left, with why, only when there are)."""
        out: dict[str, Any] = {
            "name": self.name,
            "address": self.address,
            "deleted_nodes": self.deleted_nodes,
            "removed_etcd_members": self.removed_etcd_members,
            "deleted_secrets": self.deleted_secrets,
        }
        if self.kept_nodes:
            out["kept_nodes"] = self.kept_nodes
        return out


def stale_members(
    members: list[EtcdMember],
    name: str,
    address: str,
    keep_id: int | None,
    member_node: Callable[[str], str],
    both: bool = False,
) -> list[EtcdMember]:
    """Members that belong to the node ``name``/``address``, never the member ``keep_id``:
    those ``member_node`` (the driver's ``etcd_member_node``) takes for ``name``, or with a
    peer URL on ``address`` (a member there blocks every new member with that peer URL,
    whatever its name); with ``both`` (a worker's own prune) only those taken for ``name``
    *and* on ``address``."""

    def named(m: EtcdMember) -> bool:
        return member_node(m.name) == name

    if both:
        return [m for m in members if m.id != keep_id and named(m) and address in m.peer_hosts]
    return [m for m in members if m.id != keep_id and (named(m) or address in m.peer_hosts)]


def node_facts(node: Any) -> NodeFacts | None:
    """:class:`NodeFacts` of a ``V1Node`` as the ``kubernetes`` client returns it (None
    without a name)."""
    name = node.metadata.name if node.metadata else None
    if not name:
        return None
    status = node.status
    ips = frozenset(a.address for a in ((status.addresses if status else None) or []) if a.type == "InternalIP")
    info = status.node_info if status else None
    conditions = (status.conditions if status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return NodeFacts(name=name, internal_ips=ips, boot_id=(info.boot_id if info else "") or "", ready=ready)


def _list_and_judge_sync(
    kubeconfig: Path, name: str, address: str, keep: str, requester: Requester
) -> tuple[list[str], list[dict[str, str]]]:
    from kubernetes import client

    try:
        api = client.CoreV1Api(kube_client(kubeconfig))
        nodes = api.list_node(_request_timeout=5).items
    except kube_errors() as err:
        raise PruneError(f"kubernetes API: cannot list nodes: {err}") from err
    facts = [f for f in (node_facts(n) for n in nodes) if f is not None]
    return judge_nodes(facts, name, address, requester, keep)


def _delete_nodes_sync(kubeconfig: Path, names: list[str]) -> list[str]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    deleted = []
    for node_name in names:
        try:
            client.CoreV1Api(kube_client(kubeconfig)).delete_node(node_name, _request_timeout=5)
            deleted.append(node_name)
        except ApiException as err:
            if err.status != 404:
                raise PruneError(f"kubernetes API: cannot delete node {node_name}: {err.reason}") from err
        except kube_errors() as err:
            raise PruneError(f"kubernetes API: cannot delete node {node_name}: {err}") from err
    return deleted


async def doomed_nodes(
    kubeconfig: Path, name: str, address: str, keep: str, requester: Requester
) -> tuple[list[str], list[dict[str, str]]]:
    """The Nodes a prune removes and those it keeps (:func:`judge_nodes` on the API's Node
    list). Raises :class:`PruneError` (no kubeconfig, no API), :class:`PruneForbidden`."""
    if not kubeconfig.exists():
        raise PruneError(f"{kubeconfig}: no admin kubeconfig on this node yet")
    return await asyncio.to_thread(_list_and_judge_sync, kubeconfig, name, address, keep, requester)


async def delete_nodes(kubeconfig: Path, names: list[str]) -> list[str]:
    """Delete the Nodes ``names`` (one already gone is skipped); returns those deleted.
    Raises :class:`PruneError`."""
    if not names:
        return []
    return await asyncio.to_thread(_delete_nodes_sync, kubeconfig, names)


async def remove_etcd_members(
    endpoint: str,
    context: ssl.SSLContext,
    name: str,
    address: str,
    member_node: Callable[[str], str],
    both: bool = False,
) -> list[EtcdMember]:
    """Remove the members of ``name``/``address`` (:func:`stale_members`; ``both``: taken for
    the node and on the address) through ``endpoint`` (this node's own member, never
    removed), retrying etcd's transient refusals. Returns the removed members; raises
    :class:`PruneError` when etcd does not answer and :class:`PruneRefused` (nothing removed)
    when one of them answers."""
    async with EtcdClient([endpoint], context, timeout_s=5.0) as etcd:
        try:
            me = int((await etcd.status()).get("header", {}).get("member_id", 0))
            members = await etcd.member_list()
            doomed = stale_members(members, name, address, keep_id=me, member_node=member_node, both=both)
            for m in doomed:
                if await member_answers(m, context):
                    raise PruneRefused(f"etcd member {m.name} ({', '.join(m.client_urls)}) answers: {name} is alive")
            for m in doomed:
                await retry_transient(functools.partial(etcd.member_remove, m.id), steps=8)
        except EtcdError as err:
            raise PruneError(f"etcd: {err}") from err
    return doomed


def node_password_secret(node: str) -> str:
    """k3s's Secret holding the hash of ``node``'s password: ``<node>.node-password.k3s``."""
    return f"{node}.node-password.k3s"


def _delete_node_passwords_sync(kubeconfig: Path, nodes: list[str]) -> list[str]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    deleted = []
    for node in dict.fromkeys(nodes):
        secret = node_password_secret(node)
        try:
            api = client.CoreV1Api(kube_client(kubeconfig))
            api.delete_namespaced_secret(secret, "kube-system", _request_timeout=5)
            deleted.append(f"kube-system/{secret}")
        except ApiException as err:
            if err.status != 404:
                raise PruneError(f"kubernetes API: cannot delete secret kube-system/{secret}: {err.reason}") from err
        except kube_errors() as err:
            raise PruneError(f"kubernetes API: cannot delete secret kube-system/{secret}: {err}") from err
    return deleted


async def delete_node_passwords(kubeconfig: Path, nodes: list[str]) -> list[str]:
    """Delete the :func:`node_password_secret` of each of ``nodes`` that exists; returns
    ``kube-system/<name>`` of those deleted. Raises :class:`PruneError`."""
    if not kubeconfig.exists():
        raise PruneError(f"{kubeconfig}: no admin kubeconfig on this node yet")
    return await asyncio.to_thread(_delete_node_passwords_sync, kubeconfig, nodes)


async def prune_node(
    *,
    name: str,
    address: str,
    self_name: str,
    kubeconfig: Path,
    etcd_endpoint: str,
    etcd_context: ssl.SSLContext | None,
    kinds: tuple[str, ...],
    member_node: Callable[[str], str],
    requester: Requester | None = None,
) -> PruneResult:
    """Run every prune ``kinds`` asks for (``node``, ``etcd_member``, ``node_password``; the
    driver's ``prune_kinds``), in that order: etcd member, Nodes, node passwords, for
    ``requester`` (None: the control credential from ``address``, boot unknown).
    ``member_node`` is the driver's ``etcd_member_node`` (which node a member's name is of).
    ``etcd_context`` is None while the serving node runs no etcd member (then no member is
    removed). Raises :class:`PruneError` when a store does not answer, :class:`PruneRefused`
    when the node is alive, :class:`PruneForbidden` when the requester's credential does not
    allow it, ``ValueError`` when asked to prune the serving node."""
    if name == self_name:
        raise ValueError(f"refusing to prune {name}: that is this node")
    requester = requester or Requester(credential=CONTROL, address=address, boot_id="")
    worker = requester.credential == WORKER
    result = PruneResult(name=name, address=address)
    doomed: list[str] = []
    if "node" in kinds:
        # Judged before anything goes: a worker naming another node is refused whole.
        doomed, result.kept_nodes = await doomed_nodes(kubeconfig, name, address, self_name, requester)
    if "etcd_member" in kinds and etcd_context is not None:
        removed = await remove_etcd_members(etcd_endpoint, etcd_context, name, address, member_node, both=worker)
        result.removed_etcd_members = [m.to_json() for m in removed]
    result.deleted_nodes = await delete_nodes(kubeconfig, doomed)
    if "node_password" in kinds:
        if worker:
            owners = [name] if name in result.deleted_nodes else []
        else:
            owners = [name, *(n for n in result.deleted_nodes if n != self_name)]
        result.deleted_secrets = await delete_node_passwords(kubeconfig, owners) if owners else []
    return result
