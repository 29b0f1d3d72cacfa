"""Supervised loops: a loop that raises is logged, counted (``ek8s_loop_failures_total``),
backed off and started again; Phylactery's ``/healthz`` answers 503 naming it meanwhile."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.share import ShareStore
from core.supervise import Supervisor
from leader.states import State
from phylactery.app import make_app
from tests.unit.agent_fakes import Harness
from tests.unit.test_metrics import samples
from tests.unit.test_phylactery_http import make_phylactery


def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_failing_loop_backs_off_doubling_and_a_finished_one_is_done() -> None:
    sup = Supervisor("phylactery", first_backoff_s=1.0, max_backoff_s=4.0)
    slept: list[float] = []
    runs = 0

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        assert sup.down() == {"reaper": f"RuntimeError: injected {runs}"}, "down while it backs off"

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs <= 4:
            raise RuntimeError(f"injected {runs}")

    sup.sleep = sleep
    asyncio.run(sup.run("reaper", body))
    assert runs == 5 and slept == [1.0, 2.0, 4.0, 4.0]
    assert sup.failures() == {"reaper": 4} and sup.down() == {}, "returned: done, not down"
    [family] = list(sup.collect())
    assert [(s.labels, s.value) for s in family.samples] == [({"process": "phylactery", "loop": "reaper"}, 4.0)]


def test_a_loop_that_ran_long_before_failing_starts_over_at_the_first_backoff() -> None:
    now = [0.0]
    sup = Supervisor("agent", first_backoff_s=1.0, max_backoff_s=60.0, clock=lambda: now[0])
    sup._started("heartbeat")
    assert sup.failed("heartbeat", RuntimeError("a")) == 1.0
    sup._started("heartbeat")
    assert sup.failed("heartbeat", RuntimeError("b")) == 2.0
    sup._started("heartbeat")
    now[0] += 61.0  # ran healthy for longer than the longest backoff
    assert sup.failed("heartbeat", RuntimeError("c")) == 1.0


def test_cancelling_a_supervised_task_is_not_a_failure() -> None:
    sup = Supervisor("phylactery")

    async def main() -> None:
        task = asyncio.create_task(sup.run("reconcile", lambda: asyncio.sleep(3600)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert sup.failures() == {"reconcile": 0} and sup.down() == {}


@pytest.mark.parametrize("loop", ["reconcile", "notify_peers", "snapshot", "reaper", "join_material"])
def test_each_phylactery_loop_is_started_again_and_healthz_fails_meanwhile(tmp_path: Path, loop: str) -> None:
    async def run() -> None:
        p = make_phylactery(tmp_path)
        p.started = True  # HAProxy and keepalived run (start() needs the daemons)
        gate, runs = asyncio.Event(), []
        controller = {
            name: c
            for name, c in zip(
                ["reconcile", "notify_peers", "snapshot", "reaper", "join_material"],
                [
                    p.controllers.reconcile,
                    p.controllers.notify,
                    p.controllers.snapshot,
                    p.controllers.reaper,
                    p.controllers.join_material,
                ],
                strict=True,
            )
        }[loop]

        async def flaky() -> None:
            runs.append(1)
            if len(runs) == 1:
                raise RuntimeError("injected")
            await asyncio.sleep(3600)  # runs again, for good

        async def held(seconds: float) -> None:
            await gate.wait()

        controller.run = flaky  # type: ignore[method-assign]
        p.supervisor.sleep = held
        async with TestClient(TestServer(make_app(p))) as client:
            assert (await client.get("/healthz")).status == 200
            p.start_loops()
            while loop not in p.supervisor.down():
                await asyncio.sleep(0.01)
            resp = await client.get("/healthz")
            assert resp.status == 503
            assert await resp.json() == {
                "ok": False,
                "node": "control0",
                "loops_down": {loop: "RuntimeError: injected"},
            }
            metrics = samples(await (await client.get("/metrics")).text())
            assert metrics[f'ek8s_loop_failures_total{{loop="{loop}",process="phylactery"}}'] == 1
            others = {n for n in ["reconcile", "notify_peers", "snapshot", "reaper"] if n != loop}
            assert all(metrics[f'ek8s_loop_failures_total{{loop="{n}",process="phylactery"}}'] == 0 for n in others)
            gate.set()
            while len(runs) < 2:
                await asyncio.sleep(0.01)
            resp = await client.get("/healthz")
            assert resp.status == 200 and await resp.json() == {"ok": True, "node": "control0"}
            await p.stop()

    asyncio.run(run())


class FlakyStore(ShareStore):
    """The real store, whose next heartbeat raises once when ``fail`` is set."""

    fail = False

    def heartbeat(self, *args: Any, **kwargs: Any) -> str | None:
        if self.fail:
            self.fail = False
            raise RuntimeError("injected")
        return super().heartbeat(*args, **kwargs)


def test_the_agents_heartbeat_thread_is_started_again_after_an_exception(tmp_path: Path) -> None:
    h = Harness(tmp_path, "control0")
    store = FlakyStore(h.store.dir.parent, "default", "control0")
    h.agent.store = store
    released = threading.Event()
    h.agent.supervisor.wait = lambda stop, seconds: released.wait() and stop.is_set()
    thread = threading.Thread(
        target=h.agent.supervisor.run_thread, args=("heartbeat", h.agent._heartbeat_loop, h.agent.stop_requested)
    )
    try:
        store.fail = True
        thread.start()
        h.agent.state = State.FOLLOW  # a new phase: a heartbeat is due
        until(lambda: "heartbeat" in h.agent.supervisor.down())
        h.agent.export_metrics(force=True)
        text = h.cfg.metrics_textfile.read_text()
        assert samples(text)['ek8s_loop_failures_total{loop="heartbeat",process="agent"}'] == 1
        released.set()  # the loop starts again and beats at once
        until(lambda: (hb := store.read_heartbeat("control0")) is not None and hb.phase == "follow")
        assert h.agent.supervisor.down() == {}
    finally:
        h.agent.stop_requested.set()
        released.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
