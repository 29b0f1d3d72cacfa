"""Prometheus metrics shared by the agent and Phylactery (docs/metrics.md): the share store's
operation counters as ``ek8s_share_operations_total{process, kind}``, and
``ek8s_build_info{version, revision, distribution}``."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import core
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


class BuildInfoCollector(Collector):
    """``ek8s_build_info``: always 1, labelled with the code's version and revision
    (:func:`core.revision`) and the node's Kubernetes ``distribution`` (kubeadm, k3s), the
    ``*_build_info`` pattern of Prometheus' own exporters (join on it to see which code runs where)."""

    def __init__(self, distribution: str) -> None:
        self.labels = [core.__version__, core.revision(), distribution]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "ek8s_build_info",
            "The running code's version and revision, and the Kubernetes distribution (always 1)",
            labels=["version", "revision", "distribution"],
        )
        family.add_metric(self.labels, 1)
        yield family
