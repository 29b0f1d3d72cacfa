"""The ``kubeadm`` and ``k3s`` a process-mode lab node runs: a small client of the lab's fork
server (:mod:`lab.forkserver`). Lab only; what it starts is the EMULATED tool.

``python -I -S forkclient.py SOCKET TOOL [ARG ...]`` (the lab's ``bin/kubeadm`` and ``bin/k3s``
shims, and the emulated kubeadm for the kubelet it starts) sends the server TOOL (``kubeadm``,
``k3s`` or ``kubelet``), the arguments, this process's
environment, working directory and umask, and its standard input, output and error (three
file descriptors, ``SCM_RIGHTS``, unix(7)) over the UNIX socket; the server forks the emulated
tool, already imported, into this process's network and mount namespaces. This process stays
as the tool's face to its caller: its pid is the one the agent waits for and signals, its
command line the one the node's users see (``/proc/<pid>/cmdline``), and

* the signals a caller sends to stop it (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2)
  go on to the tool's process group; a SIGKILL, which nothing can catch, closes the
  connection, and the server then SIGKILLs the tool's process group: ``killpg`` of this
  process's group stops the tool and whatever it started, as it does a tool run directly;
* the tool's exit is this process's: the same exit code, or death by the same signal.

Only the standard library, run with ``-I -S`` (no ``site``, no venv, no project import): this
process costs ~20-30 ms of CPU where an interpreter importing the emulated kubeadm costs ~0.3 s.
When the server does not answer (not started yet, gone), the client runs the tool in a new
interpreter of its own (``python -m lab.kubeadm``), as ``--no-fork-server`` labs always do; a
request the server refuses is an error (exit 126, its reason on stderr).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import signal
import socket
import struct
import sys

MODULES = {"kubeadm": "lab.kubeadm", "k3s": "lab.k3s", "kubelet": "lab.kubelet"}  # `python -m` without the server
SOCKET_ENV = "EK8S_FORK_SOCKET"  # the fork server's socket, for the tools that start others (kubeadm: the kubelet)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
REFUSED = 126  # the server refused the request (the shell's "cannot execute")


def request(tool: str, args: list[str]) -> bytes:
    """The request: a 4-byte big-endian length, then JSON ``{"tool", "argv", "env", "cwd",
    "umask"}`` (:func:`lab.forkserver.read_request` reads it)."""
    umask = os.umask(0)
    os.umask(umask)
    body = json.dumps(
        {"tool": tool, "argv": args, "env": dict(os.environ), "cwd": os.getcwd(), "umask": umask}
    ).encode()
    return struct.pack("!I", len(body)) + body


def launcher(tool: str, python: str = sys.executable, sock: str | None = None) -> list[str]:
    """The command line that starts ``tool`` (a key of :data:`MODULES`) before its arguments:
    this client of the fork server at ``sock`` (default ``$EK8S_FORK_SOCKET``, which the lab's
    shims set), or ``python -m <module>`` when there is none."""
    sock = sock if sock is not None else os.environ.get(SOCKET_ENV, "")
    if sock:
        return [python, "-I", "-S", os.path.abspath(__file__), sock, tool]
    return [python, "-m", MODULES[tool]]


def run_alone(tool: str, args: list[str]) -> int:
    """Replace this process with ``python -m <module> ARGS`` (the tool in its own interpreter).
    Returns 127 for a tool with no module of its own (one a test gave the server)."""
    if tool not in MODULES:
        sys.stderr.write(f"EMULATED {tool}: the lab's fork server does not answer and {tool} has no module\n")
        return 127
    os.execv(sys.executable, [sys.executable, "-m", MODULES[tool], *args])


def main() -> int:
    """Ask the server at ``sys.argv[1]`` to run ``sys.argv[2]`` with ``sys.argv[3:]``; return
    its exit code, or die of its signal."""
    if len(sys.argv) < 3:
        sys.stderr.write(f"usage: forkclient.py SOCKET {{{','.join(MODULES)}}} [ARG ...]\n")
        return 2
    path, tool, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    # A stop that comes before the handlers below are in place waits for them, so it reaches
    # the tool instead of killing this process (the server would then SIGKILL the tool).
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    message = request(tool, args)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sent = sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
        if sent < len(message):  # never after the whole request: the server may have answered and closed
            sock.sendall(message[sent:])
    except OSError:  # nothing started: the server starts a tool once it has the whole request
        sock.close()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # an exec keeps the mask
        return run_alone(tool, args)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(json.dumps({"signal": signum}).encode() + b"\n")

    for s in FORWARDED:
        signal.signal(s, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    for line in sock.makefile("rb"):
        answer = json.loads(line)
        if "error" in answer:
            sys.stderr.write(f"EMULATED {tool}: the lab's fork server refused to start it: {answer['error']}\n")
            return REFUSED
        if "exit" in answer:
            code = int(answer["exit"])
            if code < 0:  # killed by signal -code: die of it too, as the caller would see
                signal.signal(-code, signal.SIG_DFL)
                os.kill(os.getpid(), -code)
            return code
    sys.stderr.write(f"EMULATED {tool}: the lab's fork server went away before {tool} ended\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
