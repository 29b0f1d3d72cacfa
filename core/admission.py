"""Worker join admission: how many workers may join at once, adapted to the control plane.

A window ``w`` (a float; ``int(w)`` workers hold a join slot at once) kept on the share beside
the worker join slots (:meth:`core.share.ShareStore.try_worker_join_slot`,
:meth:`core.share.ShareStore.worker_join_signal`), changed by the workers' own observations:

* **increase**: ``w + 1`` for each admitted worker whose ``/readyz`` behind the VIP answered
  200 within :data:`SLOW_READYZ_S` before it starts its join ("the control plane took one
  more"), and for each join that succeeded within the slow-join limit. As in TCP's slow start
  (RFC 5681, section 3.1: one segment per ACK) the window can at most double per look of the
  waiting workers, so a healthy control plane admits a burst of 30 within a few looks;
* **decrease**: ``max(floor, w / 2)`` on each distress signal (the API server's own: a 429 Too
  Many Requests, a 5xx, no answer, ``/readyz`` slower than :data:`SLOW_READYZ_S`; or a join
  that failed or took longer than the slow-join limit), at most once per
  :data:`DECREASE_EVERY_S`: the workers that saw the same overload together halve it once, as
  TCP halves once per round trip (RFC 5681, section 3.1, after a loss), not once per worker;
* **floor** :data:`FLOOR` (joins never stop) and **ceiling** the operator's
  ``kubernetes.worker_join_concurrency`` (1000 unless set); a new generation starts at
  :data:`INITIAL` (the fixed bound that kept the 2-core lab's emulated API servers healthy at
  3 + 100 with 0 s joins, docs/benchmarks.md), clamped to the ceiling. With
  ``kubernetes.worker_join_admission: fixed`` the window starts at the ceiling and nobody
  reports a signal: the ceiling is the pace, as before this module.

Admitted workers keep their slots when the window shrinks (nothing is taken back); no new one
is admitted until the holders are fewer than ``int(w)``. A worker that crashes while it holds
a slot sends no signal: the window is unchanged and its slot counts until
``timeouts.worker_join_slot_s`` (120 s) has passed.

Pure functions of the window and the clock: unit-tested in ``tests/unit/test_admission.py``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

INITIAL = 10.0  # the window of a new generation (slots), before the ceiling
FLOOR = 2.0  # the window never goes below this many slots
DECREASE_EVERY_S = 5.0  # at most one halving this often (seconds, the nodes' clocks)
SLOW_READYZ_S = 0.5  # a /readyz answer slower than this is distress (HAProxy's check timeout)


class Signal(enum.Enum):
    """What a worker saw that changes the window: one increase, the rest distress."""

    HEALTHY = "healthy"  # admitted and /readyz answered 200 fast; or the join succeeded in time
    THROTTLED = "throttled"  # /readyz answered 429 Too Many Requests
    SERVER_ERROR = "server_error"  # /readyz answered 5xx (503 while not ready, 500...)
    NO_ANSWER = "no_answer"  # /readyz did not answer within its timeout
    SLOW_READYZ = "slow_readyz"  # /readyz answered 200, later than SLOW_READYZ_S
    JOIN_FAILED = "join_failed"  # the join (or its first Node Ready) failed
    SLOW_JOIN = "slow_join"  # the join succeeded after the slow-join limit

    @property
    def distress(self) -> bool:
        """Every signal but :attr:`HEALTHY` halves the window."""
        return self is not Signal.HEALTHY


def readyz_signal(status: int | None, latency_s: float) -> Signal:
    """The signal of one ``GET /readyz`` behind the VIP: ``status`` is the HTTP status (None:
    no answer, a refused connection or a TLS failure), ``latency_s`` the seconds it took."""
    if status is None:
        return Signal.NO_ANSWER
    if status == 429:
        return Signal.THROTTLED
    if status >= 500:
        return Signal.SERVER_ERROR
    if status != 200:
        return Signal.SERVER_ERROR  # kube-apiserver's /readyz answers 200 or 500; anything else is not ready
    return Signal.SLOW_READYZ if latency_s > SLOW_READYZ_S else Signal.HEALTHY


@dataclass(frozen=True)
class Window:
    """The admission window: ``size`` slots (a float, >= :data:`FLOOR`) and when it was last
    halved (``decreased_at``, Unix seconds; 0 for never)."""

    size: float = INITIAL
    decreased_at: float = 0.0

    @staticmethod
    def start(ceiling: int, initial: float = INITIAL) -> Window:
        """A new generation's window: ``initial`` clamped to ``[FLOOR, ceiling]``."""
        return Window(clamp(initial, ceiling))

    def slots(self, ceiling: int) -> int:
        """How many workers may hold a join slot at once: ``int(size)`` within ``[1, ceiling]``."""
        return max(1, min(int(clamp(self.size, ceiling)), ceiling))

    def after(self, signal: Signal, now: float, ceiling: int) -> Window:
        """The window after ``signal`` seen at ``now`` (Unix seconds): ``+1`` for
        :attr:`Signal.HEALTHY` up to ``ceiling``; halved, not below :data:`FLOOR`, for a
        distress signal unless the last halving is younger than :data:`DECREASE_EVERY_S`."""
        if not signal.distress:
            return Window(clamp(self.size + 1.0, ceiling), self.decreased_at)
        if now - self.decreased_at < DECREASE_EVERY_S:
            return Window(clamp(self.size, ceiling), self.decreased_at)
        return Window(clamp(self.size / 2.0, ceiling), now)


def clamp(size: float, ceiling: int) -> float:
    """``size`` within ``[FLOOR, ceiling]`` (a ceiling below the floor wins: the operator's)."""
    return max(min(FLOOR, float(ceiling)), min(size, float(ceiling)))
