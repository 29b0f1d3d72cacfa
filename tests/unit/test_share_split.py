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
    store.save_snapshot(1, b"etcd", keep=2, revision=5, cluster_id=1, secret="server-secret")
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
    "save_snapshot": lambda s: s.save_snapshot(1, b"x", keep=1, revision=1, cluster_id=1),
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


# -- migration of a share written before the split --------------------------------------------
def old_layout(share: Path, k3s: bool = False) -> Path:
    """A cluster directory as the versions before the split wrote it: every record in it."""
    d = share / "default"
    (d / "heartbeats").mkdir(parents=True, mode=0o700)
    (d / "members").mkdir(mode=0o700)
    (d / "nodes").mkdir(mode=0o700)
    (d / "cluster.json").write_text(json.dumps({"generation": 3, "epoch": 5, "ready": True, "protocol": 1}))
    m = material(3, 5)
    if k3s:
        m = replace(m, token="K10" + "a" * 64 + "::server:s3cret", certificate_key="K10" + "a" * 64 + "::node:agent")
    (d / "join.json").write_text(json.dumps(m.__dict__ | {"published_at": 1.0}))
    beat = {"boot_id": "b", "phase": "watch", "generation": 3}
    (d / "heartbeats" / "control0").write_text(json.dumps({"node": "control0", "role": "control", **beat}))
    (d / "heartbeats" / "worker0").write_text(json.dumps({"node": "worker0", "role": "worker", **beat}))
    (d / "worker_join_slots.json").write_text(json.dumps({"holders": {}}))
    (d / "members" / "control0.json").write_text(
        json.dumps(
            {
                "name": "control0",
                "address": "10.0.0.21",
                "phylactery_url": "https://10.0.0.21:9999",
                "boot_id": "b",
                "generation": 3,
            }
        )
    )
    (d / "nodes" / "phylactery-worker.token").write_text("worker-token\n")
    (d / "nodes" / "phylactery-worker.token").chmod(0o600)
    (d / "events.jsonl").write_text(
        json.dumps({"t": 1.0, "node": "worker0", "generation": 3, "event": "joined"}) + "\n"
    )
    return d


def snapshot_of(d: Path) -> dict[str, tuple[bytes, int]]:
    files = [p for p in d.rglob("*") if p.is_file() and p.suffix != ".lock"]  # a lock is no record
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


@pytest.mark.parametrize("k3s", [False, True], ids=["kubeadm", "k3s"])
def test_migration_moves_an_old_share_to_the_two_trees_once_and_loses_nothing(tmp_path: Path, k3s: bool) -> None:
    d = old_layout(tmp_path, k3s)
    before = snapshot_of(d)
    store = ShareStore(tmp_path, "default", "operator")
    planned = store.migrate_layout(dry_run=True)
    assert snapshot_of(d) == before, "a dry run writes nothing"
    moved = store.migrate_layout()
    assert moved == planned
    assert "heartbeats/worker0 -> nodes/heartbeats/worker0" in moved
    after = snapshot_of(d)
    # The worker's heartbeat moved as it was (content and mtime: its age on the share's clock).
    assert after["nodes/heartbeats/worker0"] == before["heartbeats/worker0"]
    assert "heartbeats/worker0" not in after and after["heartbeats/control0"] == before["heartbeats/control0"]
    assert after["nodes/slots/worker_join_slots.json"][0] == before["worker_join_slots.json"][0]
    for kept in ("cluster.json", "join.json", "members/control0.json", "events.jsonl"):
        assert after[kept] == before[kept], kept
    public = json.loads(after["nodes/join.json"][0])
    full = json.loads(before["join.json"][0])
    gone, stays = ("token", "certificate_key") if k3s else ("certificate_key", "token")
    assert public[gone] == "" and public[stays] == full[stays]
    assert json.loads(after["nodes/cluster.json"][0])["generation"] == 3
    assert after["nodes/members/control0.json"][0] == before["members/control0.json"][0]
    assert (d / "nodes/phylactery-worker.token").stat().st_mode & 0o777 == 0o640
    # Idempotent; a worker's store now reads everything it needs from the node tree.
    assert store.migrate_layout() == [] and snapshot_of(d) == after
    worker = ShareStore(tmp_path, "default", "worker0", role="worker")
    assert worker.read_state().generation == 3 and worker.read_credential(WORKER) == "worker-token"
    assert worker.read_heartbeat("worker0") is not None and [m.name for m in worker.members()] == ["control0"]
    assert [e["event"] for e in store.events()] == ["joined"], "the old timeline is still read"


def test_a_control_nodes_first_start_migrates_and_the_operator_command_says_what_it_moved(tmp_path: Path) -> None:
    import subprocess

    d = old_layout(tmp_path / "a")
    ShareStore(tmp_path / "a", "default", "control0").ensure()  # the agent's first start of this version
    assert (d / "nodes/heartbeats/worker0").exists() and (d / "nodes/cluster.json").exists()
    old_layout(tmp_path / "b")
    cmd = [sys.executable, "-m", "manager", "share", "migrate", "--share", str(tmp_path / "b"), "--cluster", "default"]
    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0 and "would move: heartbeats/worker0 -> nodes/heartbeats/worker0" in dry.stdout
    assert not (tmp_path / "b/default/nodes/cluster.json").exists()
    real = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert real.returncode == 0 and "moved: heartbeats/worker0 -> nodes/heartbeats/worker0" in real.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing to move" in again.stdout
    wrong = subprocess.run([*cmd[:-1], "nope"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "--cluster" in wrong.stderr and "Traceback" not in wrong.stderr


def test_one_rule_says_which_trees_a_role_mounts_for_the_exports_and_the_lab() -> None:
    from core.share import mounted_trees
    from manager import wwconf
    from manager.inventory import load_inventory

    assert mounted_trees("c", "worker") == ("c/nodes",)
    assert mounted_trees("c", "control") == ("c", "c/nodes")
    with pytest.raises(ValueError, match="no node role"):
        mounted_trees("c", "login")
    inv = load_inventory(Path(__file__).resolve().parents[2] / "warewulf_conf" / "inventory.yaml")
    for role in inv.roles:
        assert [e["file"] for e in wwconf.fstab_entries(inv, role)] == [
            str(inv.share.path / t) for t in mounted_trees(inv.cluster, role)
        ]
    control = [n.address for n in inv.expanded() if n.role == "control"]
    workers = [n.address for n in inv.expanded() if n.role == "worker"]
    text = wwconf.exports_file_text(inv)
    assert all(a in text for a in control) and not any(a in text for a in workers)
    # Warewulf's own exports (to its whole network) carry the node tree only, root squashed.
    assert [(e.path, e.export_options) for e in wwconf.warewulf_exports(inv)] == [
        (str(inv.share.path / inv.cluster / "nodes"), wwconf.NODE_EXPORT_OPTIONS)
    ]
    assert "no_root_squash" not in wwconf.NODE_EXPORT_OPTIONS and "root_squash" in wwconf.NODE_EXPORT_OPTIONS


# -- the records main added beside the split (day 2, upgrades, join admission) ----------------
def test_a_worker_announces_takes_a_slot_and_moves_the_window_in_the_node_tree_only(tmp_path: Path) -> None:
    from core.admission import Signal
    from leader.boot import announce
    from tests.unit.agent_fakes import node_config

    share = tmp_path / "share"
    ready_generation(share)
    cfg = node_config(tmp_path, "worker0", "worker")
    with touched() as paths:
        booted = announce(cfg, boot="boot-w0")
        worker = booted.store
        assert worker.role == "worker", "the boot's store is a worker's: the agent reuses it"
        assert worker.try_worker_join_slot("boot-w0", 4, 120, initial=4) is None
        before = worker.worker_join_window(4).size
        after = worker.worker_join_signal(Signal.THROTTLED, 4)
        worker.release_worker_join_slot()
        assert worker.read_inventory() is None
    assert after.size < before, "a worker's report moves the admission window"
    outside = sorted({p for p in under(paths, share) if not p.startswith(str(share / "default" / "nodes"))})
    assert outside == [], f"a worker's boot and admission opened the control-only tree: {outside}"
    slots = json.loads((share / "default/nodes/slots/worker_join_slots.json").read_text())
    assert slots["holders"] == {} and slots["window"] == after.size
    assert not (share / "default/worker_join_slots.json").exists()
    with pytest.raises(ControlTreeRefused):
        worker.read_rollout()


def test_the_inventory_has_a_node_tree_copy_and_a_removed_node_is_forgotten_in_both_trees(tmp_path: Path) -> None:
    from core.records import InventoryNode, PublishedInventory

    control = ready_generation(tmp_path)
    inv = PublishedInventory(
        cluster="default",
        nodes={"control0": InventoryNode("control", "10.0.0.21"), "worker0": InventoryNode("worker", "10.0.0.41")},
        published_by="root",
        published_at=1.0,
    )
    ShareStore(tmp_path, "default", "root").publish_inventory(inv)
    nodes = tmp_path / "default" / "nodes"
    assert (nodes / "inventory.json").stat().st_mode & 0o777 == 0o640
    worker = ShareStore(tmp_path, "default", "worker0", role="worker")
    assert worker.read_inventory() == inv == control.read_inventory()
    worker.heartbeat("boot-w0", "worker", "watch", 1)
    assert worker.try_worker_join_slot("boot-w0", 4, 120) is None
    control.register_member(MemberRecord("control0", "10.0.0.21", "https://10.0.0.21:1", "boot-control0", 1))
    assert control.read_any_heartbeat("worker0") is not None
    removed = control.forget_node("worker0")
    assert removed == ["nodes/heartbeats/worker0", "nodes/slots/worker_join_slots.json"]
    assert control.read_any_heartbeat("worker0") is None
    assert "worker0" not in json.loads((nodes / "slots/worker_join_slots.json").read_text())["holders"]
    assert "nodes/members/control0.json" in control.forget_node("control0")
    assert not (nodes / "members/control0.json").exists() and not (tmp_path / "default/members/control0.json").exists()
