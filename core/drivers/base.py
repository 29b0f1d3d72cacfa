"""The driver interface: what the agent and Phylactery ask of a Kubernetes distribution.

kubeadm (:mod:`core.drivers.kubeadm`) and k3s (:mod:`core.drivers.k3s`) implement it. A driver turns the agent's
decisions into the distribution's own commands, and it alone knows the distribution's files
(PKI, kubeconfigs), its etcd (endpoint, client credentials), its join credentials and their
lifetimes, and what a rebooted node leaves behind. Nothing above it hard-codes any of that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core.logs import PhaseLogger
from core.share import JoinMaterial


class DriverError(Exception):
    """A distribution command failed. ``str()`` names the command, its exit code and the
    last lines it printed, which is what an operator needs in journald."""

    def __init__(self, command: list[str], returncode: int, output: str) -> None:
        tail = "\n".join(output.strip().splitlines()[-12:])
        super().__init__(f"{' '.join(command)} exited {returncode}: {tail}")
        self.command = command
        self.returncode = returncode
        self.output = output


class ApiUnavailable(Exception):
    """The cluster's API (or etcd) did not answer a question the driver had to ask; the caller
    should ask another control node or try again later."""


class CommandRunner:
    """Runs one distribution command at a time (``kubeadm ...``, ``k3s ...``) and lets another
    thread stop it: the process-handling half every driver shares.

    ``tool`` names the command in logs; ``redact`` hides secrets in every line that reaches
    the log or an error; ``timeout_s`` bounds each command (node.yaml ``timeouts.command_s``).
    """

    def __init__(self, tool: str, timeout_s: float, redact: Callable[[str], str], log: PhaseLogger) -> None:
        self.tool = tool
        self.timeout_s = timeout_s
        self.redact = redact
        self.log = log
        self._proc: subprocess.Popen[str] | None = None
        self._aborted = threading.Event()

    def run(self, argv: list[str]) -> str:
        """Run ``argv``; returns its output (stdout and stderr together, redacted). Each line
        is logged (``source=<tool>``, redacted) as the tool prints it, not when it exits: a
        join that hangs for ``timeout_s`` shows how far it got while it hangs. Raises
        :class:`DriverError` on a non-zero exit, a timeout, a missing executable, or
        :meth:`abort`."""
        shown = [self.redact(a) for a in argv]
        started = time.monotonic()
        self.log.info(f"running {self.tool}", extra={"command": " ".join(shown)})
        self._aborted.clear()
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,  # abort() stops the tool and whatever it started
            )
        except OSError as err:
            raise DriverError(shown, 127, str(err)) from err
        self._proc = proc
        lines: list[str] = []
        reader = threading.Thread(target=self._stream, args=(proc, lines), name=f"{self.tool}-output", daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=self.timeout_s)
            # The output ends when every process holding the pipe closed it; a child the tool
            # left running with it (none of kubeadm's or k3s's do) counts against the timeout.
            reader.join(max(0.0, self.timeout_s - (time.monotonic() - started)))
            timed_out = reader.is_alive()
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if timed_out:
                self._kill(proc)
                proc.wait()
                reader.join(5.0)
            self._proc = None
        output = "".join(lines)
        if timed_out:
            raise DriverError(shown, -1, output + f"\ntimed out after {self.timeout_s}s")
        if self._aborted.is_set():
            raise DriverError(shown, proc.returncode, output + "\naborted by the agent")
        if proc.returncode != 0:
            raise DriverError(shown, proc.returncode, output)
        self.log.info(f"{self.tool} finished", extra={"seconds": round(time.monotonic() - started, 3)})
        return output

    def _stream(self, proc: subprocess.Popen[str], lines: list[str]) -> None:
        """Log each line of ``proc``'s output as it comes (redacted) and keep it in ``lines``."""
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                line = self.redact(raw.rstrip("\n"))
                lines.append(line + "\n")
                self.log.info(line, extra={"source": self.tool})

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def abort(self) -> None:
        """Kill the running command and its process group (SIGKILL: the tool leaves partial
        state either way, and the agent resets next); :meth:`run` then raises."""
        self._aborted.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self._kill(proc)

    @property
    def aborted(self) -> bool:
        """Whether :meth:`abort` was called since the last :meth:`run` started."""
        return self._aborted.is_set()

    def clear_abort(self) -> None:
        """Forget an earlier :meth:`abort` (before a wait that :meth:`aborted` may end)."""
        self._aborted.clear()


@dataclass(frozen=True)
class Credentials:
    """The secrets the agent generates before init, in the distribution's formats. kubeadm:
    ``token`` a bootstrap token ``[a-z0-9]{6}.[a-z0-9]{16}``, ``certificate_key`` 64 hex
    digits. k3s: ``token`` the server token's secret, ``certificate_key`` the agent token's
    secret (workers join with it and cannot join as servers); k3s has no certificate key,
    joining servers fetch the cluster's certificates with the server token."""

    token: str
    certificate_key: str


@dataclass(frozen=True)
class SnapshotTaken:
    """An etcd snapshot a driver took of its node's member: ``data`` is the file as
    ``etcdctl snapshot save`` writes it (etcd's backend database); ``secret`` is what a
    restore of it needs beside the file (k3s: the server token's secret, with which k3s
    encrypted its bootstrap data in etcd), None when nothing; ``tool`` names how it was taken,
    for the log."""

    data: bytes
    secret: str | None
    tool: str


@dataclass(frozen=True)
class InitResult:
    """What ``init`` leaves behind: the admin kubeconfig (for the operator only) and the
    cluster CA certificate (PEM), from which the discovery pin is computed."""

    admin_kubeconfig: bytes
    ca_cert_pem: bytes


class Driver(Protocol):
    """One distribution on one node (the node's role comes from node.yaml)."""

    name: str
    # What Phylactery must remove before this node rejoins (phylactery/prune.py implements
    # each): "node"; "etcd_member" (the members etcd_member_node takes for the node, or on its
    # address); "node_password" (k3s: "<node>.node-password.k3s" Secrets).
    prune_kinds: tuple[str, ...]
    # Whether ``init`` can restore an etcd snapshot into a new generation (both can).
    restores_snapshots: bool
    # Whether a restore needs the secret kept with the snapshot (k3s: its bootstrap data in
    # etcd is encrypted with the server token the snapshot was taken with; kubeadm: no).
    restore_needs_secret: bool
    # The fields of join.json that only control nodes may read: left out of the workers' copy
    # in the node tree (docs/share-protocol.md; kubeadm: the certificate key; k3s: the server
    # token, "token", while workers join with the agent token, "certificate_key").
    control_only_fields: tuple[str, ...]

    def new_credentials(self, restore_secret: str | None = None) -> Credentials:
        """Fresh join credentials for ``init``. ``restore_secret``: the secret kept with the
        snapshot ``init`` will restore (:attr:`SnapshotTaken.secret`), which the credentials
        reuse (k3s: as the server token); ignored by a driver that needs none."""
        ...

    def save_snapshot(self) -> SnapshotTaken:
        """A snapshot of this control node's etcd member, taken with the distribution's own
        tool where it has one (k3s: ``k3s etcd-snapshot save``; kubeadm: etcd's
        ``/v3/maintenance/snapshot``). Raises :class:`DriverError`, or
        :class:`core.etcd.EtcdError` when etcd does not answer."""
        ...

    def init(self, credentials: Credentials, restore_from: Path | None = None) -> InitResult:
        """Create the control plane on this node, with etcd's data restored from the snapshot
        file ``restore_from`` if given. Raises :class:`DriverError`."""
        ...

    def join_material(self, result: InitResult, credentials: Credentials, generation: int, epoch: int) -> JoinMaterial:
        """The join material to publish after ``init`` (never the admin kubeconfig)."""
        ...

    def join(self, material: JoinMaterial) -> None:
        """Join this node: as a control-plane node (adds its etcd member) or as a worker, as
        node.yaml's role says. Raises :class:`DriverError`."""
        ...

    def renew_join_material(
        self, material: JoinMaterial, parts: tuple[str, ...] = ("token", "certificate_key")
    ) -> tuple[JoinMaterial, list[str]]:
        """On a control node: check ``material`` against the API and replace what expired
        among ``parts`` (``token``: what every node joins with; ``certificate_key``: what
        control nodes fetch the CA keys with). Returns (the material to publish, names of the
        parts refreshed; empty when all was still valid). Raises :class:`ApiUnavailable` or
        :class:`DriverError`."""
        ...

    def reset(self, whole_cluster: bool = False) -> None:
        """Undo init/join on this node; never raises for "nothing to reset". With
        ``whole_cluster`` every other node resets too (a new generation), so nothing needs to
        be removed from the old cluster. Raises :class:`DriverError` when the command fails."""
        ...

    def abort(self) -> None:
        """Stop the command this driver is running (from another thread), if any; the call
        running it then raises :class:`DriverError`."""
        ...

    def is_joined(self) -> bool:
        """Whether this node holds a kubelet kubeconfig from a completed init/join."""
        ...

    @property
    def kubelet_kubeconfig(self) -> Path:
        """The node's own credentials, as a host path."""
        ...

    @property
    def kubelet_service(self) -> str:
        """The service (a :mod:`core.services` name: a systemd unit, or the lab's process
        service) whose restart restarts this node's kubelet: kubeadm ``kubelet``; k3s its own
        ``k3s`` or ``k3s-agent``, which runs the kubelet inside. A running kubelet never
        registers its Node again once the Node was deleted
        (:func:`core.versions.kubelet_reregisters_deleted_node`); a restarted one does, which
        is how the agent recovers a node whose Node vanished."""
        ...

    @property
    def admin_kubeconfig(self) -> Path:
        """The cluster-admin kubeconfig on a control node, as a host path."""
        ...

    @property
    def etcd_endpoint(self) -> str:
        """The JSON gateway of this control node's own etcd member (:mod:`core.etcd`):
        kubeadm ``https://127.0.0.1:2379``, k3s ``https://127.0.0.1:2382``."""
        ...

    def etcd_client_context(self) -> ssl.SSLContext | None:
        """TLS context with a client certificate for this node's etcd (never etcd's server
        key pair), or None while this node runs no etcd member."""
        ...

    def has_etcd_data(self) -> bool:
        """Whether this node holds an etcd member's data directory (it survived in RAM)."""
        ...

    def etcd_member_node(self, member_name: str) -> str:
        """The node an etcd member of this distribution belongs to, from the member's name
        (kubeadm names members as their node; k3s ``<node>-<8 hex digits>``, and takes any
        name up to its last ``-`` for a node's). The one place this rule lives: Phylactery
        prunes and reaps by it, the agent checks its own member by it."""
        ...

    def reform_etcd(self) -> None:
        """Re-form etcd from this node's data as a one-member cluster (etcd's
        ``--force-new-cluster``), keeping every key; returns once the member has quorum alone
        and runs without the flag again. Raises :class:`DriverError`."""
        ...
