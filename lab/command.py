"""``ek8s lab`` driven from another program (the day-2 lab tests and the benches that run a lab
the same way): the command as a subprocess, and the settings those labs boot with.

:data:`DAY2_SETTINGS` are ``ek8s lab up --set`` values (node.yaml's dotted keys): leases of
8 s, heartbeats every second, Phylactery reconciling and snapshotting every 2 s (3 kept), so
that a node's reboot or removal settles in seconds instead of the defaults' half minute.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

DAY2_SETTINGS = (
    "timeouts.lease_ttl_s=8",
    "timeouts.heartbeat_interval_s=1",
    "phylactery.reconcile_interval_s=2",
    "phylactery.snapshot_interval_s=2",
    "phylactery.snapshots_keep=3",
)


def set_args(settings: Iterable[str]) -> list[str]:
    """``--set S`` for each of ``settings`` (``ek8s lab up``'s repeated option)."""
    return [arg for s in settings for arg in ("--set", s)]


def lab_cmd(lab_dir: Path, prefix: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``ek8s lab --dir LAB_DIR --prefix PREFIX ARGS`` with this interpreter, output captured.
    Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
    cmd = [sys.executable, "-m", "manager", "lab", "--dir", str(lab_dir), "--prefix", prefix, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
