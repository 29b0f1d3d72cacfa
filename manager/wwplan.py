"""From an inventory to Warewulf: the ``wwctl`` commands and the NFS share entries.

``plan`` is a pure function of the inventory, the Warewulf version and what the registry
already holds, so running it twice gives the same commands and applying them twice changes
nothing: ``wwctl node add``/``profile add`` are left out for names that exist (they refuse a
duplicate), every ``set`` states the whole wanted value.

Version differences (Warewulf 4.6.0 release notes): 4.5 names node images "containers"
(``--container``, ``wwctl container import``) and overlay lists ``--wwinit``/``--runtime``;
4.6 has ``--image`` and ``--system-overlays``/``--runtime-overlays``, and appends the overlay
lists of a node's profiles, so the cluster profile adds only ek8s's overlays there while 4.5
nodes get their whole lists. NFS: 4.5 mounts exports listed in ``warewulf.conf`` with
``mount: true`` and their ``mount options``; 4.6 exports from ``warewulf.conf`` but mounts
from an ``fstab`` resource of a profile in ``nodes.conf``. ``profile add`` takes ``--yes`` on
4.5 only (4.5 asks for confirmation; 4.6.5 has no such flag).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from manager import yamlfile
from manager.inventory import Inventory

# Export and mount options of the share. no_root_squash: the agents run as root and keep the
# share root-only (0700/0600); lookupcache=positive: a file another node just created is seen
# at once (no cached "does not exist"), which the share protocol's polling relies on.
EXPORT_OPTIONS = "rw,sync,no_root_squash,no_subtree_check"
MOUNT_OPTIONS = "defaults,hard,lookupcache=positive"

# Default overlay lists of a fresh Warewulf install, which 4.5 nodes must repeat.
BASE_OVERLAYS_45 = (["wwinit"], ["generic"])

# Seconds a wwctl query (version, node list, profile list) and a plan step may take. A step
# can be long: `wwctl overlay build` renders every node's overlays, `wwctl configure --all`
# restarts DHCP, TFTP and NFS.
WWCTL_QUERY_TIMEOUT_S = 120.0
STEP_TIMEOUT_S = 600.0


class WarewulfError(Exception):
    """wwctl is missing, cannot run, fails or does not answer in time, or its answer cannot
    be read."""


@dataclass(frozen=True)
class Step:
    """One command of the plan: ``argv`` (``argv[0]`` is ``wwctl`` or a plain command such as
    ``install``) and ``why``, printed as a comment above it."""

    argv: list[str]
    why: str

    def shell(self) -> str:
        """The command as shell text; long ones broken before each ``--option``."""
        line = shlex.join(self.argv)
        if len(line) <= 100:
            return line
        parts: list[str] = []
        for arg in self.argv:
            if arg.startswith("--") or not parts:
                parts.append(shlex.quote(arg))
            else:
                parts[-1] += " " + shlex.quote(arg)
        return " \\\n    ".join(parts)


@dataclass
class Registry:
    """What Warewulf already holds: node and profile names (as :func:`read_registry` reads
    them; empty for ``ek8s warewulf plan --offline``)."""

    nodes: set[str] = field(default_factory=set)
    profiles: set[str] = field(default_factory=set)


def parse_version(text: str) -> str:
    """``wwctl version`` output -> "4.5" or "4.6" (4.6 and later share the 4.6 interface).

    Accepts the forms Warewulf prints (``wwctl: 4.5.8-1``, ``Warewulf Version: v4.6.1``).
    Raises :class:`WarewulfError` for anything before 4.5 or without a version.
    """
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    if not m:
        raise WarewulfError(f"cannot find a version in `wwctl version` output: {text.strip()!r}")
    major, minor = int(m.group(1)), int(m.group(2))
    if (major, minor) < (4, 5):
        raise WarewulfError(f"Warewulf {m.group(0)} is too old: 4.5 or later is needed")
    return "4.5" if (major, minor) == (4, 5) else "4.6"


def _wwctl(wwctl: str, *args: str) -> str:
    try:
        res = subprocess.run(
            [wwctl, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=WWCTL_QUERY_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise WarewulfError(f"{wwctl}: not found (is Warewulf installed? or pass --version)") from None
    except subprocess.TimeoutExpired:
        raise WarewulfError(f"{wwctl} {' '.join(args)}: no answer within {WWCTL_QUERY_TIMEOUT_S:.0f}s") from None
    except OSError as err:
        raise WarewulfError(f"{wwctl}: {err.strerror}") from None
    if res.returncode != 0:
        raise WarewulfError(f"{wwctl} {' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
    return res.stdout


def detect_version(wwctl: str = "wwctl") -> str:
    """Ask ``wwctl version``. Returns "4.5" or "4.6"; raises :class:`WarewulfError` when
    ``wwctl`` is missing, fails, takes over ``WWCTL_QUERY_TIMEOUT_S`` or prints no version
    of 4.5 or later."""
    return parse_version(_wwctl(wwctl, "version"))


def _names(table: str) -> set[str]:
    """First column of a ``wwctl node list``/``profile list`` table, headers and rules dropped."""
    out: set[str] = set()
    for line in table.splitlines():
        cols = line.split()
        if not cols or set(cols[0]) <= set("=-") or cols[0].isupper():
            continue
        out.add(cols[0])
    return out


def read_registry(wwctl: str = "wwctl") -> Registry:
    """Node and profile names Warewulf already has (``wwctl node list``, ``wwctl profile list``:
    the first column of their tables). Raises :class:`WarewulfError` as :func:`detect_version`."""
    return Registry(nodes=_names(_wwctl(wwctl, "node", "list")), profiles=_names(_wwctl(wwctl, "profile", "list")))


def _tags(tags: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in tags.items())


def plan(inv: Inventory, version: str, registry: Registry | None = None) -> list[Step]:
    """The wwctl commands that make Warewulf match ``inv``, in order.

    ``version`` is "4.5" or "4.6"; ``registry`` what exists already (``None``: nothing).
    Share preparation on the server comes first (``install -d`` of the share, root-only),
    then the profile, each node, ``wwctl configure --all`` and ``wwctl overlay build``; NFS
    entries are in :func:`nfs_entries`. Pure: reads and runs nothing, raises nothing.
    """
    reg = registry or Registry()
    v45 = version == "4.5"
    ww = inv.warewulf
    profile = inv.profile
    image_flag = "--container" if v45 else "--image"
    steps = [
        Step(
            ["install", "-d", "-m", "0700", "-o", "root", "-g", "root", str(inv.share.path)],
            "the share on the Warewulf server: root-only, as the agents keep every file in it",
        )
    ]
    if profile not in reg.profiles:
        # 4.5 asks for confirmation unless --yes, and without a terminal adds nothing and
        # exits 0 (v4.5.8 internal/app/wwctl/profile/add/main.go:77-88, --yes at
        # profile/add/root.go:70); 4.6.5's `profile add` has no --yes and refuses it.
        add = ["wwctl", "profile", "add", profile, *(["--yes"] if v45 else [])]
        steps.append(Step(add, f"cluster profile for {inv.cluster}"))
    profile_set = ["wwctl", "profile", "set", profile, "--yes"]
    for key, value in inv.cluster_tags().items():
        profile_set += ["--tagadd", f"{key}={value}"]
    if not v45:
        # 4.6 appends the overlay lists of all a node's profiles: add only ek8s's.
        profile_set += ["--system-overlays", "ek8s,ek8s-hosts", "--runtime-overlays", "ek8s-hosts"]
    steps.append(Step(profile_set, "cluster-wide facts for node.yaml.ww (tags ek8s_*)"))
    sys_ov, run_ov = BASE_OVERLAYS_45 if v45 else ([], [])
    if ww.system_overlays is not None:
        sys_ov = ww.system_overlays
    if ww.runtime_overlays is not None:
        run_ov = ww.runtime_overlays
    for node in inv.expanded():
        if node.name not in reg.nodes:
            steps.append(Step(["wwctl", "node", "add", node.name], f"new {node.role} node"))
        image = inv.node_images.control if node.role == "control" else inv.node_images.worker
        argv = [
            "wwctl", "node", "set", node.name, "--yes",
            "--profile", f"default,{profile}",
            image_flag, image,
            "--root", "tmpfs",
            "--netname", "default", "--netdev", ww.netdev,
            "--hwaddr", node.mac, "--ipaddr", node.address, "--netmask", ww.netmask,
        ]  # fmt: skip
        if ww.gateway:
            argv += ["--gateway", ww.gateway]
        if ww.nameservers:
            argv += ["--nettagadd", _tags({f"DNS{i + 1}": a for i, a in enumerate(ww.nameservers)})]
        argv += ["--tagadd", f"ek8s_role={node.role}"]
        if v45 or ww.system_overlays is not None:
            argv += ["--wwinit" if v45 else "--system-overlays", ",".join([*sys_ov, "ek8s", "ek8s-hosts"])]
        if v45 or ww.runtime_overlays is not None:
            argv += ["--runtime" if v45 else "--runtime-overlays", ",".join([*run_ov, "ek8s-hosts"])]
        steps.append(Step(argv, f"{node.role} {node.address} ({node.mac}), root on tmpfs"))
    steps.append(Step(["wwctl", "configure", "--all"], "DHCP, NFS exports and hosts on the server"))
    steps.append(Step(["wwctl", "overlay", "build"], "render node.yaml and the units for every node"))
    return steps


def nfs_entries(inv: Inventory, version: str) -> dict[str, Any]:
    """What the share needs in Warewulf's files, as YAML-ready data.

    Returns ``{"warewulf.conf": {...}}`` and, for 4.6, ``{"nodes.conf": {...}}``: the export
    (both versions; 4.5 also mounts it from there) and 4.6's ``fstab`` resource on the cluster
    profile. Keys are Warewulf's own (``export paths``, ``mount options``, ``resources``).
    """
    path = str(inv.share.path)
    export: dict[str, Any] = {"path": path, "export options": EXPORT_OPTIONS}
    if version == "4.5":
        export |= {"mount options": MOUNT_OPTIONS, "mount": True}
    out: dict[str, Any] = {"warewulf.conf": {"nfs": {"enabled": True, "export paths": [export]}}}
    if version != "4.5":
        fstab = [{"spec": f"warewulf:{path}", "file": path, "vfstype": "nfs", "mntops": MOUNT_OPTIONS}]
        out["nodes.conf"] = {"nodeprofiles": {inv.profile: {"resources": {"fstab": fstab}}}}
    return out


def render_plan(inv: Inventory, version: str, steps: list[Step]) -> str:
    """The plan as a POSIX shell script (``set -e``, one commented command per step, the NFS
    entries as comments) an operator can read or run (``ek8s warewulf plan``)."""
    lines = [
        "#!/bin/sh",
        f"# ek8s warewulf plan: cluster {inv.cluster}, Warewulf {version}, {len(inv.expanded())} nodes.",
        "# Idempotent: nodes and profiles that exist are only set, never added again.",
        "set -e",
    ]
    for step in steps:
        lines += ["", f"# {step.why}", step.shell()]
    for fname, data in nfs_entries(inv, version).items():
        lines += ["", f"# /etc/warewulf/{fname} needs (ek8s warewulf apply merges it):"]
        lines += ["#   " + ln for ln in yaml.safe_dump(data, sort_keys=False).splitlines()]
    return "\n".join(lines) + "\n"


def _child(node: dict[str, Any], key: str, kind: type, field: str, path: Path) -> Any:
    """``node[key]``, made an empty ``kind`` (dict or list) when absent or null. Raises
    :class:`ConfError` naming ``path`` and the dotted ``field`` when it holds something else."""
    value = node.get(key)
    if value is None:
        value = kind()
        node[key] = value
    if not isinstance(value, kind):
        shape = "a mapping" if kind is dict else "a list"
        raise ConfError(
            f"{path}: field {field!r} must be {shape}, as Warewulf writes it (found {type(value).__name__})"
        )
    return value


def _merge_export(conf: dict[str, Any], entry: dict[str, Any], path: Path) -> bool:
    nfs = _child(conf, "nfs", dict, "nfs", path)
    changed = nfs.get("enabled") is not True
    nfs["enabled"] = True
    paths = _child(nfs, "export paths", list, "nfs.export paths", path)
    for i, existing in enumerate(paths):
        if isinstance(existing, dict) and existing.get("path") == entry["path"]:
            if existing != entry:
                paths[i] = entry
                changed = True
            return changed
    paths.append(entry)
    return True


def _merge_fstab(conf: dict[str, Any], profile: str, fstab: list[dict[str, Any]], path: Path) -> bool:
    profiles = _child(conf, "nodeprofiles", dict, "nodeprofiles", path)
    prof = _child(profiles, profile, dict, f"nodeprofiles.{profile}", path)
    resources = _child(prof, "resources", dict, f"nodeprofiles.{profile}.resources", path)
    entries = _child(resources, "fstab", list, f"nodeprofiles.{profile}.resources.fstab", path)
    kept = [e for e in entries if not (isinstance(e, dict) and e.get("file") == fstab[0]["file"])]
    if kept + fstab == entries:
        return False
    resources["fstab"] = kept + fstab
    return True


class ConfError(Exception):
    """``warewulf.conf`` or ``nodes.conf`` cannot be read or is not a YAML mapping."""


def read_conf(path: Path) -> dict[str, Any]:
    """Warewulf's ``warewulf.conf`` or ``nodes.conf`` at ``path`` as a mapping (empty file: ``{}``).

    Read with :func:`manager.yamlfile.load`, so a value a person left unquoted, such as a MAC
    ``hwaddr: 52:54:00:00:00:21``, stays the string Warewulf (Go's YAML) reads, not a base-60
    number that a rewrite would corrupt. Raises :class:`ConfError` naming the file.
    """
    conf = yamlfile.read(path, ConfError)
    if conf is None:
        return {}
    if not isinstance(conf, dict):
        raise ConfError(f"{path}: the top level must be a mapping, as Warewulf writes it")
    return conf


def merge_conf(path: Path, inv: Inventory, version: str, which: str) -> bool:
    """Merge the share's entry into ``warewulf.conf`` or ``nodes.conf`` at ``path``.

    ``which`` is "warewulf.conf" or "nodes.conf" (nothing to merge for "nodes.conf" on 4.5).
    Returns whether the file changed. The entry for the share's path (an ``export paths`` item,
    or a ``fstab`` resource of the cluster profile with the same ``file``) is replaced, others
    are kept. A changed file is first copied to ``<path>.ek8s-backup`` (comments are not kept:
    PyYAML round trip; values keep their meaning, see :func:`read_conf`). Raises
    :class:`ConfError` or ``OSError``.
    """
    entries = nfs_entries(inv, version)
    if which not in entries:
        return False
    conf = read_conf(path)
    if which == "warewulf.conf":
        changed = _merge_export(conf, entries[which]["nfs"]["export paths"][0], path)
    else:
        fstab = entries[which]["nodeprofiles"][inv.profile]["resources"]["fstab"]
        changed = _merge_fstab(conf, inv.profile, fstab, path)
    if changed:
        shutil.copy2(path, path.with_name(path.name + ".ek8s-backup"))
        path.write_text(yaml.safe_dump(conf, sort_keys=False))
    return changed


def _profile_missing(wwctl: str, profile: str) -> str | None:
    """After ``wwctl profile add``: why ``profile`` is not in ``wwctl profile list``, or None.

    Warewulf can exit 0 without adding it: 4.5 asks for confirmation unless --yes and takes
    no answer as "no" (v4.5.8 internal/app/wwctl/profile/add/main.go:77-88). Every node would
    then render without the cluster's facts, with only a warning
    (``node/constructors.go:197``), so the absence is an error here.
    """
    try:
        names = _names(_wwctl(wwctl, "profile", "list"))
    except WarewulfError as err:
        return str(err)
    if profile in names:
        return None
    return f"`wwctl profile add {profile}` exited 0 but {profile} is not in `wwctl profile list`"


def apply(
    inv: Inventory,
    version: str,
    steps: list[Step],
    wwctl: str = "wwctl",
    conf_dir: Path = Path("/etc/warewulf"),
    say: Any = print,
) -> int:
    """Run ``steps`` in order, merging the NFS entries where they belong; stop at the first
    failure, show its output through ``say``, and return 1 (0 when every step passed; 2, with
    nothing run, when ``warewulf.conf`` or ``nodes.conf`` in ``conf_dir`` cannot be read as YAML).

    ``wwctl`` replaces ``argv[0]`` of the wwctl steps; ``conf_dir`` holds ``warewulf.conf``
    and, on 4.6, ``nodes.conf`` (merged just before ``wwctl configure``, once the profile
    exists). Commands get no terminal (stdin is /dev/null), so a confirmation prompt cannot
    wait unseen; after ``profile add`` the profile must be listed (:func:`_profile_missing`).
    A step whose command is not found or runs over ``STEP_TIMEOUT_S`` seconds fails.
    """
    total = len(steps)
    merged_fstab = False
    try:
        # Both files are read before anything runs: one that cannot be read stops here (exit 2).
        for name in ("warewulf.conf", "nodes.conf"):
            if (conf_dir / name).exists():
                conf = read_conf(conf_dir / name)
                if name == "nodes.conf" and version != "4.5":  # its merge comes later: try it now
                    fstab = nfs_entries(inv, version)[name]["nodeprofiles"][inv.profile]["resources"]["fstab"]
                    _merge_fstab(conf, inv.profile, fstab, conf_dir / name)
        if (conf_dir / "warewulf.conf").exists():
            if merge_conf(conf_dir / "warewulf.conf", inv, version, "warewulf.conf"):
                say(f"merged the share's NFS export into {conf_dir / 'warewulf.conf'} (backup: .ek8s-backup)")
        else:
            say(f"warning: {conf_dir / 'warewulf.conf'} not found; add the NFS export yourself (see plan)")
    except (ConfError, OSError) as err:
        say(f"ek8s: {err}; nothing was run")
        return 2
    for i, step in enumerate(steps, 1):
        argv = [wwctl, *step.argv[1:]] if step.argv[0] == "wwctl" else step.argv
        if step.argv[:2] == ["wwctl", "configure"] and not merged_fstab and version != "4.5":
            # 4.6: the profile exists now; its fstab resource must be in before configure.
            nodes_conf = conf_dir / "nodes.conf"
            try:
                if nodes_conf.exists() and merge_conf(nodes_conf, inv, version, "nodes.conf"):
                    say(f"merged the share's fstab resource into {nodes_conf} (backup: .ek8s-backup)")
            except (ConfError, OSError) as err:
                say(f"ek8s: before step {i}/{total}: {err}; the steps from there were not run")
                return 1
            merged_fstab = True
        say(f"[{i}/{total}] {step.shell()}")
        try:
            res = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False
            )
        except FileNotFoundError:
            say(f"ek8s: step {i} failed: {argv[0]} not found")
            return 1
        except subprocess.TimeoutExpired as err:
            say(f"ek8s: step {i}/{total} killed after {STEP_TIMEOUT_S:.0f}s; the steps after it were not run")
            for partial in (err.stdout, err.stderr):  # bytes (or None) whatever ``text`` says
                shown = partial.decode(errors="replace") if isinstance(partial, bytes) else ""
                if shown.strip():
                    say(shown.rstrip())
            return 1
        if res.returncode != 0:
            say(f"ek8s: step {i}/{total} failed (exit {res.returncode}); the steps after it were not run")
            for stream in (res.stdout, res.stderr):
                if stream.strip():
                    say(stream.rstrip())
            return 1
        if step.argv[:3] == ["wwctl", "profile", "add"]:
            missing = _profile_missing(wwctl, step.argv[3])
            if missing:
                say(f"ek8s: step {i}/{total} failed: {missing}; the steps after it were not run")
                for stream in (res.stdout, res.stderr):
                    if stream.strip():
                        say(stream.rstrip())
                return 1
    say(f"done: {total} steps; boot the nodes (wwctl power on / reboot) to build the cluster")
    return 0
