"""Kubernetes versions: parse ``v1.M.P``, the supported minors, and one predicate per behaviour
that differs between them and that the project (the drivers, the lab's emulated kubeadm, API
server and kubelet) depends on.

node.yaml's ``kubernetes.version`` (a kubeadm ``kubernetesVersion``, ``v1.36.4``) selects the
behaviour. Distribution-neutral where the fact is Kubernetes' own (the kubelet, the etcd minor
a release runs); kubeadm's own facts carry ``kubeadm`` in their names. Each predicate cites
where its fact was read (kubernetes/kubernetes paths are under ``cmd/kubeadm/app/`` unless
they say otherwise; pull requests are kubernetes/kubernetes's unless they name a repository).

The matrix (``True`` where the behaviour is on):

===================================  ====  ====  ====  ====  ====
behaviour                            1.32  1.33  1.34  1.35  1.36
===================================  ====  ====  ====  ====  ====
kubeadm reads v1beta3 configs        yes   yes   yes   yes   no
ControlPlaneKubeletLocalMode         no    yes   yes   yes   yes
WaitForAllControlPlaneComponents     no    yes   yes   yes   yes
etcd minor kubeadm runs              3.5   3.5   3.6   3.6   3.6
``etcdctl snapshot restore|status``  yes   yes   no    no    no
kubeadm prints ``error: `` first     no    no    yes   yes   yes
kubelet re-registers a deleted Node  no    no    no    no    no
===================================  ====  ====  ====  ====  ====

1.37 is not supported: its kubeadm facts were not read from source here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The minors whose behaviour this module knows (each predicate below was read for all of them).
SUPPORTED_MINORS: tuple[int, ...] = (32, 33, 34, 35, 36)
# node.yaml's and the inventory's default: the newest supported minor (Debian sid's kubectl
# is 1.36.4, so the tag exists upstream).
DEFAULT_KUBERNETES_VERSION = "v1.36.4"
# The kubeadm configuration API the kubeadm driver writes: v1beta4 exists since kubeadm 1.31
# (kubernetes#125029) and is the only one left in 1.36 (kubernetes#136016).
KUBEADM_CONFIG_API = "kubeadm.k8s.io/v1beta4"

_VERSION_RE = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


@dataclass(frozen=True, order=True)
class KubernetesVersion:
    """A Kubernetes release ``v<major>.<minor>.<patch>`` (what kubeadm's
    ``kubernetesVersion`` takes, without pre-release suffixes). Ordered by its numbers."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    @property
    def minor_tag(self) -> str:
        """``v1.36``: the minor, as pkgs.k8s.io names its package repositories."""
        return f"v{self.major}.{self.minor}"


def parse(text: str) -> KubernetesVersion:
    """``"v1.36.4"`` -> :class:`KubernetesVersion`. Raises ``ValueError`` naming the expected
    shape for anything else (``1.36.4``, ``v1.36``, ``v1.36.4-rc.0``)."""
    m = _VERSION_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a Kubernetes release: it must look like {DEFAULT_KUBERNETES_VERSION}")
    return KubernetesVersion(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def supported_range() -> str:
    """``v1.32 to v1.36``: the supported minors, for messages."""
    return f"v1.{SUPPORTED_MINORS[0]} to v1.{SUPPORTED_MINORS[-1]}"


def supported(text: str) -> KubernetesVersion:
    """:func:`parse`, then refuse a minor outside :data:`SUPPORTED_MINORS`. Raises
    ``ValueError`` naming the supported range."""
    v = parse(text)
    if v.major != 1 or v.minor not in SUPPORTED_MINORS:
        raise ValueError(f"Kubernetes {v} is not supported: the supported minors are {supported_range()}")
    return v


def _v(version: KubernetesVersion | str) -> KubernetesVersion:
    return version if isinstance(version, KubernetesVersion) else parse(version)


# -- kubeadm ------------------------------------------------------------------------------
def kubeadm_reads_v1beta3(version: KubernetesVersion | str) -> bool:
    """kubeadm still reads ``kubeadm.k8s.io/v1beta3`` documents (deprecated since 1.31,
    kubernetes#125029): until 1.35. kubeadm 1.36 removed it (kubernetes#136016) and refuses
    such a file ("your configuration file uses an old API spec")."""
    return _v(version).minor < 36


def kubeadm_kubelet_local_mode(version: KubernetesVersion | str) -> bool:
    """ControlPlaneKubeletLocalMode is on: a control node's ``kubelet.conf`` points at its own
    API server (``https://<advertise address>:<bind port>``), not the control-plane endpoint,
    and a control-plane join runs ``etcd-join`` then ``kubelet-wait-bootstrap`` after
    ``kubelet-start`` (``cmd/join.go``, ``cmd/phases/join/controlplanejoin.go``). Alpha and
    off in 1.31/1.32 (kubernetes#125582), beta and on by default in 1.33 (kubernetes#129956),
    GA and locked on in 1.35 (kubernetes#134106), the gate removed in 1.36 (kubernetes#135773)."""
    return _v(version).minor >= 33


def kubeadm_etcd_join_phase(version: KubernetesVersion | str) -> str:
    """The join phase that adds the etcd member and writes its manifest:
    ``control-plane-join/etcd`` (after the kubelet waited for its TLS bootstrap) without
    :func:`kubeadm_kubelet_local_mode`, else the top-level ``etcd-join``
    (``cmd/phases/join/controlplanejoin.go`` ``NewEtcdJoinPhase``; the old subphase is
    deprecated and hidden in 1.35, kubernetes#134106). kubeadm names it in its errors."""
    return "etcd-join" if kubeadm_kubelet_local_mode(version) else "control-plane-join/etcd"


def kubeadm_waits_for_all_components(version: KubernetesVersion | str) -> bool:
    """WaitForAllControlPlaneComponents is on: ``wait-control-plane`` checks each component on
    this node (kube-apiserver ``/livez`` on the advertise address, kube-controller-manager and
    kube-scheduler on 127.0.0.1) instead of the kubelet's health and the API through the
    control-plane endpoint, and a join runs a ``wait-control-plane`` phase of its own. Alpha in
    1.30, beta and on by default in 1.33, GA in 1.34 (kubernetes/website, kubeadm feature
    gates table of ``kubeadm init``)."""
    return _v(version).minor >= 33


def kubeadm_error_prefix(version: KubernetesVersion | str) -> str:
    """What kubeadm prints before a failed command's error: nothing until 1.33; ``error: ``
    since 1.34 (kubernetes#132080, ``util/errors``), which also prints the preflight
    ``[ERROR ...]`` lines on stderr and fails with ``preflight checks failed``."""
    return "error: " if _v(version).minor >= 34 else ""


def kubeadm_preflight_error_inline(version: KubernetesVersion | str) -> bool:
    """The preflight errors are the error's message ("error execution phase preflight:
    [preflight] Some fatal errors occurred: ...", ``preflight/checks.go`` ``Error``) until
    1.33; since 1.34 they are printed first and the error reads ``preflight checks failed``
    (kubernetes#132080, ``handleError``). Either way each failed check is one
    ``[ERROR <name>]: <message>`` line."""
    return _v(version).minor < 34


# -- etcd as kubeadm runs it ----------------------------------------------------------------
def etcd_minor(version: KubernetesVersion | str) -> tuple[int, int]:
    """The etcd minor kubeadm's static pod runs (``constants/constants.go``
    ``SupportedEtcdVersion``): 3.5 for 1.32 and 1.33 (3.5.16 at 1.32.0, 3.5.21/3.5.24 in later
    patches), 3.6 from 1.34 on (3.6.4 at 1.34.0, 3.6.x since)."""
    return (3, 6) if _v(version).minor >= 34 else (3, 5)


def etcdctl_restores_snapshots(version: KubernetesVersion | str) -> bool:
    """The etcdctl of :func:`etcd_minor` still has ``snapshot restore`` and ``snapshot status``
    (deprecated in 3.5 for ``etcdutl``): no in etcd 3.6, which removed them
    (etcd-io/etcd#13809; kubernetes-sigs/etcd-manager#64: ``unknown flag: --name``)."""
    return etcd_minor(version) < (3, 6)


# -- the kubelet ----------------------------------------------------------------------------
def kubelet_reregisters_deleted_node(version: KubernetesVersion | str) -> bool:
    """Whether a running kubelet registers its Node again after the Node was deleted. No
    supported version does (``pkg/kubelet/kubelet_node_status.go``: ``registrationCompleted``
    stays true and every status update fails "error getting node ... not found" until the
    kubelet restarts; kubernetes#71398, #115761; the fixes #71407, #115760 and #123535 were
    closed unmerged)."""
    _v(version)
    return False
