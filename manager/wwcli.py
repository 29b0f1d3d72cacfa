"""``ek8s overlay ...`` and ``ek8s warewulf ...``: the operator's side on the Warewulf server."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click
import yaml

from manager.inventory import Inventory, InventoryError, load_inventory

VERSION_CHOICE = click.Choice(["auto", "4.5", "4.6"])


def _inventory(path: str) -> Inventory:
    try:
        inv = load_inventory(path)
    except InventoryError as err:
        click.echo(f"ek8s: {err}", err=True)
        sys.exit(2)
    warning = inv.quorum_warning()
    if warning:
        click.echo(f"ek8s: warning: {path}: {warning}", err=True)
    return inv


def _version(inv: Inventory, asked: str, wwctl: str) -> str:
    from manager.wwplan import WarewulfError, detect_version

    wanted = asked if asked != "auto" else inv.warewulf.version
    if wanted != "auto":
        return wanted
    try:
        return detect_version(wwctl)
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
    """Turn an inventory (warewulf_conf/inventory.yaml) into Warewulf nodes, profile and share."""


def _common(f: Callable[..., None]) -> Callable[..., None]:
    """INVENTORY, --version and --wwctl, shared by plan and apply."""
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


@warewulf.command("plan")
@_common
@click.option("--offline", is_flag=True, help="do not read the registry: plan as if Warewulf held nothing yet")
def warewulf_plan(inventory: str, ww_version: str, wwctl: str, offline: bool) -> None:
    """Print the idempotent wwctl commands (and the NFS entries) for INVENTORY.

    Exit 2 when INVENTORY is invalid, 1 when wwctl cannot be asked (for the version when
    neither --version nor the inventory names one, for the registry without --offline).
    """
    from manager.wwplan import Registry, WarewulfError, plan, read_registry, render_plan

    inv = _inventory(inventory)
    version = _version(inv, ww_version, wwctl)
    registry = Registry()
    if not offline:
        try:
            registry = read_registry(wwctl)
        except WarewulfError as err:
            click.echo(f"ek8s: {err} (use --offline to plan for an empty registry)", err=True)
            sys.exit(1)
    click.echo(render_plan(inv, version, plan(inv, version, registry)), nl=False)


@warewulf.command("apply")
@_common
@click.option(
    "--conf-dir",
    default="/etc/warewulf",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="where warewulf.conf and nodes.conf are",
)
def warewulf_apply(inventory: str, ww_version: str, wwctl: str, conf_dir: Path) -> None:
    """Run the plan for INVENTORY; stop at the first failing command and show its output.

    Exit 2 when INVENTORY is invalid, 1 when wwctl cannot be asked or a step fails or runs
    over 10 minutes.
    """
    from manager.wwplan import WarewulfError, apply, plan, read_registry

    inv = _inventory(inventory)
    version = _version(inv, ww_version, wwctl)
    try:
        registry = read_registry(wwctl)
    except WarewulfError as err:
        click.echo(f"ek8s: {err}", err=True)
        sys.exit(1)
    sys.exit(apply(inv, version, plan(inv, version, registry), wwctl=wwctl, conf_dir=conf_dir, say=click.echo))


@warewulf.command("nfs")
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--version", "ww_version", type=click.Choice(["4.5", "4.6"]), default="4.6", show_default=True)
def warewulf_nfs(inventory: str, ww_version: str) -> None:
    """Print the share's entries for warewulf.conf (and nodes.conf on 4.6) as YAML.

    Exit 2 when INVENTORY is invalid.
    """
    from manager.wwplan import nfs_entries

    inv = _inventory(inventory)
    for fname, data in nfs_entries(inv, ww_version).items():
        click.echo(f"# /etc/warewulf/{fname}")
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
