"""From an inventory to Warewulf: the steps that make the registry and files match it.

:func:`plan` is a pure function of the inventory, the Warewulf version, what the registry
holds (:mod:`manager.wwregistry`) and a snapshot of the local files (:class:`Local`). It
states only what differs, so a second run on an unchanged registry plans nothing.

What goes where (Warewulf's profiles; userdocs nodes/profiles.rst):

- **Role profiles** ``<cluster>-control`` and ``<cluster>-worker`` carry everything the nodes
  of a role share: the node image (4.5 ``--container``, 4.6+ ``--image``), ``--root tmpfs``
  (containerd cannot ``pivot_root`` on the default initramfs root), the overlay lists, the
  network device ``default``'s ``--netdev``, ``--netmask`` and ``--gateway``, and every tag
  node.yaml.ww reads (:meth:`manager.inventory.Inventory.cluster_tags` and ``ek8s_role``).
- **Nodes** carry only what is theirs: their MAC and address, their DNS network tags (below),
  and the role profile appended to whatever profiles they have (the site's own profiles and
  their order stay; only ek8s's other profiles, including the single cluster profile
  ``ek8s-<cluster>`` of earlier versions, are taken out). Warewulf merges a node's profiles in
  order, the right-most winning for scalars, so the role profile, last, decides the fields
  it sets.

Version facts this relies on (tags v4.5.8, v4.6.5, v4.7.0):

- Overlay lists of all a node's profiles are appended (4.5 Entry.SetAltSlice/GetSlice,
  node/methods.go:152-163, 279-288; 4.6+ node/mergo.go WithAppendSlice). A list set
  anywhere drops 4.5's built-in default (``wwinit``/``generic``, node/constructors.go:23-40),
  so 4.5's role profiles repeat it; 4.6+ add only ek8s's to the ``default`` profile's, and
  negate Warewulf's ``hosts`` (``~hosts``, node/methods.go cleanList) so that ``ek8s-hosts``,
  which writes the same file plus the VIP's name, is the only overlay writing /etc/hosts
  (4.7 puts ``hosts`` in the default system list too, etc/nodes.conf).
- ``profile add`` takes ``--yes`` on 4.5 only (4.5 asks and takes no terminal as "no",
  profile/add/main.go:77-88; 4.6.5 and 4.7.0 have no such flag), and 4.6+'s ``profile add``
  ignores ``--tagadd`` (profile/add/main.go applies only IPMI tags), so a new profile is
  added bare and set after.
- Network tags on a profile do not stick on 4.7.0 (``profile set --nettagadd``: update.go
  skips ``map[string]string`` fields and profile/set/main.go has no network-tag loop), so the
  DNS tags go on the nodes, in one ``node set`` for all nodes that need them (``node set``
  takes a hostlist and applies ``--nettagadd``, 4.7.0 node/set/main.go:164-174). 4.7.0's
  ``profile set`` also copies ``--tagadd`` into the profile's device named by ``--netname``
  (main.go:141-149); the copies are ``ek8s_*`` keys no network overlay reads.
- 4.7 has ``wwctl node unset`` (CHANGELOG 4.7.0, #1954): a node's own value of a field the
  role profile carries is unset there; 4.5 and 4.6 cannot unset an address field (4.6.5
  parses ``--netmask`` as an IP), so there a differing value is set to the wanted one.
- ``wwctl configure dhcp``/``hostfile`` only when a node's MAC or address changed,
  ``configure nfs`` only when the exports did; ``wwctl overlay build`` only for the cluster's
  nodes, as a hostlist, and only when something changed.
- A node's labels, taints and roles (:data:`NODE_TAGS`, space-separated: ``--tagadd``'s value
  is read as CSV by pflag's string-to-string flag, so a comma would split it) go on the node
  itself, one ``node set`` per set of nodes that want the same; the published inventory
  (``<share>/<cluster>/inventory.json``, :class:`core.records.PublishedInventory`) is written
  last, when it differs, so Phylactery puts running Nodes in line without a reboot.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import hostlist
import yaml

from core.records import PublishedInventory
from core.share import ANON_GID, ShareStore, mounted_trees
from manager import fence, wwconf
from manager.inventory import Inventory, Node, published
from manager.wwregistry import Entity, NetDev, Registry, WarewulfError, merge

VERSIONS = ("4.5", "4.6", "4.7")
NETNAME = "default"  # the network device ek8s manages on every node and role profile
# Tags a node carries itself (its labels, taints and roles: core/noderoles.py), not its profile.
NODE_TAGS = ("ek8s_labels", "ek8s_taints", "ek8s_roles")
OVERLAYS = ("ek8s", "ek8s-hosts")
# 4.5's built-in overlay lists (node/constructors.go FallBackConf), which a list set anywhere drops.
BASE_OVERLAYS_45 = (("wwinit",), ("generic",))


def parse_version(text: str) -> str:
    """``wwctl version`` output -> "4.5", "4.6" or "4.7" (4.7 and later share the 4.7
    interface). Accepts the forms Warewulf prints (``wwctl version:\\t 4.5.8-1``,
    ``Warewulf Version: v4.6.1``). Raises :class:`WarewulfError` for anything before 4.5 or
    without a version."""
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    if not m:
        raise WarewulfError(f"cannot find a version in `wwctl version` output: {text.strip()!r}")
    major, minor = int(m.group(1)), int(m.group(2))
    if (major, minor) < (4, 5):
        raise WarewulfError(f"Warewulf {m.group(0)} is too old: 4.5 or later is needed")
    return "4.5" if (major, minor) == (4, 5) else "4.6" if (major, minor) == (4, 6) else "4.7"


@dataclass(frozen=True)
class Step:
    """One step: ``argv`` (``argv[0]`` is ``wwctl``, ``install``, ``service``, ``exportfs``,
    ``systemctl``, ``rm``, or ``edit`` for a file
    ``apply`` edits itself, ``publish`` for the inventory it writes to the share, then
    ``argv[1]`` is its path), ``why`` (a comment), ``kind`` ("local", "registry", "edit",
    "server" or "share"; registry steps run before the files are edited, server steps after,
    the share's last)."""

    argv: tuple[str, ...]
    why: str
    kind: str

    def shell(self) -> str:
        """The command as shell text; one over 120 characters broken before each ``--option``."""
        line = shlex.join(self.argv)
        if len(line) <= 120:
            return line
        parts: list[str] = []
        for arg in self.argv:
            if arg.startswith("--") or not parts:
                parts.append(shlex.quote(arg))
            else:
                parts[-1] += " " + shlex.quote(arg)
        return " \\\n    ".join(parts)

    def short(self, width: int = 72) -> str:
        """One line: the command cut to ``width`` characters (``ek8s warewulf apply``'s progress)."""
        line = shlex.join(self.argv)
        return line if len(line) <= width else line[: width - 3] + "..."


@dataclass(frozen=True)
class Local:
    """What ``plan`` knows of the server's own files: whether the share directory is ready
    (exists, root's, mode 0700) and the text of ``warewulf.conf`` and ``nodes.conf`` in
    ``conf_dir`` (None: missing or not read, as for ``plan --offline``)."""

    conf_dir: Path = Path("/etc/warewulf")
    share_ready: bool = False
    files: Mapping[str, str | None] = field(default_factory=dict)
    # The share's inventory.json for the cluster (None: none yet, or not read: --offline).
    published: PublishedInventory | None = None
    # Where ek8s's own exports file goes (``ek8s-<cluster>.exports``; its text in ``files``
    # under that name, "" when it does not exist yet): ``exports.d`` beside ``conf_dir``
    # (/etc/warewulf -> /etc/exports.d). The fence unit's file likewise, under its unit name.
    # The fence unit's (enabled, active) (None: not asked, or no systemd) and the command its
    # ExecStart runs (:func:`manager.fence.ek8s_argv`).
    fence_unit: tuple[bool, bool] | None = None
    ek8s: tuple[str, ...] = ("/usr/local/bin/ek8s",)

    @property
    def exports_dir(self) -> Path:
        """``<conf_dir>/../exports.d``: /etc/exports.d for Warewulf's /etc/warewulf."""
        return self.conf_dir.parent / "exports.d"

    @property
    def unit_dir(self) -> Path:
        """``<conf_dir>/../systemd/system``: /etc/systemd/system for Warewulf's /etc/warewulf."""
        return self.conf_dir.parent / "systemd" / "system"


@dataclass(frozen=True)
class Plan:
    """The steps in order, the file edits they lead to (``{path: (old, new)}``, for the
    diffs), the files that were not read (names; their entries are shown instead) and notes
    (one line each: what was read, what is left as it is and why)."""

    version: str
    steps: tuple[Step, ...]
    edits: Mapping[Path, tuple[str, str]]
    unread: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def commands(self) -> int:
        """How many commands the plan runs (its steps but the file edits and the published
        inventory, which apply writes itself)."""
        return sum(1 for s in self.steps if s.kind not in ("edit", "share"))


def local_snapshot(inv: Inventory, conf_dir: Path, systemctl: str = "systemctl") -> Local:
    """Read :class:`Local` for ``inv``: the share directory's state, the two files, ek8s's
    exports file and fence unit file, and the fence unit's state (``systemctl``). Raises
    :class:`manager.wwconf.ConfError` for a file that is missing or cannot be read."""
    share = inv.share.path
    try:
        st = share.stat()
        ready = share.is_dir() and st.st_uid == 0 and (st.st_mode & 0o777) == 0o700
    except OSError:
        ready = False
    files = {name: wwconf.read_text(conf_dir / name) for name in ("warewulf.conf", "nodes.conf")}
    for name, text in files.items():
        if text is None:
            raise wwconf.ConfError(f"{conf_dir / name}: not found (Warewulf's own file; is --conf-dir right?)")
    exports = wwconf.exports_file(inv, conf_dir.parent / "exports.d")
    files[exports.name] = wwconf.read_text(exports) or ""
    try:
        current = ShareStore(share, inv.cluster, "ek8s", record_invalid=False).read_inventory()
    except OSError:
        current = None
    local = Local(conf_dir=conf_dir, share_ready=ready, files=files, published=current, ek8s=fence.ek8s_argv())
    unit = fence.unit_name(inv.cluster)
    files[unit] = wwconf.read_text(local.unit_dir / unit) or ""
    return replace(local, fence_unit=fence.unit_state(systemctl, inv.cluster))


def wanted_profile(inv: Inventory, role: str, version: str) -> Entity:
    """The fields ek8s sets on the role profile of ``role`` (module docstring)."""
    ww = inv.warewulf
    system: tuple[str, ...]
    runtime: tuple[str, ...]
    if version == "4.5":
        system, runtime = BASE_OVERLAYS_45
        negated: tuple[str, ...] = ()
    else:
        system, runtime = (), ()
        negated = ("~hosts",)
    if ww.system_overlays is not None:
        system = tuple(ww.system_overlays)
    if ww.runtime_overlays is not None:
        runtime = tuple(ww.runtime_overlays)
    return Entity(
        image=getattr(inv.node_images, role),
        root="tmpfs",
        system_overlays=(*system, *negated, *OVERLAYS),
        runtime_overlays=(*runtime, *negated, "ek8s-hosts"),
        tags={**inv.cluster_tags(), "ek8s_role": role},
        netdevs={NETNAME: NetDev(device=ww.netdev, netmask=ww.netmask, gateway=ww.gateway or "")},
    )


def dns_tags(inv: Inventory) -> dict[str, str]:
    """The nodes' DNS network tags: ``DNS1``, ``DNS2``... from ``warewulf.nameservers``."""
    return {f"DNS{i + 1}": a for i, a in enumerate(inv.warewulf.nameservers)}


def ek8s_profiles(inv: Inventory) -> set[str]:
    """Profiles ek8s manages for ``inv``'s cluster: both role profiles and the single cluster
    profile ``ek8s-<cluster>`` of earlier versions (taken out of nodes' lists)."""
    return {inv.role_profile("control"), inv.role_profile("worker"), f"ek8s-{inv.cluster}"}


def targets(names: list[str], version: str) -> tuple[str, ...]:
    """Node names as ``wwctl`` arguments: one hostlist (``control[0-2],worker[0-119]``) on
    4.6+, whose hostlist.Expand splits top-level commas; every name on its own on 4.5, whose
    Expand neither splits commas nor keeps a plain name beside a bracketed one (v4.5.8
    internal/pkg/hostlist/hostlist.go expand_iterate has no branch for a name without
    brackets once one has them)."""
    if version == "4.5":
        return tuple(names)
    return (str(hostlist.collect_hostlist(names)),)


def _group(per_node: dict[str, tuple[str, ...]], version: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Nodes with the same flags -> (targets, flags), in first-seen order."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, flags in per_node.items():
        if flags:
            groups.setdefault(flags, []).append(name)
    return [(targets(names, version), flags) for flags, names in groups.items()]


def _profile_steps(inv: Inventory, version: str, reg: Registry) -> list[Step]:
    steps: list[Step] = []
    image_flag = "--container" if version == "4.5" else "--image"
    sys_flag, run_flag = ("--wwinit", "--runtime") if version == "4.5" else ("--system-overlays", "--runtime-overlays")
    for role in inv.roles:
        name = inv.role_profile(role)
        want = wanted_profile(inv, role, version)
        have = reg.profiles.get(name)
        if have is None:
            add = ("wwctl", "profile", "add", name, *(("--yes",) if version == "4.5" else ()))
            steps.append(Step(add, f"role profile for the {role} nodes of cluster {inv.cluster}", "registry"))
            have = Entity()
        flags: list[str] = []
        for key, value in want.tags.items():
            if have.tags.get(key) != value:
                flags += ["--tagadd", f"{key}={value}"]
        stale = sorted(k for k in have.tags if k.startswith("ek8s_") and k not in want.tags)
        if stale:
            flags += ["--tagdel", ",".join(stale)]
        if have.image != want.image:
            flags += [image_flag, want.image]
        if have.root != want.root:
            flags += ["--root", want.root]
        if have.system_overlays != want.system_overlays:
            flags += [sys_flag, ",".join(want.system_overlays)]
        if have.runtime_overlays != want.runtime_overlays:
            flags += [run_flag, ",".join(want.runtime_overlays)]
        if flags:
            why = f"{role} profile: node image, root, overlays and the tags node.yaml.ww reads"
            steps.append(Step(("wwctl", "profile", "set", name, "--yes", *flags), why, "registry"))
        nd, wnd = have.netdevs.get(NETNAME, NetDev()), want.netdevs[NETNAME]
        net: list[str] = []
        for flag, current, wanted in (
            ("--netdev", nd.device, wnd.device),
            ("--netmask", nd.netmask, wnd.netmask),
            ("--gateway", nd.gateway, wnd.gateway),
        ):
            if wanted and current != wanted:  # no gateway in the inventory: the site's stays
                net += [flag, wanted]
        if net:
            why = f"{role} profile: network defaults of device {NETNAME}"
            steps.append(Step(("wwctl", "profile", "set", name, "--yes", "--netname", NETNAME, *net), why, "registry"))
    return steps


def _pairs(tags: Mapping[str, str]) -> str:
    """``k1=v1,k2=v2``: one value of a pflag string-to-string flag (``--nettagadd``)."""
    return ",".join(f"{k}={v}" for k, v in tags.items())


def _node_profiles(inv: Inventory, node: Node, have: Entity | None, reg: Registry) -> tuple[str, ...]:
    """The node's profile list: its own (a new node: ``default`` where it exists) without
    ek8s's other profiles, then its role profile."""
    role_profile = inv.role_profile(node.role)
    current = have.profiles if have is not None else (("default",) if "default" in reg.profiles else ())
    if have is not None and role_profile in current:
        others = ek8s_profiles(inv) - {role_profile}
        return tuple(p for p in current if p not in others)
    return (*(p for p in current if p not in ek8s_profiles(inv)), role_profile)


def _node_steps(inv: Inventory, version: str, reg: Registry, wanted: Mapping[str, Entity]) -> tuple[list[Step], bool]:
    """Steps for the nodes (``wanted``: the role profiles by role), and whether DHCP and the
    server's hosts need configuring."""
    steps: list[Step] = []
    addresses_changed = False
    profiles_change: dict[str, tuple[str, ...]] = {}
    overrides: dict[str, tuple[str, ...]] = {}
    dns: dict[str, tuple[str, ...]] = {}
    node_tags: dict[str, tuple[str, ...]] = {}
    want_dns = dns_tags(inv)
    for node in inv.expanded():
        have = reg.nodes.get(node.name)
        node_tags[node.name] = _node_tag_flags(node, have)
        plist = _node_profiles(inv, node, have, reg)
        if have is None:
            argv: tuple[str, ...] = ("wwctl", "node", "add", node.name, "--profile", ",".join(plist))
            argv += ("--netname", NETNAME, "--hwaddr", node.mac, "--ipaddr", node.address)
            steps.append(Step(argv, f"new {node.role} node", "registry"))
            addresses_changed = True
            if want_dns:
                dns[node.name] = ("--netname", NETNAME, "--nettagadd", _pairs(want_dns))
            continue
        nd = have.netdevs.get(NETNAME, NetDev())
        own: list[str] = []
        if nd.hwaddr != node.mac:
            own += ["--hwaddr", node.mac]
        if nd.ipaddr != node.address:
            own += ["--ipaddr", node.address]
        if own:
            why = f"{node.name}: its MAC and address on device {NETNAME}"
            steps.append(
                Step(("wwctl", "node", "set", node.name, "--yes", "--netname", NETNAME, *own), why, "registry")
            )
            addresses_changed = True
        if plist != have.profiles:
            profiles_change[node.name] = ("--profile", ",".join(plist))
        dns_now = {k: v for k, v in nd.tags.items() if re.fullmatch(r"DNS\d+", k)}
        if dns_now != want_dns:
            flags: tuple[str, ...] = ("--netname", NETNAME)
            if want_dns:
                flags += ("--nettagadd", _pairs(want_dns))
            stale = sorted(set(dns_now) - set(want_dns))
            if stale:
                flags += ("--nettagdel", ",".join(stale))
            dns[node.name] = flags
        # Fields the role profile carries that the node overrides with a value of its own:
        # the node's merged value differs from what its current profiles alone give it.
        from_profiles = merge(Entity(profiles=have.profiles), reg.profiles, version)
        overrides[node.name] = _override_flags(version, have, from_profiles, wanted[node.role])
    for names, flags in _group(profiles_change, version):
        why = "add the role profile, keep the node's other profiles"
        steps.append(Step(("wwctl", "node", "set", *names, "--yes", *flags), why, "registry"))
    for names, flags in _group(overrides, version):
        if flags[0] == "unset":
            why = "the node's own values of fields its role profile carries: unset, so the profile's apply"
            steps.append(Step(("wwctl", "node", "unset", *names, "--yes", *flags[1:]), why, "registry"))
        else:
            why = "the node's own values of fields its role profile carries (this version cannot unset them all)"
            steps.append(Step(("wwctl", "node", "set", *names, "--yes", *flags), why, "registry"))
    for names, flags in _group(dns, version):
        steps.append(Step(("wwctl", "node", "set", *names, "--yes", *flags), "DNS servers (network tags)", "registry"))
    for names, flags in _group(node_tags, version):
        why = "the nodes' labels, taints and roles (node.yaml, kubelet at join)"
        steps.append(Step(("wwctl", "node", "set", *names, "--yes", *flags), why, "registry"))
    return steps, addresses_changed


def _node_tag_flags(node: Node, have: Entity | None) -> tuple[str, ...]:
    """``node set`` flags that give ``node`` the :data:`NODE_TAGS` it wants (``--tagadd``)
    and take away those it no longer has (``--tagdel``); empty when it has them already."""
    want = node.scheduling.tags()
    current = {k: v for k, v in (have.tags if have else {}).items() if k in NODE_TAGS}
    flags: list[str] = []
    for key, value in want.items():
        if current.get(key) != value:
            flags += ["--tagadd", f"{key}={value}"]
    stale = sorted(set(current) - set(want))
    if stale:
        flags += ["--tagdel", ",".join(stale)]
    return tuple(flags)


def _override_flags(version: str, have: Entity, from_profiles: Entity, want: Entity) -> tuple[str, ...]:
    """Flags that take a node's own values of profile-carried fields away (4.7: ``node unset``
    flags after an ``"unset"`` marker; earlier: ``node set`` flags with the wanted values)."""
    image_flag = "--container" if version == "4.5" else "--image"
    nd, pnd, wnd = (e.netdevs.get(NETNAME, NetDev()) for e in (have, from_profiles, want))
    scalars = [
        (image_flag if version != "4.7" else "--image", have.image, from_profiles.image, want.image, False),
        ("--root", have.root, from_profiles.root, want.root, False),
        ("--netdev", nd.device, pnd.device, wnd.device, True),
        ("--netmask", nd.netmask, pnd.netmask, wnd.netmask, True),
        ("--gateway", nd.gateway, pnd.gateway, wnd.gateway, True),
    ]
    tags = sorted(
        k
        for k, v in have.tags.items()
        if k.startswith("ek8s_") and k not in NODE_TAGS and from_profiles.tags.get(k) != v
    )
    if version == "4.7":
        flags = [flag for flag, mine, theirs, _w, _n in scalars if mine and mine != theirs]
        net = [f for f in flags if f in ("--netdev", "--netmask", "--gateway")]
        out = [f for f in flags if f not in net]
        if net:
            out += ["--netname", NETNAME, *net]
        if tags:
            out += ["--tag", ",".join(tags)]
        return ("unset", *out) if out else ()
    out = []
    net_out: list[str] = []
    for flag, mine, theirs, wanted, is_net in scalars:
        if mine and mine != theirs and mine != wanted:
            (net_out if is_net else out).extend([flag, wanted or "UNSET"])
    if net_out:
        out += ["--netname", NETNAME, *net_out]
    if tags:
        out += ["--tagdel", ",".join(tags)]
    return tuple(out)


def _edit_steps(
    inv: Inventory, version: str, local: Local
) -> tuple[list[Step], dict[Path, tuple[str, str]], list[str]]:
    """Edits of the files that need one, their (old, new) texts, and the files not read."""
    steps: list[Step] = []
    edits: dict[Path, tuple[str, str]] = {}
    unread: list[str] = []
    exports = wwconf.exports_file(inv, local.exports_dir)
    wanted = {"warewulf.conf": True, "nodes.conf": version != "4.5", exports.name: True}
    for name, needed in wanted.items():
        if not needed:
            continue
        path = exports if name == exports.name else local.conf_dir / name
        old = local.files.get(name)
        if old is None:
            unread.append(name)
            continue
        if name == "warewulf.conf":
            new = wwconf.edit_warewulf_conf(old, inv, version, path)
            why = "the node tree's NFS export to the network (root squashed)"
        elif name == "nodes.conf":
            new = wwconf.edit_nodes_conf(old, inv, path)
            why = "the share's fstab resources on the role profiles: workers the node tree only"
        else:
            new = wwconf.exports_file_text(inv)
            why = "the control-only tree's NFS exports: the control nodes' addresses only"
        if new != old:
            edits[path] = (old, new)
            steps.append(Step(("edit", str(path)), why, "edit"))
    return steps, edits, unread


def plan(inv: Inventory, version: str, registry: Registry, local: Local) -> Plan:
    """The steps that make Warewulf match ``inv``, in order: the share directory (local),
    the role profiles and the nodes (registry), the file edits, then ``wwctl configure`` and
    ``wwctl overlay build`` (server), the fence service (:func:`_fence_steps`) and the
    published inventory (share). Pure; raises :class:`manager.wwconf.ConfError` when a
    file in ``local`` cannot be edited (not YAML, a field of another shape)."""
    steps: list[Step] = []
    notes = [f"registry read from {registry.source}"]
    if not local.share_ready:
        argv = ("install", "-d", "-m", "0700", "-o", "root", "-g", "root", str(inv.share.path))
        steps.append(
            Step(argv, "the share on the Warewulf server: root-only, as the agents keep every file in it", "local")
        )
        control_tree, node_tree = (str(inv.share.path / t) for t in mounted_trees(inv.cluster, "control"))
        argv = ("install", "-d", "-m", "0700", "-o", "root", "-g", "root", control_tree)
        steps.append(Step(argv, "the control-only tree: exported to the control nodes only", "local"))
        argv = ("install", "-d", "-m", "0750", "-o", "root", "-g", str(ANON_GID), node_tree)
        why = "the node tree, workers read it as gid 65534 (better a file system of its own: docs/security.md)"
        steps.append(Step(argv, why, "local"))
    wanted = {role: wanted_profile(inv, role, version) for role in inv.roles}
    steps += _profile_steps(inv, version, registry)
    node_steps, addresses_changed = _node_steps(inv, version, registry, wanted)
    steps += node_steps
    edit_steps, edits, unread = _edit_steps(inv, version, local)
    steps += edit_steps
    notes += [f"{local.conf_dir / name}: not read; its entries are at the end" for name in unread]
    if any(p.name == "nodes.conf" for p in edits) or "nodes.conf" in unread:
        # What wwctl runs after each change it persists (4.6.5 and 4.7.0 warewulfd/daemon.go
        # DaemonReload), so warewulfd's registry in memory has the fstab resource too.
        why = "warewulfd re-reads nodes.conf, as wwctl makes it after each change"
        steps.append(Step(("service", "warewulfd", "reload"), why, "server"))
    if addresses_changed:
        steps.append(Step(("wwctl", "configure", "dhcp"), "DHCP: the nodes' MACs and addresses", "server"))
        steps.append(Step(("wwctl", "configure", "hostfile"), "the server's /etc/hosts: the nodes' names", "server"))
    if any(p.name == "warewulf.conf" for p in edits) or "warewulf.conf" in unread:
        steps.append(Step(("wwctl", "configure", "nfs"), "the server's NFS exports", "server"))
    exports = wwconf.exports_file(inv, local.exports_dir)
    if exports in edits or exports.name in unread:
        steps.append(Step(("exportfs", "-ra"), f"export what {exports} lists (exportfs(8))", "server"))
    nodes = targets([n.name for n in inv.expanded()], version)
    if any(s.kind in ("registry", "edit") for s in steps) or unread:
        why = "render node.yaml, the units and /etc/hosts for the cluster's nodes"
        steps.append(Step(("wwctl", "overlay", "build", *nodes), why, "server"))
    else:
        notes.append(
            "nothing to change in the registry or the files; after `ek8s overlay build`, "
            f"run `{shlex.join(('wwctl', 'overlay', 'build', *nodes))}`"
        )
    fence_steps, fence_edits = _fence_steps(inv, local)
    steps += fence_steps
    edits.update(fence_edits)
    if publish_needed(inv, local.published):
        path = inv.share.path / inv.cluster / "inventory.json"
        why = "the nodes, their labels, taints and roles for Phylactery (running Nodes, no reboot)"
        steps.append(Step(("publish", str(path)), why, "share"))
    return Plan(version=version, steps=tuple(steps), edits=edits, unread=tuple(unread), notes=tuple(notes))


def _fence_steps(inv: Inventory, local: Local) -> tuple[list[Step], dict[Path, tuple[str, str]]]:
    """The fence service on this server (:mod:`manager.fence`): with ``fencing:
    warewulf-power``, its unit file written when it differs, ``daemon-reload``, then enabled and
    started (restarted when it ran an older text); without, a unit left by an earlier apply
    stopped, disabled and removed. Nothing when the unit is as wanted."""
    name = fence.unit_name(inv.cluster)
    path = local.unit_dir / name
    old = local.files.get(name) or ""
    enabled, active = local.fence_unit or (False, False)
    steps: list[Step] = []
    if inv.fencing == "none":
        if not old and not (enabled or active):
            return [], {}
        if enabled or active or local.fence_unit is None:
            why = "fencing is off in the inventory: stop the fence service an earlier apply started"
            steps.append(Step(("systemctl", "disable", "--now", name), why, "server"))
        if old:
            steps.append(Step(("rm", "-f", str(path)), "fencing is off: its unit file goes", "server"))
            steps.append(Step(("systemctl", "daemon-reload"), "systemd forgets the unit", "server"))
        return steps, {}
    new = fence.unit_text(inv.cluster, inv.share.path, local.ek8s)
    edits: dict[Path, tuple[str, str]] = {}
    if new != old:
        edits[path] = (old, new)
        why = "the fence service's unit (fencing: warewulf-power): ek8s fence serve for this cluster"
        steps.append(Step(("edit", str(path)), why, "edit"))
        steps.append(Step(("systemctl", "daemon-reload"), "systemd reads the unit file", "server"))
    if not (enabled and active):
        why = "start the fence service now and at every boot of this server"
        steps.append(Step(("systemctl", "enable", "--now", name), why, "server"))
    elif new != old:
        steps.append(Step(("systemctl", "restart", name), "the running fence service takes the new unit", "server"))
    return steps, edits


def publish_needed(inv: Inventory, current: PublishedInventory | None) -> bool:
    """Whether the share's ``inventory.json`` (``current``, None when absent or not read)
    says something else of the nodes than ``inv``."""
    if current is None:
        return True
    want = published(inv, "", 0.0)
    return (current.cluster, current.nodes) != (want.cluster, want.nodes)


def render_plan(inv: Inventory, p: Plan) -> str:
    """The plan as a POSIX shell script (``set -e``, one commented command per step) an
    operator can read or run; the file edits as comments with their unified diff (or, for a
    file not read, the entries it needs)."""
    lines = [
        "#!/bin/sh",
        f"# ek8s warewulf plan: cluster {inv.cluster}, Warewulf {p.version}, {len(inv.expanded())} nodes, "
        f"{p.commands} commands.",
        "# Only what differs from the registry; a second run after `ek8s warewulf apply` plans nothing.",
        *(f"# {note}" for note in p.notes),
        "set -e",
    ]
    for step in p.steps:
        lines += ["", f"# {step.why}"]
        if step.argv[0] == "publish":
            lines.append(f"# `ek8s warewulf apply` (or `ek8s warewulf roles`) writes {step.argv[1]}")
            continue
        if step.argv[0] == "edit":
            path = Path(step.argv[1])
            old, new = p.edits[path]
            lines.append(f"# `ek8s warewulf apply` edits {path} (comments kept, backup .ek8s-backup):")
            lines += ["#   " + ln for ln in wwconf.diff(path, old, new).splitlines()]
        else:
            lines.append(step.shell())
    entries = wwconf.nfs_entries(inv, p.version)
    for name in p.unread:
        if isinstance(entries[name], str):  # ek8s's own exports file: written whole
            lines += ["", f"# {wwconf.exports_file(inv)} (ek8s warewulf apply writes it):"]
            lines += ["#   " + ln for ln in entries[name].splitlines()]
            continue
        lines += ["", f"# /etc/warewulf/{name} needs (ek8s warewulf apply merges it):"]
        lines += ["#   " + ln for ln in yaml.safe_dump(entries[name], sort_keys=False).splitlines()]
    return "\n".join(lines) + "\n"
