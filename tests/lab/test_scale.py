"""The lab at scale: 3 control nodes and 25 workers boot together, every node becomes Ready
with no failed join, the cluster is whole, the join admission window (core/admission.py) grew
past its start and shrank on injected distress (every emulated ``kubeadm join`` takes 7.5 s,
more than half of a ``worker_join_slot_s`` of 14 s: a slow join; a slot is still held well
within the 14 s, so the peak of workers joining at once is the window's doing), and the
steady-state share load of every agent, read from the share store's counters (the agents'
metrics textfiles), keeps to the budget of docs/share-protocol.md: at most 0.2 operations per
second per worker and 1 per control node, measured per agent from its textfile once every agent
is in ``WATCH`` to one at least :data:`WINDOW_S` later. Phylactery's ``/metrics`` answers with the
documented metrics."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.admission import INITIAL
from lab.cluster import Lab, LabState
from lab.emulation import Emulation
from tests.conftest import wait_for

WORKERS = 25
# The steady window, at least: in any 60 s a watching worker makes at most 8 share operations
# (one heartbeat of 5, three reads of cluster.json: docs/share-protocol.md), 0.13/s against its
# 0.2, and a control node at most 7 heartbeats and 13 reads, 0.8/s against its 1, so a node that
# keeps the documented rates cannot fail by where its periodic operations fall in the window.
WINDOW_S = 60.0
LAB_PREFIX = "ek8ss"
TEXTFILE = "var/lib/node_exporter/textfile_collector/ek8s.prom"
JOIN_S = 7.5  # each emulated kubeadm join: slow against ...
SLOT_S = 14.0  # ... timeouts.worker_join_slot_s, whose half is the slow-join limit


def peak_joining(events: list[dict[str, object]]) -> int:
    """The most workers between their ``join_started`` and ``node_ready`` at one moment: each
    held a join slot then, so the admission window was at least this large."""
    edges = []
    for e in events:
        if str(e["node"]).startswith("worker") and e["event"] in ("join_started", "node_ready"):
            edges.append((float(e["t"]), 1 if e["event"] == "join_started" else -1))  # type: ignore[arg-type]
    peak = now = 0
    for _, step in sorted(edges, key=lambda x: (x[0], x[1])):  # a release before a take at the same t
        now += step
        peak = max(peak, now)
    return peak


def share_ops(root: Path) -> tuple[float, float, str | None]:
    """(total share operations of the node's agent, when its textfile was written, the phase
    it says the agent is in), from one version of the file (the agent replaces it atomically)."""
    with open(root / TEXTFILE) as f:
        mtime = os.fstat(f.fileno()).st_mtime
        text = f.read()
    total, phase = 0.0, None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "ek8s_share_operations_total" and s.labels.get("process") == "agent":
                total += s.value
            if s.name == "ek8s_agent_phase" and s.value == 1:
                phase = s.labels.get("phase")
    return total, mtime, phase


def all_in_watch(state: LabState) -> dict[str, tuple[float, float, str | None]] | None:
    """Every node's :func:`share_ops` when every textfile says its agent is in ``WATCH`` (the
    agent writes one on every new phase), else None."""
    try:
        got = {n.name: share_ops(Path(n.root)) for n in state.nodes}
    except FileNotFoundError:
        return None
    return got if all(phase == "watch" for _, _, phase in got.values()) else None


@pytest.mark.lab
def test_3_plus_25_all_ready_within_the_share_load_budget(lab: Lab) -> None:
    state: LabState = lab.create(3, WORKERS, Emulation(join_s=JOIN_S), {"timeouts": {"worker_join_slot_s": SLOT_S}})
    lab.start_all(state)
    last_ready = lab.wait_ready(state, 400, since=state.t0)
    lab.wait_whole(state, 120)
    print(f"3 + {WORKERS}: all nodes Ready {last_ready - state.t0:.1f}s after boot")

    events = lab.events()
    assert [e for e in events if e["event"] == "join_failed"] == []
    peak = peak_joining(events)
    distress = [e for e in events if e["event"] == "join_admission"]
    seen = [(e["signal"], e["window"]) for e in distress]
    print(f"join admission: peak {peak} workers joining at once; distress (signal, window after): {seen}")
    assert peak > INITIAL, "the window grew past its start"
    assert any(e["signal"] == "slow_join" for e in distress), "slow joins are distress"
    assert min(float(e["window"]) for e in distress) < peak, "the window shrank on it"

    # The steady window of each agent starts at its textfile in WATCH (the agent writes one on
    # entering it, then every textfile_interval_s) and ends at its first textfile at least
    # WINDOW_S later.
    first = wait_for(lambda: all_in_watch(state), 60, 0.5, "every agent in WATCH")
    last: dict[str, tuple[float, float, str | None]] = {}

    def window_over() -> bool:
        for n in state.nodes:
            if n.name not in last:
                now = share_ops(Path(n.root))
                if now[1] - first[n.name][1] >= WINDOW_S:
                    last[n.name] = now
        return len(last) == len(state.nodes)

    wait_for(window_over, WINDOW_S + 40, 1.0, f"every agent's textfile rewritten {WINDOW_S:.0f} s after its first")
    rates = {}
    for n in state.nodes:
        ops, at, _ = last[n.name]
        ops0, at0, _ = first[n.name]
        rates[n.name] = (ops - ops0) / (at - at0)
    print("steady share ops/s:", {k: round(v, 3) for k, v in rates.items()})
    for n in state.nodes:
        budget = 1.0 if n.role == "control" else 0.2
        assert rates[n.name] <= budget, f"{n.name}: {rates[n.name]:.3f} share ops/s > {budget}"

    control0 = state.node("control0")
    res = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            state.node("worker0").ns,
            "curl",
            "-sf",
            "--cacert",
            str(lab.store().phylactery_ca_path("control")),
            "-m",
            "5",
            f"https://{control0.address}:9999/metrics",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    names = {f.name for f in text_string_to_metric_families(res.stdout)}
    for name in ("ek8s_phylactery_generation", "ek8s_haproxy_backends_up", "ek8s_etcd_members", "ek8s_build_info"):
        assert name in names
    assert "ek8s_agent_phase" not in names, "the agent's metrics are node_exporter's to serve"
