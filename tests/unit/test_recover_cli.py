"""`ek8s recover --accept-loss-of NODES`: the operator's proof that silent nodes are down
(docs/recovery.md, "Proof, not silence"). It asks like `ek8s reset`, records the invoking user,
refuses a node whose data is alive, and writes nothing on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import recovery
from core.share import ShareStore
from tests.unit.agent_fakes import age_heartbeat
from tests.unit.test_reset_cli import ek8s, on_a_terminal

CONTROL = ("control0", "control1", "control2")


@pytest.fixture
def share(tmp_path: Path) -> Path:
    """Generation 1 (ready) with three control members; control1 and control2 silent past
    the lease, control0 heartbeating from the boot it joined in."""
    from tests.unit.agent_fakes import ready_generation

    ready_generation(tmp_path)
    for n in CONTROL:
        s = ShareStore(tmp_path, "default", n)
        s.heartbeat(f"boot-{n}", "control", "watch", 1)
        s.record_incarnation(f"boot-{n}", 1)
    for n in ("control1", "control2"):
        age_heartbeat(ShareStore(tmp_path, "default", "x"), n, 45)
    return tmp_path


def fates(share: Path) -> dict[str, recovery.Fate]:
    return dict(recovery.assess_share(ShareStore(share, "default", "test"), 1, 30).fates)


def losses_dir(share: Path) -> Path:
    return share / "default" / "losses"


def test_without_a_terminal_it_refuses_unless_yes_and_writes_nothing(share: Path) -> None:
    res = ek8s("recover", "--share", str(share), "--accept-loss-of", "control[1-2]")
    assert res.returncode == 2 and "--yes" in res.stderr, res.stderr
    assert "control1, control2 silent past the lease, not proven gone" in res.stderr
    assert "everything its side wrote since the partition began is lost" in res.stderr
    assert not losses_dir(share).exists()
    assert fates(share)["control1"] is recovery.Fate.SILENT


def test_accepted_losses_are_recorded_with_the_user_and_prove_the_data_gone(share: Path) -> None:
    res = ek8s(
        "recover", "--share", str(share), "--accept-loss-of", "control[1-2]", "--yes", env={"SUDO_USER": "alice"}
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "cluster default: the loss of control1, control2 is recorded (by alice)\n"
    assert "then: the survivor with the most recent data (control0) re-forms etcd from it" in res.stderr
    assert fates(share) == {
        "control0": recovery.Fate.ALIVE,
        "control1": recovery.Fate.ACCEPTED,
        "control2": recovery.Fate.ACCEPTED,
    }
    a = recovery.assess_share(ShareStore(share, "default", "test"), 1, 30)
    assert a.quorum_lost and a.survivors == ["control0"] and a.proofs["control2"].by == "alice"
    [event] = [e for e in ShareStore(share, "default", "t").events() if e["event"] == "loss_accepted"]
    assert event["user"] == "alice" and event["nodes"] == ["control1", "control2"] and event["node"] == "alice"
    again = ek8s("recover", "--share", str(share), "--accept-loss-of", "control1")
    assert again.returncode == 0 and "control1: already loss accepted by alice" in again.stdout
    assert again.stdout.endswith("nothing to record\n")


def test_a_node_whose_data_is_alive_is_refused(share: Path) -> None:
    res = ek8s("recover", "--share", str(share), "--accept-loss-of", "control0,control1", "--yes")
    assert res.returncode == 1
    assert "control0 heartbeats from the boot its etcd member joined in: its data is alive" in res.stderr
    assert not losses_dir(share).exists(), "nothing written, not even control1's"


@pytest.mark.parametrize(
    ("nodes", "said"),
    [
        ("worker0", "--accept-loss-of: worker0 has no etcd member recorded in generation 1"),
        ("Control1", "--accept-loss-of: 'Control1' is not a node name"),
        ("control[1-", "--accept-loss-of: 'control[1-' is not a hostlist"),
    ],
)
def test_bad_input_exits_2_naming_the_option_and_writes_nothing(share: Path, nodes: str, said: str) -> None:
    res = ek8s("recover", "--share", str(share), "--accept-loss-of", nodes, "--yes")
    assert res.returncode == 2 and said in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not losses_dir(share).exists()


def test_on_a_terminal_it_asks_and_no_means_nothing(share: Path) -> None:
    code, out = on_a_terminal(["recover", "--share", str(share), "--accept-loss-of", "control2"], "n", {})
    assert code == 1 and "not confirmed; nothing done" in out
    assert not losses_dir(share).exists()
    code, out = on_a_terminal(["recover", "--share", str(share), "--accept-loss-of", "control2"], "y", {})
    assert code == 0, out
    assert fates(share)["control2"] is recovery.Fate.ACCEPTED and fates(share)["control1"] is recovery.Fate.SILENT


def test_status_says_what_is_proven_and_what_is_not(share: Path) -> None:
    from manager.status import attention

    store = ShareStore(share, "default", "operator")
    found = attention(store, 1, [], list(CONTROL), 0.0, events=[])
    problems = {f["problem"]: f["heals"] for f in found}
    silent = "etcd member control1: its node is silent past the lease, not proven gone (it may be serving)"
    assert silent in problems and "'ek8s recover --accept-loss-of control1'" in problems[silent]
    [unproven] = [p for p in problems if p.startswith("no majority of etcd members is alive")]
    assert "control1, control2 silent past the lease, not proven gone" in unproven
    assert "nothing acts on silence" in problems[unproven]
    assert not [p for p in problems if "data is gone" in p or p.startswith("etcd quorum lost")]
    assert ek8s("recover", "--share", str(share), "--accept-loss-of", "control[1-2]", "--yes").returncode == 0
    after = [f["problem"] for f in attention(store, 1, [], list(CONTROL), 0.0, events=[])]
    [accepted] = [p for p in after if p.startswith("etcd member control2: its node loss accepted by ")]
    assert accepted.endswith(", the data is gone")
    assert "etcd quorum lost (control1, control2 lost their data)" in after
