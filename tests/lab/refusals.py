"""The emulated kubeadm and k3s refuse what the real tools refuse (lab/kubeadm/, lab/k3s.py
cite the sources): joins with a wrong token, CA pin or certificate key, a Node name that is
taken, a duplicate etcd member, a k3s node password that changed, and kubeadm's preflight
(ports in use, an etcd data directory or a kubelet.conf left behind). Run against a formed
lab from control0's network namespace with scratch node roots on the host: the same in both
lab modes (a machine's own root does not hold the lab's shims). control0's API server, etcd
and kubelet hold their ports there, so the joins that are not about preflight name those
port checks in ``nodeRegistration.ignorePreflightErrors``, as an operator would."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from core.share import ShareStore

# ``ek8s(lab_dir, *args, timeout=seconds)``: ``ek8s lab --dir LAB_DIR ARGS`` as the test module runs it.
Ek8s = Callable[..., subprocess.CompletedProcess[str]]


def in_control0(lab_dir: Path, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """``cmd`` (the host's programs and files) in control0's network namespace (text output)."""
    from lab.cluster import Lab

    ns = Lab(lab_dir).load().node("control0").ns
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout)


def emulated_join(ek8s: Ek8s, lab_dir: Path, root: str, join: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """Run the lab's emulated kubeadm join from control0's namespace with a scratch node root."""
    node_root = lab_dir / root
    (node_root / "run").mkdir(parents=True, exist_ok=True)
    (node_root / "run/join.yaml").write_text(yaml.safe_dump(join))
    cmd = [str(lab_dir / "bin/kubeadm"), "join", "--config", "/run/join.yaml", "--rootfs", str(node_root)]
    return in_control0(lab_dir, cmd, timeout=120)


def check_emulated_kubeadm_refusals(ek8s: Ek8s, lab_dir: Path, share: Path) -> None:
    """The emulation refuses what kubeadm (or etcd under it) refuses."""
    material = json.loads((share / "join.json").read_text())

    def join(
        name: str,
        address: str,
        token: str = material["token"],
        pins: list[str] | None = None,
        key: str | None = None,
        ignore: list[str] = PORTS,
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
            "nodeRegistration": {
                "name": name,
                "kubeletExtraArgs": [{"name": "node-ip", "value": address}],
                "ignorePreflightErrors": ignore,
            },
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
        res = emulated_join(ek8s, lab_dir, f"scratch{i}", doc)
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
    check_emulated_kubeadm_preflight(ek8s, lab_dir, join("control7", "10.0.0.27", key=material["certificate_key"]))


# The ports control0's API server, etcd and kubelet hold in its namespace (preflight/checks.go).
PORTS = ["Port-6443", "Port-10259", "Port-10257", "Port-2379", "Port-2380", "Port-10250"]


def check_emulated_kubeadm_preflight(ek8s: Ek8s, lab_dir: Path, control: dict[str, object]) -> None:
    """kubeadm's preflight (``preflight/checks.go``, ``cmd/phases/join/preflight.go``): a
    control-plane join in control0's namespace, whose ports control0's components hold, into a
    root that still has an etcd data directory (a reset that skipped remove-etcd-member leaves
    one). The join checks run first and stop it (the kubelet's port); past them, after
    discovery, the control plane's init checks (the API server's and etcd's ports, the data
    directory); ignoring the ports leaves the data directory alone. Then a worker join into a
    root with a kubelet.conf. Every failed check is named; nothing is written."""
    root = lab_dir / "scratch-preflight"
    (root / "var/lib/etcd/member/snap").mkdir(parents=True)

    def ignoring(*checks: str) -> dict[str, object]:
        registration = dict(control["nodeRegistration"], ignorePreflightErrors=list(checks))  # type: ignore[call-overload]
        return dict(control, nodeRegistration=registration)

    res = emulated_join(ek8s, lab_dir, "scratch-preflight", ignoring())
    assert res.returncode == 1, res.stdout + res.stderr
    assert "[preflight] Some fatal errors occurred:\n\t[ERROR Port-10250]: Port 10250 is in use\n" in res.stderr
    assert "[preflight] If you know what you are doing, you can make a check non-fatal with " in res.stderr
    assert "error execution phase preflight:" in res.stderr
    assert "[discovery]" not in res.stdout, "the join checks run before discovery"
    res = emulated_join(ek8s, lab_dir, "scratch-preflight", ignoring("Port-10250"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "[WARNING Port-10250]: Port 10250 is in use" in res.stderr
    assert "Running pre-flight checks before initializing the new control plane instance" in res.stdout
    for line in (
        "\t[ERROR Port-6443]: Port 6443 is in use",
        "\t[ERROR Port-2379]: Port 2379 is in use",
        "\t[ERROR Port-2380]: Port 2380 is in use",
        "\t[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty",
    ):
        assert line in res.stderr, (line, res.stderr)
    assert "Port-10259" not in res.stderr and "Port-10257" not in res.stderr, "no scheduler or controller-manager"
    assert not (root / "etc/kubernetes/pki/apiserver.crt").exists(), "preflight refused before any phase wrote"
    res = emulated_join(ek8s, lab_dir, "scratch-preflight", control)  # every port ignored
    assert res.returncode == 1 and "[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty" in res.stderr
    assert "[ERROR Port-" not in res.stderr and "[WARNING Port-6443]: Port 6443 is in use" in res.stderr
    # A worker whose kubelet.conf is still there (a reset that did not run) is refused before discovery.
    worker = {k: v for k, v in control.items() if k != "controlPlane"}
    worker_root = lab_dir / "scratch-preflight-worker"
    (worker_root / "etc/kubernetes").mkdir(parents=True)
    (worker_root / "etc/kubernetes/kubelet.conf").write_text("left behind")
    res = emulated_join(ek8s, lab_dir, "scratch-preflight-worker", worker)
    assert res.returncode == 1
    assert (
        "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists" in res.stderr
    )
    assert "[discovery]" not in res.stdout


def emulated_k3s(
    ek8s: Ek8s, lab_dir: Path, root: str, command: str, config: dict[str, object], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the lab's emulated k3s from control0's namespace with a scratch node root; one that
    keeps retrying is stopped after ``timeout`` seconds (exit 124)."""
    node_root = lab_dir / root
    (node_root / "etc/rancher/k3s").mkdir(parents=True, exist_ok=True)
    (node_root / "etc/rancher/k3s/config.yaml").write_text(yaml.safe_dump(config))
    cmd = ["timeout", str(timeout), str(lab_dir / "bin/k3s"), command, "--rootfs", str(node_root)]
    return in_control0(lab_dir, cmd, timeout=timeout + 60)


def check_emulated_k3s_refusals(ek8s: Ek8s, lab_dir: Path, share: Path) -> None:
    """The emulated k3s refuses what k3s (or etcd under it) refuses; a rebooted worker, whose
    node password is new, is refused until the prune removes its node-password Secret. A server
    of a node name that still has an etcd member is refused ("duplicate node name"), and one
    that etcd refuses as a learner too many is retried for ever."""
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
        # A server of a name that has an etcd member (control1's, at another address):
        # k3s refuses it before it adds anything (pkg/etcd/etcd.go, ETCD.join).
        (
            "server",
            {"server": server, "token": material["token"], "node-name": "control1", "node-ip": "10.0.0.78"},
            "etcd cluster join failed: duplicate node name found, please use a unique name for this node",
        ),
        # A new member on control0's peer address under another name: etcd refuses it.
        (
            "server",
            {"server": server, "token": material["token"], "node-name": "control9", "node-ip": "10.0.0.21"},
            "etcd cluster join failed: etcdserver: Peer URLs already exists",
        ),
    ]
    for i, (command, config, refusal) in enumerate(fatal):
        res = emulated_k3s(ek8s, lab_dir, f"scratch{i}", command, config)
        assert res.returncode == 1, (refusal, res.stdout, res.stderr)
        assert "level=fatal" in res.stdout and refusal in res.stdout, (refusal, res.stdout)
    check_learner_refusal_is_retried(ek8s, lab_dir, material["token"], server)
    # worker0 with a fresh root (a reboot without the prune): refused, and k3s keeps retrying.
    res = emulated_k3s(ek8s, lab_dir, "scratch-worker0", "agent", {"server": server, "token": agent_token,
                       "node-name": "worker0", "node-ip": "10.0.0.41"}, timeout=8)  # fmt: skip
    assert res.returncode == 124, res.stdout
    assert "Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password'" in res.stdout
    # The same reboot through the agent: the prune deletes the Secret and the join succeeds.
    reboot = ek8s(lab_dir, "reboot", "worker0", timeout=240)
    assert reboot.returncode == 0, reboot.stdout + reboot.stderr
    # Both timelines: a worker's events are in the node tree (docs/share-protocol.md).
    events = ShareStore(share.parent, share.name, "test").events()
    pruned = [e for e in events if e.get("node") == "worker0" and e.get("event") == "pruned"]
    assert pruned and "kube-system/worker0.node-password.k3s" in pruned[-1]["deleted_secrets"], pruned


def check_learner_refusal_is_retried(ek8s: Ek8s, lab_dir: Path, token: str, server: str) -> None:
    """etcd allows one learner at a time: with a learner that never starts in the cluster (a
    member added by a join that went no further), a joining k3s server is refused "too many
    learner members" and retries every second for ever, running all along; the learner goes
    again (k3s's leader would remove it once stalled for 5 min; here etcdctl does)."""
    from lab.cluster import Lab
    from tests.lab.kit import etcdctl

    state = Lab(lab_dir).load()
    added = etcdctl(state, "control0", "-w", "json", "member", "add", "ghost", "--peer-urls=https://10.0.0.79:2380",
                    "--learner")  # fmt: skip
    assert added.returncode == 0, added.stderr
    ghost = json.loads(added.stdout)["member"]["ID"]
    try:
        res = emulated_k3s(ek8s, lab_dir, "scratch-learners", "server", {"server": server, "token": token,
                           "node-name": "control8", "node-ip": "10.0.0.80"}, timeout=6)  # fmt: skip
    finally:
        removed = etcdctl(state, "control0", "member", "remove", f"{ghost:x}")
        assert removed.returncode == 0, removed.stderr
    assert res.returncode == 124, res.stdout  # still running: k3s never gives up on it
    waiting = "Waiting for other members to finish joining etcd cluster: etcdserver: too many learner members"
    assert res.stdout.count(waiting) >= 3, res.stdout
    assert "level=fatal" not in res.stdout
