"""``ek8s status``: the cluster at a glance, for the operator on the Warewulf server.

Everything comes from the share (``cluster.json``, heartbeats, events, member registry) plus,
best effort with short timeouts, each control node's Phylactery ``GET /v1/status`` (etcd
members, VIP holder, HAProxy backends) and the API behind the VIP with the admin kubeconfig
(Node readiness). What cannot be reached is shown as unknown, never as an error.
"""

from __future__ import annotations

import functools
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from core import probes, recovery
from core.config import Timeouts
from core.share import ShareStore


def _phylactery(access: tuple[ssl.SSLContext, str] | None, url: str) -> dict[str, Any] | None:
    """``GET <url>/v1/status`` (docs/phylactery.md) with the control credential over TLS
    verified with the Phylactery CA (``access``: context and credential; None when the share
    holds neither yet), or None when it does not answer in 1.5 s."""
    if access is None:
        return None
    tls, token = access
    return probes.phylactery_get(url, "/v1/status", tls, token, timeout_s=1.5)


def phylactery_access(store: ShareStore) -> tuple[ssl.SSLContext, str] | None:
    """What the operator reaches Phylactery with: a client context for the Phylactery CA and
    the control credential, both from the control-only tree (docs/security.md); None before
    the first Phylactery made them."""
    from core.credentials import CONTROL
    from core.share import ShareError
    from core.tls import client_context

    try:
        return client_context(store.read_phylactery_ca()), store.read_credential(CONTROL)
    except (OSError, ShareError):
        return None


def api_nodes(kubeconfig: Path) -> dict[str, bool] | None:
    """``{node name: Ready condition is True}`` from the API named in ``kubeconfig`` (the
    admin kubeconfig: the VIP), or None when there is no kubeconfig, it is unusable, or the
    API does not answer within 3 s (what :func:`core.probes.kube_errors` lists)."""
    if not kubeconfig.exists():
        return None
    from kubernetes import client

    try:
        api = client.CoreV1Api(probes.kube_client(kubeconfig))
        items = api.list_node(_request_timeout=3).items
    except probes.kube_errors():
        return None
    out: dict[str, bool] = {}
    for n in items:
        conditions = (n.status.conditions if n.status else None) or []
        out[(n.metadata.name if n.metadata else None) or "?"] = any(
            c.type == "Ready" and c.status == "True" for c in conditions
        )
    return out


def collect(store: ShareStore) -> dict[str, Any]:
    """The status document of the cluster behind ``store``; ``--json`` prints it as is.

    Keys: ``cluster``, ``generation``, ``epoch``, ``ready``, ``reason``, ``leader`` (node name
    or None) from ``cluster.json``; ``api_reachable``; ``nodes``, one dict per node that ever
    reported or that the API lists (``name``, ``role``, ``phase``, ``heartbeat_age_s`` on the
    share's clock, ``ready`` from the API, ``last_event`` ``{event, t, message}`` with ``t`` in
    Unix seconds); ``etcd_members`` (sorted names) and ``etcd_quorum`` from the first
    Phylactery that lists members; ``vip_holder`` (a name, a list when several hold it, or
    None); ``haproxy_backends_up`` (per control node, backends whose status starts with
    ``UP``). Unknowns are None. Phylacteries are asked in parallel (1.5 s timeout each), the
    API with a 3 s timeout per attempt (the client retries a failed connection). Touches this
    store's probe file on the share to read the share's clock.

    Raises ``FileNotFoundError`` when the share holds no such cluster,
    :class:`core.share.ShareError` when ``cluster.json`` is not JSON, and ``OSError`` when the
    share cannot be read."""
    state = store.read_state()
    members = store.members()
    access = phylactery_access(store)
    with ThreadPoolExecutor(max(1, len(members) + 1)) as pool:
        ask = functools.partial(_phylactery, access)
        statuses = dict(zip([m.name for m in members], pool.map(ask, [m.phylactery_url for m in members]), strict=True))
        api = pool.submit(api_nodes, store.admin_kubeconfig_path).result()
    names = sorted(set(store.heartbeat_names()) | set(api or {}))
    last: dict[str, dict[str, Any]] = {}
    for e in store.events():
        last[e["node"]] = e
    nodes = []
    now = store.share_now()
    for name in names:
        hb = store.read_heartbeat(name, now)
        event = last.get(name)
        nodes.append(
            {
                "name": name,
                "role": hb.role if hb else None,
                "phase": hb.phase if hb else None,
                "heartbeat_age_s": round(hb.age_s, 1) if hb else None,
                "ready": api.get(name) if api is not None else None,
                "last_event": {"event": event["event"], "t": event["t"], "message": event.get("message", "")}
                if event
                else None,
            }
        )
    answered = [s for s in statuses.values() if s]
    etcd = next((s["etcd"] for s in answered if s["etcd"]["members"]), None)
    vip_holders = [name for name, s in statuses.items() if s and s["keepalived"]["vip_held"]]
    etcd_names = sorted(m["name"] for m in etcd["members"]) if etcd else None
    snapshots = store.snapshots()
    snapshot_age = round(now - snapshots[0].stat().st_mtime, 1) if snapshots else None
    return {
        "cluster": store.cluster,
        "generation": state.generation,
        "epoch": state.epoch,
        "ready": state.ready,
        "reason": state.reason,
        "leader": state.leader.node if state.leader else None,
        "api_reachable": api is not None,
        "nodes": nodes,
        # By node (a k3s member is named <node>-<8 hex>; Phylactery says whose it is).
        "etcd_members": sorted(m.get("node", m["name"]) for m in etcd["members"]) if etcd else None,
        "etcd_quorum": etcd.get("quorum") if etcd else None,
        "vip_holder": vip_holders[0] if len(vip_holders) == 1 else (vip_holders or None),
        "haproxy_backends_up": {
            name: sum(1 for b in s["haproxy"]["backends"] if b["status"].startswith("UP")) if s else None
            for name, s in statuses.items()
        },
        "newest_snapshot_age_s": snapshot_age,
        "attention": attention(store, state.generation, nodes, etcd_names, snapshot_age),
    }


def attention(
    store: ShareStore,
    generation: int,
    nodes: list[dict[str, Any]],
    etcd_members: list[str] | None,
    snapshot_age_s: float | None,
    lease_ttl_s: float = 30.0,
) -> list[dict[str, str]]:
    """What is degraded, each as ``{"problem", "heals"}`` (what heals it by itself, or what
    the operator must do): etcd members without a live node, control nodes without a member,
    two machines with one node name (``duplicate_name`` events of the last 10 minutes), no
    snapshot on the share or an old one (docs/recovery.md)."""
    out: list[dict[str, str]] = []
    incarnations = store.incarnations()
    names = [n for n, i in incarnations.items() if i.generation == generation]
    a = recovery.assess(generation, incarnations, store.heartbeats(names), lease_ttl_s)
    if etcd_members is not None:
        for m in etcd_members:
            fate = a.fates.get(m)
            if fate in (recovery.Fate.REBOOTED, recovery.Fate.DEAD):
                heals = "its node rejoins (pruned first), or Phylactery removes it while quorum holds"
                out.append({"problem": f"etcd member {m}: its node {fate.value}, the data is gone", "heals": heals})
        for n in nodes:
            if n["role"] == "control" and n["phase"] == "watch" and n["name"] not in etcd_members:
                out.append(
                    {
                        "problem": f"control node {n['name']} has no etcd member",
                        "heals": "its agent resets and rejoins within 10 s",
                    }
                )
        if a.quorum_lost:
            heals = (
                f"{a.survivors[0]} re-forms etcd from its data"
                if a.survivors
                else "a new generation restores a snapshot"
            )
            out.append({"problem": f"etcd quorum lost ({', '.join(a.lost)} lost their data)", "heals": heals})
    recent = time.time() - 600
    for e in store.events():
        if e["event"] == "duplicate_name" and e["t"] >= recent:
            out.append(
                {
                    "problem": f"two machines heartbeat as {e['node']}",
                    "heals": "nothing: give one of them another name in Warewulf (wwctl node set), then reboot it",
                }
            )
    if snapshot_age_s is None:
        out.append(
            {"problem": "no etcd snapshot on the share", "heals": "the leader's Phylactery saves one every interval"}
        )
    elif snapshot_age_s > 600:
        out.append(
            {
                "problem": f"the newest etcd snapshot is {snapshot_age_s:.0f}s old",
                "heals": "check the leader's Phylactery log (etcd snapshot failed)",
            }
        )
    return out


HEALTHY_PHASE = "watch"


def node_problem(node: dict[str, Any], api_reachable: bool, timeouts: Timeouts | None = None) -> str | None:
    """Why ``node`` (one of :func:`collect`'s ``nodes``) needs the operator's attention, or
    None: not Ready in the API (or absent from it), a phase other than ``watch``, no heartbeat,
    or a heartbeat older than the role's liveness TTL (:meth:`core.config.Timeouts.liveness_ttl_s`:
    30 s for control nodes, 270 s for workers, which heartbeat every 90 s)."""
    t = timeouts or Timeouts()
    if node["role"] is None:
        return "no heartbeat on the share"
    age = node["heartbeat_age_s"]
    if age is not None and age >= t.liveness_ttl_s(node["role"]):
        return f"heartbeat {age:.0f}s old"
    if node["phase"] != HEALTHY_PHASE:
        return f"phase {node['phase']}"
    if api_reachable and node["ready"] is None:
        return "not in the API"
    if node["ready"] is False:
        return "not Ready"
    return None


def role_summary(doc: dict[str, Any]) -> list[str]:
    """One line per role: how many nodes, how many Ready, how many need attention, and the
    phases they are in (``control: 3 nodes, 3 Ready, 0 need attention; watch 3``)."""
    lines = []
    for role in ("control", "worker", None):
        nodes = [n for n in doc["nodes"] if n["role"] == role]
        if not nodes:
            continue
        ready = sum(1 for n in nodes if n["ready"])
        bad = sum(1 for n in nodes if node_problem(n, doc["api_reachable"]))
        phases: dict[str, int] = {}
        for n in nodes:
            phases[n["phase"] or "?"] = phases.get(n["phase"] or "?", 0) + 1
        spread = ", ".join(f"{p} {c}" for p, c in sorted(phases.items(), key=lambda pc: (-pc[1], pc[0])))
        ready_s = f"{ready} Ready" if doc["api_reachable"] else "Ready ?"
        lines.append(f"{role or 'unknown'}: {len(nodes)} nodes, {ready_s}, {bad} need attention; {spread}")
    return lines


def render(doc: dict[str, Any], all_nodes: bool = False) -> str:
    """A readable view of :func:`collect`'s document: two summary lines, one line per role,
    then the nodes that need attention first (:func:`node_problem`), then, with
    ``all_nodes`` or while there are at most 12 nodes, every other node; unknowns print as
    ``?``, event times in local time (``HH:MM:SS``)."""

    def yn(v: object) -> str:
        return "?" if v is None else ("yes" if v else "no")

    lines = [
        f"cluster {doc['cluster']}  generation {doc['generation']} ({'ready' if doc['ready'] else 'not ready'})  "
        f"leader {doc['leader'] or '-'} (epoch {doc['epoch']})  VIP holder {doc['vip_holder'] or '?'}",
        f"etcd members: {', '.join(doc['etcd_members']) if doc['etcd_members'] else '?'}"
        f"  quorum: {yn(doc['etcd_quorum'])}   API behind the VIP: {yn(doc['api_reachable'])}",
    ]
    if not doc["ready"] and doc["reason"]:
        lines.append(f"reason: {doc['reason']}")
    for item in doc.get("attention") or []:
        lines.append(f"! {item['problem']} -> {item['heals']}")
    lines += role_summary(doc)
    lines.append("")
    problems = {n["name"]: node_problem(n, doc["api_reachable"]) for n in doc["nodes"]}
    flagged = [n for n in doc["nodes"] if problems[n["name"]]]
    healthy = [n for n in doc["nodes"] if not problems[n["name"]]]
    show_all = all_nodes or len(doc["nodes"]) <= 12
    shown = flagged + (healthy if show_all else [])
    if shown:
        lines.append(f"{'NODE':<12}{'ROLE':<9}{'PHASE':<11}{'READY':<7}{'HEARTBEAT':<11}{'ATTENTION':<22}LAST EVENT")
    for n in shown:
        age = f"{n['heartbeat_age_s']:.1f}s ago" if n["heartbeat_age_s"] is not None else "-"
        ev = n["last_event"]
        when = time.strftime("%H:%M:%S", time.localtime(ev["t"])) if ev else ""
        event = f"{ev['event']} ({when})" if ev else "-"
        problem = problems[n["name"]] or "-"
        lines.append(
            f"{n['name']:<12}{n['role'] or '?':<9}{n['phase'] or '?':<11}{yn(n['ready']):<7}{age:<11}"
            f"{problem:<22}{event}"
        )
    if not show_all and healthy:
        lines.append(f"({len(healthy)} healthy nodes not listed; --all lists every node)")
    return "\n".join(lines)
