"""The rolling upgrade's rules without root: the version path (one minor at a time, never
down, kubeadm's own words for a skip), the skew every step keeps, the rollout's state machine
step by step (forward, stopped, resumed, rolled back), and rollout.json as a validated share
record written by compare and swap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import upgrade
from core.records import InvalidRecord, RolloutRecord, parse
from core.share import InvalidShareRecord, ShareError, ShareStore
from core.upgrade import PathRefused, RolloutError, check_path, move_node, move_phase, next_step, set_step

ROLES = {"control1": "control", "control2": "control", "control3": "control", "worker1": "worker", "worker2": "worker"}


def cluster_at(version: str) -> dict[str, str]:
    return {n: version for n in ROLES}


def rollout(distribution: str = "kubeadm", max_unavailable: int = 1) -> RolloutRecord:
    return upgrade.new_rollout(
        "default",
        distribution,  # type: ignore[arg-type]
        cluster_at("v1.35.2"),
        ROLES,
        "v1.36.4",
        {"control": ("ek8s-control", "ek8s-control-v1.36.4"), "worker": ("ek8s-base", "ek8s-base-v1.36.4")},
        max_unavailable,
        now=100.0,
    )


# -- the path ----------------------------------------------------------------------------
def test_one_minor_up_and_a_patch_up_are_paths() -> None:
    frm, to = check_path(cluster_at("v1.35.2"), "v1.36.4")
    assert (str(frm), str(to)) == ("v1.35.2", "v1.36.4")
    assert str(check_path(cluster_at("v1.36.1"), "v1.36.4")[1]) == "v1.36.4"


@pytest.mark.parametrize(
    ("current", "target", "rule", "words"),
    [
        ("v1.34.1", "v1.36.4", "skip", "kubeadm can upgrade only 1 minor version at a time"),
        ("v1.32.1", "v1.34.0", "skip", "upgrade to v1.33 first"),
        ("v1.36.4", "v1.35.2", "downgrade", "downgrades are not supported"),
        ("v1.36.4", "v1.36.1", "downgrade", "older than the cluster"),
        ("v1.36.4", "v1.36.4", "same", "nothing to upgrade"),
        ("v1.35.2", "v1.37.0", "unsupported", "supported minors are v1.32 to v1.36"),
        ("v1.35.2", "1.36.4", "unsupported", "--to"),
    ],
)
def test_a_refused_path_names_its_rule(current: str, target: str, rule: str, words: str) -> None:
    with pytest.raises(PathRefused) as err:
        check_path(cluster_at(current), target)
    assert err.value.rule == rule
    assert words in str(err.value)


def test_a_cluster_on_two_versions_is_an_unfinished_rollout() -> None:
    mixed = {**cluster_at("v1.35.2"), "control1": "v1.36.4", "control2": "v1.36.4"}
    with pytest.raises(PathRefused) as err:
        check_path(mixed, "v1.36.4")
    assert err.value.rule == "mixed"
    assert "v1.36.4 on control[1-2]" in str(err.value) and "--resume or --rollback" in str(err.value)
    with pytest.raises(PathRefused, match="no node reports"):
        check_path({}, "v1.36.4")


# -- the order and the skew -------------------------------------------------------------
def test_kubeadm_forward_order_control_nodes_alone_then_addons_then_workers() -> None:
    r = rollout(max_unavailable=2)
    seen = []
    while (step := next_step(r)) is not None and step.action != "finish":
        seen.append((step.action, step.nodes))
        if step.action in ("cluster_config", "addons"):
            r = set_step(r, step.action, True, 1.0)
        else:
            for n in step.nodes:
                r = move_node(move_node(r, n, "moving", 1.0), n, "new", 1.0)
    assert seen == [
        ("cluster_config", ()),
        ("move", ("control1",)),
        ("move", ("control2",)),
        ("move", ("control3",)),
        ("addons", ()),
        ("move", ("worker1", "worker2")),
    ]
    done = move_phase(r, "done", 2.0)
    assert next_step(done) is None
    assert all(n.state == "new" for n in done.nodes)


def test_k3s_has_no_cluster_wide_step() -> None:
    r = rollout("k3s")
    step = next_step(r)
    assert step is not None and (step.action, step.nodes) == ("move", ("control1",))


def test_a_worker_never_moves_before_every_control_node_is_new() -> None:
    r = move_node(move_node(rollout(), "control1", "moving", 1.0), "control1", "new", 1.0)
    with pytest.raises(RolloutError, match="newer than the API server of control2, control3"):
        move_node(r, "worker1", "moving", 1.0)


def test_illegal_moves_are_refused_naming_the_allowed_ones() -> None:
    r = rollout()
    with pytest.raises(RolloutError, match=r"old -> new is not a rollout move \(allowed: \['moving'\]\)"):
        move_node(r, "control1", "new", 1.0)
    with pytest.raises(RolloutError, match="not part of this rollout"):
        move_node(r, "control9", "moving", 1.0)
    with pytest.raises(RolloutError, match="cannot be done: control1 \\(old\\)"):
        move_phase(r, "done", 1.0)
    with pytest.raises(RolloutError, match="rolling: it cannot become rolling_back"):
        move_phase(r, "rolling_back", 1.0)


def test_a_failed_step_stops_and_resume_retries_that_node_alone_first() -> None:
    r = set_step(rollout(), "cluster_config", True, 1.0)
    r = move_node(r, "control1", "moving", 1.0)
    r = move_phase(move_node(r, "control1", "failed", 1.0), "stopped", 2.0, "control1 not back within 900s")
    assert next_step(r) is None
    assert "next: ek8s upgrade --resume or --rollback" in upgrade.summary(r)
    assert "control1 not back" in upgrade.summary(r)
    resumed = move_phase(r, "rolling", 3.0)
    assert resumed.error == ""
    step = next_step(resumed)
    assert step is not None and (step.action, step.nodes) == ("move", ("control1",))


def test_rollback_returns_workers_first_then_reverts_the_cluster_config_then_control_nodes_last_moved_first() -> None:
    r = set_step(rollout(), "cluster_config", True, 1.0)
    for n in ("control1", "control2"):
        r = move_node(move_node(r, n, "moving", 1.0), n, "new", 1.0)
    r = move_node(move_node(r, "control3", "moving", 1.0), "control3", "failed", 1.0)
    r = move_phase(move_phase(r, "stopped", 2.0, "boom"), "rolling_back", 3.0)
    seen = []
    while (step := next_step(r)) is not None and step.action != "finish":
        seen.append((step.action, step.nodes))
        if step.action.startswith("revert_"):
            r = set_step(r, step.action.removeprefix("revert_"), False, 1.0)
        else:
            for n in step.nodes:
                r = move_node(move_node(r, n, "returning", 1.0), n, "old", 1.0)
    assert seen == [
        ("revert_cluster_config", ()),
        ("return", ("control3",)),
        ("return", ("control2",)),
        ("return", ("control1",)),
    ]
    assert move_phase(r, "rolled_back", 4.0).phase == "rolled_back"


def test_rollback_after_workers_moved_takes_workers_and_addons_first() -> None:
    r = set_step(set_step(rollout(), "cluster_config", True, 1.0), "addons", True, 1.0)
    for n in ("control1", "control2", "control3", "worker1"):
        r = move_node(move_node(r, n, "moving", 1.0), n, "new", 1.0)
    r = move_phase(move_phase(r, "stopped", 2.0, "x"), "rolling_back", 3.0)
    step = next_step(r)
    assert step is not None and (step.action, step.nodes) == ("return", ("worker1",))
    # control3 may not return while worker1 is still new: the skew.
    with pytest.raises(RolloutError, match="worker1"):
        move_node(r, "control3", "returning", 1.0)
    r = move_node(move_node(r, "worker1", "returning", 1.0), "worker1", "old", 1.0)
    assert [next_step(r).action] == ["revert_addons"]  # type: ignore[union-attr]


# -- rollout.json ------------------------------------------------------------------------
def test_rollout_json_round_trips_and_a_wrong_shape_names_its_field() -> None:
    r = rollout()
    raw = json.dumps(__import__("dataclasses").asdict(r))
    assert parse(RolloutRecord, raw, "rollout.json") == r
    bad = json.loads(raw)
    bad["to_version"] = "v1.37.0"
    bad["from_version"] = "v1.35.2"
    with pytest.raises(InvalidRecord, match=r"to_version.*one step up"):
        parse(RolloutRecord, json.dumps(bad), "rollout.json")
    bad = json.loads(raw)
    bad["nodes"][0], bad["nodes"][4] = bad["nodes"][4], bad["nodes"][0]
    with pytest.raises(InvalidRecord, match=r"nodes.*control nodes first"):
        parse(RolloutRecord, json.dumps(bad), "rollout.json")
    bad = json.loads(raw)
    bad["nodes"][1]["state"] = "upgraded"
    with pytest.raises(InvalidRecord, match=r"nodes\.1\.state"):
        parse(RolloutRecord, json.dumps(bad), "rollout.json")
    bad = json.loads(raw)
    bad["nodes"][2]["new_image"] = "x;rm -rf /"
    with pytest.raises(InvalidRecord, match=r"nodes\.2\.new_image"):
        parse(RolloutRecord, json.dumps(bad), "rollout.json")


def test_the_share_keeps_one_rollout_by_compare_and_swap(tmp_path: Path) -> None:
    store = ShareStore(tmp_path, "default", "ww")
    store.ensure()
    assert store.read_rollout() is None
    first = store.write_rollout(rollout(), expect_revision=None)
    assert first.revision == 0 and store.read_rollout() == first
    with pytest.raises(ShareError, match="is rolling"):
        store.write_rollout(rollout(), expect_revision=None)  # a second upgrade while one runs
    second = store.write_rollout(move_node(first, "control1", "moving", 5.0), expect_revision=0)
    assert second.revision == 1
    with pytest.raises(ShareError, match="expected revision 0, found revision 1"):
        store.write_rollout(first, expect_revision=0)  # a writer that read an older one
    (tmp_path / "default" / "rollout.json").write_text("[]")
    with pytest.raises(InvalidShareRecord):
        store.read_rollout()
