"""``ek8s bench``: the proof of concept's five-stage deployment measurement.

One run is a rebuild from nothing, as the proof of concept's ``rebuild-and-restart.sh``: a new
generation on the share (``ek8s reset``), every node rebooted by ``--reboot-command``, then the
clock runs until each stage ends. Stages are consecutive, in seconds, as in
``poc-deployment-times.csv`` (columns ``Stage 1`` ... ``Stage 5``, ``Aggregated``):

1. the first control node is up: its agent reports with a new boot id (the proof of concept
   waited for SSH to answer; an agent's heartbeat comes later in the boot, so ours is stricter);
2. the new generation has a leader (``cluster.json``; ``leader`` on the share);
3. the API answers ``GET /healthz`` with ``ok`` through the VIP (TLS not verified: the new
   CA is published only in stage 4, and the proof of concept's probe did the same);
4. the generation is ready (``leader_ready`` on the share);
5. every node is Ready in the API (admin kubeconfig from the share, official client).

Polling every 0.1 s, so each stage end is late by at most that. :func:`write_plot` draws our
runs beside the proof of concept's as box plots (matplotlib).
"""

from __future__ import annotations

import csv
import shlex
import ssl
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.share import ShareStore
from manager.status import api_nodes

COLUMNS = ["Stage 1", "Stage 2", "Stage 3", "Stage 4", "Stage 5", "Aggregated"]
STAGE_NAMES = [
    "first control node up",
    "leader claimed",
    "API healthy via VIP",
    "leader_ready",
    "all nodes Ready",
]
POLL_S = 0.1


class BenchError(Exception):
    """A run did not finish (the message names the stage and how long it waited, or how the
    reboot command failed), or the plot cannot be drawn."""


@dataclass(frozen=True)
class Target:
    """The cluster under test. ``share`` and ``cluster`` name its directory on the share;
    ``api`` is ``https://<vip>:<port>``; ``reboot_command`` is split as by a shell, with
    ``{nodes}`` replaced by the comma-separated node names; ``nodes`` is how many Nodes must be
    Ready (default: every node that ever reported to the share); ``user`` is who the
    ``generation_started`` events name (:func:`manager.reset.invoking_user`)."""

    share: Path
    cluster: str
    api: str
    reboot_command: str
    nodes: int | None = None
    user: str = "bench"


def _healthz(api: str) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(api.rstrip("/") + "/healthz", timeout=1, context=ctx) as resp:
            return bool(resp.status == 200 and resp.read().strip() == b"ok")
    except OSError:
        return False


def _boot_ids(store: ShareStore) -> dict[str, tuple[str, str]]:
    """``{node: (boot id, role)}`` of every heartbeat; ages are not needed, so no clock read."""
    out = {}
    for name in store.heartbeat_names():
        hb = store.read_any_heartbeat(name, now=0.0)
        if hb is not None:
            out[hb.node] = (hb.boot_id, hb.role)
    return out


def run_once(target: Target, timeout_s: float = 600, say: Callable[[str], None] = print) -> list[float]:
    """One rebuild. Returns the five stage durations and their sum (seconds as floats rounded
    to 1 ms, ``COLUMNS`` order); ``say`` gets one line per stage as it ends.

    Raises :class:`BenchError` when a stage does not end within ``timeout_s`` seconds of the
    start, or when the reboot command cannot start, exits non-zero or outlasts ``timeout_s``;
    ``OSError`` or :class:`core.share.ShareError` when the share cannot be read.
    """
    store = ShareStore(target.share, target.cluster, target.user)
    before = _boot_ids(store)
    expected = target.nodes or len(before)
    t0 = time.time()
    state = store.rebuild(f"ek8s bench by {target.user}: rebuild from nothing")
    names = ",".join(sorted(before))
    argv = [a.replace("{nodes}", names) for a in shlex.split(target.reboot_command)]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BenchError(f"reboot command {argv[0]}: {err}") from err
    if res.returncode != 0:
        raise BenchError(f"reboot command exited {res.returncode}: {res.stderr.strip()[-500:]}")

    def control_up() -> bool:
        now = _boot_ids(store)
        return any(role == "control" and before.get(node, ("",))[0] != boot for node, (boot, role) in now.items())

    def leader() -> bool:
        s = store.read_state()
        return s.generation >= state.generation and s.leader is not None

    def ready() -> bool:
        s = store.read_state()
        return s.generation >= state.generation and s.ready

    def all_ready() -> bool:
        ready = api_nodes(store.admin_kubeconfig_path)
        return ready is not None and sum(ready.values()) >= expected

    checks = [control_up, leader, lambda: _healthz(target.api), ready, all_ready]
    ends: list[float] = []
    for i, check in enumerate(checks):
        while not check():
            if time.time() - t0 > timeout_s:
                raise BenchError(f"stage {i + 1} ({STAGE_NAMES[i]}) not over after {timeout_s:.0f}s")
            time.sleep(POLL_S)
        ends.append(time.time())
        say(f"  stage {i + 1} {STAGE_NAMES[i]:<22} {ends[-1] - (ends[-2] if i else t0):6.2f}s")
    stages = [ends[0] - t0] + [ends[i] - ends[i - 1] for i in range(1, 5)]
    return [round(s, 3) for s in stages] + [round(ends[-1] - t0, 3)]


def write_csv(path: Path, rows: list[list[float]]) -> None:
    """The proof of concept's format: header ``COLUMNS``, one row per run, 9 decimals.
    Raises ``OSError`` when ``path`` cannot be written."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for row in rows:
            w.writerow([f"{v:.9f}" for v in row])


def read_csv(path: Path) -> list[list[float]]:
    """Rows (seconds as floats) of a file in the proof of concept's format. Raises ``OSError``
    when it cannot be read, ``ValueError`` on other columns or a value that is not a number,
    ``StopIteration`` when the file is empty."""
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        if header != COLUMNS:
            raise ValueError(f"{path}: columns {header}, expected {COLUMNS}")
        return [[float(v) for v in row] for row in r if row]


def medians(rows: list[list[float]]) -> list[float]:
    """Per column of ``rows`` (seconds, ``COLUMNS`` order), the median rounded to 0.01 s.
    ``rows`` must not be empty and must all have the same length (``ValueError`` otherwise)."""
    return [round(statistics.median(col), 2) for col in zip(*rows, strict=True)]


def write_plot(path: Path, ours: list[list[float]], baseline: list[list[float]], title: str) -> None:
    """Box plots per stage: the proof of concept's runs (grey) beside ours (blue), as PNG
    (1000x500 pixels). ``ours`` and ``baseline`` are rows as :func:`read_csv` returns them.

    Raises :class:`BenchError` when matplotlib is not installed (extra ``bench``), ``OSError``
    when ``path`` cannot be written."""
    try:
        import matplotlib
    except ImportError:
        raise BenchError("the plot needs matplotlib: pip install 'ephemeral-k8s[bench]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5), dpi=100)
    n = len(COLUMNS)
    base_pos = [i * 3 + 1 for i in range(n)]
    ours_pos = [p + 0.9 for p in base_pos]
    b1 = ax.boxplot(list(zip(*baseline, strict=True)), positions=base_pos, widths=0.8, patch_artist=True)
    b2 = ax.boxplot(list(zip(*ours, strict=True)), positions=ours_pos, widths=0.8, patch_artist=True)
    for box in b1["boxes"]:
        box.set_facecolor("#cccccc")
    for box in b2["boxes"]:
        box.set_facecolor("#6fa8dc")
    ax.set_xticks([p + 0.45 for p in base_pos])
    ax.set_xticklabels([f"{c}\n{s}" for c, s in zip(COLUMNS, [*STAGE_NAMES, "total"], strict=True)], fontsize=8)
    ax.set_ylabel("seconds")
    ax.set_title(title, fontsize=10)
    ax.legend(
        [b1["boxes"][0], b2["boxes"][0]],
        [f"proof of concept ({len(baseline)} runs)", f"ephemeral-k8s ({len(ours)} runs)"],
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
