"""Day 2 on RAM roots, as an operator does it from the Warewulf server (the lab's manager
namespace): roles from the inventory, planned reboots, decommission and replacement; then two
clusters side by side on one share (docs/operations.md).

One lab (3 control + 2 workers, kubeadm, processes) goes through the steps in a row; every step
is a test of its own, the later ones skipped once one failed. ConfigMaps created before the
steps are read back after them: nothing may be lost. A 10 Hz probe reads one through the VIP
while every node is rebooted in turn; the longest gap is what clients waited.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.share import ShareStore
from lab import netns
from lab.apiprobe import summary
from lab.cluster import Lab, LabState
from lab.command import DAY2_SETTINGS, lab_cmd, set_args
from tests.conftest import keep_logs, wait_for
from tests.lab.kit import ALL, CONTROL, in_order, kubectl, lab_processes

PREFIX = "ek8sd"
GPU = ("worker1:node.labels=slurm.partition=gpu", "worker1:node.roles=gpu",
       "worker1:node.taints=nvidia.com/gpu=present:NoSchedule")  # fmt: skip
GPU_ROLE = "node-role.kubernetes.io/gpu"
WEB_OWNER = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-web", "controller": True}
TOLERATE_GPU = [{"key": "nvidia.com/gpu", "operator": "Exists"}]


def operator(lab_dir: Path, prefix: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``ek8s ARGS`` in the lab's manager namespace (the Warewulf server's stand-in)."""
    return lab_cmd(lab_dir, prefix, "exec", "manager", "--", sys.executable, "-m", "manager", *args, timeout=timeout)


def publish(path: Path) -> subprocess.CompletedProcess[str]:
    """``ek8s warewulf roles INVENTORY`` on the server (here: the host, which holds the share)."""
    cmd = [sys.executable, "-m", "manager", "warewulf", "roles", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True)


def inventory(path: Path, share: Path, cluster: str, nodes: list[tuple[str, str, str]], **extra: Any) -> Path:
    """An inventory of the lab's nodes (``(name, role, address)``) on its share."""
    data: dict[str, Any] = {
        "cluster": cluster,
        "share": {"path": str(share)},
        "nodes": [
            {"name": n, "role": r, "address": a, "mac": f"52:54:00:00:{i:02x}:01"} for i, (n, r, a) in enumerate(nodes)
        ],
        **extra,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


NODES = [("control0", "control", "10.0.0.21"), ("control1", "control", "10.0.0.22"),
         ("control2", "control", "10.0.0.23"), ("worker0", "worker", "10.0.0.41"),
         ("worker1", "worker", "10.0.0.42")]  # fmt: skip


@dataclass
class Day2:
    """The lab through the steps: objects kept so far, the first step that failed."""

    dir: Path
    tmp: Path
    up: subprocess.CompletedProcess[str] | None = None
    kept: list[str] = field(default_factory=list)
    failed: str | None = None

    @property
    def lab(self) -> Lab:
        return Lab(self.dir, PREFIX)

    @property
    def state(self) -> LabState:
        return self.lab.load()

    @property
    def store(self) -> ShareStore:
        return ShareStore(self.dir / "share", "default", "test")

    def ek8s(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return operator(self.dir, PREFIX, *args, "--share", str(self.dir / "share"), timeout=timeout)

    def lab_command(self, verb: str) -> str:
        """A lab command as the ``--reboot-command``/``--poweroff-command`` of ek8s node."""
        return f"{sys.executable} -m manager lab --dir {self.dir} --prefix {PREFIX} {verb} {{node}}"

    def api(self, method: str, *args: Any, group: str = "CoreV1Api", **kwargs: Any) -> Any:
        answer = self.lab.api(method, *args, group=group, **kwargs)
        assert answer is not None and "result" in answer, (method, answer)
        return answer["result"]

    def node(self, name: str) -> dict[str, Any] | None:
        answer = self.lab.api("read_node", name)
        return answer["result"] if answer and "result" in answer else None

    def create(self, *names: str) -> None:
        for name in names:
            assert kubectl(self.state, "create", name) == {"kept": "yes"}, name
            self.kept.append(name)

    def all_kept(self) -> None:
        expected = {name: {"kept": "yes"} for name in self.kept}
        got = wait_for(lambda: kubectl(self.state, "read-many", *self.kept), 30, 0.5, "the API answers reads")
        assert got == expected

    def boots(self) -> dict[str, str | None]:
        return {n: (hb.boot_id if (hb := self.store.read_any_heartbeat(n)) else None) for n in ALL}

    def web_pods(self) -> dict[str, str]:
        pods = self.api("list_namespaced_pod", "default")["items"]
        return {p["metadata"]["name"]: p["spec"].get("nodeName") for p in pods if p["metadata"]["name"][:3] == "web"}

    def budget(self) -> dict[str, Any]:
        return dict(self.api("read_namespaced_pod_disruption_budget", "web", "default", group="PolicyV1Api")["status"])


@pytest.fixture(scope="module")
def day2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day2]:
    """``ek8s lab up`` (3 + 2, kubeadm, worker1 a GPU node by its node.yaml); ``ek8s lab down``
    afterwards, failed or not, leaving nothing."""
    tmp = tmp_path_factory.mktemp("day2")
    d = Day2(Path(f"/run/{PREFIX}-{uuid.uuid4().hex[:8]}"), tmp)
    sets = set_args((*DAY2_SETTINGS, *GPU))
    try:
        d.up = lab_cmd(d.dir, PREFIX, "up", "--control", "3", "--workers", "2", "--timeout", "180", *sets)
        if d.up.returncode != 0:
            d.failed = "ek8s lab up"
        yield d
    finally:
        if d.failed:
            keep_logs(d.dir, tmp)
        res = lab_cmd(d.dir, PREFIX, "down", timeout=180)
        assert res.returncode == 0, res.stderr
        assert netns.existing(PREFIX) == [] and lab_processes(d.dir) == [] and not d.dir.exists()


@pytest.fixture(autouse=True)
def _in_order(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from in_order(request, "day2")


@pytest.mark.lab
def test_roles_from_node_yaml_at_join_and_from_the_inventory_without_reboot(day2: Day2) -> None:
    assert day2.up is not None and day2.up.returncode == 0, (day2.up.stdout + day2.up.stderr)[-3000:]
    day2.create("before-day2-a", "before-day2-b")
    node = day2.node("worker1")
    assert node is not None
    # At join the kubelet registers what it may (node.yaml's labels and taints); the role label
    # is no kubelet's to set (NodeRestriction), so it waits for the published inventory.
    assert node["metadata"]["labels"]["slurm.partition"] == "gpu" and GPU_ROLE not in node["metadata"]["labels"]
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
    control0 = day2.node("control0")
    assert control0 is not None and control0["spec"]["taints"][0]["key"] == "node-role.kubernetes.io/control-plane"
    groups = [{"nodes": "worker1", "labels": {"slurm.partition": "gpu"}, "roles": ["gpu"],
               "taints": ["nvidia.com/gpu=present:NoSchedule"]}]  # fmt: skip
    inv = inventory(day2.tmp / "inventory.yaml", day2.dir / "share", "default", NODES, groups=groups)
    res = publish(inv)
    assert res.returncode == 0 and "5 nodes, 1 with labels, taints or roles" in res.stdout, res.stderr
    labelled = wait_for(lambda: GPU_ROLE in ((day2.node("worker1") or {}).get("metadata", {}).get("labels") or {}),
                        40, 1.0, "Phylactery sets the gpu role")  # fmt: skip
    assert labelled


@pytest.mark.lab
def test_a_disruption_budget_holds_a_drain_and_nothing_is_rebooted(day2: Day2) -> None:
    for name in ("web-a", "web-b"):
        body = {"metadata": {"name": name, "labels": {"app": "web"}, "ownerReferences": [WEB_OWNER]},
                "spec": {"containers": [{"name": "web", "image": "nginx"}], "tolerations": TOLERATE_GPU}}  # fmt: skip
        day2.api("create_namespaced_pod", "default", body)
    agent = {"metadata": {"name": "agent-w0", "ownerReferences": [{**WEB_OWNER, "kind": "DaemonSet", "name": "agent"}]},
             "spec": {"nodeName": "worker0", "containers": [{"name": "agent", "image": "busybox"}]}}  # fmt: skip
    day2.api("create_namespaced_pod", "default", agent)
    pdb = {"metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}
    day2.api("create_namespaced_pod_disruption_budget", "default", pdb, group="PolicyV1Api")
    assert sorted(day2.web_pods().values()) == ["worker0", "worker1"], "one on each worker"
    assert day2.budget()["disruptionsAllowed"] == 1
    before = day2.boots()
    res = day2.ek8s("node", "reboot", "worker[0-1]", "--max-unavailable", "2", "--drain-timeout", "8", "--yes",
                    "--reboot-command", day2.lab_command("reboot --no-wait"))  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert "The disruption budget web needs 1 healthy pods and has 1 currently" in res.stderr + res.stdout
    assert "worker0, worker1 not taken down (uncordoned again)" in res.stderr
    assert day2.boots() == before, "nothing was rebooted"
    for n in ("worker0", "worker1"):
        assert not (day2.node(n) or {}).get("spec", {}).get("unschedulable"), n
    # The evicted Pod's replacement waited Pending (no node fitted); uncordoned, it runs again.
    wait_for(lambda: len([n for n in day2.web_pods().values() if n]) == 2, 20, 1.0, "two web Pods running")
    assert day2.budget()["currentHealthy"] == 2


@pytest.mark.lab
def test_every_node_rebooted_in_turn_keeps_the_api_and_the_budget(day2: Day2) -> None:
    day2.create("probe")
    out = day2.tmp / "probe.jsonl"
    probe = subprocess.Popen(
        ["ip", "netns", "exec", day2.state.manager, sys.executable, "-m", "lab.apiprobe", "--kubeconfig",
         str(day2.store.admin_kubeconfig_path), "--configmap", "probe", "--out", str(out), "--hz", "10"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    lowest: list[int] = []
    stop = threading.Event()

    def watch_budget() -> None:
        while not stop.wait(0.5):
            answer = day2.lab.api("read_namespaced_pod_disruption_budget", "web", "default", group="PolicyV1Api")
            if answer and "result" in answer:
                lowest.append(int(answer["result"]["status"]["currentHealthy"]))

    watcher = threading.Thread(target=watch_budget, daemon=True)
    watcher.start()
    before = day2.boots()
    try:
        time.sleep(2)
        started = time.time()
        res = day2.ek8s("node", "reboot", "control[0-2],worker[0-1]", "--yes", "--drain-timeout", "60",
                        "--timeout", "240", "--reboot-command", day2.lab_command("reboot --no-wait"))  # fmt: skip
        ended = time.time()
        time.sleep(1)
    finally:
        stop.set()
        probe.terminate()
        probe.wait(10)
        watcher.join(5)
    (day2.tmp / "reboot.out").write_text(res.stdout + res.stderr)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    order = [line.split("] ", 1)[1].split(":")[0] for line in res.stdout.splitlines() if line.endswith(": back")]
    assert order == ["control0", "control1", "control2", "worker0", "worker1"]
    after = day2.boots()
    assert all(after[n] != before[n] for n in ALL), "every node booted again (a new boot id each)"
    gaps = summary(out, started, ended)
    (day2.tmp / "api-gaps.json").write_text(json.dumps(gaps))
    assert gaps["tries"] > 100, gaps
    # No gap beyond a VIP failover (~2 s) and HAProxy marking a stopped API server down.
    assert gaps["longest_gap_s"] < 5.0, gaps
    assert lowest and min(lowest) >= 1, f"the web budget (minAvailable 1) held: {lowest}"
    day2.all_kept()
    node = day2.node("worker1") or {}
    assert node["metadata"]["labels"]["slurm.partition"] == "gpu", "registered again by its kubelet"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
    wait_for(lambda: GPU_ROLE in ((day2.node("worker1") or {}).get("metadata", {}).get("labels") or {}),
             30, 1.0, "the role kept across the reboot: Phylactery sets it again")  # fmt: skip
    events = [e for e in day2.store.events() if e["event"] == "node_reboot" and e["t"] >= started]
    assert sorted(e["target"] for e in events) == sorted(ALL)


@pytest.mark.lab
def test_an_inventory_change_reaches_running_nodes_and_only_what_it_manages(day2: Day2) -> None:
    before = day2.boots()
    groups = [{"nodes": "worker0", "roles": ["storage"], "labels": {"disk": "nvme"}}]
    inv = inventory(day2.tmp / "inventory.yaml", day2.dir / "share", "default", NODES, groups=groups)
    res = publish(inv)
    assert res.returncode == 0, res.stderr

    def moved() -> bool:
        w0 = (day2.node("worker0") or {}).get("metadata", {}).get("labels") or {}
        w1 = (day2.node("worker1") or {}).get("metadata", {}).get("labels") or {}
        return "node-role.kubernetes.io/storage" in w0 and GPU_ROLE not in w1

    wait_for(moved, 40, 1.0, "worker0 becomes a storage node and worker1 stops being a GPU node")
    w0, w1 = day2.node("worker0") or {}, day2.node("worker1") or {}
    assert w0["metadata"]["labels"]["disk"] == "nvme"
    assert "slurm.partition" not in w1["metadata"]["labels"], "managed by the inventory, now gone"
    assert w1["metadata"]["labels"]["kubernetes.io/hostname"] == "worker1", "not the inventory's: kept"
    assert not [t for t in w1["spec"].get("taints") or [] if t["key"] == "nvidia.com/gpu"]
    assert day2.boots() == before, "without a reboot"


@pytest.mark.lab
def test_remove_a_worker(day2: Day2) -> None:
    crash = ("--poweroff-command", day2.lab_command("crash"), "--stop-wait", "1")  # a hard power-off: no 'stopped'
    res = day2.ek8s("node", "remove", "worker1", "--yes", *crash)
    assert res.returncode == 0, res.stdout + res.stderr
    assert day2.node("worker1") is None
    assert day2.store.read_any_heartbeat("worker1") is None
    removed = [e for e in day2.store.events() if e["event"] == "node_removed"]
    assert removed and removed[-1]["target"] == "worker1" and removed[-1]["node"] != "worker1"


@pytest.mark.lab
def test_remove_a_control_node_then_a_replacement_joins_cleanly(day2: Day2) -> None:
    crash = ("--poweroff-command", day2.lab_command("crash"), "--stop-wait", "1")
    res = day2.ek8s("node", "remove", "control2", "--yes", *crash)
    assert res.returncode == 0, res.stdout + res.stderr
    share = day2.dir / "share/default"
    for gone in ("heartbeats/control2", "incarnations/control2.json", "members/control2.json"):
        assert not (share / gone).exists(), gone
    assert day2.node("control2") is None
    r = day2.lab.probe(day2.state)
    for name in ("control0", "control1"):
        status = r["phylactery"][name]
        assert sorted(m.get("node", m["name"]) for m in status["etcd"]["members"]) == ["control0", "control1"]
        assert sorted(b["name"] for b in status["haproxy"]["backends"]) == ["control0", "control1"]
        conf = Path(day2.state.node(name).root, "etc/keepalived/keepalived.conf").read_text()
        assert "10.0.0.23" not in conf, "keepalived no longer has control2 as a peer"
    st = day2.ek8s("status", "--json")
    doc = json.loads(st.stdout)
    assert [n["name"] for n in doc["nodes"]] == ["control0", "control1", "worker0"], st.stdout
    # The replacement: a new machine with the same name (a fresh root, a new boot).
    since = time.time()
    boot = lab_cmd(day2.dir, PREFIX, "boot", "control2")
    assert boot.returncode == 0, boot.stderr
    day2.lab.wait_ready(day2.state, 120, since=since, names=["control2"])
    mine = [e for e in day2.store.events() if e["node"] == "control2" and e["t"] >= since]
    assert "joined" in [e["event"] for e in mine]
    assert "pruned" not in [e["event"] for e in mine], "nothing stale was left to prune"

    def whole() -> bool:
        r = day2.lab.probe(day2.state)
        statuses = [r["phylactery"][c] for c in CONTROL]
        return all(
            isinstance(s, dict)
            and len(s["etcd"]["members"]) == 3
            and sum(b["status"].startswith("UP") for b in s["haproxy"]["backends"]) == 3
            for s in statuses
        )

    wait_for(whole, 60, 1.0, "3 etcd members and every HAProxy with 3 backends UP")
    day2.all_kept()
