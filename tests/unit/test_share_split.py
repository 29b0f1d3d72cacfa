"""The share split by role (docs/share-protocol.md, "Two trees"): which tree each record lives
in, a worker's store refusing the control-only tree, and a worker's agent that opens nothing
outside ``nodes/`` through a whole join (Python's audit hooks see every open, listing, rename,
removal and time change the process makes)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.credentials import CONTROL, WORKER
from core.records import MemberRecord
from core.share import ControlTreeRefused, EventCursor, ShareStore
from leader.election import rule_for
from tests.unit.agent_fakes import Harness, material, ready_generation

# -- every path this process touches, while a test listens ---------------------------------
_TOUCHED: list[list[str]] = []
_EVENTS = {"open", "os.listdir", "os.scandir", "os.rename", "os.replace", "os.remove", "os.mkdir", "os.utime"}
_EVENTS |= {"os.chmod", "os.chown", "os.rmdir", "os.link", "os.symlink", "os.truncate", "shutil.copyfile"}


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _TOUCHED and event in _EVENTS:
        for arg in args[:2]:
            if isinstance(arg, (str, bytes, Path)):
                _TOUCHED[-1].append(str(arg if not isinstance(arg, bytes) else arg.decode(errors="replace")))


sys.addaudithook(_audit)  # cannot be removed; records only inside touched()


@contextmanager
def touched() -> Iterator[list[str]]:
    """The paths opened, listed, renamed, removed or touched inside the block."""
    _TOUCHED.append([])
    try:
        yield _TOUCHED[-1]
    finally:
        _TOUCHED.pop()


def under(paths: list[str], share: Path) -> list[str]:
    return [p for p in paths if p.startswith(str(share))]


# -- the layout -------------------------------------------------------------------------------
def test_each_record_lives_in_its_tree_and_the_workers_copies_hold_no_control_secret(tmp_path: Path) -> None:
    store = ready_generation(tmp_path)
    store.register_member(MemberRecord("control0", "10.0.0.21", "https://10.0.0.21:9999", "boot-control0", 1))
    store.save_snapshot(1, b"etcd", keep=2, secret="server-secret")
    store.record_event("boot", 1, "hello")
    d, nodes = tmp_path / "default", tmp_path / "default" / "nodes"
    for name in ("cluster.json", "join.json", "phylactery.token", "phylactery-ca.key", "leader", "leader_ready"):
        assert (d / name).is_file(), name
        assert not (nodes / name).exists() or name in ("cluster.json", "join.json"), name
    assert [p.parent.name for p in d.glob("snapshots/*.db")] == ["snapshots"]
    assert (d / "heartbeats" / "control0").is_file(), "a control node's heartbeat: control tree"
    assert not (nodes / "heartbeats" / "control0").exists()
    assert (nodes / "phylactery-worker.token").is_file() and (nodes / "phylactery-ca.crt").is_file()
    assert (nodes / "members" / "control0.json").read_text() == (d / "members" / "control0.json").read_text()
    assert json.loads((nodes / "cluster.json").read_text()) == json.loads((d / "cluster.json").read_text())
    public = json.loads((nodes / "join.json").read_text())
    full = json.loads((d / "join.json").read_text())
    assert full["certificate_key"] == "0" * 64 and full["token"] == "abcdef.0123456789abcdef"
    # The test's default: both secrets withheld (a driver names its own, below).
    assert public["certificate_key"] == "" and public["token"] == ""
    assert public["ca_cert_hashes"] == full["ca_cert_hashes"] and public["api_server_endpoint"]
    assert "nodes" not in {p.name for p in d.iterdir() if p.is_file()}
    # Nothing a worker can read holds a control-only secret.
    secrets = [store.read_credential(CONTROL), "server-secret", full["token"]]
    for path in nodes.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(s in text for s in secrets), path


@pytest.mark.parametrize(
    ("withheld", "kept", "gone"),
    [
        (("certificate_key",), "token", "certificate_key"),  # kubeadm: the bootstrap token stays
        (("token",), "certificate_key", "token"),  # k3s: the agent token stays, the server token goes
    ],
)
def test_a_drivers_control_only_field_is_left_out_of_the_workers_join_json(
    tmp_path: Path, withheld: tuple[str, ...], kept: str, gone: str
) -> None:
    from core.drivers.k3s import K3sDriver
    from core.drivers.kubeadm import KubeadmDriver

    assert KubeadmDriver.control_only_fields == ("certificate_key",)
    assert K3sDriver.control_only_fields == ("token",)
    store = ShareStore(tmp_path, "default", "control0")
    store.ensure()
    state, _, _ = store.attempt_leadership("10.0.0.21", "b0", rule_for("control", "control0", "b0", 30))
    fence = state.claim()
    assert fence is not None
    store.publish_join_material(fence, material(1, fence.epoch), withheld)
    store.mark_ready(fence)
    worker = ShareStore(tmp_path, "default", "worker0", role="worker")
    got = worker.read_join_material()
    assert getattr(got, gone) == "" and getattr(got, kept) == getattr(material(1, 1), kept)
    refreshed = replace(material(1, fence.epoch), token="zyxwvu.0123456789abcdef", certificate_key="1" * 64)
    store.refresh_join_material(refreshed, withheld)
    got = worker.read_join_material()
    assert getattr(got, gone) == "" and getattr(got, kept) == getattr(refreshed, kept)
    assert store.read_join_material() == refreshed


CONTROL_VERBS: dict[str, Callable[[ShareStore], Any]] = {
    "read_credential(control)": lambda s: s.read_credential(CONTROL),
    "read_credentials(control)": lambda s: s.read_credentials(CONTROL),
    "read_admin_kubeconfig": lambda s: s.read_admin_kubeconfig(),
    "admin_kubeconfig_path": lambda s: s.admin_kubeconfig_path,
    "read_phylactery_ca(control)": lambda s: s.read_phylactery_ca("control"),
    "read_phylactery_ca_pair": lambda s: s.read_phylactery_ca_pair(),
    "ensure_credentials": lambda s: s.ensure_credentials(),
    "rotate_credentials": lambda s: s.rotate_credentials(),
    "snapshots": lambda s: s.snapshots(),
    "newest_valid_snapshot": lambda s: s.newest_valid_snapshot(),
    "save_snapshot": lambda s: s.save_snapshot(1, b"x", keep=1),
    "incarnations": lambda s: s.incarnations(),
    "record_incarnation": lambda s: s.record_incarnation("b", 1),
    "try_join_slot": lambda s: s.try_join_slot("b", 30),
    "join_slot_holder": lambda s: s.join_slot_holder(30),
    "claim_reform": lambda s: s.claim_reform(1, "b", 30),
    "register_member": lambda s: s.register_member(MemberRecord("worker0", "10.0.0.41", "https://10.0.0.41:1", "b", 1)),
    "remove_member": lambda s: s.remove_member("control0"),
    "start_generation": lambda s: s.start_generation("x"),
    "rebuild": lambda s: s.rebuild("x"),
    "attempt_leadership(lead)": lambda s: s.attempt_leadership("10.0.0.41", "b", lambda snap: ("lead", "forced")),
}


@pytest.mark.parametrize("verb", sorted(CONTROL_VERBS))
def test_a_workers_store_refuses_every_control_tree_verb_and_touches_nothing(tmp_path: Path, verb: str) -> None:
    ready_generation(tmp_path)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    worker = ShareStore(tmp_path, "default", "worker0", role="worker")
    with touched() as paths, pytest.raises(ControlTreeRefused, match=r"control-only tree|never lead"):
        CONTROL_VERBS[verb](worker)
    assert not [p for p in under(paths, tmp_path) if not p.startswith(str(tmp_path / "default" / "nodes"))]
    assert sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before, "nothing written"


def test_a_workers_heartbeats_events_and_slots_are_in_the_node_tree_and_prove_nothing(tmp_path: Path) -> None:
    control = ready_generation(tmp_path)
    worker = ShareStore(tmp_path, "default", "worker0", role="worker")
    worker.ensure()
    worker.heartbeat("boot-w0", "worker", "join", 1)
    worker.record_event("boot", 1, "worker0 boots")
    assert worker.try_worker_join_slot("boot-w0", 1, 120) is None
    nodes = tmp_path / "default" / "nodes"
    assert (nodes / "heartbeats" / "worker0").is_file() and not (tmp_path / "default/heartbeats/worker0").exists()
    assert (nodes / "events" / "events.jsonl").is_file() and (nodes / "slots" / "worker_join_slots.json").is_file()
    # A worker writing a control node's name in the node tree makes no proof of it.
    forged = ShareStore(tmp_path, "default", "control0", role="worker")
    forged.heartbeat("forged-boot", "control", "watch", 1)
    assert control.read_heartbeat("control0") is not None
    assert control.read_heartbeat("control0").boot_id == "boot-control0"  # type: ignore[union-attr]
    assert control.heartbeats(["control0"])["control0"].boot_id == "boot-control0"  # type: ignore[union-attr]
    assert control.read_heartbeat("worker0") is None, "workers' heartbeats are not in the control tree"
    assert control.read_worker_heartbeat("worker0").boot_id == "boot-w0"  # type: ignore[union-attr]
    assert control.read_any_heartbeat("worker0").boot_id == "boot-w0"  # type: ignore[union-attr]
    assert control.read_any_heartbeat("control0").boot_id == "boot-control0"  # type: ignore[union-attr]
    assert control.heartbeat_names() == ["control0", "worker0"]
    # The control side reads both timelines; a follower's cursor follows both.
    control.record_event("leader_ready", 1, "ready")
    events, cursor = control.read_events()
    assert [e["event"] for e in events][-2:] == ["boot", "leader_ready"] or {"boot", "leader_ready"} <= {
        e["event"] for e in events
    }
    assert isinstance(cursor.nodes, EventCursor)
    worker.record_event("joined", 1, "worker0 joined")
    control.record_event("node_ready", 1, "control0 ready")
    more, _ = control.read_events(cursor)
    assert sorted(e["event"] for e in more) == ["joined", "node_ready"]
    assert [e["event"] for e in worker.events()] == ["boot", "joined"], "a worker reads the workers' timeline only"
    control.start_generation("reset")
    assert not (nodes / "slots" / "worker_join_slots.json").exists() and not (nodes / "join.json").exists()


def test_a_worker_agent_opens_nothing_outside_the_node_tree_through_a_whole_join(tmp_path: Path) -> None:
    share = tmp_path / "share"
    ready_generation(share)
    control = ShareStore(share, "default", "control0")
    control.register_member(MemberRecord("control0", "10.0.0.21", "https://10.0.0.21:9999", "boot-control0", 1))
    ShareStore(share, "default", "worker0", role="worker").heartbeat("old-boot", "worker", "watch", 1)
    with touched() as paths:
        h = Harness(tmp_path, "worker0", role="worker")
        h.probes.api = True
        sentences = [h.cycle()]
        for _ in range(8):
            h.finish_jobs()
            h.clock.advance(31)
            sentences.append(h.cycle())
    assert "asking the control nodes to prune my stale state" in sentences
    assert any(s.startswith("running kubeadm join as worker") for s in sentences), sentences
    assert h.probes.tokens and set(h.probes.tokens) == {h.store.read_credential(WORKER)}
    assert [url for url, path, _ in h.probes.posts] == ["https://10.0.0.21:9999"], "the node tree's member copy"
    assert h.driver.calls.count("join") == 1
    opened = under(paths, share)
    assert opened, "the audit hook saw the agent's share accesses"
    outside = sorted({p for p in opened if not p.startswith(str(share / "default" / "nodes"))})
    assert outside == [], f"a worker's agent opened the control-only tree: {outside}"
