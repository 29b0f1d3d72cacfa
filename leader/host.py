"""Preparing the host beside the election: kernel settings and the baked image archives.

On a real node (``root`` is ``/``) the modules and sysctls Kubernetes needs (kubeadm's
preflight: ``net.ipv4.ip_forward`` must be 1; ``br_netfilter`` for bridged traffic) and the
offline images imported (:mod:`leader.images`). The lab's nodes share one kernel and pull
nothing, so there it does nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from core.config import NodeConfig
from core.logs import get_logger
from leader.images import ImportResult, archives, import_archives

log = get_logger("ek8s.host", "prepare")

MODULES = ("overlay", "br_netfilter")
SYSCTLS = (
    ("net/ipv4/ip_forward", "1"),
    ("net/bridge/bridge-nf-call-iptables", "1"),
    ("net/bridge/bridge-nf-call-ip6tables", "1"),
)


def prepare_kernel(modprobe_timeout_s: float = 30.0) -> None:
    """Load :data:`MODULES` with ``modprobe`` (each bounded by ``modprobe_timeout_s``
    seconds) and write :data:`SYSCTLS` under ``/proc/sys``. Logs what fails, raises nothing:
    kubeadm's preflight names what is still missing."""
    for mod in MODULES:
        try:
            res = subprocess.run(
                ["modprobe", mod], capture_output=True, text=True, check=False, timeout=modprobe_timeout_s
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            log.warning("modprobe failed", extra={"module": mod, "error": str(err)})
            continue
        if res.returncode != 0:
            log.warning("modprobe failed", extra={"module": mod, "error": res.stderr.strip()})
    for key, value in SYSCTLS:
        try:
            Path("/proc/sys", key).write_text(value)
        except OSError as err:
            log.warning("cannot set sysctl", extra={"key": key, "error": str(err)})


def prepare_host(cfg: NodeConfig) -> ImportResult | None:
    """Everything the node needs before kubeadm runs; returns what the image import did, or
    None when there was nothing to import (the lab, or no archives baked into the image)."""
    if cfg.root != Path("/"):
        return None
    prepare_kernel()
    directory = cfg.kubernetes.image_archives
    if not archives(directory):
        return None
    return import_archives(directory, workers=4, timeout_s=cfg.timeouts.command_s)
