"""Fencing (docs/recovery.md, "Fencing"): a survivor with ``fencing: warewulf-power`` files a
fence request for its silent peers; ``ek8s fence serve`` power-cycles each node still silent in
the incarnation named, waits for the power command's success, and only then records the fence,
which is what lets the survivor re-form etcd. The power command is a stand-in script here (the
lab's crashes the lab node); the share is the real store on a temp dir."""

from __future__ import annotations

from pathlib import Path

from core import recovery
from core.etcd import LocalView
from core.share import ShareStore
from manager.fence import FenceService
from tests.unit.agent_fakes import Harness, age_heartbeat
from tests.unit.test_agent_states import incarnation, watching_control
from tests.unit.test_reset_cli import ek8s


def power_standin(tmp_path: Path, exit_code: int = 0) -> str:
    """A ``wwctl power cycle`` stand-in that logs the node it was asked for."""
    script = tmp_path / "power"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/power.log\nexit {exit_code}\n')
    script.chmod(0o755)
    return f"{script} cycle {{node}}"


def powered(tmp_path: Path) -> list[str]:
    log = tmp_path / "power.log"
    return log.read_text().splitlines() if log.exists() else []


def partitioned_survivor(tmp_path: Path, **settings: object) -> Harness:
    """control1 holds its data; control0 and control2 are silent past the lease (crashed, or
    cut off and serving: the share cannot tell); etcd lost quorum."""
    h = watching_control(tmp_path, **settings)
    incarnation(tmp_path, "control2")
    for name in ("control0", "control2"):
        age_heartbeat(h.store, name, 31)
    h.probes.api = False
    h.probes.etcd = LocalView(members=(), member_id=2, raft_index=42, quorum=False)
    h.clock.advance(600)
    return h


def test_without_fencing_the_survivor_files_no_request(tmp_path: Path) -> None:
    h = partitioned_survivor(tmp_path)
    assert h.cycle().endswith("waiting, not acting on silence")
    assert h.store.fence_requests() == {} and not h.events("fence_requested")


def test_a_survivor_is_fenced_for_only_after_the_power_cycle_succeeded(tmp_path: Path) -> None:
    h = partitioned_survivor(tmp_path, fencing="warewulf-power")
    said = h.cycle()
    assert said.endswith("; fence requested for control0, control2 (fencing: warewulf-power)"), said
    assert sorted(h.store.fence_requests()) == ["control0", "control2"]
    [event] = h.events("fence_requested")
    assert event["nodes"] == ["control0", "control2"]
    h.cycle()
    assert len(h.events("fence_requested")) == 1, "one request per incarnation"
    assert "reform" not in h.driver.calls

    service = FenceService(ShareStore(tmp_path / "share", "default", "fence"), power_standin(tmp_path, 1), 30)
    first, second = service.serve_once()
    assert first.startswith("fencing control0 failed: ") and "exited 1" in first and "control2" in second
    assert "reform" not in h.driver.calls and not h.cycle().startswith("etcd lost quorum (")
    assert recovery.assess_share(h.store, 1, 30).lost == [], "a failed power cycle proves nothing"
    assert len(h.store.fence_requests()) == 2, "kept for the next turn"
    assert service.serve_once() == [] and len(powered(tmp_path)) == 2, "not again before retry_s"
    assert [e["target"] for e in h.store.events() if e["event"] == "fence_failed"] == ["control0", "control2"]

    service.power_command = power_standin(tmp_path, 0)
    service.retry_at.clear()  # retry_s (10 s) has passed
    done = service.serve_once()
    assert [line.split(" (")[0] for line in done] == ["fenced control0", "fenced control2"]
    assert powered(tmp_path) == ["cycle control0", "cycle control2"] * 2
    assert h.store.fence_requests() == {}
    a = recovery.assess_share(h.store, 1, 30)
    assert a.fates["control0"] is recovery.Fate.FENCED and a.proofs["control2"].how.endswith("cycle control2")
    assert h.cycle() == (
        "etcd lost quorum (control0, control2 lost their data); re-forming etcd from my data "
        "(raft index 42) as a one-member cluster; generation 1 stays"
    )
    fenced = [e for e in h.store.events() if e["event"] == "node_fenced"]
    assert [e["target"] for e in fenced] == ["control0", "control2"]


def test_a_node_that_heartbeats_again_is_not_fenced(tmp_path: Path) -> None:
    h = partitioned_survivor(tmp_path, fencing="warewulf-power")
    h.cycle()
    ShareStore(tmp_path / "share", "default", "control2").heartbeat("boot-control2", "control", "watch", 1)
    service = FenceService(ShareStore(tmp_path / "share", "default", "fence"), power_standin(tmp_path), 30)
    said = service.serve_once()
    assert "control2: not fenced, it is alive; request dropped" in said
    assert powered(tmp_path) == ["cycle control0"], "the power command never ran for control2"
    assert list(h.store.fence_requests()) == []


def test_fence_serve_once_from_the_command_line(tmp_path: Path) -> None:
    h = partitioned_survivor(tmp_path, fencing="warewulf-power")
    h.cycle()
    share = str(tmp_path / "share")
    bad = ek8s("fence", "serve", "--share", share, "--once", "--power-command", "wwctl power cycle")
    assert bad.returncode == 2 and "{node}" in bad.stderr and h.store.fence_requests() != {}
    res = ek8s("fence", "serve", "--share", share, "--once", "--power-command", power_standin(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("fenced control") == 2 and powered(tmp_path) == ["cycle control0", "cycle control2"]


def test_fencing_goes_from_the_inventory_to_node_yaml_through_a_warewulf_tag() -> None:
    from core.config import parse_config
    from lab import runners
    from lab.state import LabNode, LabState

    state = LabState(prefix="ek8s", dir="/lab", share="/lab/share", mode=runners.MACHINES)
    state.nodes.append(LabNode("control0", "control", "10.0.0.21", "ek8s-control0", "", "", ""))
    inv = runners.lab_inventory(state)
    assert "ek8s_fencing" not in inv.cluster_tags(), "off by default: the golden overlays stay as they are"
    fenced = inv.model_copy(update={"fencing": "warewulf-power"})
    assert fenced.cluster_tags()["ek8s_fencing"] == "warewulf-power"
    text = (Path(__file__).parents[2] / "overlay/ek8s/rootfs/etc/ek8s/node.yaml.ww").read_text()
    assert '{{- with index .Tags "ek8s_fencing" }}\nfencing: {{ printf "%q" . }}' in text
    node = parse_config(
        {"role": "control", "node": {"name": "c0", "address": "10.0.0.21"}, "fencing": "warewulf-power"}, Path("n.yaml")
    )
    assert node.fencing == "warewulf-power"
