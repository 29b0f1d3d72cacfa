"""Render the ek8s overlays for a node as Warewulf would, without a Warewulf server.

The renderer is ``manager/wwtemplate/main.go``: Go's own ``text/template`` with data shaped
like Warewulf 4.5's, 4.6's or 4.7's template data (its header cites the Warewulf source for each
shape). The golden tests (tests/integration/test_warewulf.py) and the lab's machines
(:mod:`lab.machines`) both use it, so what a lab node boots with is what the golden files
show. Needs Go (Debian ``golang-go``) to build it once.

The registry fixture it reads (:func:`registry_fixture`) is what Warewulf's node registry
holds once ``ek8s warewulf apply`` ran for an inventory: the role profiles (node image, root,
overlays, network defaults, every ``ek8s_*`` tag) and each node with its profiles, MAC,
address and DNS tags; the renderer merges a node's profiles into it as Warewulf does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from manager.inventory import Inventory

SOURCE = Path(__file__).resolve().parent / "wwtemplate"
TEMPLATE_SUFFIX = ".ww"


class RenderError(Exception):
    """The renderer could not be built, or a template did not render (stderr in the message)."""


def registry_fixture(inv: Inventory, server: dict[str, str], version: str = "4.7") -> dict[str, Any]:
    """The renderer's fixture for ``inv`` as ``ek8s warewulf apply`` leaves the registry of
    Warewulf ``version``: ``{"server": server, "profiles": {...}, "nodes": [...]}``. ``server``
    has the Warewulf server's ``ipaddr``, ``netmask``, ``network`` and ``buildhost``
    (strings). The role profiles carry what :func:`manager.wwplan.wanted_profile` gives them;
    each node has profiles ``default`` and its role's, and of its own only its MAC, address
    and DNS tags on device ``default`` and its labels, taints and roles
    (:data:`manager.wwplan.NODE_TAGS`); the renderer merges them as Warewulf does."""
    from manager.wwplan import NETNAME, dns_tags, wanted_profile

    nodes = []
    for n in inv.expanded():
        nodes.append(
            {
                "id": n.name,
                "profiles": ["default", inv.role_profile(n.role)],
                "primary_netdev": NETNAME,
                "netdevs": {NETNAME: {"hwaddr": n.mac, "ipaddr": n.address, "tags": dns_tags(inv)}},
                "tags": n.scheduling.tags(),
            }
        )
    profiles: dict[str, Any] = {"default": {"tags": {}}}
    for role in inv.roles:
        want = wanted_profile(inv, role, version)
        profiles[inv.role_profile(role)] = {
            "image": want.image,
            "root": want.root,
            "system_overlays": list(want.system_overlays),
            "runtime_overlays": list(want.runtime_overlays),
            "tags": dict(want.tags),
            "netdevs": {
                name: {"device": d.device, "netmask": d.netmask, "gateway": d.gateway}
                for name, d in want.netdevs.items()
            },
        }
    return {"server": server, "profiles": profiles, "nodes": nodes}


def build_renderer(out: Path) -> Path:
    """Build ``manager/wwtemplate`` into the executable ``out`` (unless it exists and is newer
    than ``main.go``) with ``go build``; return ``out``. Go's build cache goes beside it.
    Raises :class:`RenderError` when Go is missing or the build fails (within 300 s)."""
    main = SOURCE / "main.go"
    if out.exists() and out.stat().st_mtime >= main.stat().st_mtime:
        return out
    go = shutil.which("go")
    if go is None:
        raise RenderError("go not found: the Warewulf template renderer needs Go (apt-get install golang-go)")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"GOCACHE": str(out.parent / "gocache"), "GOFLAGS": "-mod=mod", "GO111MODULE": "off"}
    try:
        res = subprocess.run(
            [go, "build", "-o", str(out), "main.go"],
            cwd=SOURCE,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        raise RenderError("go build of the template renderer took over 300 s") from None
    if res.returncode != 0:
        raise RenderError(f"go build of {SOURCE} failed: {res.stderr.strip()}")
    return out


def render(
    tool: Path, fixture: Path, version: str, node: str, template: Path, out: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the renderer on one template for ``node`` with the fixture file ``fixture`` and
    Warewulf ``version`` ("4.5", "4.6" or "4.7"); with ``out`` the result is written there as
    Warewulf's CarefulWriteBuffer does, else it is the stdout. Returns the finished process
    (exit 1: the template failed, 2: bad arguments); raises ``subprocess.TimeoutExpired``
    after 60 s."""
    argv = [str(tool), "-version", version, "-data", str(fixture), "-node", node]
    if out is not None:
        argv += ["-out", str(out)]
    return subprocess.run([*argv, str(template)], capture_output=True, text=True, check=False, timeout=60)


def render_overlay(tool: Path, fixture: Path, version: str, node: str, overlay_root: Path, out: Path) -> list[Path]:
    """Render every ``*.ww`` file under ``overlay_root`` (an overlay's ``rootfs``) for
    ``node`` into ``out`` at the same relative path without ``.ww`` (what ``wwctl overlay
    build`` puts in the node's image); returns the files written. Raises
    :class:`RenderError` naming the template and the renderer's stderr."""
    written = []
    for tpl in sorted(overlay_root.rglob(f"*{TEMPLATE_SUFFIX}")):
        dest = out / tpl.relative_to(overlay_root).with_suffix("")
        dest.parent.mkdir(parents=True, exist_ok=True)
        res = render(tool, fixture, version, node, tpl, dest)
        if res.returncode != 0:
            raise RenderError(f"{tpl} for {node}: {res.stderr.strip()}")
        if dest.exists():  # a template that called {{ abort }} writes nothing
            written.append(dest)
    return written


def write_fixture(path: Path, inv: Inventory, server: dict[str, str], version: str = "4.7") -> Path:
    """Write :func:`registry_fixture` for ``inv`` to ``path`` as JSON; return ``path``."""
    path.write_text(json.dumps(registry_fixture(inv, server, version)))
    return path
