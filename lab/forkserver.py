"""The lab's fork server: one long-lived process with the emulated kubeadm, k3s and kubelet
imported, that forks a process for each of them a process-mode node runs. Lab only.

Why: every ``kubeadm`` a node runs was a new interpreter importing the emulated kubeadm
(~0.3 CPU-s, most of a worker's join), every ``k3s`` one importing the emulated k3s
(~0.65 CPU-s), every kubelet one importing the emulated kubelet (~0.1 CPU-s). A real
kubeadm, k3s or kubelet is one static binary that starts in milliseconds; the imports were the
lab's cost, not the tools'. Here the imports happen once, and each command is a ``fork`` of
this process (copy-on-write; :func:`gc.freeze` keeps the imported objects' pages shared).

What does not change: each command runs the same code (the tool's ``main``) with its own
arguments, environment, working directory, umask and standard streams, in the caller's
network and mount namespaces (setns(2), the namespaces ``ip netns exec`` gave the node's
agent), in a session of its own, so it refuses, fails, times out and prints exactly as the tool
in its own interpreter does; the client (:mod:`lab.forkclient`) carries the exit code and the
signals. The tests in ``tests/unit/test_forkserver.py`` run the same commands both ways and
compare output and exit codes.

``python -m lab.forkserver --socket PATH`` serves until SIGTERM; the lab starts it in its
manager namespace when it creates a process-mode lab (``ek8s lab up``, not with
``--no-fork-server``), so it goes with the lab's namespaces. Only connections from this
process's own user are served (``SO_PEERCRED``); the socket is mode 0600.

Protocol (one connection per command): the client sends a 4-byte big-endian length and JSON
``{"tool": "kubeadm"|"k3s"|"kubelet", "argv": [str], "env": {str: str}, "cwd": str, "umask": int}``
with its fds 0-2 attached (``SCM_RIGHTS``), then, while the tool runs, lines ``{"signal":
N}`` to forward; the server answers one line, ``{"exit": N}`` (negative: killed by signal
-N, as :func:`os.waitstatus_to_exitcode`) or ``{"error": "..."}`` for a request it refuses.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import ctypes
import functools
import gc
import importlib
import importlib.util
import json
import os
import selectors
import signal
import socket
import struct
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import emulation, forkclient

# tool -> (module, function): the function the tool's `python -m` entry (lab.forkclient.MODULES) runs.
ENTRIES = {"kubeadm": ("lab.kubeadm.cli", "main"), "k3s": ("lab.k3s", "run"), "kubelet": ("lab.kubelet", "main")}
# Imported once here, so no command imports them: what the tools import at start and in their
# phases (lazily, there, to keep a fresh interpreter's start short).
PRELOAD = ("lab.kubeadm.cli", "lab.kubeadm.etcd", "lab.k3s", "lab.kubelet", "psutil", "cryptography.exceptions")
MAX_REQUEST = 1 << 20  # bytes of JSON; an environment is a few KiB
READ_TIMEOUT_S = 5.0  # a client sends its request at once; one that stalls is dropped
CLONE_NEWNS = 0x00020000  # <linux/sched.h>
CLONE_NEWNET = 0x40000000
PR_SET_NAME = 15  # <linux/prctl.h>
FAILED_TO_START = 126


class RequestError(ValueError):
    """A request this server does not serve; the message names the field."""


@dataclass
class Request:
    """One command to run: ``tool`` (a key of :data:`ENTRIES`), its ``argv`` (without the
    program name), ``env``, ``cwd``, ``umask``, the client's ``fds`` (0-2 as received) and its
    ``pid`` (``SO_PEERCRED``)."""

    tool: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    umask: int
    fds: list[int]
    pid: int


def parse_request(body: bytes, fds: list[int], pid: int, entries: dict[str, tuple[str, str]] = ENTRIES) -> Request:
    """Validate one request's JSON; ``entries`` are the tools served. Raises
    :class:`RequestError` naming the field."""
    try:
        data = json.loads(body)
    except ValueError as err:
        raise RequestError(f"not JSON: {err}") from None
    if not isinstance(data, dict):
        raise RequestError("not a JSON object")
    tool = data.get("tool")
    if tool not in entries:
        raise RequestError(f"tool: {tool!r} is not one of {', '.join(entries)}")
    argv, env = data.get("argv"), data.get("env")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise RequestError("argv: not a list of strings")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise RequestError("env: not an object of strings")
    cwd, umask = data.get("cwd"), data.get("umask")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise RequestError("cwd: not an absolute path")
    if not isinstance(umask, int) or not 0 <= umask <= 0o777:
        raise RequestError("umask: not an integer from 0 to 0o777")
    if len(fds) != 3:
        raise RequestError(f"fds: {len(fds)} file descriptors attached, not 3 (stdin, stdout, stderr)")
    return Request(tool, argv, env, cwd, umask, fds, pid)


def read_request(conn: socket.socket, entries: dict[str, tuple[str, str]] = ENTRIES) -> Request:
    """Read one request from ``conn`` (blocking, at most :data:`READ_TIMEOUT_S`: the server
    serves one connection at a time until it has forked); ``entries`` are the tools served.
    Raises :class:`RequestError` for a bad or foreign one, ``OSError`` when the client went
    away."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    conn.settimeout(READ_TIMEOUT_S)
    fds: list[int] = []
    data, ancdata, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(3 * array.array("i").itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
            fds += list(got)
    try:
        if uid != os.geteuid():
            raise RequestError(f"uid {uid}: this server runs commands for uid {os.geteuid()} only")
        if len(data) < 4:
            raise RequestError("short request")
        (length,) = struct.unpack("!I", data[:4])
        if length > MAX_REQUEST:
            raise RequestError(f"request of {length} bytes, more than {MAX_REQUEST}")
        body = data[4:]
        while len(body) < length:
            more = conn.recv(length - len(body))
            if not more:
                raise RequestError("the request ended early")
            body += more
        return parse_request(body[:length], fds, pid, entries)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _libc_call(name: str, *args: int | bytes) -> None:
    """Call libc's ``name`` (setns(2), prctl(2): ``os.setns`` is Python 3.12's). Raises ``OSError``."""
    if getattr(_libc(), name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _enter_namespaces(pid: int) -> None:
    """Join ``pid``'s network and mount namespaces unless this process is in them already (a
    caller outside a lab, as in the unit tests, needs no privilege then)."""
    for name, nstype in (("net", CLONE_NEWNET), ("mnt", CLONE_NEWNS)):
        theirs = f"/proc/{pid}/ns/{name}"
        if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
            continue
        fd = os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _libc_call("setns", fd, nstype)
        finally:
            os.close(fd)


def _main_file(module: str) -> str:
    """The file ``python -m <module>`` runs, which it makes ``sys.argv[0]`` (argparse's program
    name where none is set): the module's, or its ``__main__``'s for a package."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations is not None:
        spec = importlib.util.find_spec(f"{module}.__main__")
    return spec.origin if spec is not None and spec.origin else module


def run_child(req: Request, entries: dict[str, tuple[str, str]] = ENTRIES) -> int:
    """In the forked child: become the tool's process (session, namespaces, directory, umask,
    environment, streams) and run its entry. Returns its exit code as a fresh interpreter's
    would be: ``sys.exit``'s code, 1 after printing the traceback of an uncaught exception."""
    os.setsid()
    # The process's name (``ps -o comm``, ``top``, /proc/PID/comm) is the tool's; its command
    # line stays the server's (the client's is the tool's, as its caller started it).
    _libc_call("prctl", PR_SET_NAME, req.tool.encode()[:15], 0, 0, 0)
    for target, fd in enumerate(req.fds):  # first: what fails below is told on the caller's stderr
        os.dup2(fd, target)
    for fd in set(req.fds) - {0, 1, 2}:
        os.close(fd)
    _enter_namespaces(req.pid)
    os.chdir(req.cwd)
    os.umask(req.umask)
    os.environ.clear()
    os.environ.update(req.env)
    emulation.started_for(req.pid)  # the tool's start, command line and per-run state: the client's
    module, function = entries[req.tool]
    sys.argv = [_main_file(forkclient.MODULES.get(req.tool, module)), *req.argv]
    try:
        code: Any = getattr(importlib.import_module(module), function)()
    except SystemExit as exit_:
        code = exit_.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    return int(code) & 0xFF


def _answer(conn: socket.socket, doc: dict[str, Any]) -> None:
    """Send ``doc`` as the connection's one answer line (a client that is gone loses it) and
    close it."""
    conn.setblocking(True)
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(doc).encode() + b"\n")
    conn.close()


class Server:
    """The accept-fork-reap loop, one thread (fork needs it). ``path`` is the socket;
    ``entries`` the tools served (:data:`ENTRIES`)."""

    def __init__(self, path: Path, entries: dict[str, tuple[str, str]] = ENTRIES) -> None:
        self.path = path
        self.entries = entries
        self.sel = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o177)
        try:
            self.listener.bind(str(path))
        finally:
            os.umask(old)
        self.listener.listen(128)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.sel.register(self.wake_r, selectors.EVENT_READ)
        # pid -> its client's connection (None once the client is gone); each connection is
        # registered with its child's pid as the selector key's data.
        self.children: dict[int, socket.socket | None] = {}

    def serve(self) -> None:
        """Serve until SIGTERM or SIGINT; then the socket is removed (running commands go on)."""
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        gc.freeze()  # the imports' objects stay out of the collector: their pages stay shared
        print(f"fork server (EMULATED tools: {', '.join(self.entries)}) serving on {self.path}", flush=True)
        try:
            while True:
                for key, _ in self.sel.select():
                    if key.fileobj is self.listener:
                        self.accept()
                    elif key.fileobj is self.wake_r:
                        with contextlib.suppress(BlockingIOError):
                            while self.wake_r.recv(512):
                                pass
                        self.reap()
                    else:
                        assert isinstance(key.fileobj, socket.socket)
                        self.from_client(key.fileobj, key.data)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def accept(self) -> None:
        conn, _ = self.listener.accept()
        try:
            req = read_request(conn, self.entries)
        except RequestError as err:
            print(f"refused a request: {err}", flush=True)
            _answer(conn, {"error": str(err)})
            return
        except OSError as err:
            print(f"dropped a connection: {err}", flush=True)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as err:  # EAGAIN, ENOMEM: this command fails, the server goes on
            print(f"cannot fork {req.tool}: {err}", flush=True)
            _answer(conn, {"error": f"fork: {err}"})
            for fd in req.fds:
                os.close(fd)
            return
        if pid == 0:  # the child: nothing of the server's is kept
            code = FAILED_TO_START
            try:
                signal.set_wakeup_fd(-1)
                for s in (signal.SIGCHLD, signal.SIGTERM):
                    signal.signal(s, signal.SIG_DFL)
                self.sel.close()
                for sock in (self.listener, self.wake_r, self.wake_w, conn, *self.children.values()):
                    if sock is not None:
                        sock.close()
                code = run_child(req, self.entries)
            except BaseException as err:  # a child never returns into the server
                with contextlib.suppress(OSError):
                    os.write(2, f"EMULATED {req.tool}: the lab's fork server could not start it: {err}\n".encode())
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        for fd in req.fds:
            os.close(fd)  # the caller's pipes end when the tool and the client close them
        conn.setblocking(False)
        self.children[pid] = conn
        self.sel.register(conn, selectors.EVENT_READ, pid)

    def from_client(self, conn: socket.socket, pid: int) -> None:
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the client died (SIGKILL): so does the tool's process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            self.children[pid] = None
            self.sel.unregister(conn)
            conn.close()
            return
        for line in data.splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                signum = int(json.loads(line)["signal"])
                with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                    os.killpg(pid, signum)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            self.sel.unregister(conn)
            _answer(conn, {"exit": os.waitstatus_to_exitcode(status)})


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.forkserver --socket PATH [--entry NAME=MODULE:FUNCTION ...]``: import
    the tools, serve until SIGTERM. Exit 2 for a malformed ``--entry``."""
    p = argparse.ArgumentParser(prog="python -m lab.forkserver", description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", type=Path, required=True, help="the UNIX socket to serve on (mode 0600)")
    p.add_argument(
        "--entry",
        action="append",
        default=[],
        metavar="NAME=MODULE:FUNCTION",
        help="serve another tool too (the unit tests' probe); repeatable",
    )
    args = p.parse_args(argv)
    entries = dict(ENTRIES)
    for spec in args.entry:
        name, _, target = spec.partition("=")
        module, _, function = target.partition(":")
        if not (name and module and function):
            p.error(f"--entry {spec!r}: not NAME=MODULE:FUNCTION")
        entries[name] = (module, function)
    for module in (*PRELOAD, *(m for m, _ in entries.values())):
        importlib.import_module(module)
    Server(args.socket, entries).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
