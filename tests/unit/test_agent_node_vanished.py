"""A node whose Node vanished while it runs (a wrong prune, ``kubectl delete node``): its
kubelet does not register it again (core.versions.kubelet_reregisters_deleted_node), so the
agent notices in WATCH and restarts the kubelet, one sentence per decision."""

from __future__ import annotations

from pathlib import Path

from core.etcd import EtcdMember, LocalView
from leader.agent import NODE_CHECK_S
from tests.unit.agent_fakes import Harness
from tests.unit.test_agent_states import joined_worker
from tests.unit.test_agent_states import watching_control as _watching


def watching_control(tmp_path: Path) -> Harness:
    """control1 in WATCH with its etcd member listed (the member check stays quiet)."""
    h = _watching(tmp_path)
    me = EtcdMember(2, "control1", ("https://10.0.0.22:2380",), ("https://10.0.0.22:2379",))
    h.probes.etcd = LocalView(members=(me,), member_id=2, raft_index=9, quorum=True)
    return h


VANISHED = (
    "my Node {name} is gone from the API while this node runs, and a running kubelet does not register it again "
    "(kubernetes#71398)"
)


def test_a_control_node_restarts_its_kubelet_when_its_node_vanished(tmp_path: Path) -> None:
    h = watching_control(tmp_path)
    h.probes.found = False
    h.clock.advance(NODE_CHECK_S["control"])
    assert h.cycle() == "no action: generation 1 is healthy", "one miss is not enough"
    h.clock.advance(NODE_CHECK_S["control"])
    assert (
        h.cycle() == VANISHED.format(name="control1") + "; restarted kubelet to register it, waiting for it to be Ready"
    )
    assert h.services.restarted == ["kubelet"]
    assert h.state == "AWAIT_NODE" and h.events("node_vanished")
    assert "reset" not in h.driver.calls, "no reset: the etcd member and the data stay"
    h.probes.found, h.probes.node = None, True
    assert h.cycle() == "node control1 is Ready"
    assert h.state == "WATCH"


def test_a_node_found_again_between_checks_is_left_alone(tmp_path: Path) -> None:
    h = watching_control(tmp_path)
    h.probes.found = False
    h.clock.advance(NODE_CHECK_S["control"])
    h.cycle()
    h.probes.found = True
    h.clock.advance(NODE_CHECK_S["control"])
    h.cycle()
    h.probes.found = False
    h.clock.advance(NODE_CHECK_S["control"])
    assert h.cycle() == "no action: generation 1 is healthy"
    assert h.services.restarted == []


def test_no_answer_is_not_a_vanished_node(tmp_path: Path) -> None:
    h = watching_control(tmp_path)
    h.probes.found = None  # and the API behind the VIP still answers
    for _ in range(4):
        h.clock.advance(NODE_CHECK_S["control"])
        assert h.cycle() == "no action: generation 1 is healthy"
    assert h.services.restarted == [] and not h.events("node_vanished")


def test_a_worker_restarts_its_kubelet_and_its_check_stands_in_for_the_api_probe(tmp_path: Path) -> None:
    h = joined_worker(tmp_path)
    h.probes.node = True
    h.cycle()
    assert h.state == "WATCH"
    h.probes.found = False
    probes_before = h.probes.found_calls
    h.probes.api = False  # would be silence, but the node check's 404 proves the API answers
    h.clock.advance(NODE_CHECK_S["worker"])
    assert h.cycle() == "no action: generation 1 is healthy"
    h.clock.advance(NODE_CHECK_S["worker"])
    assert h.cycle().startswith(VANISHED.format(name="worker0"))
    assert h.probes.found_calls - probes_before == 2
    assert h.services.restarted == ["kubelet"] and h.state == "AWAIT_NODE"


def test_a_kubelet_that_cannot_be_restarted_is_reset_and_rejoined(tmp_path: Path) -> None:
    h = joined_worker(tmp_path)
    h.probes.node = True
    h.cycle()
    h.probes.found = False
    h.services.fail_restart.add("kubelet")
    h.clock.advance(NODE_CHECK_S["worker"])
    h.cycle()
    h.clock.advance(NODE_CHECK_S["worker"])
    sentence = h.cycle()
    assert sentence.startswith(VANISHED.format(name="worker0") + "; restarting kubelet failed (kubelet: no recorded")
    assert sentence.endswith("resetting and rejoining")
    assert h.state == "RESET" and h.events("node_vanished")
