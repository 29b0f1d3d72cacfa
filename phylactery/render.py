"""Pure renderers: member registry in, config text out (golden-tested, no I/O but templates).

* :func:`render_haproxy` - ``haproxy.cfg``: a TCP frontend on the VIP port, one backend server
  per registered control node on the API server port, HTTPS ``GET /readyz`` checks
  (``check-ssl verify none``: the check proves liveness; the API's clients verify TLS
  themselves through the TCP pass-through).
* :func:`render_keepalived` - ``keepalived.conf``: one VRRPv3 instance for the VIP, unicast
  peers (multicast is often filtered on HPC networks), a track script on the local HAProxy.
  The leader of the generation starts in ``MASTER`` state so the VIP is up before
  ``kubeadm init`` needs it; priorities are equal, so a returning node never preempts.
* :func:`render_check_script` - the track script: can we open a TCP connection to the local
  HAProxy frontend?
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jinja2 import Environment, PackageLoader, StrictUndefined

_env = Environment(
    loader=PackageLoader("phylactery", "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # config files, not HTML
)


@dataclass(frozen=True)
class Backend:
    """One control node as HAProxy sees it: server name and API server address."""

    name: str
    address: str


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
    frontend_bind: str = "",
    server_state_file: str = "/run/haproxy/server-state",
) -> str:
    """haproxy.cfg text. ``members`` are sorted by name so the output is stable;
    ``frontend_bind`` empty binds every address (the VIP comes and goes)."""
    return _env.get_template("haproxy.cfg.j2").render(
        node=node,
        cluster=cluster,
        generation=generation,
        members=sorted(members, key=lambda m: m.name),
        frontend_port=frontend_port,
        api_port=api_port,
        stats_socket=stats_socket,
        check_interval=check_interval,
        frontend_bind=frontend_bind,
        server_state_file=server_state_file,
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
) -> str:
    """keepalived.conf text; ``peers`` are the other control nodes' addresses."""
    return _env.get_template("keepalived.conf.j2").render(
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
    return (
        "#!/bin/bash\n"
        "# Rendered by Phylactery: keepalived track script (is the local HAProxy frontend up?)\n"
        f"exec 3<>/dev/tcp/127.0.0.1/{port}\n"
    )
