"""The agent's Prometheus metrics (docs/metrics.md), written in node_exporter's textfile
collector format to ``metrics.textfile_dir/ek8s.prom``: node_exporter on the node serves them
(on every node, control nodes included; Phylactery serves only its own).

The values come from the agent's events (:meth:`AgentMetrics.on_event`: ``joined``,
``pruned``, ``join_failed``, ``init_failed``) and its state, so the handlers need no lines of
their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from core.fileperm import ensure_dir, write_atomic
from core.metrics import BuildInfoCollector, ShareOpsCollector
from core.share import ShareStore

JOIN_BUCKETS_S = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
TEXTFILE_MODE = 0o644  # node_exporter often runs unprivileged; nothing secret in it
disable_created_metrics()  # no *_created series: node_exporter's textfiles do without them

PHASES = (
    "elect",
    "follow",
    "lead",
    "publish",
    "join",
    "await-node",
    "watch",
    "lost",
    "reset",
    "failed",
    "stopped",
)


class AgentMetrics:
    """One agent's metrics in their own registry (``node``, ``role`` as labels of the info)."""

    def __init__(self, store: ShareStore, node: str, role: str, distribution: str = "kubeadm") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Gauge("ek8s_agent_info", "The agent's node and role (always 1)", ["node", "role"], registry=r).labels(
            node, role
        ).set(1)
        self.generation = Gauge("ek8s_agent_generation", "The generation the agent follows", registry=r)
        self.phase = Gauge("ek8s_agent_phase", "1 for the current phase, 0 for the others", ["phase"], registry=r)
        self.join_s = Histogram(
            "ek8s_agent_join_duration_seconds",
            "Duration of successful kubeadm joins; kind 'rejoin' when this node's stale state was pruned first",
            ["kind"],
            buckets=JOIN_BUCKETS_S,
            registry=r,
        )
        self.prunes = Counter("ek8s_agent_prunes", "Prunes of this node's stale state before a rejoin", registry=r)
        self.join_failures = Counter("ek8s_agent_join_failures", "Failed join attempts", registry=r)
        self.init_failures = Counter("ek8s_agent_init_failures", "Failed init attempts", registry=r)
        self.phase_changes = Counter("ek8s_agent_phase_changes", "Changes of the agent's phase", registry=r)
        r.register(ShareOpsCollector(store, "agent"))
        r.register(BuildInfoCollector(distribution))
        for kind in ("join", "rejoin"):
            self.join_s.labels(kind)
        self._pruned = False
        self._phase = ""

    def observe(self, phase: str, generation: int) -> bool:
        """Record the current phase and generation; returns whether the phase changed."""
        self.generation.set(generation)
        if phase == self._phase:
            return False
        if self._phase:
            self.phase_changes.inc()
        self._phase = phase
        for p in PHASES:
            self.phase.labels(p).set(1 if p == phase else 0)
        return True

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        """Count what an agent event says (``joined`` carries ``kubeadm_s``)."""
        if event == "pruned":
            self.prunes.inc()
            self._pruned = True
        elif event == "joined":
            kind = "rejoin" if self._pruned else "join"
            self._pruned = False
            self.join_s.labels(kind).observe(float(fields.get("kubeadm_s") or 0.0))
        elif event == "join_failed":
            self.join_failures.inc()
        elif event == "init_failed":
            self.init_failures.inc()

    def text(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)

    def write(self, path: Path) -> None:
        """Write :meth:`text` to ``path`` atomically (node_exporter's textfile collector reads
        only ``*.prom``, and must never see half a file)."""
        ensure_dir(path.parent, mode=0o755)
        write_atomic(path, self.text(), mode=TEXTFILE_MODE)
