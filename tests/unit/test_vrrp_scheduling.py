"""keepalived's VRRP scheduling follows what the node allows: real-time only with
CAP_SYS_RESOURCE (phylactery.daemons.vrrp_realtime_allowed), else nice -20 (the rendered
directive: test_render_golden)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phylactery import daemons

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
