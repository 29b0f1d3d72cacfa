"""``ek8s node ...`` on the Warewulf server: the agent's own commands (``run``, ``check``,
from :mod:`leader.cli`) and the operator's maintenance of nodes:

* ``ek8s node reboot NODES`` - a planned reboot, one control node at a time, then
  ``--max-unavailable`` workers at a time (:func:`manager.maintenance.roll`);
* ``ek8s node remove NODE`` - a decommission: drain, power off, the etcd member and Node
  removed through a Phylactery, the share's records of the node forgotten, every Phylactery
  refreshed (HAProxy and keepalived drop it), optionally the node deleted from Warewulf.

How a node is rebooted: ``wwctl ssh <node> reboot`` by default, a clean reboot: systemd stops
the agent (SIGTERM: it gives back what it holds and says ``stopped``), etcd (which hands its
leadership on before it stops), keepalived (which gives the VIP up at once instead of after
three missed adverts) and HAProxy, so the API's gap is the VIP's failover at most.
``wwctl power cycle <node>`` (IPMI, through ``--reboot-command``) is for a node that no longer
answers ssh; it costs the missed adverts and an etcd election. How it is powered off for good:
``wwctl ssh <node> poweroff`` (clean, likewise), or ``wwctl power soft``/``off``.

Both commands record what they did, with the user who ran them, in the cluster's events
(``node_reboot``, ``node_removed``); both ask first unless ``--yes`` (and refuse without a
terminal, exit 2).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from core import probes, quorum
from core.cli import fail
from core.config import Timeouts
from leader.cli import node as agent_node
from manager import maintenance
from manager.clusters import CLUSTER_OPTION, SHARE_OPTION, operator_store
from manager.reset import YES_OPTION, confirm, invoking_user

REFRESH_WAIT_S = 60.0  # how long remove waits for every HAProxy to drop the node


@click.group(name="node", context_settings={"help_option_names": ["-h", "--help"]})
def node() -> None:
    """Nodes: the agent (run, check; started by ek8s-node.service) and their maintenance from
    the Warewulf server (reboot, remove)."""


for _name, _command in agent_node.commands.items():
    node.add_command(_command, _name)


def _say(line: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {line}")


def _names(text: str) -> list[str]:
    from manager.events import parse_nodes

    try:
        names = parse_nodes(text)
    except ValueError as err:
        fail(f"NODES: {err}", 2)
    assert names is not None
    return sorted(names)


def _template(template: str, option: str) -> None:
    try:
        maintenance.command_argvs(template, ["x"])
    except ValueError as err:
        fail(f"{option}: {err}", 2)


@node.command("reboot")
@click.argument("nodes", metavar="NODES")
@CLUSTER_OPTION
@SHARE_OPTION
@click.option("--max-unavailable", default=1, show_default=True, type=click.IntRange(1), help="workers at once")
@click.option(
    "--reboot-command",
    default="wwctl ssh {node} reboot",
    show_default=True,
    help="{node}: one command per node; {nodes}: one per batch, the nodes as a hostlist",
)
@click.option("--drain-timeout", default=300.0, show_default=True, help="seconds a node's drain may take")
@click.option("--timeout", default=900.0, show_default=True, help="seconds a batch may take to be back")
@click.option("--force", is_flag=True, help="also evict Pods no controller owns (they are gone for good)")
@YES_OPTION
def reboot(
    nodes: str,
    cluster: str | None,
    share_path: Path,
    max_unavailable: int,
    reboot_command: str,
    drain_timeout: float,
    timeout: float,
    force: bool,
    yes: bool,
) -> None:
    """Reboot NODES (a name or a hostlist) for planned maintenance: each is cordoned, drained
    (the eviction API: PodDisruptionBudgets hold it back until --drain-timeout), rebooted, and
    waited for: a new boot id, its agent watching, its Node Ready; for a control node also its
    etcd member voting and answering and every HAProxy with every control node's backend UP.
    Then it is uncordoned. Control nodes go one at a time, first; workers --max-unavailable at
    a time. A control node is refused, naming why, when its reboot would cost etcd its quorum.

    Exit 0 when every node is back; 1 at the first step that fails or is refused (the nodes
    after it are untouched, a node whose drain failed is uncordoned again); 2 for bad input,
    a node that never reported, or no terminal without --yes.
    """
    _template(reboot_command, "--reboot-command")
    names = _names(nodes)
    user = invoking_user()
    store = operator_store(share_path, cluster, user)
    c = maintenance.Cluster(store, say=_say)
    roles = {}
    for n in names:
        role = c.role_of(n)
        if role is None:
            fail(f"NODES: no node {n} in cluster {store.cluster} (it never reported to {store.dir})", 2)
        roles[n] = role
    plan = maintenance.batches(roles.items(), max_unavailable)
    lines = [f"{', '.join(b)}: cordon, drain, reboot ({reboot_command}), wait until back, uncordon" for b in plan]
    confirm(f"ek8s node reboot in cluster {store.cluster}, in this order", lines, yes, doing="reboot them")
    opts = maintenance.RollOptions(max_unavailable, drain_timeout, timeout, force)

    def action(batch: list[str]) -> None:
        for n in batch:
            store.record_event("node_reboot", store.read_state().generation, f"planned reboot by {user}", target=n)
        maintenance.run_commands(maintenance.command_argvs(reboot_command, batch), 120.0, _say)

    def report(batch: list[str], stage: str) -> None:
        if stage == "back":
            _say(f"{', '.join(batch)}: back")

    try:
        maintenance.roll(c, names, action, opts, on_batch=report)
    except maintenance.MaintenanceError as err:
        fail(str(err))
    except probes.kube_errors() as err:
        fail(f"the API behind the VIP does not answer: {type(err).__name__}: {err}")
    _say(f"done: {len(names)} node(s) rebooted and back")


def _address(c: maintenance.Cluster, name: str) -> str | None:
    """``name``'s address: its member record's, else its Node's InternalIP, else the published
    inventory's; None when none knows it."""
    for m in c.store.members():
        if m.name == name:
            return m.address
    try:
        n = c.api.node(name)
    except probes.kube_errors():
        n = None
    for a in ((n or {}).get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP":
            return str(a["address"])
    inventory = c.store.read_inventory()
    if inventory is not None and name in inventory.nodes:
        return inventory.nodes[name].address
    return None


def _remove_through_phylactery(c: maintenance.Cluster, name: str, address: str, user: str) -> dict[str, Any]:
    """``POST /v1/remove`` to the first other Phylactery that takes it; while the node's etcd
    member still answers (it was just powered off), again every 2 s for 60 s."""
    body = {"name": name, "address": address, "user": user}
    deadline = time.monotonic() + 60.0
    errors: dict[str, Any] = {}
    while True:
        for _, url in c.phylacteries(avoid=[name]):
            try:
                status, answer = c.post(url, "/v1/remove", body, 60.0)
            except OSError as err:
                errors[url] = str(err)
                continue
            if status == 200 and isinstance(answer, dict):
                return answer
            errors[url] = answer.get("error", answer) if isinstance(answer, dict) else answer
            if status == 409 and "answers" not in str(errors[url]):
                raise maintenance.MaintenanceError(f"{name}: Phylactery refused to remove it: {errors[url]}")
        if time.monotonic() > deadline:
            raise maintenance.MaintenanceError(f"{name}: no Phylactery removed it: {errors}")
        time.sleep(2.0)


def _wait_stopped(c: maintenance.Cluster, name: str, wait_s: float) -> None:
    """After a clean power-off the agent's last heartbeat says ``stopped`` within seconds;
    wait for it (up to ``wait_s``) so that it is not written after the node's records were
    forgotten. A hard power-off writes none: go on after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        hb = c.store.read_any_heartbeat(name)
        if hb is None or hb.phase == "stopped":
            _say(f"{name}: its agent has stopped")
            return
        time.sleep(1.0)
    if wait_s > 0:
        _say(f"{name}: no 'stopped' heartbeat within {wait_s:.0f}s (a hard power-off, or down already); going on")


def _refresh_everywhere(c: maintenance.Cluster, name: str) -> None:
    """Ask every Phylactery to refresh, then wait until no HAProxy lists ``name``'s backend."""
    for _, url in c.phylacteries():
        try:
            c.post(url, "/v1/refresh", {}, 5.0)
        except OSError as err:
            _say(f"{url} did not take the refresh ({err}); its periodic reconcile will drop {name}")
    deadline = time.monotonic() + REFRESH_WAIT_S
    while True:
        still = [owner for owner, b in c.backends().items() if b is not None and name in b]
        if not still:
            _say(f"{name}: out of every HAProxy and keepalived peer list")
            return
        if time.monotonic() > deadline:
            raise maintenance.MaintenanceError(f"{name}: still a backend of {', '.join(still)}'s HAProxy")
        time.sleep(1.0)


@node.command("remove")
@click.argument("name", metavar="NODE")
@CLUSTER_OPTION
@SHARE_OPTION
@click.option(
    "--poweroff-command",
    default="wwctl ssh {node} poweroff",
    show_default=True,
    help="how the node is powered off for good ({node}); e.g. 'wwctl power soft {node}'",
)
@click.option("--no-poweroff", is_flag=True, help="the node is down already (refused while it heartbeats)")
@click.option(
    "--stop-wait",
    default=20.0,
    show_default=True,
    help="seconds to wait after the power-off for the agent's last heartbeat ('stopped') before its records go",
)
@click.option("--from-warewulf", is_flag=True, help="also delete it from Warewulf (wwctl node delete, configure)")
@click.option("--wwctl", default="wwctl", show_default=True, help="the wwctl --from-warewulf runs")
@click.option("--drain-timeout", default=300.0, show_default=True, help="seconds the drain may take")
@click.option("--force", is_flag=True, help="also evict Pods no controller owns (they are gone for good)")
@YES_OPTION
def remove(
    name: str,
    cluster: str | None,
    share_path: Path,
    poweroff_command: str,
    no_poweroff: bool,
    stop_wait: float,
    from_warewulf: bool,
    wwctl: str,
    drain_timeout: float,
    force: bool,
    yes: bool,
) -> None:
    """Take NODE out of the cluster for good: cordon and drain it, power it off, remove its
    etcd member and its Node (through another control node's Phylactery), forget its records
    on the share (heartbeat, incarnation, member record, join slots), make every Phylactery
    drop it from HAProxy and keepalived, and with --from-warewulf delete it from Warewulf. A
    new machine with the same name then joins as a new node. The decision is recorded with
    the user who ran it (event node_removed); nothing is inferred from the node's silence.

    Refused (exit 1, naming why, nothing done) when removing its etcd member would leave no
    member, fewer than 2 control nodes (etcd lives in RAM: the last one's reboot would lose
    the data since the last snapshot), or too few answering members for a quorum; or with
    --no-poweroff while it still heartbeats. Exit 1 when a step fails (what was done is
    said); 2 for bad input, an unknown node, or no terminal without --yes.
    """
    _template(poweroff_command, "--poweroff-command")
    user = invoking_user()
    store = operator_store(share_path, cluster, user)
    c = maintenance.Cluster(store, say=_say)
    role = c.role_of(name)
    if role is None:
        fail(f"NODE: no node {name} in cluster {store.cluster} (it never reported to {store.dir})", 2)
    hb = store.read_any_heartbeat(name)
    alive_s = Timeouts().liveness_ttl_s(role)  # a worker heartbeats every 90 s
    if no_poweroff and hb is not None and hb.phase != "stopped" and hb.age_s < alive_s:
        fail(
            f"{name} still heartbeats (phase {hb.phase}, {hb.age_s:.0f}s ago): it runs, and would join again; "
            "let ek8s power it off (drop --no-poweroff); nothing done"
        )
    address = _address(c, name)
    if address is None:
        fail(f"{name}: its address is known neither to the share nor to the API; nothing done")
    assert address is not None
    if role == "control":
        view = c.quorum_view(avoid=[name])
        if view is None:
            fail("no other control node's Phylactery reports etcd's members: cannot judge the removal; nothing done")
        assert view is not None
        why = quorum.removal_refusal(view, name)
        if why is not None:
            fail(f"{name}: refused, {why}; nothing done")
    steps = [
        "cordon and drain it",
        "power it off: " + ("(it is down already)" if no_poweroff else poweroff_command.replace("{node}", name)),
        f"remove its etcd member and Node ({address}) through another control node's Phylactery"
        if role == "control"
        else f"remove its Node ({address})",
        "forget its heartbeat, incarnation, member record and join slots on the share",
        "have every Phylactery drop it from HAProxy and keepalived",
    ]
    if from_warewulf:
        steps.append(f"{wwctl} node delete --yes {name}; {wwctl} configure dhcp and hostfile; {wwctl} overlay build")
    confirm(f"ek8s node remove {name} ({role}) from cluster {store.cluster}", steps, yes, doing="remove it")
    try:
        c.cordon(name)
        gone = c.drain(name, drain_timeout, force)
        _say(f"{name}: drained ({len(gone)} Pods evicted)")
    except maintenance.MaintenanceError as err:
        try:
            c.uncordon(name)
        except probes.kube_errors():
            pass
        fail(f"{err}; nothing removed ({name} uncordoned again)")
    except probes.kube_errors() as err:
        _say(f"{name}: not drained, the API did not answer ({type(err).__name__}); going on")
    try:
        if not no_poweroff:
            maintenance.run_commands(maintenance.command_argvs(poweroff_command, [name]), 120.0, _say)
            _wait_stopped(c, name, stop_wait)
        result = _remove_through_phylactery(c, name, address, user)
        _say(
            f"{name}: removed etcd members {[m['name'] for m in result.get('removed_etcd_members', [])]}, "
            f"Nodes {result.get('deleted_nodes', [])}, Secrets {result.get('deleted_secrets', [])}"
        )
        forgotten = store.forget_node(name)
        _say(f"{name}: forgotten on the share: {', '.join(forgotten) or 'nothing left'}")
        _refresh_everywhere(c, name)
        if from_warewulf:
            for argv in ([wwctl, "node", "delete", "--yes", name], [wwctl, "configure", "dhcp"]):
                maintenance.run_commands([argv], 600.0, _say)
            for argv in ([wwctl, "configure", "hostfile"], [wwctl, "overlay", "build"]):
                maintenance.run_commands([argv], 600.0, _say)
    except maintenance.MaintenanceError as err:
        fail(f"{err} (the steps before it were done)")
    message = f"{name} removed by {user}: etcd member and Node removed, share records forgotten"
    store.record_event(
        "node_removed",
        store.read_state().generation,
        message,
        target=name,
        role=role,
        removed_etcd_members=[m["name"] for m in result.get("removed_etcd_members", [])],
        deleted_nodes=result.get("deleted_nodes", []),
        from_warewulf=from_warewulf,
    )
    _say(message + ("; deleted from Warewulf" if from_warewulf else ""))
    if not from_warewulf:
        click.echo(
            f"note: {name} is still in Warewulf and in your inventory; take it out of the inventory, or "
            "`ek8s warewulf apply` adds it again",
            err=True,
        )
    sys.exit(0)
