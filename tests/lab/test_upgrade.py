"""A rolling Kubernetes upgrade by reimaging, as an operator runs it from the Warewulf server
(the lab's manager namespace; docs/operations.md): a 3 + 2 kubeadm lab at v1.34 goes to v1.35
one node at a time, then a step to v1.36 fails on purpose and is rolled back.

The lab's stand-in for Warewulf's per-node image override is ``ek8s lab image NODE IMAGE``
(lab/nodeimage.py): the node's next boot runs the emulated kubeadm and kubelet of the version
the image name carries. ConfigMaps and two Pods under a PodDisruptionBudget (minAvailable 1)
are created first and read back after every step; a 10 Hz probe reads one ConfigMap through
the VIP during the rollout, and its longest gap is what clients waited.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lab import netns
from lab.apiprobe import summary
from lab.command import DAY2_SETTINGS, set_args
from manager.upgrade import kubelet_version
from tests.conftest import keep_logs, wait_for
from tests.lab.kit import ALL, in_order, lab_processes
from tests.lab.test_day2 import TOLERATE_GPU, WEB_OWNER, Day2, lab_cmd, operator

PREFIX = "ek8su"
FROM, TO, SKIP = "v1.34.2", "v1.35.2", "v1.36.4"


class Upgrade(Day2):
    """The lab under ``ek8s upgrade`` (its namespaces ``<prefix>-*``: a module of its own)."""

    prefix: ClassVar[str] = PREFIX

    def ek8s(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return operator(self.dir, self.prefix, *args, "--share", str(self.dir / "share"), timeout=timeout)

    def lab_command(self, verb: str) -> str:
        return f"{sys.executable} -m manager lab --dir {self.dir} --prefix {self.prefix} {verb}"

    def upgrade(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.ek8s("upgrade", "--yes", "--drain-timeout", "60",
                         "--image-command", self.lab_command("image {node} {image}"),
                         "--reboot-command", self.lab_command("reboot --no-wait {node}"), *args)  # fmt: skip

    def versions(self) -> dict[str, str]:
        return {
            n: str(((self.node(n) or {}).get("status") or {}).get("nodeInfo", {}).get("kubeletVersion")) for n in ALL
        }

    def cluster_version(self) -> str:
        cm = self.api("read_namespaced_config_map", "kubeadm-config", "kube-system")
        return str(re.findall(r"kubernetesVersion: (\S+)", cm["data"]["ClusterConfiguration"])[0])


def boot(tmp_path_factory: pytest.TempPathFactory, cls: type[Upgrade], *up_args: str) -> Iterator[Upgrade]:
    """The body of a module's lab fixture: ``ek8s lab up`` (3 + 2, processes, ``up_args``) as
    ``cls``; ``ek8s lab down`` afterwards, failed or not, leaving nothing."""
    tmp = tmp_path_factory.mktemp(cls.prefix)
    d = cls(Path(f"/run/{cls.prefix}-{uuid.uuid4().hex[:8]}"), tmp)
    sets = set_args(DAY2_SETTINGS)
    try:
        d.up = lab_cmd(d.dir, cls.prefix, "up", "--control", "3", "--workers", "2", "--timeout", "180", *up_args, *sets)
        if d.up.returncode != 0:
            d.failed = "ek8s lab up"
        yield d
    finally:
        if d.failed:
            keep_logs(d.dir, tmp)
        res = lab_cmd(d.dir, cls.prefix, "down", timeout=180)
        assert res.returncode == 0, res.stderr
        assert netns.existing(cls.prefix) == [] and lab_processes(d.dir) == [] and not d.dir.exists()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upgrade]:
    """3 + 2, kubeadm, Kubernetes v1.34.2 (:func:`boot`)."""
    yield from boot(tmp_path_factory, Upgrade, "--kubernetes-version", FROM)


@pytest.fixture(autouse=True)
def _in_order(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from in_order(request, "up")


@pytest.mark.lab
def test_a_skipped_minor_is_refused_by_ek8s_and_by_kubeadm_itself(up: Upgrade) -> None:
    assert up.up is not None and up.up.returncode == 0, (up.up.stdout + up.up.stderr)[-3000:]
    up.create("before-upgrade-a", "before-upgrade-b")
    assert set(up.versions().values()) == {f"{FROM}-emulated"}
    res = up.upgrade("--to", SKIP)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f'refused (skip): Specified version to upgrade to "{SKIP}" is too high' in res.stderr
    assert up.store.read_rollout() is None, "nothing written"
    # A node given a v1.36 image anyway: its kubeadm refuses the v1.34 cluster at join.
    assert lab_cmd(up.dir, PREFIX, "image", "worker1", f"ek8s-base-{SKIP}").returncode == 0
    assert lab_cmd(up.dir, PREFIX, "reboot", "--no-wait", "worker1").returncode == 0
    log = Path(up.state.node("worker1").log)
    wanted = f"control plane version >= 1.35.0. Current version: {FROM}"

    def refused() -> bool:
        events = [e for e in up.store.events() if e["node"] == "worker1" and e["event"] == "join_failed"]
        return any(wanted in e.get("message", "") for e in events) or wanted in log.read_text(errors="replace")

    wait_for(refused, 90, 1.0, "kubeadm v1.36 refuses the v1.34 cluster at join")
    assert lab_cmd(up.dir, PREFIX, "image", "worker1", "ek8s-base").returncode == 0
    res = lab_cmd(up.dir, PREFIX, "reboot", "worker1", "--timeout", "120")
    assert res.returncode == 0, res.stderr
    up.all_kept()


def roll(up: Upgrade, to: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``ek8s upgrade --to TO ARGS`` of the whole lab with two web Pods under a PodDisruptionBudget
    (minAvailable 1), a 10 Hz probe on the VIP and the budget watched every 0.5 s; asserts
    that it succeeded, moved the control nodes one at a time then the workers, left every
    Node at ``to``, kept the budget, the API (longest gap under 10 s, see the bound) and every object.
    Returns the command's result and its figures (printed, and kept in the test's directory):
    total seconds, the probe's summary, per node seconds from its reboot to "at TO"."""
    for name in ("web-a", "web-b"):
        body = {"metadata": {"name": name, "labels": {"app": "web"}, "ownerReferences": [WEB_OWNER]},
                "spec": {"containers": [{"name": "web", "image": "nginx"}], "tolerations": TOLERATE_GPU}}  # fmt: skip
        up.api("create_namespaced_pod", "default", body)
    pdb = {"metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}
    up.api("create_namespaced_pod_disruption_budget", "default", pdb, group="PolicyV1Api")
    wait_for(lambda: len([n for n in up.web_pods().values() if n]) == 2, 30, 1.0, "two web Pods running")
    up.create("probe")
    out = up.tmp / "probe.jsonl"
    probe = subprocess.Popen(
        ["ip", "netns", "exec", up.state.manager, sys.executable, "-m", "lab.apiprobe", "--kubeconfig",
         str(up.store.admin_kubeconfig_path), "--configmap", "probe", "--out", str(out), "--hz", "10"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    lowest: list[int] = []
    stop = threading.Event()

    def watch_budget() -> None:
        while not stop.wait(0.5):
            answer = up.lab.api("read_namespaced_pod_disruption_budget", "web", "default", group="PolicyV1Api")
            if answer and "result" in answer:
                lowest.append(int(answer["result"]["status"]["currentHealthy"]))

    watcher = threading.Thread(target=watch_budget, daemon=True)
    watcher.start()
    try:
        time.sleep(2)
        started = time.time()
        res = up.upgrade("--to", to, "--timeout", "240", *args)
        ended = time.time()
        time.sleep(1)
    finally:
        stop.set()
        probe.terminate()
        probe.wait(10)
        watcher.join(5)
    (up.tmp / "upgrade.out").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    moved = [m.group(1) for m in re.finditer(r"\] (\S+): at " + re.escape(to), res.stdout)]
    assert moved == ALL, res.stdout
    assert {kubelet_version({"status": {"nodeInfo": {"kubeletVersion": v}}}) for v in up.versions().values()} == {to}
    rollout = up.store.read_rollout()
    assert rollout is not None and rollout.phase == "done"
    gaps = summary(out, started, ended)
    figures = {"total_s": round(ended - started, 1), **gaps, "per_node_s": per_node(res.stdout)}
    (up.tmp / "upgrade-figures.json").write_text(json.dumps(figures))
    print("upgrade figures:", json.dumps(figures))
    assert gaps["tries"] > 100, gaps
    # Usually 0.3 s (the VIP's move); twice a rollout's gap was 5.1 s (kubeadm, 10 s joins) and
    # 6.1 s (k3s), both when the first control node (the VIP's holder) went down, not explained
    # yet (docs/benchmarks.md section 11). The bound catches an API down for a node's whole
    # reboot (15-24 s here); the figure is printed and kept in upgrade-figures.json.
    assert gaps["longest_gap_s"] < 10.0, gaps
    assert lowest and min(lowest) >= 1, f"the web budget (minAvailable 1) held: {lowest}"
    up.all_kept()
    return res, figures


@pytest.mark.lab
def test_a_rolling_upgrade_one_minor_keeps_the_api_the_budget_and_every_object(up: Upgrade) -> None:
    res, _ = roll(up, TO)
    assert res.stdout.index("ClusterConfiguration kubernetesVersion") < res.stdout.index("control0: at")
    assert set(up.versions().values()) == {f"{TO}-emulated"}
    assert up.cluster_version() == TO


def per_node(stdout: str) -> dict[str, float]:
    """Seconds from each node's reboot command to its 'at VERSION' line (the driver's
    ``[HH:MM:SS]`` stamps: whole seconds)."""

    def secs(stamp: str) -> int:
        h, m, s = (int(x) for x in stamp.split(":"))
        return h * 3600 + m * 60 + s

    out: dict[str, float] = {}
    rebooted: dict[str, int] = {}
    for line in stdout.splitlines():
        m = re.match(r"\[(\d\d:\d\d:\d\d)\] running: .* reboot --no-wait (\S+)$", line)
        if m:
            rebooted[m.group(2)] = secs(m.group(1))
        m = re.match(r"\[(\d\d:\d\d:\d\d)\] (\S+): at v", line)
        if m and m.group(2) in rebooted:
            out[m.group(2)] = secs(m.group(1)) - rebooted[m.group(2)]
    return out


@pytest.mark.lab
def test_an_image_that_does_not_boot_stops_the_rollout_and_rollback_restores_the_old_version(up: Upgrade) -> None:
    images = ("--old-image", f"control=ek8s-control-{TO}", "--old-image", f"worker=ek8s-base-{TO}")
    # The timeout is waited out: the broken image never boots, so control0 is never back. 20 s
    # is more than twice a good control node's reboot to "at" here (8 s, docs/benchmarks.md 11).
    res = up.upgrade("--to", SKIP, "--image", "control=ek8s-broken", *images, "--timeout", "20")
    (up.tmp / "broken.out").write_text(res.stdout + res.stderr)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "the rollout stopped: control0 (to v1.36.4): not back within 20s" in res.stderr
    rollout = up.store.read_rollout()
    assert rollout is not None and rollout.phase == "stopped"
    assert {n.name: n.state for n in rollout.nodes}["control0"] == "failed"
    assert all(n.state == "old" for n in rollout.nodes if n.name != "control0")
    up.all_kept()  # the cluster serves on control1 and control2
    st = up.ek8s("status")
    assert "upgrade v1.35.2 -> v1.36.4 stopped" in st.stdout and "--resume or --rollback" in st.stdout, st.stdout
    res = up.upgrade("--rollback", "--timeout", "240")
    (up.tmp / "rollback.out").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "ClusterConfiguration kubernetesVersion v1.35.2" in res.stdout
    rollout = up.store.read_rollout()
    assert rollout is not None and rollout.phase == "rolled_back"
    assert set(up.versions().values()) == {f"{TO}-emulated"}
    assert up.cluster_version() == TO
    up.all_kept()
