"""Every transition of the node agent, asserted by the sentence its cycle returns (as Patroni
tests its HA cycle), with the real share store on a temp dir and fake driver and probes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from core.etcd import EtcdMember, LocalView
from core.share import LossProof, MemberRecord, ShareStore
from leader.agent import API_UP_S, LEASE_CHECK_S, OTHER_API_WAIT_S
from leader.election import rule_for
from tests.unit.agent_fakes import Harness, age_heartbeat, material, ready_generation


def lead_to_publish(h: Harness) -> None:
    assert h.cycle().startswith("I lead generation 1 with epoch 1")
    assert h.cycle() == "running kubeadm init"
    h.finish_jobs()
    assert h.cycle().startswith("kubeadm init finished")
    assert h.state == "PUBLISH"


# -- ELECT ----------------------------------------------------------------------------------


def test_first_control_node_leads_a_fresh_share(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    assert h.cycle() == "I lead generation 1 with epoch 1: no leader recorded for generation 1"
    assert h.state == "LEAD"
    assert [e["epoch"] for e in h.events("leader_claimed")] == [1]
    assert h.services.started == ["phylactery"], "Phylactery starts at boot, beside the election"


def test_second_control_node_follows_a_live_leader(tmp_path: Path) -> None:
    Harness(tmp_path, "control0").cycle()
    h = Harness(tmp_path, "control1")
    assert h.cycle().startswith("following: control0 leads epoch 1 (heartbeat ")
    assert h.state == "FOLLOW"


def test_workers_never_lead(tmp_path: Path) -> None:
    h = Harness(tmp_path, "worker0", role="worker")
    assert h.cycle() == "following: no leader yet; workers never lead"
    assert h.state == "FOLLOW"
    assert h.services.started == [], "workers run no Phylactery"


def test_ready_generation_is_joined(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "worker0", role="worker")
    assert h.cycle() == "joining: generation 1 is ready (leader control0, epoch 1)"
    assert h.state == "JOIN"


# -- FOLLOW ---------------------------------------------------------------------------------


def test_follower_waits_then_elects_when_the_generation_is_ready(tmp_path: Path) -> None:
    leader = Harness(tmp_path, "control0")
    lead_to_publish(leader)
    h = Harness(tmp_path, "worker0", role="worker")
    h.cycle()
    assert h.cycle() == "waiting for control0 to make generation 1 ready"
    leader.probes.api = True
    leader.cycle()
    leader.finish_jobs()
    assert leader.cycle() == "generation 1 is ready; join material published"
    assert h.cycle() == "generation 1 is ready; electing to join it"
    assert h.state == "ELECT"
    assert h.cycle().startswith("joining: generation 1 is ready")


def test_follower_takes_over_from_a_leader_whose_lease_ran_out(tmp_path: Path) -> None:
    dead = Harness(tmp_path, "control0")
    dead.cycle()
    h = Harness(tmp_path, "control1")
    h.cycle()
    assert h.state == "FOLLOW"
    age_heartbeat(h.store, "control0", 31)
    h.clock.advance(LEASE_CHECK_S)
    assert h.cycle() == "leader control0 holds no live lease; running the election again"
    assert h.cycle() == (
        "I lead generation 1 with epoch 2: leader control0 (epoch 1) has no heartbeat younger than 30s; taking over"
    )


def test_follower_judges_the_lease_at_most_once_a_second(tmp_path: Path) -> None:
    Harness(tmp_path, "control0").cycle()
    h = Harness(tmp_path, "control1")
    h.cycle()
    age_heartbeat(h.store, "control0", 31)
    h.clock.advance(LEASE_CHECK_S / 2)
    assert h.cycle() == "waiting for control0 to make generation 1 ready"
    h.clock.advance(LEASE_CHECK_S / 2)
    assert h.cycle() == "leader control0 holds no live lease; running the election again"


def test_workers_wait_without_a_leader_and_do_not_run_elections(tmp_path: Path) -> None:
    h = Harness(tmp_path, "worker0", role="worker")
    h.cycle()
    for _ in range(5):
        h.clock.advance(LEASE_CHECK_S)
        assert h.cycle() == "waiting for a control node to lead"
    assert h.state == "FOLLOW"


# -- LEAD and PUBLISH -----------------------------------------------------------------------


def test_leader_initialises_publishes_and_marks_ready(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    lead_to_publish(h)
    h.probes.phylactery = False
    assert h.cycle() == "waiting for my Phylactery (HAProxy and keepalived) to serve /healthz"
    h.probes.phylactery = True
    assert h.cycle() == "waiting for the API behind the VIP 10.0.0.99:8443"
    assert h.events("phylactery_up")
    h.probes.api = True
    assert h.cycle() == "the API answers behind the VIP; publishing join material and applying manifests"
    assert h.cycle() == "publishing join material and applying manifests"
    assert h.store.read_admin_kubeconfig() is None
    h.finish_jobs()
    assert h.cycle() == "generation 1 is ready; join material published"
    assert h.state == "AWAIT_NODE"
    state = h.store.read_state()
    assert state.ready and state.epoch == 1
    assert h.store.read_admin_kubeconfig() == b"admin kubeconfig"
    assert h.store.read_join_material().epoch == 1
    assert h.events("api_ready") and h.events("leader_ready")


def test_leader_lets_joiners_in_only_once_the_api_servers_of_the_generation_before_stopped(tmp_path: Path) -> None:
    # After ek8s reset, control1's API server (the old CA) still answers until its reset
    # stops it; control2's does not answer at all (no proof of anything: not waited for).
    h = Harness(tmp_path)
    for n, address in (("control0", "10.0.0.20"), ("control1", "10.0.0.21"), ("control2", "10.0.0.22")):
        h.store.register_member(MemberRecord(n, address, f"https://{address}:9999", f"boot-{n}", 1))
    h.probes.other_ca = {"10.0.0.20", "10.0.0.21"}  # my own address is never asked about
    lead_to_publish(h)
    h.probes.api = True
    waiting = (
        "waiting for the API servers on control1 (another CA: the generation before) to stop before joiners are let in"
    )
    assert h.cycle() == f"{waiting} (0s of 30s)"
    assert h.events("api_ready") and not h.events("leader_ready")
    h.clock.advance(3)
    assert h.cycle() == f"{waiting} (3s of 30s)"
    h.probes.other_ca = {"10.0.0.20"}
    assert h.cycle() == "the API answers behind the VIP; publishing join material and applying manifests"
    h.finish_jobs()
    assert h.cycle() == "generation 1 is ready; join material published"
    assert len(h.events("api_ready")) == 1


def test_leader_publishes_after_a_bounded_wait_for_api_servers_of_another_ca(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.store.register_member(MemberRecord("control1", "10.0.0.21", "https://10.0.0.21:9999", "boot-control1", 1))
    h.probes.other_ca = {"10.0.0.21"}  # never stops (a node whose reset hangs): joins retry
    lead_to_publish(h)
    h.probes.api = True
    assert h.cycle().startswith("waiting for the API servers on control1")
    h.clock.advance(OTHER_API_WAIT_S)
    assert h.cycle() == "the API answers behind the VIP; publishing join material and applying manifests"
    h.finish_jobs()
    assert h.cycle() == "generation 1 is ready; join material published"


def test_leader_waits_for_host_preparation_before_init(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.agent.host_prepared.clear()
    h.cycle()
    assert h.cycle() == "waiting for the host preparation (image import) before kubeadm init"
    h.agent.host_prepared.set()
    assert h.cycle() == "running kubeadm init"


def test_failed_init_resets_backs_off_and_elects_again(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.driver.fail.add("init")
    h.cycle()
    h.cycle()
    h.finish_jobs()
    assert h.cycle() == (
        "init failed (1/3): kubeadm init exited 1: emulated init failure; resetting, electing again in 2s"
    )
    assert h.state == "RESET" and h.events("init_failed")
    assert h.cycle() == "kubeadm reset is running"
    h.finish_jobs()
    assert h.cycle() == "backing off before elect"
    h.clock.advance(2)
    assert h.cycle() == "reset done; elect again"
    again = "I still hold epoch 1 (my init failed or my agent restarted); claiming again"
    assert h.cycle() == f"I lead generation 1 with epoch 2: {again}"
    assert h.driver.calls == ["init", "reset"]


def test_init_that_keeps_failing_gives_up(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.driver.fail.add("init")
    for n in (1, 2):
        h.cycle()  # elect
        h.cycle()  # start init
        h.finish_jobs()
        assert h.cycle().startswith(f"init failed ({n}/3)")
        h.finish_jobs()
        h.clock.advance(10)
        h.cycle()  # reset done
    h.cycle()
    h.cycle()
    h.finish_jobs()
    assert h.cycle() == "giving up: init failed 3 times: kubeadm init exited 1: emulated init failure"
    assert h.state == "FAILED"


def test_api_that_never_answers_after_init_fails_the_init(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    lead_to_publish(h)
    h.clock.advance(API_UP_S + 1)
    assert h.cycle().startswith("init failed (1/3): the API did not answer behind the VIP within 120s")


def test_deposed_leader_aborts_init_resets_and_writes_nothing(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.cycle()
    h.cycle()  # kubeadm init running
    other = ShareStore(h.cfg.share.path, "default", "control1")
    age_heartbeat(other, "control0", 31)
    _, action, _ = other.attempt_leadership("10.0.0.22", "boot-control1", rule_for("control", "control1", "x", 30))
    assert action == "lead"
    assert h.cycle() == "deposed (the share records epoch 2); resetting and following the new leader"
    assert h.driver.aborted == 1 and h.state == "RESET" and h.events("deposed")


def test_leader_deposed_while_publishing_writes_no_kubeconfig(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    lead_to_publish(h)
    h.probes.api = True
    h.cycle()  # publish job submitted, not run yet
    other = ShareStore(h.cfg.share.path, "default", "control1")
    age_heartbeat(other, "control0", 31)
    other.attempt_leadership("10.0.0.22", "boot-control1", rule_for("control", "control1", "x", 30))
    h.finish_jobs()  # the job runs against the new claim: its first fenced write refuses
    assert h.cycle().startswith("deposed (the share records epoch 2)")
    assert h.store.read_admin_kubeconfig() is None
    assert not h.store.read_state().ready


# -- JOIN -----------------------------------------------------------------------------------


def test_join_waits_for_a_live_api_then_joins(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "worker0", role="worker")
    h.cycle()
    assert h.cycle() == "the API of generation 1 does not answer behind 10.0.0.99:8443 before joining (grace 60s)"
    h.probes.api = True
    assert h.cycle() == "running kubeadm join as worker (attempt 1/3)"
    assert h.cycle() == "kubeadm join is running (attempt 1)"
    h.finish_jobs()
    assert h.cycle() == "kubeadm join succeeded"
    assert h.state == "AWAIT_NODE" and h.events("join_started") and h.events("joined")
    assert h.probes.posts == [], "a node that never belonged to this generation skips the prune"


def test_a_first_join_of_a_restored_generation_prunes(tmp_path: Path) -> None:
    store = ready_generation(tmp_path / "share")
    snapshot = tmp_path / "share/default/snapshots/gen1-1.db"
    new = store.start_generation("every node rebooted", expected=1, restore_from=snapshot)
    assert new is not None
    state, action, _ = store.attempt_leadership("10.0.0.21", "boot-control0b", rule_for("control", "control0", "b", 30))
    fence = state.claim()
    assert action == "lead" and fence is not None
    store.publish_join_material(fence, material(fence.generation, fence.epoch))
    store.mark_ready(fence)
    h = Harness(tmp_path, "worker0", role="worker")
    ShareStore(h.cfg.share.path, "default", "control0").register_member(
        MemberRecord("control0", "10.0.0.21", "https://10.0.0.21:9999", "boot-control0b", 2)
    )
    h.probes.api = True
    h.cycle()
    # Its Node, restored from the snapshot, reads Ready for 40 s: kubeadm join would refuse it.
    assert h.cycle() == "asking the control nodes to prune my stale state"


def test_control_plane_joins_one_at_a_time(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    first, second = Harness(tmp_path, "control1"), Harness(tmp_path, "control2")
    for h in (first, second):
        h.probes.api = True
        h.cycle()
    assert first.cycle() == "running kubeadm join as control (attempt 1/3)"
    assert second.cycle() == "control1 is joining the control plane; waiting for my turn"
    first.finish_jobs()
    first.cycle()
    assert second.cycle() == "running kubeadm join as control (attempt 1/3)"


def test_workers_join_k_at_a_time_and_a_waiting_worker_does_not_probe_the_api(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    workers = [Harness(tmp_path, f"worker{i}", role="worker", kubernetes__worker_join_concurrency=2) for i in range(3)]
    for h in workers:
        h.probes.api = True
        h.cycle()
    first, second, third = workers
    assert first.cycle() == "running kubeadm join as worker (attempt 1/3)"
    assert second.cycle() == "running kubeadm join as worker (attempt 1/3)"
    third.probes.api = False  # a probe would answer "does not answer behind the VIP"
    assert third.cycle() == (
        "all 2 worker join slots are taken (2 workers joining; the admission window allows 2, at most 2); "
        "waiting for one"
    )
    first.finish_jobs()
    assert first.cycle() == "kubeadm join succeeded"
    assert third.cycle().startswith("all 2 worker join slots are taken"), "the slot is held until the Node is Ready"
    first.probes.node = True
    assert first.cycle() == "node worker0 is Ready"
    third.probes.api = True
    assert third.cycle() == "running kubeadm join as worker (attempt 1/3)"


def test_a_failed_worker_join_gives_its_slot_back(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "worker0", role="worker", kubernetes__worker_join_concurrency=1)
    other = Harness(tmp_path, "worker1", role="worker", kubernetes__worker_join_concurrency=1)
    for w in (h, other):
        w.probes.api = True
        w.cycle()
    h.driver.fail.add("join")
    assert h.cycle() == "running kubeadm join as worker (attempt 1/3)"
    assert other.cycle().startswith("all 1 worker join slots are taken")
    h.finish_jobs()
    assert h.cycle().startswith("join attempt 1/3 failed")
    assert other.cycle() == "running kubeadm join as worker (attempt 1/3)"


def test_a_node_the_published_inventory_does_not_list_never_joins(tmp_path: Path) -> None:
    """A node.yaml of another cluster (or a machine given another's name) is refused before
    kubeadm runs: the join fails, is retried, and gives up; nothing joined."""
    from core.records import InventoryNode, PublishedInventory

    store = ready_generation(tmp_path / "share")
    listed = {"worker1": InventoryNode(role="worker", address="10.0.0.42")}
    store.publish_inventory(PublishedInventory("default", listed, "alice", 1.0))
    h = Harness(tmp_path, "worker0", role="worker", timeouts__join_attempts=1)
    h.probes.api = True
    h.cycle()
    assert h.cycle() == "running kubeadm join as worker (attempt 1/1)"
    h.finish_jobs()
    assert h.cycle() == (
        "giving up: join failed 1 times: refusing to join: worker0 (10.0.0.41) is not a node of cluster default: "
        "the inventory published by alice does not list it (a node.yaml of another cluster?)"
    )
    assert "join" not in h.driver.calls, "kubeadm join never ran"


def test_rejoin_prunes_and_a_failed_join_retries_after_reset(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    before = Harness(tmp_path, "worker0", role="worker")
    before.store.heartbeat("old-boot", "worker", "watch", 1)  # this node was part of generation 1
    h = Harness(tmp_path, "worker0", role="worker")
    ShareStore(h.cfg.share.path, "default", "control0").register_member(
        MemberRecord("control0", "10.0.0.21", "https://10.0.0.21:9999", "boot-control0", 1)
    )
    h.probes.api = True
    h.driver.fail.add("join")
    h.cycle()
    assert h.cycle() == "asking the control nodes to prune my stale state"
    h.finish_jobs()
    assert h.cycle() == "running kubeadm join as worker (attempt 1/3)"
    h.finish_jobs()
    failed = "join attempt 1/3 failed: kubeadm join exited 1: emulated join failure; resetting, retrying in 2s"
    assert h.cycle() == failed
    asked = {path: body for _, path, body in h.probes.posts}
    # A worker asks for its prune only: its credential cannot ask for join material.
    assert asked == {"/v1/prune": {"name": "worker0", "address": "10.0.0.41", "boot_id": "boot-worker0"}}
    assert h.probes.tokens == [h.store.read_credential("worker")], "with the worker credential"
    assert h.events("pruned") and h.events("join_failed")
    h.finish_jobs()
    h.clock.advance(2)
    assert h.cycle() == "reset done; join again"
    h.driver.fail.clear()
    assert h.cycle() == "asking the control nodes to prune my stale state"
    h.finish_jobs()
    assert h.cycle() == "running kubeadm join as worker (attempt 2/3)"
    assert [p[1] for p in h.probes.posts].count("/v1/prune") == 2, "every retry prunes again"


# -- AWAIT_NODE, WATCH, LOST ------------------------------------------------------------------


def joined_worker(tmp_path: Path) -> Harness:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "worker0", role="worker")
    h.probes.api = True
    h.cycle()
    h.cycle()
    h.finish_jobs()
    h.cycle()
    assert h.state == "AWAIT_NODE"
    return h


def test_node_ready_enters_watch(tmp_path: Path) -> None:
    h = joined_worker(tmp_path)
    assert h.cycle() == "waiting for my Node worker0 to be Ready"
    h.probes.node = True
    assert h.cycle() == "node worker0 is Ready"
    assert h.state == "WATCH" and h.events("node_ready")
    assert h.cycle() == "no action: generation 1 is healthy"


def test_node_never_ready_counts_as_a_failed_join(tmp_path: Path) -> None:
    h = joined_worker(tmp_path)
    h.clock.advance(h.cfg.timeouts.node_ready_s + 1)
    assert h.cycle().startswith("join attempt 1/3 failed: my Node was not Ready within 300s")


def test_new_generation_resets_and_elects(tmp_path: Path) -> None:
    h = joined_worker(tmp_path)
    h.probes.node = True
    h.cycle()
    ShareStore(h.cfg.share.path, "default", "operator").rebuild("ek8s reset by the operator")
    # A healthy watching worker re-reads cluster.json every worker_share_interval_s (30 s).
    assert h.cycle() == "no action: generation 1 is healthy"
    h.clock.advance(30)
    assert h.cycle() == "generation 2 replaced 1; resetting to follow it"
    assert h.state == "RESET" and h.events("generation_changed")
    h.finish_jobs()
    assert h.driver.whole_cluster_resets == 1, "the old cluster is torn down whole: no member removal"
    assert h.cycle() == "reset done; elect again"
    assert h.cycle() == "following: no leader yet; workers never lead"
    assert h.driver.calls[-1] == "reset"


def test_new_generation_before_joining_needs_no_reset(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "worker0", role="worker")
    h.cycle()
    ShareStore(h.cfg.share.path, "default", "operator").rebuild("reset")
    assert h.cycle() == "generation 2 replaced 1; running the election again"
    assert h.state == "ELECT" and "reset" not in h.driver.calls


def watching_control(tmp_path: Path, **settings: object) -> Harness:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "control1", **settings)
    h.probes.api = h.probes.node = True
    h.cycle()
    h.cycle()
    h.finish_jobs()
    h.cycle()
    h.cycle()
    assert h.state == "WATCH"
    return h


def test_workers_never_declare_the_cluster_lost(tmp_path: Path) -> None:
    h = joined_worker(tmp_path)
    h.probes.node = True
    h.cycle()
    h.probes.api = False
    h.cycle()
    h.clock.advance(600)
    assert h.cycle().startswith("the API of generation 1 does not answer")
    assert h.store.read_state().generation == 1


def test_dead_phylactery_is_started_again(tmp_path: Path) -> None:
    h = watching_control(tmp_path)
    h.services.running.discard("phylactery")
    h.cycle()
    assert h.services.started == ["phylactery", "phylactery"] and h.events("phylactery_restarted")


# -- stopping ---------------------------------------------------------------------------------


def test_sigterm_during_init_aborts_and_releases_the_claim(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.cycle()
    h.cycle()  # kubeadm init running
    h.agent.shutdown("SIGTERM")
    assert h.state == "STOPPED" and h.driver.aborted == 1
    state = h.store.read_state()
    assert state.leader is None and "control0 stopped (SIGTERM) before its generation was ready" in state.reason
    assert h.events("stopped")
    # Another control node leads at once instead of waiting out the lease.
    assert Harness(tmp_path, "control1").cycle().startswith("I lead generation 1 with epoch 2")


def test_sigterm_while_waiting_for_the_join_slot_releases_it(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "control1")
    h.probes.api = True
    h.cycle()
    h.cycle()  # holds the join slot, join running
    h.agent.shutdown("SIGTERM")
    other = ShareStore(h.cfg.share.path, "default", "control2")
    assert other.try_join_slot("boot-control2", 30) is None, "the slot was released"


@pytest.mark.timeout(30)
def test_run_returns_0_when_stopped(tmp_path: Path) -> None:
    h = Harness(tmp_path, "worker0", role="worker")
    codes: list[int] = []
    t = threading.Thread(target=lambda: codes.append(h.agent.run()))
    t.start()
    h.agent.stop()
    t.join(10)
    assert codes == [0] and h.state == "STOPPED"


# -- the transitions into FAILED and LOST from every state that has them ---------------------


def test_publish_that_fails_counts_as_a_failed_init(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    lead_to_publish(h)
    h.probes.api = True
    h.cycle()
    (h.store.dir / "join.json").mkdir()  # the share refuses the write: rename over a directory
    h.finish_jobs()
    assert h.cycle().startswith("init failed (1/3): publishing failed: ")
    assert h.state == "RESET" and not h.store.read_state().ready


def test_phylactery_that_never_serves_fails_the_init(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.probes.phylactery = False
    lead_to_publish(h)
    h.clock.advance(61)
    assert h.cycle() == (
        "init failed (1/3): Phylactery did not serve /healthz within 60s; resetting, electing again in 2s"
    )


def test_join_that_keeps_failing_gives_up(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "worker0", role="worker")
    ShareStore(h.cfg.share.path, "default", "control0").register_member(
        MemberRecord("control0", "10.0.0.21", "https://10.0.0.21:9999", "boot-control0", 1)
    )
    h.probes.api = True
    h.driver.fail.add("join")
    h.cycle()
    for attempt in (1, 2, 3):
        if attempt > 1:  # a retry prunes first
            assert h.cycle().startswith("asking the control nodes to prune")
            h.finish_jobs()
        assert h.cycle() == f"running kubeadm join as worker (attempt {attempt}/3)"
        h.finish_jobs()
        sentence = h.cycle()
        if attempt < 3:
            assert sentence.startswith(f"join attempt {attempt}/3 failed")
            h.finish_jobs()
            h.clock.advance(2 * attempt)
            assert h.cycle() == "reset done; join again"
    assert sentence == "giving up: join failed 3 times: kubeadm join exited 1: emulated join failure"
    assert h.state == "FAILED"


def test_leader_whose_node_is_never_ready_keeps_its_control_plane(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    lead_to_publish(h)
    h.probes.api = True
    h.cycle()
    h.finish_jobs()
    h.cycle()
    assert h.state == "AWAIT_NODE"
    h.clock.advance(h.cfg.timeouts.node_ready_s + 1)
    assert h.cycle() == (
        "my Node was not Ready within 300s; my control plane serves generation 1, so I keep it and wait"
    )
    assert h.state == "AWAIT_NODE" and "reset" not in h.driver.calls


@pytest.mark.timeout(30)
def test_run_returns_1_when_every_attempt_failed(tmp_path: Path) -> None:
    h = Harness(tmp_path, "worker0", role="worker", timeouts__join_attempts=1)
    h.agent.state = h.agent.state.FAILED
    assert h.agent.run() == 1 and h.state == "STOPPED"


# -- recovery: keep the data (core/recovery.py, docs/recovery.md) ----------------------------


def rebooted(tmp_path: Path, name: str) -> None:
    """``name`` is back with a new boot (its RAM root, and its etcd data, are gone)."""
    ShareStore(tmp_path / "share", "default", name).heartbeat(f"new-boot-{name}", "control", "join", 1)


def incarnation(tmp_path: Path, name: str) -> None:
    """``name`` joined etcd in generation 1 in its boot ``boot-<name>``, and heartbeats from it."""
    store = ShareStore(tmp_path / "share", "default", name)
    store.record_incarnation(f"boot-{name}", 1)
    store.heartbeat(f"boot-{name}", "control", "watch", 1)


def test_rebooted_control_node_waits_while_a_survivor_holds_the_data(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")  # control0 led, joined etcd and still heartbeats
    h = Harness(tmp_path, "control1")
    h.cycle()
    h.clock.advance(600)  # far past the grace period
    assert h.cycle().endswith("control0 still hold etcd data: waiting for etcd to be re-formed")
    assert h.store.read_state().generation == 1, "no new generation while a survivor holds data"


def test_survivor_reforms_etcd_when_a_majority_rebooted(tmp_path: Path) -> None:
    h = watching_control(tmp_path)  # control1, with control0 (the leader) and control2 members
    incarnation(tmp_path, "control2")
    rebooted(tmp_path, "control0")
    rebooted(tmp_path, "control2")
    h.probes.api = False
    h.probes.etcd = LocalView(members=(), member_id=1, raft_index=42, quorum=False)
    assert h.cycle() == (
        "etcd lost quorum (control0, control2 lost their data); re-forming etcd from my data "
        "(raft index 42) as a one-member cluster; generation 1 stays"
    )
    assert h.events("etcd_reform_started") and h.agent.etcd_index == 42
    assert h.cycle() == "re-forming etcd from my data"
    h.finish_jobs()
    assert h.cycle() == "etcd re-formed from my data in 0.0s; the other control nodes rejoin"
    assert "reform" in h.driver.calls and h.events("etcd_reformed")
    assert h.store.read_state().generation == 1 and h.agent.etcd_index is None


def test_survivor_does_not_reform_while_a_majority_may_come_back(tmp_path: Path) -> None:
    h = watching_control(tmp_path)
    incarnation(tmp_path, "control2")
    rebooted(tmp_path, "control0")  # one of three lost: the other two keep quorum
    h.probes.api = False
    h.probes.etcd = LocalView(members=(), member_id=1, raft_index=42, quorum=False)
    h.clock.advance(600)
    assert h.cycle().endswith("etcd lost quorum, but a majority of members may come back (control0 lost)")
    h.probes.etcd = LocalView(members=(), member_id=1, raft_index=42, quorum=True)
    assert h.cycle().endswith("etcd has quorum, the API should come back")
    assert "reform" not in h.driver.calls and h.store.read_state().generation == 1


def test_a_survivor_cut_off_from_a_silent_majority_does_not_reform_until_their_loss_is_proven(
    tmp_path: Path,
) -> None:
    """issue 19's split brain: {control1 + the share} | {control0, control2}. The two keep
    quorum and serve; the share only shows them silent. Re-forming here would make a second
    cluster that accepts writes."""
    h = watching_control(tmp_path)  # control1, with control0 (the leader) and control2 members
    incarnation(tmp_path, "control2")
    for name in ("control0", "control2"):
        age_heartbeat(h.store, name, 31)
    h.probes.api = False
    h.probes.etcd = LocalView(members=(), member_id=2, raft_index=42, quorum=False)
    h.clock.advance(600)
    said = h.cycle()
    assert said == (
        "the API of generation 1 does not answer behind 10.0.0.99:8443 while watching; etcd lost quorum; "
        "control1 holds its etcd data; control0, control2 silent past the lease, not proven gone: may be "
        "partitioned and serving; proof needed: a new boot, a fence, or 'ek8s recover --accept-loss-of "
        "control0,control2': waiting, not acting on silence"
    )
    for _ in range(3):
        h.clock.advance(30)
        assert h.cycle() == said
    assert "reform" not in h.driver.calls and not h.events("etcd_reform_started")
    accept_loss(tmp_path, "control0")
    accept_loss(tmp_path, "control2", by="bob")
    assert h.cycle() == (
        "etcd lost quorum (control0, control2 lost their data); re-forming etcd from my data "
        "(raft index 42) as a one-member cluster; generation 1 stays"
    )


def test_a_node_whose_loss_was_accepted_while_it_runs_resets(tmp_path: Path) -> None:
    """It must never serve its old data again (the survivors re-formed without it)."""
    h = watching_control(tmp_path)
    h.store.record_incarnation("boot-control1", 1)
    accept_loss(tmp_path, "control1")
    h.probes.api = False
    assert h.cycle() == (
        "my etcd member's data was declared lost (control1 loss accepted by alice) while this node runs: it must "
        "not serve its old data; resetting and rejoining"
    )
    assert h.state == "RESET" and h.events("member_removed")


def test_a_proof_about_an_earlier_boot_does_not_reset_this_boots_member(tmp_path: Path) -> None:
    """A loss proof covers the incarnation it names: an operator's acceptance of control1's
    member in an earlier boot says nothing of the member this boot runs, so an API blip must
    not reset it (that would throw away etcd data nothing proved lost)."""
    h = watching_control(tmp_path)
    h.store.record_incarnation("earlier-boot-control1", 1)
    accept_loss(tmp_path, "control1")
    h.probes.api = False
    said = h.cycle()
    assert "declared lost" not in said and h.state == "WATCH", said
    assert not h.events("member_removed") and "reset" not in h.driver.calls


def test_only_the_survivor_with_the_most_recent_data_reforms(tmp_path: Path) -> None:
    h = watching_control(tmp_path)  # control1
    for name in ("control2", "control3", "control4"):
        incarnation(tmp_path, name)
    for name in ("control0", "control3", "control4"):
        rebooted(tmp_path, name)
    h.probes.api = False
    h.probes.etcd = LocalView(members=(), member_id=1, raft_index=42, quorum=False)
    assert h.cycle().endswith("waiting for every survivor (control1, control2) to report its etcd data")
    ShareStore(tmp_path / "share", "default", "control2").heartbeat("boot-control2", "control", "watch", 1, 50)
    assert h.cycle().endswith("control2 holds the most recent etcd data and re-forms etcd")
    assert "reform" not in h.driver.calls


def accept_loss(tmp_path: Path, name: str, by: str = "alice") -> None:
    """An operator's recorded acceptance of ``name``'s loss (its current incarnation)."""
    store = ShareStore(tmp_path / "share", "default", "operator")
    i = store.incarnations()[name]
    store.record_loss(LossProof(name, i.boot_id, i.generation, i.at, "accepted", by, "ek8s recover", time.time()))


def test_a_silent_member_never_starts_a_new_generation_until_its_loss_is_proven(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    age_heartbeat(ShareStore(tmp_path / "share", "default", "x"), "control0", 31)  # silent, not proven
    h = Harness(tmp_path, "control1")
    h.cycle()
    waiting = (
        "the API of generation 1 does not answer behind 10.0.0.99:8443 before joining; control0 silent past the "
        "lease, not proven gone: may be partitioned and serving; proof needed: a new boot, a fence, or "
        "'ek8s recover --accept-loss-of control0': waiting, not acting on silence"
    )
    assert h.cycle() == waiting
    assert not h.events("recovery_waiting")
    h.clock.advance(600)  # far past the grace: still nothing acts on silence
    assert h.cycle() == waiting and h.cycle() == waiting
    [event] = h.events("recovery_waiting")  # recorded once, after the grace
    assert event["silent"] == ["control0"] and event["lost"] == [] and event["survivors"] == []
    assert h.store.read_state().generation == 1
    accept_loss(tmp_path, "control0")
    assert h.cycle() == (
        "cluster lost: generation 1 is marked ready but no API answered behind 10.0.0.99:8443 for 600s; "
        "started generation 2, starting from nothing (on_cluster_lost is 'restore' but the share holds no snapshot)"
    )
    assert h.store.read_state().generation == 2


def test_when_every_member_rebooted_the_new_generation_starts_at_once(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    rebooted(tmp_path, "control0")
    h = Harness(tmp_path, "control1")
    h.cycle()
    assert "started generation 2" in h.cycle(), "boot ids prove the data gone: no grace period"
    assert h.store.read_state().generation == 2


def test_on_cluster_lost_wait_enters_lost_until_the_api_returns(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    rebooted(tmp_path, "control0")
    h = Harness(tmp_path, "control1", on_cluster_lost="wait")
    h.cycle()
    h.cycle()
    h.clock.advance(61)
    assert h.cycle().endswith("on_cluster_lost is 'wait': waiting for 'ek8s reset'")
    assert h.state == "LOST" and h.store.read_state().generation == 1
    assert h.cycle() == "generation 1 is lost; on_cluster_lost is 'wait': waiting for 'ek8s reset'"
    h.probes.api = True
    assert h.cycle() == "the API of generation 1 answers again"
    assert h.state == "WATCH"


def test_silence_of_an_old_generation_does_not_count_in_the_new_one(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    age_heartbeat(ShareStore(tmp_path / "share", "default", "x"), "control0", 31)
    h = Harness(tmp_path, "control1")
    h.cycle()
    h.cycle()
    h.clock.advance(59)  # generation 1 silent for 59 s
    h.cycle()
    ShareStore(h.cfg.share.path, "default", "operator").rebuild("ek8s reset")
    assert h.cycle() == "generation 2 replaced 1; running the election again"
    h.clock.advance(2)
    assert "cluster lost" not in h.agent._judge_silence("while watching")


def test_a_refused_prune_stops_the_join(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    ShareStore(tmp_path / "share", "default", "worker0", role="worker").heartbeat("old-boot", "worker", "watch", 1)
    h = Harness(tmp_path, "worker0", role="worker")
    ShareStore(h.cfg.share.path, "default", "control0").register_member(
        MemberRecord("control0", "10.0.0.21", "https://10.0.0.21:9999", "boot-control0", 1)
    )
    h.probes.api = True
    h.probes.answers["/v1/prune"] = (409, {"error": "worker0 is alive in another boot"})
    h.cycle()
    h.cycle()
    h.finish_jobs()
    assert h.cycle().startswith("join attempt 1/3 failed: no Phylactery pruned my stale state:")
    assert "join" not in h.driver.calls, "no kubeadm join after a failed prune"


ME = EtcdMember(2, "control1", ("https://10.0.0.22:2380",), ("https://10.0.0.22:2379",))
OTHER = EtcdMember(1, "control0", ("https://10.0.0.21:2380",), ("https://10.0.0.21:2379",))


def peer_control0(h: Harness) -> None:
    """control0 heartbeats and its Phylactery is registered: the one to ask."""
    ShareStore(h.cfg.share.path, "default", "control0").heartbeat("boot-control0", "control", "watch", 1)
    h.store.register_member(MemberRecord("control0", "10.0.0.21", "https://10.0.0.21:9999", "boot-control0", 1))


def test_member_removed_behind_the_nodes_back_resets_and_rejoins_pruned(tmp_path: Path) -> None:
    h = watching_control(tmp_path)
    peer_control0(h)
    h.probes.etcd = LocalView(members=(OTHER, ME), member_id=2, raft_index=9, quorum=True)
    h.clock.advance(5)
    assert h.cycle() == "no action: generation 1 is healthy"
    assert h.probes.quorum_asked == [], "a member that lists itself costs no question to the others"
    h.probes.etcd = None  # a removed member's etcd stops (etcd: "the member has been permanently removed")
    h.probes.quorum = ["control0"]  # the quorum's linearizable list lacks it
    h.clock.advance(5)
    assert h.cycle() == (
        "my etcd member does not answer, and a quorum's member list (asked through another member) lacks it: "
        "it was removed; resetting and rejoining"
    )
    assert h.probes.quorum_asked == [["https://10.0.0.21:9999"]], "asked through the other member, not mine"
    assert h.state == "RESET" and h.events("member_removed")
    h.finish_jobs()
    h.clock.advance(1)
    assert h.cycle() == "reset done; join again"
    assert h.cycle() == "asking the other control nodes to prune my stale state and renew the join material"


@pytest.mark.parametrize("quorum", [None, ["control0", "control1"]], ids=["no-quorum-answer", "quorum-lists-me"])
def test_a_slow_local_etcd_is_no_proof_the_member_was_removed(tmp_path: Path, quorum: list[str] | None) -> None:
    """Today two 2 s timeouts of the local etcd reset a live member after ~6 s, throwing its
    data away. Only a quorum's member list that lacks it proves the member removed."""
    h = watching_control(tmp_path)
    peer_control0(h)
    h.probes.etcd = LocalView(members=(OTHER, ME), member_id=2, raft_index=9, quorum=True)
    h.clock.advance(5)
    h.cycle()
    h.probes.etcd, h.probes.quorum = None, quorum  # the local etcd times out
    for _ in range(6):
        h.clock.advance(5)
        assert h.cycle() == "no action: generation 1 is healthy"
    assert h.state == "WATCH" and "reset" not in h.driver.calls and not h.events("member_removed")
    assert h.probes.quorum_asked == [["https://10.0.0.21:9999"]] * 6, "asked the others at each check"


def test_an_agent_restarted_within_the_boot_resumes_without_a_reset(tmp_path: Path) -> None:
    first = joined_worker(tmp_path)
    first.probes.node = True
    first.cycle()
    assert first.state == "WATCH"
    first.agent.shutdown("SIGTERM")  # systemctl restart ek8s-node: same boot id
    h = Harness(tmp_path, "worker0", role="worker")
    h.driver.joined, h.probes.api, h.probes.node = True, True, True
    assert h.cycle() == (
        "restarted within the same boot: this node serves generation 1 (Node Ready); resuming without a reset"
    )
    assert h.state == "WATCH" and h.events("resumed") and h.driver.calls == []

    # A control node resumes only while its etcd member is listed; otherwise the normal path.
    store = ShareStore(tmp_path / "share", "default", "control1")
    store.heartbeat("boot-control1", "control", "watch", 1)
    c = Harness(tmp_path, "control1")
    c.driver.joined, c.probes.api, c.probes.node = True, True, True
    c.probes.etcd = LocalView(members=(), member_id=2, raft_index=9, quorum=True)
    assert not c.cycle().startswith("restarted within the same boot")
    store.heartbeat("boot-control1", "control", "watch", 1)
    c2 = Harness(tmp_path, "control1")
    c2.driver.joined, c2.probes.api, c2.probes.node = True, True, True
    c2.probes.etcd = LocalView(members=(ME,), member_id=2, raft_index=9, quorum=True)
    assert c2.cycle().endswith("(its etcd member answers and is listed); resuming without a reset")


def test_a_control_node_resuming_during_an_api_blip_keeps_its_member(tmp_path: Path) -> None:
    """Today one API blip during the resume sends the node down the join path: a prune, a 409
    (its member answers), a failed join and a reset that throws the etcd data away."""
    ready_generation(tmp_path / "share")
    ShareStore(tmp_path / "share", "default", "control1").heartbeat("boot-control1", "control", "watch", 1)
    h = Harness(tmp_path, "control1")
    h.store.register_member(MemberRecord("control0", "10.0.0.21", "https://10.0.0.21:9999", "boot-control0", 1))
    h.driver.joined, h.probes.api, h.probes.node = True, False, None  # the API blips
    h.probes.etcd = LocalView(members=(OTHER, ME), member_id=2, raft_index=9, quorum=True)
    h.probes.answers["/v1/prune"] = (409, {"error": "the etcd member of control1 answers"})
    assert h.cycle() == (
        "restarted within the same boot: this node serves generation 1 (its etcd member answers and is listed; "
        "the API does not answer behind the VIP now); resuming without a reset"
    )
    h.probes.api = h.probes.node = True
    for _ in range(4):
        h.clock.advance(5)
        h.cycle()
        h.finish_jobs()
    assert h.state == "WATCH" and h.driver.calls == []
    assert not [p for p in h.probes.posts if p[1] == "/v1/prune"], "no prune of a node whose member answers"


def test_a_rebooted_node_does_not_resume(tmp_path: Path) -> None:
    first = joined_worker(tmp_path)
    first.probes.node = True
    first.cycle()
    first.store.heartbeat("an-earlier-boot", "worker", "watch", 1)  # the node rebooted since
    h = Harness(tmp_path, "worker0", role="worker")
    h.driver.joined, h.probes.api, h.probes.node = True, True, True
    assert h.cycle().startswith("joining: generation 1 is ready")


def test_a_driver_that_cannot_restore_waits_for_ek8s_reset_instead(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    rebooted(tmp_path, "control0")
    h = Harness(tmp_path, "control1")
    h.driver.restores_snapshots = False  # k3s
    h.driver.name = "k3s"
    h.cycle()
    assert h.cycle().endswith(
        "on_cluster_lost is 'restore' but k3s cannot restore a snapshot into a new generation: waiting for 'ek8s reset'"
    )
    assert h.state == "LOST" and h.store.read_state().generation == 1 and h.events("cluster_lost")


def test_k3s_restores_only_a_snapshot_with_its_token_and_leads_with_that_token(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    store = ShareStore(tmp_path / "share", "default", "control0")
    store.save_snapshot(1, b"with its token", keep=5, revision=100, cluster_id=1, secret="old-server-secret")
    time.sleep(0.002)
    store.save_snapshot(
        1, b"newer, without a token (taken before tokens were kept)", keep=5, revision=101, cluster_id=1
    )
    rebooted(tmp_path, "control0")
    h = Harness(tmp_path, "control1")
    h.driver.name, h.driver.restore_needs_secret = "k3s", True
    h.cycle()
    sentence = h.cycle()
    assert "started generation 2, restoring etcd from gen1-" in sentence, sentence
    restore_from = h.store.read_state().restore_from
    assert restore_from is not None and h.store.snapshot_secret(Path(restore_from)) == "old-server-secret"
    for _ in range(6):
        if h.cycle().startswith("running k3s init"):
            break
    assert h.driver.restore_secret == "old-server-secret", "the restoring leader reuses the snapshot's token"
