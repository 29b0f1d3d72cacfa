"""The agent's states and the one background job a cycle can observe and cancel.

The agent (:mod:`leader.agent`) is always in exactly one :class:`State`; each cycle reads one
snapshot of the share, checks the generation in one place, and runs the handler of its state,
which returns the sentence it logs. Long actions (kubeadm init, join, reset, publishing) run
as a :class:`Job` on a single background thread, so a cycle never blocks on them: it sees them
running, finished or failed, and can abort them when the generation moves on (the one time
a cycle waits for a job, bounded by :meth:`Jobs.cancel`); a job that ends wakes the loop at once.

The states, and what moves the agent between them (docs/architecture.md has the diagram)::

    ELECT ---lead---> LEAD --init done--> PUBLISH --ready--> AWAIT_NODE --Ready--> WATCH
      |  \\--follow--> FOLLOW --ready or lease expired--> ELECT                       |
      |   \\-join---> JOIN --joined--> AWAIT_NODE                                     |
      |                                                      API silent, 'wait' --> LOST
    RESET <-- a failure (then ELECT or JOIN after a backoff), a deposed leader, a new generation
    FAILED <-- every init or join attempt failed (exit 1); STOPPED <-- SIGTERM (exit 0)
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any


class State(enum.Enum):
    """Where the agent is. The value is the ``phase`` in heartbeats, logs and ``ek8s status``."""

    ELECT = "elect"  # run the election under the share's lock
    FOLLOW = "follow"  # another node leads; wait for ready, or for its lease to run out
    LEAD = "lead"  # this node leads: kubeadm init in the background
    PUBLISH = "publish"  # init done: API behind the VIP, join material, manifests, ready
    JOIN = "join"  # the generation is ready: live API, join slot, kubeadm join in the background
    AWAIT_NODE = "await-node"  # init or join done: this node's Node must become Ready
    WATCH = "watch"  # steady state: follow the generation, judge the API, supervise Phylactery
    LOST = "lost"  # the API stayed silent past the grace period and on_cluster_lost is 'wait'
    RESET = "reset"  # kubeadm reset in the background, then a backoff, then ELECT or JOIN
    FAILED = "failed"  # every attempt failed: the agent exits 1 (systemd restarts it)
    STOPPED = "stopped"  # SIGTERM: the agent released what it held and exits 0


# How long a cycle waits before the next one in each state (seconds; None: poll_interval_s).
# A cycle that changed the state runs the next one at once.
CYCLE_S: dict[State, float | None] = {
    State.PUBLISH: 0.05,  # the API behind the VIP is probed this often right after init
    State.WATCH: 1.0,
    State.LOST: 1.0,
}


@dataclass
class Job:
    """One long action on the background thread: ``name`` (``init``, ``join``, ``reset``,
    ``publish``), the future of its result, and when it started (monotonic seconds)."""

    name: str
    future: Future[Any]
    started: float

    @property
    def running(self) -> bool:
        """Whether the action has not finished yet."""
        return not self.future.done()

    def error(self) -> BaseException | None:
        """The exception the action raised, or None (call only once it is done)."""
        return self.future.exception()

    def result(self) -> Any:
        """The action's return value (raises what it raised; call once it is done)."""
        return self.future.result()


@dataclass
class Jobs:
    """At most one :class:`Job` at a time on ``executor`` (a one-thread pool on a node; tests
    pass an executor whose jobs run when the test says). ``abort`` is called to stop a running
    job (the driver kills its command)."""

    executor: Executor
    abort: Callable[[], None]
    clock: Callable[[], float] = time.monotonic
    on_done: Callable[[], None] | None = None  # called from the job's thread when it ends
    current: Job | None = field(default=None)

    def start(self, name: str, action: Callable[[], Any]) -> Job:
        """Submit ``action``; raises ``RuntimeError`` if a job is still running."""
        if self.current is not None and self.current.running:
            raise RuntimeError(f"job {self.current.name} still running; cannot start {name}")
        future = self.executor.submit(action)
        self.current = Job(name, future, self.clock())
        if self.on_done is not None:
            done = self.on_done
            future.add_done_callback(lambda _: done())
        return self.current

    def take(self) -> Job | None:
        """The finished job, handed over once (the slot is free afterwards); None while
        nothing finished."""
        job = self.current
        if job is None or job.running:
            return None
        self.current = None
        return job

    @property
    def running(self) -> Job | None:
        """The job still running, or None."""
        job = self.current
        return job if job is not None and job.running else None

    def cancel(self, wait_s: float = 10.0) -> None:
        """Abort the running job, wait up to ``wait_s`` seconds for it to end, forget it."""
        job = self.current
        if job is None:
            return
        if job.running:
            job.future.cancel()
            self.abort()
            deadline = self.clock() + wait_s
            while job.running and self.clock() < deadline:
                time.sleep(0.05)
        self.current = None
