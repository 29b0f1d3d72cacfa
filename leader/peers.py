"""What a joining node asks of the control nodes' Phylacteries before ``kubeadm join``.

* :func:`prune_self` - ``POST /v1/prune``: remove the Node and etcd member this node left
  behind in an earlier boot (kubeadm refuses a same-name Ready Node, and reuses an etcd member
  whose peer URL still exists: docs/recovery.md). A control node sends the control
  credential, a worker the worker credential, which lets it prune itself only;
* :func:`ensure_join_material` - ``POST /v1/join-material`` (control nodes only, control
  credential): make sure the published token and certificate key are still accepted (a rejoin
  may come days after init). Workers cannot ask; Phylactery keeps the token they join with
  valid by itself (``phylactery/controllers/joinmaterial.py``).

Credentials go only to Phylacteries that are alive (:func:`peer_urls`: a heartbeat younger
than the liveness TTL; a member record of a node gone for good gets nothing) and only over
HTTPS to a server the Phylactery CA vouches for (:mod:`core.probes`). Peers are tried
freshest heartbeat first; the first that answers 200 is enough. Both return a sentence for
the log, never raise for a peer that does not answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.credentials import CONTROL, kind_for_role
from core.logs import get_logger
from core.share import ShareError, ShareStore
from core.tls import is_https

log = get_logger("ek8s.peers", "join")
Post = Callable[[str, str, str, dict[str, Any], float], tuple[int, Any]]


def peer_urls(store: ShareStore, me: str, ttl_s: float) -> list[str]:
    """Phylactery URLs of the other registered control nodes that are alive (a heartbeat
    younger than ``ttl_s`` seconds on the share's clock) and reached over HTTPS, freshest
    heartbeat first. A node silent longer, or gone for good, is left out: no credential is
    sent to an address that may now be another machine's.

    A worker's store has neither the members' records nor the control nodes' heartbeats (the
    control-only tree): it lists the node tree's copy of the member records, the generation's
    leader first, then by name, without a liveness filter. Each is asked over HTTPS verified
    against the Phylactery CA and the member's address, so a machine that took a gone
    member's address fails the handshake before any credential is sent."""
    if store.role == "worker":
        return _worker_peer_urls(store, me)
    now = store.share_now()
    ranked = []
    for m in store.members():
        if m.name == me:
            continue
        hb = store.read_heartbeat(m.name, now)
        if hb is None or hb.age_s >= ttl_s:
            continue
        if not is_https(m.phylactery_url):
            log.warning("member record without https: not asked", extra={"peer": m.name})
            continue
        ranked.append((hb.age_s, m.phylactery_url))
    return [url for _, url in sorted(ranked)]


def _worker_peer_urls(store: ShareStore, me: str) -> list[str]:
    """:func:`peer_urls` for a worker: the node tree's member records, leader first."""
    try:
        state = store.read_state()
        leader = state.leader.node if state.leader else None
    except (OSError, ShareError):
        leader = None
    members = [m for m in store.members() if m.name != me and is_https(m.phylactery_url)]
    members.sort(key=lambda m: (m.name != leader, m.name))
    return [m.phylactery_url for m in members]


def prune_self(
    store: ShareStore, post: Post, name: str, address: str, boot_id: str, role: str, ttl_s: float
) -> tuple[bool, dict[str, Any]]:
    """Ask a live Phylactery to prune what ``name``/``address`` left behind before this boot
    (``boot_id``: Phylactery refuses while another incarnation of the node is alive), with the
    credential of ``role``. Returns (pruned, the answer: ``deleted_nodes``,
    ``removed_etcd_members``, ``url``; or ``errors`` per peer, with a 403 or 409 refusal among
    them). Raises ``OSError`` when the credential cannot be read."""
    token = store.read_credential(kind_for_role(role))
    errors: dict[str, Any] = {}
    body = {"name": name, "address": address, "boot_id": boot_id}
    for url in peer_urls(store, name, ttl_s):
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


def ensure_join_material(store: ShareStore, post: Post, me: str, ttl_s: float) -> list[str]:
    """Ask a live Phylactery (control credential: control nodes only) to renew what expired
    in ``join.json``; returns what it refreshed (``token``, ``certificate_key``), empty when
    all was valid or no peer answered."""
    token = store.read_credential(CONTROL)
    for url in peer_urls(store, me, ttl_s):
        try:
            status, answer = post(url, "/v1/join-material", token, {}, 60.0)
        except OSError as err:
            log.info("Phylactery did not answer", extra={"url": url, "error": str(err)})
            continue
        if status == 200 and isinstance(answer, dict):
            return list(answer.get("refreshed") or [])
        log.info("Phylactery could not ensure join material", extra={"url": url, "answer": answer})
    return []
