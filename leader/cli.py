"""``ek8s-node``: the node agent's own entry point (``python -m leader``).

``ek8s-node.service`` runs ``ek8s-node run --config /etc/ek8s/node.yaml``; the operator's
``ek8s node ...`` is the same group.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core.cli import CONFIG_OPTION, LOG_LEVEL_OPTION, load_or_exit, version_option


@click.group(name="node", context_settings={"help_option_names": ["-h", "--help"]})
@version_option("ek8s-node")
def node() -> None:
    """The node agent (started by ek8s-node.service)."""


@node.command("run")
@CONFIG_OPTION
@LOG_LEVEL_OPTION
def run(config_path: str, log_level: str) -> None:
    """Elect, initialise or join the cluster, then follow it (runs until SIGTERM).

    Exit codes: 0 stopped by SIGTERM, 1 gave up (init or join failed every attempt),
    2 invalid node.yaml (systemd does not restart it: RestartPreventExitStatus=2).
    """
    cfg = load_or_exit(config_path, "ek8s-node")
    from core.logs import log_start, setup_logging
    from leader.boot import announce

    setup_logging(cfg.node.name, log_level)
    log_start("ek8s-node", "agent", cfg)
    booted = announce(cfg)  # the first share operations, before the rest of the agent is imported
    from leader.agent import Agent

    sys.exit(Agent.for_node(cfg, Path(config_path).resolve(), booted).run())


@node.command("check")
@click.argument("path", default="/etc/ek8s/node.yaml")
def check(path: str) -> None:
    """Validate PATH and print the effective settings (exit 2 when invalid)."""
    import yaml

    cfg = load_or_exit(path, "ek8s-node")
    click.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), nl=False)


def main() -> None:
    """Entry point of ``ek8s-node`` (``python -m leader``)."""
    node(prog_name="ek8s-node")
