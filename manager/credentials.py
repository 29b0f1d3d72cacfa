"""``ek8s credentials rotate``: new Phylactery credentials, without a cluster outage.

Both credentials (control and worker, :mod:`core.credentials`) get new values on the share;
the old ones stay accepted for ``--grace`` seconds (default 300), during which every
Phylactery picks the new ones up (it re-reads them within seconds, and at once for a
credential it does not know) and every client reads them before its next call. After the
grace window a stolen copy of the old ones is worth nothing. ``ek8s reset`` rotates them too.
Values are never printed; the ``credentials_rotated`` event records who rotated what.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from core.cli import fail
from core.credentials import GRACE_S, KINDS
from core.share import ShareError, ShareStore
from manager.clusters import CLUSTER_OPTION, SHARE_OPTION, operator_store
from manager.reset import invoking_user


def rotate(store: ShareStore, grace_s: float, why: str) -> str:
    """Rotate both credentials of ``store``'s cluster (making them, and the CA, first when no
    Phylactery ever did), record ``credentials_rotated`` and return the sentence to print."""
    store.ensure_credentials()
    store.rotate_credentials(KINDS, grace_s)
    until = time.strftime("%H:%M:%S", time.localtime(time.time() + grace_s))
    old = f"the old ones are accepted until {until} ({grace_s:g} s)" if grace_s > 0 else "the old ones are refused now"
    sentence = f"cluster {store.cluster}: control and worker credentials rotated; {old}"
    state = store.read_state()
    store.record_event("credentials_rotated", state.generation, f"{why}: {sentence}", grace_s=grace_s)
    return sentence


@click.group()
def credentials() -> None:
    """Phylactery's bearer credentials (docs/security.md)."""


@credentials.command("rotate")
@CLUSTER_OPTION
@SHARE_OPTION
@click.option(
    "--grace",
    "grace_s",
    default=GRACE_S,
    show_default=True,
    type=click.FloatRange(min=0),
    help="seconds the old credentials stay accepted",
)
@click.option("--yes", is_flag=True, help="do not ask (needed without a terminal)")
def rotate_command(cluster: str | None, share_path: Path, grace_s: float, yes: bool) -> None:
    """New control and worker credentials for the cluster's Phylacteries, without an outage:
    the old ones are accepted for --grace seconds, then refused.

    Asks first; without a terminal it refuses (exit 2) unless --yes. Exit 1 when the share
    holds no such cluster or cannot be written; exit 2 for a cluster the share does not hold
    when others are there, or several and none named (the clusters found are listed).
    """
    user = invoking_user()
    store = operator_store(share_path, cluster, user)
    if not yes:
        if not sys.stdin.isatty():
            fail("refusing to rotate credentials without a terminal to ask on; pass --yes", 2)
        click.confirm(
            f"Rotate the Phylactery credentials of cluster {store.cluster} on {share_path}? "
            f"(the old ones stay accepted for {grace_s:g} s)",
            abort=True,
        )
    try:
        click.echo(rotate(store, grace_s, f"ek8s credentials rotate by {user}"))
    except ShareError as err:
        fail(f"the share holds a damaged file: {err}")
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        fail(f"cannot use the share: {where}{err.strerror or err}")
