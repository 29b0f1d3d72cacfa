"""The whole boot flow in the lab: 3 control + 2 workers from nothing, then nothing left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from lab import netns

PREFIX = "ek8st"


def ek8s(lab_dir: Path, *args: str, timeout: float = 240, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    cmd = [sys.executable, "-m", "manager", "lab", "--dir", str(lab_dir), "--prefix", PREFIX, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def lab_processes(lab_dir: Path) -> list[str]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(lab_dir) in cmd:
            out.append(f"{p.info['pid']}: {cmd[:120]}")
    return out


@pytest.fixture
def lab_dir() -> Iterator[Path]:
    d = Path(f"/run/{PREFIX}-{uuid.uuid4().hex[:8]}")  # short: UNIX socket paths live below it
    try:
        yield d
    finally:
        res = ek8s(d, "down", timeout=120)
        assert res.returncode == 0, res.stderr
        assert netns.existing(PREFIX) == []
        assert lab_processes(d) == []
        assert not d.exists()
        assert not list(Path("/etc/netns").glob(f"{PREFIX}-*"))


@pytest.mark.lab
@pytest.mark.parametrize("distribution", ["kubeadm", "k3s"])
def test_lab_up_3_plus_2_then_down_leaves_nothing(lab_dir: Path, tmp_path: Path, distribution: str) -> None:
    report_path = tmp_path / "r.json"
    res = ek8s(
        lab_dir,
        "up",
        *("--control", "3", "--workers", "2", "--distribution", distribution),
        *("--json", str(report_path), "--timeout", "120"),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    r = json.loads(report_path.read_text())
    for key in (
        "leader_claimed_s",
        "api_ready_s",
        "leader_ready_s",
        "all_nodes_ready_s",
        "nodes",
        "etcd_members",
        "haproxy_backends_up",
        "vip_holder",
        "generation",
        "share",
    ):
        assert key in r, key
    assert 0 < r["leader_claimed_s"] <= r["api_ready_s"] <= r["leader_ready_s"] <= r["all_nodes_ready_s"]
    assert [(n["name"], n["role"], n["ready"]) for n in r["nodes"]] == [
        ("control0", "control", True),
        ("control1", "control", True),
        ("control2", "control", True),
        ("worker0", "worker", True),
        ("worker1", "worker", True),
    ]
    assert r["etcd_members"] == 3
    assert r["haproxy_backends_up"] == {"control0": 3, "control1": 3, "control2": 3}
    assert r["vip_holder"] in {"control0", "control1", "control2"}
    assert r["generation"] == 1
    assert "Stage timeline" in res.stdout and "EMULATED" in res.stdout
    # The lab's addresses exist only inside its namespaces, never on the host.
    host = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True).stdout
    assert "10.0.0.99" not in host and "10.0.0.21" not in host
    # Share secrets are root-only.
    share = Path(r["share"]) / "default"
    for p in (share / "kube.config", share / "join.json", share / "phylactery.token"):
        assert p.stat().st_mode & 0o777 == 0o600
    assert (share / "leader_ready").exists() and (share / "leader").read_text().split()[0] == r["leader"]
    # exec passes stdin and the exit code through.
    ex = ek8s(lab_dir, "exec", "worker0", "--", "sh", "-c", "read x; ip -4 -o addr show eth0; exit $x", input="7\n")
    assert ex.returncode == 7 and "10.0.0.41" in ex.stdout
    st = ek8s(lab_dir, "status", "--json", str(tmp_path / "s.json"))
    assert st.returncode == 0, st.stderr
    assert json.loads((tmp_path / "s.json").read_text())["etcd_members"] == 3
    # The operator's view (ek8s status), from a host that reaches the nodes.
    st = ek8s(
        lab_dir, "exec", "worker0", "--", sys.executable, "-m", "manager", "status", "--share", r["share"], "--json"
    )
    assert st.returncode == 0, st.stderr
    doc = json.loads(st.stdout)
    assert doc["generation"] == 1 and doc["ready"] and doc["leader"] == r["leader"]
    assert [(n["name"], n["ready"], n["phase"]) for n in doc["nodes"]] == [
        (n, True, "watch") for n in ("control0", "control1", "control2", "worker0", "worker1")
    ]
    assert doc["etcd_members"] == ["control0", "control1", "control2"] and doc["etcd_quorum"] is True
    assert doc["vip_holder"] == r["vip_holder"]
    if distribution == "kubeadm":
        check_emulated_kubeadm_refusals(lab_dir, share)
    else:
        check_emulated_k3s_refusals(lab_dir, share)
    # Supervision: a Phylactery that dies is started again by the node's agent.
    pidfile = lab_dir / "nodes/control1/run/ek8s/services/phylactery.pid"
    old_pid = int(pidfile.read_text().split()[0])
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        probe = ek8s(lab_dir, "exec", "worker0", "--", "curl", "-sf", "-m", "1", "http://10.0.0.22:9999/healthz")
        if probe.returncode == 0 and int(pidfile.read_text().split()[0]) != old_pid:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("Phylactery on control1 was not restarted")


def emulated_join(lab_dir: Path, root: str, join: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """Run the lab's emulated kubeadm join from control0's namespace with a scratch node root."""
    node_root = lab_dir / root
    (node_root / "run").mkdir(parents=True, exist_ok=True)
    (node_root / "run/join.yaml").write_text(yaml.safe_dump(join))
    cmd = [str(lab_dir / "bin/kubeadm"), "join", "--config", "/run/join.yaml", "--rootfs", str(node_root)]
    return ek8s(lab_dir, "exec", "control0", "--", *cmd, timeout=120)


def check_emulated_kubeadm_refusals(lab_dir: Path, share: Path) -> None:
    """The emulation refuses what kubeadm (or etcd under it) refuses."""
    material = json.loads((share / "join.json").read_text())

    def join(
        name: str, address: str, token: str = material["token"], pins: list[str] | None = None, key: str | None = None
    ) -> dict[str, object]:
        doc: dict[str, object] = {
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "kind": "JoinConfiguration",
            "discovery": {
                "bootstrapToken": {
                    "apiServerEndpoint": material["api_server_endpoint"],
                    "token": token,
                    "caCertHashes": pins or material["ca_cert_hashes"],
                }
            },
            "nodeRegistration": {"name": name, "kubeletExtraArgs": [{"name": "node-ip", "value": address}]},
        }
        if key is not None:
            doc["controlPlane"] = {
                "localAPIEndpoint": {"advertiseAddress": address, "bindPort": 6443},
                "certificateKey": key,
            }
        return doc

    ready = 'error execution phase kubelet-start: a Node with name "{}" and status "Ready" already exists'
    cases = [
        (join("worker0", "10.0.0.41"), ready.format("worker0")),
        (
            join("intruder", "10.0.0.77", token="zzzzzz.0123456789abcdef"),
            "error execution phase preflight: couldn't validate the identity of the API Server: could not find a "
            'JWS signature in the cluster-info ConfigMap for token ID "zzzzzz"',
        ),
        (
            join("intruder", "10.0.0.77", pins=["sha256:" + "0" * 64]),
            "error execution phase preflight: cluster CA found in cluster-info ConfigMap is invalid: none of the "
            "public keys",
        ),
        (
            join("intruder", "10.0.0.77", key="ab" * 32),
            "error execution phase control-plane-prepare/download-certs: error downloading certs: error decoding "
            "secret data with provided key: cipher: message authentication failed",
        ),
        # kubeadm 1.32 checks the Node name in kubelet-start, after control-plane-prepare and
        # check-etcd: the refused control-plane join leaves certificates, admin.conf and the
        # kube-apiserver manifest behind, and adds no etcd member.
        (join("control1", "10.0.0.22", key=material["certificate_key"]), ready.format("control1")),
    ]
    for i, (doc, refusal) in enumerate(cases):
        res = emulated_join(lab_dir, f"scratch{i}", doc)
        assert res.returncode == 1, (refusal, res.stdout, res.stderr)
        assert refusal in res.stderr, (refusal, res.stderr)
    last = lab_dir / f"scratch{len(cases) - 1}"
    assert "[check-etcd] Checking that the etcd cluster is healthy" in res.stdout
    for left in (
        "etc/kubernetes/pki/apiserver.crt",
        "etc/kubernetes/admin.conf",
        "etc/kubernetes/manifests/kube-apiserver.yaml",
    ):
        assert (last / left).exists(), left
    for absent in ("etc/kubernetes/kubelet.conf", "etc/kubernetes/manifests/etcd.yaml"):
        assert not (last / absent).exists(), absent


def emulated_k3s(
    lab_dir: Path, root: str, command: str, config: dict[str, object], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the lab's emulated k3s from control0's namespace with a scratch node root; one that
    keeps retrying is stopped after ``timeout`` seconds (exit 124)."""
    node_root = lab_dir / root
    (node_root / "etc/rancher/k3s").mkdir(parents=True, exist_ok=True)
    (node_root / "etc/rancher/k3s/config.yaml").write_text(yaml.safe_dump(config))
    cmd = ["timeout", str(timeout), str(lab_dir / "bin/k3s"), command, "--rootfs", str(node_root)]
    return ek8s(lab_dir, "exec", "control0", "--", *cmd, timeout=timeout + 60)


def check_emulated_k3s_refusals(lab_dir: Path, share: Path) -> None:
    """The emulated k3s refuses what k3s (or etcd under it) refuses; a rebooted worker, whose
    node password is new, is refused until the prune removes its node-password Secret."""
    material = json.loads((share / "join.json").read_text())
    server, agent_token = "https://vip.kubernetes.local:8443", material["certificate_key"]
    wrong_hash = "K10" + "0" * 64 + "::node:" + agent_token.split("::node:")[1]
    node = {"node-name": "intruder", "node-ip": "10.0.0.77"}
    fatal = [
        (
            "agent",
            {"server": server, "token": wrong_hash, **node},
            "token CA hash does not match the Cluster CA certificate hash",
        ),
        ("agent", {"server": server, "token": agent_token[:-4] + "zzzz", **node}, "401"),
        ("agent", {"server": "https://10.0.0.77:6443", "token": agent_token, **node}, "failed to get CA certs"),
        # A worker's credential cannot fetch what a server needs to join.
        ("server", {"server": server, "token": agent_token, **node}, "failed to get bootstrap data"),
        # A new member on control0's peer address under another name: etcd refuses it.
        (
            "server",
            {"server": server, "token": material["token"], "node-name": "control9", "node-ip": "10.0.0.21"},
            "joining etcd cluster: https://",
        ),
    ]
    for i, (command, config, refusal) in enumerate(fatal):
        res = emulated_k3s(lab_dir, f"scratch{i}", command, config)
        assert res.returncode == 1, (refusal, res.stdout, res.stderr)
        assert "level=fatal" in res.stdout and refusal in res.stdout, (refusal, res.stdout)
    assert "Peer URLs already exists" in res.stdout
    # worker0 with a fresh root (a reboot without the prune): refused, and k3s keeps retrying.
    res = emulated_k3s(lab_dir, "scratch-worker0", "agent", {"server": server, "token": agent_token,
                       "node-name": "worker0", "node-ip": "10.0.0.41"}, timeout=8)  # fmt: skip
    assert res.returncode == 124, res.stdout
    assert "Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password'" in res.stdout
    # The same reboot through the agent: the prune deletes the Secret and the join succeeds.
    reboot = ek8s(lab_dir, "reboot", "worker0", timeout=240)
    assert reboot.returncode == 0, reboot.stdout + reboot.stderr
    events = [json.loads(line) for line in (share / "events.jsonl").read_text().splitlines()]
    pruned = [e for e in events if e.get("node") == "worker0" and e.get("event") == "pruned"]
    assert pruned and "kube-system/worker0.node-password.k3s" in pruned[-1]["deleted_secrets"], pruned


def test_lab_refuses_a_second_lab_and_down_is_idempotent(lab_dir: Path) -> None:
    assert ek8s(lab_dir, "down").returncode == 0
    res = ek8s(lab_dir, "status")
    assert res.returncode == 1 and "no lab" in res.stderr


@pytest.mark.lab
def test_bench_three_runs_against_the_lab_writes_csv_and_png(lab_dir: Path, tmp_path: Path) -> None:
    from manager.bench import COLUMNS, read_csv

    res = ek8s(lab_dir, "up", "--control", "1", "--workers", "1", "--timeout", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "bench"
    res = ek8s(lab_dir, "bench", "--runs", "3", "--out", str(out), "--timeout", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "deployment-times.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    rows = read_csv(out / "deployment-times.csv")
    assert len(rows) == 3
    for row in rows:
        assert all(v >= 0 for v in row) and row[0] > 0 and row[4] > 0
        assert abs(sum(row[:5]) - row[5]) < 0.01
    assert (out / "deployment-times.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Aggregated" in res.stdout and "PoC" in res.stdout
    # Each run was a rebuild: generation 1 from `up`, then one per run; the cluster is whole.
    state = json.loads((lab_dir / "share" / "default" / "cluster.json").read_text())
    assert state["generation"] == 4 and state["ready"]
    status = ek8s(lab_dir, "status")
    assert status.returncode == 0, status.stdout + status.stderr
