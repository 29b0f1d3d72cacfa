"""Remove what a rebooted node left behind, so that kubeadm or k3s lets it join again.

kubeadm refuses to join a node whose name belongs to a Node that is still Ready, and a new
etcd member cannot be added while a member with the same peer URL exists (kubeadm 1.32 even
reuses it); k3s also refuses a node whose ``/etc/rancher/node/password`` differs from the one
its servers stored, which on a RAM root is every rebooted node. Before every join the node
asks a live Phylactery to run :func:`prune_node`, which is idempotent (pruning twice, or a
node that left nothing behind, removes nothing and succeeds). The driver's ``prune_kinds``
say which of these apply:

* ``node``: Kubernetes Nodes named ``name`` or whose ``InternalIP`` is ``address`` (official
  ``kubernetes`` client, this node's admin kubeconfig);
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
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.etcd import EtcdClient, EtcdError, EtcdMember, member_answers, retry_transient
from core.probes import kube_client, kube_errors


class PruneError(Exception):
    """A store needed for pruning did not answer (the caller should try another node)."""


class PruneRefused(Exception):
    """The node asked about is not stale: its current incarnation is alive (a fresh heartbeat
    from another boot, or an etcd member that still answers). Nothing was removed."""


@dataclass
class PruneResult:
    """What one prune removed: Node names and etcd members (JSON as ``POST /v1/prune`` answers)."""

    name: str
    address: str
    deleted_nodes: list[str] = field(default_factory=list)
    removed_etcd_members: list[dict[str, Any]] = field(default_factory=list)
    deleted_secrets: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The answer of ``POST /v1/prune`` (``deleted_secrets``: ``namespace/name``)."""
        return {
            "name": self.name,
            "address": self.address,
            "deleted_nodes": self.deleted_nodes,
            "removed_etcd_members": self.removed_etcd_members,
            "deleted_secrets": self.deleted_secrets,
        }


def stale_members(
    members: list[EtcdMember], name: str, address: str, keep_id: int | None, member_node: Callable[[str], str]
) -> list[EtcdMember]:
    """Members that belong to the node ``name``/``address``, never the member ``keep_id``:
    those ``member_node`` (the driver's ``etcd_member_node``) takes for ``name``, or with a
    peer URL on ``address`` (a member there blocks every new member with that peer URL,
    whatever its name)."""
    return [m for m in members if m.id != keep_id and (member_node(m.name) == name or address in m.peer_hosts)]


def _delete_nodes_sync(kubeconfig: Path, name: str, address: str, keep: str) -> list[str]:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        api = client.CoreV1Api(kube_client(kubeconfig))
        nodes = api.list_node(_request_timeout=5).items
    except kube_errors() as err:
        raise PruneError(f"kubernetes API: cannot list nodes: {err}") from err
    doomed: list[str] = []
    for n in nodes:
        node_name = n.metadata.name if n.metadata else None
        ips = {a.address for a in (n.status.addresses or []) if a.type == "InternalIP"} if n.status else set()
        if node_name and node_name != keep and (node_name == name or address in ips):
            doomed.append(node_name)
    deleted = []
    for node_name in doomed:
        try:
            api.delete_node(node_name, _request_timeout=5)
            deleted.append(node_name)
        except ApiException as err:
            if err.status != 404:
                raise PruneError(f"kubernetes API: cannot delete node {node_name}: {err.reason}") from err
        except kube_errors() as err:
            raise PruneError(f"kubernetes API: cannot delete node {node_name}: {err}") from err
    return deleted


async def delete_nodes(kubeconfig: Path, name: str, address: str, keep: str) -> list[str]:
    """Delete matching Nodes; returns their names. Raises :class:`PruneError`."""
    if not kubeconfig.exists():
        raise PruneError(f"{kubeconfig}: no admin kubeconfig on this node yet")
    return await asyncio.to_thread(_delete_nodes_sync, kubeconfig, name, address, keep)


async def remove_etcd_members(
    endpoint: str, context: ssl.SSLContext, name: str, address: str, member_node: Callable[[str], str]
) -> list[EtcdMember]:
    """Remove the members of ``name``/``address`` (:func:`stale_members`) through
    ``endpoint`` (this node's own member, never removed), retrying etcd's transient refusals.
    Returns the removed members; raises :class:`PruneError` when etcd does not answer and
    :class:`PruneRefused` (nothing removed) when one of them answers."""
    async with EtcdClient([endpoint], context, timeout_s=5.0) as etcd:
        try:
            me = int((await etcd.status()).get("header", {}).get("member_id", 0))
            doomed = stale_members(await etcd.member_list(), name, address, keep_id=me, member_node=member_node)
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
) -> PruneResult:
    """Run every prune ``kinds`` asks for (``node``, ``etcd_member``, ``node_password``; the
    driver's ``prune_kinds``), in that order: etcd member, Nodes, node passwords.
    ``member_node`` is the driver's ``etcd_member_node`` (which node a member's name is
    of). ``etcd_context`` is None while the serving node runs no etcd member (then no member
    is removed). Raises :class:`PruneError` when a store does not answer,
    :class:`PruneRefused` when the node is alive, ``ValueError`` when asked to prune the
    serving node."""
    if name == self_name:
        raise ValueError(f"refusing to prune {name}: that is this node")
    result = PruneResult(name=name, address=address)
    if "etcd_member" in kinds and etcd_context is not None:
        removed = await remove_etcd_members(etcd_endpoint, etcd_context, name, address, member_node)
        result.removed_etcd_members = [m.to_json() for m in removed]
    if "node" in kinds:
        result.deleted_nodes = await delete_nodes(kubeconfig, name, address, keep=self_name)
    if "node_password" in kinds:
        owners = [name, *(n for n in result.deleted_nodes if n != self_name)]
        result.deleted_secrets = await delete_node_passwords(kubeconfig, owners)
    return result
