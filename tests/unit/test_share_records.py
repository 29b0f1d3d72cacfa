"""Tolerant records: every share file a reader parses survives unknown keys (a newer writer),
and a wrong shape (``[]``, a cut-short file, a key of the wrong type) becomes one
``invalid_record`` event naming the node, the file and the field, and a skip, never an
exception that ends a loop. The writers' bytes stay what they were (the share protocol)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.records import InvalidRecord, event_line, parse
from core.share import ClusterState, ShareError, ShareStore
from leader.election import rule_for
from tests.unit.agent_fakes import material

RAISES = object()  # the reader raises ShareError: its caller skips its turn


def formed(tmp: Path) -> ShareStore:
    """A share where every record exists, written by the store's own verbs; returns control0's
    store (the reader in these tests)."""
    s = ShareStore(tmp, "default", "control0")
    s.ensure()
    state, _, _ = s.attempt_leadership(
        "10.0.0.21", "boot-control0", rule_for("control", "control0", "boot-control0", 30)
    )
    fence = state.claim()
    assert fence is not None
    s.publish_join_material(fence, material(1, 1))
    s.mark_ready(fence)
    c1 = ShareStore(tmp, "default", "control1")
    c1.heartbeat("boot-control1", "control", "watch", 1)
    from core.share import MemberRecord

    c1.register_member(MemberRecord("control1", "10.0.0.22", "http://10.0.0.22:9999", "boot-control1", 1))
    c1.record_incarnation("boot-control1", 1)
    assert c1.try_join_slot("boot-control1", 30) is None
    assert c1.claim_reform(1, "boot-control1", 30) is None
    w0 = ShareStore(tmp, "default", "worker0")
    assert w0.try_worker_join_slot("boot-worker0", 1, 120) is None
    return s


# file -> (a field and a value of the wrong type for it, the reader, what the reader gives
# when the file is invalid)
CASES: dict[str, tuple[str, Any, Callable[[ShareStore], Any], Any]] = {
    "cluster.json": ("generation", "1a", lambda s: s.read_state().generation, RAISES),
    "heartbeats/control1": ("generation", "1a", lambda s: (s.read_heartbeat("control1") or None) and "read", None),
    "members/control1.json": (
        "address",
        '10.0.0.22\n    notify_master "/bin/sh -c id"',
        lambda s: [m.name for m in s.members()],
        [],
    ),
    "incarnations/control1.json": ("generation", "1a", lambda s: sorted(s.incarnations()), []),
    "join.json": ("ca_cert_hashes", "sha256:00", lambda s: s.read_join_material().generation, RAISES),
    "join_slot.json": ("holder.since", "soon", lambda s: s.join_slot_holder(30), None),
    "nodes/slots/worker_join_slots.json": (
        "holders.worker0.since",
        "soon",
        lambda s: s.try_worker_join_slot("b0", 1, 120),
        None,
    ),
    "reform.json": ("node", "Control1; rm -rf /", lambda s: s.claim_reform(1, "boot-control0", 30), None),
}


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d[p]
    d[leaf] = value


def read_back(s: ShareStore, reader: Callable[[ShareStore], Any]) -> Any:
    try:
        return reader(s)
    except ShareError:
        return RAISES


def invalid_events(s: ShareStore) -> list[dict[str, Any]]:
    return [e for e in s.events() if e["event"] == "invalid_record"]


@pytest.mark.parametrize("file", sorted(CASES))
def test_a_newer_writers_unknown_keys_are_ignored(tmp_path: Path, file: str) -> None:
    s = formed(tmp_path)
    reader = CASES[file][2]
    before = read_back(s, reader)
    assert before is not RAISES and before not in (None, []), "the formed share has this record"
    path = s.dir / file
    d = json.loads(path.read_text())
    d["written_by_a_newer_version"] = {"anything": [1, 2]}
    path.write_text(json.dumps(d))
    assert read_back(s, reader) == before
    assert invalid_events(s) == []


@pytest.mark.parametrize("shape", ["[]", "truncated", "wrong type"])
@pytest.mark.parametrize("file", sorted(CASES))
def test_a_wrong_shape_is_one_invalid_record_event_and_a_skip(tmp_path: Path, file: str, shape: str) -> None:
    s = formed(tmp_path)
    field, value, reader, skipped = CASES[file]
    path = s.dir / file
    text = path.read_text()
    if shape == "[]":
        path.write_text("[]")
        field = ""
    elif shape == "truncated":
        path.write_text(text[: len(text) // 2])
        field = ""
    else:
        d = json.loads(text)
        set_path(d, field, value)
        path.write_text(json.dumps(d))
    first, again = read_back(s, reader), read_back(s, reader)
    assert first == again == skipped
    [event] = invalid_events(s)  # one, however often the file is read
    assert (event["node"], event["file"], event["field"]) == ("control0", file, field)
    assert file in event["message"]


def test_the_agents_own_heartbeat_survives_a_damaged_file_and_repairs_it(tmp_path: Path) -> None:
    s = ShareStore(tmp_path, "default", "control0")
    s.ensure()
    s.heartbeat("boot-a", "control", "watch", 1)
    (s.dir / "heartbeats/control0").write_text("[]")  # after our beat: looks like another writer
    assert s.heartbeat("boot-a", "control", "watch", 1) is None
    hb = s.read_heartbeat("control0")
    assert hb is not None and hb.boot_id == "boot-a" and hb.generation == 1
    assert [e["file"] for e in invalid_events(s)] == ["heartbeats/control0"]


def test_a_heartbeat_or_member_filed_under_another_name_is_refused(tmp_path: Path) -> None:
    s = formed(tmp_path)
    forged = json.loads((s.dir / "members/control1.json").read_text())
    (s.dir / "members/control2.json").write_text(json.dumps(forged))  # control1's record as control2
    hb = json.loads((s.dir / "heartbeats/control1").read_text())
    (s.dir / "heartbeats/control2").write_text(json.dumps(hb))
    assert [m.name for m in s.members()] == ["control1"]
    assert s.read_heartbeat("control2") is None
    assert {(e["file"], e["field"]) for e in invalid_events(s)} == {
        ("members/control2.json", "name"),
        ("heartbeats/control2", "node"),
    }


def test_names_that_are_no_node_never_become_paths(tmp_path: Path) -> None:
    s = formed(tmp_path)
    (s.dir / "heartbeats/headnode,storage[01-20]").write_text("{}")
    assert s.heartbeat_names() == ["control0", "control1"]
    for name in ("../cluster.json", "a\nb", "", "x" * 64, "Control1"):
        with pytest.raises(ValueError, match="not a node name"):
            s.read_heartbeat(name)
        with pytest.raises(ValueError, match="not a node name"):
            s.remove_member(name)


def test_snapshot_companions_and_names_with_a_wrong_shape_are_skipped(tmp_path: Path) -> None:
    s = formed(tmp_path)
    old = s.save_snapshot(1, b"old", keep=5, revision=10, cluster_id=7, secret="old-secret")
    time.sleep(0.002)
    new = s.save_snapshot(1, b"new", keep=5, revision=11, cluster_id=7, secret="new-secret")
    (s.dir / "snapshots/gen1-latest.db").write_bytes(b"not ours")  # a name that is no snapshot's
    checksum = new.with_name(new.name + ".sha256")
    checksum.write_text(checksum.read_text().replace(new.name, old.name))  # names another file
    new.with_name(new.name + ".token").write_text("two\nwords")
    assert s.snapshots() == [new, old]
    assert s.newest_valid_snapshot() == old
    assert s.snapshot_secret(new) is None and s.snapshot_secret(old) == "old-secret"
    got = {(e["file"], e["field"]) for e in invalid_events(s)}
    assert got == {
        ("snapshots/gen1-latest.db", "name"),
        (f"snapshots/{new.name}.sha256", "name"),
        (f"snapshots/{new.name}.token", ""),
    }


def test_an_empty_bearer_token_is_refused_not_compared(tmp_path: Path) -> None:
    s = formed(tmp_path)
    s.token_path.write_text("\n")
    with pytest.raises(ShareError, match=r"phylactery\.token"):
        s.read_token()


def test_event_lines_keep_their_keys_and_odd_lines_are_skipped() -> None:
    line = '{"t": 1.5, "node": "control0", "generation": 2, "event": "joined", "message": "m", "attempt": 1}'
    assert event_line(line) == json.loads(line)
    for odd in ("[]", '{"t": 1', '{"t": "soon", "node": "a", "generation": 1, "event": "x"}', "7"):
        assert event_line(odd) is None


def test_cluster_json_from_a_newer_writer_and_from_an_older_one() -> None:
    newer = '{"protocol": 2, "generation": 3, "epoch": 4, "ready": true, "fencing": {"by": "warewulf"}}'
    state = ClusterState.from_json(newer)
    assert (state.generation, state.epoch, state.ready, state.leader) == (3, 4, True, None)
    assert ClusterState.from_json("{}") == ClusterState(), "missing keys take their defaults"
    with pytest.raises(InvalidRecord, match=r"cluster\.json: field 'leader\.node'"):
        parse(ClusterState, '{"leader": {"node": 7}}', "cluster.json")


def test_the_writers_bytes_are_what_they_were(tmp_path: Path) -> None:
    """The JSON on disk is the share protocol's contract (docs/share-protocol.md): keys in the
    same order, the same formatting, as the writers before validated records wrote them."""
    s = formed(tmp_path)
    expected_keys = {
        "cluster.json": (
            ["generation", "epoch", "leader", "ready", "ready_at", "reason", "updated_at", "restore_from", "protocol"],
            lambda d: json.dumps(d, indent=1) + "\n",
        ),
        "members/control1.json": (
            ["name", "address", "phylactery_url", "boot_id", "generation", "registered_at"],
            lambda d: json.dumps(d) + "\n",
        ),
        "incarnations/control1.json": (["node", "boot_id", "generation", "at"], lambda d: json.dumps(d) + "\n"),
        "join.json": (
            [
                "generation",
                "epoch",
                "api_server_endpoint",
                "token",
                "token_expires_at",
                "ca_cert_hashes",
                "certificate_key",
                "certificate_key_expires_at",
                "ca_cert",
                "published_by",
                "published_at",
            ],
            lambda d: json.dumps(d, indent=1) + "\n",
        ),
        "join_slot.json": (["holder"], json.dumps),
        "nodes/slots/worker_join_slots.json": (["holders", "window", "decreased_at"], json.dumps),
        "reform.json": (["generation", "node", "boot_id", "at"], lambda d: json.dumps(d) + "\n"),
        "heartbeats/control1": (["node", "boot_id", "role", "phase", "generation"], json.dumps),
    }
    for file, (keys, dump) in expected_keys.items():
        raw = (s.dir / file).read_text()
        d = json.loads(raw)
        assert list(d) == keys, file
        assert raw == dump(d), file
    leader = json.loads((s.dir / "cluster.json").read_text())["leader"]
    assert list(leader) == ["node", "address", "boot_id", "epoch", "claimed_at"]
    assert list(json.loads((s.dir / "join_slot.json").read_text())["holder"]) == ["node", "boot_id", "since"]
    assert list(json.loads((s.dir / "nodes/slots/worker_join_slots.json").read_text())["holders"]["worker0"]) == [
        "boot_id",
        "since",
    ]
