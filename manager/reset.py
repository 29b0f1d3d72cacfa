"""What the operator's destructive commands (``ek8s reset``, ``ek8s bench``) say before they
act, how they ask, and whom they record.

A new generation (:meth:`core.share.ShareStore.rebuild`) makes every node reset and the
cluster start again empty: every Kubernetes object and everything in etcd is gone; the etcd
snapshots are moved aside into ``snapshots/old/`` on the share (kept, listed by ``ek8s
status``), where no later restore takes them by itself (docs/recovery.md).
So these commands first say what will be lost (the generation, how many nodes, the
snapshots), then ask on the terminal; without a terminal (cron, a script, ``ssh host cmd``)
they refuse unless ``--yes`` says the caller means it. The ``generation_started`` event names
the person who asked (:func:`invoking_user`), not a role.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from collections.abc import Callable

import click
import hostlist

from core.cli import fail
from core.share import ShareStore

YES_OPTION = click.option(
    "--yes", "-y", "yes", is_flag=True, help="do not ask: the data is to be lost (needed without a terminal)"
)


def invoking_user() -> str:
    """Who runs the command: ``$SUDO_USER`` (the person behind ``sudo``), else the login
    name of the controlling terminal (``os.getlogin``), else the name ``getpass.getuser``
    finds (``$LOGNAME``, ``$USER``..., then the password database)."""
    sudo = os.environ.get("SUDO_USER")
    if sudo:
        return sudo
    try:
        return os.getlogin()
    except OSError:
        return getpass.getuser()


def losses(store: ShareStore) -> list[str]:
    """What a new generation of ``store``'s cluster throws away, one line each: the current
    generation (ready or not, since when, its leader) with everything it holds, the nodes that
    reset (by role, as their heartbeats say), and the etcd snapshots that stay unused. Reads
    ``cluster.json``, every heartbeat and the snapshot listing; raises what they raise."""
    state = store.read_state()
    if state.ready and state.ready_at:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.ready_at))
        leader = state.leader.node if state.leader else "-"
        gen = f"generation {state.generation} (ready since {since}, leader {leader})"
    else:
        gen = f"generation {state.generation} (not ready: {state.reason or 'no reason recorded'})"
    lines = [
        f"{gen} ends: every Kubernetes object and everything else kept in etcd is lost; "
        f"the cluster is rebuilt empty as generation {state.generation + 1}"
    ]
    roles: dict[str, list[str]] = {}
    now = store.share_now()
    for name in store.heartbeat_names():
        hb = store.read_any_heartbeat(name, now)
        roles.setdefault(hb.role if hb else "unknown", []).append(name)
    total = sum(len(v) for v in roles.values())
    by_role = ", ".join(f"{len(v)} {role} ({hostlist.collect_hostlist(v)})" for role, v in sorted(roles.items()))
    lines.append(f"{total} nodes reset (kubeadm reset -f; k3s: its state removed): {by_role or 'none reported'}")
    snapshots = store.snapshots()
    if snapshots:
        age = now - snapshots[0].stat().st_mtime
        lines.append(
            f"{len(snapshots)} etcd snapshots (newest {age:.0f}s old) are moved to snapshots/old/ on the share: "
            "kept and listed by 'ek8s status', never restored by themselves (the new generation starts empty)"
        )
    else:
        lines.append("no etcd snapshot is on the share")
    return lines


def confirm(
    action: str,
    lines: list[str],
    yes: bool,
    interactive: Callable[[], bool] = lambda: sys.stdin.isatty(),
    doing: str = "destroy the data above",
) -> None:
    """Say ``lines`` (what will be lost, or done) on stderr under ``action`` (what is about to
    happen), then ask. Returns when confirmed, by ``yes`` or an answer ``y`` on the terminal.
    Exits 2 naming ``--yes`` (and ``doing``, what it would do) when there is no terminal to ask
    (``interactive()`` is False: stdin is not a TTY), exits 1 when the answer is no; nothing
    has been written then."""
    click.echo(f"{action}:", err=True)
    for line in lines:
        click.echo(f"  - {line}", err=True)
    if yes:
        return
    if not interactive():
        fail(f"no terminal to confirm on: add --yes to {doing} from a script", 2)
    if not click.confirm("Go ahead?", default=False, err=True):
        fail("not confirmed; nothing done")
