"""A formation and a reboot-rejoin per supported Kubernetes minor and distribution: 3 control
+ 1 worker from nothing with ``--kubernetes-version``, then a control node and the worker
rebooted; every node Ready again, nothing stale. For kubeadm, the emulated kubeadm took each
version's path (core/versions.py): 1.32 waits for the API behind the endpoint and joins etcd in
``control-plane-join/etcd`` with every kubelet on the VIP; 1.33+ checks each component on the
node, joins etcd in ``etcd-join`` and points a control node's kubelet at its own API server.

``make test`` runs none of them: kubeadm 1.32's path is ``test_emulated_kubeadm.py``'s
(which forms a 1.32 cluster and goes through its stale-member check, etcd reset and
force-new-cluster), the default 1.36 every other lab test's, the upgrade tests go from 1.34 to
1.35. ``EK8S_LAB_VERSIONS=1.32`` runs 1.32 for both distributions (~40 s kubeadm, ~70 s k3s),
``EK8S_LAB_VERSIONS=all`` every minor for both.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from core import versions
from core.versions import DEFAULT_KUBERNETES_VERSION
from lab.cluster import Lab
from lab.emulation import Emulation
from lab.pki import parse_kubeconfig
from tests.lab.kit import healthy, members

LAB_PREFIX = "ek8sv"
WANTED = os.environ.get("EK8S_LAB_VERSIONS", "")
MINORS = ["v1.32.1"] if WANTED else []
if WANTED == "all":
    MINORS += ["v1.33.0", "v1.34.0", "v1.35.0", DEFAULT_KUBERNETES_VERSION]
CASES = [pytest.param(d, v, id=f"{d}-{v}") for d in ("kubeadm", "k3s") for v in MINORS]


@pytest.mark.lab
@pytest.mark.parametrize(("distribution", "version"), CASES)
def test_formation_and_reboot_rejoin(lab: Lab, distribution: str, version: str) -> None:
    overrides = {"kubernetes": {"distribution": distribution}} if distribution != "kubeadm" else {}
    state = lab.create(3, 1, Emulation(kubernetes_version=version), overrides)
    lab.start_all(state)
    lab.wait_ready(state, 180, since=state.t0)
    r = healthy(lab, state)
    assert sorted(n["name"] for n in r["nodes"]) == ["control0", "control1", "control2", "worker0"]
    assert r["etcd_members"] == 3
    if distribution == "kubeadm":
        leader = str(r["leader"])
        joiner = next(n for n in ("control1", "control2", "control0") if n != leader)
        v = versions.parse(version)
        leader_log = Path(state.node(leader).log).read_text()
        joiner_log = Path(state.node(joiner).log).read_text()
        assert f"EMULATED kubeadm {version}" in leader_log
        if versions.kubeadm_waits_for_all_components(v):
            assert "[control-plane-check] Checking kube-apiserver at https://" in leader_log
            assert "[control-plane-check] kube-apiserver is healthy" in joiner_log
        else:
            assert "[api-check] The API server is healthy" in leader_log
            assert "[control-plane-check]" not in joiner_log
        # Which phase joined etcd, seen through the emulation's own timings (phase names).
        timings = [line for line in (lab.dir / "timings.jsonl").read_text().splitlines() if f'"{joiner}"' in line]
        joined = [line for line in timings if '"command": "join"' in line and '"ok": true' in line]
        assert joined and f'"{versions.kubeadm_etcd_join_phase(v)}"' in joined[-1], joined
        server, _, _ = parse_kubeconfig((Path(state.node(joiner).root) / "etc/kubernetes/kubelet.conf").read_bytes())
        local = f"https://{state.node(joiner).address}:6443"
        assert server == (local if versions.kubeadm_kubelet_local_mode(v) else "https://vip.kubernetes.local:8443")
        worker, _, _ = parse_kubeconfig((Path(state.node("worker0").root) / "etc/kubernetes/kubelet.conf").read_bytes())
        assert worker == "https://vip.kubernetes.local:8443"
    else:
        joiner = "control1"
    rebooted = time.time()
    lab.reboot_nodes(lab.load(), [joiner, "worker0"])
    r = healthy(lab, lab.load())
    assert all(n["ready"] for n in r["nodes"]), r["nodes"]
    assert sorted(members(lab.load(), "control0" if joiner != "control0" else "control1") or {}) == [
        "control0",
        "control1",
        "control2",
    ]
    failed = [e for e in lab.events() if e["t"] >= rebooted and e["event"] in ("join_failed", "init_failed")]
    assert failed == [], failed
