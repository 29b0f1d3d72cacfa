"""EMULATED ``kubeadm join`` (lab only): kubeadm's join workflow (``cmd/join.go``), in its
order and under its names; which phases run depends on the version (:mod:`core.versions`):

=================================  =========================  =========================
phase                              1.32                       1.33 and later
=================================  =========================  =========================
``preflight``                      join checks, discovery, a control plane's init checks
``control-plane-prepare/*``        download-certs, certs, kubeconfig, control-plane (control planes)
``check-etcd``                     every member answers (control planes; skippable)
``kubelet-start``                  same-name Node check, kubelet.conf, the kubelet; on 1.32 it
                                   then waits for the kubelet's health (TLS bootstrap)
``etcd-join``                      -                          member, manifest, promote
``kubelet-wait-bootstrap``         -                          the kubelet's health
``control-plane-join/etcd``        member, manifest, promote  - (deprecated and hidden)
``wait-control-plane``             -                          this node's kube-apiserver
=================================  =========================  =========================

(``cmd/phases/join/controlplanejoin.go`` ``NewEtcdJoinPhase`` and ``newEtcdLocalSubphase``
with their ``RunIf`` on ControlPlaneKubeletLocalMode, ``kubelet.go``
``NewKubeletWaitBootstrapPhase``, ``waitcontrolplane.go`` on WaitForAllControlPlaneComponents.)
With ControlPlaneKubeletLocalMode a control node's kubelet talks to its own API server, which
starts only once its etcd member joined, so kubeadm waits for the kubelet after etcd.

Preflight (``cmd/phases/join/preflight.go``): :func:`lab.kubeadm.preflight.join_node_checks`
before discovery, then on a control plane ``init_node_checks`` for a secondary control plane.
Discovery (:func:`discover`) fetches ``cluster-info`` through the endpoint. The same-name Node
refusal (``a Node with name ... and status "Ready" already exists``) comes in
``kubelet-start``, after the certificates, kubeconfigs, manifest and check-etcd: a refused
control-plane join leaves those files behind. Not emulated: mark-control-plane (the emulated
kubelet labels its Node), the kubelet's own TLS bootstrap (kubeadm signs a worker's CSR
through the emulated API server and writes kubelet.conf itself).
"""

from __future__ import annotations

import base64
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from core import versions
from core.fileperm import ensure_dir, write_atomic
from core.joinmaterial import TOKEN_RE, ca_cert_hash
from core.versions import KubernetesVersion
from lab import emulation, pki
from lab.kubeadm import certs, controlplane, preflight
from lab.kubeadm.config import Timeouts, check_minimum_version
from lab.kubeadm.workflow import TIMINGS, KubeadmError, Phase, Runner, klog, say
from lab.nodekit import Api, Root, ctx_for, wait_local_api

KUBELET_WAIT_S = 240.0  # KubeletHealthCheckTimeout, 4 min
# kubeadm join's clients (the bootstrap token's, a control plane's admin one) are client-go
# clientsets built from a kubeconfig with no request timeout (rest.Config.Timeout 0), on
# client-go's transport (a 10 s TLS handshake timeout): a busy API server is waited for, not
# given up on after the emulation's usual 5 s. Bounded here so a hung lab still fails.
JOIN_API_TIMEOUT_S = 30.0


def discover(jc: dict[str, Any]) -> tuple[str, bytes, str]:
    """Token discovery (``discovery/token/token.go``): fetch ``cluster-info`` anonymously
    without checking TLS (waiting up to 60 s for an answer), check the JWS for our token id
    and the CA pin (``sha256:<hex>`` of the CA's SubjectPublicKeyInfo, ``util/pubkeypin``).
    ``jc`` is the JoinConfiguration dict. Returns (``https://`` server URL, CA PEM, token).
    Raises :class:`KubeadmError` at once on any refusal (kubeadm polls for a missing signature
    until its discovery timeout, and asks a second time over verified TLS)."""
    bt = jc["discovery"]["bootstrapToken"]
    token, endpoint = bt["token"], bt["apiServerEndpoint"]
    m = TOKEN_RE.match(token)
    if not m:
        raise KubeadmError(
            f'[discovery] the bootstrap token "{token}" was not of the form "[a-z0-9]{{6}}.[a-z0-9]{{16}}"'
        )
    tid, tsecret = m.group(1), m.group(2)
    api = Api(f"https://{endpoint}", ctx_for(None))
    code, cm = api.wait("GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info", timeout_s=60)
    certs.expect(code, cm, "[discovery] cluster-info", (200,))
    kubeconfig = cm["data"]["kubeconfig"]
    sig = cm["data"].get(f"jws-kubeconfig-{tid}")
    if not sig:
        raise KubeadmError(
            "couldn't validate the identity of the API Server: could not find a JWS signature in the "
            f'cluster-info ConfigMap for token ID "{tid}" (the token is unknown or has expired)'
        )
    if not hmac.compare_digest(sig, pki.jws_signature(tid, tsecret, kubeconfig.encode())):
        raise KubeadmError(
            "couldn't validate the identity of the API Server: "
            "failed to verify JWS signature of received cluster info object"
        )
    doc = yaml.safe_load(kubeconfig)
    ca_pem = base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])
    actual = ca_cert_hash(ca_pem)
    pins = bt.get("caCertHashes") or []
    if pins and actual not in pins:
        raise KubeadmError(
            f'cluster CA found in cluster-info ConfigMap is invalid: none of the public keys "{actual}" are pinned'
        )
    say(f"[discovery] Cluster info signature and contents are valid; CA pinned ({actual[:19]}...)")
    return f"https://{endpoint}", ca_pem, token


def check_node_name(api: Api, name: str) -> None:
    """Raise :class:`KubeadmError` when a Node ``name`` exists and its Ready condition is True
    (``cmd/phases/join/kubelet.go``, in kubelet-start); a NotReady or Unknown Node is fine, as
    in kubeadm."""
    code, node = api.call("GET", f"/api/v1/nodes/{name}")
    if code != 200:
        return
    for c in node.get("status", {}).get("conditions", []):
        if c.get("type") == "Ready" and c.get("status") == "True":
            raise KubeadmError(
                f'a Node with name "{name}" and status "Ready" already exists in the cluster. You must delete the '
                "existing Node or change the name of this new joining Node"
            )


@dataclass
class JoinData:
    """What the join phases share (``cmd/join.go`` ``joinData``): the node root, the
    emulation's settings, kubeadm's version, the JoinConfiguration, the preflight checks to
    ignore; filled in by the phases: the endpoint, CA and token discovery found, the
    bootstrap client, the admin client of a control plane and the cluster's
    ClusterConfiguration."""

    r: Root
    emu: emulation.Emulation
    version: KubernetesVersion
    jc: dict[str, Any]
    ignored: frozenset[str]
    started: float = field(default_factory=time.monotonic)
    server: str = ""
    ca_pem: bytes = b""
    boot: Api | None = None
    api: Api | None = None
    admin: pki.Pair | None = None
    cc: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``nodeRegistration.name``."""
        return str(self.jc["nodeRegistration"]["name"])

    @property
    def control(self) -> dict[str, Any] | None:
        """The ``controlPlane`` section, or None for a worker."""
        cp = self.jc.get("controlPlane")
        return cp if isinstance(cp, dict) else None

    @property
    def address(self) -> str:
        """A control plane's advertise address (empty on a worker)."""
        return str(self.control["localAPIEndpoint"]["advertiseAddress"]) if self.control else ""

    @property
    def port(self) -> int:
        """A control plane's bind port (6443)."""
        return int(self.control["localAPIEndpoint"].get("bindPort", 6443)) if self.control else 6443

    @property
    def timeouts(self) -> Timeouts:
        """The JoinConfiguration's ``timeouts``."""
        return Timeouts.of(self.jc)

    @property
    def cluster_name(self) -> str:
        """The ClusterConfiguration's ``clusterName`` (``kubernetes``)."""
        return str(self.cc.get("clusterName", "kubernetes"))


def is_control(d: JoinData) -> bool:
    """``RunIf`` of the control-plane phases (kubeadm returns early inside them instead)."""
    return d.control is not None


def run_preflight(d: JoinData) -> None:
    """``preflight``: the join checks, discovery, then a control plane's init checks."""
    say(f"[preflight] Running pre-flight checks (EMULATED kubeadm {d.version}, ephemeral-k8s lab) for {d.name}")
    preflight.run_checks(preflight.join_node_checks(d.r, d.control is not None), d.ignored, d.version)
    d.server, d.ca_pem, token = discover(d.jc)
    d.boot = Api(d.server, ctx_for(d.ca_pem), bearer=token, timeout=JOIN_API_TIMEOUT_S)
    if d.control is not None:
        fetch_cluster_configuration(d)
        say("[preflight] Running pre-flight checks before initializing the new control plane instance")
        checks = preflight.init_node_checks(d.r, d.port, secondary_control_plane=True)
        preflight.run_checks(checks, d.ignored, d.version)


def fetch_cluster_configuration(d: JoinData) -> None:
    """The cluster's ClusterConfiguration from the ``kube-system/kubeadm-config`` ConfigMap
    through the bootstrap client (kubeadm's ``kubeadm:nodes-kubeadm-config`` Role lets
    bootstrap tokens ``get`` it), then :func:`lab.kubeadm.config.check_minimum_version`:
    kubeadm ``join`` does this in ``FetchInitConfigurationFromCluster`` (``cmd/join.go``
    ``fetchInitConfigurationFromJoinConfiguration``), in preflight for a control plane and in
    kubelet-start for a worker. The read is ``apiclient.GetConfigMapWithShortRetry``'s: any
    error or status other than 200 is retried every 50 ms for 350 ms, and the last one is
    reported. Raises :class:`KubeadmError`, or ``OSError`` when the last try had no answer."""
    assert d.boot is not None
    say('[preflight] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...')
    deadline = time.monotonic() + 0.35
    while True:
        try:
            code, cm = d.boot.call("GET", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
        except OSError:
            if time.monotonic() >= deadline:
                raise
        else:
            if code == 200 or time.monotonic() >= deadline:
                break
        time.sleep(0.05)
    certs.expect(code, cm, "unable to fetch the kubeadm-config ConfigMap", (200,))
    d.cc = yaml.safe_load(cm["data"]["ClusterConfiguration"])
    check_minimum_version(str(d.cc.get("kubernetesVersion", "")), d.version)


def run_download_certs(d: JoinData) -> None:
    """``control-plane-prepare/download-certs`` (:func:`lab.kubeadm.certs.download_certs`)."""
    assert d.boot is not None and d.control is not None
    ensure_dir(d.r.pki)
    certs.download_certs(d.r, d.boot, d.control["certificateKey"])


def run_prepare_certs(d: JoinData) -> None:
    """``control-plane-prepare/certs``: this node's certificates, from the cluster's CAs and
    the ClusterConfiguration read with an admin client."""
    ca = pki.read_pair(d.r.pki, "ca")
    d.admin = pki.issue(ca, "kubernetes-admin", orgs=("kubeadm:cluster-admins",), client=True)
    d.api = Api(d.server, ctx_for(d.ca_pem, d.admin, d.r.pki), timeout=JOIN_API_TIMEOUT_S)
    code, cm = d.api.call("GET", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config")
    certs.expect(code, cm, "[preflight] kubeadm-config", (200,))
    d.cc = yaml.safe_load(cm["data"]["ClusterConfiguration"])
    certs.node_certs(d.r, d.name, d.address, d.cc, ca, pki.read_pair(d.r.pki / "etcd", "ca"))
    say('[certs] Using certificateDir folder "/etc/kubernetes/pki"; generated this node\'s certificates')


def run_prepare_kubeconfig(d: JoinData) -> None:
    """``control-plane-prepare/kubeconfig``: admin.conf on the control-plane endpoint."""
    assert d.admin is not None
    admin_conf = pki.kubeconfig(d.server, d.ca_pem, d.admin, "kubernetes-admin", d.cluster_name)
    write_atomic(d.r("/etc/kubernetes/admin.conf"), admin_conf)
    say('[kubeconfig] Writing "admin.conf" kubeconfig file')


def run_prepare_control_plane(d: JoinData) -> None:
    """``control-plane-prepare/control-plane``: the kube-apiserver manifest."""
    say(f'[control-plane] Using manifest folder "{controlplane.MANIFESTS}"')
    say('[control-plane] Creating static Pod manifest for "kube-apiserver"')
    version = d.cc.get("kubernetesVersion", str(d.version))
    controlplane.write_apiserver_manifest(d.r, d.emu, d.address, d.port, version)


def run_check_etcd(d: JoinData) -> None:
    """``check-etcd`` (:func:`lab.kubeadm.etcd.check_etcd`)."""
    from lab.kubeadm.etcd import check_etcd  # imports aiohttp: a control plane's join only

    assert d.api is not None
    check_etcd(d.r, d.api, d.timeouts)


def run_kubelet_start(d: JoinData) -> None:
    """``kubelet-start``: the same-name Node check, the kubelet's client certificate (a CSR
    signed through the API on a worker, issued by kubeadm on a control plane), kubelet.conf
    (:func:`lab.kubeadm.controlplane.kubelet_server`), the kubelet; without
    ControlPlaneKubeletLocalMode (1.32) the wait for the kubelet too."""
    assert d.boot is not None
    if d.control is None:
        fetch_cluster_configuration(d)
        ensure_dir(d.r.pki)
        write_atomic(d.r.pki / "ca.crt", d.ca_pem)
    check_node_name(d.boot, d.name)
    if d.control is not None:
        kubelet = pki.issue(pki.read_pair(d.r.pki, "ca"), f"system:node:{d.name}", orgs=("system:nodes",), client=True)
    else:
        kubelet = certs.tls_bootstrap(d.boot, d.name)
    endpoint = d.server.removeprefix("https://")
    server = controlplane.kubelet_server(d.version, endpoint, d.address, d.port)
    write_atomic(
        d.r("/etc/kubernetes/kubelet.conf"),
        pki.kubeconfig(server, d.ca_pem, kubelet, f"system:node:{d.name}", d.cluster_name),
    )
    node_ip = next(a["value"] for a in d.jc["nodeRegistration"].get("kubeletExtraArgs", []) if a["name"] == "node-ip")
    flags = controlplane.kubelet_flags(d.jc["nodeRegistration"], control_plane=d.control is not None)
    controlplane.start_kubelet(d.r, d.emu, d.name, node_ip, d.control is not None, d.version, extra=flags)
    if d.control is None or not versions.kubeadm_kubelet_local_mode(d.version):
        wait_kubelet(d)


def wait_kubelet(d: JoinData) -> None:
    """The kubelet's health on 127.0.0.1:10248 (``kubelet-start``'s wait, or
    ``kubelet-wait-bootstrap``), after kubeadm's "Waiting for the kubelet to perform the TLS
    Bootstrap"."""
    say("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap")
    controlplane.wait_kubelet_healthy(KUBELET_WAIT_S)


def run_etcd(d: JoinData) -> None:
    """``etcd-join`` or ``control-plane-join/etcd`` (:func:`lab.kubeadm.etcd.join_etcd`)."""
    from lab.kubeadm.etcd import join_etcd

    assert d.api is not None
    try:
        join_etcd(d.r, d.emu, d.api, d.name, d.address, d.timeouts)
    except KubeadmError as err:
        raise KubeadmError(f"error creating local etcd static pod manifest file: {err}") from err


def run_wait_control_plane(d: JoinData) -> None:
    """``wait-control-plane`` (WaitForAllControlPlaneComponents): this node's kube-apiserver
    ``/livez`` (the other components are not emulated)."""
    say(f"[control-plane-check] Checking kube-apiserver at https://{d.address}:{d.port}/livez")
    wait_local_api(d.address, d.port, d.ca_pem, path="/livez")
    say("[control-plane-check] kube-apiserver is healthy")


def _local_mode(d: JoinData) -> bool:
    return d.control is not None and versions.kubeadm_kubelet_local_mode(d.version)


PHASES: tuple[Phase[JoinData], ...] = (
    Phase("preflight", run_preflight),
    Phase(
        "control-plane-prepare",
        phases=(
            Phase("download-certs", run_download_certs, run_if=is_control),
            Phase("certs", run_prepare_certs, run_if=is_control),
            Phase("kubeconfig", run_prepare_kubeconfig, run_if=is_control),
            Phase("control-plane", run_prepare_control_plane, run_if=is_control),
        ),
    ),
    Phase("check-etcd", run_check_etcd, run_if=is_control),
    Phase("kubelet-start", run_kubelet_start),
    Phase("etcd-join", run_etcd, run_if=_local_mode),
    Phase("kubelet-wait-bootstrap", wait_kubelet, run_if=_local_mode),
    Phase(
        "control-plane-join",
        phases=(
            Phase(
                "etcd",
                run_etcd,
                run_if=lambda d: d.control is not None and not versions.kubeadm_kubelet_local_mode(d.version),
                hidden=True,
            ),
        ),
    ),
    Phase(
        "wait-control-plane",
        run_wait_control_plane,
        run_if=lambda d: d.control is not None and versions.kubeadm_waits_for_all_components(d.version),
    ),
)


def join(d: JoinData, skip: frozenset[str] = frozenset()) -> Runner[JoinData]:
    """``kubeadm join``: :data:`PHASES` over ``d`` (``skip`` joins the configuration's
    ``skipPhases``: ``--skip-phases``), then the padding of ``$EK8S_EMULATION``'s ``join_s``.
    Returns the runner. Raises :class:`lab.kubeadm.workflow.PhaseError`; ``KeyError`` when
    the JoinConfiguration lacks a field the driver always writes."""
    TIMINGS.node = d.name
    skip = frozenset(d.jc.get("skipPhases") or []) | skip
    if "check-etcd" in skip:
        klog(1, "[check-etcd] skipped (skipPhases)")
    runner = Runner(PHASES, skip)
    runner.run(d)
    TIMINGS.pad_to(d.emu.join_s, "join")
    what = "control-plane node" if d.control is not None else "node"
    say(f"This {what} has joined the cluster (emulated, {time.monotonic() - d.started:.2f}s)")
    return runner
