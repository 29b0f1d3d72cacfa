"""Lab nodes as machines (``ek8s lab up --machines``; docs/lab.md): each node boots the lab's
node image (:mod:`lab.image`) with systemd as PID 1 under ``systemd-nspawn``, in the node's
network namespace, with a root in RAM: a fresh tmpfs over the read-only image and the
Warewulf overlays rendered for the node, as a Warewulf node boots into its image and overlays.

Each machine has a *launcher* (``python -m lab.machines launch CONFIG``), its power supply:
in a mount namespace of its own (``unshare --mount --propagation private``) it mounts a tmpfs
and an overlayfs whose lower layers are, top first, the node's rendered overlay, the lab's
common overlay (the ``ek8s`` overlay's files and the emulation's code) and the image, then
execs ``systemd-nspawn`` on it. The mounts exist only in that namespace, so they vanish with
the machine: nothing to unmount, even after a crash. When the machine reboots
(``systemctl reboot`` inside), nspawn exits with status 133 and the launcher boots it again on
a new tmpfs: an empty root and a new boot id. Any other exit ends the launcher.

systemd-nspawn options used (systemd-nspawn(1), systemd 252):

* ``--boot``: run the image's init (systemd) as PID 1;
* ``--directory=``: the overlay root;
* ``--machine=<node>``: the machine name, which is also its hostname;
* ``--network-namespace-path=/run/netns/<ns>``: the node's namespace (eth0 on the lab's
  bridge, already addressed);
* ``--register=no`` and ``--keep-unit``: no systemd-machined or systemd on the host needed;
* ``--capability=CAP_NET_ADMIN``: keepalived adds and removes the VIP (nspawn keeps that
  capability only with ``--private-network``, which would make a namespace of its own);
* ``--bind=`` the share's trees the node's role mounts (``core.share.mounted_trees``: a
  worker only ``<cluster>/nodes``) below node.yaml's ``share.path``, the emulation's
  directory at ``/var/lib/ek8s-lab``;
* ``--link-journal=no``, ``--resolv-conf=off``, ``--timezone=off``: the host's journal and
  files stay out of the machine;
* ``--console=read-only``: the machine's console goes to the launcher's log.

**A cgroup of its own per machine.** With ``--keep-unit`` and no registration, nspawn puts
itself in ``supervisor/`` and the machine in ``payload/`` *below the cgroup it was started
in* (systemd-nspawn's ``create_subcgroup``), and the machine's systemd manages its units
below ``payload/``. Machines started from one cgroup would therefore share every unit's
cgroup (``payload/system.slice/ek8s-node.service`` for all of them), and one machine's
systemd removing the cgroup of a unit that had just finished (systemd-tmpfiles-setup,
systemd-sysusers, ... at the same moment of every boot) took it from under another machine
starting the same unit, which then failed with 219/CGROUP. So the launcher first moves
itself into ``ek8s-lab.<netns>`` below its own cgroup, in each hierarchy systemd uses
(the ``name=systemd`` v1 hierarchy and cgroup2), records those directories in
``cfg.cgroups``, and removes them when the machine ends; :func:`remove_cgroups` does it after
a crash.

Exit status 133 means "the container was rebooted" (systemd-nspawn(1), "EXIT STATUS" via
``--boot``: systemd's reboot in the container is reported so).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

REBOOT_STATUS = 133  # systemd-nspawn: the container asked for a reboot
EMULATION_MOUNT = "/var/lib/ek8s-lab"


@dataclass
class MachineConfig:
    """What the launcher needs for one machine (``machine.json``): ``name`` (machine name and
    hostname), ``netns`` (path of the node's network namespace), ``image`` (the image's
    root), ``layers`` (overlay directories, top first, laid over the image), ``binds``
    (``[host path, machine path]`` pairs, read-write), ``ram`` (the host directory on which
    the tmpfs is mounted, inside the launcher's mount namespace only), ``boots`` (a JSONL
    file: one ``{"t", "boot"}`` line per boot, ``t`` in Unix seconds), ``cgroups`` (a file in
    which the launcher records the machine's cgroup directories, one per line; "" for none)."""

    name: str
    netns: str
    image: str
    layers: list[str]
    ram: str
    boots: str
    binds: list[list[str]] = field(default_factory=list)
    cgroups: str = ""

    def dump(self, path: Path) -> None:
        """Write ``machine.json``. Raises ``OSError``."""
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> MachineConfig:
        """Read ``machine.json``. Raises ``OSError``, ``ValueError`` or ``TypeError``."""
        return cls(**json.loads(path.read_text()))


def nspawn_argv(cfg: MachineConfig, root: str) -> list[str]:
    """The ``systemd-nspawn`` command line for ``cfg`` booting ``root`` (options in the module
    docstring)."""
    argv = [
        "systemd-nspawn",
        "--boot",
        f"--directory={root}",
        f"--machine={cfg.name}",
        f"--network-namespace-path={cfg.netns}",
        "--register=no",
        "--keep-unit",
        "--capability=CAP_NET_ADMIN",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        "--console=read-only",
    ]
    argv += [f"--bind={src}:{dst}" for src, dst in cfg.binds]
    return argv


NODE_UMASK = 0o022
"""The umask a node's files are made with (a Warewulf image's and a booted system's usual one).
The lab sets it itself: a caller's stricter umask (CI runs under 077) would make the machine's
``/`` and its directories 0700, and a service with ``DynamicUser=`` (the image's
ek8s-node-exporter) then fails to start with ``status=200/CHDIR``."""


@contextlib.contextmanager
def node_umask() -> Iterator[None]:
    """Run the block with :data:`NODE_UMASK` as the process's umask, restoring the caller's."""
    old = os.umask(NODE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def boot_script(cfg: MachineConfig) -> str:
    """The shell script the launcher runs in its own mount namespace for one boot: a tmpfs on
    ``cfg.ram``, an overlayfs of ``cfg.layers`` over ``cfg.image`` with the tmpfs as upper
    layer, then ``exec systemd-nspawn`` on it."""
    ram = shlex.quote(cfg.ram)
    lower = ":".join([*cfg.layers, cfg.image])
    opts = shlex.quote(f"lowerdir={lower},upperdir={cfg.ram}/upper,workdir={cfg.ram}/work")
    return "\n".join(
        [
            "set -e",
            f"umask {NODE_UMASK:03o}",
            f"mount -t tmpfs -o mode=0755 ek8s-ram {ram}",
            f"mkdir -p {ram}/upper {ram}/work {ram}/root",
            f"mount -t overlay -o {opts} ek8s-root {ram}/root",
            "exec " + " ".join(shlex.quote(a) for a in nspawn_argv(cfg, f"{cfg.ram}/root")),
        ]
    )


def launch(cfg: MachineConfig) -> int:
    """Run the machine until it stops without asking for a reboot; return nspawn's last exit
    status. Each boot appends a line to ``cfg.boots``. SIGTERM or SIGINT to the launcher is
    passed to nspawn, which shuts the machine down cleanly (poweroff), and ends the loop."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Path(cfg.ram).mkdir(parents=True, exist_ok=True)
    cgroups = enter_cgroups(Path(cfg.netns).name, Path(cfg.cgroups) if cfg.cgroups else None)
    boot = 0
    try:
        while True:
            boot += 1
            with open(cfg.boots, "a") as f:
                f.write(json.dumps({"t": time.time(), "boot": boot}) + "\n")
            child = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", boot_script(cfg)],
                stdin=subprocess.DEVNULL,
            )
            rc = child.wait()
            print(f"[ek8s lab] {cfg.name}: systemd-nspawn exited {rc}", flush=True)
            if rc != REBOOT_STATUS or stopping:
                return rc
    finally:
        leave_cgroups(cgroups)
        remove_cgroups(cgroups)


CGROUP_PREFIX = "ek8s-lab."


def own_cgroups(mountinfo: str, proc_cgroup: str) -> list[Path]:
    """The caller's cgroup directories in the hierarchies systemd uses, from the texts of
    ``/proc/self/mountinfo`` and ``/proc/self/cgroup`` (proc(5), cgroups(7)): the v1
    hierarchy mounted with ``name=systemd`` and the cgroup2 one, each present only when both
    files show it. Pure."""
    paths: dict[str, str] = {}  # "name=systemd" or "" (cgroup2) -> the caller's cgroup path
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and (parts[1] == "name=systemd" or (parts[0] == "0" and parts[1] == "")):
            paths[parts[1]] = parts[2]
    out = []
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(after) < 3:
            continue
        root, mountpoint, fstype, options = fields[3], fields[4], after[0], after[2].split(",")
        if fstype == "cgroup" and "name=systemd" in options:
            key = "name=systemd"
        elif fstype == "cgroup2":
            key = ""
        else:
            continue
        if key not in paths:
            continue
        rel = os.path.relpath(paths.pop(key), root)
        out.append(Path(mountpoint) if rel == "." else Path(mountpoint) / rel)
    return out


def enter_cgroups(netns_name: str, record: Path | None) -> list[Path]:
    """Move the calling process into ``ek8s-lab.<netns_name>`` below its cgroup in each
    hierarchy of :func:`own_cgroups` (a stale one, left by a crashed machine, is removed
    first), and write the directories to ``record`` (one per line). Returns them. A hierarchy
    where that fails is left out with a line on stdout (the launcher's log): the machine then
    shares the launcher's cgroup, as before this existed."""
    made = []
    mountinfo = Path("/proc/self/mountinfo").read_text()
    for parent in own_cgroups(mountinfo, Path("/proc/self/cgroup").read_text()):
        d = parent / f"{CGROUP_PREFIX}{netns_name}"
        try:
            remove_cgroups([d])
            d.mkdir(exist_ok=True)
            (d / "cgroup.procs").write_text(f"{os.getpid()}\n")
        except OSError as err:
            print(f"[ek8s lab] cgroup {d}: {err}; the machine stays in {parent}", flush=True)
            continue
        made.append(d)
    if record is not None:
        record.write_text("".join(f"{d}\n" for d in made))
    return made


def leave_cgroups(cgroups: list[Path]) -> None:
    """Move the calling process back to the parent of each of ``cgroups`` (ignoring errors)."""
    for d in cgroups:
        with contextlib.suppress(OSError):
            (d.parent / "cgroup.procs").write_text(f"{os.getpid()}\n")


def remove_cgroups(cgroups: list[Path]) -> list[Path]:
    """Remove each directory of ``cgroups`` with everything below it, deepest first (a cgroup
    directory goes with ``rmdir`` once no process is in it). Returns those left (a process
    still in them, or not a cgroup). Never raises."""
    left = []
    for d in cgroups:
        if not d.is_dir():
            continue
        for dirpath, _dirs, _files in os.walk(d, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if d.exists():
            left.append(d)
    return left


def kill_cgroups(cgroups: list[Path]) -> bool:
    """SIGKILL every process in each of ``cgroups`` and below at once, by writing ``1`` to its
    ``cgroup.kill`` (cgroup2, Linux 5.14+; Documentation/admin-guide/cgroup-v2.rst): the
    launcher, nspawn and the whole machine die together, none of them seeing another go
    first. Returns whether one of them had that file (v1 hierarchies have none). Never
    raises."""
    killed = False
    for d in cgroups:
        if not (d / "cgroup.kill").is_file():
            continue
        with contextlib.suppress(OSError):
            (d / "cgroup.kill").write_text("1\n")
            killed = True
    return killed


def recorded_cgroups(record: Path) -> list[Path]:
    """The cgroup directories a launcher recorded in ``record`` (none when it has no file)."""
    try:
        return [Path(line) for line in record.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def leader_pid(netns_name: str) -> int | None:
    """The host pid of the machine's PID 1 (systemd) in the namespace ``netns_name``: the
    process there that is PID 1 of its own PID namespace (``NSpid`` in /proc/PID/status)."""
    from lab import netns

    for pid in netns.pids(netns_name):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                if len(ids) > 1 and ids[-1] == "1":
                    return pid
    return None


def exec_argv(pid: int, argv: list[str]) -> list[str]:
    """``nsenter`` into every namespace of the machine whose PID 1 is host pid ``pid``, with a
    clean environment, running ``argv`` (so systemctl and journalctl talk to its systemd)."""
    env = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]
    if os.environ.get("TERM"):
        env.append(f"TERM={os.environ['TERM']}")
    return ["nsenter", f"--target={pid}", "--all", *env, *argv]


def copy_tree(src: Path, dst: Path, skip_suffix: str = "") -> None:
    """Copy ``src`` into ``dst`` (merging, symlinks kept), leaving out files ending in
    ``skip_suffix`` and ``__pycache__``."""

    def ignore(_d: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__" or (skip_suffix and n.endswith(skip_suffix))]

    shutil.copytree(src, dst, symlinks=True, ignore=ignore, dirs_exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m lab.machines launch MACHINE_JSON``: :func:`launch`."""
    p = argparse.ArgumentParser(prog="python -m lab.machines")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("launch").add_argument("config", type=Path)
    args = p.parse_args(argv)
    return launch(MachineConfig.load(args.config))


if __name__ == "__main__":
    sys.exit(main())
