"""The kubeadm driver: config files, not flag soup.

The renderers are pure functions producing ``kubeadm.k8s.io/v1beta4`` documents
(InitConfiguration + ClusterConfiguration, JoinConfiguration), following the kubeadm
configuration reference:

* ``controlPlaneEndpoint`` is the VIP's hostname and HAProxy port, so every node reaches the
  API through keepalived + HAProxy;
* ``apiServer.certSANs`` holds the VIP address and name plus ``kubernetes.extra_sans`` (the
  Warewulf manager's address in the proof of concept);
* the agent supplies the bootstrap token and the certificate key, so join material is known
  before ``kubeadm init --upload-certs`` finishes;
* ``encryptionAlgorithm: ECDSA-P256`` (v1beta4, Kubernetes 1.31+) for fast key generation.

Commands run are ``kubeadm init --config F --upload-certs``, ``kubeadm join --config F`` and
``kubeadm reset -f``. When node.yaml's ``root`` is not ``/`` (the lab), ``--rootfs <root>`` is
added and the config path is given relative to that root, as kubeadm's ``--rootfs`` expects.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from leader.config import NodeConfig
from leader.drivers.base import DriverError, InitResult
from leader.fileperm import ensure_dir, write_atomic
from leader.logs import get_logger
from leader.share import JoinMaterial

API_VERSION = "kubeadm.k8s.io/v1beta4"
CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"
# kubeadm deletes the kubeadm-certs Secret together with its owner token after two hours.
CERTIFICATE_KEY_TTL_S = 2 * 3600.0
TOKEN_TTL_S = 24 * 3600.0

log = get_logger(__name__, "kubeadm")
_SECRETS = re.compile(r"\b([a-z0-9]{6})\.[a-z0-9]{16}\b|(?<!sha256:)\b[0-9a-f]{64}\b")


def redact(text: str) -> str:
    """Hide bootstrap token secrets and certificate keys before anything reaches the log."""
    return _SECRETS.sub(lambda m: f"{m.group(1)}.<redacted>" if m.group(1) else "<redacted>", text)


def _node_registration(cfg: NodeConfig) -> dict[str, Any]:
    return {
        "name": cfg.node.name,
        "criSocket": CRI_SOCKET,
        "kubeletExtraArgs": [{"name": "node-ip", "value": cfg.node.address}],
        # Workers carry no taint; control nodes keep kubeadm's default control-plane taint.
    }


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
    """Runs the kubeadm executable named in node.yaml (``kubernetes.kubeadm``)."""

    name = "kubeadm"
    prune_kinds = ("node", "etcd_member")

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self._config_dir = Path("/run/ek8s/kubeadm")  # node path; holds the token, 0700

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.cfg.host_path("/etc/kubernetes/kubelet.conf")

    @property
    def admin_kubeconfig(self) -> Path:
        return self.cfg.host_path("/etc/kubernetes/admin.conf")

    def is_joined(self) -> bool:
        return self.kubelet_kubeconfig.exists()

    def _write_config(self, name: str, text: str) -> str:
        host_dir = ensure_dir(self.cfg.host_path(self._config_dir))
        write_atomic(host_dir / name, text)
        return str(self._config_dir / name)

    def _run(self, args: list[str]) -> str:
        argv = [self.cfg.kubernetes.kubeadm, *args]
        if self.cfg.root != Path("/"):
            argv += ["--rootfs", str(self.cfg.root)]
        started = time.monotonic()
        log.info("running kubeadm", extra={"command": redact(" ".join(argv))})
        try:
            res = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.cfg.timeouts.command_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as err:
            out = (err.stdout or "") if isinstance(err.stdout, str) else ""
            raise DriverError(
                [redact(a) for a in argv], -1, redact(out) + f"\ntimed out after {self.cfg.timeouts.command_s}s"
            ) from err
        except OSError as err:
            raise DriverError([redact(a) for a in argv], 127, str(err)) from err
        output = redact(res.stdout + res.stderr)
        for line in output.splitlines():
            log.info(line, extra={"source": "kubeadm"})
        if res.returncode != 0:
            raise DriverError([redact(a) for a in argv], res.returncode, output)
        log.info("kubeadm finished", extra={"seconds": round(time.monotonic() - started, 3)})
        return output

    def init(self, token: str, certificate_key: str, generation: int, restore_from: Path | None = None) -> InitResult:
        path = self._write_config("init.yaml", render_init_config(self.cfg, token, certificate_key))
        args = ["init", "--config", path, "--upload-certs"]
        if restore_from is not None:
            self.restore_etcd(restore_from)
            # kubeadm's documented way to start a control plane on an existing etcd data dir.
            args.append("--ignore-preflight-errors=DirAvailable--var-lib-etcd")
        self._run(args)
        return InitResult(
            admin_kubeconfig=self.admin_kubeconfig.read_bytes(),
            ca_cert_pem=self.cfg.host_path("/etc/kubernetes/pki/ca.crt").read_bytes(),
        )

    def restore_etcd(self, snapshot: Path) -> None:
        """``etcdctl snapshot restore`` (etcd 3.4; ``etcdutl`` from 3.5 on) into
        ``/var/lib/etcd`` as a one-member cluster of this node, as kubeadm's etcd expects it."""
        data_dir = self.cfg.host_path("/var/lib/etcd")
        if data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        tool = shutil.which("etcdutl") or "etcdctl"
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
        res = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=300)
        if res.returncode != 0:
            raise DriverError(argv, res.returncode, res.stdout + res.stderr)
        os.chmod(data_dir, 0o700)

    def _join(self, material: JoinMaterial) -> None:
        # The JoinConfiguration carries a controlPlane section on control nodes (node.yaml role).
        path = self._write_config("join.yaml", render_join_config(self.cfg, material))
        self._run(["join", "--config", path])

    join_control_plane = _join
    join_worker = _join

    def refresh_join_material(self, token: str | None, certificate_key: str | None) -> None:
        """``kubeadm token create TOKEN --ttl 86400s`` and
        ``kubeadm init phase upload-certs --upload-certs --certificate-key KEY`` (they use
        this node's /etc/kubernetes/admin.conf)."""
        if token is not None:
            self._run(["token", "create", token, "--ttl", f"{int(TOKEN_TTL_S)}s"])
        if certificate_key is not None:
            self._run(["init", "phase", "upload-certs", "--upload-certs", "--certificate-key", certificate_key])

    def reset(self) -> None:
        self._run(["reset", "-f"])
