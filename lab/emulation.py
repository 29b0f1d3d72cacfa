"""Knobs of the lab's emulated Kubernetes (kubeadm, kube-apiserver, kubelet). Lab only.

The lab writes them to a JSON file and points ``EK8S_EMULATION`` at it; the emulated
``kubeadm`` shim and the processes it starts read it. Durations are seconds.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

ENV = "EK8S_EMULATION"


@dataclass(frozen=True)
class Emulation:
    """The knobs, seconds as floats. ``python`` runs the emulated kube-apiserver and kubelet
    (``-m lab.apiserver``, ``-m lab.kubelet``); ``etcd`` is the real etcd binary the emulated
    kubeadm starts. Set by ``ek8s lab up`` (``--init-seconds``, ``--join-seconds``,
    ``--certs-ttl``, ``--token-ttl``)."""

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


def record_cmdline(tool: str) -> None:
    """Append this process's command line as the kernel shows it to every user of the node
    (``/proc/self/cmdline``, NUL-separated; proc(5)) to ``cmdlines.jsonl`` beside the file
    ``$EK8S_EMULATION`` names: ``{"t", "tool", "pid", "cmdline": [...]}``. The emulated
    kubeadm and k3s call it first thing, so the lab's tests can check that no token or key is
    on a command line while the tools run (docs/security.md). Nothing without the variable;
    never raises (a lab without the file loses the record, not the command)."""
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        raw = Path("/proc/self/cmdline").read_bytes()
        line = {
            "t": time.time(),
            "tool": tool,
            "pid": os.getpid(),
            "cmdline": [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a],
        }
        with open(Path(path).parent / "cmdlines.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
    except OSError:
        pass
