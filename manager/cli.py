"""``ek8s``: the one command for operators, on the Warewulf server and on nodes alike.

It composes the programs below it (``ek8s node`` is :mod:`leader.cli`, ``ek8s phylactery`` is
:mod:`phylactery.cli`) with the manager's own commands, and adds command groups that packages
above it register under the ``ek8s.commands`` entry point (the lab's ``ek8s lab``), so that no
import runs up the layers (docs/architecture.md).

Exit codes: 0 success, 1 operational failure, 2 invalid input or config (the message names
the file and the field; nothing is written anywhere).
"""

from __future__ import annotations

import functools
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from core import __version__
from core.cli import existing_store, fail, load_or_exit
from core.credentials import GRACE_S
from core.share import ShareError, ShareStore
from leader.cli import node
from manager.benchcli import bench
from manager.credentials import credentials
from manager.credentials import rotate as rotate_credentials
from manager.wwcli import overlay, warewulf
from phylactery.cli import phylactery

PLUGIN_GROUP = "ek8s.commands"
SHARE_OPTION = click.option(
    "--share", "share_path", default="/share", show_default=True, type=click.Path(path_type=Path), help="the share"
)
CLUSTER_OPTION = click.option("--cluster", default="default", show_default=True, help="cluster name (share directory)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ek8s")
def cli() -> None:
    """Highly available Kubernetes on stateless Warewulf nodes.

    On a node, systemd runs `ek8s-node run` (the agent, also `ek8s node run`) and
    `ek8s-phylactery` (control nodes, also `ek8s phylactery`). On the Warewulf server,
    `ek8s warewulf`, `ek8s overlay`, `ek8s status`, `ek8s reset` and `ek8s bench` manage
    clusters; `ek8s lab` runs the whole boot flow on one Linux machine.
    """


cli.add_command(node)
cli.add_command(phylactery)
cli.add_command(bench)
cli.add_command(overlay)
cli.add_command(warewulf)
cli.add_command(credentials)


@cli.group()
def config() -> None:
    """Check node.yaml."""


@config.command("check")
@click.argument("path", default="/etc/ek8s/node.yaml")
def config_check(path: str) -> None:
    """Validate PATH and print the effective settings (exit 2 when invalid)."""
    import yaml

    cfg = load_or_exit(path)
    click.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), nl=False)


def share_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a share that cannot be read (``OSError``: permissions, a stale NFS handle) or holds
    a damaged file (:class:`core.share.ShareError`) into one line on stderr and exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ShareError as err:
            fail(f"the share holds a damaged file: {err}")
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            fail(f"cannot use the share: {where}{err.strerror or err}")

    return wrapper


@cli.command()
@CLUSTER_OPTION
@SHARE_OPTION
@click.option("--reboot", is_flag=True, help="also reboot the nodes (otherwise running agents rebuild by themselves)")
@click.option(
    "--reboot-command",
    default="wwctl ssh {nodes} reboot",
    show_default=True,
    help="{nodes} becomes the comma-separated names of the cluster's nodes that reported to the share",
)
@click.option("--reboot-timeout", default=300.0, show_default=True, help="seconds the reboot command may take")
@click.option(
    "--inventory",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="with --reboot: the cluster's nodes from this inventory (default: Warewulf's registry, via --wwctl)",
)
@click.option("--wwctl", default="wwctl", show_default=True, help="with --reboot: the wwctl to read the registry with")
@click.option("--reason", default="ek8s reset by the operator", show_default=True)
@share_errors
def reset(
    cluster: str,
    share_path: Path,
    reboot: bool,
    reboot_command: str,
    reboot_timeout: float,
    inventory: Path | None,
    wwctl: str,
    reason: str,
) -> None:
    """Start a new generation of the cluster: every node resets and the cluster is rebuilt,
    and Phylactery's credentials are rotated (the old ones accepted for 300 s more).

    Running agents notice the new generation within a second, reset (`kubeadm reset -f`; k3s:
    stop k3s and remove its state) and elect a new leader; with --reboot the nodes are
    rebooted as well (the proof of concept's rebuild-and-restart.sh): only those that reported
    to the share AND belong to the cluster by the inventory (--inventory) or Warewulf's
    registry (nodes tagged ek8s_cluster=CLUSTER); the others are named and left alone. Exit 1
    when the share holds no such cluster, the cluster's nodes cannot be read, none of them
    ever reported (--reboot; nothing written then), or the reboot command fails, cannot
    start or outlasts --reboot-timeout.
    """
    from manager.targets import TargetError, from_inventory, from_registry, reboot_targets

    store = existing_store(share_path, cluster, "operator")
    argv: list[str] = []
    if reboot:
        try:
            known, source = from_inventory(inventory, cluster) if inventory else from_registry(cluster, wwctl)
        except TargetError as err:
            fail(f"{err}; nothing done (the share says which nodes reported, not which are this cluster's)")
        targets = reboot_targets(store.heartbeat_names(), known, source)
        if targets.ignored:
            click.echo(f"ignored heartbeats of nodes not in {source}: {', '.join(targets.ignored)}", err=True)
        if not targets.nodes:
            fail(f"no node of {source} has ever reported to this share; nothing to reboot (nothing done)")
        argv = [a.replace("{nodes}", ",".join(targets.nodes)) for a in shlex.split(reboot_command)]
    state = store.rebuild(reason)
    click.echo(f"cluster {cluster}: generation {state.generation} started ({reason})")
    click.echo(rotate_credentials(store, GRACE_S, reason))
    if not reboot:
        return
    click.echo("running: " + " ".join(argv))
    try:
        res = subprocess.run(argv, check=False, timeout=reboot_timeout)
    except subprocess.TimeoutExpired:
        fail(f"{argv[0]} did not finish within {reboot_timeout:.0f}s")
    except OSError as err:
        fail(f"{argv[0]}: {err.strerror}")
    if res.returncode != 0:
        fail(f"{argv[0]} exited {res.returncode}")


@cli.command()
@CLUSTER_OPTION
@SHARE_OPTION
@click.option("--json", "as_json", is_flag=True, help="print the status document as JSON")
@click.option("--watch", is_flag=True, help="refresh until interrupted")
@click.option("--interval", default=2.0, show_default=True, help="seconds between refreshes with --watch")
@click.option("--all", "all_nodes", is_flag=True, help="list every node, not only those that need attention")
@share_errors
def status(cluster: str, share_path: Path, as_json: bool, watch: bool, interval: float, all_nodes: bool) -> None:
    """The cluster at a glance: generation, leader, a line per role, the nodes that need
    attention (every node with --all, or when there are at most 12), etcd members, VIP holder.

    Read from the share, each control node's Phylactery and the API behind the VIP; what does
    not answer shows as '?'. Exit 1 when the share holds no such cluster or cannot be read.
    """
    import json as jsonlib

    from manager.status import collect, render

    store = existing_store(share_path, cluster, "status")
    while True:
        doc = collect(store)
        text = jsonlib.dumps(doc, indent=1) if as_json else render(doc, all_nodes)
        if not watch:
            click.echo(text)
            return
        click.clear()
        click.echo(text)
        time.sleep(interval)


@cli.command()
@CLUSTER_OPTION
@SHARE_OPTION
@click.option("--check", is_flag=True, help="print nothing; exit 0 when the admin kubeconfig is there, 1 otherwise")
@share_errors
def kubeconfig(cluster: str, share_path: Path, check: bool) -> None:
    """Print the admin kubeconfig (server: the VIP name and port) for kubectl on this host.

    It is the share's kube.config, written by the generation's leader. Exit 1 when there is none.
    """
    store = ShareStore(share_path, cluster, "operator")
    data = store.read_admin_kubeconfig()
    if data is None:
        if check:
            sys.exit(1)
        fail(f"{store.dir}: no admin kubeconfig (is the generation ready?)")
    if not check:
        click.echo(data.decode(), nl=False)


def _register_plugins() -> None:
    """Add the command groups packages above this one declare under ``ek8s.commands``."""
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name not in cli.commands:
            try:
                cli.add_command(ep.load(), ep.name)
            except ImportError:  # e.g. the lab's extras are not installed on this host
                continue


def main() -> None:
    """The ``ek8s`` console script (``[project.scripts]`` in pyproject.toml): add the plugin
    groups, then run :func:`cli`. Never returns; exits 0, 1 or 2 as the module says."""
    _register_plugins()
    cli(prog_name="ek8s")
