"""``ek8s``: one CLI for nodes, operators and the lab.

Exit codes: 0 success, 1 operational failure, 2 invalid input or config (the message names
the file and the field; nothing is written anywhere).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from leader import __version__
from leader.config import ConfigError, NodeConfig, load_config

DEFAULT_CONFIG = "/etc/ek8s/node.yaml"


def _load(path: str) -> NodeConfig:
    try:
        return load_config(path)
    except ConfigError as err:
        click.echo(f"ek8s: {err}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ek8s")
def cli() -> None:
    """Highly available Kubernetes on stateless Warewulf nodes.

    On a node, systemd runs `ek8s node run` (the agent) and `ek8s phylactery` (control
    nodes). On one Linux machine, `ek8s lab` runs the whole boot flow in network namespaces.
    """


@cli.group()
def node() -> None:
    """The node agent (started by ek8s-node.service)."""


@node.command("run")
@click.option("--config", "config_path", default=DEFAULT_CONFIG, show_default=True, help="node.yaml")
def node_run(config_path: str) -> None:
    """Elect, initialise or join the cluster, then follow it (runs until stopped)."""
    cfg = _load(config_path)
    from leader.agent import Agent
    from leader.logs import setup_logging

    setup_logging(cfg.node.name)
    sys.exit(Agent(cfg, Path(config_path).resolve()).run())


@cli.command()
@click.option("--config", "config_path", default=DEFAULT_CONFIG, show_default=True, help="node.yaml")
def phylactery(config_path: str) -> None:
    """Serve Phylactery on this control node (HTTP, port 9999 by default)."""
    cfg = _load(config_path)
    if not cfg.is_control:
        click.echo(f"ek8s: {config_path}: role: Phylactery runs on control nodes only", err=True)
        sys.exit(2)
    from leader.logs import setup_logging
    from phylactery.app import run
    from phylactery.service import Phylactery

    setup_logging(cfg.node.name)
    run(Phylactery(cfg))


@cli.group()
def config() -> None:
    """Check node.yaml."""


@config.command("check")
@click.argument("path", default=DEFAULT_CONFIG)
def config_check(path: str) -> None:
    """Validate PATH and print the effective settings (exit 2 when invalid)."""
    import yaml

    cfg = _load(path)
    click.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), nl=False)


@cli.command()
@click.option("--cluster", default="default", show_default=True, help="cluster name (share directory)")
@click.option("--share", "share_path", default="/share", show_default=True, type=click.Path(path_type=Path))
@click.option("--reboot", is_flag=True, help="also reboot the nodes (otherwise running agents rebuild by themselves)")
@click.option(
    "--reboot-command",
    default="wwctl ssh {nodes} reboot",
    show_default=True,
    help="{nodes} becomes the comma-separated node names known to the share",
)
@click.option("--reason", default="ek8s reset by the operator", show_default=True)
def reset(cluster: str, share_path: Path, reboot: bool, reboot_command: str, reason: str) -> None:
    """Start a new generation of the cluster: every node resets and the cluster is rebuilt.

    Running agents notice the new generation within a second, run `kubeadm reset -f` and
    elect a new leader; with --reboot the nodes are rebooted as well (the proof of concept's
    rebuild-and-restart.sh).
    """
    import shlex
    import subprocess

    from leader.share import ShareStore

    if not (share_path / cluster / "cluster.json").exists():
        click.echo(
            f"ek8s: no cluster {cluster!r} under {share_path} (no {share_path / cluster / 'cluster.json'})", err=True
        )
        sys.exit(1)
    store = ShareStore(share_path, cluster, "operator")
    state = store.rebuild(reason)
    click.echo(f"cluster {cluster}: generation {state.generation} started ({reason})")
    if reboot:
        nodes = store.heartbeat_names()
        if not nodes:
            click.echo("ek8s: no node has ever reported to this share; nothing to reboot", err=True)
            sys.exit(1)
        argv = [a.replace("{nodes}", ",".join(nodes)) for a in shlex.split(reboot_command)]
        click.echo("running: " + " ".join(argv))
        res = subprocess.run(argv, check=False)
        if res.returncode != 0:
            click.echo(f"ek8s: {argv[0]} exited {res.returncode}", err=True)
            sys.exit(1)


@cli.command()
@click.option("--cluster", default="default", show_default=True)
@click.option("--share", "share_path", default="/share", show_default=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print the status document as JSON")
@click.option("--watch", is_flag=True, help="refresh until interrupted")
@click.option("--interval", default=2.0, show_default=True, help="seconds between refreshes with --watch")
def status(cluster: str, share_path: Path, as_json: bool, watch: bool, interval: float) -> None:
    """The cluster at a glance: generation, leader, nodes, etcd members, VIP holder."""
    import json as jsonlib

    from leader.status import collect, render

    while True:
        try:
            doc = collect(share_path, cluster)
        except FileNotFoundError:
            click.echo(f"ek8s: no cluster {cluster!r} under {share_path}", err=True)
            sys.exit(1)
        text = jsonlib.dumps(doc, indent=1) if as_json else render(doc)
        if not watch:
            click.echo(text)
            return
        click.clear()
        click.echo(text)
        import time

        time.sleep(interval)


@cli.command()
@click.option("--cluster", default="default", show_default=True)
@click.option("--share", "share_path", default="/share", show_default=True, type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="print nothing; exit 0 when the admin kubeconfig is there, 1 otherwise")
def kubeconfig(cluster: str, share_path: Path, check: bool) -> None:
    """Print the admin kubeconfig (server: the VIP name and port) for kubectl on this host."""
    path = share_path / cluster / "kube.config"
    try:
        data = path.read_text()
    except OSError:
        if not check:
            click.echo(f"ek8s: {path}: no admin kubeconfig (is the generation ready?)", err=True)
        sys.exit(1)
    if not check:
        click.echo(data, nl=False)


def _register() -> None:
    from leader.benchcli import bench
    from leader.wwcli import overlay, warewulf

    cli.add_command(bench)
    cli.add_command(overlay)
    cli.add_command(warewulf)
    try:  # the lab (and its emulated kubeadm) is never shipped to nodes
        from lab.cli import lab
    except ImportError:
        return
    cli.add_command(lab)


def main() -> None:
    _register()
    cli(prog_name="ek8s")
