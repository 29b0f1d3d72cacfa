"""``ek8s bench``: the command around :mod:`manager.bench`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from manager.bench import COLUMNS, BenchError, Target, medians, read_csv, run_once, write_csv, write_plot
from manager.clusters import CLUSTER_OPTION, operator_store
from manager.reset import YES_OPTION, confirm, invoking_user, losses


def _baseline() -> Path:
    """The proof of concept's runs: ``docs/bench/poc-deployment-times.csv`` of the checkout
    this code runs from, else the copy an installed wheel carries (setup.py)."""
    checkout = Path(__file__).resolve().parents[1] / "docs" / "bench" / "poc-deployment-times.csv"
    packaged = Path(__file__).resolve().parent / "data" / "bench" / "poc-deployment-times.csv"
    return checkout if checkout.is_file() else packaged


BASELINE = _baseline()


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
@click.option("--share", "share_path", default="/share", show_default=True, type=click.Path(path_type=Path))
@CLUSTER_OPTION
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
@YES_OPTION
def bench(
    runs: int,
    out_dir: Path,
    baseline: Path,
    share_path: Path,
    cluster: str | None,
    api: str,
    nodes: int | None,
    reboot_command: str,
    timeout: float,
    label: str | None,
    yes: bool,
) -> None:
    """Rebuild the cluster RUNS times and time the proof of concept's five stages.

    Each run is `ek8s reset` plus a reboot of every node. Writes deployment-times.csv (the
    proof of concept's columns) and deployment-times.png (box plots beside the baseline) to
    --out. Every run destroys the cluster's data as `ek8s reset` does: it first says what will
    be lost and asks; without a terminal it refuses unless --yes. Each generation_started
    event names the user who ran it. For the lab, `ek8s lab bench` runs this command in the
    lab's `manager` namespace (10.0.0.13), as from a Warewulf server. Exit 2 when --baseline
    cannot be read, without a terminal and without --yes, or for a cluster the share does not
    hold; exit 1 when not confirmed, the share holds no cluster, a run does not finish within
    --timeout, or the plot cannot be drawn (the CSV is written all the same).
    """
    try:
        base_rows = read_csv(baseline)
    except (OSError, ValueError) as err:
        click.echo(f"ek8s: --baseline: {err}", err=True)
        sys.exit(2)
    user = invoking_user()
    store = operator_store(share_path, cluster, user)
    lines = [
        *losses(store),
        f"then {runs} rebuilds, each a new generation and a reboot of every node: {reboot_command}",
    ]
    confirm(f"ek8s bench of cluster {store.cluster} on {share_path}", lines, yes)
    target = Target(
        share=share_path, cluster=store.cluster, api=api, reboot_command=reboot_command, nodes=nodes, user=user
    )
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
