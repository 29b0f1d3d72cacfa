"""Kubernetes distributions behind one interface (:class:`core.drivers.base.Driver`)."""

from __future__ import annotations

from core.config import NodeConfig
from core.drivers.base import ApiUnavailable, Credentials, Driver, DriverError, InitResult


def driver_for(cfg: NodeConfig) -> Driver:
    """The driver named by node.yaml's ``kubernetes.distribution`` (only kubeadm so far; the
    config model refuses the others with exit 2)."""
    from core.drivers.kubeadm import KubeadmDriver

    return KubeadmDriver(cfg)


__all__ = ["ApiUnavailable", "Credentials", "Driver", "DriverError", "InitResult", "driver_for"]
