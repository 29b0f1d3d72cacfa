"""Importing the offline container images on a node, in parallel with the election.

Images are exported once on the Warewulf server (``images/export.sh``) and baked into the
node image under ``/var/lib/ek8s/images`` (``image_builder/``), so a node reads them from its
own RAM, not from NFS. containerd can only import into a running daemon, so the import is
left to boot time; the agent runs it beside the election, several archives at once, and
kubeadm waits for it (the proof of concept imported 11 archives one after another from NFS
before it even started its election, most of its 6.4 s stage 2).
"""

from __future__ import annotations

import logging
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ek8s.images")

# containerd's namespace for Kubernetes images (kubelet and kubeadm look there).
CTR_IMPORT = ["ctr", "--namespace", "k8s.io", "images", "import"]


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_archives` did: archives imported, failures (file -> message), seconds."""

    imported: list[str]
    failed: dict[str, str]
    seconds: float


def archives(directory: Path) -> list[Path]:
    """``*.tar`` files in ``directory``, sorted; empty when it does not exist."""
    return sorted(directory.glob("*.tar")) if directory.is_dir() else []


def import_archives(
    directory: Path, command: list[str] | None = None, workers: int = 4, timeout_s: float = 300
) -> ImportResult:
    """Import every archive of ``directory`` with ``command + [archive]`` (default
    ``ctr -n k8s.io images import``), ``workers`` at a time. Never raises for a failed
    archive: kubeadm's own preflight names a missing image, and it may still be pullable."""
    cmd = command or CTR_IMPORT
    files = archives(directory)
    started = time.monotonic()

    def one(path: Path) -> tuple[str, str | None]:
        try:
            res = subprocess.run([*cmd, str(path)], capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            return path.name, str(err)
        return path.name, None if res.returncode == 0 else (res.stderr.strip() or f"exit {res.returncode}")

    imported: list[str] = []
    failed: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="image-import") as pool:
        for name, error in pool.map(one, files):
            if error is None:
                imported.append(name)
            else:
                failed[name] = error
                log.warning("image archive not imported", extra={"phase": "prepare", "archive": name, "error": error})
    return ImportResult(imported, failed, round(time.monotonic() - started, 3))
