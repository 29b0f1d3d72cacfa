"""Pure renderers: member registry in, config text out (golden-tested, no I/O but templates).

* :func:`render_haproxy` - ``haproxy.cfg``: a TCP frontend on the VIP port, one backend server
  per registered control node on the API server port, HTTPS ``GET /readyz`` checks
  (``check-ssl verify none``: the check proves liveness; the API's clients verify TLS
  themselves through the TCP pass-through); when none passes, a second backend of the same
  servers checked leniently (HTTPS ``GET /livez``, a longer period) takes the clients.
* :func:`render_keepalived` - ``keepalived.conf``: one VRRPv3 instance for the VIP, unicast
  peers (multicast is often filtered on HPC networks), a track script on the local HAProxy.
  The leader of the generation starts in ``MASTER`` state so the VIP is up before
  ``kubeadm init`` needs it; priorities are equal, so a returning node never preempts.
  Sub-second VRRPv3 adverts (``vip.advert_interval_s``) with the VRRP process on real-time
  scheduling (``vrrp_rt_priority``, keepalived.conf(5) 2.2.7) so load does not fake a crash,
  or at nice -20 (``vrrp_priority``) where keepalived could not keep real-time scheduling
  through a reload (:func:`phylactery.daemons.vrrp_realtime_allowed`).
* :func:`render_check_script` - the track script: can we open a TCP connection to the local
  HAProxy frontend?

The renderers refuse on their own (:class:`RenderRefused`) every value that could end a line
or a quoted word of the config: names must be RFC 1123 labels, addresses IP addresses, ports
1-65535, paths absolute without whitespace or quotes, the interface a Linux interface name.
The member registry's reader validates the same (:class:`core.records.MemberRecord`); this is
the second wall, so a forged record (an address carrying a newline and keepalived's
``notify_master "/bin/sh -c ..."``) can never become a directive run as root.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined

from core.records import node_name

_env = Environment(
    loader=PackageLoader("phylactery", "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # config files, not HTML
)


# A Linux interface name (IFNAMSIZ: at most 15 characters); the kernel allows more, this is
# what a node.yaml may name and what cannot break a keepalived line.
_INTERFACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9_./@+-]*$")
_INTERVAL_RE = re.compile(r"^[0-9]{1,6}(us|ms|s|m)?$")


class RenderRefused(ValueError):
    """A value that must not reach a config file; ``field`` names the renderer's argument."""

    def __init__(self, field: str, value: object, why: str) -> None:
        self.field = field
        super().__init__(f"{field}: {str(value)[:80]!r} {why}; nothing rendered")


def _check(field: str, value: object, ok: bool, why: str) -> None:
    if not ok:
        raise RenderRefused(field, value, why)


def _name(field: str, value: str) -> None:
    try:
        node_name(value)
    except (ValueError, TypeError):
        raise RenderRefused(field, value, "is not an RFC 1123 label") from None


def _ip(field: str, value: str) -> None:
    try:
        ok = isinstance(value, str) and str(ipaddress.ip_address(value)) == value
    except ValueError:
        ok = False
    _check(field, value, ok, "is not an IP address")


def _port(field: str, value: int) -> None:
    _check(field, value, isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536, "is not a port")


def _path(field: str, value: str) -> None:
    _check(field, value, isinstance(value, str) and bool(_PATH_RE.match(value)), "is not a plain absolute path")


# Every control node's VRRP priority (equal: a returning node never preempts the holder).
KEEPALIVED_PRIORITY = 100
# keepalived's VRRP process's SCHED_RR priority (1-99): above every normal process, below the
# kernel's own real-time threads (migration, watchdog at 99; threaded IRQs at 50).
VRRP_RT_PRIORITY = 10
# Its nice value where real-time scheduling cannot be kept (-20 to 19; -20: the largest CFS
# weight, 88761 against a normal process's 1024, so a waking VRRP process runs at once).
VRRP_NICE = -20


@dataclass(frozen=True)
class Backend:
    """One control node as HAProxy sees it: server name (an RFC 1123 label) and API server
    address (an IP address). Raises :class:`RenderRefused` otherwise."""

    name: str
    address: str

    def __post_init__(self) -> None:
        _name("members.name", self.name)
        _ip("members.address", self.address)


def render_haproxy(
    *,
    node: str,
    cluster: str,
    generation: int,
    members: Sequence[Backend],
    frontend_port: int,
    api_port: int,
    stats_socket: str,
    check_interval: str = "1s",
    alive_interval: str = "2s",
    frontend_bind: str = "",
    server_state_file: str = "/run/haproxy/server-state",
    ca_file: str = "",
) -> str:
    """haproxy.cfg text. ``members`` are sorted by name so the output is stable;
    ``check_interval`` is the strict ``/readyz`` check's period (and time limit) that decides
    which servers get clients, ``alive_interval`` the lenient ``/livez`` check's that decides
    which still get them when none passes the strict one (HAProxy times, e.g. ``"1s"``,
    ``"500ms"``); ``frontend_bind`` empty binds every address (the VIP comes and goes).
    ``ca_file`` (a PEM file: the generation's cluster CA) makes both checks verify each API
    server's certificate chain against it (``verify required``; no ``sni`` or ``verifyhost``,
    so HAProxy checks the chain, not the names), so a server of another CA (the generation
    before ``ek8s reset``, another cluster) is DOWN and gets no client; empty: not verified
    (before the generation's CA is published). Raises :class:`RenderRefused` for a value that
    could break the file."""
    _name("node", node)
    _name("cluster", cluster)
    for m in members:
        Backend(m.name, m.address)  # a Backend made by hand (dataclasses.replace) is checked too
    _port("frontend_port", frontend_port)
    _port("api_port", api_port)
    _path("stats_socket", stats_socket)
    _path("server_state_file", server_state_file)
    _check("check_interval", check_interval, bool(_INTERVAL_RE.match(check_interval)), "is not a HAProxy time")
    _check("alive_interval", alive_interval, bool(_INTERVAL_RE.match(alive_interval)), "is not a HAProxy time")
    if frontend_bind:
        _ip("frontend_bind", frontend_bind)
    if ca_file:
        _path("ca_file", ca_file)
    return _env.get_template("haproxy.cfg.j2").render(
        node=node,
        cluster=cluster,
        generation=generation,
        members=sorted(members, key=lambda m: m.name),
        frontend_port=frontend_port,
        api_port=api_port,
        stats_socket=stats_socket,
        check_interval=check_interval,
        alive_interval=alive_interval,
        frontend_bind=frontend_bind,
        server_state_file=server_state_file,
        ca_file=ca_file,
    )


def render_keepalived(
    *,
    node: str,
    cluster: str,
    generation: int,
    address: str,
    interface: str,
    peers: Sequence[str],
    vip: str,
    prefix_length: int,
    virtual_router_id: int,
    advert_int: float,
    is_leader: bool,
    check_script: str,
    realtime: bool = True,
) -> str:
    """keepalived.conf text; ``peers`` are the other control nodes' addresses; ``realtime``
    puts the VRRP process on ``SCHED_RR`` (``vrrp_rt_priority``), else at nice ``VRRP_NICE``
    (``vrrp_priority``): see :func:`phylactery.daemons.vrrp_realtime_allowed`. Raises
    :class:`RenderRefused` for a value that could break the file (a peer with a newline and a
    ``notify_master`` directive, an interface with a space, ...)."""
    _name("node", node)
    _name("cluster", cluster)
    _ip("address", address)
    for peer in peers:
        _ip("peers", peer)
    _ip("vip", vip)
    _check("interface", interface, bool(_INTERFACE_RE.match(interface)), "is not an interface name")
    _check("prefix_length", prefix_length, 0 <= prefix_length <= 128, "is not a prefix length")
    _check("virtual_router_id", virtual_router_id, 1 <= virtual_router_id <= 255, "is not a VRRP id (1-255)")
    _check("advert_int", advert_int, 0 < advert_int <= 255, "is not an advertisement interval")
    _path("check_script", check_script)
    # RFC 5798 section 6.1: Master_Down_Interval = 3 * advert + (256 - priority) * advert / 256.
    master_down_s = 3 * advert_int + (256 - KEEPALIVED_PRIORITY) * advert_int / 256
    return _env.get_template("keepalived.conf.j2").render(
        rt_priority=VRRP_RT_PRIORITY if realtime else None,
        nice=VRRP_NICE,
        priority=KEEPALIVED_PRIORITY,
        master_down_s=f"{master_down_s:.2f}",
        node=node,
        cluster=cluster,
        generation=generation,
        instance=f"ek8s_{cluster.replace('-', '_')}",
        state="MASTER" if is_leader else "BACKUP",
        interface=interface,
        virtual_router_id=virtual_router_id,
        advert_int=f"{advert_int:g}",
        address=address,
        peers=sorted(p for p in set(peers) if p != address),
        vip=vip,
        prefix_length=prefix_length,
        check_script=check_script,
    )


def render_check_script(port: int) -> str:
    """A bash track script: exit 0 when the local HAProxy frontend accepts a connection."""
    _port("port", port)
    return (
        "#!/bin/bash\n"
        "# Rendered by Phylactery: keepalived track script (is the local HAProxy frontend up?)\n"
        f"exec 3<>/dev/tcp/127.0.0.1/{port}\n"
    )
