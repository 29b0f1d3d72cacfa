"""Integration tier: needs root and the real daemons (etcd, HAProxy, keepalived) and tools.

`make test` installs them; a missing one fails the tier with the command that installs it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.etcd import EtcdClient, kubeadm_client_context
from lab import pki
from lab.emulation import etcd_tool
from lab.nodekit import etcd_argv
from tests.conftest import free_port, wait_for

TOOLS = ("haproxy", "keepalived", "ip")
# The lab's etcd 3.5 (make etcd; lab/emulation.py): what every etcd of these tests runs.
ETCD = etcd_tool("etcd")


def require_root_and_tools() -> None:
    """Fail (not skip) without root or a system tool: a tier that skips proves nothing."""
    missing = [t for t in (*TOOLS, ETCD) if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing system tools {missing}: run 'make test' (it installs them)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("this tier needs root (network namespaces, VRRP, etcd on loopback)", pytrace=False)


@pytest.fixture(autouse=True, scope="session")
def _root_and_tools() -> None:
    require_root_and_tools()


@dataclass
class EtcdMemberProc:
    name: str
    host: str
    client_port: int
    peer_port: int
    proc: subprocess.Popen[bytes]

    @property
    def client_url(self) -> str:
        return f"https://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.host}:{self.peer_port}"


@dataclass
class EtcdCluster:
    pki_dir: Path
    members: list[EtcdMemberProc]

    def client(self, member: int = 0) -> EtcdClient:
        return EtcdClient([self.members[member].client_url], kubeadm_client_context(self.pki_dir))


def make_etcd_pki(pki_dir: Path, hosts: list[str]) -> None:
    """The etcd part of a kubeadm PKI: CA, one server/peer pair for all hosts, a client cert."""
    etcd_ca = pki.new_ca("etcd-ca")
    pki.write_pair(pki_dir / "etcd", "ca", etcd_ca)
    both = pki.issue(etcd_ca, "etcd", dns=("localhost",), ips=tuple(hosts), server=True, client=True)
    pki.write_pair(pki_dir / "etcd", "server", both)
    pki.write_pair(pki_dir / "etcd", "peer", both)
    pki.write_pair(pki_dir, "apiserver-etcd-client", pki.issue(etcd_ca, "kube-apiserver-etcd-client", client=True))


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """Three real etcd members with client-certificate TLS on 127.0.0.1-3."""
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    pki_dir = tmp_path / "pki"
    make_etcd_pki(pki_dir, hosts)
    spec = [(f"node{i}", h, free_port(h), free_port(h)) for i, h in enumerate(hosts)]
    initial = ",".join(f"{n}=https://{h}:{pp}" for n, h, _, pp in spec)
    d = pki_dir / "etcd"
    members = []
    try:
        for name, host, cport, pport in spec:
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            argv = etcd_argv(
                ETCD, name, tmp_path / name, d, [f"https://{host}:{cport}"], f"https://{host}:{pport}", initial, "new"
            )
            proc = subprocess.Popen(
                [*argv, f"--listen-metrics-urls=http://{host}:{free_port(host)}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            members.append(EtcdMemberProc(name, host, cport, pport, proc))
        cluster = EtcdCluster(pki_dir, members)

        async def healthy() -> bool:
            try:
                async with cluster.client() as c:
                    await c.put("/probe", b"1")
                    return len(await c.member_list()) == 3
            except Exception:
                return False

        wait_for(lambda: asyncio.run(healthy()), 30, 0.2, "3-member etcd cluster healthy")
        yield cluster
    finally:
        for m in members:
            if m.proc.poll() is None:
                os.killpg(m.proc.pid, signal.SIGKILL)
            m.proc.wait(timeout=10)
