"""Shared fixtures: real etcd, real HAProxy, real keepalived; nothing mocked.

Every process a fixture starts is stopped and every file it made is removed, also when the
test fails. Network traffic stays on loopback (127.0.0.0/8) or inside namespaces the tests
create themselves.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import pki
from lab.kubeadm import etcd_argv
from phylactery.etcd import EtcdClient, kubeadm_client_context

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    missing = [t for t in ("etcd", "haproxy", "keepalived", "ip") if shutil.which(t) is None]
    if missing:
        raise pytest.UsageError(f"missing system tools {missing}: run 'make test' (it installs them)")
    if os.geteuid() != 0:
        raise pytest.UsageError("the tests need root (network namespaces, VRRP, etcd on loopback)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(check, timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not true after {timeout_s}s")


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
                "etcd", name, tmp_path / name, d, [f"https://{host}:{cport}"], f"https://{host}:{pport}", initial, "new"
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Remember each phase's outcome on the item, so fixtures can keep logs of failed tests."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def keep_logs_if_failed(request: pytest.FixtureRequest, lab_dir: Path, dest: Path) -> None:
    """Copy a lab's logs next to the test's tmp files when the test failed (before `down`)."""
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed or not lab_dir.exists():
        return
    for log in list(lab_dir.glob("logs/*.log")) + list(lab_dir.glob("nodes/*/var/log/ek8s/*.log")):
        target = dest / "lab-logs" / log.relative_to(lab_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, target)
    events = lab_dir / "share/default/events.jsonl"
    if events.exists():
        shutil.copy(events, dest / "lab-logs/events.jsonl")
    print(f"lab logs kept in {dest / 'lab-logs'}")
