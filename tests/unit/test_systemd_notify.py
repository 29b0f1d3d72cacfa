"""The agent speaks systemd's notification protocol (core.notify over a real AF_UNIX datagram
socket, as systemd's NOTIFY_SOCKET is): READY=1 after boot, STATUS= with the state and the
last sentence, WATCHDOG=1 from the loop and never from a hung cycle, STOPPING=1 on SIGTERM.
The unit itself, on a machine, is in tests/lab/test_machines.py."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.notify import STATUS_MAX, ServiceNotifier
from phylactery.app import keep_systemd_told
from tests.unit.agent_fakes import FakeProbes
from tests.unit.test_agent_states import joined_worker
from tests.unit.test_phylactery_http import make_phylactery


class NotifySocket:
    """What systemd's side of NOTIFY_SOCKET receives, one datagram per message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def recv(self, timeout: float = 10.0) -> str | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode("latin-1")
        except TimeoutError:
            return None

    def until(self, field: str, timeout: float = 10.0) -> list[str]:
        """Every message up to and including the first that has ``field`` (``READY=1`` ...)."""
        seen = []
        while True:
            msg = self.recv(timeout)
            assert msg is not None, f"no {field} within {timeout}s; got {seen}"
            seen.append(msg)
            if field in msg.split("\n"):
                return seen

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify")
    yield s
    s.close()


def notifier(sock: NotifySocket, watchdog_s: float | None = None) -> ServiceNotifier:
    env = {"NOTIFY_SOCKET": str(sock.path)}
    if watchdog_s:
        env |= {"WATCHDOG_USEC": str(int(watchdog_s * 1e6)), "WATCHDOG_PID": str(os.getpid())}
    return ServiceNotifier(env)


def test_outside_systemd_nothing_is_sent_and_nothing_fails() -> None:
    n = ServiceNotifier({})
    assert not n.enabled and n.watchdog_s is None and n.ping_every_s is None
    n.ready("x")
    n.status("x")
    n.watchdog()
    n.stopping("x")


def test_the_variables_are_taken_out_of_the_environment(systemd: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "180000000", "WATCHDOG_PID": str(os.getpid())}
    n = ServiceNotifier(env)
    assert env == {}, "kubeadm and k3s, started by the agent, must not notify in its name"
    assert n.enabled and n.watchdog_s == 180.0 and n.ping_every_s == 90.0
    assert "NOTIFY_SOCKET" not in os.environ


def test_a_watchdog_meant_for_another_process_is_ignored(systemd: NotifySocket) -> None:
    n = ServiceNotifier({"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_s is None
    n.watchdog()
    assert systemd.recv(timeout=0.2) is None


def test_status_is_one_bounded_line(systemd: NotifySocket) -> None:
    n = notifier(systemd)
    n.status("join attempt 1/3 failed: kubeadm join exited 1:\nerror execution phase " + "x" * 1000 + " → é")
    msg = systemd.recv()
    assert msg is not None and msg.startswith("STATUS=join attempt 1/3 failed: kubeadm join exited 1: error")
    assert "\n" not in msg and len(msg) == len("STATUS=") + STATUS_MAX and msg.endswith("...")


class StuckProbes(FakeProbes):
    """node_ready() hangs until released, like a probe on a hard-mounted share that hangs."""

    def __init__(self, base: FakeProbes) -> None:
        super().__init__()
        self.__dict__.update(vars(base))
        self.release = threading.Event()

    def node_ready(self) -> bool | None:
        self.release.wait(30)
        return True


@pytest.mark.timeout(60)
def test_the_agent_says_ready_status_and_feeds_the_watchdog_only_from_a_live_loop(
    tmp_path: Path, systemd: NotifySocket
) -> None:
    h = joined_worker(tmp_path)  # AWAIT_NODE: its next cycle asks whether its Node is Ready
    probes = StuckProbes(h.agent.probes)  # type: ignore[arg-type]
    h.agent.probes = probes
    h.agent.notifier = notifier(systemd, watchdog_s=0.2)  # ping every 0.1 s
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(h.agent.run()))
    t.start()
    try:
        ready = systemd.until("READY=1")[-1]
        assert "STATUS=await-node, generation 1: booted" in ready.split("\n")
        # The first cycle hangs in node_ready(): no WATCHDOG=1 while it hangs, so systemd
        # would kill the agent after WatchdogSec.
        assert systemd.recv(timeout=1.0) is None
        probes.release.set()
        got = systemd.until("STATUS=watch, generation 1: node worker0 is Ready")
        assert "WATCHDOG=1" in got
        systemd.until("STATUS=watch, generation 1: no action: generation 1 is healthy")
        # In WATCH a worker cycles every 10 s: the wait between cycles keeps feeding the watchdog.
        pings = [systemd.recv(timeout=1.0) for _ in range(4)]
        assert pings == ["WATCHDOG=1"] * 4
    finally:
        probes.release.set()
        h.agent.stop()
        t.join(20)
    stopping = systemd.until("STOPPING=1")[-1]
    assert "STATUS=watch, generation 1: stopping (SIGTERM)" in stopping.split("\n")
    assert codes == [0]


def test_phylactery_feeds_its_watchdog_from_the_event_loop_and_says_what_it_serves(
    tmp_path: Path, systemd: NotifySocket
) -> None:
    p = make_phylactery(tmp_path)
    p.generation = 2
    n = notifier(systemd, watchdog_s=0.2)

    async def run() -> None:
        task = asyncio.create_task(keep_systemd_told(p, n))
        await asyncio.sleep(0.35)
        p.started, p.controllers.reconcile.last_result = True, {"members": ["control0", "control1"]}
        await asyncio.sleep(0.35)
        task.cancel()

    asyncio.run(run())
    got = []
    while (msg := systemd.recv(timeout=0.1)) is not None:
        got.append(msg)
    assert got[0] == "STATUS=generation 2, 0 members registered (); starting HAProxy and keepalived"
    assert "STATUS=generation 2, 2 members registered (control0, control1); HAProxy and keepalived running" in got
    assert got.count("WATCHDOG=1") >= 5, got  # every 0.1 s (half of 0.2 s)
