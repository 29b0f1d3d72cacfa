"""The kubeadm driver: config files, not flag soup.

The renderers are pure functions producing ``kubeadm.k8s.io/v1beta4`` documents
(InitConfiguration + ClusterConfiguration, JoinConfiguration), the one API every supported
kubeadm reads (1.32 to 1.36; 1.36 removed v1beta3, :mod:`core.versions`), following the
kubeadm configuration reference:

* ``controlPlaneEndpoint`` is the VIP's hostname and HAProxy port, so every node reaches the
  API through keepalived + HAProxy;
* ``apiServer.certSANs`` holds the VIP address and name plus ``kubernetes.extra_sans`` (the
  Warewulf manager's address in the proof of concept);
* the agent supplies the bootstrap token and the certificate key, so join material is known
  before ``kubeadm init --upload-certs`` finishes;
* ``encryptionAlgorithm: ECDSA-P256`` (v1beta4, Kubernetes 1.31+) for fast key generation.

Commands run are ``kubeadm init --config F --upload-certs``, ``kubeadm join --config F``,
``kubeadm reset -f``, and on a control node ``kubeadm token create --config F`` and
``kubeadm init phase upload-certs --upload-certs --config F --skip-certificate-key-print`` to
renew join material. Tokens and certificate keys are in the config files (0600, under
``/run/ek8s/kubeadm``), never on a command line, where ``/proc/<pid>/cmdline`` would show them to
every user of the node (docs/security.md). When node.yaml's ``root`` is not ``/`` (the lab), ``--rootfs <root>`` is
added and the config path is given relative to that root, as kubeadm's ``--rootfs`` expects.

What differs between the supported versions and matters here comes from :mod:`core.versions`
(node.yaml ``kubernetes.version``): the etcd tool that restores a snapshot (``etcdutl`` only
from 1.34 on, whose etcd 3.6 took ``snapshot restore`` and ``status`` out of ``etcdctl``) and
how kubeadm prints a failed preflight (:class:`PreflightFailed` reads both forms).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import shutil
import ssl
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from core import versions
from core.config import NodeConfig
from core.drivers.base import ApiUnavailable, CommandRunner, Credentials, DriverError, InitResult, SnapshotTaken
from core.fileperm import ensure_dir, write_atomic
from core.joinmaterial import ca_cert_hash, generate_certificate_key, generate_token
from core.logs import get_logger
from core.noderoles import CONTROL_PLANE_TAINT as _CONTROL_PLANE_TAINT
from core.noderoles import Taint
from core.share import JoinMaterial

API_VERSION = versions.KUBEADM_CONFIG_API
CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"
# kubeadm deletes the kubeadm-certs Secret together with its owner token after two hours
# (cmd/kubeadm/app/phases/copycerts, DefaultCertTokenDuration); bootstrap tokens last 24 h by
# default (kubeadm's DefaultTokenDuration).
CERTIFICATE_KEY_TTL_S = 2 * 3600.0
TOKEN_TTL_S = 24 * 3600.0
# Join material closer than this to its expiry is renewed before a node joins with it. The
# token gets a wider margin: workers cannot ask for a renewal (their credential does not allow
# it), so Phylactery's join-material controller renews it ahead, checking every
# JOIN_MATERIAL_CHECK_S (phylactery/controllers/joinmaterial.py), well inside this margin.
RENEW_MARGIN_S = 300.0
TOKEN_RENEW_MARGIN_S = 3600.0
# kubeadm's etcd: the local member's client URL (static pod etcd.yaml, --advertise-client-urls
# on the node address and --listen-client-urls on 127.0.0.1) and the PKI directory.
ETCD_ENDPOINT = "https://127.0.0.1:2379"
PKI_DIR = "/etc/kubernetes/pki"
CONTROL_PLANE_TAINT = Taint.parse(_CONTROL_PLANE_TAINT)

ETCD_DATA_DIR = "/var/lib/etcd"  # ClusterConfiguration etcd.local.dataDir, kubeadm's default

log = get_logger(__name__, "kubeadm")
_SECRETS = re.compile(r"\b([a-z0-9]{6})\.[a-z0-9]{16}\b|(?<!sha256:)\b[0-9a-f]{64}\b")
# One failed preflight check as kubeadm prints it (preflight/checks.go RunChecks):
# "\t[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty".
_PREFLIGHT_ERROR = re.compile(r"\[ERROR ([^\]]+)\]: (.*)")


class PreflightFailed(DriverError):
    """kubeadm refused in its preflight phase. ``checks`` maps each failed check's name
    (``DirAvailable--var-lib-etcd``, ``Port-6443``, ``FileAvailable--etc-kubernetes-kubelet.conf``)
    to kubeadm's message for it; ``str()`` names them first, then the command's tail as
    :class:`DriverError` does. kubeadm prints each as ``[ERROR <name>]: <message>`` in every
    supported version: inside the error until 1.33, on stderr before ``preflight checks
    failed`` since 1.34 (:func:`core.versions.kubeadm_preflight_error_inline`)."""

    def __init__(self, command: list[str], returncode: int, output: str, checks: dict[str, str]) -> None:
        super().__init__(command, returncode, output)
        self.checks = checks
        named = "; ".join(f"{name} ({message})" for name, message in checks.items())
        self.args = (f"kubeadm preflight refused: {named}. {self.args[0]}",)


def preflight_errors(output: str) -> dict[str, str]:
    """The ``[ERROR <name>]: <message>`` lines of kubeadm's ``output`` as {name: message}, in
    the order printed; empty when there are none."""
    return {m.group(1): m.group(2).strip() for m in _PREFLIGHT_ERROR.finditer(output)}


def redact(text: str) -> str:
    """Hide bootstrap token secrets and certificate keys before anything reaches the log."""
    return _SECRETS.sub(lambda m: f"{m.group(1)}.<redacted>" if m.group(1) else "<redacted>", text)


def _node_registration(cfg: NodeConfig) -> dict[str, Any]:
    """v1beta4 ``NodeRegistrationOptions``: the name, the CRI socket, the kubelet's
    ``node-ip`` and, from the inventory (core/noderoles.py), ``node-labels`` (only those a
    kubelet may set on its own Node; Phylactery sets the rest) and ``taints``. kubeadm gives a
    control node the control-plane taint only while ``taints`` is unset, so a control node with
    taints of its own lists that one too; workers carry no taint unless the inventory gives
    some. kubeadm passes a joining worker's taints as ``--register-with-taints`` and applies a
    control node's in its mark-control-plane phase (``cmd/kubeadm/app/cmd/phases/join/kubelet.go``)."""
    scheduling = cfg.node.scheduling
    args = [{"name": "node-ip", "value": cfg.node.address}]
    labels = scheduling.kubelet_labels()
    if labels:
        args.append({"name": "node-labels", "value": ",".join(f"{k}={v}" for k, v in labels.items())})
    reg: dict[str, Any] = {"name": cfg.node.name, "criSocket": CRI_SOCKET, "kubeletExtraArgs": args}
    if scheduling.taints:
        taints = list(scheduling.taints)
        if cfg.is_control and not any(t.ident == CONTROL_PLANE_TAINT.ident for t in taints):
            taints.insert(0, CONTROL_PLANE_TAINT)
        reg["taints"] = [t.to_api() for t in taints]
    return reg


def render_init_config(cfg: NodeConfig, token: str, certificate_key: str) -> str:
    """InitConfiguration + ClusterConfiguration as one multi-document YAML string."""
    init = {
        "apiVersion": API_VERSION,
        "kind": "InitConfiguration",
        "bootstrapTokens": [
            {
                "token": token,
                "ttl": f"{int(TOKEN_TTL_S)}s",
                "usages": ["signing", "authentication"],
                "groups": ["system:bootstrappers:kubeadm:default-node-token"],
                "description": f"ephemeral-k8s join token for cluster {cfg.cluster}",
            }
        ],
        "certificateKey": certificate_key,
        "localAPIEndpoint": {
            "advertiseAddress": cfg.node.address,
            "bindPort": cfg.kubernetes.api_server_port,
        },
        "nodeRegistration": _node_registration(cfg),
    }
    sans = [cfg.vip.address, cfg.vip.hostname, *cfg.kubernetes.extra_sans]
    cluster = {
        "apiVersion": API_VERSION,
        "kind": "ClusterConfiguration",
        "clusterName": cfg.cluster,
        "kubernetesVersion": cfg.kubernetes.version,
        "controlPlaneEndpoint": f"{cfg.vip.hostname}:{cfg.vip.port}",
        "encryptionAlgorithm": "ECDSA-P256",
        "networking": {
            "podSubnet": cfg.kubernetes.pod_subnet,
            "serviceSubnet": cfg.kubernetes.service_subnet,
        },
        "apiServer": {"certSANs": list(dict.fromkeys(sans))},
    }
    return yaml.safe_dump_all([init, cluster], sort_keys=False)


def render_renewal_config(cfg: NodeConfig, token: str, certificate_key: str) -> str:
    """The config file of a join-material renewal on a control node: an InitConfiguration
    with the one bootstrap token ``kubeadm token create --config`` creates (TTL
    :data:`TOKEN_TTL_S`, kubeadm's default usages and group) and the ``certificateKey``
    ``kubeadm init phase upload-certs --config`` seals the certificates with, plus the
    cluster's ClusterConfiguration (the phase reads ``certificatesDir`` and the etcd kind from
    it). kubeadm refuses ``--config`` mixed with ``--ttl`` or ``--certificate-key``
    (``ValidateMixedArguments``), so everything is in the file."""
    return render_init_config(cfg, token, certificate_key)


def render_join_config(cfg: NodeConfig, material: JoinMaterial) -> str:
    """JoinConfiguration; with a ``controlPlane`` section on control nodes."""
    join: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "JoinConfiguration",
        "discovery": {
            "bootstrapToken": {
                "apiServerEndpoint": material.api_server_endpoint,
                "token": material.token,
                "caCertHashes": list(material.ca_cert_hashes),
            }
        },
        "nodeRegistration": _node_registration(cfg),
    }
    if cfg.is_control:
        join["controlPlane"] = {
            "localAPIEndpoint": {
                "advertiseAddress": cfg.node.address,
                "bindPort": cfg.kubernetes.api_server_port,
            },
            "certificateKey": material.certificate_key,
        }
    return yaml.safe_dump(join, sort_keys=False)


class KubeadmDriver:
    """Runs the kubeadm executable named in node.yaml (``kubernetes.kubeadm``).

    One command at a time; :meth:`abort` (from another thread) kills the running one.
    """

    name = "kubeadm"
    prune_kinds: tuple[str, ...] = ("node", "etcd_member")
    restores_snapshots = True
    restore_needs_secret = False
    control_only_fields: tuple[str, ...] = ("certificate_key",)
    etcd_endpoint = ETCD_ENDPOINT

    # The unit (lab: the process-mode service) that runs this node's kubelet; the agent
    # restarts it when the Node vanished (a running kubelet does not register it again).
    kubelet_service = "kubelet"

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.version = versions.parse(cfg.kubernetes.version)
        self._config_dir = Path("/run/ek8s/kubeadm")  # node path; holds the token, 0700
        self._runner = CommandRunner("kubeadm", cfg.timeouts.command_s, redact, log)

    # -- files this distribution keeps on the node -------------------------------------
    @property
    def kubelet_kubeconfig(self) -> Path:
        """``/etc/kubernetes/kubelet.conf`` as a host path (written by init and join)."""
        return self.cfg.host_path("/etc/kubernetes/kubelet.conf")

    @property
    def admin_kubeconfig(self) -> Path:
        """``/etc/kubernetes/admin.conf`` as a host path (control nodes)."""
        return self.cfg.host_path("/etc/kubernetes/admin.conf")

    @property
    def pki_dir(self) -> Path:
        """``/etc/kubernetes/pki`` as a host path."""
        return self.cfg.host_path(PKI_DIR)

    @property
    def etcd_manifest(self) -> Path:
        """kubeadm's static pod manifest for the local etcd member (the kubelet runs it)."""
        return self.cfg.host_path("/etc/kubernetes/manifests/etcd.yaml")

    def has_etcd_data(self) -> bool:
        """``/var/lib/etcd/member`` exists: kubeadm's etcd data directory holds a member."""
        return self.cfg.host_path("/var/lib/etcd/member").is_dir()

    def reform_etcd(self, timeout_s: float = 120.0) -> None:
        """etcd's disaster recovery on a kubeadm node: add ``--force-new-cluster`` to the etcd
        static pod's command (the kubelet restarts the pod when its manifest changes), wait until
        the member has quorum alone, then remove the flag again (etcd's documentation: the flag
        must not stay, it would re-form the cluster at every restart) and wait once more.
        Raises :class:`DriverError` when the manifest cannot be read or etcd does not come back."""
        from core.etcd import EtcdError, wait_single_member_quorum

        ctx = self.etcd_client_context()
        if ctx is None:
            raise DriverError(["reform-etcd"], 1, "no etcd client certificate on this node")
        for add in (True, False):
            self._set_force_new_cluster(add)
            try:
                view = wait_single_member_quorum(self.etcd_endpoint, ctx, timeout_s)
            except EtcdError as err:
                raise DriverError(["reform-etcd"], 1, str(err)) from err
            log.info(
                "etcd re-formed" if add else "etcd runs without --force-new-cluster again",
                extra={"raft_index": view.raft_index},
            )

    def _set_force_new_cluster(self, on: bool) -> None:
        """Rewrite the etcd manifest's ``spec.containers[0].command`` with or without
        ``--force-new-cluster`` (a Pod manifest as kubeadm writes it)."""
        try:
            pod = yaml.safe_load(self.etcd_manifest.read_text())
            command: list[str] = pod["spec"]["containers"][0]["command"]
        except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as err:
            raise DriverError(["reform-etcd"], 1, f"{self.etcd_manifest}: {err}") from err
        flag = "--force-new-cluster"
        command[:] = [a for a in command if a != flag] + ([flag] if on else [])
        write_atomic(self.etcd_manifest, yaml.safe_dump(pod, sort_keys=False))

    def etcd_member_node(self, member_name: str) -> str:
        """kubeadm names a node's etcd member as the node: ``member_name`` itself."""
        return member_name

    def is_joined(self) -> bool:
        """Whether ``kubelet.conf`` exists: an init or join completed and was not reset."""
        return self.kubelet_kubeconfig.exists()

    def etcd_client_context(self) -> ssl.SSLContext | None:
        """The ``apiserver-etcd-client`` pair kubeadm's API server uses for etcd, or None
        before init/join made it."""
        from core.etcd import kubeadm_client_context

        if not (self.pki_dir / "apiserver-etcd-client.crt").exists():
            return None
        return kubeadm_client_context(self.pki_dir)

    # -- running kubeadm ------------------------------------------------------------------
    def _write_config(self, name: str, text: str) -> str:
        host_dir = ensure_dir(self.cfg.host_path(self._config_dir))
        write_atomic(host_dir / name, text)
        return str(self._config_dir / name)

    def _run(self, args: list[str]) -> str:
        """Run kubeadm with ``args`` (``--rootfs`` added in the lab); returns its output.
        Raises :class:`PreflightFailed` when kubeadm's preflight refused (each failed check
        named), else :class:`DriverError` (:class:`CommandRunner`)."""
        argv = [self.cfg.kubernetes.kubeadm, *args]
        if self.cfg.root != Path("/"):
            argv += ["--rootfs", str(self.cfg.root)]
        try:
            return self._runner.run(argv)
        except DriverError as err:
            checks = preflight_errors(err.output)
            if checks and "Some fatal errors occurred" in err.output:
                raise PreflightFailed(err.command, err.returncode, err.output, checks) from err
            raise

    def abort(self) -> None:
        """Kill the running kubeadm and its process group (SIGKILL: kubeadm leaves partial
        state either way, and the agent runs ``kubeadm reset -f`` next)."""
        self._runner.abort()

    # -- the interface ------------------------------------------------------------------
    def new_credentials(self, restore_secret: str | None = None) -> Credentials:
        """A new bootstrap token and certificate key (:mod:`core.joinmaterial`); a restore
        needs no secret of the old generation (``restore_secret`` is ignored)."""
        return Credentials(token=generate_token(), certificate_key=generate_certificate_key())

    def save_snapshot(self) -> SnapshotTaken:
        """etcd's ``POST /v3/maintenance/snapshot`` from the local member through its JSON
        gateway (what ``etcdctl snapshot save`` asks for; the host has no etcdctl of the
        etcd static pod's). Raises :class:`core.etcd.EtcdError` when etcd does not answer and
        :class:`DriverError` before this node runs a member."""
        import asyncio

        from core.etcd import EtcdClient

        ctx = self.etcd_client_context()
        if ctx is None:
            raise DriverError(["etcd-snapshot"], 1, "no etcd client certificate on this node")

        async def _take() -> bytes:
            async with EtcdClient([self.etcd_endpoint], ctx) as etcd:
                return await etcd.snapshot()

        return SnapshotTaken(data=asyncio.run(_take()), secret=None, tool="etcd maintenance/snapshot")

    def init(self, credentials: Credentials, restore_from: Path | None = None) -> InitResult:
        """``kubeadm init --config F --upload-certs`` (with etcd restored first when
        ``restore_from`` names a snapshot)."""
        text = render_init_config(self.cfg, credentials.token, credentials.certificate_key)
        path = self._write_config("init.yaml", text)
        args = ["init", "--config", path, "--upload-certs"]
        if restore_from is not None:
            self.restore_etcd(restore_from)
            # kubeadm's documented way to start a control plane on an existing etcd data dir.
            args.append("--ignore-preflight-errors=DirAvailable--var-lib-etcd")
        self._run(args)
        return InitResult(
            admin_kubeconfig=self.admin_kubeconfig.read_bytes(),
            ca_cert_pem=(self.pki_dir / "ca.crt").read_bytes(),
        )

    def join_material(self, result: InitResult, credentials: Credentials, generation: int, epoch: int) -> JoinMaterial:
        """Token, ``sha256:`` CA pin and certificate key, with kubeadm's lifetimes."""
        now = time.time()
        return JoinMaterial(
            generation=generation,
            epoch=epoch,
            api_server_endpoint=f"{self.cfg.vip.hostname}:{self.cfg.vip.port}",
            token=credentials.token,
            token_expires_at=now + TOKEN_TTL_S,
            ca_cert_hashes=[ca_cert_hash(result.ca_cert_pem)],
            certificate_key=credentials.certificate_key,
            certificate_key_expires_at=now + CERTIFICATE_KEY_TTL_S,
            ca_cert=result.ca_cert_pem.decode(),
            published_by=self.cfg.node.name,
        )

    def etcd_restore_tool(self) -> str:
        """The tool that checks and restores a snapshot on this node, as a path or name to run:
        ``kubernetes.etcdutl`` when it is found; else, while the version's etcd is 3.5 (whose
        ``etcdctl`` still restores, deprecated), ``kubernetes.etcdctl``. Raises
        :class:`DriverError` naming what is missing: from 1.34 on kubeadm runs etcd 3.6, whose
        ``etcdctl`` has no ``snapshot restore``/``status`` (:func:`core.versions.etcdctl_restores_snapshots`)."""
        etcdutl = shutil.which(self.cfg.kubernetes.etcdutl)
        if etcdutl:
            return etcdutl
        if versions.etcdctl_restores_snapshots(self.version):
            etcdctl = shutil.which(self.cfg.kubernetes.etcdctl)
            if etcdctl:
                return etcdctl
            missing = f"neither {self.cfg.kubernetes.etcdutl} nor {self.cfg.kubernetes.etcdctl} found"
        else:
            etcd = ".".join(map(str, versions.etcd_minor(self.version)))
            missing = (
                f"{self.cfg.kubernetes.etcdutl} not found: kubeadm {self.version.minor_tag} runs etcd {etcd}, whose "
                "etcdctl has no 'snapshot restore' or 'snapshot status' (etcd-io/etcd#13809); install etcdutl "
                "(the etcd image's /usr/local/bin/etcdutl, or kubernetes.etcdutl in node.yaml)"
            )
        raise DriverError([self.cfg.kubernetes.etcdutl, "snapshot", "restore"], 127, missing)

    def restore_etcd(self, snapshot: Path) -> None:
        """``etcdutl snapshot restore`` (``etcdctl`` while the version's etcd is 3.5 and no
        etcdutl is found: :meth:`etcd_restore_tool`) into ``/var/lib/etcd`` as a one-member
        cluster of this node, as kubeadm's etcd expects it. Raises :class:`DriverError` when
        the tool is missing, fails or takes more than 300 s."""
        tool = self.etcd_restore_tool()
        # Check the file first (etcd's own integrity check of a snapshot), before anything of
        # this node's is removed.
        try:
            checked = subprocess.run(
                [tool, "snapshot", "status", str(snapshot)],
                capture_output=True,
                text=True,
                env={**os.environ, "ETCDCTL_API": "3"},
                timeout=120,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise DriverError([tool, "snapshot", "status"], 127, str(err)) from err
        if checked.returncode != 0:
            raise DriverError(
                [tool, "snapshot", "status", str(snapshot)], checked.returncode, checked.stdout + checked.stderr
            )
        data_dir = self.cfg.host_path(ETCD_DATA_DIR)
        if data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        peer = f"https://{self.cfg.node.address}:2380"
        argv = [
            tool,
            "snapshot",
            "restore",
            str(snapshot),
            f"--name={self.cfg.node.name}",
            f"--initial-cluster={self.cfg.node.name}={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--data-dir={data_dir}",
        ]
        log.info("restoring etcd", extra={"command": " ".join(argv)})
        try:
            res = subprocess.run(
                argv, capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=300
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise DriverError(argv, 127, str(err)) from err
        if res.returncode != 0:
            raise DriverError(argv, res.returncode, res.stdout + res.stderr)
        os.chmod(data_dir, 0o700)

    def join(self, material: JoinMaterial) -> None:
        """``kubeadm join --config F``; the JoinConfiguration has a ``controlPlane`` section on
        control nodes (node.yaml's role), so one method serves both."""
        path = self._write_config("join.yaml", render_join_config(self.cfg, material))
        self._run(["join", "--config", path])

    def renew_join_material(
        self, material: JoinMaterial, parts: tuple[str, ...] = ("token", "certificate_key")
    ) -> tuple[JoinMaterial, list[str]]:
        """Ask the API (this node's admin kubeconfig) whether the token's
        ``bootstrap-token-<id>`` Secret and the ``kubeadm-certs`` Secret are still there and
        more than :data:`TOKEN_RENEW_MARGIN_S` (the token) and :data:`RENEW_MARGIN_S` (the
        certificate key) from expiry; renew what is not, among ``parts``,
        with ``kubeadm token create --config F`` and ``kubeadm init phase upload-certs
        --upload-certs --config F --skip-certificate-key-print``, the new token and key in
        the config file ``F`` (0600, this node's ``/run``), never on the command line
        (:func:`render_renewal_config`)."""
        token_ok, certs_ok = self._join_material_valid(material)
        token_ok = token_ok or "token" not in parts
        certs_ok = certs_ok or "certificate_key" not in parts
        if token_ok and certs_ok:
            return material, []
        now = time.time()
        token = material.token if token_ok else generate_token()
        key = material.certificate_key if certs_ok else generate_certificate_key()
        path = self._write_config("renew.yaml", render_renewal_config(self.cfg, token, key))
        try:
            if not token_ok:
                # kubeadm creates the InitConfiguration's bootstrapTokens (cmd/kubeadm/app/cmd/token.go,
                # RunCreateToken: LoadOrDefaultInitConfiguration then CreateNewTokens).
                self._run(["token", "create", "--config", path])
            if not certs_ok:
                # The phase takes InitConfiguration.certificateKey (initData.CertificateKey).
                self._run(["init", "phase", "upload-certs", "--upload-certs", "--config", path,
                           "--skip-certificate-key-print"])  # fmt: skip
        finally:
            self.cfg.host_path(path).unlink(missing_ok=True)
        renewed = replace(
            material,
            token=token,
            token_expires_at=material.token_expires_at if token_ok else now + TOKEN_TTL_S,
            certificate_key=key,
            certificate_key_expires_at=material.certificate_key_expires_at if certs_ok else now + CERTIFICATE_KEY_TTL_S,
            published_by=self.cfg.node.name,
            published_at=now,
        )
        return renewed, [n for n, ok in (("token", token_ok), ("certificate_key", certs_ok)) if not ok]

    def _join_material_valid(self, material: JoinMaterial) -> tuple[bool, bool]:
        """(token still valid, uploaded certificates still there). Raises
        :class:`ApiUnavailable` when the API does not answer."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        from core.probes import kube_client, kube_errors

        if not self.admin_kubeconfig.exists():
            raise ApiUnavailable(f"{self.admin_kubeconfig}: no admin kubeconfig on this node yet")
        margin = time.time() + RENEW_MARGIN_S
        token_margin = time.time() + TOKEN_RENEW_MARGIN_S

        def secret(name: str) -> Any:
            try:
                api = client.CoreV1Api(kube_client(self.admin_kubeconfig))
                return api.read_namespaced_secret(name, "kube-system", _request_timeout=5)
            except ApiException as err:
                if err.status == 404:
                    return None
                raise ApiUnavailable(f"kubernetes API: {err.reason}") from err
            except kube_errors() as err:
                raise ApiUnavailable(f"kubernetes API: {err}") from err

        token_secret = secret(f"bootstrap-token-{material.token.split('.')[0]}")
        token_ok = False
        if token_secret is not None and token_secret.data:
            raw = base64.b64decode(token_secret.data.get("expiration", "")).decode()
            expires = dt.datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp() if raw else 0.0
            token_ok = not raw or expires > token_margin
        certs_ok = secret("kubeadm-certs") is not None and material.certificate_key_expires_at > margin
        return token_ok, certs_ok

    def reset(self, whole_cluster: bool = False) -> None:
        """``kubeadm reset -f``. The kube-apiserver static pod's manifest goes first, so that
        the kubelet stops it at once and no client behind the VIP reaches an API server of a
        cluster being torn down while the reset runs. With ``whole_cluster`` (a new generation:
        every member is being reset), ``--skip-phases=remove-etcd-member``: removing this
        member through an etcd that is losing its members only waits out kubeadm's etcd
        retries (up to 2 min, ``EtcdAPICall``). That phase is the only one that empties
        ``/var/lib/etcd`` (``cmd/phases/reset/removeetcdmember.go``; ``cleanupnode.go`` leaves
        it), and the next ``kubeadm init`` or control-plane join would fail preflight with
        ``[ERROR DirAvailable--var-lib-etcd]``: so the driver empties it itself afterwards,
        whether kubeadm succeeded or not. Raises :class:`DriverError` when kubeadm fails."""
        self.cfg.host_path("/etc/kubernetes/manifests/kube-apiserver.yaml").unlink(missing_ok=True)
        args = ["reset", "-f"]
        if whole_cluster:
            args.append("--skip-phases=remove-etcd-member")
        try:
            self._run(args)
        finally:
            if whole_cluster:
                self._clean_etcd_data_dir()

    def _clean_etcd_data_dir(self) -> None:
        """Empty ``/var/lib/etcd`` (keep the directory), as kubeadm's ``remove-etcd-member``
        phase does (``CleanDir``), logging what it removed."""
        data_dir = self.cfg.host_path(ETCD_DATA_DIR)
        try:
            children = list(data_dir.iterdir())
        except FileNotFoundError:
            return
        for child in children:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        if children:
            log.info(
                "emptied the etcd data directory kubeadm reset leaves when it skips remove-etcd-member",
                extra={"path": ETCD_DATA_DIR, "entries": len(children)},
            )
