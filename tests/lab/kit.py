"""What the lab tests share: booting a lab, running commands inside a node's namespace, the
operator's API calls behind the VIP (ConfigMaps: the objects every fault test keeps), etcdctl
against a member, and Phylactery's status. The ``lab`` fixture itself is in conftest.py.

Every helper works in both lab modes (:mod:`lab.runners`): a machine runs in its node's
network namespace, so what is run "in the namespace" here (host tools, the node's network)
reaches the same addresses in both; files of a node's root are read where the runner says the
host sees them (a machine's RAM root is in another mount namespace).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from lab import machines, runners
from lab.cluster import Lab, LabState
from lab.emulation import Emulation
from lab.image import ImageError, ensure_image

CONTROL = ["control0", "control1", "control2"]
ALL = [*CONTROL, "worker0", "worker1"]

KUBECTL_PY = """
import json, sys
from kubernetes import client, config
api = client.CoreV1Api(config.new_client_from_config(config_file=sys.argv[1]))
op, arg = sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
if op == "create":
    body = {"metadata": {"name": arg}, "data": {"kept": "yes"}}
    print(json.dumps(api.create_namespaced_config_map("default", body, _request_timeout=5).data))
elif op == "read":
    print(json.dumps(api.read_namespaced_config_map(arg, "default", _request_timeout=5).data))
elif op == "delete-node":
    api.delete_node(arg, _request_timeout=5)
    print("{}")
elif op == "delete-secret":
    api.delete_namespaced_secret(arg, "kube-system", _request_timeout=5)
    print("{}")
elif op == "ready":
    n = api.read_node(arg, _request_timeout=5)
    print(json.dumps({c.type: c.status for c in n.status.conditions}))
"""


def require_image() -> Path:
    """The lab's node image (built on first use, a few minutes, then cached); the test is
    skipped with the reason when it cannot be built here (no root, no debootstrap, no mirror)."""
    try:
        return ensure_image()
    except ImageError as err:
        pytest.skip(f"the lab's node image cannot be built here: {err}")


def boot_lab(
    lab: Lab,
    overrides: dict[str, Any],
    emulation: Emulation | None = None,
    wait: bool = True,
    mode: str = runners.PROCESSES,
) -> LabState:
    """3 control + 2 workers from nothing, as processes or machines (``mode``, a
    :mod:`lab.runners` mode; machines skip the test when the image cannot be built); with
    ``wait``, until every node is Ready (180 s)."""
    if mode == runners.MACHINES:
        require_image()
    state = lab.create(3, 2, emulation or Emulation(), overrides, mode=mode)
    lab.start_all(state)
    if wait:
        lab.wait_ready(state, 180, since=state.t0)
    return state


def healthy(lab: Lab, state: LabState) -> dict[str, Any]:
    """The lab's report once the cluster is whole (60 s): 3 members, a Node per node, ..."""
    return lab.wait_whole(state, 60)


def in_ns(state: LabState, node: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``argv`` (the host's programs and files) run in ``node``'s network namespace, which a
    machine shares (text output captured)."""
    return subprocess.run(
        ["ip", "netns", "exec", state.node(node).ns, *argv], capture_output=True, text=True, timeout=timeout
    )


def kubectl(state: LabState, via: str, *args: str) -> Any:
    """An API call through the VIP with the operator's kubeconfig, from ``via``'s namespace:
    ``create NAME`` / ``read NAME`` (a ConfigMap in ``default`` with ``{"kept": "yes"}``; its
    data), ``delete-node NAME`` and ``delete-secret NAME`` (in kube-system; ``{}``),
    ``ready NAME`` (the Node's conditions). Its JSON answer, or None when the API refused or
    did not answer."""
    kubeconfig = str(Path(state.share) / "default/kube.config")
    res = in_ns(state, via, sys.executable, "-c", KUBECTL_PY, kubeconfig, *args)
    return json.loads(res.stdout) if res.returncode == 0 else None


def etcdctl(state: LabState, via: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``etcdctl`` (v3 API) against ``via``'s member, from its namespace, with the node's
    etcd health-check client certificate (kubeadm's ``/etc/kubernetes/pki/etcd``, read where
    the host sees the node's root). Raises :class:`lab.runners.RunnerError` when ``via`` is a
    machine that is not running."""
    node = state.node(via)
    pki = Lab.runner(state).host_path(state, node, "/etc/kubernetes/pki/etcd")
    return subprocess.run(
        [
            "ip", "netns", "exec", node.ns, "etcdctl", f"--endpoints=https://{node.address}:2379",
            f"--cacert={pki / 'ca.crt'}", f"--cert={pki / 'healthcheck-client.crt'}",
            f"--key={pki / 'healthcheck-client.key'}", "--command-timeout=3s", *args,
        ],
        capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"},
    )  # fmt: skip


def members(state: LabState, via: str) -> dict[str, int] | None:
    """etcd's member list (name -> id) as ``etcdctl member list`` shows it from ``via``'s
    member (etcd answers it from its own view, quorum or not), or None."""
    res = etcdctl(state, via, "-w", "json", "member", "list")
    if res.returncode != 0:
        return None
    return {m.get("name", ""): int(m["ID"]) for m in json.loads(res.stdout)["members"]}


def phylactery_status(state: LabState, node: str, via: str = "worker0") -> dict[str, Any]:
    """``GET /v1/status`` of ``node``'s Phylactery, from ``via``'s namespace."""
    res = in_ns(state, via, "curl", "-sf", "-m", "5", f"http://{state.node(node).address}:9999/v1/status")
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def etcd_member_names(lab: Lab, state: LabState, via: str) -> list[str]:
    """The etcd members in ``via``'s Phylactery's view (the lab's probe) by node, sorted (k3s
    names them ``<node>-<8 hex digits>``; Phylactery's status maps them to nodes)."""
    r = lab.probe(state)
    return sorted(m.get("node", m["name"]) for m in r["phylactery"][via]["etcd"]["members"])


def lab_processes(lab_dir: Path) -> list[str]:
    """Processes whose command line names the lab's directory (agents, machine launchers,
    systemd-nspawn), as ``pid (status): command``."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(lab_dir) in cmd:
            out.append(f"{p.info['pid']} ({p.info['status']}): {cmd[:120]}")
    return out


def lab_cgroups(prefix: str) -> list[Path]:
    """Machine cgroups (``ek8s-lab.<prefix>-*``, :mod:`lab.machines`) below this process's
    cgroup in systemd's hierarchies."""
    parents = machines.own_cgroups(Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text())
    return [d for p in parents for d in p.glob(f"{machines.CGROUP_PREFIX}{prefix}-*")]
