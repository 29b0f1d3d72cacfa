"""The emulated kube-controller-manager's node lifecycle (lab/apiserver.py, NodeLifecycle)
times a Node from when it first sees it, as the real one does: after an etcd restore the
restored Nodes read Ready for node-monitor-grace-period, however old their last heartbeat;
then Unknown, written to etcd, so a controller that starts later does not make them Ready
again. A real 3-member etcd with TLS under the emulated API server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from lab import pki
from lab.apiserver import rfc3339
from tests.conftest import free_port, wait_for
from tests.integration.conftest import EtcdCluster

GRACE_S = 4.0


class ApiProc:
    def __init__(self, cluster: EtcdCluster, tmp: Path, name: str) -> None:
        d = cluster.pki_dir
        if not (d / "ca.crt").exists():
            ca = pki.new_ca("kubernetes")
            pki.write_pair(d, "ca", ca)
            pki.write_pair(d, "apiserver", pki.issue(ca, "kube-apiserver", ips=("127.0.0.1",), server=True))
        ca = pki.read_pair(d, "ca")
        self.port = free_port()
        conf = {
            "bind_address": "127.0.0.1",
            "port": self.port,
            "tls_cert": str(d / "apiserver.crt"),
            "tls_key": str(d / "apiserver.key"),
            "client_ca": str(d / "ca.crt"),
            "pki_dir": str(d),
            "etcd_servers": [m.client_url for m in cluster.members],
            "etcd_ca": str(d / "etcd/ca.crt"),
            "etcd_cert": str(d / "apiserver-etcd-client.crt"),
            "etcd_key": str(d / "apiserver-etcd-client.key"),
            "node_monitor_grace_s": GRACE_S,
        }
        (tmp / f"{name}.json").write_text(json.dumps(conf))
        self.admin = tmp / f"{name}-admin.conf"
        cert = pki.issue(ca, "kubernetes-admin", orgs=("kubeadm:cluster-admins",), client=True)
        self.admin.write_bytes(pki.kubeconfig(f"https://127.0.0.1:{self.port}", ca[0], cert, "kubernetes-admin", "t"))
        log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lab.apiserver", "--config", str(tmp / f"{name}.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.core = client.CoreV1Api(config.new_client_from_config(config_file=str(self.admin)))

        def up() -> bool:
            try:
                self.core.list_node(_request_timeout=1)
                return True
            except Exception:
                return False

        wait_for(up, 20, 0.1, "emulated API server answers")

    def ready(self, node: str) -> str:
        n = self.core.read_node(node)
        return next(c.status for c in n.status.conditions if c.type == "Ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def apis(etcd_cluster: EtcdCluster, tmp_path: Path) -> Iterator[list[ApiProc]]:
    made: list[ApiProc] = []
    yield made
    for a in made:
        a.stop()


def node_doc(name: str, heartbeat: float) -> dict[str, object]:
    t = rfc3339(heartbeat)
    return {
        "metadata": {"name": name},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": t, "lastTransitionTime": t}],
        },
    }


def test_restored_nodes_read_ready_for_the_grace_period_then_unknown_for_good(
    etcd_cluster: EtcdCluster, apis: list[ApiProc], tmp_path: Path
) -> None:
    # Nodes as a snapshot restored 10 minutes after their last heartbeat holds them.
    first = ApiProc(etcd_cluster, tmp_path, "first")
    apis.append(first)
    first.core.create_node(node_doc("old0", time.time() - 600))
    first.core.create_node(node_doc("old1", time.time() - 600))
    started = time.monotonic()
    # The controller first sees them now: Ready, however old the heartbeat ...
    time.sleep(GRACE_S / 2)
    assert first.ready("old0") == "True" and first.ready("old1") == "True"

    # ... and the silent one turns Unknown once the grace period since the first look is
    # over, while one whose kubelet posts stays Ready.
    def post(node: str) -> None:
        first.core.replace_node_status(node, node_doc(node, time.time()))

    def old0_unknown() -> bool:
        post("old1")
        return first.ready("old0") == "Unknown"

    wait_for(old0_unknown, GRACE_S + 5, 0.3, "old0 Unknown")
    assert time.monotonic() - started >= GRACE_S
    assert first.ready("old1") == "True"
    # Unknown is stored: a controller that starts later (a new API server) keeps it Unknown.
    second = ApiProc(etcd_cluster, tmp_path, "second")
    apis.append(second)
    assert second.ready("old0") == "Unknown"
    time.sleep(1.5)
    assert second.ready("old0") == "Unknown"
    n = second.core.read_node("old0")
    cond = next(c for c in n.status.conditions if c.type == "Ready")
    assert cond.reason == "NodeStatusUnknown" and cond.message == "Kubelet stopped posting node status."
