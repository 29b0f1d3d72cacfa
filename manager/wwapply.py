"""``ek8s warewulf apply``: run a :class:`manager.wwplan.Plan` step by step.

Order and safety:

- The registry steps run first. ``warewulf.conf`` and ``nodes.conf`` are edited only once they
  all succeeded, so an apply that fails there leaves both files as they were. The edits are
  computed again from the files as they are then (``wwctl`` rewrites ``nodes.conf`` on every
  change) and written atomically, each after a copy to ``<file>.ek8s-backup``. The server
  steps (``wwctl configure``, ``wwctl overlay build``) read those files, so they come last.
- Every command runs without a terminal (stdin is /dev/null), so a confirmation prompt cannot
  wait unseen; after ``profile add`` the registry is read again and the profile must be there
  (4.5 takes an unanswered prompt as "no" and exits 0, v4.5.8 profile/add/main.go:77-88).
- With ``fencing: warewulf-power`` the fence service's unit (``ek8s-fence@<cluster>.service``,
  :mod:`manager.fence`) is written, enabled and started after the server steps; without, one
  an earlier apply left is stopped, disabled and removed.
- The published inventory (``inventory.json`` on the share) is written last, by the user who
  ran apply, so Phylactery puts the running Nodes' labels, taints and roles in line.
- One line per step on stdout (``[3/9] wwctl profile set ek8s-control ... ok``), the full
  command with ``verbose``; a failure, its exit status and the command's own output go to
  stderr, and nothing after it runs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from manager import wwconf
from manager.inventory import Inventory
from manager.wwplan import Plan, Step
from manager.wwregistry import WarewulfError, read_registry

# Seconds one step may take: `wwctl overlay build` renders every node's overlays,
# `wwctl configure` restarts services.
STEP_TIMEOUT_S = 600.0


class Reporter:
    """Where apply writes: progress to ``out``, errors to ``err``; ``verbose`` adds each full
    command."""

    def __init__(self, out: TextIO = sys.stdout, err: TextIO = sys.stderr, verbose: bool = False) -> None:
        self.out, self.err, self.verbose = out, err, verbose

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def error(self, line: str) -> None:
        print(line, file=self.err, flush=True)


def _output(reporter: Reporter, *streams: str | bytes | None) -> None:
    for stream in streams:
        text = stream.decode(errors="replace") if isinstance(stream, bytes) else (stream or "")
        if text.strip():
            reporter.error(text.rstrip())


def _run(step: Step, argv: list[str], prefix: str, r: Reporter) -> bool:
    try:
        res = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        r.error(f"{prefix} failed: {argv[0]} not found")
        return False
    except subprocess.TimeoutExpired as err:
        r.error(f"{prefix} killed after {STEP_TIMEOUT_S:.0f}s: {step.short()}")
        _output(r, err.stdout, err.stderr)
        return False
    if res.returncode != 0:
        r.error(f"{prefix} failed (exit {res.returncode}): {step.short()}")
        _output(r, res.stdout, res.stderr)
        return False
    if r.verbose and res.stdout.strip():
        r.say(res.stdout.rstrip())
    return True


def _edit(step: Step, inv: Inventory, p: Plan, prefix: str, r: Reporter) -> bool:
    path = Path(step.argv[1])
    version = p.version
    try:
        old = wwconf.read_text(path) or ""
        if path.suffix == ".service":  # the fence unit: nothing else writes it, the plan's text stands
            new = p.edits[path][1]
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        elif path.name == "warewulf.conf":
            new = wwconf.edit_warewulf_conf(old, inv, version, path)
        elif path.suffix == ".exports":
            new = wwconf.exports_file_text(inv)
            path.parent.mkdir(mode=0o755, exist_ok=True)
        else:
            new = wwconf.edit_nodes_conf(old, inv, path)
        if new != old:
            wwconf.write_atomic(path, new)
    except (wwconf.ConfError, OSError) as err:
        r.error(f"{prefix} failed: {err}")
        return False
    if r.verbose:
        r.say(wwconf.diff(path, old, new).rstrip())
    return True


def _publish(inv: Inventory, prefix: str, r: Reporter) -> bool:
    """Write the cluster's ``inventory.json`` on the share (:func:`publish`)."""
    try:
        path = publish(inv)
    except OSError as err:
        r.error(f"{prefix} failed: cannot write the share: {err}")
        return False
    if r.verbose:
        r.say(f"{path}: {len(inv.expanded())} nodes")
    return True


def publish(inv: Inventory) -> Path:
    """Publish ``inv``'s nodes, labels, taints and roles to ``<share>/<cluster>/inventory.json``
    (:class:`core.records.PublishedInventory`, by the invoking user). Returns the file.
    Raises ``OSError`` when the share cannot be written."""
    from core.share import ShareStore
    from manager.inventory import published
    from manager.reset import invoking_user

    user = invoking_user()
    store = ShareStore(inv.share.path, inv.cluster, user, record_invalid=False)
    store.publish_inventory(published(inv, user, time.time()))
    return store.dir / "inventory.json"


def apply(
    inv: Inventory,
    p: Plan,
    wwctl: str = "wwctl",
    service: str = "service",
    exportfs: str = "exportfs",
    systemctl: str = "systemctl",
    conf_dir: Path = Path("/etc/warewulf"),
    reporter: Reporter | None = None,
    dry_run: bool = False,
    check_profile: Callable[[str], bool] | None = None,
) -> int:
    """Run the steps of ``p`` in order; return 0 when all passed, 1 at the first failure
    (nothing after it runs). ``wwctl``, ``service``, ``exportfs`` and ``systemctl`` replace
    ``argv[0]`` of the steps that run them; ``conf_dir``
    is where the registry is read again after ``profile add`` (4.5). With ``dry_run``
    nothing runs: each step is listed and each file edit shown as a unified diff.
    ``check_profile(name)`` (default: read the registry) says whether a profile exists."""
    r = reporter or Reporter()
    total = len(p.steps)
    if not total:
        r.say("nothing to do: the registry, warewulf.conf and nodes.conf match the inventory")
        for note in p.notes[1:]:
            r.say(f"note: {note}")
        return 0
    exists = check_profile or (lambda name: name in read_registry(p.version, wwctl, conf_dir).profiles)
    width = len(str(total))
    for i, step in enumerate(p.steps, 1):
        prefix = f"[{i:>{width}}/{total}]"
        if dry_run:
            r.say(f"{prefix} {step.short()} (dry run)")
            if step.kind == "edit":
                old, new = p.edits[Path(step.argv[1])]
                r.say(wwconf.diff(Path(step.argv[1]), old, new).rstrip())
            elif r.verbose:
                r.say(step.shell())
            continue
        if r.verbose:
            r.say(f"{prefix} {step.shell()}")
        if step.kind == "edit":
            ok = _edit(step, inv, p, prefix, r)
        elif step.kind == "share":
            ok = _publish(inv, prefix, r)
        else:
            tools = {"wwctl": wwctl, "service": service, "exportfs": exportfs, "systemctl": systemctl}
            tool = tools.get(step.argv[0], step.argv[0])
            argv = [tool, *step.argv[1:]]
            ok = _run(step, argv, prefix, r)
        if ok and step.argv[1:3] == ("profile", "add"):
            try:
                ok = exists(step.argv[3])
                why = f"`{step.short()}` exited 0 but {step.argv[3]} is not in the registry"
            except WarewulfError as err:
                ok, why = False, str(err)
            if not ok:
                r.error(f"{prefix} failed: {why}")
        if not ok:
            r.error(f"ek8s: stopped at step {i}/{total}; the {total - i} steps after it were not run")
            if any(s.kind == "edit" for s in p.steps[i:]):
                r.error("ek8s: warewulf.conf and nodes.conf were not changed")
            return 1
        r.say(f"{prefix} {step.short()} ok")
    r.say(f"done: {total} steps; boot the nodes (wwctl power on / reboot) to build the cluster")
    return 0
