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
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from lab import machines, netns, runners
from lab.cluster import Lab, LabState
from lab.emulation import Emulation, etcd_tool
from lab.image import ImageError, ensure_image

CONTROL = ["control0", "control1", "control2"]
ALL = [*CONTROL, "worker0", "worker1"]
K3S_MEMBER = re.compile(r"-[0-9a-f]{8}$")


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


def kubectl(state: LabState, op: str, *names: str) -> Any:
    """An API call through the VIP with the operator's kubeconfig, from the lab's manager
    namespace (its prober, :meth:`lab.cluster.Lab.api`): ``create NAME`` / ``read NAME`` (a
    ConfigMap in ``default`` with ``{"kept": "yes"}``; its data), ``read-many NAME...``
    (``{name: data, or {"status": HTTP status}}``; None unless the API answered all),
    ``delete-node NAME`` and ``delete-secret
    NAME`` (in kube-system; ``{}``), ``ready NAME`` (the Node's conditions). Its JSON answer,
    or None when the API refused or did not answer."""
    lab = Lab(Path(state.dir), state.prefix)

    def call(method: str, *args: Any) -> Any:
        answer = lab.api(method, *args)
        return None if answer is None or "result" not in answer else answer["result"]

    if op == "read-many":
        out = {}
        for name in names:
            answer = lab.api("read_namespaced_config_map", name, "default")
            if answer is None or "error" in answer:
                return None  # the API did not answer: the caller may wait
            out[name] = answer["result"].get("data") if "result" in answer else {"status": answer.get("status")}
        return out
    name = names[0]
    if op == "create":
        body = {"metadata": {"name": name}, "data": {"kept": "yes"}}
        made = call("create_namespaced_config_map", "default", body)
        return None if made is None else made.get("data")
    if op == "read":
        got = call("read_namespaced_config_map", name, "default")
        return None if got is None else got.get("data")
    if op == "delete-node":
        return None if call("delete_node", name) is None else {}
    if op == "delete-secret":
        return None if call("delete_namespaced_secret", name, "kube-system") is None else {}
    if op == "ready":
        node = call("read_node", name)
        return None if node is None else {c["type"]: c["status"] for c in node["status"]["conditions"]}
    raise ValueError(f"unknown op {op!r}")


def distribution(state: LabState, node: str) -> str:
    """The distribution in ``node``'s node.yaml (kubeadm when it names none)."""
    cfg = yaml.safe_load(Path(state.node(node).config).read_text()) or {}
    return str((cfg.get("kubernetes") or {}).get("distribution", "kubeadm"))


def etcdctl(state: LabState, via: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The lab's ``etcdctl`` 3.5 (gRPC, v3 API) against ``via``'s member, from its namespace,
    with the client pair its distribution made (kubeadm: ``/etc/kubernetes/pki/etcd/healthcheck-client``;
    k3s: ``/var/lib/rancher/k3s/server/tls/etcd/client``), read where the host sees the
    node's root (:meth:`lab.runners.NodeRunner.host_path`). Raises
    :class:`lab.runners.RunnerError` when ``via`` is a machine that is not running."""
    node = state.node(via)
    root = Lab.runner(state)
    if distribution(state, via) == "k3s":
        tls = root.host_path(state, node, "/var/lib/rancher/k3s/server/tls/etcd")
        ca, cert, key = tls / "server-ca.crt", tls / "client.crt", tls / "client.key"
    else:
        pki = root.host_path(state, node, "/etc/kubernetes/pki/etcd")
        ca, cert, key = pki / "ca.crt", pki / "healthcheck-client.crt", pki / "healthcheck-client.key"
    return subprocess.run(
        [
            "ip", "netns", "exec", node.ns, etcd_tool("etcdctl"), f"--endpoints=https://{node.address}:2379",
            f"--cacert={ca}", f"--cert={cert}", f"--key={key}", "--command-timeout=3s", *args,
        ],
        capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"},
    )  # fmt: skip


def members(state: LabState, via: str) -> dict[str, int] | None:
    """etcd's member list (node name -> member id) as ``etcdctl member list`` shows it from
    ``via``'s member (etcd answers it from its own view, quorum or not), or None. k3s names
    members ``<node>-<8 hex digits>``: the suffix is dropped."""
    res = etcdctl(state, via, "-w", "json", "member", "list")
    if res.returncode != 0:
        return None
    return {K3S_MEMBER.sub("", m.get("name", "")): int(m["ID"]) for m in json.loads(res.stdout)["members"]}


def share_dir(state: LabState) -> Path:
    """The lab cluster's directory on the share (the Warewulf server's view of it)."""
    return Path(state.share) / "default"


def phylactery_curl(state: LabState, via: str, url: str, *args: str, credential: str | None = "control") -> Any:
    """``curl`` from ``via``'s namespace to a Phylactery ``url`` (HTTPS, verified with the
    share's Phylactery CA) with ``credential``'s bearer token (``control``, ``worker`` or None),
    printing the body then the HTTP status on a line of its own (``-w``)."""
    share = share_dir(state)
    auth: list[str] = []
    if credential is not None:
        path = share / ("phylactery.token" if credential == "control" else "nodes/phylactery-worker.token")
        auth = ["-H", f"Authorization: Bearer {path.read_text().strip()}"]
    return in_ns(
        state, via, "curl", "-s", "-m", "10", "--cacert", str(share / "phylactery-ca.crt"),
        "-w", "\n%{http_code}", *auth, *args, url,
    )  # fmt: skip


def phylactery_call(
    state: LabState,
    via: str,
    node: str,
    path: str,
    body: dict[str, Any] | None = None,
    credential: str | None = "control",
) -> tuple[int, Any]:
    """(HTTP status, JSON answer) of ``path`` on ``node``'s Phylactery from ``via``'s namespace
    (POST with ``body``, else GET); status 0 when curl got no answer."""
    url = f"https://{state.node(node).address}:9999{path}"
    extra = ["-X", "POST", "-d", json.dumps(body)] if body is not None else []
    res = phylactery_curl(state, via, url, *extra, credential=credential)
    text, _, code = res.stdout.rpartition("\n")
    return int(code or 0), json.loads(text) if text.strip() else None


def phylactery_status(state: LabState, node: str, via: str = "worker0") -> dict[str, Any]:
    """``GET /v1/status`` of ``node``'s Phylactery (the control credential), from ``via``'s namespace."""
    code, doc = phylactery_call(state, via, node, "/v1/status")
    assert code == 200, (code, doc)
    return dict(doc)


def etcd_member_names(lab: Lab, state: LabState, via: str) -> list[str]:
    """The etcd members in ``via``'s Phylactery's view (the lab's probe) by node, sorted (k3s
    names them ``<node>-<8 hex digits>``; Phylactery's status maps them to nodes)."""
    r = lab.probe(state)
    return sorted(m.get("node", m["name"]) for m in r["phylactery"][via]["etcd"]["members"])


def lab_processes(lab_dir: Path) -> list[str]:
    """Processes whose command line names ``lab_dir`` (``"<pid>: <command>"``): none may
    outlive ``ek8s lab down``."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(lab_dir) in cmd:
            out.append(f"{p.info['pid']}: {cmd[:120]}")
    return out


def gone(procs: list[psutil.Process]) -> list[str]:
    """Which of ``procs`` (what :meth:`lab.cluster.Lab.processes` found before ``down``) still
    exist, zombies included (psutil counts a zombie as running), as ``"<pid> <status>"``;
    this test process first reaps those that are its own children (agents a test booted),
    which no ``down`` in another process can."""
    import contextlib
    import os

    for p in procs:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p.pid, os.WNOHANG)
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running():
                out.append(f"{p.pid} {p.status()}")
    return out


def lab_cgroups(prefix: str) -> list[Path]:
    """Machine cgroups (``ek8s-lab.<prefix>-*``, :mod:`lab.machines`) below this process's
    cgroup in systemd's hierarchies: none may outlive ``ek8s lab down``."""
    parents = machines.own_cgroups(Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text())
    return [d for p in parents for d in p.glob(f"{machines.CGROUP_PREFIX}{prefix}-*")]


# -- inside a node (a machine's own mount namespace and systemd; a process node's namespace) --
def inside(state: LabState, node: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``argv`` run inside ``node`` as ``ek8s lab exec`` runs it (the runner's ``exec_argv``:
    in a machine, its own files and systemd; in process mode, the node's namespace). A
    machine that is not running (yet) gives exit 2 and the reason on stderr, as the CLI does."""
    try:
        argv_full = Lab.runner(state).exec_argv(state, state.node(node), list(argv))
    except runners.RunnerError as err:
        return subprocess.CompletedProcess(list(argv), 2, "", str(err))
    return subprocess.run(argv_full, capture_output=True, text=True, timeout=timeout)


def boot_id(state: LabState, node: str) -> str:
    """The running kernel's boot id as ``node`` sees it (a machine: its own, new per boot)."""
    res = inside(state, node, "cat", "/proc/sys/kernel/random/boot_id")
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def failed_units(state: LabState, node: str) -> list[str]:
    """``systemctl --failed`` inside a machine, as unit names."""
    failed = inside(state, node, "systemctl", "--failed", "--no-legend", "--plain")
    assert failed.returncode == 0, failed.stderr
    return [line.split()[0] for line in failed.stdout.splitlines() if line.strip()]


def assert_no_failed_unit(state: LabState, node: str) -> None:
    """``systemctl --failed`` is empty inside the machine; otherwise fail with the failed
    units' journal. (The 219/CGROUP failures seen once came from machines sharing their
    units' cgroups; each machine has its own now, lab/machines.py.)"""
    units = failed_units(state, node)
    if units:
        journal = inside(state, node, "journalctl", "-b", "--no-pager", "--lines=40", *[f"--unit={u}" for u in units])
        pytest.fail(f"{node}: failed units {units}\n{journal.stdout}")


def link_up(ns: str) -> bool:
    """Whether the node's cable is in: ``eth0`` administratively up in its namespace."""
    return "UP" in json.loads(netns.ip("-n", ns, "-j", "link", "show", "eth0"))[0]["flags"]


def in_order(request: Any, fixture: str) -> Iterator[None]:
    """The body of a module's autouse fixture for lab steps that run in file order on one lab
    (its fixture ``fixture``, an object with a ``failed`` attribute): a step skips once an
    earlier one failed, and a failed step records its name (the ``rep_call`` report set by
    tests/conftest.py). Tests that do not use ``fixture`` run as they are."""
    if fixture not in request.fixturenames:
        yield
        return
    lab = request.getfixturevalue(fixture)
    if lab.failed:
        pytest.skip(f"the lab is not in the state this step starts from: {lab.failed} failed")
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        lab.failed = request.node.originalname
