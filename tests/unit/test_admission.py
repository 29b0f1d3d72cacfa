"""The worker join admission window (core/admission.py) and its file on the share: increase,
decrease per distress signal (at most once per DECREASE_EVERY_S), the floor, the operator's
ceiling, a crashed holder, and the agent's wiring (a healthy admission grows the window, an
injected 429 halves it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from core.admission import DECREASE_EVERY_S, FLOOR, INITIAL, SLOW_READYZ_S, Signal, Window, readyz_signal
from core.share import ShareStore
from tests.unit.agent_fakes import Harness, ready_generation

DISTRESS = [s for s in Signal if s is not Signal.HEALTHY]


def test_a_new_window_starts_at_the_initial_size_within_the_ceiling() -> None:
    assert Window.start(100).size == INITIAL
    assert Window.start(4).size == 4.0 and Window.start(4).slots(4) == 4
    assert Window.start(1).slots(1) == 1, "an operator's ceiling of 1 beats the floor"


def test_each_healthy_signal_adds_one_slot_up_to_the_ceiling() -> None:
    w = Window.start(12)
    w = w.after(Signal.HEALTHY, 0.0, 12)
    assert (w.size, w.slots(12)) == (INITIAL + 1, 11)
    for _ in range(5):
        w = w.after(Signal.HEALTHY, 0.0, 12)
    assert w.slots(12) == 12, "never above the operator's ceiling"


@pytest.mark.parametrize("signal", DISTRESS, ids=[s.value for s in DISTRESS])
def test_each_distress_signal_halves_the_window(signal: Signal) -> None:
    w = Window(16.0).after(signal, 1000.0, 100)
    assert (w.size, w.decreased_at) == (8.0, 1000.0)


def test_one_halving_per_interval_however_many_workers_saw_the_distress() -> None:
    w = Window(32.0).after(Signal.THROTTLED, 1000.0, 100)
    for _ in range(10):  # ten workers saw the same overload
        w = w.after(Signal.SERVER_ERROR, 1000.0 + DECREASE_EVERY_S / 2, 100)
    assert w.size == 16.0
    w = w.after(Signal.NO_ANSWER, 1000.0 + DECREASE_EVERY_S, 100)
    assert w.size == 8.0, "the next interval halves again"


def test_the_window_never_goes_below_the_floor() -> None:
    w = Window(3.0)
    for k in range(10):
        w = w.after(Signal.JOIN_FAILED, 1000.0 + k * DECREASE_EVERY_S, 100)
    assert w.size == FLOOR and w.slots(100) == int(FLOOR)


@pytest.mark.parametrize(
    ("status", "latency", "signal"),
    [
        (200, 0.01, Signal.HEALTHY),
        (200, SLOW_READYZ_S + 0.1, Signal.SLOW_READYZ),
        (429, 0.01, Signal.THROTTLED),
        (500, 0.01, Signal.SERVER_ERROR),
        (503, 0.01, Signal.SERVER_ERROR),
        (None, 1.0, Signal.NO_ANSWER),
    ],
)
def test_readyz_answers_map_to_signals(status: int | None, latency: float, signal: Signal) -> None:
    assert readyz_signal(status, latency) is signal


def test_the_share_window_bounds_the_slots_and_survives_takes_and_releases(tmp_path: Path) -> None:
    stores = [ShareStore(tmp_path, "default", f"worker{i}") for i in range(5)]
    stores[0].ensure()
    stores[0].worker_join_signal(Signal.THROTTLED, 100)  # 10 -> 5
    stores[0].worker_join_signal(Signal.THROTTLED, 100)  # within the interval: stays 5
    assert stores[0].worker_join_window(100).size == INITIAL / 2
    for s in stores:
        assert s.try_worker_join_slot(f"b-{s.node}", 100, 120) is None
    late = ShareStore(tmp_path, "default", "worker9")
    assert late.try_worker_join_slot("b9", 100, 120) == (5, 5), "the window, not the ceiling, bounds the slots"
    stores[0].release_worker_join_slot()
    assert stores[1].worker_join_window(100).size == INITIAL / 2, "a release keeps the window"
    stores[1].worker_join_signal(Signal.HEALTHY, 100)  # 5 -> 6
    assert late.try_worker_join_slot("b9", 100, 120) is None
    raw = json.loads((tmp_path / "default/nodes/slots/worker_join_slots.json").read_text())
    assert raw["window"] == 6.0 and raw["decreased_at"] > 0
    assert late.try_worker_join_slot("b9", 3, 120) is None, "a holder keeps its slot when the ceiling drops"
    assert ShareStore(tmp_path, "default", "worker8").try_worker_join_slot("b8", 3, 120) == (5, 3)


def test_a_crashed_holder_costs_its_slot_for_the_hold_time_and_leaves_the_window(tmp_path: Path) -> None:
    crashed, waiting = ShareStore(tmp_path, "default", "worker0"), ShareStore(tmp_path, "default", "worker1")
    crashed.ensure()
    assert crashed.try_worker_join_slot("b0", 1, 120) is None  # then it dies: no release, no signal
    assert waiting.try_worker_join_slot("b1", 1, 120) == (1, 1)
    assert waiting.worker_join_window(1).size == 1.0
    time.sleep(0.05)
    assert waiting.try_worker_join_slot("b1", 1, 0.04) is None, "older than the hold time it counts no more"


def test_an_invalid_window_is_reported_and_a_new_window_used(tmp_path: Path) -> None:
    s = ShareStore(tmp_path, "default", "worker0")
    s.ensure()
    (tmp_path / "default/nodes/slots/worker_join_slots.json").write_text('{"holders": {}, "window": -3}')
    assert s.worker_join_window(100).size == INITIAL
    assert s.try_worker_join_slot("b0", 100, 120) is None


def test_the_agent_grows_the_window_on_a_healthy_admission_and_halves_it_on_a_429(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    first, second = (Harness(tmp_path, f"worker{i}", role="worker") for i in range(2))
    for h in (first, second):
        h.probes.api = True
        h.cycle()
    assert first.cycle() == "running kubeadm join as worker (attempt 1/3)"
    assert first.store.worker_join_window(1000).size == INITIAL + 1
    first.finish_jobs()
    assert first.cycle() == "kubeadm join succeeded"
    assert first.store.worker_join_window(1000).size == INITIAL + 2, "a join that succeeded in time grows it"
    second.probes.readyz = (429, 0.01)
    assert second.cycle().startswith("the API of generation 1 does not answer")
    window = second.store.worker_join_window(1000)
    assert window.size == (INITIAL + 2) / 2
    assert second.events("join_admission")[-1]["signal"] == "throttled"
    second.probes.readyz = None
    assert second.cycle() == "running kubeadm join as worker (attempt 1/3)"
    assert second.store.worker_join_window(1000) == window, "one report per admission"


def test_a_failed_worker_join_halves_the_window(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "worker0", role="worker")
    h.probes.api = True
    h.cycle()
    h.driver.fail.add("join")
    assert h.cycle() == "running kubeadm join as worker (attempt 1/3)"
    h.finish_jobs()
    assert h.cycle().startswith("join attempt 1/3 failed")
    assert h.store.worker_join_window(1000).size == (INITIAL + 1) / 2


def test_fixed_admission_paces_at_the_ceiling_and_reports_nothing(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    settings = {"kubernetes__worker_join_concurrency": 3, "kubernetes__worker_join_admission": "fixed"}
    h = Harness(tmp_path, "worker0", role="worker", **settings)
    h.probes.api = True
    h.cycle()
    assert h.cycle() == "running kubeadm join as worker (attempt 1/3)"
    assert h.store.worker_join_window(3).size == 3.0
    h.finish_jobs()
    h.cycle()
    assert h.store.worker_join_window(3) == Window(3.0), "no signal moves a fixed window"


def test_a_join_slower_than_half_the_slot_time_halves_the_window(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "worker0", role="worker", timeouts__worker_join_slot_s=20)
    h.probes.api = True
    h.cycle()
    assert h.cycle() == "running kubeadm join as worker (attempt 1/3)"
    h.clock.advance(10.5)  # the join took more than 20 / 2 s
    h.finish_jobs()
    assert h.cycle() == "kubeadm join succeeded"
    assert h.store.worker_join_window(1000).size == (INITIAL + 1) / 2
    assert h.events("join_admission")[-1]["signal"] == "slow_join"
