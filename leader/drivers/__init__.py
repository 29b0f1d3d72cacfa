"""Kubernetes distributions behind one interface (:class:`leader.drivers.base.Driver`)."""

from __future__ import annotations

from leader.config import NodeConfig
from leader.drivers.base import Driver, DriverError


def driver_for(cfg: NodeConfig) -> Driver:
    """The driver named by ``kubernetes.distribution`` (only kubeadm so far)."""
    from leader.drivers.kubeadm import KubeadmDriver

    return KubeadmDriver(cfg)


__all__ = ["Driver", "DriverError", "driver_for"]
