"""Prometheus metrics shared by the agent and Phylactery (docs/metrics.md): the share store's
operation counters as ``ek8s_share_operations_total{process, kind}``."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from core.share import OP_KINDS, ShareStore


class ShareOpsCollector(Collector):
    """``ek8s_share_operations_total``: ``store``'s operations on the share so far, by kind,
    labelled with ``process`` (``agent`` or ``phylactery``), read at every collection."""

    def __init__(self, store: ShareStore, process: str) -> None:
        self.store = store
        self.process = process

    def collect(self) -> Iterator[Metric]:
        counts = self.store.operation_counts()
        family = CounterMetricFamily(
            "ek8s_share_operations",
            "Operations this process made on the share (reads, stats, writes, renames, fsyncs, locks)",
            labels=["process", "kind"],
        )
        for kind in OP_KINDS:
            family.add_metric([self.process, kind], counts[kind])
        yield family
