"""How the drivers run kubeadm and k3s (core.drivers.base.CommandRunner): each line of output
reaches the log while the tool still runs, with tokens and certificate keys redacted; a hung
tool is killed at the timeout with what it printed in the error."""

from __future__ import annotations

import logging
import queue
import stat
import threading
from pathlib import Path

import pytest

from core.drivers.base import CommandRunner, DriverError
from core.drivers.kubeadm import redact
from core.logs import get_logger

TOKEN = "abcdef.0123456789abcdef"
CERT_KEY = "f" * 64


class Lines(logging.Handler):
    """Every record of the runner's logger, as it is emitted, into a queue."""

    def __init__(self) -> None:
        super().__init__()
        self.q: queue.Queue[logging.LogRecord] = queue.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.q.put(record)

    def next_output(self, timeout: float = 10.0) -> str:
        while True:
            record = self.q.get(timeout=timeout)
            if getattr(record, "source", None) == "kubeadm":
                return record.getMessage()


@pytest.fixture
def lines() -> Lines:
    handler = Lines()
    logger = logging.getLogger("ek8s.test.runner")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def fake_tool(tmp_path: Path, body: str) -> Path:
    """A stand-in ``kubeadm``: a shell script in ``tmp_path``."""
    tool = tmp_path / "kubeadm"
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


def runner(timeout_s: float = 30.0) -> CommandRunner:
    return CommandRunner("kubeadm", timeout_s, redact, get_logger("ek8s.test.runner", "kubeadm"))


def test_lines_reach_the_log_before_the_tool_exits_and_secrets_are_redacted(tmp_path: Path, lines: Lines) -> None:
    go_on = tmp_path / "go-on"
    # Prints two lines, then waits until the test has seen them in the log: the tool cannot
    # exit before the runner logged its first lines, whatever the machine's speed.
    tool = fake_tool(
        tmp_path,
        f'echo "[preflight] Running pre-flight checks with token {TOKEN}"\n'
        f'echo "[upload-certs] Using certificate key: {CERT_KEY}"\n'
        f'while [ ! -e "{go_on}" ]; do sleep 0.05; done\n'
        'echo "This node has joined the cluster"\n',
    )
    result: dict[str, object] = {}
    r = runner()
    t = threading.Thread(target=lambda: result.update(out=r.run([str(tool), "join"])))
    t.start()
    try:
        first, second = lines.next_output(), lines.next_output()
        assert t.is_alive(), "the tool is still waiting: the lines were logged while it ran"
        assert first == "[preflight] Running pre-flight checks with token abcdef.<redacted>"
        assert second == "[upload-certs] Using certificate key: <redacted>"
    finally:
        go_on.touch()
        t.join(30)
    assert lines.next_output() == "This node has joined the cluster"
    out = str(result["out"])
    assert TOKEN not in out and CERT_KEY not in out
    assert out.splitlines()[-1] == "This node has joined the cluster"


def test_a_hung_tool_is_killed_at_the_timeout_and_the_error_keeps_its_output(tmp_path: Path, lines: Lines) -> None:
    tool = fake_tool(tmp_path, f'echo "[discovery] token {TOKEN}"\nexec sleep 600\n')
    with pytest.raises(DriverError) as err:
        runner(timeout_s=1.0).run([str(tool), "join"])
    assert err.value.returncode == -1
    assert "timed out after 1.0s" in str(err.value)
    assert "[discovery] token abcdef.<redacted>" in str(err.value) and TOKEN not in str(err.value)
    assert lines.next_output(timeout=1) == "[discovery] token abcdef.<redacted>"


def test_a_failure_names_the_exit_code_and_the_last_lines(tmp_path: Path, lines: Lines) -> None:
    tool = fake_tool(tmp_path, 'echo "[ERROR DirAvailable--var-lib-etcd]" >&2; exit 1\n')
    with pytest.raises(DriverError) as err:
        runner().run([str(tool), "join"])
    assert err.value.returncode == 1
    assert "DirAvailable--var-lib-etcd" in str(err.value)


def test_abort_from_another_thread_kills_the_tool(tmp_path: Path, lines: Lines) -> None:
    tool = fake_tool(tmp_path, 'echo "[kubelet-start] waiting"\nexec sleep 600\n')
    r = runner()
    errors: list[DriverError] = []

    def run() -> None:
        try:
            r.run([str(tool), "join"])
        except DriverError as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    assert lines.next_output() == "[kubelet-start] waiting"
    r.abort()
    t.join(30)
    assert not t.is_alive() and errors and "aborted by the agent" in str(errors[0])


def test_a_missing_executable_is_a_driver_error(tmp_path: Path) -> None:
    with pytest.raises(DriverError) as err:
        runner().run([str(tmp_path / "no-such-kubeadm"), "version"])
    assert err.value.returncode == 127
