"""``ek8s bench``: the command around :mod:`leader.bench`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from leader.bench import COLUMNS, BenchError, Target, medians, read_csv, run_once, write_csv, write_plot

BASELINE = Path(__file__).resolve().parents[1] / "docs" / "bench" / "poc-deployment-times.csv"


@click.command()
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1, 200), help="rebuilds to measure")
@click.option("--out", "out_dir", default="bench-results", show_default=True, type=click.Path(path_type=Path))
@click.option(
    "--baseline",
    default=str(BASELINE),
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="runs to compare with (the proof of concept's poc-deployment-times.csv)",
)
@click.option("--lab", "lab_dir", default=None, help="measure the lab at this --dir (run from its manager namespace)")
@click.option("--lab-prefix", default="ek8s", show_default=True, help="the lab's namespace prefix")
@click.option("--share", "share_path", default="/share", show_default=True, type=click.Path(path_type=Path))
@click.option("--cluster", default="default", show_default=True)
@click.option("--api", default="https://vip.kubernetes.local:8443", show_default=True, help="the API through the VIP")
@click.option("--nodes", default=None, type=int, help="Nodes that must be Ready (default: all that reported)")
@click.option(
    "--reboot-command",
    default="wwctl ssh {nodes} reboot",
    show_default=True,
    help="reboots every node; {nodes} becomes the comma-separated node names known to the share",
)
@click.option("--timeout", default=600.0, show_default=True, help="seconds one rebuild may take")
@click.option("--label", default=None, help="what the plot's title calls the cluster (default: the share)")
def bench(
    runs: int,
    out_dir: Path,
    baseline: Path,
    lab_dir: str | None,
    lab_prefix: str,
    share_path: Path,
    cluster: str,
    api: str,
    nodes: int | None,
    reboot_command: str,
    timeout: float,
    label: str | None,
) -> None:
    """Rebuild the cluster RUNS times and time the proof of concept's five stages.

    Each run is `ek8s reset` plus a reboot of every node. Writes deployment-times.csv (the
    proof of concept's columns) and deployment-times.png (box plots beside the baseline) to
    --out. With --lab, the lab's nodes are rebooted and the stages are observed from its
    `manager` namespace (10.0.0.13), as from a Warewulf server.
    """
    try:
        base_rows = read_csv(baseline)
    except (OSError, ValueError) as err:
        click.echo(f"ek8s: --baseline: {err}", err=True)
        sys.exit(2)
    if lab_dir is not None:
        _exec_in_lab_manager(lab_dir, lab_prefix, runs, out_dir, baseline, timeout)
    if not (share_path / cluster / "cluster.json").exists():
        click.echo(f"ek8s: no cluster {cluster!r} under {share_path}", err=True)
        sys.exit(1)
    target = Target(share=share_path, cluster=cluster, api=api, reboot_command=reboot_command, nodes=nodes)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[list[float]] = []
    for i in range(runs):
        click.echo(f"run {i + 1}/{runs}: reset and reboot")
        try:
            rows.append(run_once(target, timeout, say=click.echo))
        except BenchError as err:
            click.echo(f"ek8s: run {i + 1}: {err}", err=True)
            sys.exit(1)
        click.echo(f"  total {rows[-1][-1]:.2f}s")
    csv_path, png_path = out_dir / "deployment-times.csv", out_dir / "deployment-times.png"
    write_csv(csv_path, rows)
    title = f"Deployment stages, {runs} runs of `ek8s bench` against {label or share_path}"
    try:
        write_plot(png_path, rows, base_rows, title)
    except BenchError as err:
        click.echo(f"ek8s: {err} (the CSV is written: {csv_path})", err=True)
        sys.exit(1)
    ours, theirs = medians(rows), medians(base_rows)
    click.echo(f"\n{'median (s)':<12}{'ours':>9}{'PoC':>9}{'ratio':>8}")
    for col, a, b in zip(COLUMNS, ours, theirs, strict=True):
        click.echo(f"{col:<12}{a:>9.2f}{b:>9.2f}{(a / b if b else 0):>8.2f}")
    click.echo(f"\nwrote {csv_path} and {png_path}")


def _exec_in_lab_manager(lab_dir: str, prefix: str, runs: int, out_dir: Path, baseline: Path, timeout: float) -> None:
    from lab.cluster import CLUSTER, VIP_NAME, Lab, LabError
    from leader.config import VipSettings

    the_lab = Lab(Path(lab_dir), prefix)
    try:
        state = the_lab.load()
    except LabError as err:
        click.echo(f"ek8s: {err}", err=True)
        sys.exit(1)
    if not state.manager:
        click.echo("ek8s: this lab has no manager namespace (made by an older ek8s); run lab down and up", err=True)
        sys.exit(1)
    reboot = f"{sys.executable} -m leader lab --dir {lab_dir} --prefix {prefix} reboot --all --no-wait"
    port = VipSettings().port  # the lab's nodes use node.yaml's default
    control = sum(n.role == "control" for n in state.nodes)
    argv = [
        "ip", "netns", "exec", state.manager, sys.executable, "-m", "leader", "bench",
        "--runs", str(runs), "--out", str(out_dir.resolve()), "--baseline", str(baseline.resolve()),
        "--share", str(the_lab.share), "--cluster", CLUSTER, "--api", f"https://{VIP_NAME}:{port}",
        "--nodes", str(len(state.nodes)), "--reboot-command", reboot, "--timeout", str(timeout),
        "--label", f"the lab ({control} control + {len(state.nodes) - control} workers, EMULATED kubeadm)",
    ]  # fmt: skip
    os.execvp(argv[0], argv)
