"""Network namespaces for the lab, through iproute2's ``ip`` (lab only).

Layout: a hub namespace ``<prefix>-hub`` holds the bridge ``br0``; each node is a namespace
``<prefix>-<node>`` whose ``eth0`` is one end of a veth pair, the other end (``v-<node>``)
enslaved to the bridge in the hub. Nothing is created in the machine's own namespace, so the
reference addresses (10.0.0.0/24) never appear on the host. ``ip netns exec`` bind-mounts
``/etc/netns/<ns>/hosts`` over ``/etc/hosts``; the lab writes one per node with the VIP name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


class NetnsError(Exception):
    """An ``ip`` command failed (its stderr is the message), hung, or could not start."""


NETNS_DIR = Path("/run/netns")  # where `ip netns add` keeps the namespaces' files
IP_TIMEOUT_S = 30.0  # one `ip` command; they take milliseconds unless the kernel is stuck


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS...`` and return its stdout. Raises :class:`NetnsError` when it exits
    non-zero (only with ``check``), runs over ``IP_TIMEOUT_S`` seconds or cannot start."""
    try:
        res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise NetnsError(f"ip {' '.join(args)}: no answer within {IP_TIMEOUT_S:.0f}s") from None
    except OSError as err:
        raise NetnsError(f"ip: {err.strerror} (install iproute2)") from None
    if check and res.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def existing(prefix: str) -> list[str]:
    """Names of namespaces that start with ``<prefix>-`` (``ip netns list``)."""
    out = ip("netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix + "-")]


def create_hub(prefix: str) -> str:
    """Create the namespace ``<prefix>-hub`` with the bridge ``br0`` up; return its name.
    Raises :class:`NetnsError` (for instance when it exists already)."""
    hub = f"{prefix}-hub"
    ip("netns", "add", hub)
    ip("-n", hub, "link", "set", "lo", "up")
    ip("-n", hub, "link", "add", "br0", "type", "bridge")
    ip("-n", hub, "link", "set", "br0", "up")
    return hub


def add_node(prefix: str, node: str, address: str, prefix_len: int, hosts: str) -> str:
    """Create the node's namespace ``<prefix>-<node>``: ``eth0`` with ``address/prefix_len``
    (an IPv4 address string and a prefix length), its peer ``v-<node>`` (cut to 15 characters,
    the kernel's limit for interface names) on the hub's bridge, and ``hosts`` (the file's
    text) as ``/etc/netns/<ns>/hosts``. Returns the namespace. Raises :class:`NetnsError`, or
    ``OSError`` when the hosts file cannot be written."""
    ns, hub = f"{prefix}-{node}", f"{prefix}-hub"
    veth = f"v-{node}"[:15]
    ip("netns", "add", ns)
    ip("-n", hub, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("-n", hub, "link", "set", veth, "master", "br0", "up")
    ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", ns, "addr", "add", f"{address}/{prefix_len}", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")
    etc = Path("/etc/netns") / ns
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text(hosts)
    return ns


def set_link(prefix: str, node: str, up: bool) -> None:
    """Bring a node's cable up or down (both ends, as pulling it would)."""
    state = "up" if up else "down"
    ip("-n", f"{prefix}-{node}", "link", "set", "eth0", state, check=False)
    ip("-n", f"{prefix}-hub", "link", "set", f"v-{node}"[:15], state, check=False)


def pids(ns: str) -> list[int]:
    """Process ids running in ``ns`` (``ip netns pids``); empty when there is no such namespace."""
    out = ip("netns", "pids", ns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def pids_in(namespaces: list[str]) -> list[int]:
    """Process ids running in any of ``namespaces``, found as ``ip netns pids`` finds them (a
    process whose ``/proc/<pid>/ns/net`` is the namespace's file under ``/run/netns``), in one
    pass over ``/proc`` for all of them; a namespace that does not exist has none."""
    wanted = set()
    for ns in namespaces:
        with contextlib.suppress(OSError):
            st = os.stat(NETNS_DIR / ns)
            wanted.add((st.st_dev, st.st_ino))
    found = []
    if wanted:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    st = os.stat(f"/proc/{entry.name}/ns/net")
                except OSError:  # gone, or a kernel thread's
                    continue
                if (st.st_dev, st.st_ino) in wanted:
                    found.append(int(entry.name))
    return found


def kill_all(ns: str, grace_s: float = 2.0, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` to every process in ``ns``, SIGKILL what is left after ``grace_s`` seconds,
    and wait up to 5 s more for them to go. Returns how many there were at first."""
    return kill_all_in([ns], grace_s, sig)


def kill_all_in(namespaces: list[str], grace_s: float = 2.0, sig: int = signal.SIGTERM) -> int:
    """:func:`kill_all` for several namespaces at once: ``sig`` to every process of each, one
    grace of ``grace_s`` seconds for all, then SIGKILL to what is left in any, and up to 5 s more
    for them to go. Returns how many processes there were at first."""

    def running() -> list[int]:
        return pids_in(namespaces)

    victims = running()
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and running():
        time.sleep(0.05)
    for pid in running():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and running():
        time.sleep(0.05)
    return len(victims)


def delete(ns: str) -> None:
    """Kill what runs in ``ns``, delete it and its ``/etc/netns`` directory."""
    delete_all([ns])


def delete_all(namespaces: list[str]) -> None:
    """Kill what runs in every one of ``namespaces`` at once (:func:`kill_all_in`: their
    processes stop together, as on a power cut, rather than one namespace after the other),
    then delete them in the order given, each with its ``/etc/netns`` directory."""
    kill_all_in(namespaces)
    for ns in namespaces:
        ip("netns", "delete", ns, check=False)
        shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)


def addresses(ns: str) -> list[str]:
    """IPv4 addresses configured in ``ns`` (any interface)."""
    import json

    out = ip("-n", ns, "-j", "addr", "show", check=False)
    try:
        links = json.loads(out or "[]")
    except ValueError:
        return []
    return [a["local"] for link in links for a in link.get("addr_info", []) if a.get("family") == "inet"]
