"""Starting, reloading and stopping the node's daemons behind one small interface.

On a node the daemons are systemd units shipped in the overlay (``haproxy.service``,
``keepalived.service``, ``phylactery.service``); in the lab they are supervised processes
whose pid files and logs live under the node's root. node.yaml's ``service_manager`` picks
one (:func:`service_manager`).

Process mode keeps ``<root>/run/ek8s/services/<name>.pid`` ("<pid> <create time>", so a
reused pid is never mistaken for the service), ``<root>/run/ek8s/services/<name>.argv`` (the
command and environment it was started with, which :meth:`ProcessServices.restart` runs
again, as systemd restarts a unit from its ``ExecStart``) and ``<root>/var/log/ek8s/<name>.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Protocol

import psutil

from core.fileperm import ensure_dir, write_atomic


class ServiceError(Exception):
    """A service could not be started, reloaded or stopped; the message says which and why."""


class ServiceManager(Protocol):
    """Start, reload, stop and inspect the node's daemons (HAProxy, keepalived, Phylactery)."""

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, wait: bool = True) -> None:
        """Start ``name`` unless it runs. ``argv`` is used in process mode only (systemd
        units carry their own ``ExecStart``). With ``wait`` (systemd) return once the unit is
        up (a ``Type=notify`` unit: once it sent ``READY=1``), else once the start is queued."""

    def reload(self, name: str, sig: int) -> None:
        """Ask a running ``name`` to re-read its config (``sig`` in process mode)."""

    def stop(self, name: str, timeout_s: float = 5.0) -> None:
        """Stop ``name`` if it runs; SIGKILL after ``timeout_s`` seconds."""

    def restart(self, name: str) -> None:
        """Stop ``name`` and start it again with the command it was started with (systemd:
        ``systemctl restart``). Raises :class:`ServiceError` when it cannot."""

    def is_running(self, name: str) -> bool:
        """Whether ``name`` runs now."""
        ...

    def pid(self, name: str) -> int | None:
        """The main pid of a running ``name``, else None."""
        ...


# Services this process started; polled so that an exited one does not stay a zombie.
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _reap_children() -> None:
    _CHILDREN[:] = [p for p in _CHILDREN if p.poll() is None]


class ProcessServices:
    """Daemons as detached processes (own session, output to a log file)."""

    def __init__(self, root: Path) -> None:
        self.run_dir = root / "run/ek8s/services"
        self.log_dir = root / "var/log/ek8s"

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _argvfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.argv"

    def log_path(self, name: str) -> Path:
        """``<root>/var/log/ek8s/<name>.log``, the service's output in process mode."""
        return self.log_dir / f"{name}.log"

    def _proc(self, name: str) -> psutil.Process | None:
        _reap_children()
        try:
            pid_s, created_s = self._pidfile(name).read_text().split()
            proc = psutil.Process(int(pid_s))
            if abs(proc.create_time() - float(created_s)) > 0.01:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (FileNotFoundError, ValueError, psutil.Error):
            return None

    def pid(self, name: str) -> int | None:
        """The pid of a running ``name`` (pid file and start time match), else None."""
        proc = self._proc(name)
        return proc.pid if proc else None

    def is_running(self, name: str) -> bool:
        """Whether ``name`` runs (a zombie or a reused pid does not count)."""
        return self._proc(name) is not None

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, wait: bool = True) -> None:
        """Start ``argv`` detached (own session, output to :meth:`log_path`) unless ``name``
        runs. Raises :class:`ServiceError` when it cannot start."""
        if self.is_running(name):
            return
        ensure_dir(self.run_dir)
        ensure_dir(self.log_dir)
        with open(self.log_path(name), "ab") as log:
            os.chmod(self.log_path(name), 0o600)
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, **(env or {})},
                )
            except OSError as err:
                raise ServiceError(f"{name}: cannot start {argv[0]}: {err}") from err
        created = psutil.Process(proc.pid).create_time()
        write_atomic(self._argvfile(name), json.dumps({"argv": argv, "env": env or {}}) + "\n")
        write_atomic(self._pidfile(name), f"{proc.pid} {created}\n")
        _CHILDREN.append(proc)

    def reload(self, name: str, sig: int) -> None:
        """Send ``sig`` to the running ``name``. Raises :class:`ServiceError` when it is not running."""
        proc = self._proc(name)
        if proc is None:
            raise ServiceError(f"{name}: not running, cannot reload")
        proc.send_signal(sig)

    def stop(self, name: str, timeout_s: float = 5.0) -> None:
        """SIGTERM the service's process group, SIGKILL after ``timeout_s`` seconds; forget its pid file."""
        proc = self._proc(name)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._proc(name) is not None:
            time.sleep(0.05)
        if self._proc(name) is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self._pidfile(name).unlink()

    def restart(self, name: str, timeout_s: float = 5.0) -> None:
        """:meth:`stop` (SIGKILL after ``timeout_s`` seconds), then :meth:`start` with the
        command and environment of its last start (``<name>.argv``, written by whichever
        process started it). Raises :class:`ServiceError` when none is recorded or it cannot
        start."""
        try:
            recorded = json.loads(self._argvfile(name).read_text())
            argv, env = list(recorded["argv"]), dict(recorded.get("env") or {})
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ServiceError(f"{name}: no recorded command to restart it with ({err})") from err
        self.stop(name, timeout_s)
        self.start(name, argv, env)


class SystemdServices:
    """Daemons as systemd units: ``<name>.service`` from the overlay or the distribution."""

    def _systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=60)

    def _check(self, res: subprocess.CompletedProcess[str], what: str) -> None:
        if res.returncode != 0:
            raise ServiceError(f"systemctl {what} failed ({res.returncode}): {res.stderr.strip()}")

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None, wait: bool = True) -> None:
        """``systemctl start <name>.service`` (``--no-block`` without ``wait``: a unit that
        cannot be loaded still fails, its start-up is not waited for); raises
        :class:`ServiceError` on failure."""
        block = () if wait else ("--no-block",)
        self._check(self._systemctl("start", *block, f"{name}.service"), f"start {name}")

    def reload(self, name: str, sig: int) -> None:
        # haproxy.service: ExecReload sends SIGUSR2 to the master (master-worker reload);
        # keepalived.service: ExecReload sends SIGHUP. Never a restart.
        """``systemctl reload <name>.service`` (the unit's ExecReload); raises :class:`ServiceError`."""
        self._check(self._systemctl("reload", f"{name}.service"), f"reload {name}")

    def stop(self, name: str, timeout_s: float = 5.0) -> None:
        """``systemctl stop <name>.service``; raises :class:`ServiceError` on failure."""
        self._check(self._systemctl("stop", f"{name}.service"), f"stop {name}")

    def restart(self, name: str) -> None:
        """``systemctl restart <name>.service``; raises :class:`ServiceError` on failure."""
        self._check(self._systemctl("restart", f"{name}.service"), f"restart {name}")

    def is_running(self, name: str) -> bool:
        """``systemctl is-active --quiet <name>.service`` succeeded."""
        return self._systemctl("is-active", "--quiet", f"{name}.service").returncode == 0

    def pid(self, name: str) -> int | None:
        """The unit's ``MainPID``, or None when it has none."""
        res = self._systemctl("show", "--property=MainPID", "--value", f"{name}.service")
        pid = int(res.stdout.strip() or 0)
        return pid or None


def service_manager(kind: str, root: Path) -> ServiceManager:
    """``"process"`` -> :class:`ProcessServices` under ``root``; ``"systemd"`` -> systemd."""
    if kind == "process":
        return ProcessServices(root)
    return SystemdServices()
