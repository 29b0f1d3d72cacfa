"""What a prune, a dead member and a member removed behind a node's back may lose: nothing
(issue 11, points 3-5; docs/recovery.md). One lab goes through the faults in a row; before
each, ConfigMaps are created through the API behind the VIP, and after it every one of them
is read back.

* a prune of a healthy node is refused (409, naming it), also when it comes from a second
  machine with the same name, which ``ek8s status`` and the events report;
* ``etcdctl member remove`` of a live control node: its agent notices within 10 s, resets and
  rejoins through the normal path;
* a control node that crashes and stays down: Phylactery removes its member once its lease
  has expired (quorum kept), so another control node can still rejoin (kubeadm's check-etcd
  refuses a join while a listed member does not answer); the dead one rejoins when it boots.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.share import ShareStore
from lab.cluster import Lab, LabState
from tests.conftest import wait_for
from tests.lab.kit import CONTROL, boot_lab, etcdctl, healthy, in_ns, kubectl, members

LAB_PREFIX = "ek8sd"


def created(state: LabState, names: list[str]) -> list[str]:
    """Create the ConfigMaps ``names`` through the VIP; returns them."""
    for name in names:
        assert kubectl(state, "worker0", "create", name) == {"kept": "yes"}
    return names


@pytest.mark.lab
def test_prune_refusal_duplicate_name_removed_member_and_reaping_keep_every_object(lab: Lab) -> None:
    state = boot_lab(lab, {"timeouts": {"lease_ttl_s": 8, "heartbeat_interval_s": 1}})
    store = ShareStore(Path(state.share), "default", "test")
    kept: list[str] = []

    def all_kept() -> None:
        for name in kept:
            assert kubectl(state, "worker0", "read", name) == {"kept": "yes"}, name

    # 3. A prune of a live node is refused; so is one from a second machine with its name.
    kept += created(state, ["before-prune"])
    token = (Path(state.share) / "default/phylactery.token").read_text().strip()
    target = state.node("control1")

    def prune(boot_id: str) -> tuple[int, dict[str, str]]:
        body = json.dumps({"name": target.name, "address": target.address, "boot_id": boot_id})
        res = in_ns(
            state, "worker0", "curl", "-s", "-m", "10", "-w", "\n%{http_code}", "-X", "POST",
            "-H", f"Authorization: Bearer {token}", "-d", body,
            f"http://{state.node('control0').address}:9999/v1/prune",
        )  # fmt: skip
        text, _, code = res.stdout.rpartition("\n")
        return int(code), json.loads(text)

    code, answer = prune("not-its-boot")
    assert code == 409 and "control1 is alive in another boot" in answer["error"], answer
    imposter = ShareStore(Path(state.share), "default", "control1")
    imposter.heartbeat("imposter-boot", "control", "watch", 1)  # a second machine named control1
    duplicate = wait_for(
        lambda: [e for e in store.events() if e["event"] == "duplicate_name" and e["node"] == "control1"],
        15,
        0.5,
        "duplicate_name reported by control1's agent",
    )
    assert "imposter-boot" in duplicate[0]["message"]
    code, answer = prune("imposter-boot")
    assert code == 409 and "nothing removed" in answer["error"], answer
    res = subprocess.run(
        [sys.executable, "-m", "manager", "status", "--share", state.share, "--json"], capture_output=True, text=True
    )
    assert "two machines heartbeat as control1" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    r = healthy(lab, state)
    assert sorted(m for m in members(state, "control0") or {}) == CONTROL and len(r["nodes"]) == 5
    all_kept()

    # 5. A member removed behind its node's back heals within 10 s (reset, pruned, rejoined).
    kept += created(state, ["before-member-remove"])
    victim = "control2"
    ids = members(state, "control0")
    assert ids is not None

    def remove() -> bool:
        nonlocal removed_at
        removed_at = time.time()
        res = etcdctl(state, "control0", "member", "remove", f"{ids[victim]:x}")
        # etcd's strict reconfiguration check refuses within 5 s of a member's (re)join
        assert res.returncode == 0 or "unhealthy cluster" in res.stderr, res.stderr
        return res.returncode == 0

    removed_at = 0.0
    wait_for(remove, 30, 1.0, "etcdctl member remove")
    noticed = wait_for(
        lambda: [e for e in store.events() if e["event"] == "member_removed" and e["t"] >= removed_at],
        30,
        0.2,
        "member_removed",
    )
    assert noticed[0]["node"] == victim and noticed[0]["t"] - removed_at <= 10.0
    lab.wait_ready(state, 180, since=removed_at, names=[victim])
    healthy(lab, state)
    assert sorted(members(state, "control0") or {}) == CONTROL
    all_kept()

    # 4. A control node crashes for good: its member is reaped once its lease expired, and a
    #    control-plane join still succeeds; the dead node rejoins when it boots again.
    kept += created(state, ["before-crash"])
    dead, rejoining = "control2", "control1"
    crashed_at = time.time()
    lab.stop_node(state, state.node(dead), crash=True)
    reaped = wait_for(
        lambda: [e for e in store.events() if e["event"] == "member_reaped" and e["t"] >= crashed_at],
        60,
        0.5,
        "member_reaped",
    )
    assert reaped[0]["member"] == dead and reaped[0]["node"] in ("control0", "control1")
    assert sorted(members(state, "control0") or {}) == ["control0", "control1"]
    all_kept()
    lab.reboot_nodes(state, [rejoining])
    assert sorted(members(state, "control0") or {}) == ["control0", "control1"]
    booted = time.time()
    lab.boot_node(state, state.node(dead))
    lab.wait_ready(state, 180, since=booted, names=[dead])
    healthy(lab, state)
    assert sorted(members(state, "control0") or {}) == CONTROL
    all_kept()
