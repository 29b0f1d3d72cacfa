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

from core.cli import fail, load_or_exit, version_option
from core.credentials import GRACE_S
from core.share import ShareError
from manager.benchcli import bench
from manager.clusters import CLUSTER_OPTION, SHARE_OPTION, operator_store
from manager.credentials import credentials
from manager.credentials import rotate as rotate_credentials
from manager.nodecli import node
from manager.reset import YES_OPTION, confirm, invoking_user, losses
from manager.upgradecli import upgrade_cmd
from manager.wwcli import overlay, warewulf
from phylactery.cli import phylactery

PLUGIN_GROUP = "ek8s.commands"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@version_option("ek8s")
def cli() -> None:
    """Highly available Kubernetes on stateless Warewulf nodes.

    On a node, systemd runs `ek8s-node run` (the agent, also `ek8s node run`) and
    `ek8s-phylactery` (control nodes, also `ek8s phylactery`). On the Warewulf server,
    `ek8s warewulf`, `ek8s overlay`, `ek8s status`, `ek8s node reboot|remove`, `ek8s reset`
    and `ek8s bench` manage clusters; `ek8s lab` runs the whole boot flow on one Linux machine.
    """


cli.add_command(node)
cli.add_command(phylactery)
cli.add_command(bench)
cli.add_command(overlay)
cli.add_command(warewulf)
cli.add_command(credentials)
cli.add_command(upgrade_cmd)


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
@click.option("--reason", default=None, help="recorded with the new generation [default: ek8s reset by USER]")
@YES_OPTION
@share_errors
def reset(
    cluster: str | None,
    share_path: Path,
    reboot: bool,
    reboot_command: str,
    reboot_timeout: float,
    inventory: Path | None,
    wwctl: str,
    reason: str | None,
    yes: bool,
) -> None:
    """Start a new generation of the cluster: every node resets and the cluster is rebuilt
    EMPTY (every Kubernetes object is lost; the etcd snapshots are moved to snapshots/old/ on
    the share: kept, listed by 'ek8s status', never restored by themselves), and
    Phylactery's credentials are rotated (the old ones accepted for 300 s more).

    It first says what will be lost (the generation, the nodes, the snapshots) and asks;
    without a terminal it refuses unless --yes. The generation_started event names the user
    who ran it ($SUDO_USER, else the login name). Running agents notice the new generation
    within a second, reset (`kubeadm reset -f`; k3s: stop k3s and remove its state) and elect
    a new leader; with --reboot the nodes are rebooted as well (the proof of concept's
    rebuild-and-restart.sh): only those that reported to the share AND belong to the cluster
    by the inventory (--inventory) or Warewulf's registry (nodes tagged ek8s_cluster=CLUSTER);
    the others are named and left alone. Exit 2 without a terminal and without --yes, or for
    a cluster the share does not hold (the clusters found are listed); exit 1 when not
    confirmed, when the cluster's nodes cannot be read or none of them ever reported
    (--reboot; nothing is written then), or when the reboot command fails, cannot start or
    outlasts --reboot-timeout.
    """
    from manager.targets import TargetError, from_inventory, from_registry, reboot_targets

    user = invoking_user()
    store = operator_store(share_path, cluster, user)
    argv: list[str] = []
    if reboot:
        try:
            known, source = (
                from_inventory(inventory, store.cluster) if inventory else from_registry(store.cluster, wwctl)
            )
        except TargetError as err:
            fail(f"{err}; nothing done (the share says which nodes reported, not which are this cluster's)")
        targets = reboot_targets(store.heartbeat_names(), known, source)
        if targets.ignored:
            click.echo(f"ignored heartbeats of nodes not in {source}: {', '.join(targets.ignored)}", err=True)
        if not targets.nodes:
            fail(f"no node of {source} has ever reported to this share; nothing to reboot (nothing done)")
        argv = [a.replace("{nodes}", ",".join(targets.nodes)) for a in shlex.split(reboot_command)]
    lines = losses(store)
    if argv:
        lines.append("then the nodes are rebooted: " + " ".join(argv))
    confirm(f"ek8s reset of cluster {store.cluster} on {share_path}", lines, yes)
    why = reason or f"ek8s reset by {user}"
    state = store.rebuild(why)
    click.echo(f"cluster {store.cluster}: generation {state.generation} started ({why})")
    click.echo(rotate_credentials(store, GRACE_S, why))
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
@click.option(
    "--accept-loss-of",
    "accept_loss_of",
    required=True,
    metavar="NODES",
    help="control nodes (a hostlist: control[1-2]) whose etcd data you know is gone",
)
@click.option(
    "--lease-ttl", default=None, type=float, help="seconds of silence before a node counts as silent [default: 30]"
)
@click.option("--reason", default=None, help="recorded with the acceptance [default: ek8s recover by USER]")
@YES_OPTION
@share_errors
def recover(
    cluster: str | None,
    share_path: Path,
    accept_loss_of: str,
    lease_ttl: float | None,
    reason: str | None,
    yes: bool,
) -> None:
    """Record that the etcd data of silent control nodes is gone, so that recovery can go on.

    A control node silent past the lease may be down or cut off and still serving; nothing
    destructive acts on silence (docs/recovery.md, "Proof, not silence"). Without fencing,
    this is the proof: once you know NODES are down, it records their loss (losses/<node>.json,
    the loss_accepted event naming you: $SUDO_USER or the login name), and the survivor
    re-forms etcd, the reaper removes their members, or a new generation restores a snapshot.
    It says first what happens and asks; without a terminal exit 2 unless --yes. Exit 2 for a
    name that is not a node or has no etcd member in the current generation; exit 1 for a node
    whose data is alive (it heartbeats from the boot its member joined in) or when not
    confirmed. Nothing is written then.
    """
    import hostlist

    from manager.recover import RecoverRefused, accept, plan

    try:
        nodes = hostlist.expand_hostlist(accept_loss_of)
    except hostlist.BadHostlist as err:
        fail(f"--accept-loss-of: {accept_loss_of!r} is not a hostlist: {err}", 2)
    if lease_ttl is not None and lease_ttl <= 0:
        fail("--lease-ttl must be above 0", 2)
    user = invoking_user()
    store = operator_store(share_path, cluster, user)
    try:
        p = plan(store, nodes, lease_ttl)
    except RecoverRefused as err:
        fail(str(err), err.code)
    if not p.proofs:
        for line in p.lines():
            click.echo(line)
        click.echo("nothing to record")
        return
    confirm(f"ek8s recover of cluster {store.cluster} on {share_path}", p.lines(), yes)
    written = accept(store, p, user, reason)
    click.echo(f"cluster {store.cluster}: the loss of {', '.join(x.node for x in written)} is recorded (by {user})")


@cli.group()
def fence() -> None:
    """Fencing on the Warewulf server: prove silent control nodes down (docs/recovery.md)."""


@fence.command("serve")
@CLUSTER_OPTION
@SHARE_OPTION
@click.option(
    "--power-command",
    default="wwctl power cycle {node}",
    show_default=True,
    help="run per node to fence ({node} replaced; no shell); must exit 0 once the node is power-cycled",
)
@click.option("--lease-ttl", default=30.0, show_default=True, help="seconds a node must be silent to be fenced")
@click.option("--interval", default=1.0, show_default=True, help="seconds between looks at the share")
@click.option("--once", is_flag=True, help="one look, then exit (0)")
@share_errors
def fence_serve(
    cluster: str | None, share_path: Path, power_command: str, lease_ttl: float, interval: float, once: bool
) -> None:
    """Answer the survivors' fence requests: power-cycle each requested control node that is
    still silent in the incarnation named (the power command's success is waited for), then
    record the fence (losses/<node>.json, kind fenced; node_fenced event), which lets the
    survivor re-form etcd. What ek8s-fence.service runs on the Warewulf server when the
    inventory sets fencing: warewulf-power. Exit 2 for bad options; runs until interrupted.
    """
    from core.logs import setup_logging
    from manager.fence import FenceService

    if "{node}" not in power_command:
        fail("--power-command: it must name the node with {node}", 2)
    if interval <= 0 or lease_ttl <= 0:
        fail("--interval and --lease-ttl must be above 0", 2)
    setup_logging(None, "info")
    service = FenceService(operator_store(share_path, cluster, "fence"), power_command, lease_ttl)
    if once:
        for line in service.serve_once():
            click.echo(line)
        return
    try:
        service.serve(interval)
    except KeyboardInterrupt:
        return


def _show(doc: dict[str, Any], output: str, all_nodes: bool) -> str:
    """:func:`manager.status.collect`'s document as ``-o`` asks."""
    import json as jsonlib

    import yaml

    from manager.status import render

    if output == "json":
        return jsonlib.dumps(doc, indent=1)
    if output == "yaml":
        return yaml.safe_dump(doc, sort_keys=False).rstrip("\n")
    return render(doc, output, all_nodes)


@cli.command()
@click.argument("nodes", required=False, metavar="[NODES]")
@CLUSTER_OPTION
@SHARE_OPTION
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "wide", "json", "yaml"]),
    default="table",
    show_default=True,
    help="table: healthy nodes folded into hostlists; wide: a row per node with address, generation, boot id",
)
@click.option("--json", "as_json", is_flag=True, help="the same as -o json")
@click.option("--all", "all_nodes", is_flag=True, help="table: a row per node, healthy ones not folded")
@click.option("--wait", is_flag=True, help="return once every node is Ready and nothing needs attention")
@click.option("--watch", "watch", is_flag=True, hidden=True, help="former name of --wait")
@click.option("--timeout", default=600.0, show_default=True, help="seconds --wait waits before it gives up (exit 1)")
@click.option("--interval", default=5.0, show_default=True, help="seconds between looks with --wait")
@share_errors
def status(
    nodes: str | None,
    cluster: str | None,
    share_path: Path,
    output: str,
    as_json: bool,
    all_nodes: bool,
    wait: bool,
    watch: bool,
    timeout: float,
    interval: float,
) -> None:
    """The cluster at a glance: generation, leader, etcd members, VIP holder, what needs
    attention, a line per role, then the nodes: those that need attention first, the healthy
    ones folded into hostlists (one row each with --all or -o wide).

    NODES (a name or a hostlist, `worker[0-9],control1`) narrows the nodes shown and judged;
    a name that never reported counts as a node that needs attention. Read from the share,
    each control node's Phylactery and the API behind the VIP; what does not answer shows as
    '?'. Exit 0 when healthy: the generation is ready, every node (of NODES) is in phase
    watch, heartbeats and is Ready, and (without NODES) nothing needs attention; exit 1
    otherwise, also when the share cannot be read or --wait runs out of time; exit 2 for bad
    input (NODES, an unknown --cluster). With --wait, a progress line goes to stderr whenever
    the picture changes (at least every 30 s), and the status is printed once at the end.
    """
    from manager.events import parse_nodes
    from manager.status import collect, progress

    if as_json:
        output = "json"
    try:
        names = parse_nodes(nodes)
    except ValueError as err:
        fail(f"NODES: {err}", 2)
    if watch:
        click.echo("ek8s: --watch is now --wait (it returns once every node is Ready)", err=True)
        wait = True
    if interval <= 0 or timeout < 0:
        fail("--interval must be above 0 and --timeout at least 0", 2)
    store = operator_store(share_path, cluster, "status")
    doc = collect(store, names)
    if wait:
        start = time.monotonic()
        said, said_at = "", 0.0
        while not doc["healthy"]:
            elapsed = time.monotonic() - start
            line = progress(doc, elapsed)
            if line.split("] ", 1)[1] != said or elapsed - said_at >= 30:
                click.echo(line, err=True)
                said, said_at = line.split("] ", 1)[1], elapsed
            if elapsed >= timeout:
                click.echo(_show(doc, output, all_nodes))
                fail(f"not every node is Ready after {timeout:.0f}s")
            time.sleep(min(interval, timeout - elapsed))
            doc = collect(store, names)
    click.echo(_show(doc, output, all_nodes))
    sys.exit(0 if doc["healthy"] else 1)


@cli.command()
@CLUSTER_OPTION
@SHARE_OPTION
@click.option("--node", "nodes", default=None, help="only these nodes: a name or a hostlist (worker[0-9],control1)")
@click.option("--since", default=None, help="only events since: a duration (90s, 10m, 2h, 1d) or a time (ISO 8601)")
@click.option("--follow", "-f", is_flag=True, help="keep printing events as they come, until interrupted")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--interval", default=1.0, show_default=True, help="seconds between looks with --follow")
@share_errors
def events(
    cluster: str | None,
    share_path: Path,
    nodes: str | None,
    since: str | None,
    follow: bool,
    output: str,
    interval: float,
) -> None:
    """The cluster's timeline (events.jsonl on the share, with its rotated files), oldest
    first: one line per event (time, node, generation, event, message, other fields), or with
    -o json each event as stored, one JSON object per line.

    Events are what the agents, Phylacteries and ek8s reset/bench record
    (docs/share-protocol.md lists them). Exit 2 for a bad --node, --since or --cluster;
    exit 1 when the share cannot be read. --follow ends with Ctrl-C (exit 0).
    """
    from manager.events import follow as follow_events
    from manager.events import parse_nodes, parse_since, render, select

    try:
        names = parse_nodes(nodes)
    except ValueError as err:
        fail(f"--node: {err}", 2)
    try:
        start = parse_since(since, time.time()) if since is not None else None
    except ValueError as err:
        fail(f"--since: {err}", 2)
    if interval <= 0:
        fail("--interval must be above 0", 2)
    store = operator_store(share_path, cluster, "events")
    found, cursor = store.read_events(None, start)
    shown = select(found, names, start)
    width = max([len(str(e.get("node", ""))) for e in shown] + [8])
    for e in shown:
        click.echo(render(e, output, width))
    if not follow:
        return
    try:
        for e in follow_events(store, cursor, interval):
            if select([e], names, start):
                click.echo(render(e, output, width))
    except KeyboardInterrupt:
        return


@cli.command()
@CLUSTER_OPTION
@SHARE_OPTION
@click.option("--check", is_flag=True, help="print nothing; exit 0 when the admin kubeconfig is there, 1 otherwise")
@share_errors
def kubeconfig(cluster: str | None, share_path: Path, check: bool) -> None:
    """Print the admin kubeconfig (server: the VIP name and port) for kubectl on this host.

    It is the share's kube.config, written by the generation's leader. Exit 1 when there is
    none; exit 2 for a cluster the share does not hold, or several clusters and no --cluster.
    """
    store = operator_store(share_path, cluster, "operator")
    data = store.read_admin_kubeconfig()
    if data is None:
        if check:
            sys.exit(1)
        fail(f"{store.dir}: no admin kubeconfig (is the generation ready?)")
    if not check:
        click.echo(data.decode(), nl=False)


@cli.group()
def share() -> None:
    """The share's layout (docs/share-protocol.md)."""


@share.command("migrate")
@CLUSTER_OPTION
@SHARE_OPTION
@click.option("--dry-run", is_flag=True, help="print what would move; write nothing")
@share_errors
def share_migrate(cluster: str | None, share_path: Path, dry_run: bool) -> None:
    """Move a share written before the split by role to its two trees: workers' heartbeats
    and join slots into nodes/, public copies of cluster.json, join.json (without the
    control-only secret) and the member records there. Idempotent: a share already in the
    new layout prints "nothing to move". A control node's agent does the same at its first
    start of this version. Run it on the Warewulf server, which holds the share.

    Exit 2 for a cluster the share does not hold, or several clusters and no --cluster.
    """
    store = operator_store(share_path, cluster, "operator")
    moved = store.migrate_layout(dry_run=dry_run)
    for line in moved:
        click.echo(("would move: " if dry_run else "moved: ") + line)
    if not moved:
        click.echo(f"{store.dir}: nothing to move (already in the layout by role)")


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
