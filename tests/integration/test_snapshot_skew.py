"""Clock skew does not decide which data survives (issue 19 point 4; docs/recovery.md, the
skew row): on a real 3-member etcd 3.5 with TLS, the node whose etcd member leads takes
snapshots through Phylactery's own snapshot controller (``tests/integration/snapshot_taker.py``,
one process per turn). control0's wall clock runs an hour ahead (libfaketime on its Python
process; etcd, a Go binary, and the share's mtimes keep the real time) while its member leads
for three snapshot turns; then control1, whose clock is right, leads for two. Retention (3)
keeps the correct node's fresh snapshots and drops the skewed node's oldest data, and a
full-loss restore (every member killed, ``etcdutl snapshot restore`` of the snapshot the share
chooses) brings back the newest data: every key written before the last snapshot, with its
last value."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.etcd import EtcdClient, kubeadm_client_context
from core.records import snapshot_name
from core.share import ShareStore
from lab.emulation import etcd_tool
from lab.nodekit import etcd_argv
from leader.election import rule_for
from tests.conftest import free_port, wait_for
from tests.integration.conftest import ETCD, EtcdCluster

REPO = Path(__file__).resolve().parents[2]
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")  # Debian's libfaketime
HOUR_S = 3600
KEEP = 3
PREFIX = "/registry/configmaps/default/"


def status(cluster: EtcdCluster, i: int) -> dict:  # type: ignore[type-arg]
    async def _status() -> dict:  # type: ignore[type-arg]
        async with cluster.client(i) as c:
            return await c.status()

    return asyncio.run(_status())


def lead(cluster: EtcdCluster, target: int) -> None:
    """Make member ``target`` the etcd leader (``maintenance/transfer-leadership``, asked of the
    current leader, as ``etcdctl move-leader`` does)."""
    target_id = status(cluster, target)["header"]["member_id"]
    leader = status(cluster, target)["leader"]
    if leader != target_id:
        current = next(i for i in range(3) if status(cluster, i)["header"]["member_id"] == leader)

        async def _move() -> None:
            async with cluster.client(current) as c:
                await c.call("/v3/maintenance/transfer-leadership", {"targetID": target_id})

        asyncio.run(_move())
    wait_for(lambda: status(cluster, target)["leader"] == target_id, 20, 0.2, f"member {target} leads etcd")


def put(cluster: EtcdCluster, items: dict[str, bytes]) -> None:
    async def _put() -> None:
        async with cluster.client() as c:
            for k, v in items.items():
                await c.put(PREFIX + k, v)

    asyncio.run(_put())


def take(share: Path, node: str, cluster: EtcdCluster, member: int, skew_s: int = 0) -> Path | None:
    """One snapshot turn of ``node``'s Phylactery, its clock ``skew_s`` off."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if skew_s:
        env.update(LD_PRELOAD=str(LIBFAKETIME), FAKETIME=f"{skew_s:+d}s", FAKETIME_DONT_FAKE_MONOTONIC="1")
    argv = [sys.executable, "-m", "tests.integration.snapshot_taker", str(share), node, f"boot-{node}"]
    argv += [cluster.members[member].client_url, str(cluster.pki_dir), str(KEEP)]
    res = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    out = res.stdout.strip().splitlines()[-1]
    return None if out == "-" else Path(out)


def ms(path: Path) -> int:
    parsed = snapshot_name(path.name)
    assert parsed is not None, path.name
    return parsed.written_ms


def test_a_leader_an_hour_ahead_does_not_delete_the_correct_nodes_snapshots_and_a_restore_takes_the_newest(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    if not LIBFAKETIME.exists():
        pytest.fail(f"{LIBFAKETIME} missing: run 'make deps' (it installs libfaketime)", pytrace=False)
    share = tmp_path / "share"
    store = ShareStore(share, "default", "control0")
    store.ensure()
    state, _, _ = store.attempt_leadership("127.0.0.1", "boot-control0", rule_for("control", "control0", "b", 30))
    claim = state.claim()
    assert claim is not None
    store.mark_ready(claim)
    generation = store.read_state().generation
    for node in ("control0", "control1"):
        ShareStore(share, "default", node).record_incarnation(f"boot-{node}", generation)

    # control0 (member 0, an hour ahead) leads for three turns, writing between them.
    written: dict[str, bytes] = {}
    lead(etcd_cluster, 0)
    assert take(share, "control1", etcd_cluster, 1) is None, "a member that does not lead takes no snapshot"
    skewed = []
    for turn in range(3):
        items = {f"cm-{turn}": b"v%d" % turn, "counter": b"%d" % turn}
        put(etcd_cluster, items)
        written.update(items)
        path = take(share, "control0", etcd_cluster, 0, skew_s=HOUR_S)
        assert path is not None
        skewed.append(path)
    # control1 (member 1, right clock) leads for two turns.
    lead(etcd_cluster, 1)
    correct = []
    for turn in range(3, 5):
        items = {f"cm-{turn}": b"v%d" % turn, "counter": b"%d" % turn}
        put(etcd_cluster, items)
        written.update(items)
        path = take(share, "control1", etcd_cluster, 1)
        assert path is not None
        correct.append(path)
    put(etcd_cluster, {"after-the-last-snapshot": b"lost"})  # what a restore cannot have

    # The clocks disagree by an hour (the skew took), the order follows the data.
    assert min(ms(p) for p in skewed) > max(ms(p) for p in correct) + 50 * 60 * 1000
    assert store.snapshots() == [correct[1], correct[0], skewed[2]]
    assert not skewed[0].exists() and not skewed[1].exists(), "retention dropped the oldest data"
    cluster_id = int(status(etcd_cluster, 0)["header"]["cluster_id"])
    revisions = []
    for p in store.snapshots():
        parsed = snapshot_name(p.name)
        assert parsed is not None and parsed.cluster_id == f"{cluster_id:016x}"
        revisions.append(parsed.revision)
    assert revisions == sorted(revisions, reverse=True) and len(set(revisions)) == 3
    chosen = store.newest_valid_snapshot()
    assert chosen == correct[1]

    # Full loss: every member's data is gone; the chosen snapshot is restored as a new member.
    for m in etcd_cluster.members:
        os.killpg(m.proc.pid, signal.SIGKILL)
        m.proc.wait(timeout=10)
    host, client_port, peer_port = "127.0.0.1", free_port("127.0.0.1"), free_port("127.0.0.1")
    peer = f"https://{host}:{peer_port}"
    data_dir = tmp_path / "restored"
    subprocess.run(
        [etcd_tool("etcdutl"), "snapshot", "restore", str(chosen), "--data-dir", str(data_dir),
         "--name", "restored", "--initial-cluster", f"restored={peer}", "--initial-advertise-peer-urls", peer],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    argv = etcd_argv(
        ETCD, "restored", data_dir, etcd_cluster.pki_dir / "etcd", [f"https://{host}:{client_port}"], peer,
        f"restored={peer}", "existing",
    )  # fmt: skip
    with open(tmp_path / "restored.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        endpoint, context = f"https://{host}:{client_port}", kubeadm_client_context(etcd_cluster.pki_dir)

        async def read_all() -> dict[str, bytes]:
            async with EtcdClient([endpoint], context) as c:
                return {k.removeprefix(PREFIX): v for k, v in await c.get_prefix(PREFIX)}

        def answers() -> bool:
            try:
                asyncio.run(read_all())
                return True
            except Exception:
                return False

        wait_for(answers, 30, 0.2, "the restored etcd member answers")
        restored = asyncio.run(read_all())
        assert restored == written, "every key up to the last snapshot, with its last value"
        assert restored["counter"] == b"4" and "after-the-last-snapshot" not in restored
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
