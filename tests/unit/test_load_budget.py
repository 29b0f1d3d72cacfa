"""The share's load budget (docs/share-protocol.md), measured with the store's operation
counters and a fake clock: steady state at most 0.2 share operations per second per worker
and 1 per control node, no worker probing the API behind the VIP more than once per 10 s, and
100 workers waiting for ``leader_ready`` costing the share less than 100 operations a second."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from core.config import Timeouts
from core.etcd import EtcdMember, LocalView
from core.share import ShareStore
from leader.agent import follow_backoff_s
from leader.election import rule_for
from leader.episodes import Silence
from tests.unit.agent_fakes import Harness
from tests.unit.test_agent_states import joined_worker, watching_control

TICK_S = 1.0  # the heartbeat thread's tick (min(1 s, heartbeat_interval_s))


class CountingProbes:
    """Counts the API probes behind the VIP of a harness's fake probes: ``/readyz``, and a
    worker's Node check, whose kubelet kubeconfig points at the VIP."""

    def __init__(self, h: Harness) -> None:
        self.calls = 0
        inner = h.probes.api_ready
        inner_found = h.probes.node_found

        def counted(ca_pem: bytes) -> bool:
            self.calls += 1
            return inner(ca_pem)

        def counted_found() -> bool | None:
            self.calls += 1
            return inner_found()

        h.probes.api_ready = counted  # type: ignore[method-assign]
        h.probes.node_found = counted_found  # type: ignore[method-assign]


def run_for(h: Harness, seconds: float) -> float:
    """Run ``h``'s agent for ``seconds`` of fake time the way :meth:`Agent.run` and its
    heartbeat thread do (cycles every ``cycle_s()``, heartbeat checks every tick). Returns
    the share operations per second over that time."""
    agent, clock = h.agent, h.clock
    start_ops = h.store.operation_counts()["total"]
    end = clock.now + seconds
    next_cycle, next_tick = clock.now, clock.now + TICK_S
    last_beat, last_phase = clock.now, agent.state.value
    while True:
        now = min(next_cycle, next_tick)
        if now > end:
            break
        clock.now = now
        if now == next_tick:
            next_tick += TICK_S
            if agent.heartbeat_due(last_beat, last_phase):
                last_beat, last_phase = now, agent.state.value
                h.store.heartbeat(agent.boot_id, agent.cfg.role, last_phase, agent.generation, agent.etcd_index)
        if now == next_cycle:
            before = agent.state
            h.cycle()
            next_cycle = now + (agent.cycle_s() if agent.state is before else 0.0)
    clock.now = end
    return (h.store.operation_counts()["total"] - start_ops) / seconds


def test_a_watching_worker_costs_at_most_0_2_ops_per_second(tmp_path: Path) -> None:
    h = joined_worker(tmp_path)
    h.probes.node = True
    h.cycle()
    assert h.state == "WATCH"
    probes = CountingProbes(h)
    rate = run_for(h, 600)
    assert h.state == "WATCH"
    assert rate <= 0.2, f"{rate:.3f} share ops/s"
    assert probes.calls <= 600 / 10 + 1, f"{probes.calls} API probes behind the VIP in 600 s"


def test_a_watching_control_node_costs_at_most_1_op_per_second(tmp_path: Path) -> None:
    h = watching_control(tmp_path)
    me = EtcdMember(2, "control1", ("https://10.0.0.22:2380",), ("https://10.0.0.22:2379",))
    h.probes.etcd = LocalView(members=(me,), member_id=2, raft_index=7, quorum=True)
    rate = run_for(h, 600)
    assert h.state == "WATCH"
    assert rate <= 1.0, f"{rate:.3f} share ops/s"


def test_a_control_node_heartbeats_fast_enough_for_its_lease(tmp_path: Path) -> None:
    t = Timeouts()
    assert t.heartbeat_every_s("control", steady=True) * 3 <= t.lease_ttl_s
    short = Timeouts(lease_ttl_s=4, heartbeat_interval_s=1)
    assert short.heartbeat_every_s("control", steady=True) <= 4 / 3
    assert t.heartbeat_every_s("control", steady=False) == t.heartbeat_interval_s
    assert t.liveness_ttl_s("control") == t.lease_ttl_s
    assert t.liveness_ttl_s("worker") >= 2 * t.heartbeat_every_s("worker", steady=True)


def test_a_watching_control_node_heartbeats_fast_while_the_api_is_silent(tmp_path: Path) -> None:
    h = watching_control(tmp_path)
    h.agent.silence = Silence(since=h.clock.now)
    assert h.agent.heartbeat_due(h.clock.now - h.cfg.timeouts.heartbeat_interval_s, "watch")
    h.agent.silence = None
    assert not h.agent.heartbeat_due(h.clock.now - h.cfg.timeouts.heartbeat_interval_s, "watch")
    assert h.agent.heartbeat_due(h.clock.now, "join"), "a new phase is reported at once"


def test_a_watching_worker_reads_the_share_at_once_when_the_api_falls_silent(tmp_path: Path) -> None:
    h = joined_worker(tmp_path)
    h.probes.node = True
    h.cycle()
    ShareStore(h.cfg.share.path, "default", "operator").rebuild("ek8s reset")
    h.probes.api = False
    h.cycle()  # the API is silent: noticed by this cycle, which used the cached snapshot
    assert h.cycle() == "generation 2 replaced 1; resetting to follow it"


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_follow_backoff_grows_to_its_cap_with_jitter(draw: float) -> None:
    waits = [follow_backoff_s(t, 0.2, 2.0, lambda: draw) for t in (0, 2, 4, 6, 8, 60)]
    assert waits == sorted(waits)
    assert all(0.1 <= w <= 2.0 for w in waits)
    assert waits[-1] == pytest.approx(2.0 * (0.5 + 0.5 * draw))


def test_100_workers_waiting_for_leader_ready_cost_less_than_100_ops_per_second(tmp_path: Path) -> None:
    leader = ShareStore(tmp_path / "share", "default", "control0")
    leader.ensure()
    _, action, _ = leader.attempt_leadership("10.0.0.21", "boot-control0", rule_for("control", "control0", "b", 30))
    assert action == "lead"  # a leader runs kubeadm init: the generation is not ready
    rng = random.Random(13)
    total = 0.0
    for i in range(100):
        h = Harness(tmp_path, f"worker{i}", role="worker")
        h.agent.jitter = rng.random
        h.cycle()
        assert h.state == "FOLLOW"
        total += run_for(h, 60)
        assert h.state == "FOLLOW"
    assert total < 100, f"{total:.1f} share ops/s for 100 waiting workers"


def test_joining_and_waiting_workers_probe_the_api_at_most_once_a_second(tmp_path: Path) -> None:
    h = joined_worker(tmp_path)  # AWAIT_NODE
    for draw in (0.0, 0.999):
        h.agent.jitter = lambda d=draw: d  # type: ignore[misc]
        assert 1.0 <= h.agent.cycle_s() <= 2.0
    control = watching_control(tmp_path / "c")
    assert control.agent.cycle_s() == 1.0  # control nodes: CYCLE_S
