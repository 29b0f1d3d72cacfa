"""The driver interface: what the agent asks of a Kubernetes distribution.

kubeadm implements it now (:mod:`leader.drivers.kubeadm`); k3s is next. A driver turns the
agent's decisions into the distribution's own commands and reports what it produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from leader.share import JoinMaterial


class DriverError(Exception):
    """A distribution command failed. ``str()`` names the command, its exit code and the
    last lines it printed, which is what an operator needs in journald."""

    def __init__(self, command: list[str], returncode: int, output: str) -> None:
        tail = "\n".join(output.strip().splitlines()[-12:])
        super().__init__(f"{' '.join(command)} exited {returncode}: {tail}")
        self.command = command
        self.returncode = returncode
        self.output = output


@dataclass(frozen=True)
class InitResult:
    """What ``init`` leaves behind: the admin kubeconfig (for the operator only) and the
    cluster CA certificate (PEM), from which the discovery hash is computed."""

    admin_kubeconfig: bytes
    ca_cert_pem: bytes


class Driver(Protocol):
    name: str

    def init(self, token: str, certificate_key: str, generation: int, restore_from: Path | None = None) -> InitResult:
        """Create the control plane on this node, with etcd's data restored from the snapshot
        file ``restore_from`` if given; raises :class:`DriverError`."""

    def join_control_plane(self, material: JoinMaterial) -> None:
        """Join this node as a control-plane node (adds its etcd member)."""

    def join_worker(self, material: JoinMaterial) -> None:
        """Join this node as a worker."""

    def refresh_join_material(self, token: str | None, certificate_key: str | None) -> None:
        """On a control node: create bootstrap token ``token`` and/or upload the control-plane
        certificates sealed with ``certificate_key`` (None: leave that part alone)."""

    def reset(self) -> None:
        """Undo init/join on this node (``kubeadm reset -f``); never raises for "nothing to
        reset"."""

    def is_joined(self) -> bool:
        """Whether this node holds a kubelet kubeconfig from a completed init/join."""

    @property
    def kubelet_kubeconfig(self) -> Path:
        """The node's own credentials (``/etc/kubernetes/kubelet.conf`` under the root)."""

    @property
    def admin_kubeconfig(self) -> Path:
        """``/etc/kubernetes/admin.conf`` under the root (control nodes only)."""

    @property
    def prune_kinds(self) -> tuple[str, ...]:
        """What Phylactery must remove before this node rejoins: ``node``, ``etcd_member``
        (kubeadm), plus ``node_password`` for k3s."""
