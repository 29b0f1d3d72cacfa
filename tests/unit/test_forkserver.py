"""The lab's fork server (lab/forkserver.py) and its client (lab/forkclient.py), as the user
running the tests: a command forked from the server gets its caller's arguments, environment,
directory, umask and streams, a session of its own, and its exit code or signal reaches the
caller; the emulated kubeadm answers the same through it as in an interpreter of its own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import forkclient

ROOT = Path(__file__).resolve().parents[2]
CLIENT = [sys.executable, "-I", "-S", forkclient.__file__]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    sock = Path(tmp_path_factory.mktemp("fork")) / "fork.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.forkserver", "--socket", str(sock), "--entry", "probe=tests.unit.forkprobe:main"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    yield sock
    proc.terminate()
    proc.wait(10)
    assert not sock.exists(), "the server removes its socket when stopped"


def run(sock: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLIENT, str(sock), *args], capture_output=True, text=True, timeout=30, **kw)  # type: ignore[call-overload]


def test_the_command_gets_its_callers_arguments_environment_directory_umask_and_streams(
    server: Path, tmp_path: Path
) -> None:
    res = run(
        server,
        "probe",
        "report",
        "an argument",
        cwd=tmp_path,
        env={**os.environ, "FORKPROBE": "from the caller"},
        preexec_fn=lambda: os.umask(0o027),
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["argv"][1:] == ["report", "an argument"]
    assert got["argv"][0].endswith("tests/unit/forkprobe.py"), "argv[0] is the file, as `python -m` makes it"
    assert got["cwd"] == str(tmp_path)
    assert got["umask"] == 0o027
    assert got["env"] == "from the caller"
    assert got["session"] == got["pid"], "the command leads a session of its own"
    assert got["comm"] == "probe", "ps and top show the tool's name"
    assert res.stderr == "to stderr\n"


@pytest.mark.parametrize(
    ("args", "code", "stderr"),
    [
        (["exit", "3"], 3, ""),
        (["exit", "0"], 0, ""),
        (["raise"], 1, "RuntimeError: the probe raised"),
        (["message"], 1, "the probe's message"),
    ],
)
def test_the_exit_code_is_the_commands(server: Path, args: list[str], code: int, stderr: str) -> None:
    res = run(server, "probe", *args)
    assert res.returncode == code
    assert stderr in res.stderr


def _sleeping(server: Path) -> tuple[subprocess.Popen[str], int]:
    client = subprocess.Popen([*CLIENT, str(server), "probe", "sleep"], stdout=subprocess.PIPE, text=True)
    assert client.stdout is not None
    child = int(client.stdout.readline())
    assert child != client.pid
    return client, child


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_signal_to_the_client_reaches_the_command_and_the_client_dies_of_it(server: Path) -> None:
    client, child = _sleeping(server)
    client.send_signal(signal.SIGTERM)
    assert client.wait(10) == -signal.SIGTERM
    assert _gone(child)


def test_a_killed_client_takes_the_command_with_it(server: Path) -> None:
    client, child = _sleeping(server)
    client.kill()
    assert client.wait(10) == -signal.SIGKILL
    assert _gone(child), "SIGKILL to the client (a timeout's killpg) stops the command too"


def test_an_unknown_tool_is_refused_with_126_and_the_reason(server: Path) -> None:
    # Repeated: the server answers and closes at once, and a client that still wrote to the
    # socket then took the closed socket for a server that does not answer (127, on a loaded
    # machine about one refusal in three).
    for _ in range(20):
        res = run(server, "nonesuch")
        assert res.returncode == forkclient.REFUSED, res.stderr
        assert "tool: 'nonesuch' is not one of kubeadm, k3s, kubelet, probe" in res.stderr


KUBEADM_CALLS = [
    ["join", "--config", "/nonexistent/join.yaml"],
    ["bogus"],
    ["reset"],
    ["token", "create"],
    ["token", "create", "--ttl", "1h", "--config", "/nonexistent"],
    ["--help"],
]


def _untimed(text: str) -> str:
    """``text`` with its clock times (the emulated kubelet's log lines start with one) as ``T``."""
    return re.sub(r"\d\d:\d\d:\d\d(\.\d+)?", "T", text)


KUBELET_CALLS = [
    [],
    ["--kubeconfig", "/nonexistent", "--node-name", "n", "--node-ip", "10.0.0.1", "--version", "v0.1"],
    ["--kubeconfig", "/nonexistent", "--node-name", "n", "--node-ip", "10.0.0.1", "--node-labels", "bad"],
    ["--help"],
]
K3S_CALLS = [["bogus"], ["etcd-snapshot", "bogus"], ["--help"]]


@pytest.mark.parametrize(
    ("tool", "args"),
    [("kubeadm", a) for a in KUBEADM_CALLS] + [("kubelet", a) for a in KUBELET_CALLS] + [("k3s", a) for a in K3S_CALLS],
    ids=lambda a: " ".join(a) if isinstance(a, list) else a,
)
def test_the_emulated_tools_answer_the_same_through_the_server(
    server: Path, tool: str, args: list[str], tmp_path: Path
) -> None:
    env = {**os.environ, "EK8S_EMULATION": str(tmp_path / "emulation.json")}
    (tmp_path / "emulation.json").write_text("{}\n")
    alone = subprocess.run(
        [sys.executable, "-m", forkclient.MODULES[tool], *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    forked = run(server, tool, *args, cwd=ROOT, env=env)
    assert (forked.returncode, _untimed(forked.stdout), _untimed(forked.stderr)) == (
        alone.returncode,
        _untimed(alone.stdout),
        _untimed(alone.stderr),
    )
    assert alone.returncode != 0 or args == ["--help"]
    if tool != "kubelet":  # kubeadm and k3s record their command lines: through the server, the client's
        lines = [json.loads(x) for x in (tmp_path / "cmdlines.jsonl").read_text().splitlines()]
        assert [x["cmdline"][-len(args) :] for x in lines] == [args, args]
        assert lines[1]["cmdline"][:4] == CLIENT


def test_a_forked_kubeadm_times_itself_from_its_callers_start_not_the_servers(server: Path, tmp_path: Path) -> None:
    """The emulated kubeadm pads init and join to the lab's step times from its process's
    start; a child of the server must count from its client's start (the server's import-time
    state is reset), or every pad would be skipped."""
    started = server.stat().st_mtime  # the socket is made when the server has imported the tools
    time.sleep(max(0.0, started + 3.0 - time.time()))
    env = {**os.environ, "EK8S_EMULATION": str(tmp_path / "emulation.json")}
    (tmp_path / "emulation.json").write_text("{}\n")
    called = []
    for _ in range(2):
        called.append(time.time())
        res = run(server, "kubeadm", "join", "--config", "/nonexistent/join.yaml", env=env)
        assert res.returncode == 1
    lines = [json.loads(x) for x in (tmp_path / "timings.jsonl").read_text().splitlines()]
    assert [x["command"] for x in lines] == ["join", "join"]
    for at, line in zip(called, lines, strict=True):
        assert at - 0.05 <= line["started"] <= line["t"], (at, line)  # process start times are 10 ms ticks
        assert 0 <= line["phases"]["python_start"] < 2.0, line


def test_without_a_server_the_client_runs_the_tool_in_its_own_interpreter(tmp_path: Path) -> None:
    res = run(tmp_path / "no.sock", "kubeadm", "bogus", cwd=ROOT)
    assert res.returncode == 2
    assert "kubeadm: error: argument cmd: invalid choice: 'bogus'" in res.stderr
    res = run(tmp_path / "no.sock", "probe", "exit", "0")
    assert res.returncode == 127
    assert "no module" in res.stderr
