"""``ek8s-phylactery``: Phylactery's own entry point (``python -m phylactery``).

``phylactery.service`` runs ``ek8s-phylactery --config /etc/ek8s/node.yaml``; the operator's
``ek8s phylactery`` is the same command.
"""

from __future__ import annotations

import click

from core.cli import CONFIG_OPTION, LOG_LEVEL_OPTION, fail, load_or_exit, version_option


@click.command(name="phylactery", context_settings={"help_option_names": ["-h", "--help"]})
@version_option("ek8s-phylactery")
@CONFIG_OPTION
@LOG_LEVEL_OPTION
def phylactery(config_path: str, log_level: str) -> None:
    """Serve Phylactery on this control node (HTTP, port 9999 by default) until SIGTERM.

    Exit 2 when node.yaml is invalid or the node is not a control node.
    """
    cfg = load_or_exit(config_path, "ek8s-phylactery")
    if not cfg.is_control:
        fail(f"{config_path}: role: Phylactery runs on control nodes only", 2, "ek8s-phylactery")
    from core.drivers import driver_for
    from core.logs import log_start, setup_logging
    from phylactery.app import run
    from phylactery.service import Phylactery

    setup_logging(cfg.node.name, log_level)
    log_start("ek8s-phylactery", "phylactery", cfg)
    run(Phylactery(cfg, driver_for(cfg)))


def main() -> None:
    """Entry point of ``ek8s-phylactery`` (``python -m phylactery``)."""
    phylactery(prog_name="ek8s-phylactery")
