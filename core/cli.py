"""What every command line of the project shares: reading node.yaml or exiting 2.

Exit codes (docs/architecture.md): 0 success, 1 operational failure, 2 invalid input or config,
with a message naming the file and the field, and nothing written anywhere.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import NoReturn

import click

from core.config import ConfigError, NodeConfig, load_config
from core.logs import LOG_LEVELS, journal_prefix
from core.share import ShareStore

DEFAULT_CONFIG = "/etc/ek8s/node.yaml"
CONFIG_OPTION = click.option(
    "--config", "config_path", default=DEFAULT_CONFIG, show_default=True, help="the node's node.yaml"
)

# The node programs' log level (docs/architecture.md "systemd and journald"); the environment
# variable lets `systemctl edit ek8s-node` set it without changing the overlay's unit.
LOG_LEVEL_OPTION = click.option(
    "--log-level",
    "log_level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    envvar="EK8S_LOG_LEVEL",
    show_envvar=True,
    help="the lowest level logged",
)


def fail(message: str, code: int = 1, prog: str = "ek8s") -> NoReturn:
    """Print ``<prog>: <message>`` to stderr and exit with ``code``. When stderr is the
    journal, each line carries the ``err`` priority (:func:`core.logs.journal_prefix`), so
    ``journalctl -p err`` finds why a unit exited."""
    prefix = journal_prefix(logging.ERROR)
    click.echo("\n".join(f"{prefix}{line}" for line in f"{prog}: {message}".splitlines()), err=True)
    sys.exit(code)


def load_or_exit(path: str, prog: str = "ek8s") -> NodeConfig:
    """:func:`core.config.load_config`, or exit 2 with its message (file and dotted field)."""
    try:
        return load_config(path)
    except ConfigError as err:
        fail(str(err), 2, prog)


def existing_store(share_path: Path, cluster: str, who: str, prog: str = "ek8s") -> ShareStore:
    """The :class:`core.share.ShareStore` of ``cluster`` under ``share_path``, writing as
    ``who``; exit 1 naming the missing ``cluster.json`` when the share holds no such cluster
    (an operator's command never creates one)."""
    store = ShareStore(share_path, cluster, who)
    if not store.exists():
        fail(f"no cluster {cluster!r} under {share_path} (no {store.dir}/cluster.json)", prog=prog)
    return store
