"""Phylactery's ``GET /metrics`` (Prometheus text format, unauthenticated and read-only, like
``/healthz``; docs/metrics.md): its own metrics, collected at each scrape, each family once.

The node agent's metrics are not here: node_exporter serves them from the agent's textfile
(:mod:`leader.metrics`) on every node. Appending that file to this body, as before, repeated
``ek8s_share_operations_total``'s ``# HELP``/``# TYPE`` (which the text format forbids: strict
parsers and ``promtool check metrics`` reject it) and made Prometheus scrape the agent twice on
control nodes.

A scrape costs the share two operations (the snapshot directory's listing and the newest
snapshot's ``stat``); the generation, the members and the reloads are what Phylactery already
holds, HAProxy's backends come from its stats socket and the etcd members from the local member."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.etcd import EtcdClient, EtcdError
from core.metrics import BuildInfoCollector, ShareOpsCollector
from phylactery import daemons

CONTENT_TYPE = CONTENT_TYPE_LATEST  # text/plain; version=0.0.4

if TYPE_CHECKING:
    from collections.abc import Iterator

    from phylactery.service import Phylactery


class _Families(Collector):
    """Metric families gathered beforehand (asynchronously), handed to the registry."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


class PruneCounts:
    """``POST /v1/prune`` answers by outcome (``pruned``, ``refused``, ``failed``)."""

    def __init__(self) -> None:
        self.by_outcome = {"pruned": 0, "refused": 0, "failed": 0}


async def etcd_member_count(p: Phylactery) -> int | None:
    """How many members the local etcd member lists (None without one, or no answer)."""
    ctx = p.driver.etcd_client_context()
    if ctx is None:
        return None
    try:
        async with EtcdClient([p.driver.etcd_endpoint], ctx, timeout_s=2.0) as etcd:
            return len(await etcd.member_list())
    except (EtcdError, OSError):
        return None


def _snapshot_age_s(p: Phylactery) -> float | None:
    snaps = p.store.snapshots()
    if not snaps:
        return None
    p.store.ops.add(stats=1)
    try:
        return max(0.0, time.time() - snaps[0].stat().st_mtime)
    except OSError:
        return None


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


async def render(p: Phylactery, prunes: PruneCounts) -> bytes:
    """The ``/metrics`` body: Phylactery's metrics (the agent's are node_exporter's to serve)."""
    backends = await asyncio.to_thread(daemons.backend_states, p.stats_socket)
    members = await etcd_member_count(p)
    snapshot_age = await asyncio.to_thread(_snapshot_age_s, p)
    families: list[Metric] = [
        _gauge("ek8s_phylactery_generation", "The generation Phylactery serves", p.generation),
        _gauge("ek8s_phylactery_started", "1 once HAProxy and keepalived run with a config", int(p.started)),
    ]
    info = GaugeMetricFamily("ek8s_phylactery_info", "Node and role (always 1)", labels=["node", "role"])
    info.add_metric([p.cfg.node.name, p.cfg.role], 1)
    families.append(info)
    up = GaugeMetricFamily("ek8s_haproxy_backend_up", "1 for each API backend HAProxy sees UP", labels=["backend"])
    for name, status in sorted(backends.items()):
        up.add_metric([name], 1 if status.startswith("UP") else 0)
    families.append(up)
    n_up = sum(1 for s in backends.values() if s.startswith("UP"))
    families.append(_gauge("ek8s_haproxy_backends_up", "API server backends HAProxy sees UP", n_up))
    if "members" in p.last_reconcile:
        doc = "Control nodes in the member registry (HAProxy's backends, keepalived's peers) at the last reconcile"
        families.append(_gauge("ek8s_phylactery_members", doc, len(p.last_reconcile["members"])))
    if "verify" in p.last_reconcile:
        doc = "1 when HAProxy's checks verify the API servers against the generation's CA (0: unverified)"
        families.append(_gauge("ek8s_haproxy_checks_verified", doc, int(p.last_reconcile["verify"] != "none")))
    reloads = CounterMetricFamily("ek8s_phylactery_reloads", "Reloads of a daemon's configuration", labels=["daemon"])
    reloads.add_metric(["haproxy"], p.haproxy.reloads)
    reloads.add_metric(["keepalived"], p.keepalived.reloads)
    families.append(reloads)
    pruned = CounterMetricFamily("ek8s_phylactery_prunes", "POST /v1/prune answers by outcome", labels=["outcome"])
    for outcome, n in prunes.by_outcome.items():
        pruned.add_metric([outcome], n)
    families.append(pruned)
    if members is not None:
        families.append(_gauge("ek8s_etcd_members", "Members the local etcd member lists", members))
    interval = p.cfg.phylactery.snapshot_interval_s
    doc = "phylactery.snapshot_interval_s: how often etcd is snapshotted to the share (0: never)"
    families.append(_gauge("ek8s_etcd_snapshot_interval_seconds", doc, interval))
    if snapshot_age is not None:
        doc = "Age of the newest etcd snapshot on the share"
        families.append(_gauge("ek8s_etcd_snapshot_age_seconds", doc, snapshot_age))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    registry.register(ShareOpsCollector(p.store, "phylactery"))
    registry.register(BuildInfoCollector(p.cfg.kubernetes.distribution))
    registry.register(p.supervisor)  # ek8s_loop_failures_total{process="phylactery", loop}
    return generate_latest(registry)
