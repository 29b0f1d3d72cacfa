"""Kubernetes distributions behind one interface (:class:`core.drivers.base.Driver`)."""

from __future__ import annotations

from core.config import NodeConfig
from core.drivers.base import ApiUnavailable, Credentials, Driver, DriverError, InitResult, SnapshotTaken


def driver_for(cfg: NodeConfig) -> Driver:
    """The driver named by node.yaml's ``kubernetes.distribution``: ``kubeadm``
    (:class:`core.drivers.kubeadm.KubeadmDriver`) or ``k3s``
    (:class:`core.drivers.k3s.K3sDriver`); the config model refuses any other with exit 2."""
    if cfg.kubernetes.distribution == "k3s":
        from core.drivers.k3s import K3sDriver

        return K3sDriver(cfg)
    from core.drivers.kubeadm import KubeadmDriver

    return KubeadmDriver(cfg)


__all__ = ["ApiUnavailable", "Credentials", "Driver", "DriverError", "InitResult", "SnapshotTaken", "driver_for"]
