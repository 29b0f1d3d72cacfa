"""The rollout driver without root or daemons (manager/upgrade.py): a 3 + 2 kubeadm cluster
whose nodes "boot" the image a real command switched them to (a file per node, written by
the --image-command, read when the --reboot-command's mark appears); the API, Phylactery and
clock are fakes, the share a real store. Asserted: the order and the once-only cluster-wide
steps, the per-node versions at every step (the skew), a node whose image does not boot
stopping the rollout with the cluster's other nodes untouched, --resume and --rollback from
the stored record, the plan a dry run prints, and the CLI refusing a skip (exit 1, nothing
written)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core import upgrade
from core.records import RolloutRecord
from core.share import ShareStore
from manager import maintenance
from manager.upgrade import (
    Commands,
    Driver,
    VersionedCluster,
    cluster_distribution,
    plan_lines,
    with_kubernetes_version,
)
from tests.unit.agent_fakes import ready_generation

NODES = {"control1": "control", "control2": "control", "control3": "control", "worker1": "worker", "worker2": "worker"}
IMAGES = {"control": ("ek8s-control", "ek8s-control-v1.36.4"), "worker": ("ek8s-base", "ek8s-base-v1.36.4")}
VERSION_OF = {"ek8s-control": "v1.35.2", "ek8s-base": "v1.35.2"}
VERSION_OF.update({"ek8s-control-v1.36.4": "v1.36.4", "ek8s-base-v1.36.4": "v1.36.4"})


class Lab:
    """The fake cluster: Nodes with a kubelet version, a ClusterConfiguration, kube-proxy; each
    sample of the node versions is checked against the skew policy."""

    def __init__(self, store: ShareStore, marks: Path) -> None:
        self.store, self.marks, self.t = store, marks, 0.0
        self.boots = {n: 0 for n in NODES}
        self.nodes: dict[str, dict[str, Any]] = {
            n: {"metadata": {"name": n}, "spec": {}, "status": self._status("v1.35.2")} for n in NODES
        }
        self.cc = "kubernetesVersion: v1.35.2\nclusterName: kubernetes\n"
        self.proxy = "registry.k8s.io/kube-proxy:v1.35.2"
        self.log: list[str] = []
        for n, role in NODES.items():
            ShareStore(store.dir.parent, "default", n).heartbeat(f"boot-{n}-0", role, "watch", 1)

    @staticmethod
    def _status(version: str, ready: bool = True) -> dict[str, Any]:
        cond = [{"type": "Ready", "status": "True" if ready else "False"}]
        return {"conditions": cond, "nodeInfo": {"kubeletVersion": f"{version}-emulated"}}

    # the clock: a reboot happens while the driver waits
    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s
        for mark in sorted(self.marks.glob("*.reboot")):
            n = mark.stem
            mark.unlink()
            image = (self.marks / n).read_text().strip()
            self.log.append(f"{n} boots {image}")
            version = VERSION_OF.get(image)
            if version is None:  # an image that does not boot: no heartbeat, Node NotReady
                self.nodes[n]["status"] = self._status("v0.0.0", ready=False)
                continue
            if NODES[n] == "control" and upgrade.versions.parse(version).minor > 35:
                assert "v1.36" in self.cc, f"{n} joined before the ClusterConfiguration moved"
            self.boots[n] += 1
            ShareStore(self.store.dir.parent, "default", n).heartbeat(f"boot-{n}-{self.boots[n]}", NODES[n], "watch", 1)
            self.nodes[n]["status"] = self._status(version)
            self.check_skew()

    def check_skew(self) -> None:
        v = {n: self.nodes[n]["status"]["nodeInfo"]["kubeletVersion"] for n in NODES}
        oldest_control = min(v[n] for n in NODES if NODES[n] == "control")
        for n in NODES:
            if NODES[n] == "worker":
                assert v[n] <= oldest_control, f"{n}'s kubelet {v[n]} newer than an API server at {oldest_control}"

    # maintenance.NodeApi
    def node(self, name: str) -> dict[str, Any] | None:
        return self.nodes.get(name)

    def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        spec = self.nodes[name]["spec"]
        for k, val in patch["spec"].items():
            spec.pop(k, None) if val is None else spec.__setitem__(k, val)

    def pods_on(self, node: str) -> list[dict[str, Any]]:
        return []

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def evict(self, namespace: str, name: str) -> tuple[int, str]:
        return 404, "gone"

    # manager.upgrade.UpgradeApi
    def cluster_configuration(self) -> str | None:
        return self.cc

    def put_cluster_configuration(self, text: str) -> None:
        self.log.append("cluster_config " + re.findall(r"kubernetesVersion: (\S+)", text)[0])
        self.cc = text

    def kube_proxy_image(self) -> str | None:
        return self.proxy

    def set_kube_proxy_image(self, image: str) -> None:
        self.log.append("kube-proxy " + image.rsplit(":", 1)[1])
        self.proxy = image


class Sim(VersionedCluster):
    """Back: a new boot and the expected version (no etcd or HAProxy here); etcd has quorum."""

    def down_refusal(self, taking: list[str]) -> str | None:
        return None

    def back(self, name: str, role: str, old_boot: str | None) -> str | None:
        hb = self.store.read_heartbeat(name)
        if hb is None or hb.boot_id == old_boot:
            return "a heartbeat from a new boot"
        return self.version_lacking(name)


def setup(tmp: Path, max_unavailable: int = 1) -> tuple[Driver, Lab]:
    store = ready_generation(tmp / "share")
    marks = tmp / "marks"
    marks.mkdir()
    lab = Lab(store, marks)
    cluster = Sim(store, say=lambda s: None, api_factory=lambda: lab, sleep=lab.sleep, now=lab.now)
    current = {n: "v1.35.2" for n in NODES}
    record = upgrade.new_rollout("default", "kubeadm", current, NODES, "v1.36.4", IMAGES, max_unavailable, 1.0)
    record = store.write_rollout(record, None)
    cmds = Commands(f"sh -c 'echo {{image}} > {marks}/{{node}}'", f"touch {marks}/{{node}}.reboot")
    opts = maintenance.RollOptions(max_unavailable=max_unavailable, drain_timeout_s=10, timeout_s=30)
    return Driver(store, cluster, lab, cmds, opts, record, say=lambda s: None, now=lab.now), lab


def test_a_rollout_moves_control_nodes_alone_after_the_cluster_config_then_addons_then_workers(tmp_path: Path) -> None:
    driver, lab = setup(tmp_path, max_unavailable=2)
    final = driver.run()
    assert final.phase == "done" and final.error == ""
    assert lab.log == [
        "cluster_config v1.36.4",
        "control1 boots ek8s-control-v1.36.4",
        "control2 boots ek8s-control-v1.36.4",
        "control3 boots ek8s-control-v1.36.4",
        "kube-proxy v1.36.4",
        "worker1 boots ek8s-base-v1.36.4",
        "worker2 boots ek8s-base-v1.36.4",
    ]
    assert driver.store.read_rollout() == final
    assert final.revision > 10, "written after every step"
    assert not any(n["spec"].get("unschedulable") for n in lab.nodes.values()), "every node uncordoned"


def test_an_image_that_does_not_boot_stops_the_rollout_and_rollback_restores_the_old_version(tmp_path: Path) -> None:
    driver, lab = setup(tmp_path)
    # control2's new image does not boot
    nodes = [
        n if n.name != "control2" else type(n)(n.name, n.role, n.state, n.old_image, "ek8s-broken")
        for n in driver.record.nodes
    ]
    driver.record = driver.store.write_rollout(
        type(driver.record)(**{**driver.record.__dict__, "nodes": nodes}), driver.record.revision
    )
    stopped = driver.run()
    assert stopped.phase == "stopped"
    assert "control2 (to v1.36.4): not back within 30s: control2 lacks a heartbeat from a new boot" in stopped.error
    assert {n.name: n.state for n in stopped.nodes} == {
        "control1": "new",
        "control2": "failed",
        "control3": "old",
        "worker1": "old",
        "worker2": "old",
    }
    assert lab.nodes["control2"]["spec"].get("unschedulable"), "the failed node stays cordoned"
    assert upgrade.next_step(stopped) is None
    # --rollback: the ClusterConfiguration goes back first, then control2, then control1
    back = driver.store.write_rollout(upgrade.move_phase(stopped, "rolling_back", lab.t), stopped.revision)
    driver.record = back
    assert plan_lines(back)[0].startswith("revert cluster config")
    lab.log.clear()
    final = driver.run()
    assert final.phase == "rolled_back"
    assert lab.log == [
        "cluster_config v1.35.2",
        "control2 boots ek8s-control",
        "control1 boots ek8s-control",
    ]
    assert all(n["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.35.2") for n in lab.nodes.values())


def test_resume_takes_the_failed_node_again_then_goes_on(tmp_path: Path) -> None:
    driver, lab = setup(tmp_path)
    (tmp_path / "marks" / "stuck").write_text("")
    broken = driver.commands
    driver.commands = Commands(broken.image, "false {node}")  # the reboot command fails
    stopped = driver.run()
    assert stopped.phase == "stopped" and "control1" in stopped.error and "exited 1" in stopped.error
    assert [n.state for n in stopped.nodes][:2] == ["failed", "old"]
    driver.commands = broken
    driver.record = driver.store.write_rollout(upgrade.move_phase(stopped, "rolling", lab.t), stopped.revision)
    assert plan_lines(driver.record)[0].startswith("cordon, drain, switch the image (control1 ->")
    assert driver.run().phase == "done"
    assert lab.log.count("cluster_config v1.36.4") == 1, "the cluster-wide step ran once"


def test_the_cluster_configuration_keeps_its_other_keys() -> None:
    out = with_kubernetes_version("kubernetesVersion: v1.35.2\ncontrolPlaneEndpoint: vip:8443\n", "v1.36.4")
    assert out == "kubernetesVersion: v1.36.4\ncontrolPlaneEndpoint: vip:8443\n"
    with pytest.raises(ValueError, match="not a YAML mapping"):
        with_kubernetes_version("- a\n", "v1.36.4")


def test_bad_commands_are_refused_naming_the_option() -> None:
    with pytest.raises(ValueError, match="--image-command"):
        Commands("wwctl node set --image x {node}").check()
    with pytest.raises(ValueError, match="--reboot-command"):
        Commands(reboot="reboot").check()


class Evidence:
    """What :func:`manager.upgrade.cluster_distribution` reads: kubeadm-config and /version."""

    def __init__(self, config: str | None, version: str) -> None:
        self.config, self.version = config, version

    def cluster_configuration(self) -> str | None:
        return self.config

    def server_version(self) -> str:
        return self.version


@pytest.mark.parametrize(
    ("config", "version", "given", "found"),
    [
        ("kubernetesVersion: v1.35.2\n", "v1.35.2", None, "kubeadm"),
        ("kubernetesVersion: v1.35.2\n", "v1.35.2", "kubeadm", "kubeadm"),
        (None, "v1.35.2+k3s1", None, "k3s"),
        (None, "v1.35.2+k3s1", "k3s", "k3s"),
        (None, "v1.35.2", "k3s", "k3s"),  # no evidence either way: the operator's word
    ],
)
def test_the_distribution_comes_from_the_cluster(
    config: str | None, version: str, given: str | None, found: str
) -> None:
    assert cluster_distribution(Evidence(config, version), given) == found  # type: ignore[arg-type]


def test_a_distribution_the_cluster_contradicts_is_refused_naming_the_evidence() -> None:
    with pytest.raises(
        ValueError, match=r"--distribution kubeadm: the cluster runs k3s \(no kube-system/kubeadm-config"
    ):
        cluster_distribution(Evidence(None, "v1.35.2+k3s1"), "kubeadm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--distribution k3s: the cluster runs kubeadm"):
        cluster_distribution(Evidence("kubernetesVersion: v1.35.2\n", "v1.35.2"), "k3s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"cannot tell the cluster's distribution .*: say --distribution"):
        cluster_distribution(Evidence(None, "v1.35.2"), None)  # type: ignore[arg-type]


def ek8s(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "manager", *args], capture_output=True, text=True, timeout=60)


def test_the_cli_refuses_bad_input_before_touching_anything(tmp_path: Path) -> None:
    store = ready_generation(tmp_path / "share")
    share = str(tmp_path / "share")
    res = ek8s("upgrade", "--share", share, "--resume", "--rollback")
    assert res.returncode == 2 and "choose one" in res.stderr
    res = ek8s("upgrade", "--share", share, "--to", "v1.36.4", "--image", "gpu=x")
    assert res.returncode == 2, res.stderr
    res = ek8s("upgrade", "--share", share, "--resume")
    assert res.returncode == 1 and "no rollout to continue" in res.stderr
    res = ek8s("upgrade", "--share", share, "--to", "v1.36.4", "--reboot-command", "reboot")
    assert res.returncode == 2 and "--reboot-command" in res.stderr
    assert store.read_rollout() is None


def test_the_cli_dry_run_of_a_stopped_rollout_says_the_rollback_plan(tmp_path: Path) -> None:
    store = ready_generation(tmp_path / "share")
    r: RolloutRecord = upgrade.new_rollout(
        "default", "kubeadm", {n: "v1.35.2" for n in NODES}, NODES, "v1.36.4", IMAGES, 1, 1.0
    )
    r = upgrade.set_step(r, "cluster_config", True, 1.0)
    r = upgrade.move_node(upgrade.move_node(r, "control1", "moving", 1.0), "control1", "failed", 1.0)
    r = upgrade.move_phase(r, "stopped", 2.0, "boom")
    store.write_rollout(r, None)
    res = ek8s("upgrade", "--share", str(tmp_path / "share"), "--rollback", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "ek8s upgrade (roll back) of cluster default (kubeadm): v1.35.2 -> v1.36.4 (dry run: nothing done):",
        "  - revert cluster config: ClusterConfiguration back to v1.35.2 before control1 rejoins",
        "  - cordon, drain, switch the image back (control1 -> ek8s-control), reboot, wait for v1.35.2",
    ]
    assert store.read_rollout() == store.read_rollout() and store.read_rollout().phase == "stopped"  # type: ignore[union-attr]
    res = ek8s("upgrade", "--share", str(tmp_path / "share"), "--to", "v1.36.4", "--dry-run")
    assert res.returncode == 1 and "a rollout is stopped" in res.stderr and "--resume or --rollback" in res.stderr


def test_status_shows_the_rollout_with_versions_per_node_and_the_next_step(tmp_path: Path) -> None:
    from manager.status import rollout_doc

    driver, _ = setup(tmp_path)
    assert rollout_doc(driver.store) == {
        "phase": "rolling",
        "from_version": "v1.35.2",
        "to_version": "v1.36.4",
        "nodes": {n: {"state": "old", "version": "v1.35.2"} for n in NODES},
        "next": "cluster_config",
        "error": "",
    }
    r = upgrade.set_step(driver.record, "cluster_config", True, 1.0)
    r = upgrade.move_node(upgrade.move_node(r, "control1", "moving", 1.0), "control1", "failed", 1.0)
    driver.store.write_rollout(upgrade.move_phase(r, "stopped", 1.0, "control1 not back"), driver.record.revision)
    doc = rollout_doc(driver.store)
    assert doc is not None and doc["nodes"]["control1"] == {"state": "failed", "version": "?"}
    assert doc["next"] == "ek8s upgrade --resume or --rollback" and doc["error"] == "control1 not back"
