"""Supervised loops: a loop that raises is logged, counted, backed off and started again.

One :class:`Supervisor` per process (the agent, Phylactery) runs every background loop of that
process: asyncio tasks with :meth:`Supervisor.run` (Phylactery's controllers), threads with
:meth:`Supervisor.run_thread` (the agent's heartbeat). When a loop's body raises anything but
cancellation:

* the exception is logged with its traceback (``phase=supervisor``, ``loop=<name>``);
* ``ek8s_loop_failures_total{process, loop}`` grows by one (:meth:`Supervisor.collect`, a
  ``prometheus_client`` collector);
* the loop is *down* until it starts again, after a backoff that doubles with every failure in
  a row (``first_backoff_s``, 1 s, up to ``max_backoff_s``, 60 s; a loop that ran longer than
  ``max_backoff_s`` before it failed starts over at ``first_backoff_s``). :meth:`down` names the
  loops that are down, so Phylactery's ``/healthz`` can answer 503 and say which.

A body that returns has finished its work (a one-shot, or a loop that is turned off): it is
neither down nor started again. The pattern is Erlang/OTP's supervisor (restart with a
restart intensity) and systemd's ``Restart=on-failure`` with ``RestartSec``, inside one process
so that a loop's death is seen by the process's health check instead of going unnoticed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from core.logs import get_logger

log = get_logger("ek8s.supervisor", "supervisor")


async def _asyncio_sleep(seconds: float) -> None:
    """``asyncio.sleep``, imported when a loop first backs off (the node agent's threads,
    which import this module too, never load asyncio)."""
    import asyncio

    await asyncio.sleep(seconds)


@dataclass
class LoopStatus:
    """One supervised loop: ``failures`` so far, ``in_a_row`` since it last ran long enough,
    ``down_since`` (the supervisor's clock, seconds) and ``error`` while it waits to start
    again, ``done`` once its body returned."""

    name: str
    failures: int = 0
    in_a_row: int = 0
    started_at: float = 0.0
    down_since: float | None = None
    error: str = ""
    done: bool = False


class Supervisor(Collector):
    """The loops of one ``process`` (``agent`` or ``phylactery``: the metric's label).
    ``clock`` is monotonic seconds; thread-safe. The backoff is waited out by :attr:`sleep`
    (asyncio loops) and :attr:`wait` (threads: ``wait(stop, seconds)``, true when stopped),
    which tests replace to hold a loop down while they look."""

    def __init__(
        self,
        process: str,
        *,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.process = process
        self.first_backoff_s = first_backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self._lock = threading.Lock()
        self._loops: dict[str, LoopStatus] = {}
        self.sleep: Callable[[float], Awaitable[None]] = _asyncio_sleep
        self.wait: Callable[[threading.Event, float], bool] = lambda stop, seconds: stop.wait(seconds)

    # -- state ------------------------------------------------------------------------
    def _status(self, name: str) -> LoopStatus:
        return self._loops.setdefault(name, LoopStatus(name))

    def register(self, name: str) -> None:
        """Make ``name`` known (its failure counter is exported as 0 before it ever fails)."""
        with self._lock:
            self._status(name)

    def _started(self, name: str) -> None:
        with self._lock:
            st = self._status(name)
            st.started_at, st.down_since, st.error, st.done = self.clock(), None, "", False

    def _finished(self, name: str) -> None:
        with self._lock:
            self._status(name).done = True

    def failed(self, name: str, err: BaseException) -> float:
        """Record that loop ``name`` raised ``err`` (logged with its traceback, counted, the
        loop down). Returns the backoff in seconds before it starts again."""
        with self._lock:
            st = self._status(name)
            now = self.clock()
            st.in_a_row = 1 if now - st.started_at > self.max_backoff_s else st.in_a_row + 1
            st.failures += 1
            st.down_since, st.error = now, f"{type(err).__name__}: {err}"
            delay = min(self.max_backoff_s, self.first_backoff_s * 2 ** (st.in_a_row - 1))
            failures = st.failures
        log.error(
            f"loop {name} failed; starting it again in {delay:g}s",
            exc_info=(type(err), err, err.__traceback__),
            extra={"loop": name, "failures": failures},
        )
        return delay

    def down(self) -> dict[str, str]:
        """The loops that failed and wait to start again: name -> the exception, sorted."""
        with self._lock:
            return {n: st.error for n, st in sorted(self._loops.items()) if st.down_since is not None}

    def failures(self) -> dict[str, int]:
        """Failures so far by loop name."""
        with self._lock:
            return {n: st.failures for n, st in sorted(self._loops.items())}

    # -- running ----------------------------------------------------------------------
    async def run(self, name: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run the coroutine function ``body`` as loop ``name`` until it returns or the task is
        cancelled; start it again after every exception, after the backoff."""
        import asyncio  # already loaded in an event loop; the agent's threads do not pay for it

        self.register(name)
        while True:
            self._started(name)
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                delay = self.failed(name, err)
            else:
                self._finished(name)
                return
            await self.sleep(delay)

    def run_thread(self, name: str, body: Callable[[], None], stop: threading.Event) -> None:
        """Run ``body`` as loop ``name`` in this thread until it returns or ``stop`` is set;
        start it again after every exception (waiting out the backoff on ``stop``)."""
        self.register(name)
        while not stop.is_set():
            self._started(name)
            try:
                body()
            except Exception as err:
                delay = self.failed(name, err)
            else:
                self._finished(name)
                return
            if self.wait(stop, delay):
                return

    # -- metrics ----------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        """``ek8s_loop_failures_total{process, loop}`` (docs/metrics.md)."""
        family = CounterMetricFamily(
            "ek8s_loop_failures",
            "Exceptions that ended a background loop, which was then started again after a backoff",
            labels=["process", "loop"],
        )
        for name, n in self.failures().items():
            family.add_metric([self.process, name], n)
        yield family
