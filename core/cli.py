"""What every command line of the project shares: reading node.yaml or exiting 2.

Exit codes (docs/architecture.md): 0 success, 1 operational failure, 2 invalid input or config,
with a message naming the file and the field, and nothing written anywhere.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import click

from core import version_string
from core.config import ConfigError, NodeConfig, load_config
from core.logs import LOG_LEVELS, journal_prefix

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


F = TypeVar("F", bound=Callable[..., object])


def version_option(prog: str) -> Callable[[F], F]:
    """``--version``: print ``<prog> <version> (<revision>)`` (:func:`core.version_string`)
    and exit 0. The revision is looked up only when the flag is given (it may run git)."""

    def show(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            click.echo(f"{prog} {version_string()}")
            ctx.exit(0)

    return click.option(
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=show,
        help="print the version (and the git revision it was built from) and exit",
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
