"""EMULATED ``kubeadm init`` (lab only): kubeadm's init workflow (``cmd/init.go``), the
phases the driver depends on, in kubeadm's order and under kubeadm's names:

``preflight`` (:func:`lab.kubeadm.preflight.init_node_checks`), ``certs`` (the cluster PKI,
ECDSA P-256 as the driver's ``encryptionAlgorithm`` asks), ``kubeconfig`` (admin.conf,
super-admin.conf, kubelet.conf; the kubelet's server per
:func:`lab.kubeadm.controlplane.kubelet_server`), ``etcd/local`` and ``control-plane``
(the static Pod manifests), ``kubelet-start``, ``wait-control-plane``, then through the
control-plane endpoint (the VIP): ``upload-config/kubeadm``, ``upload-certs``,
``bootstrap-token`` (the token and ``cluster-info``).

``wait-control-plane`` (``cmd/phases/init/waitcontrolplane.go``) first waits for the
kubelet's ``/healthz`` on 127.0.0.1:10248, then, without WaitForAllControlPlaneComponents
(1.32), for the API through the control-plane endpoint; with it (1.33+,
:func:`core.versions.kubeadm_waits_for_all_components`) for each control-plane component on
this node: ``kube-apiserver`` at ``https://<advertise address>:<bind port>/livez``
(kube-controller-manager and kube-scheduler are not emulated, and not waited for). The
emulation also waits for the local etcd member first. Not emulated: mark-control-plane (the
emulated kubelet labels its Node), kubelet-finalize, addons, show-join-command.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from core import versions
from core.fileperm import write_atomic
from core.versions import KubernetesVersion
from lab import emulation, pki
from lab.kubeadm import certs, controlplane, preflight
from lab.kubeadm.config import check_kubernetes_version
from lab.kubeadm.workflow import TIMINGS, KubeadmError, Phase, Runner, say
from lab.nodekit import Api, Root, ctx_for, wait_local_api

API_WAIT_S = 240.0  # ControlPlaneComponentHealthCheckTimeout / KubeletHealthCheckTimeout, 4 min
LOCAL_WAIT_S = 60.0  # the emulation's own bound for the local etcd member and API server


@dataclass
class InitData:
    """What the init phases share (``cmd/init.go`` ``initData``): the node root, the
    emulation's settings, kubeadm's version, the two documents, ``upload_certs``
    (``--upload-certs``), the preflight checks to ignore (lower-cased); filled in by the
    phases: the CAs, the super-admin client through the control-plane endpoint."""

    r: Root
    emu: emulation.Emulation
    version: KubernetesVersion
    ic: dict[str, Any]
    cc: dict[str, Any]
    upload_certs: bool
    ignored: frozenset[str]
    started: float = field(default_factory=time.monotonic)
    ca: pki.Pair | None = None
    etcd_ca: pki.Pair | None = None
    superadmin: pki.Pair | None = None

    @property
    def name(self) -> str:
        """The node's name (``nodeRegistration.name``)."""
        return str(self.ic["nodeRegistration"]["name"])

    @property
    def address(self) -> str:
        """``localAPIEndpoint.advertiseAddress``."""
        return str(self.ic["localAPIEndpoint"]["advertiseAddress"])

    @property
    def port(self) -> int:
        """``localAPIEndpoint.bindPort`` (6443)."""
        return int(self.ic["localAPIEndpoint"].get("bindPort", 6443))

    @property
    def endpoint(self) -> str:
        """``controlPlaneEndpoint`` (``<VIP name>:<port>``)."""
        return str(self.cc["controlPlaneEndpoint"])

    def api(self) -> Api:
        """The super-admin client through the control-plane endpoint (kubeadm's init client)."""
        assert self.ca is not None and self.superadmin is not None
        return Api(f"https://{self.endpoint}", ctx_for(self.ca[0], self.superadmin, self.r.pki))


def run_preflight(d: InitData) -> None:
    """``preflight``: :func:`lab.kubeadm.preflight.init_node_checks`; a restore passes
    ``--ignore-preflight-errors=DirAvailable--var-lib-etcd`` and etcd starts on its data."""
    say("[preflight] Running pre-flight checks")
    check_kubernetes_version(d.cc["kubernetesVersion"], d.version)
    checks = preflight.init_node_checks(d.r, d.port, secondary_control_plane=False)
    preflight.run_checks(checks, d.ignored, d.version)
    if any(d.r(preflight.ETCD_DATA_DIR).glob("*")):
        say(f"[preflight] {preflight.ETCD_DATA_DIR} is not empty: etcd starts on the existing (restored) data")
    d.started = time.monotonic()


def run_certs(d: InitData) -> None:
    """``certs``: the cluster CAs, the service-account key pair and this node's certificates."""
    d.ca, d.etcd_ca, fp_ca = pki.new_ca("kubernetes"), pki.new_ca("etcd-ca"), pki.new_ca("front-proxy-ca")
    pki.write_pair(d.r.pki, "ca", d.ca)
    pki.write_pair(d.r.pki / "etcd", "ca", d.etcd_ca)
    pki.write_pair(d.r.pki, "front-proxy-ca", fp_ca)
    pub, key = pki.sa_keypair()
    write_atomic(d.r.pki / "sa.pub", pub)
    write_atomic(d.r.pki / "sa.key", key)
    certs.node_certs(d.r, d.name, d.address, d.cc, d.ca, d.etcd_ca)
    say('[certs] Using certificateDir folder "/etc/kubernetes/pki"; generated the cluster PKI (ECDSA-P256)')


def run_kubeconfig(d: InitData) -> None:
    """``kubeconfig``: admin.conf and super-admin.conf on the control-plane endpoint,
    kubelet.conf on :func:`lab.kubeadm.controlplane.kubelet_server`."""
    assert d.ca is not None
    cluster_name = d.cc.get("clusterName", "kubernetes")
    server = f"https://{d.endpoint}"
    admin = pki.issue(d.ca, "kubernetes-admin", orgs=("kubeadm:cluster-admins",), client=True)
    write_atomic(
        d.r("/etc/kubernetes/admin.conf"), pki.kubeconfig(server, d.ca[0], admin, "kubernetes-admin", cluster_name)
    )
    d.superadmin = pki.issue(d.ca, "kubernetes-super-admin", orgs=("system:masters",), client=True)
    write_atomic(
        d.r("/etc/kubernetes/super-admin.conf"),
        pki.kubeconfig(server, d.ca[0], d.superadmin, "kubernetes-super-admin", cluster_name),
    )
    kubelet = pki.issue(d.ca, f"system:node:{d.name}", orgs=("system:nodes",), client=True)
    kubelet_server = controlplane.kubelet_server(d.version, d.endpoint, d.address, d.port)
    write_atomic(
        d.r("/etc/kubernetes/kubelet.conf"),
        pki.kubeconfig(kubelet_server, d.ca[0], kubelet, f"system:node:{d.name}", cluster_name),
    )
    say('[kubeconfig] Writing "admin.conf", "super-admin.conf" and "kubelet.conf" kubeconfig files')
    if kubelet_server != server:
        say(f"[kubeconfig] The kubelet talks to this node's own API server at {kubelet_server}")


def run_etcd(d: InitData) -> None:
    """``etcd/local``: this node's member as a new one-member cluster."""
    say(f'[etcd] Creating static Pod manifest for local etcd in "{controlplane.MANIFESTS}"')
    initial = f"{d.name}=https://{d.address}:2380"
    controlplane.write_etcd_manifest(d.r, d.emu, d.name, d.address, initial, "new")


def run_control_plane(d: InitData) -> None:
    """``control-plane``: the kube-apiserver manifest (the emulated API server)."""
    say('[control-plane] Creating static Pod manifest for "kube-apiserver"')
    controlplane.write_apiserver_manifest(d.r, d.emu, d.address, d.port, d.cc["kubernetesVersion"])


def run_kubelet_start(d: InitData) -> None:
    """``kubelet-start``: the emulated kubelet, which starts the static pods."""
    flags = controlplane.kubelet_flags(d.ic.get("nodeRegistration") or {}, control_plane=True)
    controlplane.start_kubelet(d.r, d.emu, d.name, d.address, True, d.version, extra=flags)


def run_wait_control_plane(d: InitData) -> None:
    """``wait-control-plane`` as the module says."""
    assert d.ca is not None
    say(
        "[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from directory "
        f'"{controlplane.MANIFESTS}"'
    )
    controlplane.wait_kubelet_healthy(API_WAIT_S)

    from lab.kubeadm.etcd import local_etcd, wait_etcd  # imports aiohttp: only where used

    async def _etcd_up() -> None:
        async with local_etcd(d.r) as c:
            await wait_etcd(c, LOCAL_WAIT_S)

    asyncio.run(_etcd_up())
    TIMINGS.mark("etcd_ready")
    if versions.kubeadm_waits_for_all_components(d.version):
        wait = f"{API_WAIT_S / 60:g}m0s"
        say(f"[control-plane-check] Waiting for healthy control plane components. This can take up to {wait}")
        say(f"[control-plane-check] Checking kube-apiserver at https://{d.address}:{d.port}/livez")
        wait_local_api(d.address, d.port, d.ca[0], LOCAL_WAIT_S, path="/livez")
        say("[control-plane-check] kube-controller-manager and kube-scheduler are not EMULATED: not checked")
        say("[control-plane-check] kube-apiserver is healthy")
    else:
        say(f"[api-check] Waiting for a healthy API server. This can take up to {API_WAIT_S / 60:g}m0s")
        code, _ = d.api().wait("GET", "/healthz", timeout_s=API_WAIT_S)
        if code != 200:
            raise KubeadmError(f"[api-check] the API server at {d.endpoint} answered HTTP {code}")
        say(f"[api-check] The API server is healthy after {time.monotonic() - d.started:.2f}s")


def run_upload_config(d: InitData) -> None:
    """``upload-config/kubeadm``: the ``kubeadm-config`` ConfigMap through the endpoint
    (waiting up to 120 s for it to answer)."""
    body = {"metadata": {"name": "kubeadm-config"}, "data": {"ClusterConfiguration": yaml.safe_dump(d.cc)}}
    code, answer = d.api().wait("PUT", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config", body, timeout_s=120)
    certs.expect(code, answer, "[upload-config] kubeadm-config", (200, 201))
    say(f"[upload-config] Stored the configuration in ConfigMap kubeadm-config through {d.endpoint}")


def run_upload_certs(d: InitData) -> None:
    """``upload-certs``: the sealed ``kubeadm-certs`` Secret (with ``--upload-certs``)."""
    certs.upload_certificates(d.r, d.api(), d.ic["certificateKey"], d.emu.certs_ttl_s)


def run_bootstrap_token(d: InitData) -> None:
    """``bootstrap-token``: the InitConfiguration's token and the ``cluster-info`` ConfigMap
    (``phases/bootstraptoken/clusterinfo``), signed by the emulated API server per token."""
    assert d.ca is not None
    api = d.api()
    token = d.ic["bootstrapTokens"][0]
    ttl = token.get("ttl", "86400s")
    certs.create_token(api, token["token"], f"{d.emu.token_ttl_s}s" if d.emu.token_ttl_s is not None else ttl)
    cluster = {"server": f"https://{d.endpoint}", "certificate-authority-data": certs.b64(d.ca[0])}
    kubeconfig = yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "", "cluster": cluster}]})
    body = {"metadata": {"name": "cluster-info"}, "data": {"kubeconfig": kubeconfig}}
    code, answer = api.wait("PUT", "/api/v1/namespaces/kube-public/configmaps/cluster-info", body, certs.API_CALL_S)
    certs.expect(code, answer, "[bootstrap-token] cluster-info", (200, 201))
    say("[bootstrap-token] Created the cluster-info ConfigMap in kube-public")


PHASES: tuple[Phase[InitData], ...] = (
    Phase("preflight", run_preflight),
    Phase("certs", run_certs),
    Phase("kubeconfig", run_kubeconfig),
    Phase("etcd", phases=(Phase("local", run_etcd),)),
    Phase("control-plane", run_control_plane),
    Phase("kubelet-start", run_kubelet_start),
    Phase("wait-control-plane", run_wait_control_plane),
    Phase("upload-config", phases=(Phase("kubeadm", run_upload_config),)),
    Phase("upload-certs", run_upload_certs, run_if=lambda d: d.upload_certs),
    Phase("bootstrap-token", run_bootstrap_token),
)


def init(d: InitData, skip: frozenset[str] = frozenset()) -> Runner[InitData]:
    """``kubeadm init``: :data:`PHASES` over ``d``, then the time padding of
    ``$EK8S_EMULATION``'s ``init_s``. Returns the runner (what ran). Raises
    :class:`lab.kubeadm.workflow.PhaseError`."""
    TIMINGS.node = d.name
    say(
        f"[init] Using Kubernetes version: {d.cc['kubernetesVersion']} (EMULATED kubeadm {d.version}, "
        "ephemeral-k8s lab)"
    )
    runner = Runner(PHASES, skip)
    runner.run(d)
    TIMINGS.pad_to(d.emu.init_s, "init")
    say(f"Your Kubernetes control-plane has initialized successfully! (emulated, {time.monotonic() - d.started:.2f}s)")
    return runner
