"""``ek8s overlay build``: the Warewulf overlays with the project's own code in them.

Two overlays come out, each a Warewulf overlay directory (``<name>/rootfs/...``):

- ``ek8s`` (system overlay): the units, ``/etc/ek8s/node.yaml.ww``, sysctls and modules, and
  the code of ``leader`` and ``phylactery`` under ``/opt/ek8s/lib`` with an ``ek8s`` wrapper
  in ``/usr/local/sbin``. Heavy dependencies (aiohttp, pydantic, kubernetes...) come from the
  node image, so a code change needs an overlay rebuild, not an image rebuild (DESIGN §7).
- ``ek8s-hosts`` (system and runtime overlay): ``/etc/hosts.ww`` with the VIP's name.

The emulation (``lab/``) is never copied: nodes run the real kubeadm.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import leader
import phylactery

MARKER = ".ek8s-overlay"
OVERLAYS = ("ek8s", "ek8s-hosts")

WRAPPER = """#!/bin/sh
# ek8s: the project's code from this overlay (/opt/ek8s/lib, found from this script's own
# place, /usr/local/sbin), its dependencies from the node image.
lib="$(cd "$(dirname "$0")/../../.." && pwd)/opt/ek8s/lib"
PYTHONPATH="${lib}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
exec "${EK8S_PYTHON:-python3.11}" -m leader "$@"
"""


class OverlayError(Exception):
    """The overlay cannot be built where asked."""


def source_dir() -> Path:
    """The checked-in overlay trees (``overlay/`` next to the ``leader`` package)."""
    src = Path(leader.__file__).resolve().parents[1] / "overlay"
    if not (src / "ek8s" / "rootfs").is_dir():
        raise OverlayError(f"{src}: overlay sources not found (run from a checkout of ephemeral-k8s)")
    return src


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("ephemeral-k8s")
    except PackageNotFoundError:
        v = "unknown"
    repo = Path(leader.__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        rev = ""
    return f"{v} {rev}".strip()


def _ignore(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))]


def build(out: Path) -> list[Path]:
    """Write the overlays under ``out`` (e.g. ``/var/lib/warewulf/overlays``); return their dirs.

    Idempotent: an overlay directory made by an earlier build (it has ``.ek8s-overlay``) is
    replaced whole; any other existing directory of the same name is refused with
    :class:`OverlayError`, before anything is written.
    """
    src = source_dir()
    targets = [out / name for name in OVERLAYS]
    for t in targets:
        if t.exists() and not (t / MARKER).exists():
            raise OverlayError(f"{t} exists and was not made by `ek8s overlay build`; refusing to replace it")
    out.mkdir(parents=True, exist_ok=True)
    version = _version()
    for name, t in zip(OVERLAYS, targets, strict=True):
        if t.exists():
            shutil.rmtree(t)
        shutil.copytree(src / name, t, symlinks=True, ignore=_ignore)
        (t / MARKER).write_text(f"{version}\n")
    root = out / "ek8s" / "rootfs"
    lib = root / "opt" / "ek8s" / "lib"
    for pkg in (leader, phylactery):
        assert pkg.__file__ is not None
        pkg_dir = Path(pkg.__file__).resolve().parent
        shutil.copytree(pkg_dir, lib / pkg_dir.name, ignore=_ignore)
    (root / "opt" / "ek8s" / "VERSION").write_text(f"{version}\n")
    wrapper = root / "usr" / "local" / "sbin" / "ek8s"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    return targets
