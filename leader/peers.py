"""What a joining node asks of the other control nodes' Phylacteries before ``kubeadm join``.

* :func:`prune_self` - ``POST /v1/prune``: remove the Node and etcd member this node left
  behind in an earlier boot (kubeadm refuses a same-name Ready Node, and reuses an etcd member
  whose peer URL still exists: docs/recovery.md);
* :func:`ensure_join_material` - ``POST /v1/join-material``: make sure the published token and
  certificate key are still accepted (a rejoin may come days after init).

Peers are tried freshest heartbeat first (a dead node costs a connection timeout); the first
that answers 200 is enough. Both return a sentence for the log, never raise for a peer that
does not answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.logs import get_logger
from core.share import ShareStore

log = get_logger("ek8s.peers", "join")
Post = Callable[[str, str, str, dict[str, Any], float], tuple[int, Any]]


def peer_urls(store: ShareStore, me: str) -> list[str]:
    """Phylactery URLs of the other registered control nodes, freshest heartbeat first."""
    now = store.share_now()
    ranked = []
    for m in store.members():
        if m.name == me:
            continue
        hb = store.read_heartbeat(m.name, now)
        ranked.append((hb.age_s if hb is not None else float("inf"), m.phylactery_url))
    return [url for _, url in sorted(ranked)]


def prune_self(store: ShareStore, post: Post, name: str, address: str, boot_id: str) -> tuple[bool, dict[str, Any]]:
    """Ask a live Phylactery to prune what ``name``/``address`` left behind before this boot
    (``boot_id``: Phylactery refuses while another incarnation of the node is alive). Returns
    (pruned, the answer: ``deleted_nodes``, ``removed_etcd_members``, ``url``; or ``errors`` per
    peer, with a 409 refusal among them)."""
    token = store.read_token()
    errors: dict[str, Any] = {}
    body = {"name": name, "address": address, "boot_id": boot_id}
    for url in peer_urls(store, name):
        try:
            status, answer = post(url, "/v1/prune", token, body, 15.0)
        except OSError as err:
            errors[url] = str(err)
            continue
        if status == 200 and isinstance(answer, dict):
            return True, {**answer, "url": url}
        errors[url] = {"status": status, "answer": answer}
    log.info("no Phylactery pruned this node", extra={"errors": errors})
    return False, {"errors": errors}


def ensure_join_material(store: ShareStore, post: Post, me: str) -> list[str]:
    """Ask a live Phylactery to renew what expired in ``join.json``; returns what it
    refreshed (``token``, ``certificate_key``), empty when all was valid or no peer answered."""
    token = store.read_token()
    for url in peer_urls(store, me):
        try:
            status, answer = post(url, "/v1/join-material", token, {}, 60.0)
        except OSError as err:
            log.info("Phylactery did not answer", extra={"url": url, "error": str(err)})
            continue
        if status == 200 and isinstance(answer, dict):
            return list(answer.get("refreshed") or [])
        log.info("Phylactery could not ensure join material", extra={"url": url, "answer": answer})
    return []
