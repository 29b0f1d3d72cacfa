"""``ek8s overlay build``: the Warewulf overlays with the project's own code in them.

Two overlays come out, each a Warewulf overlay directory (``<name>/rootfs/...``):

- ``ek8s`` (system overlay): the units, ``/etc/ek8s/node.yaml.ww``, sysctls and modules, and
  the code that runs on nodes (``core``, ``leader``, ``phylactery``) under
  ``/usr/local/lib/ek8s/python`` with the wrappers ``ek8s-node`` and ``ek8s-phylactery`` in
  ``/usr/local/sbin`` (what the units run). Heavy dependencies (aiohttp, pydantic,
  kubernetes...) come from the node image, so a code change needs an overlay rebuild, not an
  image rebuild (docs/warewulf.md). Not under ``/opt``: Warewulf exports the server's ``/opt`` to
  the nodes by default (v4.5.8 ``etc/warewulf.conf``: ``mount: false``; v4.6.5
  ``etc/nodes.conf``, the default profile's ``fstab``: ``noauto``), and a site that mounts
  it would hide whatever the overlay put there.
- ``ek8s-hosts`` (system and runtime overlay): ``/etc/hosts.ww`` with the VIP's name.

The operator's code (``manager``) and the emulation (``lab``) are never copied: nodes run the
real kubeadm and are managed from the Warewulf server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import core
import leader
import phylactery

MARKER = ".ek8s-overlay"
OVERLAYS = ("ek8s", "ek8s-hosts")

# The programs that run on a node: wrapper name -> Python package run with ``-m``.
PROGRAMS = {"ek8s-node": "leader", "ek8s-phylactery": "phylactery"}
NODE_PACKAGES = (core, leader, phylactery)

# Where the overlay puts the code, relative to the node's root; the node image puts the CNI
# manifest beside it (LIB_DIR/manifests, image_builder/Containerfile.base).
LIB_DIR = Path("usr/local/lib/ek8s")
# The overlay trees inside an installed wheel (copied there by setup.py).
PACKAGED = Path(__file__).resolve().parent / "data" / "overlay"

WRAPPER = """#!/bin/sh
# {name}: the project's code from this overlay (/usr/local/lib/ek8s/python, found from this
# script's own place, /usr/local/sbin), its dependencies from the node image.
lib="$(cd "$(dirname "$0")/.." && pwd)/lib/ek8s/python"
PYTHONPATH="${{lib}}${{PYTHONPATH:+:$PYTHONPATH}}"
export PYTHONPATH
exec "${{EK8S_PYTHON:-python3.11}}" -m {package} "$@"
"""


class OverlayError(Exception):
    """The overlay cannot be built where asked: its sources are missing, or the target
    directory exists and was not made by ``ek8s overlay build``."""


def source_dir() -> Path:
    """The overlay trees: ``overlay/`` of the checkout this code runs from (next to the
    ``leader`` package: an editable install, the lab), else the copy an installed wheel
    carries in ``manager/data/overlay`` (setup.py). Raises :class:`OverlayError` when
    neither has ``ek8s/rootfs``."""
    checkout = Path(leader.__file__).resolve().parents[1] / "overlay"
    for src in (checkout, PACKAGED):
        if (src / "ek8s" / "rootfs").is_dir():
            return src
    raise OverlayError(f"overlay sources not found in {checkout} nor {PACKAGED} (a broken installation)")


def _symlinks(src: Path) -> dict[str, str]:
    """The symbolic links an installed wheel could not carry (setup.py recorded them in
    ``overlay-symlinks.json`` beside its overlay trees): ``{path under src: link target}``;
    empty for a checkout, whose overlay trees hold their links."""
    try:
        return dict(json.loads((src.parent / "overlay-symlinks.json").read_text()))
    except FileNotFoundError:
        return {}


def _ignore(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))]


def compile_bytecode(lib: Path) -> None:
    """Compile every module under ``lib`` to ``__pycache__/<module>.<tag>.pyc`` for the Python
    that runs this (``sys.implementation.cache_tag``, e.g. ``cpython-311``: the nodes' python3.11
    when the server runs ek8s with python3.11, docs/warewulf.md), so a node's agent does not
    compile its modules at every boot (its root is in RAM: ~50 million instructions, ~15 ms,
    before its first share operation, and more for the rest of the agent; docs/benchmarks.md
    section 12). Another Python on the node ignores them and compiles, as without them.

    The bytecode is checked against a hash of its source (PEP 552 ``checked-hash``), not the
    source's mtime, which Warewulf's overlay images need not keep: an edited source on a node
    is compiled again. The same tree gives the same bytes wherever it is built: the source paths
    recorded are the node's (``compileall -d``; the import system puts the real path in
    tracebacks anyway) and the child runs with ``PYTHONHASHSEED=0`` (the order of a set
    constant follows string hashes). Raises :class:`OverlayError` when a module does not
    compile."""
    node_dir = f"/{LIB_DIR}/python"
    cmd = [sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", "-d", node_dir, str(lib)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, check=False)
    if res.returncode != 0:
        raise OverlayError(f"compiling the node's code failed: {(res.stdout + res.stderr).strip()[-2000:]}")


def build(out: Path) -> list[Path]:
    """Write the overlays under ``out`` (e.g. ``/var/lib/warewulf/overlays``); return their dirs.

    Returns ``[out/ek8s, out/ek8s-hosts]``. Idempotent: an overlay directory made by an earlier
    build (it has ``.ek8s-overlay``, which holds ``core.__version__`` and
    :func:`core.revision`, also written to the copied code's ``core/REVISION``) is replaced
    whole; any other existing directory of the same name is refused with
    :class:`OverlayError`, before anything is written. The copied code comes with its
    bytecode (:func:`compile_bytecode`). Raises ``OSError`` (``shutil``) when ``out`` cannot
    be written; Warewulf renders the result with ``wwctl overlay build``.
    """
    src = source_dir()
    targets = [out / name for name in OVERLAYS]
    for t in targets:
        if t.exists() and not (t / MARKER).exists():
            raise OverlayError(f"{t} exists and was not made by `ek8s overlay build`; refusing to replace it")
    out.mkdir(parents=True, exist_ok=True)
    version = f"{core.__version__} {core.revision()}"
    links = _symlinks(src)
    for name, t in zip(OVERLAYS, targets, strict=True):
        if t.exists():
            shutil.rmtree(t)
        shutil.copytree(src / name, t, symlinks=True, ignore=_ignore)
        for rel, target in links.items():
            if rel.split("/", 1)[0] == name:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, out / rel)
        (t / MARKER).write_text(f"{version}\n")
    root = out / "ek8s" / "rootfs"
    lib = root / LIB_DIR / "python"
    for pkg in NODE_PACKAGES:
        assert pkg.__file__ is not None
        pkg_dir = Path(pkg.__file__).resolve().parent
        shutil.copytree(pkg_dir, lib / pkg_dir.name, ignore=_ignore)
    # The node's copy of core says which tree it came from (core.revision(): no git there).
    (lib / "core" / core.REVISION_FILE).write_text(f"{core.revision()}\n")
    compile_bytecode(lib)
    (root / LIB_DIR / "VERSION").write_text(f"{version}\n")
    for name, package in PROGRAMS.items():
        wrapper = root / "usr" / "local" / "sbin" / name
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(WRAPPER.format(name=name, package=package))
        wrapper.chmod(0o755)
    return targets
