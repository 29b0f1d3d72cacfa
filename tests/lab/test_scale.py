"""The lab at scale: 3 control nodes and 25 workers boot together, every node becomes Ready
with no failed join, the cluster is whole, the join admission window (core/admission.py) grew
past its start and shrank on injected distress (every emulated ``kubeadm join`` takes 7.5 s,
more than half of a ``worker_join_slot_s`` of 14 s: a slow join; a slot is still held well
within the 14 s, so the peak of workers joining at once is the window's doing), and the
steady-state share load of every agent, read from the share store's counters (the agents'
metrics textfiles), keeps to the budget of docs/share-protocol.md: at most 0.2 operations per
second per worker and 1 per control node. Phylactery's ``/metrics`` answers with the
documented metrics."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.admission import INITIAL
from lab.cluster import Lab, LabState
from lab.emulation import Emulation

WORKERS = 25
WINDOW_S = 90.0  # a worker's heartbeat interval: at most two beats and four reads in it
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


def share_ops(root: Path) -> tuple[float, float]:
    """(total share operations of the node's agent, when its textfile was written)."""
    path = root / TEXTFILE
    mtime = path.stat().st_mtime
    total = 0.0
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            if s.name == "ek8s_share_operations_total" and s.labels.get("process") == "agent":
                total += s.value
    return total, mtime


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

    time.sleep(15)  # every agent has entered WATCH and written its textfile since
    first = {n.name: share_ops(Path(n.root)) for n in state.nodes}
    time.sleep(WINDOW_S)
    rates = {}
    for n in state.nodes:
        ops, at = share_ops(Path(n.root))
        ops0, at0 = first[n.name]
        assert at - at0 >= WINDOW_S - 20, f"{n.name}: textfile not rewritten"
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
