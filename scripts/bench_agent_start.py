"""Benchmark the node agent's start: seconds from process start to its first share operation.

Usage: ``.venv/bin/python scripts/bench_agent_start.py [--runs 9] [--series 3] [--python PY]
[--tree DIR] [--compare DIR] [--bytecode cached|none] [--compare-bytecode cached|none]
[--instructions N] [--steps]``

Each run starts ``PY -m leader run --config <tmp>/node.yaml`` as a worker (the boot path is the
same for both roles up to the ``boot`` event; a control node then starts Phylactery) on a
temporary share whose node tree (``<cluster>/nodes/`` with ``heartbeats/``, ``events/`` and
``slots/``) exists, as a worker's mount does on a node. It times ``Popen`` -> the worker's
heartbeat file on the share (polled every 2 ms; the boot's first write, a few file operations
after the first share operation), reads the process's CPU seconds (user + system,
``/proc/<pid>/stat`` fields 14-15, clock ticks of 10 ms) at that moment, waits for the ``boot``
event (an agent of this tree reports ``first_share_op_s`` and ``first_share_op_cpu_s``, measured
by itself), stops it with SIGTERM and removes the directory. The outside figures work for a tree
whose agent reports neither (``--compare DIR``: another checkout, e.g. ``git worktree add
--detach /tmp/before stage``): its runs alternate with ``--tree``'s in the same process, so the
machine's load changes both alike, and the ratio of the medians is printed per series.

Each tree's packages run from a copy laid out as ``ek8s overlay build`` puts them on a node
(with ``core/REVISION``, so no ``git describe`` at the start). ``--bytecode`` says where the
copy's bytecode comes from: ``cached`` (default) from ``__pycache__``, written by one start
before the runs (an agent restarted on a node, or a node whose overlay ships bytecode);
``none``: none, and the runs have ``PYTHONDONTWRITEBYTECODE=1``, so every start compiles the
modules it imports (a node's first start when the overlay ships no bytecode);
``--compare-bytecode`` sets it apart for the ``--compare`` tree (default: the same). Installed
dependencies use their own ``__pycache__`` either way, as ``pip install`` leaves them. Needs
no root and no lab. Also prints the import time of the boot path and of the whole agent
(``-X importtime``, cumulative, top level). ``--python`` measures another interpreter with this
tree on ``PYTHONPATH``.

``--steps`` prints only where the instructions go: each step of the boot path (the
interpreter, click, PyYAML, pydantic, node.yaml's models...) added in turn, one callgrind run
each, with the cyclic garbage collector off and without the interpreter's teardown
(``os._exit``); for a tree whose ``leader/__main__.py`` sets
``PYDANTIC_DISABLE_PLUGINS``, set it in the environment too.

``--instructions N`` also counts the CPU instructions of the boot path, which other load does
not change: ``valgrind --tool=callgrind`` (its ``Collected`` count) runs N times per tree a
process that does what ``ek8s-node run`` does up to its ``boot`` event (node.yaml validated,
logging set up, :func:`leader.boot.announce`) and exits, and once ``python -c pass`` (the
interpreter's own share). ``PYTHONHASHSEED=0``; ~20 s per run under valgrind.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "leader", "phylactery")
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One start: wall and CPU seconds until its heartbeat was seen, and what its ``boot``
    event says (None from an agent that does not report it)."""

    wall_s: float
    cpu_s: float
    first_share_op_s: float | None
    first_share_op_cpu_s: float | None


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (proc(5), ``/proc/<pid>/stat`` 14-15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def environment(tree: Path, bytecode: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if bytecode == "none":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def prepare(tree: Path, bytecode: str, python: str, dest: Path) -> Path:
    """A copy of ``tree``'s packages in ``dest``, as ``ek8s overlay build`` lays them out on a
    node: without bytecode, with ``core/REVISION`` (so no ``git describe`` runs at the start,
    as in a checkout); with its bytecode written by one import (``cached``) or none."""
    for pkg in PACKAGES:
        shutil.copytree(tree / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / "core" / "REVISION").write_text("bench\n")
    if bytecode == "cached":
        code = "import leader.cli, leader.boot, leader.agent"
        subprocess.run([python, "-c", code], env=environment(dest, "cached"), check=True)
    return dest


def one_run(python: str, tree: Path, bytecode: str) -> Run:
    """Start one agent on a fresh share and return its :class:`Run`."""
    with tempfile.TemporaryDirectory(prefix="ek8s-bench-start-") as tmp:
        t = Path(tmp)
        nodes = t / "share" / "default" / "nodes"
        for sub in ("heartbeats", "events", "slots"):
            (nodes / sub).mkdir(parents=True)
        (t / "root").mkdir()
        (t / "node.yaml").write_text(
            "role: worker\n"
            "node: {name: worker0, address: 10.0.0.41}\n"
            f"share: {{path: {t / 'share'}}}\n"
            f"root: {t / 'root'}\n"
            "service_manager: process\n"
        )
        started = time.monotonic()
        proc = subprocess.Popen(
            [python, "-m", "leader", "run", "--config", str(t / "node.yaml")],
            cwd=t,
            env=environment(tree, bytecode),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            heartbeat, events = nodes / "heartbeats" / "worker0", nodes / "events" / "events.jsonl"
            deadline = started + 30
            while not heartbeat.exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"no heartbeat within 30 s (exit code {proc.poll()})")
                time.sleep(0.002)
            wall, cpu = time.monotonic() - started, cpu_s(proc.pid)
            while time.monotonic() < deadline:
                if events.exists():
                    for line in events.read_text().splitlines():
                        e = json.loads(line)
                        if e.get("event") == "boot":
                            return Run(wall, cpu, e.get("first_share_op_s"), e.get("first_share_op_cpu_s"))
                time.sleep(0.02)
            raise SystemExit("no boot event within 30 s")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# What `ek8s-node run` does up to its boot event (the tree's leader/__main__.py but its main()
# call, then leader/cli.py run), then exit.
BOOT_PATH = """
import sys
import leader
main_py = leader.__path__[0] + "/__main__.py"
exec(compile(open(main_py).read().replace("\\nmain()\\n", "\\n"), main_py, "exec"))
from core.cli import load_or_exit
cfg = load_or_exit(sys.argv[1], "ek8s-node")
from core.logs import log_start, setup_logging
from leader.boot import announce
setup_logging(cfg.node.name, "info")
log_start("ek8s-node", "agent", cfg)
announce(cfg)
"""


# Where the boot path's instructions go (--steps): each step adds its lines to the ones above.
STEPS = (
    ("the interpreter", ""),
    ("import click", "import click"),
    ("import yaml", "import yaml"),
    (
        "pydantic: BaseModel, Field, field_validator, one small model",
        "from pydantic import BaseModel, Field, field_validator\n"
        "class A(BaseModel):\n    a: int = Field(1, ge=0)\n"
        "    @field_validator('a')\n    @classmethod\n    def _a(cls, v): return v\nA(a=1)",
    ),
    ("import core.config (node.yaml's models)", "import core.config"),
    ("node.yaml read and validated", "from core.cli import load_or_exit\ncfg = load_or_exit(sys.argv[1], 'ek8s-node')"),
    ("import core.records", "import core.records"),
    ("import core.share", "import core.share"),
    (
        "leader.cli, leader.boot, logging set up",
        "import leader.cli, leader.boot\nfrom core.logs import log_start, setup_logging\n"
        "setup_logging(cfg.node.name, 'info')\nlog_start('ek8s-node', 'agent', cfg)",
    ),
    ("announce: directories, heartbeat, boot event", "leader.boot.announce(cfg)"),
)


def instructions(python: str, tree: Path | None, bytecode: str, code: str | None = None) -> int:
    """Instructions (callgrind's ``Collected``) of one boot path of ``tree``'s agent on a fresh
    share (or of ``code``, given node.yaml's path as ``sys.argv[1]``), or of ``python -c pass``
    when ``tree`` is None."""
    with tempfile.TemporaryDirectory(prefix="ek8s-bench-start-") as tmp:
        t = Path(tmp)
        for sub in ("heartbeats", "events", "slots"):
            (t / "share" / "default" / "nodes" / sub).mkdir(parents=True)
        (t / "node.yaml").write_text(
            f"role: worker\nnode: {{name: worker0, address: 10.0.0.41}}\nshare: {{path: {t / 'share'}}}\n"
            f"root: {t}\nservice_manager: process\n"
        )
        args = ["-c", "pass"] if tree is None else ["-c", code or BOOT_PATH, str(t / "node.yaml")]
        env = environment(tree or t, bytecode)
        env["PYTHONHASHSEED"] = "0"
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, *args]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=t)
    m = re.search(r"Collected : (\d+)", res.stderr)
    if not m:
        raise SystemExit(f"no instruction count from valgrind: {res.stderr[-500:]}")
    return int(m.group(1))


def import_time(python: str, tree: Path, code: str) -> float:
    """Seconds the top-level imports of ``code`` took (``-X importtime``, cumulative, summed)."""
    env = environment(tree, "cached")
    res = subprocess.run([python, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True, check=True)
    total = 0
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", line)
        if m and m.group(2) == " ":  # top level: one space of indentation
            total += int(m.group(1))
    return total / 1e6


def describe(runs: list[Run]) -> str:
    wall, cpu = [r.wall_s for r in runs], [r.cpu_s for r in runs]
    out = (
        f"Popen -> heartbeat median {statistics.median(wall):.3f} s (min {min(wall):.3f}, max {max(wall):.3f}), "
        f"CPU then {statistics.median(cpu):.3f} s"
    )
    inside = [r.first_share_op_s for r in runs if r.first_share_op_s is not None]
    inside_cpu = [r.first_share_op_cpu_s for r in runs if r.first_share_op_cpu_s is not None]
    if inside and inside_cpu:
        out += (
            f"; the agent's own first_share_op_s {statistics.median(inside):.3f} s, "
            f"first_share_op_cpu_s {statistics.median(inside_cpu):.3f} s"
        )
    return out


def steps(python: str, tree: Path, bytecode: str) -> None:
    """Print the instructions of each of :data:`STEPS` for ``tree`` (one callgrind run each)."""
    with tempfile.TemporaryDirectory(prefix="ek8s-bench-trees-") as keep:
        copy = prepare(tree, bytecode, python, Path(keep) / "tree")
        # The cyclic collector off and no interpreter teardown (os._exit): where collections
        # fall and what the teardown frees move with each step's program, and with them a
        # step's own count moved by tens of millions (some came out negative). The boot
        # path's count (--instructions) includes both.
        code, before = "import gc, os, sys\ngc.disable()", 0
        print(f"{tree}, bytecode {bytecode}: instructions (callgrind), cumulative and added per step")
        for name, lines in STEPS:
            code = f"{code}\n{lines}" if lines else code
            n = instructions(python, copy, bytecode, f"{code}\nos._exit(0)")
            print(f"  {n / 1e6:8.1f} M  (+{(n - before) / 1e6:6.1f} M)  {name}", flush=True)
            before = n


def main() -> None:
    """Run the benchmark (arguments in the module's docstring) and print the figures."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", type=int, default=9, help="runs per series (and per tree)")
    p.add_argument("--series", type=int, default=1)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose agent runs (PYTHONPATH)")
    p.add_argument("--compare", type=Path, help="another checkout, run alternately with --tree")
    p.add_argument("--bytecode", choices=("cached", "none"), default="cached")
    p.add_argument("--compare-bytecode", choices=("cached", "none"), help="default: --bytecode")
    p.add_argument("--instructions", type=int, default=0, metavar="N", help="N callgrind runs per tree")
    p.add_argument("--steps", action="store_true", help="only the instructions of each step of the boot path")
    args = p.parse_args()
    modes = [args.bytecode, args.compare_bytecode or args.bytecode]
    if args.steps:
        steps(args.python, args.tree.resolve(), args.bytecode)
        return
    print(f"{args.python} ({sys.version.split()[0]} here), bytecode {' / '.join(modes)}, {args.runs} runs per series")
    with tempfile.TemporaryDirectory(prefix="ek8s-bench-trees-") as keep:
        trees = [args.tree] + ([args.compare] if args.compare else [])
        prepared = [prepare(t.resolve(), modes[i], args.python, Path(keep) / str(i)) for i, t in enumerate(trees)]
        medians: list[list[float]] = [[] for _ in trees]
        cpus: list[list[float]] = [[] for _ in trees]
        for series in range(1, args.series + 1):
            runs: list[list[Run]] = [[] for _ in trees]
            for _ in range(args.runs):
                for i, tree in enumerate(prepared):
                    runs[i].append(one_run(args.python, tree, modes[i]))
            print(f"series {series}:")
            for i, tree in enumerate(trees):
                print(f"  {tree}: {describe(runs[i])}")
                medians[i].append(statistics.median(r.wall_s for r in runs[i]))
                cpus[i].append(statistics.median(r.cpu_s for r in runs[i]))
            if args.compare:
                print(
                    f"  ratio {trees[0]} / {trees[1]}: wall {medians[0][-1] / medians[1][-1]:.2f}, "
                    f"CPU {cpus[0][-1] / cpus[1][-1]:.2f}"
                )
        if args.series > 1:
            print(f"median of {args.series} series (wall, CPU):")
            for i, tree in enumerate(trees):
                print(f"  {tree}: {statistics.median(medians[i]):.3f} s, {statistics.median(cpus[i]):.3f} s")
            if args.compare:
                print(
                    f"  ratio: wall {statistics.median(medians[0]) / statistics.median(medians[1]):.2f}, "
                    f"CPU {statistics.median(cpus[0]) / statistics.median(cpus[1]):.2f}"
                )
        if args.instructions:
            counts: list[list[int]] = [[] for _ in trees]
            for _ in range(args.instructions):
                for i, tree in enumerate(prepared):
                    counts[i].append(instructions(args.python, tree, modes[i]))
            bare = instructions(args.python, None, args.bytecode)
            n = args.instructions
            print(f"instructions of the boot path (callgrind, median of {n}; `python -c pass` {bare:,}):")
            for i, tree in enumerate(trees):
                print(f"  {tree}: {statistics.median(counts[i]):,.0f} (min {min(counts[i]):,}, max {max(counts[i]):,})")
            if args.compare:
                print(f"  ratio: {statistics.median(counts[0]) / statistics.median(counts[1]):.2f}")
        codes = ("import leader.cli, leader.boot", "import leader.cli, leader.boot, leader.agent")
        samples: dict[tuple[int, str], list[float]] = {}
        for _ in range(5):  # alternating, medians
            for i, tree in enumerate(prepared):
                for code in codes:
                    samples.setdefault((i, code), []).append(import_time(args.python, tree, code))
    for i, tree in enumerate(trees):
        boot, whole = (statistics.median(samples[i, code]) for code in codes)
        print(f"{tree}: imports (-X importtime, median of 5), boot path {boot:.3f} s, the whole agent {whole:.3f} s")


if __name__ == "__main__":
    main()
