"""What Warewulf's node registry holds, read the way each version can give it.

Warewulf 4.6 and 4.7 print the registry as JSON: ``wwctl node list -j`` (every node merged
with its profiles, as templates see it) and ``wwctl profile list -j`` (each profile's own
fields). Both print ``json.MarshalIndent`` of a map from name to ``node.Node`` /
``node.Profile`` (v4.6.5 internal/pkg/api/node/list.go:110-123 and api/profile/list.go:48-55;
v4.7.0 internal/app/wwctl/node/list/main.go:30-44 and profile/list/main.go:35-46), with the
struct's ``json`` tags as keys (``image name``, ``system overlay``, ``network devices``,
``resources``...; node/datastructure.go). Warewulf 4.5 has no ``-y``/``-j`` (v4.5.8
node/list/root.go: ``-n -i -a -A -l`` only), so for 4.5 the registry is read from the file
``wwctl`` itself reads, ``nodes.conf`` (YAML; 4.5's keys, ``container name`` for the image),
and merged here as 4.5 merges it. No human table is parsed.

Merging (what a template and ``node list -j`` see): the node's profiles in order (4.6+: each
profile's nested profiles before it, once each), then the node's own fields; a scalar from
the right-most layer that sets it, tags and network devices per key, overlay lists appended
and ``~name`` entries dropped with what they negate (4.5 node/constructors.go:195-203 and
Entry.Get/GetSlice, methods.go:215-288; 4.6/4.7 node/mergo.go MergeNode and cleanLists). The
Go renderer (manager/wwtemplate) merges the same way.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from manager import yamlfile

# Seconds a wwctl query (version, node list, profile list) may take.
WWCTL_QUERY_TIMEOUT_S = 120.0


class WarewulfError(Exception):
    """wwctl is missing, cannot run, fails or does not answer in time, or its answer (or
    nodes.conf) cannot be read."""


@dataclass(frozen=True)
class NetDev:
    """One network device of a node or profile: addresses and masks as dotted strings, ""
    when unset; ``tags`` the network tags (``DNS1``...)."""

    device: str = ""
    hwaddr: str = ""
    ipaddr: str = ""
    netmask: str = ""
    gateway: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Entity:
    """A node or a profile: the fields ek8s manages. ``fstab`` is the ``fstab`` resource (a
    list of ``{spec, file, vfstype, mntops}`` mappings; 4.6+)."""

    profiles: tuple[str, ...] = ()
    image: str = ""
    root: str = ""
    system_overlays: tuple[str, ...] = ()
    runtime_overlays: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    netdevs: Mapping[str, NetDev] = field(default_factory=dict)
    fstab: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Registry:
    """The registry: ``nodes`` as templates see them (merged with their profiles),
    ``profiles`` with their own fields only, and ``source``, how it was read (shown by plan)."""

    nodes: Mapping[str, Entity] = field(default_factory=dict)
    profiles: Mapping[str, Entity] = field(default_factory=dict)
    source: str = "nothing (--offline: an empty registry but for the profile default)"


def offline() -> Registry:
    """A fresh Warewulf's registry: only the profile ``default`` (every version's packaged
    nodes.conf has it; ``node add`` puts new nodes in it)."""
    return Registry(profiles={"default": Entity()})


def clean_list(items: Iterable[str]) -> tuple[str, ...]:
    """Drop every ``~name`` and every ``name`` it negates (node/methods.go cleanList)."""
    items = list(items)
    negated = {i[1:] for i in items if i.startswith("~")}
    return tuple(i for i in items if not i.startswith("~") and i not in negated)


def _strs(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # 4.5 wrote some lists as comma-separated strings
        return tuple(v for v in value.split(",") if v)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WarewulfError(f"{what}: expected a list of strings, found {value!r}")
    return tuple(value)


def _map(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WarewulfError(f"{what}: expected a mapping, found {type(value).__name__}")
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def entity(data: Any, what: str, image_key: str = "image name") -> Entity:
    """An :class:`Entity` from one node or profile of Warewulf's JSON or YAML (keys as in
    node/datastructure.go; 4.5's nodes.conf names the image ``container name``). Unknown keys
    are ignored. Raises :class:`WarewulfError` naming ``what`` for a value of the wrong shape."""
    d = _map(data, what)
    netdevs = {}
    for name, nd in _map(d.get("network devices"), f"{what}.network devices").items():
        n = _map(nd, f"{what}.network devices.{name}")
        tags = _map(n.get("tags"), f"{what}.network devices.{name}.tags")
        netdevs[str(name)] = NetDev(
            device=_text(n.get("device")),
            hwaddr=_text(n.get("hwaddr")).lower(),
            ipaddr=_text(n.get("ipaddr")),
            netmask=_text(n.get("netmask")),
            gateway=_text(n.get("gateway")),
            tags={str(k): _text(v) for k, v in tags.items()},
        )
    resources = _map(d.get("resources"), f"{what}.resources")
    fstab = resources.get("fstab") or []
    if not isinstance(fstab, list) or not all(isinstance(e, dict) for e in fstab):
        raise WarewulfError(f"{what}.resources.fstab: expected a list of mappings")
    return Entity(
        profiles=_strs(d.get("profiles"), f"{what}.profiles"),
        image=_text(d.get(image_key)),
        root=_text(d.get("root")),
        system_overlays=_strs(d.get("system overlay"), f"{what}.system overlay"),
        runtime_overlays=_strs(d.get("runtime overlay"), f"{what}.runtime overlay"),
        tags={str(k): _text(v) for k, v in _map(d.get("tags"), f"{what}.tags").items()},
        netdevs=netdevs,
        fstab=tuple(fstab),
    )


def parse_list_json(text: str, command: str) -> dict[str, Entity]:
    """``wwctl node list -j`` or ``wwctl profile list -j`` output -> {name: Entity}.

    An empty registry prints ``{}``. Raises :class:`WarewulfError` naming ``command`` when the
    output is not a JSON object of objects."""
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        raise WarewulfError(f"`{command}` did not print JSON ({err}): {text.strip()[:200]!r}") from None
    if not isinstance(data, dict):
        raise WarewulfError(f"`{command}` printed {type(data).__name__}, not a JSON object")
    return {str(name): entity(item, f"`{command}` {name}") for name, item in data.items()}


def _merge_netdev(base: NetDev, over: NetDev) -> NetDev:
    return NetDev(
        device=over.device or base.device,
        hwaddr=over.hwaddr or base.hwaddr,
        ipaddr=over.ipaddr or base.ipaddr,
        netmask=over.netmask or base.netmask,
        gateway=over.gateway or base.gateway,
        tags={**base.tags, **{k: v for k, v in over.tags.items() if v or k not in base.tags}},
    )


def profile_chain(own: Entity, profiles: Mapping[str, Entity], version: str) -> list[str]:
    """The profiles merged into a node, in order: 4.6+ expand nested profiles (a profile's
    own before it, once each; mergo.go getProfilesProfiles) and drop negated ones."""
    if version == "4.5":
        return list(own.profiles)
    seen: set[str] = set()

    def expand(ids: Iterable[str]) -> list[str]:
        out: list[str] = []
        for pid in ids:
            if pid.startswith("~"):
                out.append(pid)
            elif pid not in seen:
                seen.add(pid)
                if pid in profiles:
                    out += expand(profiles[pid].profiles)
                out.append(pid)
        return out

    return list(clean_list(expand(own.profiles)))


def merge(own: Entity, profiles: Mapping[str, Entity], version: str) -> Entity:
    """``own`` (a node's own fields) merged with its profiles as Warewulf merges them (module
    docstring). A profile that does not exist is skipped, as Warewulf skips it with a warning."""
    layers = [profiles[p] for p in profile_chain(own, profiles, version) if p in profiles] + [own]
    out = Entity(profiles=own.profiles)
    for layer in layers:
        netdevs = dict(out.netdevs)
        for name, nd in layer.netdevs.items():
            netdevs[name] = _merge_netdev(netdevs.get(name, NetDev()), nd)
        out = replace(
            out,
            image=layer.image or out.image,
            root=layer.root or out.root,
            system_overlays=out.system_overlays + layer.system_overlays,
            runtime_overlays=out.runtime_overlays + layer.runtime_overlays,
            tags={**out.tags, **{k: v for k, v in layer.tags.items() if v or k not in out.tags}},
            netdevs=netdevs,
            fstab=out.fstab + layer.fstab,
        )
    return replace(
        out, system_overlays=clean_list(out.system_overlays), runtime_overlays=clean_list(out.runtime_overlays)
    )


def parse_nodes_conf_45(text: str, path: Path) -> Registry:
    """Warewulf 4.5's ``nodes.conf`` -> :class:`Registry`, nodes merged as 4.5 merges them.
    Raises :class:`WarewulfError` naming ``path`` when it is not YAML or not of nodes.conf's
    shape. Colon-separated values (MACs) read as the strings Warewulf reads
    (:func:`manager.yamlfile.load`)."""
    try:
        data = yamlfile.load(text) or {}
    except Exception as err:  # yaml.YAMLError and its parser's errors
        raise WarewulfError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise WarewulfError(f"{path}: the top level must be a mapping, as Warewulf writes it")
    profiles = {
        str(k): entity(v, f"{path}: nodeprofiles.{k}", "container name")
        for k, v in _map(data.get("nodeprofiles"), f"{path}: nodeprofiles").items()
    }
    nodes = {
        str(k): merge(entity(v, f"{path}: nodes.{k}", "container name"), profiles, "4.5")
        for k, v in _map(data.get("nodes"), f"{path}: nodes").items()
    }
    return Registry(nodes=nodes, profiles=profiles, source=f"{path} (Warewulf 4.5 has no `node list -j`)")


def run_wwctl(wwctl: str, *args: str) -> str:
    """Run ``wwctl ARGS`` without a terminal; return its stdout. Raises
    :class:`WarewulfError` when it is missing, fails, or takes over ``WWCTL_QUERY_TIMEOUT_S``."""
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


def read_registry(version: str, wwctl: str = "wwctl", conf_dir: Path = Path("/etc/warewulf")) -> Registry:
    """The registry of a Warewulf ``version`` ("4.5", "4.6" or "4.7"): 4.6+ through
    ``wwctl node list -j`` and ``wwctl profile list -j``; 4.5 from ``conf_dir/nodes.conf``.
    Raises :class:`WarewulfError`."""
    if version == "4.5":
        path = conf_dir / "nodes.conf"
        try:
            text = path.read_text()
        except OSError as err:
            raise WarewulfError(f"{path}: cannot read the registry: {err.strerror}") from None
        return parse_nodes_conf_45(text, path)
    nodes = parse_list_json(run_wwctl(wwctl, "node", "list", "-j"), "wwctl node list -j")
    profiles = parse_list_json(run_wwctl(wwctl, "profile", "list", "-j"), "wwctl profile list -j")
    return Registry(nodes=nodes, profiles=profiles, source="`wwctl node list -j` and `wwctl profile list -j`")
