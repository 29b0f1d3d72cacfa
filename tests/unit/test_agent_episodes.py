"""The agent's episode records (leader/episodes.py): each starts whole and ends whole, so
nothing of one episode leaks into the next (issue 19 point 7)."""

from __future__ import annotations

from pathlib import Path

from core.etcd import EtcdMember, LocalView
from core.share import ShareStore
from leader.episodes import JoinEpisode, Silence
from tests.unit.agent_fakes import Harness, age_heartbeat, ready_generation
from tests.unit.test_agent_states import incarnation, peer_control0, rebooted, watching_control

ME = EtcdMember(2, "control1", ("https://10.0.0.22:2380",), ("https://10.0.0.22:2379",))
OTHER = EtcdMember(1, "control0", ("https://10.0.0.21:2380",), ("https://10.0.0.21:2379",))


def test_the_api_answering_again_ends_the_silence_and_its_raft_index(tmp_path: Path) -> None:
    """A survivor reports its raft index only within the silence it was read in: once the API
    answers again its heartbeats carry none and go back to the steady cadence (a stale index
    would be compared with fresh ones when survivors choose who re-forms etcd)."""
    h = watching_control(tmp_path)
    incarnation(tmp_path, "control2")
    rebooted(tmp_path, "control0")  # one of three lost: a majority may come back
    h.probes.api = False
    h.probes.etcd = LocalView(members=(), member_id=2, raft_index=42, quorum=False)
    h.clock.advance(600)
    assert h.cycle().endswith("etcd lost quorum, but a majority of members may come back (control0 lost)")
    silence = h.agent.silence
    assert isinstance(silence, Silence) and silence.etcd_index == 42 and h.agent.etcd_index == 42
    every = h.cfg.timeouts.heartbeat_interval_s
    assert h.agent.heartbeat_due(h.clock.now - every, "watch"), "fast beats while silent"
    h.probes.api = True
    h.probes.etcd = LocalView(members=(OTHER, ME), member_id=2, raft_index=50, quorum=True)
    assert h.cycle() == "no action: generation 1 is healthy"
    assert h.agent.silence is None and h.agent.etcd_index is None
    assert not h.agent.heartbeat_due(h.clock.now - every, "watch"), "steady beats once the API answers"


def test_recovery_waiting_is_recorded_once_per_silence(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")  # control0 led and joined etcd
    age_heartbeat(ShareStore(tmp_path / "share", "default", "x"), "control0", 31)  # silent, not proven gone
    h = Harness(tmp_path, "control1")
    h.cycle()
    grace = h.cfg.timeouts.cluster_lost_grace_s
    for _ in range(3):
        h.clock.advance(grace)
        h.cycle()
    assert h.state == "JOIN" and len(h.events("recovery_waiting")) == 1
    h.probes.api = True
    h.agent._api_alive()  # the API answers: this silence ends
    assert h.agent.silence is None
    h.probes.api = False
    h.cycle()  # a new silence starts
    h.clock.advance(grace)
    h.cycle()
    assert len(h.events("recovery_waiting")) == 2, "the next silence reports again"


def test_a_new_generations_join_does_not_inherit_the_last_episodes_prune(tmp_path: Path) -> None:
    """A rejoin after the etcd member was removed prunes first; when a new generation comes
    before that rejoin ran, the join into it is a new episode: a first join that leaves nothing
    behind to prune."""
    h = watching_control(tmp_path)
    peer_control0(h)
    h.probes.etcd = None
    h.probes.quorum = ["control0"]  # a quorum's member list lacks this node's member
    h.clock.advance(5)
    assert h.cycle().endswith("it was removed; resetting and rejoining")
    assert h.agent.join == JoinEpisode(must_prune=True)
    ShareStore(h.cfg.share.path, "default", "operator").rebuild("ek8s reset")
    ready_generation(tmp_path / "share")  # control0 leads generation 2 and makes it ready
    assert h.cycle() == "generation 2 replaced 1; resetting to follow it"
    h.finish_jobs()
    assert h.cycle() == "reset done; elect again"
    assert h.cycle().startswith("joining:")
    assert h.agent.join == JoinEpisode()
    h.probes.etcd = LocalView(members=(OTHER, ME), member_id=2, raft_index=1, quorum=True)
    assert h.cycle() == "running kubeadm join as control (attempt 1/3)"
    assert not h.events("pruned")


def test_a_node_that_joined_before_and_now_leads_keeps_its_control_plane(tmp_path: Path) -> None:
    """Leading a generation ends the join episode of the one before: a leader whose Node is
    not Ready in time keeps the control plane that serves its generation, whether or not this
    node joined an earlier generation."""
    h = watching_control(tmp_path)  # control1 joined generation 1 (attempt 1)
    ShareStore(h.cfg.share.path, "default", "operator").rebuild("ek8s reset")
    h.clock.advance(h.cfg.timeouts.watch_share_interval_s)
    assert h.cycle() == "generation 2 replaced 1; resetting to follow it"
    h.finish_jobs()
    assert h.cycle() == "reset done; elect again"
    assert h.cycle().startswith("I lead generation 2")
    assert h.cycle() == "running kubeadm init"
    h.finish_jobs()
    assert h.cycle().startswith("kubeadm init finished")
    assert h.cycle() == "the API answers behind the VIP; publishing join material and applying manifests"
    h.finish_jobs()
    assert h.cycle() == "generation 2 is ready; join material published"
    h.probes.node = False
    h.clock.advance(h.cfg.timeouts.node_ready_s + 1)
    assert h.cycle() == (
        "my Node was not Ready within 300s; my control plane serves generation 2, so I keep it and wait"
    )
    assert h.state == "AWAIT_NODE" and not h.events("join_failed")
