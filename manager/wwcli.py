"""``ek8s overlay ...`` and ``ek8s warewulf ...``: the operator's side on the Warewulf server."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

from manager.inventory import Inventory, InventoryError, load_inventory

if TYPE_CHECKING:
    from manager.wwplan import Plan

VERSION_CHOICE = click.Choice(["auto", "4.5", "4.6", "4.7"])


def _inventory(path: str) -> Inventory:
    """The inventory at ``path``; exit 2 when it is invalid, or when ``$EK8S_CLUSTER`` names
    another cluster than it does (the operator means another cluster than the file)."""
    from manager.clusters import ENV

    try:
        inv = load_inventory(path)
    except InventoryError as err:
        click.echo(f"ek8s: {err}", err=True)
        sys.exit(2)
    meant = os.environ.get(ENV)
    if meant and meant != inv.cluster:
        click.echo(f"ek8s: {path} is cluster {inv.cluster}'s inventory, but ${ENV} is {meant}; nothing done", err=True)
        sys.exit(2)
    warning = inv.quorum_warning()
    if warning:
        click.echo(f"ek8s: warning: {path}: {warning}", err=True)
    return inv


def _version(inv: Inventory, asked: str, wwctl: str) -> str:
    from manager.wwplan import parse_version
    from manager.wwregistry import WarewulfError, run_wwctl

    wanted = asked if asked != "auto" else inv.warewulf.version
    if wanted != "auto":
        return wanted
    try:
        return parse_version(run_wwctl(wwctl, "version"))
    except WarewulfError as err:
        click.echo(f"ek8s: {err}", err=True)
        sys.exit(1)


@click.group()
def overlay() -> None:
    """Warewulf overlays carrying ek8s (units, node.yaml.ww, the project's code)."""


@overlay.command("build")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="directory to write the overlays 'ek8s' and 'ek8s-hosts' into, e.g. /var/lib/warewulf/overlays",
)
def overlay_build(out: Path) -> None:
    """Assemble the overlays with this checkout's code in them (idempotent).

    Then `wwctl overlay build` renders them per node (docs/warewulf.md). Exit 2 when the
    overlay sources are missing or OUT holds an 'ek8s' or 'ek8s-hosts' this command did not make.
    """
    from manager.overlay import OverlayError, build

    try:
        dirs = build(out)
    except OverlayError as err:
        click.echo(f"ek8s: {err}", err=True)
        sys.exit(2)
    for d in dirs:
        click.echo(f"overlay {d.name}: {d}")


@click.group()
def warewulf() -> None:
    """Turn an inventory (warewulf_conf/inventory.yaml) into Warewulf profiles, nodes and share."""


def _common(f: Callable[..., None]) -> Callable[..., None]:
    """INVENTORY, --version, --wwctl, --conf-dir and --with, shared by plan and apply."""
    f = click.option(
        "--with",
        "others",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="another cluster's inventory on this server: refuse what collides with it (repeatable; the "
        "clusters in Warewulf's registry are checked anyway)",
    )(f)
    f = click.option(
        "--conf-dir",
        default="/etc/warewulf",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="where warewulf.conf and nodes.conf are",
    )(f)
    f = click.option("--wwctl", default="wwctl", show_default=True, help="the wwctl to ask and run")(f)
    f = click.option(
        "--version",
        "ww_version",
        type=VERSION_CHOICE,
        default="auto",
        show_default=True,
        help="Warewulf version to plan for (auto: the inventory's, else `wwctl version`)",
    )(f)
    return click.argument("inventory", type=click.Path(dir_okay=False))(f)


def _plan(
    inventory: str,
    ww_version: str,
    wwctl: str,
    conf_dir: Path,
    offline: bool,
    others: tuple[str, ...] = (),
    systemctl: str = "systemctl",
) -> tuple[Inventory, Plan]:
    """Inventory, version, registry and local files -> (inventory, plan); exits 2 for a bad
    inventory, one that collides with another cluster (:mod:`manager.collisions`) or a file
    that cannot be edited, 1 when wwctl cannot be asked."""
    from manager import collisions, wwconf, wwplan, wwregistry

    inv = _inventory(inventory)
    other_invs = [(path, _inventory(path)) for path in others]
    version = _version(inv, ww_version, wwctl)
    try:
        registry = wwregistry.offline() if offline else wwregistry.read_registry(version, wwctl, conf_dir)
    except wwregistry.WarewulfError as err:
        click.echo(f"ek8s: {err} (use --offline to plan for an empty registry)", err=True)
        sys.exit(1)
    clashes = collisions.check(inv, None if offline else registry, other_invs)
    if clashes:
        click.echo(f"ek8s: {inventory}: cluster {inv.cluster} collides with another cluster on this server:", err=True)
        for line in clashes:
            click.echo(f"  {line}", err=True)
        click.echo("ek8s: nothing was run", err=True)
        sys.exit(2)
    try:
        local = wwplan.Local(conf_dir=conf_dir) if offline else wwplan.local_snapshot(inv, conf_dir, systemctl)
        return inv, wwplan.plan(inv, version, registry, local)
    except wwconf.ConfError as err:
        click.echo(f"ek8s: {err}; nothing was run", err=True)
        sys.exit(2)


@warewulf.command("plan")
@_common
@click.option("--offline", is_flag=True, help="read neither wwctl nor the files: plan as for a fresh Warewulf")
def warewulf_plan(
    inventory: str, ww_version: str, wwctl: str, conf_dir: Path, others: tuple[str, ...], offline: bool
) -> None:
    """Print what `apply` would do for INVENTORY, as a shell script: only the wwctl commands
    that change something, and the file edits as unified diffs.

    Exit 2 when INVENTORY is invalid, collides with another cluster (its registry's role
    profiles and nodes, or a --with inventory: the same name, VIP, VRRP router id on one
    network, node or address), or warewulf.conf/nodes.conf cannot be read as YAML; 1 when
    wwctl cannot be asked (for the version when neither --version nor the inventory names
    one, for the registry without --offline).
    """
    from manager.wwplan import render_plan

    inv, p = _plan(inventory, ww_version, wwctl, conf_dir, offline, others)
    click.echo(render_plan(inv, p), nl=False)


@warewulf.command("apply")
@_common
@click.option("--dry-run", is_flag=True, help="run nothing: list the steps and show the file edits as diffs")
@click.option(
    "--service",
    default="service",
    show_default=True,
    help="the command that reloads warewulfd after an edit of nodes.conf (`service warewulfd reload`)",
)
@click.option(
    "--exportfs",
    default="exportfs",
    show_default=True,
    help="the command that exports what /etc/exports.d/ek8s-<cluster>.exports lists (`exportfs -ra`)",
)
@click.option(
    "--systemctl",
    default="systemctl",
    show_default=True,
    help="the command that installs and starts the fence service (fencing: warewulf-power)",
)
@click.option("-v", "--verbose", is_flag=True, help="print each full command (and each file's diff)")
def warewulf_apply(
    inventory: str,
    ww_version: str,
    wwctl: str,
    conf_dir: Path,
    others: tuple[str, ...],
    dry_run: bool,
    service: str,
    exportfs: str,
    systemctl: str,
    verbose: bool,
) -> None:
    """Run the plan for INVENTORY, one line per step; stop at the first failing step and show
    its output on stderr. warewulf.conf and nodes.conf are edited only after every wwctl
    step that changes the registry succeeded; the nodes' labels, taints and roles are
    published to the share last (Phylactery applies them to running Nodes). With fencing:
    warewulf-power in INVENTORY it installs, enables and starts ek8s-fence@<cluster>.service
    (ek8s fence serve) on this server; without, it stops and removes one an earlier apply left.

    Exit 2 when INVENTORY is invalid, collides with another cluster (as for plan) or
    warewulf.conf/nodes.conf cannot be read as YAML (nothing run), 1 when wwctl cannot be
    asked or a step fails or runs over 10 minutes.
    """
    from manager.wwapply import Reporter, apply

    inv, p = _plan(inventory, ww_version, wwctl, conf_dir, False, others, systemctl)
    reporter = Reporter(verbose=verbose)
    code = apply(
        inv,
        p,
        wwctl=wwctl,
        service=service,
        exportfs=exportfs,
        systemctl=systemctl,
        conf_dir=conf_dir,
        reporter=reporter,
        dry_run=dry_run,
    )
    sys.exit(code)


@warewulf.command("roles")
@click.argument("inventory", type=click.Path(dir_okay=False))
def warewulf_roles(inventory: str) -> None:
    """Publish INVENTORY's nodes with their labels, taints and roles to the cluster's share
    (<share>/<cluster>/inventory.json) and nothing else: within about 10 s Phylactery puts the
    running Nodes in line, touching only what the inventory manages. `ek8s warewulf apply`
    does this too, after it set the nodes' tags (which the next boot's node.yaml carries: run
    apply, or the Nodes lose the change at their next reboot until it ran).

    Exit 2 when INVENTORY is invalid, 1 when the share cannot be written.
    """
    from manager.wwapply import publish

    inv = _inventory(inventory)
    try:
        path = publish(inv)
    except OSError as err:
        click.echo(f"ek8s: cannot write the share: {err}", err=True)
        sys.exit(1)
    with_roles = sum(1 for n in inv.expanded() if n.scheduling)
    click.echo(f"{path}: {len(inv.expanded())} nodes, {with_roles} with labels, taints or roles")


@warewulf.command("nfs")
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--version", "ww_version", type=click.Choice(["4.5", "4.6", "4.7"]), default="4.7", show_default=True)
def warewulf_nfs(inventory: str, ww_version: str) -> None:
    """Print the share's entries for warewulf.conf (and nodes.conf on 4.6+) as YAML.

    Exit 2 when INVENTORY is invalid.
    """
    from manager.wwconf import nfs_entries

    inv = _inventory(inventory)
    for fname, data in nfs_entries(inv, ww_version).items():
        if isinstance(data, str):  # ek8s's own exports file
            click.echo(f"# /etc/exports.d/{fname}")
            click.echo(data, nl=False)
            continue
        click.echo(f"# /etc/warewulf/{fname}")
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
