"""The lab's emulated kubeadm and kubelet behave like kubeadm 1.32 and the kubelet where the
project depends on it (issue 11, point 6), against the lab's real etcd, HAProxy and keepalived.

The product (node agents, Phylactery) is stopped first, so what happens is kubeadm's,
the kubelet's and etcd's doing alone; each step is what an operator or the product would run
on a node:

* (b)+(d) a crashed control node that reboots and joins again without pruning: check-etcd
  refuses ("etcd cluster is not healthy"), before the same-name Node check, after the
  certificates, kubeconfig and kube-apiserver manifest were written;
* (a) the same with check-etcd skipped and only its Node deleted: kubeadm reuses the stale
  member, the new empty etcd takes its identity and crash-loops (``tocommit(N) is out of
  range [lastIndex(0)]``, the kubelet restarting it with back-off), the join times out;
* (c) ``kubeadm reset`` removes the node's member through the API server by peer URL;
* (e) quorum lost: ``--force-new-cluster`` added to the survivor's etcd manifest restarts
  etcd (the kubelet) as a one-member cluster with its data, removed again it restarts once
  more, still with the data;
* (c) ``kubeadm reset`` on a node whose member is gone only warns ("Failed to remove etcd
  member ... please manually remove this etcd member using etcdctl") and empties
  /var/lib/etcd;
* (f) ``kubeadm reset --skip-phases remove-etcd-member`` leaves /var/lib/etcd as it was (only
  that phase empties it), and the next ``kubeadm init`` there fails preflight with
  ``[ERROR DirAvailable--var-lib-etcd]``, in 1.32's words (the errors inside the error).

The lab runs kubeadm 1.32 here (``--kubernetes-version``): the phase that adds the member is
``control-plane-join/etcd`` (1.33+: ``etcd-join``, tests/lab/test_versions.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from core.fileperm import write_atomic
from core.services import ProcessServices
from lab import netns
from lab.cluster import Lab, LabState
from lab.emulation import Emulation
from tests.conftest import wait_for
from tests.lab.kit import etcdctl, in_ns, kubectl, members

LAB_PREFIX = "ek8sk"


def kubeadm(lab: Lab, state: LabState, node: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The lab's emulated kubeadm on ``node``, as the node agent runs it (``--rootfs``)."""
    return in_ns(state, node, str(lab.dir / "bin/kubeadm"), *args, "--rootfs", state.node(node).root, timeout=timeout)


def etcd_leader(state: LabState, via: str) -> str:
    """The name of the member ``via``'s member follows as leader."""
    res = etcdctl(state, via, "-w", "json", "endpoint", "status")
    assert res.returncode == 0, res.stderr
    leader = int(json.loads(res.stdout)[0]["Status"]["leader"])
    names = {v: k for k, v in (members(state, via) or {}).items()}
    return names[leader]


def quorum(state: LabState, via: str) -> bool:
    """Whether a linearizable read through ``via``'s member succeeds (it needs a quorum)."""
    return etcdctl(state, via, "get", "/registry/health").returncode == 0


def join_config(state: LabState, name: str, address: str, **extra: Any) -> str:
    """A control-plane JoinConfiguration as the driver renders it, plus ``extra`` fields,
    written to the node's ``/run/join.yaml``; returns that node path."""
    material = json.loads((Path(state.share) / "default/join.json").read_text())
    doc = {
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": material["api_server_endpoint"],
                "token": material["token"],
                "caCertHashes": material["ca_cert_hashes"],
            }
        },
        "nodeRegistration": {"name": name, "kubeletExtraArgs": [{"name": "node-ip", "value": address}]},
        "controlPlane": {
            "localAPIEndpoint": {"advertiseAddress": address, "bindPort": 6443},
            "certificateKey": material["certificate_key"],
        },
        **extra,
    }
    root = Path(state.node(name).root)
    (root / "run").mkdir(parents=True, exist_ok=True)
    (root / "run/join.yaml").write_text(yaml.safe_dump(doc))
    return "/run/join.yaml"


def reboot_without_agent(lab: Lab, state: LabState, name: str) -> Path:
    """A node's RAM root is gone and its cable is in again, but its agent is not started:
    the test runs kubeadm by hand. Returns the root."""
    root = Path(state.node(name).root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    netns.set_link(lab.prefix, name, up=True)
    return root


def product_steps_aside(state: LabState) -> None:
    """SIGKILL every node agent and stop every Phylactery: nothing prunes, reaps or resets
    from here on. HAProxy, keepalived, etcd, the API servers and kubelets keep running."""
    for n in state.nodes:
        if n.pid:
            os.kill(n.pid, signal.SIGKILL)
            wait_for(lambda pid=n.pid: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 10)
        ProcessServices(Path(n.root)).stop("phylactery")


@pytest.mark.lab
def test_stale_member_check_etcd_reset_and_force_new_cluster_as_kubeadm_1_32(lab: Lab) -> None:
    state = lab.create(3, 0, Emulation(kubernetes_version="v1.32.1"))
    lab.start_all(state)
    lab.wait_ready(state, 180, since=state.t0)
    lab.wait_whole(state, 60)
    product_steps_aside(state)
    lead = etcd_leader(state, "control0")
    # `gone` crashes and comes back; `cut` is cut off later. Neither leads etcd: the crash-loop
    # of (a) needs a leader that replicated to the old member (a leader elected after it died
    # knows no commit index for it, and the empty etcd then catches up as that member).
    gone, cut = (n for n in ("control2", "control1", "control0") if n != lead)
    gone_addr = state.node(gone).address
    assert kubectl(state, "create", "precious") == {"kept": "yes"}
    before = members(state, lead)
    assert before is not None and sorted(before) == ["control0", "control1", "control2"]

    # (b)+(d): `gone` crashes, reboots, joins again without anyone pruning its member.
    lab.stop_node(state, state.node(gone), crash=True)
    root = reboot_without_agent(lab, state, gone)
    path = join_config(state, gone, gone_addr, timeouts={"etcdAPICall": "1s"})
    res = kubeadm(lab, state, gone, "join", "--config", path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert (
        "error execution phase check-etcd: etcd cluster is not healthy: failed to dial endpoint "
        f"https://{gone_addr}:2379 with maintenance client: context deadline exceeded"
    ) in res.stderr, res.stderr
    assert "[check-etcd] Checking that the etcd cluster is healthy" in res.stdout
    # Its Node still reads Ready (crashed seconds ago): check-etcd came before that refusal ...
    assert kubectl(state, "ready", gone) == {"Ready": "True"}
    assert "already exists" not in res.stderr
    # ... and after the certificates, kubeconfig and manifest phases, whose files stay.
    for left in (
        "etc/kubernetes/pki/apiserver.crt",
        "etc/kubernetes/admin.conf",
        "etc/kubernetes/manifests/kube-apiserver.yaml",
    ):
        assert (root / left).exists(), left
    for absent in ("etc/kubernetes/kubelet.conf", "etc/kubernetes/manifests/etcd.yaml"):
        assert not (root / absent).exists(), absent
    assert members(state, lead) == before

    # (a): it reboots again; its Node is deleted but not its member, and check-etcd is skipped.
    root = reboot_without_agent(lab, state, gone)
    assert kubectl(state, "delete-node", gone) == {}
    assert etcd_leader(state, lead) == lead
    # kubeadm checks etcd's availability 8 times, 5 s apart, each retrying the crash-looping
    # member's endpoint for etcdAPICall before it gives up: 1 s of it makes the join ~43 s.
    path = join_config(state, gone, gone_addr, skipPhases=["check-etcd"], timeouts={"etcdAPICall": "1s"})
    res = kubeadm(lab, state, gone, "join", "--config", path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert (
        "error execution phase control-plane-join/etcd: error creating local etcd static pod manifest file: "
        "timeout waiting for etcd cluster to be available"
    ) in res.stderr, res.stderr
    assert f'The peer URL "https://{gone_addr}:2380" for the added etcd member already exists. Skipping' in res.stdout
    assert f"[etcd] Member {before[gone]:x} already promoted." in res.stdout
    assert "[etcd] Announced new etcd member joining to the existing etcd cluster" in res.stdout
    assert members(state, lead) == before, "the stale member is reused, not replaced"
    etcd_log = (root / "var/log/ek8s/etcd.log").read_text()
    assert "is out of range [lastIndex(0)]. Was the raft log corrupted, truncated, or lost?" in etcd_log
    kubelet_log = (root / "var/log/ek8s/kubelet.log").read_text()
    assert f'container etcd of static pod "etcd-{gone}_kube-system" exited: restarting it' in kubelet_log
    assert "Back-off 10s restarting failed container=etcd" in kubelet_log

    # (c): reset removes the node's member through the API server, by peer URL.
    res = kubeadm(lab, state, gone, "reset", "-f")
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'Reading configuration from the "kubeadm-config" ConfigMap' in res.stdout
    assert "[reset] Deleted contents of the etcd data directory: /var/lib/etcd" in res.stdout
    assert "Failed to remove etcd member" not in res.stderr
    assert members(state, lead) == {k: v for k, v in before.items() if k != gone}
    assert ProcessServices(root).pid("etcd") is None and not any((root / "var/lib/etcd").iterdir())

    # (e): `cut` crashes; `lead` holds 1 of 2 members, no quorum. Re-form etcd from it the way
    # an operator does with kubeadm: --force-new-cluster into its manifest, then out again.
    lab.stop_node(state, state.node(cut), crash=True)
    wait_for(lambda: not quorum(state, lead), 20, 0.5, "quorum lost")
    root_lead = Path(state.node(lead).root)
    manifest = root_lead / "etc/kubernetes/manifests/etcd.yaml"
    services = ProcessServices(root_lead)

    def set_force_new_cluster(on: bool) -> int | None:
        pod = yaml.safe_load(manifest.read_text())
        command = [a for a in pod["spec"]["containers"][0]["command"] if a != "--force-new-cluster"]
        pod["spec"]["containers"][0]["command"] = [*command, "--force-new-cluster"] if on else command
        old = services.pid("etcd")
        write_atomic(manifest, yaml.safe_dump(pod))
        return old

    for on in (True, False):
        old = set_force_new_cluster(on)
        wait_for(lambda old=old: services.pid("etcd") not in (None, old), 60, 0.1, "etcd restarted by the kubelet")
        pid = services.pid("etcd")
        assert pid is not None and ("--force-new-cluster" in psutil.Process(pid).cmdline()) == on
        wait_for(lambda: quorum(state, lead), 30, 0.5, "etcd answers reads")
        assert members(state, lead) == {lead: before[lead]}
        kept = wait_for(lambda: kubectl(state, "read", "precious"), 60, 0.5, "API answers again")
        assert kept == {"kept": "yes"}, "the survivor's data is kept"
    kubelet_log = (root_lead / "var/log/ek8s/kubelet.log").read_text()
    assert kubelet_log.count("has a changed command: killing it to restart") == 2

    # (c): `cut` comes back (cut off, not rebooted: its files are there); its member went with
    # --force-new-cluster. reset warns, goes on, and wipes /var/lib/etcd.
    netns.set_link(lab.prefix, cut, up=True)
    root = Path(state.node(cut).root)
    assert any((root / "var/lib/etcd").iterdir())
    res = kubeadm(lab, state, cut, "reset", "-f")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (
        "[reset] Failed to remove etcd member: no member id found for peer URL, please manually remove this etcd "
        "member using etcdctl"
    ) in res.stderr, res.stderr
    assert "[reset] Deleted contents of the etcd data directory: /var/lib/etcd" in res.stdout
    assert not any((root / "var/lib/etcd").iterdir()) and not any((root / "etc/kubernetes/manifests").iterdir())
    for gone_file in ("admin.conf", "super-admin.conf", "kubelet.conf"):
        assert not (root / "etc/kubernetes" / gone_file).exists(), gone_file
    assert members(state, lead) == {lead: before[lead]}

    # (f): the survivor resets without remove-etcd-member (as the driver does for a new
    # generation): its data stays, and init there fails preflight as kubeadm 1.32 words it.
    res = kubeadm(lab, state, lead, "reset", "-f", "--skip-phases", "remove-etcd-member")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Deleted contents of the etcd data directory" not in res.stdout
    assert (root_lead / "var/lib/etcd/member").is_dir(), "only remove-etcd-member empties the data directory"
    assert ProcessServices(root_lead).pid("etcd") is None and not (root_lead / "etc/kubernetes/kubelet.conf").exists()
    from core.config import load_config
    from core.drivers.kubeadm import render_init_config

    (root_lead / "run").mkdir(parents=True, exist_ok=True)
    init_doc = render_init_config(load_config(state.node(lead).config), "abcdef.0123456789abcdef", "0" * 64)
    (root_lead / "run/init.yaml").write_text(init_doc)
    res = kubeadm(lab, state, lead, "init", "--config", "/run/init.yaml", "--upload-certs")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "error execution phase preflight: [preflight] Some fatal errors occurred:\n" in res.stderr, res.stderr
    assert "\t[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty\n" in res.stderr, res.stderr
    assert not res.stderr.startswith("error: "), "kubeadm 1.32 prints no 'error: ' prefix"
    assert not (root_lead / "etc/kubernetes/pki/ca.crt").exists(), "preflight refused before the certs phase"
