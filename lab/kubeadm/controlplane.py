"""EMULATED kubeadm's control-plane pieces on a node (lab only): the static Pod manifests of
etcd and the emulated kube-apiserver (``phases/etcd/local.go``, ``phases/controlplane``,
``util/staticpod/utils.go``), the kubeconfig server a node's kubelet uses, and starting the
emulated kubelet (``phases/kubelet``), which runs the manifests (:mod:`lab.kubelet`).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from core import versions
from core.fileperm import ensure_dir, write_atomic
from core.services import ProcessServices
from core.versions import KubernetesVersion
from lab import emulation, forkclient
from lab.kubeadm.workflow import KubeadmError, say
from lab.nodekit import Root, etcd_argv

MANIFESTS = "/etc/kubernetes/manifests"
ETCD_POD = "etcd"
APISERVER_POD = "kube-apiserver"
ETCD_CLIENT_URLS_ANNOTATION = "kubeadm.kubernetes.io/etcd.advertise-client-urls"
APISERVER_ENDPOINT_ANNOTATION = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"


def static_pod(name: str, command: list[str], annotations: dict[str, str], volumes: dict[str, Path]) -> dict[str, Any]:
    """A static Pod manifest as kubeadm writes one (``util/staticpod/utils.go``
    ``ComponentPod``): ``metadata.name`` is the component (the kubelet names the mirror Pod
    ``<name>-<node>``), namespace ``kube-system``, labels ``component`` and ``tier:
    control-plane``, one container named ``name`` running ``command``, host network,
    ``system-node-critical``, and each of ``volumes`` (name -> host path) as a
    ``DirectoryOrCreate`` hostPath mounted at the same path. No image: the emulated kubelet
    runs the command directly."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": annotations,
            "labels": {"component": name, "tier": "control-plane"},
            "name": name,
            "namespace": "kube-system",
        },
        "spec": {
            "containers": [
                {
                    "command": command,
                    "name": name,
                    "resources": {},
                    "volumeMounts": [{"mountPath": str(p), "name": v} for v, p in volumes.items()],
                }
            ],
            "hostNetwork": True,
            "priority": 2000001000,
            "priorityClassName": "system-node-critical",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [
                {"hostPath": {"path": str(p), "type": "DirectoryOrCreate"}, "name": v} for v, p in volumes.items()
            ],
        },
        "status": {},
    }


def write_static_pod(r: Root, name: str, pod: dict[str, Any]) -> Path:
    """Write ``manifests/<name>.yaml`` atomically (through a hidden temporary file, which the
    kubelet never reads), as ``staticpod.WriteStaticPodToDisk`` does. Returns its path."""
    path = r(f"{MANIFESTS}/{name}.yaml")
    ensure_dir(path.parent)
    write_atomic(path, yaml.safe_dump(pod, sort_keys=True), mode=0o600)
    return path


def write_etcd_manifest(
    r: Root, emu: emulation.Emulation, name: str, address: str, initial_cluster: str, state: str
) -> Path:
    """``manifests/etcd.yaml`` for this node's member (``phases/etcd/local.go``
    ``GetEtcdPodSpec``): :func:`etcd_argv` with the data in ``/var/lib/etcd``. The emulated
    kubelet starts it; nothing here waits for it. Returns the manifest's path."""
    data_dir, certs = r("/var/lib/etcd"), r.pki / "etcd"
    argv = etcd_argv(
        emu.etcd,
        name,
        data_dir,
        certs,
        [f"https://{address}:2379", "https://127.0.0.1:2379"],
        f"https://{address}:2380",
        initial_cluster,
        state,
    )
    ensure_dir(data_dir)
    pod = static_pod(
        ETCD_POD,
        argv,
        {ETCD_CLIENT_URLS_ANNOTATION: f"https://{address}:2379"},
        {"etcd-certs": certs, "etcd-data": data_dir},
    )
    return write_static_pod(r, ETCD_POD, pod)


def write_apiserver_manifest(r: Root, emu: emulation.Emulation, address: str, port: int, version: str) -> Path:
    """``manifests/kube-apiserver.yaml`` running :mod:`lab.apiserver` on ``0.0.0.0:port``
    (``port`` is ``bindPort``) with storage in the local etcd member; its settings go to
    ``/etc/kubernetes/emulated/kube-apiserver.json``. The annotation carries the advertise
    address as kubeadm's does (``phases/controlplane/manifests.go``). Returns the path."""
    conf = {
        "bind_address": "0.0.0.0",
        "advertise_address": address,
        "port": port,
        "version": version,
        "tls_cert": str(r.pki / "apiserver.crt"),
        "tls_key": str(r.pki / "apiserver.key"),
        "client_ca": str(r.pki / "ca.crt"),
        "pki_dir": str(r.pki),
        "etcd_servers": ["https://127.0.0.1:2379"],
        "etcd_ca": str(r.pki / "etcd/ca.crt"),
        "etcd_cert": str(r.pki / "apiserver-etcd-client.crt"),
        "etcd_key": str(r.pki / "apiserver-etcd-client.key"),
        "node_monitor_grace_s": emu.node_monitor_grace_s,
    }
    path = r("/etc/kubernetes/emulated/kube-apiserver.json")
    ensure_dir(path.parent)
    write_atomic(path, json.dumps(conf, indent=1))
    pod = static_pod(
        APISERVER_POD,
        [emu.python, "-m", "lab.apiserver", "--config", str(path)],
        {APISERVER_ENDPOINT_ANNOTATION: f"{address}:{port}"},
        {"k8s-certs": r.pki, "emulated-config": path.parent},
    )
    return write_static_pod(r, APISERVER_POD, pod)


def read_static_pod(r: Root, name: str) -> dict[str, Any] | None:
    """``manifests/<name>.yaml`` as a dict, or None when it is missing or not YAML."""
    try:
        doc = yaml.safe_load(r(f"{MANIFESTS}/{name}.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def kubelet_server(version: KubernetesVersion, endpoint: str, address: str, port: int) -> str:
    """The API server a node's ``kubelet.conf`` points at: the control-plane endpoint
    (``https://<endpoint>``), or on a control node with ControlPlaneKubeletLocalMode
    (:func:`core.versions.kubeadm_kubelet_local_mode`, 1.33+) its own API server
    (``https://<advertise address>:<bind port>``, ``phases/kubeconfig``). ``address`` empty:
    a worker, always the endpoint."""
    if address and versions.kubeadm_kubelet_local_mode(version):
        return f"https://{address}:{port}"
    return f"https://{endpoint}"


def kubelet_flags(registration: dict[str, Any], control_plane: bool) -> list[str]:
    """The kubelet flags kubeadm derives from ``nodeRegistration`` beyond ``node-ip``:
    ``--node-labels`` from ``kubeletExtraArgs`` (v1beta4's list of ``{name, value}``), and the
    taints as ``--register-with-taints`` (``phases/kubelet/flags.go``). kubeadm passes the
    taints of a joining worker this way and applies a control node's in its mark-control-plane
    phase (the given ones, or the control-plane taint when none are given); the emulation
    registers both with the Node, so the Node ends up the same without that phase's patch."""
    flags = []
    for arg in registration.get("kubeletExtraArgs") or []:
        if arg.get("name") == "node-labels":
            flags += ["--node-labels", str(arg.get("value", ""))]
    taints = registration.get("taints")
    if taints is None and control_plane:
        taints = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    if taints:
        text = ",".join(
            f"{t['key']}={t['value']}:{t['effect']}" if t.get("value") else f"{t['key']}:{t['effect']}" for t in taints
        )
        flags += ["--register-with-taints", text]
    return flags


def start_kubelet(
    r: Root,
    emu: emulation.Emulation,
    name: str,
    address: str,
    control_plane: bool,
    version: KubernetesVersion,
    extra: list[str] | None = None,
) -> None:
    """(Re)start :mod:`lab.kubelet` for Node ``name`` at ``address`` (IPv4 string) with the
    node's ``kubelet.conf`` and the static pods of ``/etc/kubernetes/manifests``; a running
    kubelet is stopped first (``TryStopKubelet``, then ``TryStartKubelet``: its static pods
    keep running and the new kubelet adopts them). Control-plane Nodes get the
    ``node-role.kubernetes.io/control-plane`` label; ``version`` is the kubelet's (its
    behaviour, :mod:`core.versions`); ``extra``: flags from :func:`kubelet_flags` (labels and
    taints). Its flags go to ``/var/lib/kubelet/kubeadm-flags.env`` as kubeadm writes them
    (``KUBELET_KUBEADM_ARGS``); on a systemd node ``systemctl restart kubelet`` starts it from
    there (the lab overlay's ``kubelet.service``), otherwise the lab starts it as the node's
    ``kubelet`` process service (through the lab's fork server when this kubeadm came through
    it: :func:`lab.forkclient.launcher`). Returns without waiting."""
    flags = [
        "--kubeconfig",
        str(r("/etc/kubernetes/kubelet.conf")),
        "--node-name",
        name,
        "--node-ip",
        address,
        "--interval",
        str(emu.kubelet_interval_s),
        "--pki-dir",
        str(r("/var/lib/kubelet/pki")),
        "--pod-manifest-path",
        str(r(MANIFESTS)),
        "--node-root",
        str(r.root),
        "--version",
        str(version),
    ]
    if control_plane:
        flags.append("--control-plane")
    flags += extra or []
    ensure_dir(r("/var/lib/kubelet"))
    write_atomic(r(KUBEADM_FLAGS), f"KUBELET_KUBEADM_ARGS={shlex.quote(shlex.join(flags))}\n")
    if under_systemd(r):
        res = subprocess.run(["systemctl", "restart", "kubelet.service"], capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise KubeadmError(f"[kubelet-start] systemctl restart kubelet failed: {res.stderr.strip()}")
    else:
        services = ProcessServices(r.root)
        services.stop("kubelet")
        services.start("kubelet", forkclient.launcher("kubelet", emu.python) + flags)
    say("[kubelet-start] Starting the kubelet")


KUBEADM_FLAGS = "/var/lib/kubelet/kubeadm-flags.env"
KUBELET_HEALTHZ = "http://127.0.0.1:10248/healthz"  # constants.go KubeletHealthzPort


def wait_kubelet_healthy(timeout_s: float) -> None:
    """Poll the kubelet's ``/healthz`` on 127.0.0.1:10248 in this node's network namespace
    every 50 ms until it answers ``ok`` (kubeadm's ``[kubelet-check]``,
    ``util/apiclient/wait.go`` ``WaitForKubelet``). Raises :class:`KubeadmError` after
    ``timeout_s`` seconds, in kubeadm's words."""
    say(
        f"[kubelet-check] Waiting for a healthy kubelet at {KUBELET_HEALTHZ}. This can take up to {timeout_s / 60:g}m0s"
    )
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout_s:
        try:
            with urllib.request.urlopen(KUBELET_HEALTHZ, timeout=2) as resp:
                if resp.status == 200:
                    say(f"[kubelet-check] The kubelet is healthy after {time.monotonic() - started:.6f}s")
                    return
        except (OSError, urllib.error.URLError) as err:
            last = str(err)
        time.sleep(0.05)
    raise KubeadmError(
        f"The HTTP call equal to 'curl -sSL {KUBELET_HEALTHZ}' returned error: {last}; "
        f"the kubelet is not healthy after {timeout_s / 60:g}m0s"
    )


def under_systemd(r: Root) -> bool:
    """Whether this node's services are systemd units: the root is ``/`` and systemd is the
    init (``/run/systemd/system`` exists, sd_booted(3)), as in the lab's machines. Then the
    kubelet is ``kubelet.service`` (its static pods outlive a restart of the node agent's
    unit, as containers do on a node); otherwise a process of the lab."""
    return r.root == Path("/") and Path("/run/systemd/system").is_dir()
