"""The share's entries in Warewulf's own files, edited round trip: ``warewulf.conf`` (the NFS
export) and, on 4.6+, ``nodes.conf`` (the ``fstab`` resource of each role profile).

The exports are data (:func:`exports`): one :class:`Export` per exported tree with the roles
that mount it, so a split of the share per role (a control-only tree, a worker tree) is a
change of that one function. Keys are Warewulf's own: ``nfs.export paths[]`` with ``path``,
``export options`` (all versions) and, on 4.5 only, ``mount options`` and ``mount`` (v4.5.8
internal/pkg/config/nfs.go; 4.6.5 and 4.7.0 keep ``path`` and ``export options`` and mount
from the ``fstab`` resource, v4.7.0 internal/pkg/config/nfs.go and userdocs
nodes/nodes.rst "Resources": "Resources can only be managed with ``wwctl node edit``", so
ek8s edits ``nodes.conf`` itself).

Edits go through ruamel.yaml's round-trip mode: comments, key order, quoting and the file's
indentation stay as they were; only the share's entries change. ruamel reads YAML 1.2, as
Warewulf's Go readers do, so an unquoted ``hwaddr: 52:54:00:00:00:21`` stays that string.
Every function here is pure (text in, text out) but :func:`write_atomic`.
"""

from __future__ import annotations

import difflib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from core.share import ANON_GID, mounted_trees
from manager.inventory import Inventory

# Export options by client (docs/security.md, "The share split"). The control nodes:
# no_root_squash, their agents run as root and write root-only files (0600; 0640 group 65534
# in the node tree). The cluster's network, on the node tree only: root_squash to uid/gid
# 65534, so a worker's root reads what is group 65534 and writes only heartbeats/, events/
# and slots/ (0770, group 65534). lookupcache=positive (mount): a file another node just
# created is seen at once (no cached "does not exist"), which the share protocol's polling
# relies on.
CONTROL_EXPORT_OPTIONS = "rw,sync,no_root_squash,no_subtree_check"
NODE_EXPORT_OPTIONS = f"rw,sync,root_squash,anonuid={ANON_GID},anongid={ANON_GID},no_subtree_check"
MOUNT_OPTIONS = "defaults,hard,lookupcache=positive"
# What ek8s exported before the split: the whole share to the whole network, root as root.
LEGACY_EXPORT_OPTIONS = "rw,sync,no_root_squash,no_subtree_check"
EXPORTS_DIR = Path("/etc/exports.d")  # exportfs(8) reads /etc/exports and /etc/exports.d/*.exports


class ConfError(Exception):
    """``warewulf.conf`` or ``nodes.conf`` cannot be read, is not YAML, or a field ek8s edits
    has another shape than Warewulf writes (the message names the file and the dotted field)."""


@dataclass(frozen=True)
class Export:
    """One tree the Warewulf server exports over NFS: ``path`` (absolute), the ``roles``
    whose profiles mount it (at the same path), the control nodes' addresses it is exported to
    with :data:`CONTROL_EXPORT_OPTIONS`, and ``network`` (``address/netmask``), given only for
    the node tree, which every node mounts, exported there with ``network_options``."""

    path: str
    roles: tuple[str, ...]
    control: tuple[str, ...]
    network: str | None = None
    network_options: str = NODE_EXPORT_OPTIONS
    mount_options: str = MOUNT_OPTIONS

    @property
    def export_options(self) -> str:
        """The options Warewulf's own exports line carries (the network's)."""
        return self.network_options

    def fstab(self) -> dict[str, str]:
        """The ``fstab`` resource entry that mounts it (Warewulf's ``fstab`` overlay keys)."""
        return {"spec": f"warewulf:{self.path}", "file": self.path, "vfstype": "nfs", "mntops": self.mount_options}


def exports(inv: Inventory) -> list[Export]:
    """What the server exports for ``inv``, parent first, from the one rule of which trees a
    role mounts (:func:`core.share.mounted_trees`): the control-only tree ``<share>/<cluster>``
    to the control nodes only, the node tree ``<share>/<cluster>/nodes`` to the control nodes
    (root as root) and to the cluster's network (root squashed)."""
    control = tuple(n.address for n in inv.expanded() if n.role == "control")
    trees: dict[str, list[str]] = {}
    for role in inv.roles:
        for tree in mounted_trees(inv.cluster, role):
            trees.setdefault(tree, []).append(role)
    out = []
    for tree, roles in trees.items():
        path = str(inv.share.path / tree)
        network = f"{inv.network.network_address}/{inv.network.netmask}" if "worker" in roles else None
        out.append(Export(path, tuple(roles), control, network))
    return out


def export_entry(exp: Export, version: str) -> dict[str, Any]:
    """``exp`` as an ``nfs.export paths`` item of ``warewulf.conf`` for ``version``. Warewulf
    exports each item to its whole network with one option string (its
    ``overlays/host/rootfs/etc/exports.ww``: ``{{ .Path }} {{ $network }}/{{ $netmask }}({{
    .ExportOptions }})``, 4.5 to 4.7), so only the node tree goes there; 4.5 mounts it on
    every node (``mount: true``)."""
    entry: dict[str, Any] = {"path": exp.path, "export options": exp.export_options}
    if version == "4.5":
        entry |= {"mount options": exp.mount_options, "mount": True}
    return entry


def warewulf_exports(inv: Inventory) -> list[Export]:
    """The exports that go in ``warewulf.conf``: those to the whole network (the node tree)."""
    return [e for e in exports(inv) if e.network is not None]


def exports_file(inv: Inventory, exports_dir: Path = EXPORTS_DIR) -> Path:
    """ek8s's own exports file for ``inv``'s cluster: ``<exports_dir>/ek8s-<cluster>.exports``."""
    return exports_dir / f"ek8s-{inv.cluster}.exports"


def exports_file_text(inv: Inventory) -> str:
    """The per-client exports Warewulf's template cannot write (exports(5) format, read by
    ``exportfs -ra``): each tree to each control node's address with
    :data:`CONTROL_EXPORT_OPTIONS`. A node tree line adds nothing for the network, which
    Warewulf's own line exports; a control node matches its single-address entry first (mountd
    checks single hosts before networks: nfs-utils ``support/export``, client types in
    ``MCL_FQDN`` .. ``MCL_SUBNETWORK`` order)."""
    lines = [
        f'# ek8s cluster {inv.cluster}: written by `ek8s warewulf apply` (docs/security.md, "The share split").',
        "# The control-only tree to the control nodes only; the node tree to them as root (Warewulf's",
        "# /etc/exports exports it to the network with root_squash).",
    ]
    for exp in exports(inv):
        clients = " ".join(f"{addr}({CONTROL_EXPORT_OPTIONS})" for addr in exp.control)
        lines.append(f"{exp.path} {clients}")
    return "\n".join(lines) + "\n"


def fstab_entries(inv: Inventory, role: str) -> list[dict[str, str]]:
    """The ``fstab`` resource entries the role profile of ``role`` needs (4.6+), parent first."""
    return [e.fstab() for e in exports(inv) if role in e.roles]


def nfs_entries(inv: Inventory, version: str) -> dict[str, Any]:
    """What the share needs in Warewulf's files, as YAML-ready data (``ek8s warewulf nfs``):
    ``{"warewulf.conf": {...}}``, for 4.6+ ``{"nodes.conf": {...}}``, and ek8s's own exports
    file (``exports_file(inv).name``: its text)."""
    entries = [export_entry(e, version) for e in warewulf_exports(inv)]
    out: dict[str, Any] = {"warewulf.conf": {"nfs": {"enabled": True, "export paths": entries}}}
    if version != "4.5":
        out["nodes.conf"] = {
            "nodeprofiles": {
                inv.role_profile(role): {"resources": {"fstab": fstab_entries(inv, role)}} for role in inv.roles
            }
        }
    out[exports_file(inv).name] = exports_file_text(inv)
    return out


def _yaml(indent: int = 2, block_seq_indent: int = 0) -> YAML:
    y = YAML()  # round trip
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=indent, sequence=indent + block_seq_indent, offset=block_seq_indent)
    return y


def load(text: str, path: Path) -> tuple[Any, YAML]:
    """Parse ``text`` (the content of ``path``) round trip; returns the document (an empty
    mapping for an empty file) and the YAML instance that writes it back with the file's own
    indentation. Raises :class:`ConfError`."""
    try:
        # The file's indentation first (ruamel's guess), then the document with quotes kept.
        _, indent, block_seq_indent = load_yaml_guess_indent(text) if text.strip() else (None, 2, 0)
        y = _yaml(indent or 2, block_seq_indent or 0)
        data = y.load(text)
    except YAMLError as err:
        raise ConfError(f"{path}: not valid YAML: {err}") from None
    if data is None:
        data = CommentedMap()
    if not isinstance(data, dict):
        raise ConfError(f"{path}: the top level must be a mapping, as Warewulf writes it")
    return data, y


def dump(data: Any, y: YAML) -> str:
    out = io.StringIO()
    y.dump(data, out)
    return out.getvalue()


def _child(node: Any, key: str, kind: type, dotted: str, path: Path) -> Any:
    """``node[key]``, made an empty mapping or list when absent or null. Raises
    :class:`ConfError` naming ``path`` and ``dotted`` when it holds something else."""
    value = node.get(key)
    if value is None:
        value = CommentedMap() if kind is dict else CommentedSeq()
        node[key] = value
    if not isinstance(value, kind):
        shape = "a mapping" if kind is dict else "a list"
        raise ConfError(
            f"{path}: field {dotted!r} must be {shape}, as Warewulf writes it (found {type(value).__name__})"
        )
    return value


def _same(existing: Any, wanted: dict[str, Any]) -> bool:
    return isinstance(existing, dict) and dict(existing) == wanted


def edit_warewulf_conf(text: str, inv: Inventory, version: str, path: Path) -> str:
    """``warewulf.conf`` with NFS enabled and each export of :func:`exports`: the item with
    the same ``path`` replaced, others kept, a new one appended. Returns the new text (equal
    to ``text`` when nothing changes). Raises :class:`ConfError`."""
    data, y = load(text, path)
    nfs = _child(data, "nfs", dict, "nfs", path)
    paths = _child(nfs, "export paths", list, "nfs.export paths", path)
    changed = nfs.get("enabled") is not True
    if changed:
        nfs["enabled"] = True
    # Before the split ek8s exported the whole share to the network, root as root: removed.
    legacy = str(inv.share.path)
    for item in [i for i in paths if isinstance(i, dict) and i.get("path") == legacy]:
        paths.remove(item)
        changed = True
    for exp in warewulf_exports(inv):
        wanted = export_entry(exp, version)
        for i, item in enumerate(paths):
            if isinstance(item, dict) and item.get("path") == exp.path:
                if not _same(item, wanted):
                    for key in list(item):
                        if key not in wanted:
                            del item[key]
                    item.update(wanted)
                    changed = True
                    paths[i] = item
                break
        else:
            paths.append(CommentedMap(wanted))
            changed = True
    return dump(data, y) if changed else text


def edit_nodes_conf(text: str, inv: Inventory, path: Path) -> str:
    """``nodes.conf`` (4.6+) with each role profile's ``fstab`` resource holding the entries
    of :func:`fstab_entries` (an entry with the same ``file`` replaced, others kept). A role
    profile not in the file yet is created with only that resource. Returns the new text
    (``text`` itself when nothing changes). Raises :class:`ConfError`."""
    data, y = load(text, path)
    profiles = _child(data, "nodeprofiles", dict, "nodeprofiles", path)
    changed = False
    for role in inv.roles:
        name = inv.role_profile(role)
        wanted = fstab_entries(inv, role)
        prof = _child(profiles, name, dict, f"nodeprofiles.{name}", path)
        resources = _child(prof, "resources", dict, f"nodeprofiles.{name}.resources", path)
        entries = _child(resources, "fstab", list, f"nodeprofiles.{name}.resources.fstab", path)
        files = {e["file"] for e in wanted}
        legacy = {str(inv.share.path)}  # before the split: the whole share on every role
        kept = [e for e in entries if not (isinstance(e, dict) and e.get("file") in files | legacy)]
        mine = [e for e in entries if isinstance(e, dict) and e.get("file") in files]
        if [dict(e) for e in mine] == wanted and len(kept) + len(mine) == len(entries):
            continue
        entries.clear()
        entries.extend(kept + [CommentedMap(e) for e in wanted])
        changed = True
    return dump(data, y) if changed else text


def diff(path: Path, old: str, new: str) -> str:
    """A unified diff of ``path`` from ``old`` to ``new`` ("" when equal)."""
    return "".join(
        difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"{path} (now)", f"{path} (after apply)")
    )


def write_atomic(path: Path, text: str, backup: bool = True) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a
    rename, keeping the file's mode; with ``backup`` the old file is first copied to
    ``<path>.ek8s-backup``. Raises ``OSError``."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    if backup and path.exists():
        Path(f"{path}.ek8s-backup").write_bytes(path.read_bytes())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist. Raises :class:`ConfError` when it
    exists but cannot be read."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfError(f"{path}: cannot read: {err.strerror}") from None
