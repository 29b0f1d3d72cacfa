"""EMULATED ``kubeadm reset -f`` (lab only): kubeadm's reset workflow (``cmd/reset.go``):
``preflight``, ``remove-etcd-member``, ``cleanup-node``, as in every supported version.

* Before the phases, the cluster's view of this node (``FetchInitConfigurationFromCluster``,
  :func:`reset_config`): ``kubeadm-config`` and this node's registration through the API
  server with admin.conf; without it (no admin.conf, no answer, no Node of this name) kubeadm
  warns and removes no member.
* ``remove-etcd-member`` (``cmd/phases/reset/removeetcdmember.go``): with the cluster's
  view, ``RemoveStackedEtcdMemberFromCluster`` by peer URL (:func:`lab.kubeadm.etcd.remove_stacked_etcd_member`),
  only a warning when it cannot ("[reset] Failed to remove etcd member: ..., please manually
  remove this etcd member using etcdctl"); then it empties the etcd data directory (the
  config's ``/var/lib/etcd``, or the ``etcd-data`` volume of ``manifests/etcd.yaml``) when it
  is not empty. **This phase is the only one that touches the data directory**:
  ``--skip-phases remove-etcd-member`` leaves ``/var/lib/etcd`` as it was, and the next
  ``kubeadm init`` or control-plane ``join`` fails preflight with ``[ERROR
  DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty``.
* ``cleanup-node`` (``cleanupnode.go``): stop the kubelet, remove the static pods' containers
  (here: stop the etcd and kube-apiserver processes), empty ``/etc/kubernetes/manifests``,
  ``/var/lib/kubelet`` and ``/etc/kubernetes/pki``, delete admin.conf, super-admin.conf,
  kubelet.conf, bootstrap-kubelet.conf, controller-manager.conf and scheduler.conf. It
  leaves ``/etc/kubernetes`` itself and ``/var/lib/etcd``. (The emulation also removes
  ``/etc/kubernetes/emulated``, its API server's settings.)

Where it differs: this node's advertise address comes from its local kube-apiserver manifest
(kubeadm reads the mirror Pod the kubelet copies from it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.services import ProcessServices
from core.versions import KubernetesVersion
from lab import pki
from lab.kubeadm import controlplane
from lab.kubeadm.config import Timeouts
from lab.kubeadm.workflow import KubeadmError, Phase, Runner, klog, say, warn, with_etcd_errors
from lab.nodekit import Api, Root, ToolError, ctx_for

ETCD_DATA_DIR = "/var/lib/etcd"
KUBECONFIG_FILES = (
    "admin.conf",
    "super-admin.conf",
    "kubelet.conf",
    "bootstrap-kubelet.conf",
    "controller-manager.conf",
    "scheduler.conf",
)


@dataclass(frozen=True)
class ResetConfig:
    """What ``kubeadm reset`` reads from the cluster (``FetchInitConfigurationFromCluster``):
    the API client (admin.conf), the ClusterConfiguration, this node's name (from
    ``kubelet.conf``'s client certificate) and its API advertise address."""

    api: Api
    cluster: dict[str, Any]
    node: str
    address: str


@dataclass
class ResetData:
    """What the reset phases share: the node root, kubeadm's version, the cluster's view of
    this node (None when it could not be had)."""

    r: Root
    version: KubernetesVersion
    cfg: ResetConfig | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)


def admin_api(r: Root) -> Api:
    """The API through the control-plane endpoint with this node's admin.conf, as kubeadm's
    reset, token and upload-certs commands use it. Raises :class:`KubeadmError` without one."""
    path = r("/etc/kubernetes/admin.conf")
    if not path.exists():
        raise KubeadmError(f"{path} not found: run this on a control-plane node")
    server, ca_pem, cert = pki.parse_kubeconfig(path.read_bytes())
    return Api(server, ctx_for(ca_pem, cert, r.pki))


def _node_name(r: Root) -> str:
    """``GetNodeName``: the CN of ``kubelet.conf``'s client certificate without
    ``system:node:``, else the host name."""
    from cryptography import x509

    try:
        _, _, (cert, _) = pki.parse_kubeconfig(r("/etc/kubernetes/kubelet.conf").read_bytes())
        cn = x509.load_pem_x509_certificate(cert).subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        return str(cn[0].value).removeprefix("system:node:")
    except (OSError, ValueError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return os.uname().nodename


def _message(body: Any) -> str:
    return str(body.get("message") if isinstance(body, dict) else body)


def reset_config(r: Root) -> ResetConfig | None:
    """The cluster's view of this node, or None (with kubeadm's warning) when it cannot be
    had: no admin.conf, no answer from the API, no Node of this name (a Node deleted before
    the reset: kubeadm then removes no etcd member), no kube-apiserver manifest to take the
    advertise address from (kubeadm reads the mirror Pod's annotation)."""
    admin = r("/etc/kubernetes/admin.conf")
    if not admin.exists():
        klog(1, f"[reset] Could not obtain a client set from the kubeconfig file: {admin}")
        return None
    say('[reset] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...')
    say("[reset] Use 'kubeadm init phase upload-config --config your-config-file' to re-upload it.")
    try:
        api = admin_api(r)
        try:
            code, cm = api.call("GET", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        except OSError as err:
            raise KubeadmError(f"failed to get config map: {err}") from err
        if code != 200:
            raise KubeadmError(f"failed to get config map: HTTP {code}: {_message(cm)}")
        cluster = yaml.safe_load(cm["data"]["ClusterConfiguration"])
        node = _node_name(r)
        try:
            code, body = api.call("GET", f"/api/v1/nodes/{node}")
        except OSError as err:
            raise KubeadmError(f"failed to get node registration: failed to get corresponding node: {err}") from err
        if code != 200:
            raise KubeadmError(f"failed to get node registration: failed to get corresponding node: {_message(body)}")
        pod = controlplane.read_static_pod(r, controlplane.APISERVER_POD) or {}
        annotations = pod.get("metadata", {}).get("annotations") or {}
        endpoint = annotations.get(controlplane.APISERVER_ENDPOINT_ANNOTATION)
        if not endpoint:
            raise KubeadmError(
                f'failed to getAPIEndpoint: could not retrieve API endpoints for node "{node}" using pod annotations: '
                f'API server pod for node name "{node}" has 0 entries, only one was expected'
            )
        return ResetConfig(api, cluster, node, endpoint.rsplit(":", 1)[0])
    except (ToolError, OSError, KeyError, TypeError, yaml.YAMLError) as err:
        warn(f"[reset] Unable to fetch the kubeadm-config ConfigMap from cluster: {err}", "reset.go")
        return None


def _shown(r: Root, path: Path) -> str:
    """``path`` as the node sees it (without the ``--rootfs`` prefix)."""
    try:
        return "/" + str(path.relative_to(r.root))
    except ValueError:
        return str(path)


def clean_dir(path: Path) -> None:
    """``CleanDir``: delete what is in ``path``, keep ``path``; nothing when it is missing."""
    for child in path.iterdir() if path.is_dir() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def run_preflight(d: ResetData) -> None:
    """``preflight`` (``cmd/phases/reset/preflight.go``): with ``-f`` nothing to confirm."""
    say("[preflight] Running pre-flight checks")


def run_remove_etcd_member(d: ResetData) -> None:
    """``remove-etcd-member`` as the module says."""
    r = d.r
    data_dir = r(ETCD_DATA_DIR)
    if d.cfg is None:
        warn("[reset] No kubeadm config, using etcd pod spec to get data directory", "removeetcdmember.go")
        pod = controlplane.read_static_pod(r, controlplane.ETCD_POD)
        if pod is not None:
            volumes = pod.get("spec", {}).get("volumes", [])
            paths = [v.get("hostPath", {}).get("path") for v in volumes if v.get("name") == "etcd-data"]
            if not paths or not paths[0]:
                say("[reset] No etcd config found. Assuming external etcd")
                say("[reset] Please, manually reset etcd to prevent further issues")
                return
            data_dir = Path(paths[0])
    else:
        try:
            from lab.kubeadm.etcd import remove_stacked_etcd_member  # imports aiohttp: only here

            asyncio.run(remove_stacked_etcd_member(r, d.cfg.api, d.cfg.address, d.timeouts))
        except with_etcd_errors(ToolError, OSError) as err:
            warn(
                f"[reset] Failed to remove etcd member: {err}, please manually remove this etcd member using etcdctl",
                "removeetcdmember.go",
            )
        else:
            clean_dir(data_dir)
            say(f"[reset] Deleted contents of the etcd data directory: {_shown(r, data_dir)}")
    if data_dir.is_dir() and any(data_dir.iterdir()):
        clean_dir(data_dir)
        say(f"[reset] Deleted contents of the etcd data directory: {_shown(r, data_dir)}")


def run_cleanup_node(d: ResetData) -> None:
    """``cleanup-node`` as the module says."""
    r = d.r
    services = ProcessServices(r.root)
    say("[reset] Stopping the kubelet service")
    if controlplane.under_systemd(r):
        subprocess.run(["systemctl", "stop", "kubelet.service"], capture_output=True, text=True, timeout=60)
    else:
        services.stop("kubelet")
    say('[reset] Unmounting mounted directories in "/var/lib/kubelet"')
    for svc in (controlplane.APISERVER_POD, controlplane.ETCD_POD):  # the static pods' containers
        services.stop(svc)
    dirs = [controlplane.MANIFESTS, "/var/lib/kubelet", "/etc/kubernetes/pki"]
    say(f"[reset] Deleting contents of directories: [{' '.join(dirs)}]")
    for path in dirs:
        clean_dir(r(path))
    shutil.rmtree(r("/etc/kubernetes/emulated"), ignore_errors=True)
    files = [f"/etc/kubernetes/{f}" for f in KUBECONFIG_FILES]
    say(f"[reset] Deleting files: [{' '.join(files)}]")
    for path in files:
        r(path).unlink(missing_ok=True)


PHASES: tuple[Phase[ResetData], ...] = (
    Phase("preflight", run_preflight),
    Phase("remove-etcd-member", run_remove_etcd_member),
    Phase("cleanup-node", run_cleanup_node),
)


def reset(r: Root, version: KubernetesVersion, skip: frozenset[str] = frozenset()) -> Runner[ResetData]:
    """``kubeadm reset -f [--skip-phases ...]``: :func:`reset_config`, then :data:`PHASES`. A
    member that cannot be removed is a warning, never an error; the etcd retries take up to
    ``EtcdAPICall`` (2 min) when etcd keeps refusing. Returns the runner. Never raises for
    "nothing to reset"; raises :class:`lab.kubeadm.workflow.PhaseError` for what kubeadm
    fails on."""
    say(f"[reset] Resetting this node (EMULATED kubeadm {version}, ephemeral-k8s lab)")
    d = ResetData(r, version, reset_config(r))
    runner = Runner(PHASES, skip)
    runner.run(d)
    return runner
