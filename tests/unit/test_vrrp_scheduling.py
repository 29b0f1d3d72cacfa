"""keepalived's VRRP scheduling follows what the node allows: real-time only with
CAP_SYS_RESOURCE (phylactery.daemons.vrrp_realtime_allowed), else nice -20."""

from __future__ import annotations

from pathlib import Path

import pytest

from phylactery import daemons, render

# /proc/self/status lines around CapBnd, as Linux prints them (proc(5)).
STATUS = "Name:\tpython3\nCapInh:\t0000000000000000\nCapBnd:\t{mask}\nNoNewPrivs:\t0\n"


@pytest.mark.parametrize(
    ("mask", "allowed"),
    [
        ("000001ffffffffff", True),  # every capability, as root on a node
        ("000001fffeffffff", False),  # all but CAP_SYS_RESOURCE (bit 24): this lab host
        ("0000000001000000", True),  # CAP_SYS_RESOURCE alone
        ("0000000000000000", False),
    ],
)
def test_realtime_only_with_cap_sys_resource_in_the_bounding_set(tmp_path: Path, mask: str, allowed: bool) -> None:
    status = tmp_path / "status"
    status.write_text(STATUS.format(mask=mask))
    assert daemons.vrrp_realtime_allowed(status) is allowed


@pytest.mark.parametrize("text", ["Name:\tx\n", "CapBnd:\tnot-hex\n", "CapBnd:\n"])
def test_an_unreadable_bounding_set_means_no_realtime(tmp_path: Path, text: str) -> None:
    status = tmp_path / "status"
    status.write_text(text)
    assert daemons.vrrp_realtime_allowed(status) is False
    assert daemons.vrrp_realtime_allowed(tmp_path / "missing") is False


def keepalived_conf(realtime: bool) -> str:
    return render.render_keepalived(
        node="control0",
        cluster="default",
        generation=1,
        address="10.0.0.21",
        interface="eth0",
        peers=["10.0.0.22"],
        vip="10.0.0.99",
        prefix_length=24,
        virtual_router_id=51,
        advert_int=0.1,
        is_leader=True,
        check_script="/etc/keepalived/check_haproxy.sh",
        realtime=realtime,
    )


def directives(text: str) -> set[str]:
    return {line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")}


def test_the_config_asks_for_exactly_one_scheduling() -> None:
    rt, nice = directives(keepalived_conf(True)), directives(keepalived_conf(False))
    assert "vrrp_rt_priority" in rt and "vrrp_priority" not in rt
    assert "vrrp_priority" in nice and "vrrp_rt_priority" not in nice
    assert f"vrrp_priority {render.VRRP_NICE}" in keepalived_conf(False)
