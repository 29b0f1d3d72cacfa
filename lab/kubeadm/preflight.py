"""EMULATED kubeadm's preflight checks (lab only), the ones that can fail on a lab node, with
kubeadm's names and messages (``cmd/kubeadm/app/preflight/checks.go``, read at a 1.34+
commit and checked against 1.32's):

* ``InitNodeChecks`` (``kubeadm init``, and a control-plane ``join`` after discovery with
  ``isSecondaryControlPlane``): ``Port-<bindPort>`` (6443), ``Port-10259``
  (kube-scheduler), ``Port-10257`` (kube-controller-manager), ``FileAvailable--...`` for the
  four control-plane manifests, and with a local etcd ``Port-2379``, ``Port-2380`` and
  ``DirAvailable--var-lib-etcd``; ``kubeadm init`` adds the common checks, of which
  ``Port-10250`` (the kubelet) is emulated.
* ``JoinNodeChecks`` (every ``join``, before discovery): ``FileAvailable--etc-kubernetes-kubelet.conf``,
  ``FileAvailable--etc-kubernetes-bootstrap-kubelet.conf``, ``Port-10250``, and on a worker
  ``FileAvailable--etc-kubernetes-pki-ca.crt``. (kubeadm checked that
  ``/etc/kubernetes/manifests`` is empty until 1.22; kubernetes#104942 took that out.)

A port check binds the port on every address of the node's network namespace (``net.Listen``
with Go's ``SO_REUSEADDR``): it fails while anything of the node listens there (an API
server, etcd, the emulated kubelet). Checks of the host itself (CPUs, memory, swap, the
container runtime, kernel settings, executables) are not emulated.

A failed check is ``[ERROR <name>]: <message>``; one named in ``--ignore-preflight-errors``
(or ``nodeRegistration.ignorePreflightErrors``; ``all`` for every check) is printed as
``[WARNING <name>]: ...`` instead. How the errors reach the user differs by version
(:func:`core.versions.kubeadm_preflight_error_inline`): until 1.33 they are the error's own
message, from 1.34 on they are printed on stderr and the error reads ``preflight checks
failed``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass

from core import versions
from core.versions import KubernetesVersion
from lab.kubeadm.workflow import KubeadmError
from lab.nodekit import Root

MANIFESTS = "/etc/kubernetes/manifests"
CONTROL_PLANE_MANIFESTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
KUBE_SCHEDULER_PORT = 10259  # constants.go KubeSchedulerPort
KUBE_CONTROLLER_MANAGER_PORT = 10257  # constants.go KubeControllerManagerPort
KUBELET_PORT = 10250  # constants.go KubeletPort
ETCD_CLIENT_PORT = 2379  # constants.go EtcdListenClientPort
ETCD_PEER_PORT = 2380  # constants.go EtcdListenPeerPort
ETCD_DATA_DIR = "/var/lib/etcd"  # ClusterConfiguration etcd.local.dataDir default
IF_YOU_KNOW = (
    "[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`"
)


class PreflightFailed(KubeadmError):
    """Preflight found errors; ``errors`` are the ``[ERROR ...]`` lines. ``str()`` is what
    kubeadm of that version makes the error's message (see the module)."""

    def __init__(self, message: str, errors: list[str]) -> None:
        super().__init__(message)
        self.errors = errors


@dataclass(frozen=True)
class Check:
    """One preflight check: kubeadm's ``name`` (``Name()``) and ``run``, which returns the
    check's error messages (none: it passed)."""

    name: str
    run: Callable[[], list[str]]


def _flat(path: str) -> str:
    return path.replace("/", "-")


def port_open(port: int) -> Check:
    """``PortOpenCheck``: nothing listens on TCP ``port`` ("Port %d is in use")."""

    def run() -> list[str]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:  # Go's ":port" is dual-stack; the lab's nodes speak IPv4 only
                s.bind(("0.0.0.0", port))
                s.listen(1)
            except OSError:
                return [f"Port {port} is in use"]
        return []

    return Check(f"Port-{port}", run)


def dir_available(r: Root, path: str) -> Check:
    """``DirAvailableCheck``: ``path`` does not exist or is empty ("%s is not empty")."""

    def run() -> list[str]:
        d = r(path)
        if not d.exists():
            return []
        try:
            empty = not any(d.iterdir())
        except OSError as err:
            return [f"unable to check if {path} is empty: {err.strerror}"]
        return [] if empty else [f"{path} is not empty"]

    return Check(f"DirAvailable-{_flat(path)}", run)


def file_available(r: Root, path: str) -> Check:
    """``FileAvailableCheck``: ``path`` does not exist ("%s already exists")."""

    def run() -> list[str]:
        return [f"{path} already exists"] if r(path).exists() else []

    return Check(f"FileAvailable-{_flat(path)}", run)


def init_node_checks(r: Root, bind_port: int, secondary_control_plane: bool) -> list[Check]:
    """``InitNodeChecks`` as the module lists them, in kubeadm's order (the etcd ones last);
    ``secondary_control_plane``: for a control-plane join (no common checks, which
    :func:`join_node_checks` ran)."""
    checks = [port_open(bind_port), port_open(KUBE_SCHEDULER_PORT), port_open(KUBE_CONTROLLER_MANAGER_PORT)]
    checks += [file_available(r, f"{MANIFESTS}/{m}.yaml") for m in CONTROL_PLANE_MANIFESTS]
    if not secondary_control_plane:
        checks.append(port_open(KUBELET_PORT))  # addCommonChecks
    checks += [port_open(ETCD_CLIENT_PORT), port_open(ETCD_PEER_PORT), dir_available(r, ETCD_DATA_DIR)]
    return checks


def join_node_checks(r: Root, control_plane: bool) -> list[Check]:
    """``JoinNodeChecks`` as the module lists them."""
    checks = [
        file_available(r, "/etc/kubernetes/kubelet.conf"),
        file_available(r, "/etc/kubernetes/bootstrap-kubelet.conf"),
        port_open(KUBELET_PORT),  # addCommonChecks
    ]
    if not control_plane:
        checks.append(file_available(r, "/etc/kubernetes/pki/ca.crt"))  # JoinConfiguration caCertPath
    return checks


def run_checks(checks: list[Check], ignored: frozenset[str], kubeadm: KubernetesVersion) -> None:
    """``RunChecks``: every check runs; an ignored one's errors are printed as warnings on
    stderr. Raises :class:`PreflightFailed` when errors are left, worded for ``kubeadm``'s
    version (see the module)."""
    errors: list[str] = []
    for c in checks:
        found = c.run()
        if "all" in ignored or c.name.lower() in ignored:
            for msg in found:
                print(f"\t[WARNING {c.name}]: {msg}", file=sys.stderr, flush=True)
            continue
        errors += [f"\t[ERROR {c.name}]: {msg}" for msg in found]
    if not errors:
        return
    block = "[preflight] Some fatal errors occurred:\n" + "\n".join(errors) + "\n" + IF_YOU_KNOW
    if versions.kubeadm_preflight_error_inline(kubeadm):
        raise PreflightFailed(block, errors)
    print(block, file=sys.stderr, flush=True)
    raise PreflightFailed("preflight checks failed", errors)
