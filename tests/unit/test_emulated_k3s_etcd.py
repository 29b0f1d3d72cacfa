"""The emulated k3s's etcd as k3s runs it (lab/k3s.py), without root or daemons: the command
line k3s's ``cluster()`` gives etcd (``pkg/etcd/etcd.go``), on etcd 3.5 and on the 3.4.23 kept
for the benchmark; the node k3s takes a member for; ``trackLearnerProgress``'s bookkeeping."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lab import k3s


def fake_etcd(tmp_path: Path, version: str) -> str:
    """An executable that says ``etcd Version: <version>`` as ``etcd --version`` does."""
    exe = tmp_path / f"etcd-{version}"
    exe.write_text(f"#!/bin/sh\necho 'etcd Version: {version}'\necho 'Git SHA: Not provided'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


def flags(argv: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) if "=" in a else (a.removeprefix("--"), "") for a in argv[1:])


def command(etcd: str, reset: bool) -> dict[str, str]:
    argv = k3s.etcd_command(etcd, "control1-0a1b2c3d", "10.0.0.22", Path("/db"), Path("/tls"), "x=y", "new", reset)
    assert argv[0] == etcd
    return flags(argv)


def test_etcd_35_serves_grpc_on_the_client_urls_and_json_only_on_loopback_2382(tmp_path: Path) -> None:
    f = command(fake_etcd(tmp_path, "3.5.16"), reset=False)
    assert f["listen-client-urls"] == "https://127.0.0.1:2379,https://10.0.0.22:2379"
    assert f["advertise-client-urls"] == "https://10.0.0.22:2379"
    assert f["listen-client-http-urls"] == "https://127.0.0.1:2382"
    assert f["listen-peer-urls"] == "https://127.0.0.1:2380,https://10.0.0.22:2380"
    assert f["initial-advertise-peer-urls"] == "https://10.0.0.22:2380"
    assert f["listen-metrics-urls"] == "http://127.0.0.1:2381"
    assert (f["heartbeat-interval"], f["election-timeout"]) == ("500", "5000")
    assert f["experimental-initial-corrupt-check"] == "true" and "force-new-cluster" not in f
    assert f["client-cert-auth"] == f["peer-client-cert-auth"] == "true"


def test_a_cluster_reset_listens_on_loopback_only(tmp_path: Path) -> None:
    f = command(fake_etcd(tmp_path, "3.5.16"), reset=True)
    assert f["listen-client-urls"] == f["advertise-client-urls"] == "https://127.0.0.1:2379"
    assert f["listen-peer-urls"] == "https://127.0.0.1:2380"
    assert "force-new-cluster" in f and f["listen-client-http-urls"] == "https://127.0.0.1:2382"


def test_etcd_3423_gets_what_the_lab_gave_it_before(tmp_path: Path) -> None:
    # No --listen-client-http-urls before 3.4.25/3.5.8: JSON on every client URL, 2382 one more.
    f = command(fake_etcd(tmp_path, "3.4.23"), reset=False)
    assert "listen-client-http-urls" not in f and "heartbeat-interval" not in f and "election-timeout" not in f
    assert f["listen-client-urls"] == "https://127.0.0.1:2379,https://10.0.0.22:2379,https://127.0.0.1:2382"


@pytest.mark.parametrize(
    ("member", "node"),
    [("control0-0a1b2c3d", "control0"), ("ctl-1-0a1b2c3d", "ctl-1"), ("control0-old", "control0"), ("x-1", "x-1")],
)
def test_k3s_takes_a_member_for_the_node_its_name_names_up_to_the_last_dash(member: str, node: str) -> None:
    assert k3s.member_node(member) == node


def test_a_learner_that_does_not_move_for_5_minutes_is_removed() -> None:
    progress, action = k3s.track_learner({}, 7, "control2-0a1b2c3d", None, now=1000.0)
    assert action == "progress" and progress["lastProgress"] == 1000.0
    progress, action = k3s.track_learner(progress, 7, "control2-0a1b2c3d", None, now=1015.0)
    assert action == "stalled"
    progress, action = k3s.track_learner(progress, 7, "control2-0a1b2c3d", 40, now=1030.0)
    assert action == "progress" and progress["raftAppliedIndex"] == 40
    progress, action = k3s.track_learner(progress, 7, "control2-0a1b2c3d", 40, now=1030.0 + 300.0)
    assert action == "stalled"
    progress, action = k3s.track_learner(progress, 7, "control2-0a1b2c3d", 40, now=1030.0 + 300.5)
    assert action == "remove"
    # Another learner starts its own record.
    _, action = k3s.track_learner(progress, 9, "control1-11111111", None, now=2000.0)
    assert action == "progress"
