"""EMULATED kubeadm's configuration files (lab only): the ``--config`` documents, their API
version as the emulated kubeadm's version reads it, the ``timeouts`` it honours, and the
Kubernetes version a ClusterConfiguration may ask for.

The emulated kubeadm has one version, as a node image holds one kubeadm: the lab's
``kubernetes_version`` (:mod:`lab.emulation`, ``ek8s lab up --kubernetes-version``), which
selects its behaviour through :mod:`core.versions`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core import versions
from core.versions import KubernetesVersion
from lab.kubeadm.workflow import KubeadmError, warn

V1BETA3 = "kubeadm.k8s.io/v1beta3"


def load_docs(path: Path, kubeadm: KubernetesVersion) -> dict[str, dict[str, Any]]:
    """The documents of a kubeadm ``--config`` file by ``kind`` (``InitConfiguration``,
    ``ClusterConfiguration``, ``JoinConfiguration``), as kubeadm ``kubeadm`` reads them
    (``util/config/common.go`` ``validateSupportedVersion``): ``v1beta4`` always; ``v1beta3``
    is refused from 1.36 on with kubeadm's "old API spec" message (kubernetes#136016) and
    only warned about before (the emulation itself reads v1beta4 fields only, so it stops
    there too). Raises :class:`KubeadmError`, ``OSError`` and ``yaml.YAMLError``."""
    docs = {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}
    for kind, d in docs.items():
        api = d.get("apiVersion")
        if api == versions.KUBEADM_CONFIG_API:
            continue
        if api == V1BETA3 and not versions.kubeadm_reads_v1beta3(kubeadm):
            raise KubeadmError(
                f'your configuration file uses an old API spec: "{api}" (kind: "{kind}"). Please use kubeadm v1.35 '
                "instead and run 'kubeadm config migrate --old-config old.yaml --new-config new.yaml', which will "
                "write the new, similar spec using a newer API version."
            )
        if api == V1BETA3:
            warn(
                f'your configuration file uses a deprecated API spec: "{api}" (kind: "{kind}"). Please use '
                "'kubeadm config migrate --old-config old.yaml --new-config new.yaml', which will write the new, "
                "similar spec using a newer API version.",
                "common.go",
            )
            raise KubeadmError(f"{path}: the EMULATED kubeadm reads {versions.KUBEADM_CONFIG_API} fields only")
        raise KubeadmError(f"{path}: unsupported apiVersion {api!r} for {kind}")
    return docs


def check_minimum_version(requested: str, kubeadm: KubernetesVersion) -> KubernetesVersion:
    """A ClusterConfiguration's ``kubernetesVersion`` older than one minor below this kubeadm
    is refused ("this version of kubeadm only supports deploying clusters with the control
    plane version >= ...", ``util/config/common.go`` ``NormalizeKubernetesVersion`` with
    ``constants.MinimumControlPlaneVersion``): at ``init`` for the version asked, and at
    ``join`` for the cluster's, read from the ``kubeadm-config`` ConfigMap
    (``FetchInitConfigurationFromCluster`` -> ``SetClusterDynamicDefaults``). So a node image
    two minors newer than the cluster cannot join it: the one-minor-at-a-time rule, enforced
    by the tool. Returns the parsed version; raises :class:`KubeadmError`."""
    try:
        asked = versions.parse(requested)
    except ValueError as err:
        raise KubeadmError(f"couldn't parse Kubernetes version {requested!r}: {err}") from err
    minimum = KubernetesVersion(kubeadm.major, kubeadm.minor - 1, 0)
    if asked < minimum:
        raise KubeadmError(
            f"this version of kubeadm only supports deploying clusters with the control plane version >= "
            f"{str(minimum)[1:]}. Current version: {asked}"
        )
    return asked


def check_kubernetes_version(requested: str, kubeadm: KubernetesVersion) -> None:
    """``init``'s checks of the ClusterConfiguration's ``kubernetesVersion``:
    :func:`check_minimum_version`, then a newer minor than kubeadm's is a preflight warning
    (``KubernetesVersionCheck``). Raises :class:`KubeadmError`."""
    asked = check_minimum_version(requested, kubeadm)
    if (asked.major, asked.minor) > (kubeadm.major, kubeadm.minor):
        warn(
            "[preflight] Kubernetes version is greater than kubeadm version. Please consider to upgrade kubeadm. "
            f"Kubernetes version: {asked}. Kubeadm version: {kubeadm.major}.{kubeadm.minor}.x",
            "checks.go",
        )


_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def go_duration(text: str) -> float:
    """A Go duration (``2m0s``, ``86400s``, ``500ms``, ``1.5h``) in seconds. Raises
    ``ValueError`` on anything else."""
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)", text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(n) * _GO_UNITS[u] for n, u in parts)


def token_ttl_s(ttl: str) -> float:
    """A token ttl (a Go duration: ``24h0m0s``, ``86400s``, ``2h``) in seconds. Raises
    :class:`KubeadmError` on another shape."""
    try:
        return go_duration(ttl)
    except ValueError:
        raise KubeadmError(f"invalid token ttl {ttl!r}") from None


@dataclass(frozen=True)
class Timeouts:
    """The ``timeouts`` of a v1beta4 Init/Join/ResetConfiguration that the emulation honours
    (``apis/kubeadm/v1beta4``, defaults from ``constants.go``), in seconds. ``etcd_api_call_s``
    bounds the retries of each etcd call (``EtcdAPICall``, 2 min)."""

    etcd_api_call_s: float = 120.0

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Timeouts:
        """From a configuration document's ``timeouts`` (Go durations). Raises
        :class:`KubeadmError` on a malformed one."""
        t = doc.get("timeouts") or {}
        try:
            return cls(etcd_api_call_s=go_duration(t["etcdAPICall"]) if "etcdAPICall" in t else 120.0)
        except ValueError as err:
            raise KubeadmError(f"timeouts.etcdAPICall: {err}") from err


def ignored_preflight_errors(flag: str, doc: dict[str, Any]) -> frozenset[str]:
    """The checks whose errors become warnings: ``--ignore-preflight-errors`` (comma
    separated) and ``nodeRegistration.ignorePreflightErrors``, lower-cased as kubeadm compares
    them (``ValidateIgnorePreflightErrors``); ``all`` ignores every check."""
    named = [s for s in flag.split(",") if s] + list(
        (doc.get("nodeRegistration") or {}).get("ignorePreflightErrors") or []
    )
    return frozenset(s.strip().lower() for s in named)
