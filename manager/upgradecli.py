"""``ek8s upgrade``: the command line of :mod:`manager.upgrade` (docs/operations.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from core import probes, upgrade, versions
from core.cli import fail
from core.records import RolloutRecord
from core.share import ShareError
from manager import maintenance
from manager.clusters import CLUSTER_OPTION, SHARE_OPTION, operator_store
from manager.inventory import DEFAULT_IMAGES
from manager.reset import YES_OPTION, confirm, invoking_user
from manager.upgrade import (
    DEFAULT_IMAGE_COMMAND,
    DEFAULT_REBOOT_COMMAND,
    Commands,
    Driver,
    KubeUpgradeApi,
    VersionedCluster,
    cluster_distribution,
    cluster_versions,
    plan_lines,
)


def _say(line: str) -> None:
    click.echo(f"[{time.strftime('%H:%M:%S')}] {line}")


def _images(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for p in pairs:
        role, sep, name = p.partition("=")
        if not sep or role not in ("control", "worker") or not name:
            fail(f"{option}: {p!r} is not ROLE=IMAGE with ROLE control or worker", 2)
        out[role] = name
    return out


@click.command(name="upgrade")
@CLUSTER_OPTION
@SHARE_OPTION
@click.option("--to", "to_version", metavar="VERSION", help="the Kubernetes release to go to (v1.M.P)")
@click.option(
    "--distribution",
    type=click.Choice(["kubeadm", "k3s"]),
    default=None,
    help="the cluster's (default: found from the API: kubeadm-config, or a k3s API server); a contradiction is refused",
)
@click.option(
    "--image",
    "new_images",
    multiple=True,
    metavar="ROLE=IMAGE",
    help="the Warewulf image of VERSION for control or worker nodes (default: ek8s-control-VERSION, "
    "ek8s-base-VERSION; k3s: ek8s-k3s-VERSION), imported already",
)
@click.option(
    "--old-image",
    "old_images",
    multiple=True,
    metavar="ROLE=IMAGE",
    help="the image the nodes run now, which --rollback returns them to (default: the inventory's, "
    "ek8s-control and ek8s-base; k3s: ek8s-k3s)",
)
@click.option("--max-unavailable", default=1, show_default=True, type=click.IntRange(1), help="workers at once")
@click.option("--resume", is_flag=True, help="continue a stopped rollout from where it stopped")
@click.option("--rollback", is_flag=True, help="return the nodes a stopped rollout moved to their old image")
@click.option("--dry-run", is_flag=True, help="say the plan and exit; nothing is written or touched")
@click.option(
    "--image-command",
    default=DEFAULT_IMAGE_COMMAND,
    show_default=True,
    help="the per-node image switch ({image}, {node}); Warewulf 4.5: wwctl node set --yes --container {image} {node}",
)
@click.option("--reboot-command", default=DEFAULT_REBOOT_COMMAND, show_default=True, help="{node} or {nodes}")
@click.option("--drain-timeout", default=300.0, show_default=True, help="seconds a node's drain may take")
@click.option("--timeout", default=900.0, show_default=True, help="seconds a batch may take to be back")
@click.option("--force", is_flag=True, help="also evict Pods no controller owns (they are gone for good)")
@YES_OPTION
def upgrade_cmd(
    cluster: str | None,
    share_path: Path,
    to_version: str | None,
    distribution: str | None,
    new_images: tuple[str, ...],
    old_images: tuple[str, ...],
    max_unavailable: int,
    resume: bool,
    rollback: bool,
    dry_run: bool,
    image_command: str,
    reboot_command: str,
    drain_timeout: float,
    timeout: float,
    force: bool,
    yes: bool,
) -> None:
    """Upgrade the cluster's Kubernetes one minor (or patch) at a time by rebooting each node
    into the image of --to VERSION: control nodes first, one at a time, then workers
    --max-unavailable at a time; each cordoned, drained (PodDisruptionBudgets respected),
    switched to its new image on Warewulf, rebooted, and waited for (its Node Ready at
    VERSION; a control node's etcd member voting and every HAProxy with it UP), then
    uncordoned. kubeadm's ClusterConfiguration moves to VERSION once, before the first
    control node; kube-proxy once every control node is at VERSION.

    A skip of a minor, a downgrade or a cluster already on two versions is refused (exit 1,
    naming the rule; nothing written). A failed step stops the rollout where it is (exit 1,
    the cluster serving on the other nodes); --resume continues it, --rollback returns the
    nodes it moved to their old image, workers first. The rollout lives in the share's
    rollout.json; `ek8s status` shows it. Exit 2 for bad input or no terminal without --yes.
    """
    if resume and rollback:
        fail("--resume and --rollback: choose one", 2)
    cmds = Commands(image_command, reboot_command)
    try:
        cmds.check()
    except ValueError as err:
        fail(str(err), 2)
    user = invoking_user()
    store = operator_store(share_path, cluster, user)
    api = KubeUpgradeApi(store.admin_kubeconfig_path)
    try:
        stored = store.read_rollout()
    except ShareError as err:
        fail(f"{err}: fix or remove rollout.json first")
    if resume or rollback:
        record = _continue(stored, to_version, resume)
    else:
        record = _new(store.cluster, stored, api, distribution, to_version, new_images, old_images, max_unavailable)
    lines = plan_lines(record)
    what = "resume" if resume else "roll back" if rollback else "upgrade"
    head = (
        f"ek8s upgrade ({what}) of cluster {store.cluster} ({record.distribution}): "
        f"{record.from_version} -> {record.to_version}"
    )
    if dry_run:
        click.echo(f"{head} (dry run: nothing done):")
        for line in lines:
            click.echo(f"  - {line}")
        return
    confirm(head + ", in this order", lines, yes)
    try:
        if resume or rollback:
            assert stored is not None
            phase = upgrade.ROLLING if resume else upgrade.ROLLING_BACK
            record = store.write_rollout(upgrade.move_phase(stored, phase, time.time()), stored.revision)
        else:
            record = store.write_rollout(record, None)
    except (ShareError, upgrade.RolloutError) as err:
        fail(f"rollout.json: {err}")
    store.record_event(
        "upgrade_" + ("resumed" if resume else "rollback" if rollback else "started"),
        store.read_state().generation,
        f"{head} by {user}",
        from_version=record.from_version,
        to_version=record.to_version,
    )
    c = VersionedCluster(store, say=_say)
    opts = maintenance.RollOptions(max_unavailable, drain_timeout, timeout, force)
    driver = Driver(store, c, api, cmds, opts, record, say=_say)
    try:
        final = driver.run()
    except ShareError as err:
        fail(f"rollout.json: {err}")
    store.record_event(
        "upgrade_" + final.phase,
        store.read_state().generation,
        upgrade.summary(final),
        from_version=final.from_version,
        to_version=final.to_version,
    )
    if final.phase in upgrade.FINISHED:
        _say(f"done: {upgrade.summary(final)}")
        sys.exit(0)
    fail(
        f"the rollout stopped: {final.error}; the cluster serves on the other nodes; "
        "then: ek8s upgrade --resume or --rollback"
    )


def _continue(stored: RolloutRecord | None, to_version: str | None, resume: bool) -> RolloutRecord:
    """The stored rollout about to be resumed or rolled back, checked (exit 1 when there is
    none or it is not stopped; 2 for a --to that is not its target)."""
    flag = "--resume" if resume else "--rollback"
    if stored is None:
        fail(f"{flag}: there is no rollout to continue (rollout.json is absent)")
    assert stored is not None
    if to_version is not None and to_version != stored.to_version:
        fail(f"--to: the stopped rollout goes to {stored.to_version}, not {to_version}", 2)
    if stored.phase != upgrade.STOPPED:
        fail(f"{flag}: the rollout is {stored.phase}, not stopped ({upgrade.summary(stored)})")
    try:
        return upgrade.move_phase(stored, upgrade.ROLLING if resume else upgrade.ROLLING_BACK, stored.updated_at)
    except upgrade.RolloutError as err:
        fail(f"{flag}: {err}")
    raise AssertionError


def _new(
    cluster: str,
    stored: RolloutRecord | None,
    api: KubeUpgradeApi,
    distribution: str | None,
    to_version: str | None,
    new_images: tuple[str, ...],
    old_images: tuple[str, ...],
    max_unavailable: int,
) -> RolloutRecord:
    """A new rollout to ``to_version`` from what the API's Nodes report (exit 1 naming the
    rule for a refused path or an unfinished rollout; 2 for bad input)."""
    if to_version is None:
        fail("--to: which version? (or --resume / --rollback a stopped rollout)", 2)
    assert to_version is not None
    if stored is not None and stored.phase not in upgrade.FINISHED:
        fail(f"a rollout is {stored.phase} ({upgrade.summary(stored)}): --resume or --rollback it")
    new = _images(new_images, "--image")
    old = _images(old_images, "--old-image")
    try:
        versions.supported(to_version)
    except ValueError as err:
        fail(f"--to: {err}", 2)
    try:
        current, roles = cluster_versions(api)
        found = cluster_distribution(api, distribution)
    except probes.kube_errors() as err:
        fail(f"the API behind the VIP does not answer: {type(err).__name__}: {err}")
    except ValueError as err:
        fail(f"refused (distribution): {err}; nothing done")
    defaults = DEFAULT_IMAGES[found]
    images = {r: (old.get(r, defaults[r]), new.get(r, f"{defaults[r]}-{to_version}")) for r in ("control", "worker")}
    try:
        return upgrade.new_rollout(
            cluster,
            "k3s" if found == "k3s" else "kubeadm",
            current,
            roles,
            to_version,
            images,
            max_unavailable,
            time.time(),
        )
    except upgrade.PathRefused as err:
        fail(f"refused ({err.rule}): {err}; nothing done", 2 if err.rule == "unsupported" else 1)
    except ValueError as err:
        fail(str(err), 2)
    raise AssertionError
