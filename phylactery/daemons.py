"""The I/O edge for HAProxy and keepalived: validate, install atomically, reload, read state.

A :class:`ManagedDaemon` applies a rendered config only when it differs from the installed
one: the text goes to a temporary file beside the target, is checked by the daemon itself
(``haproxy -c -f``, ``keepalived --config-test -f``), renamed over the target, then the
running daemon is reloaded (HAProxy master-worker reload on SIGUSR2, keepalived on SIGHUP,
or ``systemctl reload``). A daemon is never restarted, so established connections survive.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.fileperm import EXEC_MODE, FILE_MODE, ensure_dir, write_atomic
from core.logs import get_logger
from core.services import ServiceManager

log = get_logger(__name__, "reconcile")


class ConfigRejected(Exception):
    """The daemon's own check refused a rendered config; nothing was installed."""


@dataclass
class ManagedDaemon:
    """One daemon whose config Phylactery owns.

    ``check_argv`` is the validation command with ``{config}`` standing for the file to check;
    ``start_argv`` starts it in process mode (systemd units have their own).
    """

    name: str
    config_path: Path
    check_argv: list[str]
    start_argv: list[str]
    reload_signal: int
    services: ServiceManager
    reloads: int = 0
    starts: int = 0
    extra_files: dict[Path, tuple[str, int]] = field(default_factory=dict)
    before_reload: Callable[[], None] | None = None

    def installed(self) -> str | None:
        """The installed config's text, or None before the first install."""
        try:
            return self.config_path.read_text()
        except FileNotFoundError:
            return None

    def write_extra_files(self) -> None:
        """Files the config refers to (keepalived's track script), rewritten when changed."""
        for path, (content, mode) in self.extra_files.items():
            ensure_dir(path.parent)
            if not path.exists() or path.read_text() != content:
                write_atomic(path, content, mode)

    def validate(self, text: str) -> None:
        """Run the daemon's check on ``text``; raise :class:`ConfigRejected` with its output."""
        ensure_dir(self.config_path.parent)
        self.write_extra_files()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.config_path.name}.", suffix=".check", dir=self.config_path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            argv = [a.replace("{config}", tmp) for a in self.check_argv]
            res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            if res.returncode != 0:
                raise ConfigRejected(f"{' '.join(argv)} exited {res.returncode}: {(res.stdout + res.stderr).strip()}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def apply(self, text: str) -> str:
        """Install ``text`` and make the daemon use it. Returns what was done:
        ``"unchanged"``, ``"started"`` or ``"reloaded"``. Raises :class:`ConfigRejected`."""
        self.write_extra_files()
        running = self.services.is_running(self.name)
        if text == self.installed() and running:
            return "unchanged"
        if text != self.installed():
            self.validate(text)
            write_atomic(self.config_path, text, FILE_MODE)
        if running:
            if self.before_reload is not None:
                self.before_reload()
            self.services.reload(self.name, self.reload_signal)
            self.reloads += 1
            log.info("reloaded", extra={"daemon": self.name, "reloads": self.reloads})
            return "reloaded"
        self.services.start(self.name, self.start_argv)
        self.starts += 1
        log.info("started", extra={"daemon": self.name})
        return "started"

    def reload(self, why: str) -> None:
        """Reload the running daemon with its installed config, for ``why`` (logged)."""
        if self.before_reload is not None:
            self.before_reload()
        self.services.reload(self.name, self.reload_signal)
        self.reloads += 1
        log.warning("reloaded again", extra={"daemon": self.name, "reloads": self.reloads, "why": why})

    def stop(self) -> None:
        """Stop the daemon through the service manager."""
        self.services.stop(self.name)


def haproxy(root: Path, services: ServiceManager) -> ManagedDaemon:
    """HAProxy in master-worker mode (``-W``), foreground (``-db``), config under ``root``.
    Before each reload the servers' states are saved for the new worker to load."""
    cfg = root / "etc/haproxy/haproxy.cfg"
    return ManagedDaemon(
        before_reload=lambda: save_server_state(haproxy_stats_socket(root), haproxy_server_state_file(root)),
        name="haproxy",
        config_path=cfg,
        check_argv=["haproxy", "-c", "-f", "{config}"],
        start_argv=["haproxy", "-W", "-db", "-f", str(cfg)],
        reload_signal=signal.SIGUSR2,
        services=services,
    )


def haproxy_stats_socket(root: Path) -> Path:
    """HAProxy's admin socket, ``<root>/run/haproxy/admin.sock`` (a UNIX path: at most 107 bytes)."""
    return root / "run/haproxy/admin.sock"


def haproxy_ca_file(root: Path, ca_pem: str) -> Path:
    """Where the generation's cluster CA ``ca_pem`` is written for HAProxy's checks
    (``ca-file``): ``<root>/etc/haproxy/cluster-ca-<first 16 hex digits of its SHA-256>.pem``.
    Named by content, so another CA changes haproxy.cfg and a reload loads it (HAProxy reads a
    ca-file only when it starts or reloads)."""
    digest = hashlib.sha256(ca_pem.encode()).hexdigest()[:16]
    return root / "etc/haproxy" / f"cluster-ca-{digest}.pem"


def remove_other_ca_files(root: Path, keep: Path | None) -> None:
    """Delete ``cluster-ca-*.pem`` under ``<root>/etc/haproxy`` other than ``keep`` (the CA
    files of earlier generations, once haproxy.cfg no longer names them)."""
    for path in (root / "etc/haproxy").glob("cluster-ca-*.pem"):
        if path != keep:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def haproxy_server_state_file(root: Path) -> Path:
    """Where server states are saved before a reload (``server-state-file``)."""
    return root / "run/haproxy/server-state"


def _stats_command(stats_socket: Path, command: str, timeout_s: float = 2.0) -> str:
    """Send one command to HAProxy's stats socket; '' when HAProxy does not answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(stats_socket))
            s.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


def save_server_state(stats_socket: Path, state_file: Path) -> None:
    """``show servers state`` into ``state_file`` (HAProxy management guide, "server-state-file")."""
    text = _stats_command(stats_socket, "show servers state")
    if text.strip():
        write_atomic(state_file, text)


def keepalived(root: Path, services: ServiceManager, check_script: str) -> ManagedDaemon:
    """keepalived, VRRP subsystem only, foreground, pid files under ``root`` (several run on
    one host in the lab)."""
    cfg = root / "etc/keepalived/keepalived.conf"
    run = root / "run/keepalived"
    return ManagedDaemon(
        name="keepalived",
        config_path=cfg,
        check_argv=["keepalived", "--config-test", "-f", "{config}"],
        start_argv=[
            "keepalived",
            "--vrrp",
            "--dont-fork",
            "--log-console",
            "--no-syslog",
            "--log-detail",
            "-f",
            str(cfg),
            "-p",
            str(run / "keepalived.pid"),
            "-r",
            str(run / "vrrp.pid"),
        ],
        reload_signal=signal.SIGHUP,
        services=services,
        extra_files={root / "etc/keepalived/check_haproxy.sh": (check_script, EXEC_MODE)},
    )


# Linux capability number of CAP_SYS_RESOURCE (linux/capability.h).
CAP_SYS_RESOURCE = 24


def vrrp_realtime_allowed(status: Path = Path("/proc/self/status")) -> bool:
    """Whether keepalived's VRRP process may run on real-time scheduling here: True when
    ``CAP_SYS_RESOURCE`` is in this process's bounding set (``CapBnd:`` of ``status``, a hex
    mask, proc(5)), which bounds keepalived's as well, since it runs as root beside us
    (process mode) or from a unit that does not narrow it (keepalived.service).

    Why that capability: keepalived (lib/process.c, 2.2.7 to today) lowers its VRRP process's
    ``RLIMIT_RTTIME`` to ``vrrp_rlimit_rttime`` when it starts it on ``SCHED_RR``, and on every
    reload (SIGHUP) first restores a saved limit that it never read, so 0, then raises it
    again, which setrlimit(2) allows only with ``CAP_SYS_RESOURCE``. Without it the process is
    left on ``SCHED_RR`` with a limit of 0 and the kernel SIGKILLs it at its next scheduler
    tick ("exited due to signal 9 - has rlimit_rttime been exceeded?"); keepalived respawns
    it and the VIP can move. Seen in the lab, whose host lacks the capability. False also
    when ``status`` cannot be read or has no ``CapBnd:`` line."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapBnd:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError, IndexError):
        return False
    return False


def backend_states(stats_socket: Path, backend: str = "kube-apiserver", timeout_s: float = 2.0) -> dict[str, str]:
    """``{server name: status}`` from HAProxy's ``show stat`` (CSV, HAProxy management
    guide §9.3); status is ``UP``, ``DOWN``, ``MAINT``, ``no check``... Empty when HAProxy
    does not answer."""
    text = _stats_command(stats_socket, "show stat", timeout_s)
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    header = lines[0][2:].split(",")
    out = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == backend and row.get("svname") not in ("BACKEND", "FRONTEND", None):
            out[row["svname"]] = row.get("status", "")
    return out
