"""``ek8s lab``: boot, inspect and remove a local lab cluster (needs root)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from core.versions import DEFAULT_KUBERNETES_VERSION, supported, supported_range
from lab import runners
from lab.cluster import Lab
from lab.cluster import second_cluster as second_clusters
from lab.emulation import Emulation
from lab.image import ImageError
from lab.netns import NetnsError
from lab.runners import RunnerError
from lab.state import (
    CLUSTER,
    MAX_CONTROL,
    MAX_WORKERS,
    SECOND_CLUSTER,
    SECOND_VIP,
    SECOND_VIP_NAME,
    SECOND_VRID,
    VIP_NAME,
    LabError,
    LabState,
    merge,
)
from manager.wwrender import RenderError

# What the lab's commands report as their failure (exit 1) rather than a traceback.
LAB_ERRORS = (LabError, NetnsError, ImageError, RunnerError, RenderError)

STAGES = [
    ("leader_claimed_s", "leader claimed (share `leader` written)"),
    ("api_ready_s", "API answers behind the VIP"),
    ("leader_ready_s", "`leader_ready`: join material published"),
    ("all_nodes_ready_s", "every node Ready"),
]


def _lab(ctx: click.Context) -> Lab:
    """The lab in ``--dir``, with the namespace prefix its ``lab.json`` records (the one it was
    made with: ``ek8s lab --dir D down`` must find ``up --prefix P``'s namespaces). A
    ``--prefix`` or ``$EK8S_LAB_PREFIX`` that names another one is refused (exit 2)."""
    the_lab = Lab(Path(ctx.obj["dir"]), ctx.obj["prefix"])
    try:
        recorded = the_lab.load().prefix
    except (LabError, OSError, ValueError, TypeError, KeyError):
        return the_lab  # no lab there yet (or not a lab's lab.json: down copes with it)
    if recorded and recorded != the_lab.prefix:
        if ctx.obj.get("prefix_given"):
            _fail(f"--prefix {the_lab.prefix}: the lab in {the_lab.dir} was made with --prefix {recorded}", 2)
        return Lab(the_lab.dir, recorded)
    return the_lab


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"ek8s lab: {message}", err=True)
    sys.exit(code)


def print_event(event: dict[str, Any], t: float) -> None:
    """One line on stderr for a share event (docs/share-protocol.md): ``t`` (seconds since the
    agents started), node, event and its message."""
    extra = event.get("message", "")
    click.echo(f"  {t:7.3f}s  {event['node']:<9} {event['event']:<16} {extra}", err=True)


def print_report(report: dict[str, Any]) -> None:
    """:meth:`lab.cluster.Lab.report`'s document as text on stdout: the stage timeline with
    each stage's increment, the nodes, etcd, VIP, HAProxy, and what the probe could not read."""
    click.echo("\nStage timeline (seconds since every agent started at the same moment):")
    prev = 0.0
    for key, label in STAGES:
        v = report.get(key)
        if v is None:
            click.echo(f"  {label:<44} {'-':>8}")
            continue
        click.echo(f"  {label:<44} {v:8.3f}s  (+{v - prev:.3f}s)")
        prev = v
    click.echo("\nNodes:")
    for n in report["nodes"]:
        click.echo(f"  {n['name']:<10} {n['role']:<8} {n['address']:<12} {'Ready' if n['ready'] else 'NotReady'}")
    click.echo(
        f"\netcd members: {report['etcd_members']}   VIP holder: {report['vip_holder']}   "
        f"generation: {report['generation']}   leader: {report.get('leader')}"
    )
    up = ", ".join(f"{k}={v}" for k, v in report["haproxy_backends_up"].items())
    click.echo(f"HAProxy backends UP per control node: {up}")
    for k, v in report.get("errors", {}).items():
        click.echo(f"  ! {k}: {v}")
    click.echo("(kubeadm or k3s, kube-apiserver, kubelet are EMULATED in the lab; etcd, HAProxy, keepalived are real)")


def _write_json(path: str | None, report: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=1) + "\n")


def _overrides(settings: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``("timeouts.lease_ttl_s=6", "worker0:node.roles=gpu", ...)`` -> the fields for every
    node (``{"timeouts": {"lease_ttl_s": 6}}``) and those for one node (``{"worker0": {"node":
    {"roles": "gpu"}}}``); values are YAML."""
    import yaml

    out: dict[str, Any] = {}
    per_node: dict[str, dict[str, Any]] = {}
    for item in settings:
        field, sep, raw = item.partition("=")
        node_name, colon, field = field.rpartition(":")
        if not sep or not field or (colon and not node_name):
            _fail(f"--set {item!r}: expected [NODE:]FIELD=VALUE", 2)
        *parents, leaf = field.split(".")
        node = per_node.setdefault(node_name, {}) if colon else out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return out, per_node


@click.group()
@click.option(
    "--dir",
    "directory",
    default=lambda: os.environ.get("EK8S_LAB_DIR", "/run/ek8s-lab"),
    show_default="/run/ek8s-lab or $EK8S_LAB_DIR",
    help="where the lab keeps node roots, share and logs",
)
@click.option(
    "--prefix",
    default=lambda: os.environ.get("EK8S_LAB_PREFIX", "ek8s"),
    show_default="ek8s",
    help="network namespace prefix",
)
@click.pass_context
def lab(ctx: click.Context, directory: str, prefix: str) -> None:
    """A local lab cluster: nodes are network namespaces on one machine.

    Real: node agent, Phylactery, etcd, HAProxy, keepalived (VRRP), file locks.
    EMULATED: kubeadm or k3s, kube-apiserver, kubelet (see lab/kubeadm/, lab/k3s.py).
    """
    given = ctx.get_parameter_source("prefix") is not click.core.ParameterSource.DEFAULT
    ctx.obj = {"dir": directory, "prefix": prefix, "prefix_given": given or "EK8S_LAB_PREFIX" in os.environ}


@lab.command()
@click.option("--control", default=3, show_default=True, type=click.IntRange(1, MAX_CONTROL))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0, MAX_WORKERS))
@click.option(
    "--distribution",
    type=click.Choice(["kubeadm", "k3s"]),
    default="kubeadm",
    show_default=True,
    help="kubernetes.distribution of every node: the emulated kubeadm or the emulated k3s",
)
@click.option(
    "--machines/--processes",
    "machines",
    default=False,
    show_default=True,
    help="boot each node as a systemd-nspawn machine from the lab's node image (built once, cached), "
    "or run its agent as a process of the lab",
)
@click.option("--json", "json_path", default=None, help="write the report here")
@click.option(
    "--init-seconds",
    default=0.0,
    show_default=True,
    help="emulated kubeadm init (k3s: the leader's k3s server start) lasts this long in all (0: as fast as it runs)",
)
@click.option(
    "--join-seconds",
    default=0.0,
    show_default=True,
    help="each emulated kubeadm join (k3s: each joining k3s server or agent start) lasts this long in all",
)
@click.option(
    "--certs-ttl",
    default=7200.0,
    show_default=True,
    help="kubeadm only: emulated lifetime of the kubeadm-certs Secret that kubeadm init uploads (renewals: 2 h)",
)
@click.option(
    "--token-ttl",
    default=None,
    type=float,
    help="kubeadm only: emulated lifetime of kubeadm init's bootstrap token (default and renewals: the ttl asked "
    "for); k3s's tokens do not expire",
)
@click.option(
    "--kubernetes-version",
    default=DEFAULT_KUBERNETES_VERSION,
    show_default=True,
    help="version of the emulated kubeadm, API server and kubelet, and every node's kubernetes.version "
    f"(supported: {supported_range()}; core/versions.py says what differs)",
)
@click.option(
    "--fork-server/--no-fork-server",
    default=True,
    show_default=True,
    help="processes only: fork each emulated kubeadm, k3s or kubelet from one process that has them "
    "imported (lab/forkserver.py), or start each in an interpreter of its own",
)
@click.option("--timeout", default=300.0, show_default=True, help="seconds to wait for every node Ready")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="[NODE:]FIELD=VALUE",
    help="node.yaml field for every node, e.g. --set timeouts.lease_ttl_s=6, or for one node, e.g. "
    "--set worker0:node.roles=gpu (repeatable)",
)
@click.option(
    "--second-cluster",
    default=None,
    metavar="NODES",
    help=f"these nodes (a hostlist) form a second cluster, {SECOND_CLUSTER!r}, on the same share with its own VIP "
    f"({SECOND_VIP} as {SECOND_VIP_NAME}) and VRRP router id {SECOND_VRID}",
)
@click.pass_context
def up(
    ctx: click.Context,
    control: int,
    workers: int,
    distribution: str,
    machines: bool,
    json_path: str | None,
    init_seconds: float,
    join_seconds: float,
    certs_ttl: float,
    token_ttl: float | None,
    kubernetes_version: str,
    fork_server: bool,
    timeout: float,
    settings: tuple[str, ...],
    second_cluster: str | None,
) -> None:
    """Boot a cluster from nothing; return when every node is Ready.

    Exit 1 (the lab is left for inspection) when it cannot be made or is not whole in time;
    exit 2 for a --set without '=', a bad --second-cluster or an unsupported
    --kubernetes-version. --distribution k3s runs the emulated k3s (lab/k3s.py). With
    --second-cluster the report covers the lab's own cluster (`ek8s status --cluster b` from
    the manager namespace shows the other).
    """
    import hostlist

    try:
        supported(kubernetes_version)
    except ValueError as err:
        _fail(f"--kubernetes-version: {err}", 2)
    overrides, per_node = _overrides(settings)
    if second_cluster:
        try:
            names = hostlist.expand_hostlist(second_cluster)
        except hostlist.BadHostlist as err:
            _fail(f"--second-cluster: {err}", 2)
        for name, fields in second_clusters(names).items():
            merge(per_node.setdefault(name, {}), fields)
    if distribution != "kubeadm":  # node.yaml's default; machines keep Warewulf's rendering as is
        overrides.setdefault("kubernetes", {})["distribution"] = distribution
    the_lab = _lab(ctx)
    try:
        state = the_lab.create(
            control,
            workers,
            Emulation(
                init_s=init_seconds,
                join_s=join_seconds,
                certs_ttl_s=certs_ttl,
                token_ttl_s=token_ttl,
                kubernetes_version=kubernetes_version,
                fork_server=fork_server,
            ),
            overrides,
            mode=runners.MACHINES if machines else runners.PROCESSES,
            node_overrides=per_node,
        )
        click.echo(
            f"Booting {control} control + {workers} worker nodes ({state.mode}, Kubernetes {kubernetes_version}) "
            f"in {the_lab.dir} (namespaces {the_lab.prefix}-*)",
            err=True,
        )
        the_lab.start_all(state)
        the_lab.wait_ready(state, timeout, since=state.t0, progress=print_event)
        # Every node Ready does not yet mean every HAProxy has seen the last API server come up.
        report = the_lab.report(state) if second_cluster else the_lab.wait_whole(state, 15)
    except LAB_ERRORS as err:
        _fail(f"{err}\n(the lab is left as it is for inspection; 'ek8s lab down' removes it)")
    print_report(report)
    _write_json(json_path, report)


@lab.command()
@click.option("--json", "json_path", default=None, help="write the report here")
@click.pass_context
def status(ctx: click.Context, json_path: str | None) -> None:
    """Show the lab's timeline and the cluster as it is now (exit 1 when there is no lab)."""
    the_lab = _lab(ctx)
    try:
        state = the_lab.load()
    except LAB_ERRORS as err:
        _fail(str(err))
    report = the_lab.report(state)
    print_report(report)
    _write_json(json_path, report)


@lab.command()
@click.argument("nodes", nargs=-1)
@click.option("--all", "all_nodes", is_flag=True, help="reboot every node at once (without an ek8s reset)")
@click.option("--json", "json_path", default=None, help="write the report (with rejoin_s) here")
@click.option("--timeout", default=300.0, show_default=True, help="seconds to wait for the nodes to be Ready again")
@click.option("--no-wait", is_flag=True, help="return once the nodes are booting (as `wwctl ssh ... reboot` does)")
@click.pass_context
def reboot(
    ctx: click.Context, nodes: tuple[str, ...], all_nodes: bool, json_path: str | None, timeout: float, no_wait: bool
) -> None:
    """Reboot NODES: stop their processes, wipe their roots (tmpfs), boot them; wait until Ready.

    Exit 1 when there is no lab, a node is unknown, or they are not Ready within --timeout.
    """
    the_lab = _lab(ctx)
    try:
        state = the_lab.load()
        targets = state.nodes if all_nodes else [state.node(n) for n in nodes]
        if not targets:
            raise LabError("name a node to reboot, or --all")
        started = time.time()
        if state.mode == runners.MACHINES:
            # As on a node: `systemctl reboot` inside; the machine's launcher boots it again
            # on an empty RAM root. rejoin_s then counts the shutdown and systemd's start too.
            the_lab.reboot_machines(state, targets)
            booted = started
            click.echo(f"{', '.join(n.name for n in targets)}: `systemctl reboot` sent", err=True)
        else:
            for n in targets:
                the_lab.stop_node(state, n, crash=False)
            booted = time.time()
            for n in targets:
                the_lab.boot_node(state, n)
            click.echo(f"{', '.join(n.name for n in targets)}: stopped in {booted - started:.2f}s, booting", err=True)
        if no_wait:
            return
        ready = the_lab.wait_ready(state, timeout, since=booted, names=[n.name for n in targets], progress=print_event)
    except LAB_ERRORS as err:
        _fail(str(err))
    report = the_lab.report(state)
    report["rejoin_s"] = round(ready - booted, 3)
    report["rebooted"] = [n.name for n in targets]
    print_report(report)
    click.echo(f"\n{', '.join(report['rebooted'])} Ready again {report['rejoin_s']:.3f}s after booting")
    _write_json(json_path, report)


@lab.command()
@click.argument("node")
@click.pass_context
def crash(ctx: click.Context, node: str) -> None:
    """Crash NODE: SIGKILL every process and pull its cable at once; it stays down."""
    the_lab = _lab(ctx)
    try:
        state = the_lab.load()
        the_lab.stop_node(state, state.node(node), crash=True)
    except LAB_ERRORS as err:
        _fail(str(err))
    click.echo(f"{node} crashed (processes killed, link down); 'ek8s lab boot {node}' brings it back")


@lab.command()
@click.argument("node")
@click.pass_context
def boot(ctx: click.Context, node: str) -> None:
    """Boot NODE (after a crash) with a fresh root; returns at once."""
    the_lab = _lab(ctx)
    try:
        state = the_lab.load()
        the_lab.boot_node(state, state.node(node))
    except LAB_ERRORS as err:
        _fail(str(err))
    click.echo(f"{node} is booting")


@lab.command(name="image")
@click.argument("node")
@click.argument("image")
@click.pass_context
def image_cmd(ctx: click.Context, node: str, image: str) -> None:
    """Give NODE the node image IMAGE from its next boot on: the lab's stand-in for Warewulf's
    per-node override (`wwctl node set --yes --image IMAGE NODE`). The image stands for the
    Kubernetes version the node's emulated kubeadm and kubelet then run: ek8s-control,
    ek8s-base and ek8s-k3s the lab's --kubernetes-version, ek8s-<variant>-v1.M.P that
    release; a name the lab does not know is an image that does not boot (lab/nodeimage.py).
    Processes mode only. Exit 1 for an unknown node or a machines-mode lab."""
    from lab.nodeimage import image_version

    the_lab = _lab(ctx)
    try:
        state = the_lab.load()
        if state.mode != runners.PROCESSES:
            raise LabError("ek8s lab image: process mode only (machines boot the lab's one node image)")
        n = state.node(node)
        n.image = image
        the_lab.save(state)
    except LAB_ERRORS as err:
        _fail(str(err))
    version = image_version(image, str(state.emulation.get("kubernetes_version", "")))
    click.echo(f"{node}: image {image} from its next boot ({version or 'no such image: it will not boot'})")


@lab.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Remove every namespace, link, process and file the lab made."""
    removed = _lab(ctx).down()
    click.echo("Removed: " + (", ".join(removed) if removed else "nothing (no lab)"))


@lab.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@click.pass_context
def exec_(ctx: click.Context, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside NODE's namespace (stdin and exit code pass through). NODE may be
    `manager`, the Warewulf server's stand-in at 10.0.0.13."""
    the_lab = _lab(ctx)
    argv = list(command[1:] if command and command[0] == "--" else command)
    if not argv:
        _fail("no command given (ek8s lab exec NODE -- COMMAND...)", 2)
    try:
        state: LabState = the_lab.load()
        if node == "manager" and state.manager:
            full = ["ip", "netns", "exec", state.manager, *argv]
        else:
            full = the_lab.runner(state).exec_argv(state, state.node(node), argv)
    except LAB_ERRORS as err:
        _fail(str(err), 2)
    os.execvp(full[0], full)


@lab.command()
@click.argument("node")
@click.option("-u", "--unit", "units", multiple=True, help="only this unit's messages (repeatable)")
@click.option("-n", "--lines", default=None, type=int, help="only the last N lines")
@click.option("-f", "--follow", is_flag=True, help="keep printing new messages")
@click.pass_context
def logs(ctx: click.Context, node: str, units: tuple[str, ...], lines: int | None, follow: bool) -> None:
    """NODE's journal (machines: `journalctl` inside the machine, this boot) or, for a
    process-mode node, its agent's log file."""
    the_lab = _lab(ctx)
    try:
        state = the_lab.load()
        n = state.node(node)
        if state.mode == runners.MACHINES:
            argv = ["journalctl", "--no-pager", "-b"] + [f"--unit={u}" for u in units]
            argv += [f"--lines={lines}"] if lines is not None else []
            argv += ["--follow"] if follow else []
            full = the_lab.runner(state).exec_argv(state, n, argv)
        else:
            full = ["tail", f"--lines={lines if lines is not None else '+1'}", *(["-f"] if follow else []), n.log]
    except LAB_ERRORS as err:
        _fail(str(err), 2)
    os.execvp(full[0], full)


def lab_distribution(state: LabState) -> str:
    """``kubernetes.distribution`` of the lab's nodes (their node.yaml; ``kubeadm`` when a
    node.yaml is unreadable or does not say, node.yaml's default)."""
    try:
        doc = yaml.safe_load(Path(state.nodes[0].config).read_text()) or {}
    except (IndexError, OSError, yaml.YAMLError):
        return "kubeadm"
    return str((doc.get("kubernetes") or {}).get("distribution") or "kubeadm")


@lab.command(name="bench")
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1, 200), help="rebuilds to measure")
@click.option("--out", "out_dir", default="bench-results", show_default=True, type=click.Path(path_type=Path))
@click.option("--baseline", default=None, type=click.Path(dir_okay=False, path_type=Path), help="see `ek8s bench`")
@click.option("--timeout", default=600.0, show_default=True, help="seconds one rebuild may take")
@click.option(
    "--distribution",
    type=click.Choice(["kubeadm", "k3s"]),
    default=None,
    help="the distribution the lab must run (default: whichever `lab up` chose); exit 2 if it runs the other",
)
@click.pass_context
def bench(
    ctx: click.Context, runs: int, out_dir: Path, baseline: Path | None, timeout: float, distribution: str | None
) -> None:
    """Run `ek8s bench` against this lab from its `manager` namespace (10.0.0.13), as from a
    Warewulf server: each run is `ek8s reset` plus `ek8s lab reboot --all --no-wait`. The
    plot's title names the lab's distribution (`lab up --distribution`)."""
    from core.config import VipSettings

    the_lab = _lab(ctx)
    try:
        state = the_lab.load()
    except LAB_ERRORS as err:
        _fail(str(err))
    running = lab_distribution(state)
    if distribution is not None and distribution != running:
        _fail(f"--distribution {distribution}: this lab runs {running} (ek8s lab up --distribution)", 2)
    if not state.manager:
        _fail("this lab has no manager namespace (made by an older ek8s); run lab down and up")
    reboot = f"{sys.executable} -m manager lab --dir {the_lab.dir} --prefix {the_lab.prefix} reboot --all --no-wait"
    port = VipSettings().port  # the lab's nodes use node.yaml's default
    control = sum(n.role == "control" for n in state.nodes)
    argv = [
        "ip", "netns", "exec", state.manager, sys.executable, "-m", "manager", "bench",
        "--runs", str(runs), "--out", str(out_dir.resolve()),
        "--share", str(the_lab.share), "--cluster", CLUSTER, "--api", f"https://{VIP_NAME}:{port}",
        "--nodes", str(len(state.nodes)), "--reboot-command", reboot, "--timeout", str(timeout), "--yes",
        "--label", f"the lab ({control} control + {len(state.nodes) - control} workers, EMULATED {running})",
    ]  # fmt: skip
    if baseline is not None:
        argv += ["--baseline", str(baseline.resolve())]
    os.execvp(argv[0], argv)
