#!/usr/bin/env python3
"""Stand-in ``wwctl`` for the tests (never installed anywhere): Warewulf's registry kept in a
``nodes.conf`` as Warewulf keeps it, with each version's behaviour where ek8s depends on it.
Run as ``python3 wwctl_standin.py ARGS...`` through a wrapper script; environment:

- ``WWCTL_VERSION`` (e.g. 4.5.8, 4.6.5, 4.7.0), ``WWCTL_NODES_CONF`` (the registry file),
  ``WWCTL_LOG`` (every argv, one JSON list a line), ``WWCTL_FAIL`` (fail any command whose
  command line contains it, exit 255, "Error: stand-in failure for ..." on stderr).

Behaviour, read from the v4.5.8, v4.6.5 and v4.7.0 tags:

- ``nodes.conf`` is rewritten whole on every change, without comments (Warewulf marshals its
  NodesYaml, node/util.go Persist). The image key is ``container name`` on 4.5 and ``image
  name`` on 4.6+ (node/datastructure.go).
- ``node list -j``/``profile list -j`` exist on 4.6+ only: nodes merged with their profiles
  (mergo WithOverride, WithAppendSlice; nested profiles; ``~`` negation), profiles as they
  are, as ``json.MarshalIndent`` of a map (4.6.5 api/node/list.go:110-123). 4.5: unknown flag.
- 4.5 ``profile add`` asks unless --yes; with no terminal the answer is "no": nothing added,
  exit 0 (profile/add/main.go:77-88). 4.6+ ``profile add`` has no --yes ("unknown flag").
- ``profile set``/``node set``/``node unset`` ask unless --yes: "no", exit 0.
- ``profile set`` on a missing profile changes nothing, exit 0 (4.6.5 api/profile/set.go:64-67).
- 4.7.0 ``profile set`` drops ``--nettagadd`` (node/update.go skips string maps) and copies
  ``--tagadd`` into the profile's device named by ``--netname`` when it has one
  (profile/set/main.go:141-149). 4.7.0 ``node add`` drops ``--tagadd`` and ``--nettagadd``.
- ``node unset`` exists on 4.7 only (CHANGELOG 4.7.0). 4.5 knows no ``--image``,
  ``--system-overlays``, ``--runtime-overlays`` and no ``image`` command; 4.7 ignores
  ``--container``/``--wwinit``/``--runtime`` set on the command's local flags (set/main.go
  applies only changed persistent flags).
- Node patterns: 4.6+ split top-level commas, then expand brackets; 4.5 does not split commas
  and drops a plain name once another has brackets (internal/pkg/hostlist/hostlist.go).
- A fresh registry has the profile ``default``; ``node add`` without --profile puts the node in it.
"""

from __future__ import annotations

import json
import os
import re
import sys

import yaml

VERSION = os.environ.get("WWCTL_VERSION", "4.7.0")
V45 = VERSION.startswith("4.5.")
V47 = not V45 and not VERSION.startswith("4.6.")
CONF = os.environ["WWCTL_NODES_CONF"]
IMAGE_KEY = "container name" if V45 else "image name"

VALUED = {
    "--profile", "--container", "--image", "--root", "--netname", "--netdev", "--hwaddr", "--ipaddr",
    "--netmask", "--gateway", "--nettagadd", "--nettagdel", "--tagadd", "--tagdel", "--wwinit", "--runtime",
    "--system-overlays", "--runtime-overlays", "--tag", "--nettag",
}  # fmt: skip
ONLY_46 = {"--image", "--system-overlays", "--runtime-overlays"}


def die(msg: str) -> None:
    print("ERROR: " + msg, file=sys.stderr)
    sys.exit(255)


def load() -> dict:
    if os.path.exists(CONF):
        with open(CONF) as f:
            data = yaml.safe_load(f) or {}
    else:
        data = {}
    data.setdefault("nodeprofiles", {"default": {}})
    data.setdefault("nodes", {})
    data["nodeprofiles"] = data["nodeprofiles"] or {}
    data["nodes"] = data["nodes"] or {}
    return data


def save(data: dict) -> None:
    with open(CONF, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def expand(args: list[str]) -> list[str]:
    """Warewulf's hostlist.Expand for this version."""
    items = []
    if V45:
        items = list(args)
    else:
        for a in args:
            depth, cur = 0, ""
            for ch in a:
                depth += ch == "["
                depth -= ch == "]"
                if ch == "," and depth == 0:
                    items.append(cur)
                    cur = ""
                else:
                    cur += ch
            items.append(cur)
    while True:
        out, count = [], 0
        for item in items:
            m = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", item)
            if not m:
                if not V45:
                    out.append(item)
                continue  # 4.5: no branch for a name without brackets
            count += 1
            for rng in m.group(2).split(","):
                lo, _, hi = rng.partition("-")
                width = len(lo)
                for i in range(int(lo), int(hi or lo) + 1):
                    out.append(f"{m.group(1)}{i:0{width}d}{m.group(3)}")
        if count == 0:
            return items
        items = out


def options(args: list[str], flags: set[str], valued: set[str] = VALUED) -> tuple[dict, list[str]]:
    opts: dict = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in valued and not (V45 and a in ONLY_46):
            opts.setdefault(a, []).append(args[i + 1])
            i += 2
        elif a in flags:
            opts[a] = True
            i += 1
        elif a.startswith("-"):
            die("unknown flag: " + a)
        else:
            rest.append(a)
            i += 1
    return opts, rest


def pairs(opts: dict, key: str) -> dict:
    out = {}
    for value in opts.get(key, []):
        for pair in value.split(","):
            k, _, v = pair.partition("=")
            out[k] = v
    return out


def names(opts: dict, key: str) -> list[str]:
    return [n for v in opts.get(key, []) for n in v.split(",") if n]


def apply_fields(entry: dict, opts: dict, kind: str) -> None:
    """What `set`/`add` change on a node or profile."""
    tags = pairs(opts, "--tagadd")
    if tags and not (kind == "node-add" and V47):
        entry.setdefault("tags", {}).update(tags)
    for k in names(opts, "--tagdel"):
        entry.get("tags", {}).pop(k, None)
    if "--profile" in opts:
        entry["profiles"] = opts["--profile"][-1].split(",")
    for flag, key in (("--container", IMAGE_KEY), ("--image", IMAGE_KEY), ("--root", "root")):
        if flag in opts and not (V47 and flag == "--container"):
            entry[key] = opts[flag][-1]
    for flag, key in (("--wwinit", "system overlay"), ("--system-overlays", "system overlay"),
                      ("--runtime", "runtime overlay"), ("--runtime-overlays", "runtime overlay")):  # fmt: skip
        if flag in opts and not (V47 and flag in ("--wwinit", "--runtime")):
            entry[key] = opts[flag][-1].split(",")
    netname = opts.get("--netname", ["default"])[-1]
    netflags = {"--netdev": "device", "--hwaddr": "hwaddr", "--ipaddr": "ipaddr", "--netmask": "netmask",
                "--gateway": "gateway"}  # fmt: skip
    if any(f in opts for f in netflags) or "--nettagadd" in opts:
        dev = entry.setdefault("network devices", {}).setdefault(netname, {})
        for flag, key in netflags.items():
            if flag in opts:
                value = opts[flag][-1]
                if value == "UNSET":
                    dev.pop(key, None)
                else:
                    dev[key] = value
        nettags = pairs(opts, "--nettagadd")
        dropped = V47 and kind in ("profile", "node-add")
        if nettags and not dropped:
            dev.setdefault("tags", {}).update(nettags)
    dev = entry.get("network devices", {}).get(netname)
    if dev is not None:
        for k in names(opts, "--nettagdel"):
            dev.get("tags", {}).pop(k, None)
        if V47 and kind == "profile" and tags:
            dev.setdefault("tags", {}).update(tags)  # 4.7.0 profile/set/main.go:141-149
    for key in ("tags", "network devices"):
        if key in entry and not entry[key]:
            del entry[key]


def clean(items: list[str]) -> list[str]:
    neg = {i[1:] for i in items if i.startswith("~")}
    return [i for i in items if not i.startswith("~") and i not in neg]


def chain(data: dict, ids: list[str], seen: set) -> list[str]:
    out = []
    for pid in ids:
        if pid.startswith("~"):
            out.append(pid)
        elif pid not in seen:
            seen.add(pid)
            out += chain(data, (data["nodeprofiles"].get(pid) or {}).get("profiles", []), seen)
            out.append(pid)
    return out


def merged(data: dict, name: str) -> dict:
    node = data["nodes"][name] or {}
    layers = [data["nodeprofiles"][p] or {} for p in clean(chain(data, node.get("profiles", []), set()))
              if p in data["nodeprofiles"]] + [node]  # fmt: skip
    out: dict = {}
    for layer in layers:
        for key, value in layer.items():
            if key == "profiles":
                continue
            if isinstance(value, list):
                out[key] = out.get(key, []) + value
            elif key == "network devices":
                devs = out.setdefault(key, {})
                for dname, dev in value.items():
                    cur = devs.setdefault(dname, {})
                    for k, v in dev.items():
                        if k == "tags":
                            cur.setdefault("tags", {}).update(v)
                        elif v:
                            cur[k] = v
            elif key == "resources":
                res = out.setdefault(key, {})
                for k, v in value.items():
                    res[k] = res.get(k, []) + list(v)
            elif isinstance(value, dict):
                out.setdefault(key, {}).update(value)
            elif value:
                out[key] = value
    for key in ("system overlay", "runtime overlay"):
        if key in out:
            out[key] = clean(out[key])
    out["profiles"] = node.get("profiles", [])
    return out


def main() -> None:
    argv = sys.argv[1:]
    with open(os.environ["WWCTL_LOG"], "a") as f:
        f.write(json.dumps(argv) + "\n")
    fail = os.environ.get("WWCTL_FAIL")
    if fail and fail in " ".join(argv):
        print("Error: stand-in failure for " + fail, file=sys.stderr)
        sys.exit(255)
    if argv == ["version"]:
        print("wwctl version:\t " + VERSION + "-1")
        return
    if argv[:1] == ["image"] and V45:
        die('unknown command "image" for "wwctl"')
    data = load()
    kind, verb, args = argv[0], argv[1], argv[2:]
    if kind in ("configure", "overlay"):
        return
    table = data["nodes"] if kind == "node" else data["nodeprofiles"]
    if verb == "list":
        opts, _ = options(args, {"-j", "-y"})
        if V45 and ("-j" in opts or "-y" in opts):
            die("unknown shorthand flag: 'j' in -j")
        if "-j" not in opts:
            die("the stand-in answers only -j")
        out = {n: (merged(data, n) if kind == "node" else (table[n] or {})) for n in sorted(table)}
        print(json.dumps(out, indent=2))
        return
    if verb == "add":
        opts, rest = options(args, {"--yes"} if (kind, V45) == ("profile", True) else set())
        if rest[0] in table:
            die(f"{kind} with name {rest[0]} already exists")
        if kind == "profile" and V45 and "--yes" not in opts:
            print(f"Are you sure you add the profile {rest}? [y/N] ")
            return  # no terminal: promptui returns "no"
        entry: dict = {}
        if kind == "node" and "--profile" not in opts and "default" in data["nodeprofiles"]:
            entry["profiles"] = ["default"]
        apply_fields(entry, opts, f"{kind}-add")
        table[rest[0]] = entry
        save(data)
        return
    if verb == "unset" and kind == "node" and V47:
        # `node unset`'s field flags are booleans (wwctl/unset, CreateUnsetFlags)
        opts, rest = options(args, {"--yes", "--image", "--root", "--netdev", "--netmask", "--gateway",
                                    "--system-overlays", "--runtime-overlays"}, {"--netname", "--tag"})  # fmt: skip
        if "--yes" not in opts:
            print("Are you sure? [y/N] ")
            return
        for name in expand(rest):
            entry = table.get(name)
            if entry is None:
                continue
            for flag, key in (("--image", IMAGE_KEY), ("--root", "root"), ("--system-overlays", "system overlay"),
                              ("--runtime-overlays", "runtime overlay")):  # fmt: skip
                if flag in opts:
                    entry.pop(key, None)
            dev = entry.get("network devices", {}).get(opts.get("--netname", ["default"])[-1], {})
            for flag, key in (("--netdev", "device"), ("--netmask", "netmask"), ("--gateway", "gateway")):
                if flag in opts:
                    dev.pop(key, None)
            for k in names(opts, "--tag"):
                entry.get("tags", {}).pop(k, None)
            for key in ("tags", "network devices"):
                if key in entry and not entry[key]:
                    del entry[key]
        save(data)
        return
    if verb == "set":
        opts, rest = options(args, {"--yes"})
        if "--yes" not in opts:
            print(f"Are you sure you want to modify 1 {kind}(s)? [y/N] ")
            return
        for name in expand(rest) if kind == "node" else rest:
            entry = table.get(name)
            if entry is None:
                print(f"WARN   : invalid {kind}: {name}", file=sys.stderr)
                continue
            apply_fields(entry, opts, kind)
        save(data)
        return
    die(f'unknown command "{verb}" for "wwctl {kind}"')


if __name__ == "__main__":
    main()
