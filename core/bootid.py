"""This boot's identity, what tells a node's incarnations apart, and its clock.

On a RAM-root node a new boot id proves that everything the node held in RAM (etcd's data
among it) is gone, which the recovery rules rely on (docs/recovery.md).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def boot_id(root: Path) -> str:
    """This boot's identity.

    On a real node (``root`` is ``/``) the kernel's ``/proc/sys/kernel/random/boot_id``. In
    the lab all nodes share one kernel, so each node root gets its own id in
    ``<root>/run/ek8s/boot_id``, created on first use; wiping the root (a lab reboot) makes a
    new one, as a reboot would.
    """
    if root == Path("/"):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    path = root / "run/ek8s/boot_id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        import uuid

        from core.fileperm import ensure_dir, write_atomic

        ensure_dir(path.parent)
        value = str(uuid.uuid4())
        write_atomic(path, value + "\n")
        return value


def since_process_start_s(pid: int | str = "self") -> float | None:
    """Seconds since process ``pid`` (default this one) started: ``CLOCK_BOOTTIME`` now minus
    the start time in ``/proc/<pid>/stat`` (field 22, clock ticks since boot; proc(5)); None
    when it cannot be read (no ``/proc``, the process gone). Resolution: one clock tick (10 ms).
    Unlike psutil's ``create_time``, no whole-second ``btime`` goes into it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # after "pid (comm)": field 3 is index 0
    except (OSError, IndexError, ValueError):
        return None
    return round(time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"), 3)
