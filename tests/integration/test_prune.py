"""Prune against a real 3-member etcd cluster with TLS, and Nodes through the API
(the emulated kube-apiserver storing them in that etcd, the official kubernetes client)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from core.drivers import k3s
from core.etcd import kubeadm_client_context
from lab import pki
from phylactery.prune import PruneError, PruneRefused, prune_node, stale_members
from tests.conftest import free_port, wait_for
from tests.integration.conftest import EtcdCluster


def members(cluster: EtcdCluster) -> list[tuple[str, set[str]]]:
    async def _list():  # type: ignore[no-untyped-def]
        async with cluster.client() as c:
            return [(m.name, m.peer_hosts) for m in await c.member_list()]

    return sorted(asyncio.run(_list()))


@pytest.fixture
def api(etcd_cluster: EtcdCluster, tmp_path: Path) -> Iterator[Path]:
    """An emulated API server on 127.0.0.1 backed by the etcd cluster; yields admin.conf."""
    d = etcd_cluster.pki_dir
    ca = pki.new_ca("kubernetes")
    pki.write_pair(d, "ca", ca)
    pki.write_pair(d, "apiserver", pki.issue(ca, "kube-apiserver", ips=("127.0.0.1",), server=True))
    port = free_port()
    conf = {
        "bind_address": "127.0.0.1",
        "port": port,
        "tls_cert": str(d / "apiserver.crt"),
        "tls_key": str(d / "apiserver.key"),
        "client_ca": str(d / "ca.crt"),
        "pki_dir": str(d),
        "etcd_servers": [m.client_url for m in etcd_cluster.members],
        "etcd_ca": str(d / "etcd/ca.crt"),
        "etcd_cert": str(d / "apiserver-etcd-client.crt"),
        "etcd_key": str(d / "apiserver-etcd-client.key"),
    }
    (tmp_path / "apiserver.json").write_text(json.dumps(conf))
    admin = tmp_path / "admin.conf"
    cert = pki.issue(ca, "kubernetes-admin", orgs=("kubeadm:cluster-admins",), client=True)
    admin.write_bytes(pki.kubeconfig(f"https://127.0.0.1:{port}", ca[0], cert, "kubernetes-admin", "test"))
    log = open(tmp_path / "apiserver.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.apiserver", "--config", str(tmp_path / "apiserver.json")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(admin)))

        def up() -> bool:
            try:
                core.list_node(_request_timeout=1)
                return True
            except Exception:
                return False

        wait_for(up, 20, 0.1, "emulated API server answers")
        for i, m in enumerate(etcd_cluster.members):
            core.create_node(
                {"metadata": {"name": f"node{i}"}, "status": {"addresses": [{"type": "InternalIP", "address": m.host}]}}
            )
        yield admin
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def node_names(admin: Path) -> list[str]:
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(admin)))
    return sorted(n.metadata.name for n in core.list_node().items)


def run_prune(cluster: EtcdCluster, admin: Path, name: str, address: str):  # type: ignore[no-untyped-def]
    return asyncio.run(
        prune_node(
            name=name,
            address=address,
            self_name="node0",
            kubeconfig=admin,
            etcd_endpoint=cluster.members[0].client_url,
            etcd_context=kubeadm_client_context(cluster.pki_dir),
            kinds=("node", "etcd_member"),
            member_node=lambda member: member,  # kubeadm's: members are named as their node
        )
    )


def reboot_member(cluster: EtcdCluster, index: int) -> None:
    """The member's node rebooted: its etcd (and its data, in RAM) is gone."""
    proc = cluster.members[index].proc
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def test_prune_refuses_a_member_that_still_answers(etcd_cluster: EtcdCluster, api: Path) -> None:
    with pytest.raises(PruneRefused, match="node1 is alive"):
        run_prune(etcd_cluster, api, "node1", "10.9.9.9")
    assert len(members(etcd_cluster)) == 3 and "node1" in node_names(api), "nothing removed"


def test_prune_by_name_removes_member_and_node_and_keeps_the_others(etcd_cluster: EtcdCluster, api: Path) -> None:
    reboot_member(etcd_cluster, 1)
    result = run_prune(etcd_cluster, api, "node1", "10.9.9.9")
    assert [m["name"] for m in result.removed_etcd_members] == ["node1"]
    assert result.deleted_nodes == ["node1"]
    assert [name for name, _ in members(etcd_cluster)] == ["node0", "node2"]
    assert node_names(api) == ["node0", "node2"]
    # Idempotent: a second prune finds nothing and succeeds.
    again = run_prune(etcd_cluster, api, "node1", "10.9.9.9")
    assert again.removed_etcd_members == [] and again.deleted_nodes == []


def test_prune_by_peer_address_only(etcd_cluster: EtcdCluster, api: Path) -> None:
    reboot_member(etcd_cluster, 2)
    result = run_prune(etcd_cluster, api, "renamed-node", "127.0.0.3")
    assert [m["name"] for m in result.removed_etcd_members] == ["node2"]
    assert result.deleted_nodes == ["node2"]
    assert members(etcd_cluster) == [("node0", {"127.0.0.1"}), ("node1", {"127.0.0.2"})]


def test_prune_refuses_the_serving_node(etcd_cluster: EtcdCluster, api: Path) -> None:
    with pytest.raises(ValueError, match="this node"):
        run_prune(etcd_cluster, api, "node0", "127.0.0.1")
    assert len(members(etcd_cluster)) == 3


def test_prune_reports_an_unreachable_api(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    reboot_member(etcd_cluster, 1)
    with pytest.raises(PruneError, match="no admin kubeconfig"):
        run_prune(etcd_cluster, tmp_path / "missing.conf", "node1", "127.0.0.2")


def test_address_match_is_not_a_substring_match() -> None:
    from core.etcd import EtcdMember

    ms = [
        EtcdMember(1, "a", ("https://10.0.0.2:2380",), ()),
        EtcdMember(2, "b", ("https://10.0.0.21:2380",), ()),
        EtcdMember(3, "c", ("https://10.0.0.22:2380",), ()),
    ]
    assert [m.name for m in stale_members(ms, "x", "10.0.0.2", None, str)] == ["a"]
    assert stale_members(ms, "a", "10.0.0.2", 1, str) == []


def test_k3s_prune_deletes_the_node_password_secrets_of_the_node_only(etcd_cluster: EtcdCluster, api: Path) -> None:
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(api)))
    for n in ("node0", "node1", "node2"):
        core.create_namespaced_secret("kube-system", {"metadata": {"name": f"{n}.node-password.k3s"}, "data": {}})
    reboot_member(etcd_cluster, 1)
    result = asyncio.run(
        prune_node(
            name="node1",
            address="127.0.0.2",
            self_name="node0",
            kubeconfig=api,
            etcd_endpoint=etcd_cluster.members[0].client_url,
            etcd_context=kubeadm_client_context(etcd_cluster.pki_dir),
            kinds=("node", "etcd_member", "node_password"),
            member_node=k3s.member_node,
        )
    )
    assert result.deleted_secrets == ["kube-system/node1.node-password.k3s"]
    assert [m["name"] for m in result.removed_etcd_members] == ["node1"]  # by its peer address
    left = sorted(s.metadata.name for s in core.list_namespaced_secret("kube-system").items)
    assert left == ["node0.node-password.k3s", "node2.node-password.k3s"]


def add_node(core: client.CoreV1Api, name: str, address: str, boot_id: str, ready: bool) -> None:
    """A Node as its kubelet reports it: InternalIP, nodeInfo.bootID and the Ready condition."""
    status = {
        "addresses": [{"type": "InternalIP", "address": address}],
        "nodeInfo": {"bootID": boot_id, "machineID": name, "systemUUID": name, "kernelVersion": "", "osImage": "",
                     "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "",
                     "operatingSystem": "linux", "architecture": "amd64"},
        "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}],
    }  # fmt: skip
    core.create_node({"metadata": {"name": name}, "status": status})
    core.create_namespaced_secret("kube-system", {"metadata": {"name": f"{name}.node-password.k3s"}, "data": {}})


def test_a_workers_credential_prunes_only_its_own_previous_incarnation(etcd_cluster: EtcdCluster, api: Path) -> None:
    """Issue 20, through the real client and API: the worker credential (its request from
    10.0.0.41) removes worker0's Node of an earlier boot and its node-password Secret; naming
    worker1, by name or at worker1's address, with worker1's copied boot id, is forbidden and
    removes nothing; a Node of its current boot stays."""
    from phylactery.prune import PruneForbidden, Requester

    core = client.CoreV1Api(config.new_client_from_config(config_file=str(api)))
    add_node(core, "worker0", "10.0.0.41", "boot-before-the-reboot", ready=True)
    add_node(core, "worker1", "10.0.0.42", "boot-worker1", ready=True)

    def prune(name: str, boot: str, address: str = "10.0.0.41"):  # type: ignore[no-untyped-def]
        return asyncio.run(
            prune_node(
                name=name,
                address=address,
                self_name="node0",
                kubeconfig=api,
                etcd_endpoint=etcd_cluster.members[0].client_url,
                etcd_context=kubeadm_client_context(etcd_cluster.pki_dir),
                kinds=("node", "etcd_member", "node_password"),
                member_node=k3s.member_node,
                requester=Requester(credential="worker", address="10.0.0.41", boot_id=boot),
            )
        )

    with pytest.raises(PruneForbidden, match=r"Node worker1's InternalIP is 10\.0\.0\.42"):
        prune("worker1", "boot-worker1")
    kept = prune("ghost", "x", address="10.0.0.41")
    assert kept.deleted_nodes == [] and kept.deleted_secrets == [] and kept.kept_nodes[0]["name"] == "worker0"
    result = prune("worker0", "boot-after-the-reboot")
    assert result.deleted_nodes == ["worker0"] and result.deleted_secrets == ["kube-system/worker0.node-password.k3s"]
    assert result.removed_etcd_members == [], "a worker's credential removes no other node's member"
    assert "worker1" in node_names(api) and len(members(etcd_cluster)) == 3
    add_node(core, "worker0", "10.0.0.41", "boot-after-the-reboot", ready=True)  # it rejoined
    again = prune("worker0", "boot-after-the-reboot")
    assert again.deleted_nodes == [] and [k["name"] for k in again.kept_nodes] == ["worker0"]
