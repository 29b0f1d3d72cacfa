"""Knobs of the lab's emulated Kubernetes (kubeadm, kube-apiserver, kubelet). Lab only.

The lab writes them to a JSON file and points ``EK8S_EMULATION`` at it; the emulated
``kubeadm`` shim and the processes it starts read it. Durations are seconds.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from core.versions import DEFAULT_KUBERNETES_VERSION

ENV = "EK8S_EMULATION"


@dataclass(frozen=True)
class Emulation:
    """The knobs, seconds as floats. ``python`` runs the emulated kube-apiserver and kubelet
    (``-m lab.apiserver``, ``-m lab.kubelet``); ``etcd`` is the real etcd binary the emulated
    kubeadm starts. Set by ``ek8s lab up`` (``--init-seconds``, ``--join-seconds``,
    ``--certs-ttl``, ``--token-ttl``). ``kubernetes_version`` is the version of the emulated
    kubeadm, kube-apiserver and kubelet (``--kubernetes-version``; :mod:`core.versions` says
    what it changes), as a node image holds the kubeadm of one version."""

    init_s: float = 0.0  # total duration of `kubeadm init` (the PoC measured ~11 s); 0: as fast as it runs
    join_s: float = 0.0  # total duration of each `kubeadm join`; 0: as fast as it runs
    # The lifetimes of what `kubeadm init` creates: a short one makes a cluster whose join
    # material has run out. Renewals (`kubeadm token create`, `init phase upload-certs`) get
    # kubeadm's own lifetimes (the ttl asked for; 2 h), as they would on a real cluster.
    certs_ttl_s: float = 7200.0  # init's kubeadm-certs Secret (kubeadm: 2 h)
    token_ttl_s: float | None = None  # init's bootstrap token; None: the InitConfiguration's ttl
    node_monitor_grace_s: float = 40.0  # kube-controller-manager --node-monitor-grace-period
    kubelet_interval_s: float = 2.0  # node status update frequency (kubelet default 10 s)
    python: str = sys.executable
    etcd: str = "/usr/bin/etcd"
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION

    def dump(self, path: Path) -> None:
        """Write the settings to ``path`` as JSON (what :func:`load` reads). Raises ``OSError``."""
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")


def load() -> Emulation:
    """The settings named by ``$EK8S_EMULATION``, or the defaults when it is unset; unknown
    keys are ignored. Raises ``OSError`` when the file cannot be read and ``ValueError``
    (``json.JSONDecodeError``) when it is not JSON."""
    path = os.environ.get(ENV)
    if not path:
        return Emulation()
    data = json.loads(Path(path).read_text())
    known = {f.name for f in fields(Emulation)}
    return Emulation(**{k: v for k, v in data.items() if k in known})
