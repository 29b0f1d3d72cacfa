"""Benchmark the node agent's start: seconds from process start to its first share operation.

Usage: ``.venv/bin/python scripts/bench_agent_start.py [--runs 5] [--python PY] [--tree DIR]
[--compare DIR]``

Each run starts ``PY -m leader run --config <tmp>/node.yaml`` as a worker (the boot path is the
same for both roles up to the ``boot`` event; a control node then starts Phylactery) on a
temporary share, waits for its ``boot`` event in ``events.jsonl`` (which carries
``first_share_op_s``, measured by the agent against its own start time in ``/proc``), stops it
with SIGTERM and removes the directory. The same start is also timed from outside: from
``Popen`` to the cluster directory's appearance on the share (polled every 2 ms), which works
for a tree whose agent does not report ``first_share_op_s`` (``--tree``: another checkout,
e.g. ``git worktree add /tmp/before <commit>``). ``--compare DIR`` alternates runs of DIR's
agent with ``--tree``'s in the same process and prints the ratio of the medians (the machine's
load changes both alike). Needs no root and no lab. Prints the median, min and
max, and the import time of the boot path (``-X importtime``, cumulative, the largest
top-level packages). ``--python`` measures another interpreter with this tree on
``PYTHONPATH`` (e.g. python3.11 as on Rocky 9).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_run(python: str, tree: Path) -> tuple[float, float | None]:
    """Start one agent; return (seconds from ``Popen`` to the cluster directory, the boot
    event's ``first_share_op_s`` or None)."""
    with tempfile.TemporaryDirectory(prefix="ek8s-bench-start-") as tmp:
        t = Path(tmp)
        (t / "share").mkdir()
        (t / "root").mkdir()
        (t / "node.yaml").write_text(
            "role: worker\n"
            "node: {name: worker0, address: 10.0.0.41}\n"
            f"share: {{path: {t / 'share'}}}\n"
            f"root: {t / 'root'}\n"
            "service_manager: process\n"
        )
        env = dict(os.environ, PYTHONPATH=str(tree))
        started = time.monotonic()
        proc = subprocess.Popen(
            [python, "-m", "leader", "run", "--config", str(t / "node.yaml")],
            cwd=t,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            cluster, events = t / "share" / "default", t / "share" / "default" / "events.jsonl"
            deadline = started + 30
            while not cluster.exists():
                if time.monotonic() > deadline:
                    raise SystemExit("no cluster directory within 30 s")
                time.sleep(0.002)
            outside = time.monotonic() - started
            while time.monotonic() < deadline:
                if events.exists():
                    for line in events.read_text().splitlines():
                        e = json.loads(line)
                        if e.get("event") == "boot":
                            inside = e.get("first_share_op_s")
                            return outside, float(inside) if inside is not None else None
                time.sleep(0.02)
            raise SystemExit("no boot event within 30 s")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def import_times(python: str, tree: Path) -> list[tuple[int, str]]:
    """(cumulative microseconds, package) of the boot path's top-level imports, largest first."""
    code = "import leader.cli, leader.agent"  # all of the agent, wherever the first share operation is
    env = dict(os.environ, PYTHONPATH=str(tree))
    res = subprocess.run([python, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True, check=True)
    found: dict[str, int] = {}
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)$", line)
        if m and m.group(2) == " ":  # top level: one space of indentation
            found[m.group(3)] = int(m.group(1))
    return sorted(((us, name) for name, us in found.items()), reverse=True)


def main() -> None:
    """Run the benchmark (arguments in the module's docstring) and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose agent runs (PYTHONPATH)")
    p.add_argument("--compare", type=Path, help="another checkout, run alternately with --tree")
    args = p.parse_args()
    runs, other = [], []
    for _ in range(args.runs):
        runs.append(one_run(args.python, args.tree))
        if args.compare:
            other.append(one_run(args.python, args.compare)[0])
    if other:
        mine = statistics.median(o for o, _ in runs)
        print(
            f"{args.compare}: Popen -> cluster directory median {statistics.median(other):.3f} s "
            f"(min {min(other):.3f}, max {max(other):.3f}); {args.tree}: {mine:.3f} s; "
            f"ratio {mine / statistics.median(other):.2f}"
        )
    outside = [o for o, _ in runs]
    print(f"{args.tree} with {args.python}, {args.runs} runs:")
    print(
        f"  Popen -> cluster directory on the share: median {statistics.median(outside):.3f} s "
        f"(min {min(outside):.3f}, max {max(outside):.3f})"
    )
    inside = [i for _, i in runs if i is not None]
    if inside:
        print(
            f"  first_share_op_s (the agent's own): median {statistics.median(inside):.3f} s "
            f"(min {min(inside):.3f}, max {max(inside):.3f})"
        )
    imports = import_times(args.python, args.tree)
    print(f"boot path imports (cumulative, top level): {sum(us for us, _ in imports) / 1e6:.3f} s")
    for us, name in imports[:12]:
        print(f"  {us / 1e3:7.1f} ms  {name}")


if __name__ == "__main__":
    main()
