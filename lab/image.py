"""The lab's node image (docs/lab.md): Debian 12 made by ``image_builder/lab-node.sh``,
cached on disk by a hash of everything that goes into it.

The cache is ``$EK8S_LAB_IMAGE_CACHE`` (default ``/var/cache/ek8s-lab``), one directory per
image: ``images/<key>/rootfs`` (a complete tree: the recipe builds beside it and renames),
``images/<key>/build.log`` and ``build.json`` (seconds the build took). The key is the sha256
of the recipe, the files it copies in (:data:`RECIPE_FILES`, ``scripts/fetch-deb.sh``, which
it runs for etcd 3.5), the Python dependencies it installs (pyproject.toml's
``dependencies``) and the mirror, so a second ``ek8s lab up --machines`` reuses the image and
a change of any of them builds a new one. Builds are serialised by a file lock beside the
images.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import TextIO

from filelock import FileLock, Timeout

from lab import machines

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "image_builder" / "lab-node.sh"
# Files the recipe copies in or runs: a change of any of them makes a new image too.
FETCH_DEB = REPO / "scripts" / "fetch-deb.sh"  # the recipe unpacks Debian 13's etcd 3.5 with it
RECIPE_FILES = (REPO / "image_builder" / "ek8s-node-exporter.service", FETCH_DEB)
MIRROR = "http://deb.debian.org/debian"
BUILD_TIMEOUT_S = 1800.0
KEY_LENGTH = 16
PROGRESS_EVERY_S = 10.0


class ImageError(Exception):
    """The image cannot be built here (no root, no debootstrap, no mirror); the message says
    why and where the build log is."""


def cache_dir() -> Path:
    """``$EK8S_LAB_IMAGE_CACHE`` or ``/var/cache/ek8s-lab`` (on disk: the image outlives labs)."""
    return Path(os.environ.get("EK8S_LAB_IMAGE_CACHE", "/var/cache/ek8s-lab"))


def requirements() -> str:
    """The node's Python dependencies, one per line, from pyproject.toml (as build.sh writes
    requirements-node.txt for the Rocky images)."""
    with open(REPO / "pyproject.toml", "rb") as f:
        return "\n".join(tomllib.load(f)["project"]["dependencies"]) + "\n"


def image_key(mirror: str = MIRROR) -> str:
    """The first 16 hex digits of sha256(recipe, the package fetcher it runs, requirements,
    mirror)."""
    h = hashlib.sha256()
    files = [p.read_bytes() for p in RECIPE_FILES]
    for part in (RECIPE.read_bytes(), *files, requirements().encode(), mirror.encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:KEY_LENGTH]


def image_path(mirror: str = MIRROR) -> Path:
    """Where the image for the current inputs is (or will be): ``<cache>/images/<key>/rootfs``."""
    return cache_dir() / "images" / image_key(mirror) / "rootfs"


def run_build(
    argv: list[str], log: Path, timeout_s: float, progress: TextIO | None, every_s: float = PROGRESS_EVERY_S
) -> int:
    """Run the build ``argv`` (stdin closed), its output (stdout and stderr) to the file
    ``log``; every ``every_s`` seconds while it runs, one line to ``progress`` (when given):
    seconds so far and the build's last line (debootstrap's ``I: Retrieving ...``, pip's
    ``Collecting ...``). Returns its exit status. Raises ``subprocess.TimeoutExpired`` after
    ``timeout_s`` seconds (the build's process group is killed), ``OSError`` when it cannot start."""
    last = [""]
    started = time.monotonic()
    with (
        open(log, "wb") as out,
        subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        ) as proc,
    ):
        assert proc.stdout is not None
        lines = proc.stdout

        def copy() -> None:
            for line in lines:
                out.write(line)
                out.flush()
                if line.strip():
                    last[0] = line.decode(errors="replace").strip()

        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
        try:
            while True:
                try:
                    rc = proc.wait(timeout=max(0.0, min(every_s, started + timeout_s - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    elapsed = time.monotonic() - started
                    if elapsed >= timeout_s:
                        raise
                    if progress is not None:
                        print(f"  image build {elapsed:5.0f}s: {last[0][:100]}", file=progress, flush=True)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the recipe and debootstrap, pip... below it
            raise
        finally:
            reader.join(timeout=5)
    return rc


def ensure_image(mirror: str = MIRROR, progress: bool = True) -> Path:
    """The image's root directory, built first when the cache has none for these inputs.

    A build runs ``image_builder/lab-node.sh`` (debootstrap and pip from ``mirror`` and
    PyPI; about 3 min on 2 cores), output to ``build.log`` beside the image, seconds taken to
    ``build.json``; with ``progress`` lines on stderr say so, how long it has run and what it
    does (:func:`run_build`). Raises :class:`ImageError` when the build fails or runs over
    ``BUILD_TIMEOUT_S`` (the log's tail in the message), or when another build holds the lock
    for as long.
    """
    root = image_path(mirror)
    if (root / "usr/bin/kubeadm").exists():
        return root
    if os.geteuid() != 0:
        raise ImageError("building the lab's node image needs root (debootstrap, chroot)")
    if not Path("/usr/sbin/debootstrap").exists():
        raise ImageError("debootstrap not found: apt-get install debootstrap (make lab installs it)")
    base = root.parent
    base.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(base.parent / f"{base.name}.lock"), timeout=BUILD_TIMEOUT_S):
            if (root / "usr/bin/kubeadm").exists():  # another process built it meanwhile
                return root
            req = base / "requirements-node.txt"
            req.write_text(requirements())
            log = base / "build.log"
            if progress:
                print(f"building the lab's node image {base.name} (a few minutes; log: {log})", file=sys.stderr)
            started = time.monotonic()
            try:
                with machines.node_umask():  # the image's modes, not the caller's
                    rc = run_build(
                        ["bash", str(RECIPE), str(root), str(req), mirror],
                        log,
                        BUILD_TIMEOUT_S,
                        sys.stderr if progress else None,
                    )
            except subprocess.TimeoutExpired:
                raise ImageError(f"the image build took over {BUILD_TIMEOUT_S:.0f}s; see {log}") from None
            seconds = time.monotonic() - started
            if rc != 0 or not (root / "usr/bin/kubeadm").exists():
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise ImageError(f"the lab's node image did not build (exit {rc}); {log}:\n{tail}")
            (base / "build.json").write_text(json.dumps({"seconds": round(seconds, 1), "mirror": mirror}) + "\n")
            if progress:
                print(f"the lab's node image {base.name} built in {seconds:.0f}s: {root}", file=sys.stderr)
            return root
    except Timeout:
        raise ImageError(f"another image build holds {base}.lock for over {BUILD_TIMEOUT_S:.0f}s") from None
