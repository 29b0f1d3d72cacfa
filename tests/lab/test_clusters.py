"""Two clusters side by side on one share and one network, as two inventories on one
Warewulf server make them (docs/operations.md, "Several clusters on one Warewulf server"):
each `ek8s status` shows only its own, an unnamed cluster is refused as ambiguous, join
material and CA pins are per cluster, and a node of cluster A given B's name never joins B."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.share import ShareStore
from lab.cluster import Lab
from tests.conftest import wait_for
from tests.lab.refusals import PORTS, emulated_join
from tests.lab.test_day2 import inventory, lab_cmd, operator, publish

LAB_PREFIX = "ek8sm"  # tests.lab.conftest's lab fixture


@pytest.mark.lab
def test_two_clusters_side_by_side_each_sees_its_own_and_refuses_the_others_node(lab: Lab, tmp_path: Path) -> None:
    up = lab_cmd(lab.dir, LAB_PREFIX, "up", "--control", "2", "--workers", "2", "--second-cluster",
                 "control1,worker1", "--timeout", "180", "--set", "phylactery.snapshot_interval_s=2")  # fmt: skip
    assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
    share = lab.dir / "share"

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return operator(lab.dir, LAB_PREFIX, "status", "--share", str(share), *args)

    ambiguous = status("--json")
    assert ambiguous.returncode == 2 and "holds several clusters (b, default)" in ambiguous.stderr
    mine = {}
    for cluster in ("default", "b"):
        res = status("--cluster", cluster, "--json")
        doc = json.loads(res.stdout)
        mine[cluster] = ([n["name"] for n in doc["nodes"]], doc["etcd_members"], doc["vip_holder"])
    assert mine == {
        "default": (["control0", "worker0"], ["control0"], "control0"),
        "b": (["control1", "worker1"], ["control1"], "control1"),
    }
    # Join material and CA pins are the cluster's: A's pieces against B's endpoint are refused.
    a = json.loads((share / "default/join.json").read_text())
    b = json.loads((share / "b/join.json").read_text())

    def join(token: str, pins: list[str]) -> dict[str, object]:
        return {
            "apiVersion": "kubeadm.k8s.io/v1beta4",
            "kind": "JoinConfiguration",
            "discovery": {"bootstrapToken": {"apiServerEndpoint": b["api_server_endpoint"], "token": token,
                                             "caCertHashes": pins}},
            # It runs in control0's namespace, whose ports are taken: kubeadm's preflight comes
            # before discovery, so those checks are ignored as an operator would (refusals.py).
            "nodeRegistration": {"name": "intruder", "kubeletExtraArgs": [{"name": "node-ip", "value": "10.0.0.77"}],
                                 "ignorePreflightErrors": PORTS},
        }  # fmt: skip

    assert b["api_server_endpoint"] == "vip-b.kubernetes.local:8443" and a["ca_cert_hashes"] != b["ca_cert_hashes"]
    res = emulated_join(lambda *x, **k: None, lab.dir, "scratch-token", join(a["token"], b["ca_cert_hashes"]))
    assert res.returncode == 1 and "could not find a JWS signature in the cluster-info ConfigMap" in res.stderr
    res = emulated_join(lambda *x, **k: None, lab.dir, "scratch-pin", join(b["token"], a["ca_cert_hashes"]))
    assert res.returncode == 1 and "none of the public keys" in res.stderr
    # A node of cluster A given B's name: B's published inventory does not list it; it never joins B.
    b_nodes = [("control1", "control", "10.0.0.22"), ("worker1", "worker", "10.0.0.42")]
    vip_b = {"address": "10.0.0.20", "hostname": "vip-b.kubernetes.local", "virtual_router_id": 52}
    res = publish(inventory(tmp_path / "b.yaml", share, "b", b_nodes, vip=vip_b))
    assert res.returncode == 0, res.stderr
    worker0 = lab.load().node("worker0")
    cfg = yaml.safe_load(Path(worker0.config).read_text())
    cfg["cluster"] = "b"  # and B's VIP: every piece of B's config but the node list
    cfg["vip"].update(address="10.0.0.20", hostname="vip-b.kubernetes.local", virtual_router_id=52)
    cfg.setdefault("timeouts", {})["join_attempts"] = 1
    Path(worker0.config).write_text(yaml.safe_dump(cfg))
    since = time.time()
    res = lab_cmd(lab.dir, LAB_PREFIX, "reboot", "--no-wait", "worker0")
    assert res.returncode == 0, res.stderr
    b_store = ShareStore(share, "b", "test")

    def refused() -> list[dict[str, Any]]:
        found = b_store.events(since=since)
        return [e for e in found if e["node"] == "worker0" and e["event"] == "join_failed"]

    failed = wait_for(refused, 90, 1.0, "worker0's join into cluster b refused")
    assert "is not a node of cluster b: the inventory published by" in failed[0]["message"]
    res = status("--cluster", "b", "--json")
    nodes = {n["name"]: n for n in json.loads(res.stdout)["nodes"]}
    assert nodes["worker0"]["ready"] is None, "no Node of worker0 in cluster b's API"
    assert nodes["control1"]["ready"] and nodes["worker1"]["ready"]
