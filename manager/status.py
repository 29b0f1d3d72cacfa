"""``ek8s status``: the cluster at a glance, for the operator on the Warewulf server and for
scripts (cron, a Nagios/Icinga check) alike.

Everything comes from the share (``cluster.json``, heartbeats, events, member registry) plus,
best effort with short timeouts, each control node's Phylactery ``GET /v1/status`` (etcd
members, VIP holder, HAProxy backends) and the API behind the VIP with the admin kubeconfig
(Node readiness and addresses). What cannot be reached is shown as unknown, never as an error.

The verdict is :func:`healthy`, which the command's exit status reports (0 healthy, 1 not);
the views are :func:`render` (a table whose columns fit the data, healthy nodes folded into
hostlists, or one row per node with addresses, generations and boot ids in ``wide``) and the
document itself as JSON or YAML.
"""

from __future__ import annotations

import functools
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import hostlist

from core import probes, recovery
from core.config import Timeouts
from core.records import SnapshotName
from core.share import ShareStore

HEALTHY_PHASE = "watch"


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


def api_node_states(kubeconfig: Path) -> dict[str, tuple[bool, str | None]] | None:
    """``{node name: (Ready condition is True, InternalIP or None)}`` from the API named in
    ``kubeconfig`` (the admin kubeconfig: the VIP), or None when there is no kubeconfig, it is
    unusable, or the API does not answer within 3 s (what :func:`core.probes.kube_errors`
    lists). Node conditions and addresses as in the Kubernetes API's ``NodeStatus``."""
    if not kubeconfig.exists():
        return None
    from kubernetes import client

    try:
        api = client.CoreV1Api(probes.kube_client(kubeconfig))
        items = api.list_node(_request_timeout=3).items
    except probes.kube_errors():
        return None
    out: dict[str, tuple[bool, str | None]] = {}
    for n in items:
        status = n.status
        conditions = (status.conditions if status else None) or []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        addresses = (status.addresses if status else None) or []
        internal = next((a.address for a in addresses if a.type == "InternalIP"), None)
        out[(n.metadata.name if n.metadata else None) or "?"] = (ready, internal)
    return out


def api_nodes(kubeconfig: Path) -> dict[str, bool] | None:
    """``{node name: Ready condition is True}`` (:func:`api_node_states` without addresses),
    or None when the API cannot be asked."""
    states = api_node_states(kubeconfig)
    return None if states is None else {name: ready for name, (ready, _) in states.items()}


def collect(store: ShareStore, names: set[str] | None = None) -> dict[str, Any]:
    """The status document of the cluster behind ``store``; ``-o json``/``yaml`` print it.

    Keys: ``cluster``, ``generation``, ``epoch``, ``ready``, ``reason``, ``leader`` (node name
    or None) from ``cluster.json``; ``api_reachable``; ``nodes``, one dict per node that ever
    reported or that the API lists, or, with ``names``, per node of ``names`` (known or not):
    ``name``, ``role``, ``phase``, ``heartbeat_age_s`` on the share's clock, ``generation`` and
    ``boot_id`` of its heartbeat, ``address`` (the Node's InternalIP, else its member record's),
    ``ready`` from the API, ``last_event`` ``{event, t, message}`` with ``t`` in Unix seconds,
    ``problem`` (:func:`node_problem`, None when healthy); ``etcd_members`` (sorted names) and
    ``etcd_quorum`` from the first Phylactery that lists members; ``vip_holder`` (a name, a list
    when several hold it, or None); ``haproxy_backends_up`` (per control node, backends whose
    status starts with ``UP``); ``newest_snapshot_age_s`` (the newest by etcd revision, age by
    the share's clock); ``snapshots``: ``lineage`` (those in ``snapshots/``, which a restore
    chooses from) and ``set_aside`` (``snapshots/old/``, never restored by themselves), each a
    list per generation, highest first (:func:`snapshot_groups`); ``attention`` (:func:`attention`,
    :func:`snapshot_attention`);
    ``selected`` (whether ``names`` narrowed ``nodes``); ``rollout`` (:func:`rollout_doc`, the
    share's rolling upgrade or None); ``healthy`` (:func:`healthy`).
    Unknowns are None. Phylacteries are asked in parallel (1.5 s timeout each), the API with a
    3 s timeout per attempt (the client retries a failed connection). Touches this store's
    probe file on the share to read the share's clock.

    Raises ``FileNotFoundError`` when the share holds no such cluster,
    :class:`core.share.ShareError` when ``cluster.json`` is not JSON, and ``OSError`` when the
    share cannot be read."""
    state = store.read_state()
    members = store.members()
    access = phylactery_access(store)
    with ThreadPoolExecutor(max(1, len(members) + 1)) as pool:
        ask = functools.partial(_phylactery, access)
        statuses = dict(zip([m.name for m in members], pool.map(ask, [m.phylactery_url for m in members]), strict=True))
        api = pool.submit(api_node_states, store.admin_kubeconfig_path).result()
    known = set(store.heartbeat_names()) | set(api or {})
    listed = hostlist.numerically_sorted(list(names if names is not None else known))
    events = store.events()
    last: dict[str, dict[str, Any]] = {}
    for e in events:
        last[e["node"]] = e
    member_address = {m.name: m.address for m in members}
    nodes = []
    now = store.share_now()
    for name in listed:
        hb = store.read_any_heartbeat(name, now) if name in known else None
        event = last.get(name)
        in_api = api.get(name) if api is not None else None
        nodes.append(
            {
                "name": name,
                "role": hb.role if hb else None,
                "phase": hb.phase if hb else None,
                "heartbeat_age_s": round(hb.age_s, 1) if hb else None,
                "generation": hb.generation if hb else None,
                "boot_id": hb.boot_id if hb else None,
                "address": (in_api[1] if in_api else None) or member_address.get(name),
                "ready": (in_api[0] if in_api else None) if api is not None else None,
                "last_event": {"event": event["event"], "t": event["t"], "message": event.get("message", "")}
                if event
                else None,
            }
        )
    for n in nodes:
        n["problem"] = node_problem(n, api is not None)
    answered = [s for s in statuses.values() if s]
    etcd = next((s["etcd"] for s in answered if s["etcd"]["members"]), None)
    vip_holders = [name for name, s in statuses.items() if s and s["keepalived"]["vip_held"]]
    # By node (a k3s member is named <node>-<8 hex>; Phylactery says whose it is).
    etcd_names = sorted(m.get("node", m["name"]) for m in etcd["members"]) if etcd else None
    snapshots = store.snapshots()
    snapshot_age = round(now - snapshots[0].stat().st_mtime, 1) if snapshots else None
    snapshot_doc = {
        "lineage": snapshot_groups(store.snapshot_listing(), now),
        "set_aside": snapshot_groups(store.snapshot_listing(set_aside=True), now),
    }
    doc = {
        "cluster": store.cluster,
        "generation": state.generation,
        "epoch": state.epoch,
        "ready": state.ready,
        "reason": state.reason,
        "leader": state.leader.node if state.leader else None,
        "api_reachable": api is not None,
        "nodes": nodes,
        "etcd_members": etcd_names,
        "etcd_quorum": etcd.get("quorum") if etcd else None,
        "vip_holder": vip_holders[0] if len(vip_holders) == 1 else (vip_holders or None),
        "haproxy_backends_up": {
            name: sum(1 for b in s["haproxy"]["backends"] if b["status"].startswith("UP")) if s else None
            for name, s in statuses.items()
        },
        "newest_snapshot_age_s": snapshot_age,
        "snapshots": snapshot_doc,
        "attention": attention(store, state.generation, nodes, etcd_names, snapshot_age, events=events)
        + snapshot_attention(snapshot_doc["lineage"]),
        "selected": names is not None,
        "rollout": rollout_doc(store),
    }
    doc["healthy"] = healthy(doc)
    return doc


def snapshot_groups(listing: list[tuple[Path, SnapshotName]], now: float) -> list[dict[str, Any]]:
    """Snapshots grouped by generation, highest first: ``generation``, ``count``, and the
    newest by etcd revision (:attr:`core.records.SnapshotName.order`): ``newest`` (file name),
    ``revision`` (None for a name from before revisions were recorded), ``cluster_id`` (hex or
    None), ``cluster_ids`` (every cluster id the generation's snapshots name) and ``age_s``
    (by ``now``, the share's clock, from the file's mtime; None when it vanished meanwhile).
    ``listing`` is :meth:`core.share.ShareStore.snapshot_listing`'s, newest first."""
    groups: dict[int, dict[str, Any]] = {}
    for path, name in listing:
        g = groups.get(name.generation)
        if g is not None:
            g["count"] += 1
            if name.cluster_id and name.cluster_id not in g["cluster_ids"]:
                g["cluster_ids"].append(name.cluster_id)
            continue
        try:
            age: float | None = round(now - path.stat().st_mtime, 1)
        except OSError:
            age = None
        groups[name.generation] = {
            "generation": name.generation,
            "count": 1,
            "newest": path.name,
            "revision": name.revision,
            "cluster_id": name.cluster_id,
            "cluster_ids": [name.cluster_id] if name.cluster_id else [],
            "age_s": age,
        }
    return [groups[g] for g in sorted(groups, reverse=True)]


def snapshot_attention(lineage: list[dict[str, Any]]) -> list[dict[str, str]]:
    """An attention item when the highest generation's snapshots come from more than one etcd
    cluster id (:func:`snapshot_groups`' ``cluster_ids``): within a generation the id only
    changes if two etcd clusters wrote snapshots (a split brain), and a restore would take the
    highest revision of either."""
    if not lineage or len(lineage[0]["cluster_ids"]) < 2:
        return []
    g = lineage[0]
    return [
        {
            "problem": f"generation {g['generation']}'s snapshots come from {len(g['cluster_ids'])} etcd clusters "
            f"({', '.join(g['cluster_ids'])}): two clusters wrote them",
            "heals": f"nothing by itself: a restore takes the highest revision ({g['newest']}); "
            "move the other cluster's snapshots aside (snapshots/old/) if that is not the data to keep",
        }
    ]


def snapshot_line(doc: dict[str, Any]) -> str | None:
    """The status view's snapshot line (:func:`snapshot_groups` of both places), or None when
    the document has no ``snapshots`` key."""
    snaps = doc.get("snapshots")
    if snaps is None:
        return None

    def one(g: dict[str, Any]) -> str:
        rev = "revision ?" if g["revision"] is None else f"revision {g['revision']}"
        return f"gen {g['generation']}: {g['count']} (newest {rev}, {_age(g['age_s'])})"

    line = "etcd snapshots: " + ("; ".join(one(g) for g in snaps["lineage"]) or "none")
    if snaps["set_aside"]:
        line += "   set aside in snapshots/old/ (never restored by themselves): "
        line += "; ".join(one(g) for g in snaps["set_aside"])
    return line


def rollout_doc(store: ShareStore) -> dict[str, Any] | None:
    """The share's ``rollout.json`` (:mod:`core.upgrade`) for the status document: ``phase``,
    ``from_version``, ``to_version``, ``nodes`` (name -> ``{state, version}``: the version its
    image carries by its state; ``?`` while moving or failed), ``next`` (the next step, one
    line) and ``error``; None when there is none, or ``{"error": ...}`` when it cannot be read."""
    from core import upgrade
    from core.share import ShareError

    try:
        r = store.read_rollout()
    except ShareError as err:
        return {"phase": "unreadable", "error": str(err), "nodes": {}, "next": "fix or remove rollout.json"}
    if r is None:
        return None
    by_state = {"old": r.from_version, "new": r.to_version}
    step = upgrade.next_step(r)
    nxt = (f"{step.action} {' '.join(step.nodes)}".strip() if step else None) if r.phase != "stopped" else None
    return {
        "phase": r.phase,
        "from_version": r.from_version,
        "to_version": r.to_version,
        "nodes": {n.name: {"state": n.state, "version": by_state.get(n.state, "?")} for n in r.nodes},
        "next": nxt or ("ek8s upgrade --resume or --rollback" if r.phase == "stopped" else None),
        "error": r.error,
    }


def healthy(doc: dict[str, Any]) -> bool:
    """The verdict ``ek8s status`` exits with (0 when True, 1 when False): the generation is
    ready, the API behind the VIP answers (a Node's readiness is known only from it), there is
    at least one node, no node of ``doc["nodes"]`` has a problem (:func:`node_problem`), and,
    unless ``doc["selected"]`` (a NODE argument narrowed the nodes), nothing is on the
    cluster's ``attention`` list. ``--wait`` waits for it."""
    if not doc["ready"] or not doc["api_reachable"] or not doc["nodes"]:
        return False
    if any(node_problem(n, doc["api_reachable"]) for n in doc["nodes"]):
        return False
    return bool(doc.get("selected")) or not doc["attention"]


def attention(
    store: ShareStore,
    generation: int,
    nodes: list[dict[str, Any]],
    etcd_members: list[str] | None,
    snapshot_age_s: float | None,
    lease_ttl_s: float = 30.0,
    events: list[dict[str, Any]] | None = None,
) -> list[dict[str, str]]:
    """What is degraded, each as ``{"problem", "heals"}`` (what heals it by itself, or what
    the operator must do): etcd members without a live node, control nodes without a member,
    two machines with one node name (``duplicate_name`` events of the last 10 minutes, from
    ``events`` or, when None, the share), no snapshot on the share or an old one
    (docs/recovery.md)."""
    out: list[dict[str, str]] = []
    a = recovery.assess_share(store, generation, lease_ttl_s)
    if etcd_members is not None:
        for m in etcd_members:
            fate = a.fates.get(m)
            if fate in recovery.PROVEN:
                heals = "its node rejoins (pruned first), or Phylactery removes it while quorum holds"
                out.append({"problem": f"etcd member {m}: its node {a.proof_of(m)}, the data is gone", "heals": heals})
            elif fate is recovery.Fate.SILENT:
                heals = (
                    "its node heartbeats again; or it is fenced; or, once you know it is down, "
                    f"'ek8s recover --accept-loss-of {m}'"
                )
                problem = f"etcd member {m}: its node is silent past the lease, not proven gone (it may be serving)"
                out.append({"problem": problem, "heals": heals})
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
            f"{a.survivors[0]} re-forms etcd from its data" if a.survivors else "a new generation restores a snapshot"
        )
        out.append({"problem": f"etcd quorum lost ({', '.join(a.lost)} lost their data)", "heals": heals})
    elif a.quorum_unproven:
        out.append(
            {
                "problem": f"no majority of etcd members is alive: {a.explain()}",
                "heals": "nothing acts on silence: the silent nodes come back, are fenced, or you accept their loss",
            }
        )
    recent = time.time() - 600
    for e in store.events(since=recent) if events is None else events:
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


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """``rows`` under ``headers`` in columns as wide as their widest cell plus two spaces
    (the last column unpadded, no trailing blanks)."""
    every = [headers, *rows]
    widths = [max(len(r[i]) for r in every) for i in range(len(headers) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]]) for r in every]


def _yn(v: object) -> str:
    return "?" if v is None else ("yes" if v else "no")


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s ago"


def _event(n: dict[str, Any]) -> str:
    ev = n["last_event"]
    if not ev:
        return "-"
    return f"{ev['event']} ({time.strftime('%H:%M:%S', time.localtime(ev['t']))})"


def fold(nodes: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Healthy ``nodes`` as groups that look alike (same role, phase and readiness), each
    with its names folded into a hostlist (``worker[0001-0117]``, python-hostlist's
    ``collect_hostlist``); control nodes first."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for n in nodes:
        groups.setdefault((n["role"] or "?", n["phase"] or "?", _yn(n["ready"])), []).append(n)
    order = {"control": 0, "worker": 1}
    keys = sorted(groups, key=lambda k: (order.get(k[0], 2), k))
    return [(hostlist.collect_hostlist([n["name"] for n in groups[k]]), groups[k]) for k in keys]


def render(doc: dict[str, Any], output: str = "table", all_nodes: bool = False) -> str:
    """A readable view of :func:`collect`'s document: two summary lines, the cluster's
    attention list, one line per role, then a table of the nodes: those that need attention
    first, one row each, then (``table``) the healthy ones folded into hostlists by role, phase
    and readiness (the HEARTBEAT column shows the oldest of a group), or one row per node with
    ``all_nodes``. ``wide`` lists every node on its own row with ADDRESS, GEN (its heartbeat's
    generation) and BOOT ID. Columns are as wide as their data; unknowns print as ``?``,
    event times in local time (``HH:MM:SS``)."""
    lines = [
        f"cluster {doc['cluster']}  generation {doc['generation']} ({'ready' if doc['ready'] else 'not ready'})  "
        f"leader {doc['leader'] or '-'} (epoch {doc['epoch']})  VIP holder {doc['vip_holder'] or '?'}",
        f"etcd members: {hostlist.collect_hostlist(doc['etcd_members']) if doc['etcd_members'] else '?'}"
        f"  quorum: {_yn(doc['etcd_quorum'])}   API behind the VIP: {_yn(doc['api_reachable'])}",
    ]
    if not doc["ready"] and doc["reason"]:
        lines.append(f"reason: {doc['reason']}")
    snapshots = snapshot_line(doc)
    if snapshots:
        lines.append(snapshots)
    ro = doc.get("rollout")
    if ro and ro["phase"] not in ("done", "rolled_back"):
        states = ", ".join(f"{n} {v['state']} ({v['version']})" for n, v in ro["nodes"].items())
        err = f" ({ro['error']})" if ro.get("error") else ""
        lines.append(
            f"upgrade {ro.get('from_version', '?')} -> {ro.get('to_version', '?')} {ro['phase']}{err}: {states}; "
            f"next: {ro['next'] or '-'}"
        )
    for item in doc.get("attention") or []:
        lines.append(f"! {item['problem']} -> {item['heals']}")
    lines += role_summary(doc)
    if not doc["nodes"]:
        lines.append("(no node has reported to the share, and the API lists none)")
        return "\n".join(lines)
    lines.append("")
    problems = {n["name"]: node_problem(n, doc["api_reachable"]) for n in doc["nodes"]}
    flagged = [n for n in doc["nodes"] if problems[n["name"]]]
    healthy_nodes = [n for n in doc["nodes"] if not problems[n["name"]]]
    wide = output == "wide"
    headers = ["NODE", "ROLE", "PHASE", "READY", *(["ADDRESS", "GEN", "BOOT ID"] if wide else [])]
    headers += ["HEARTBEAT", "ATTENTION", "LAST EVENT"]

    def row(n: dict[str, Any]) -> list[str]:
        cells = [n["name"], n["role"] or "?", n["phase"] or "?", _yn(n["ready"])]
        if wide:
            gen = n["generation"]
            cells += [n["address"] or "?", "?" if gen is None else str(gen), n["boot_id"] or "?"]
        return [*cells, _age(n["heartbeat_age_s"]), problems[n["name"]] or "-", _event(n)]

    rows = [row(n) for n in flagged]
    if wide or all_nodes:
        rows += [row(n) for n in healthy_nodes]
    else:
        for names, group in fold(healthy_nodes):
            if len(group) == 1:
                rows.append(row(group[0]))
                continue
            oldest = max((n["heartbeat_age_s"] for n in group if n["heartbeat_age_s"] is not None), default=None)
            first = group[0]
            beat = "-" if oldest is None else f"<={oldest:.1f}s ago"
            rows.append([names, first["role"] or "?", first["phase"] or "?", _yn(first["ready"]), beat, "-", "-"])
    lines += table(headers, rows)
    return "\n".join(lines)


def progress(doc: dict[str, Any], elapsed_s: float) -> str:
    """One line for ``--wait``: how long it has waited, the generation, how many nodes are
    healthy, and what it still waits for (the others as a hostlist, the cluster's problems)."""
    ok = [n for n in doc["nodes"] if n["ready"] and not node_problem(n, doc["api_reachable"])]
    waiting = [n["name"] for n in doc["nodes"] if node_problem(n, doc["api_reachable"])]
    parts = [
        f"[{elapsed_s:5.0f}s] generation {doc['generation']} {'ready' if doc['ready'] else 'not ready'}",
        f"{len(ok)}/{len(doc['nodes'])} nodes Ready",
    ]
    if not doc["api_reachable"]:
        parts.append("the API behind the VIP does not answer")
    if waiting:
        parts.append(f"waiting for {hostlist.collect_hostlist(waiting)}")
    if not doc.get("selected") and doc["attention"]:
        parts.append("; ".join(a["problem"] for a in doc["attention"]))
    return "; ".join(parts)
