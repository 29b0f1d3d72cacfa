"""The emulated kubelet runs static pods as the real one does (lab/kubelet.py): a manifest's
command starts, a changed command restarts, a removed manifest stops, a crash restarts with
CrashLoopBackOff, a restarted kubelet adopts what runs, hidden files are never read.

Processes here are `sleep` and `sh`, not etcd: what is tested is the kubelet's part (the lab
tier runs real etcd through it)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from core.fileperm import write_atomic
from core.services import ProcessServices
from lab import pki
from lab.kubeadm.controlplane import static_pod
from lab.kubelet import BACKOFF_INITIAL_S, StaticPods, read_manifest
from tests.conftest import wait_for


def write_manifest(manifests: Path, command: list[str], name: str = "etcd") -> None:
    manifests.mkdir(parents=True, exist_ok=True)
    pod = static_pod(name, command, {}, {"etcd-data": manifests.parent / "data"})
    import yaml

    write_atomic(manifests / f"{name}.yaml", yaml.safe_dump(pod))


def cmdline(root: Path, service: str) -> list[str] | None:
    pid = ProcessServices(root).pid(service)
    if pid is None:
        return None
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return None


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Path]:
    """A node root with a kubelet.conf whose API never answers (the status thread retries;
    static pods do not depend on it). Stops every service left under it."""
    ca = pki.new_ca("kubernetes")
    cert = pki.issue(ca, "system:node:n1", orgs=("system:nodes",), client=True)
    (tmp_path / "etc/kubernetes").mkdir(parents=True)
    (tmp_path / "etc/kubernetes/kubelet.conf").write_bytes(
        pki.kubeconfig("https://127.0.0.1:1", ca[0], cert, "system:node:n1", "test")
    )
    yield tmp_path
    services = ProcessServices(tmp_path)
    for name in ("kubelet", "etcd", "kube-apiserver"):
        services.stop(name, timeout_s=2)


def start_kubelet(root: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "lab.kubelet",
        "--kubeconfig",
        str(root / "etc/kubernetes/kubelet.conf"),
        "--node-name",
        "n1",
        "--node-ip",
        "127.0.0.1",
        "--pki-dir",
        str(root / "var/lib/kubelet/pki"),
        "--pod-manifest-path",
        str(root / "etc/kubernetes/manifests"),
        "--node-root",
        str(root),
        "--healthz-port=0",  # in the host's own network namespace: no kubelet ports
        "--port=0",
    ]
    ProcessServices(root).start("kubelet", argv)


def test_static_pod_starts_restarts_on_a_changed_command_is_adopted_and_stops_with_its_manifest(node: Path) -> None:
    manifests = node / "etc/kubernetes/manifests"
    start_kubelet(node)
    t0 = time.monotonic()
    write_manifest(manifests, ["sleep", "1000"])
    wait_for(lambda: cmdline(node, "etcd") == ["sleep", "1000"], 10, 0.02, "static pod started")
    assert time.monotonic() - t0 < 2.0, "the kubelet must pick a new manifest up within its check interval"
    first = ProcessServices(node).pid("etcd")

    # A changed command (as adding --force-new-cluster is): the old process goes, the new runs.
    write_manifest(manifests, ["sleep", "2000"])
    wait_for(lambda: cmdline(node, "etcd") == ["sleep", "2000"], 10, 0.02, "restarted")
    second = ProcessServices(node).pid("etcd")
    assert first is not None and second != first

    # A hidden file (an atomic write's temporary) is never read, even when it is garbage.
    (manifests / ".etcd.yaml.tmp").write_text("{not: [yaml")
    # Stopping the kubelet leaves the static pod running; a new kubelet adopts it.
    ProcessServices(node).stop("kubelet")
    assert ProcessServices(node).pid("etcd") == second
    start_kubelet(node)
    time.sleep(1.0)
    assert ProcessServices(node).pid("etcd") == second, "an unchanged static pod must not be restarted"
    log = (node / "var/log/ek8s/kubelet.log").read_text()
    assert "adopted running container etcd" in log

    # The manifest goes: the process goes.
    (manifests / "etcd.yaml").unlink()
    wait_for(lambda: ProcessServices(node).pid("etcd") is None, 10, 0.05, "static pod stopped")


def test_a_process_without_a_manifest_is_stopped_when_the_kubelet_starts(node: Path) -> None:
    ProcessServices(node).start("etcd", ["sleep", "1000"])
    start_kubelet(node)
    wait_for(lambda: ProcessServices(node).pid("etcd") is None, 10, 0.05, "orphan static pod stopped")


def test_crash_loop_back_off_and_a_changed_command_starts_at_once(node: Path) -> None:
    manifests = node / "etc/kubernetes/manifests"
    clock = [1000.0]
    pods = StaticPods(manifests, node, "n1", now=lambda: clock[0])
    services = ProcessServices(node)
    marker = node / "starts"
    write_manifest(manifests, ["sh", "-c", f"echo x >> {marker}"])

    def starts() -> int:
        return len(marker.read_text().splitlines()) if marker.exists() else 0

    def exited() -> bool:
        return not services.is_running("etcd")

    pods.sync()
    wait_for(lambda: starts() == 1 and exited(), 10, 0.02, "first run")
    clock[0] += 1
    pods.sync()  # first restart: at once
    wait_for(lambda: starts() == 2 and exited(), 10, 0.02, "second run")
    clock[0] += BACKOFF_INITIAL_S - 2
    pods.sync()  # within the 10 s back-off since the last start: no restart
    time.sleep(0.3)
    assert starts() == 2
    clock[0] += 2.5
    pods.sync()  # back-off over
    wait_for(lambda: starts() == 3 and exited(), 10, 0.02, "third run")
    clock[0] += 2 * BACKOFF_INITIAL_S - 1
    pods.sync()  # the back-off doubled: 20 s
    time.sleep(0.3)
    assert starts() == 3
    # A changed command is a new container: no back-off.
    write_manifest(manifests, ["sh", "-c", f"echo y >> {marker}"])
    pods.sync()
    wait_for(lambda: starts() == 4, 10, 0.02, "changed command started at once")


def test_only_v1_pods_with_a_named_container_and_a_command_are_static_pods(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("apiVersion: v1\nkind: ConfigMap\n")
    with pytest.raises(ValueError):
        read_manifest(p, "n1")
    p.write_text("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: etcd\n")
    with pytest.raises(ValueError):
        read_manifest(p, "n1")
    p.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: etcd, namespace: kube-system}\n"
        "spec:\n  containers:\n  - name: etcd\n    command: [etcd, --name=a]\n    args: [--x]\n"
    )
    sp = read_manifest(p, "n1")
    assert (sp.service, sp.argv, sp.pod) == ("etcd", ("etcd", "--name=a", "--x"), "etcd-n1_kube-system")


def test_sigterm_leaves_static_pods_running(node: Path) -> None:
    write_manifest(node / "etc/kubernetes/manifests", ["sleep", "1000"])
    start_kubelet(node)
    wait_for(lambda: ProcessServices(node).pid("etcd") is not None, 10, 0.02, "started")
    pid = ProcessServices(node).pid("kubelet")
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: ProcessServices(node).pid("kubelet") is None, 10, 0.05, "kubelet exited")
    assert ProcessServices(node).pid("etcd") is not None
