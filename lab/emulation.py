"""Knobs of the lab's emulated Kubernetes (kubeadm, kube-apiserver, kubelet). Lab only.

The lab writes them to a JSON file and points ``EK8S_EMULATION`` at it; the emulated
``kubeadm`` shim and the processes it starts read it. Durations are seconds.

The lab's etcd is etcd 3.5, as Kubernetes 1.32 runs it (kubeadm 1.32 pins 3.5.16; Debian 13's
``etcd-server`` is exactly 3.5.16): ``make`` puts ``etcd``, ``etcdctl`` and ``etcdutl`` in
:data:`ETCD_DIR` (the host's own on Debian 13, Debian 13's packages unpacked on Debian 12;
see the Makefile's ``etcd`` target). ``$EK8S_ETCD_DIR`` names another directory holding the
three, e.g. ``/usr/bin`` on Debian 12 for its etcd 3.4.23, the comparison that
docs/benchmarks.md measures (process mode only: the machines' image has 3.5).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path

from core.bootid import since_process_start_s
from core.versions import DEFAULT_KUBERNETES_VERSION

ENV = "EK8S_EMULATION"
ETCD_DIR = "/opt/ek8s-lab/etcd-3.5/usr/bin"  # the Makefile's ETCD_DIR, /usr/bin below it
ETCD_DIR_ENV = "EK8S_ETCD_DIR"


def etcd_dir() -> Path:
    """Where the lab's ``etcd``, ``etcdctl`` and ``etcdutl`` are: ``$EK8S_ETCD_DIR`` or
    :data:`ETCD_DIR`."""
    return Path(os.environ.get(ETCD_DIR_ENV) or ETCD_DIR)


def etcd_tool(name: str) -> str:
    """The path of ``etcd``, ``etcdctl`` or ``etcdutl`` in :func:`etcd_dir` (whether or not it
    exists: callers that need it check, naming ``make etcd``)."""
    return str(etcd_dir() / name)


@cache
def etcd_version(etcd: str) -> tuple[int, int, int]:
    """``(3, 5, 16)`` from ``<etcd> --version`` ("etcd Version: 3.5.16"). Raises ``OSError``
    when it cannot run and ``ValueError`` when it prints no version."""
    out = subprocess.run([etcd, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"etcd Version: (\d+)\.(\d+)\.(\d+)", out)
    if m is None:
        raise ValueError(f"{etcd} --version printed no version: {out[:200]!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def splits_client_http(version: tuple[int, int, int]) -> bool:
    """Whether etcd ``version`` has ``--listen-client-http-urls`` (etcd-io/etcd#15446, in
    3.4.25 and 3.5.8): HTTP (the JSON gateway) on its own URLs, gRPC alone on the client URLs.
    Debian 12's 3.4.23 has not."""
    return version >= (3, 5, 8) or (3, 4, 25) <= version < (3, 5, 0)


@dataclass(frozen=True)
class Emulation:
    """The knobs, seconds as floats. ``python`` runs the emulated kube-apiserver and kubelet
    (``-m lab.apiserver``, ``-m lab.kubelet``); ``etcd`` is the real etcd binary the emulated
    kubeadm and k3s start, ``etcdctl`` and ``etcdutl`` its tools (:func:`etcd_dir`). Set by
    ``ek8s lab up`` (``--init-seconds``, ``--join-seconds``, ``--certs-ttl``,
    ``--token-ttl``). ``kubernetes_version`` is the version of the emulated kubeadm,
    kube-apiserver and kubelet (``--kubernetes-version``; :mod:`core.versions` says what it
    changes), as a node image holds the kubeadm of one version."""

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
    etcd: str = field(default_factory=lambda: etcd_tool("etcd"))
    etcdctl: str = field(default_factory=lambda: etcd_tool("etcdctl"))
    etcdutl: str = field(default_factory=lambda: etcd_tool("etcdutl"))
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    # Process mode: the nodes' kubeadm, k3s and kubelet are forks of the lab's fork server, which
    # has them imported (lab.forkserver); False: each is a new interpreter (`--no-fork-server`).
    fork_server: bool = True

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


# The process the tool's caller started: this one (None), or, for a tool the lab's fork server
# forked, its client (lab.forkclient), whose command line the node's users see and whose start
# is the tool's start. Set by started_for.
CLIENT_PID: int | None = None
_AT_START: list[Callable[[], None]] = []


def process_pid() -> int:
    """The pid of the process the tool's caller started (:data:`CLIENT_PID`, else this one)."""
    return CLIENT_PID or os.getpid()


def process_started() -> float:
    """Unix seconds when the process of :func:`process_pid` started, to a clock tick (10 ms):
    now less its age (:func:`core.bootid.since_process_start_s`; ``psutil``'s ``create_time``
    adds ``btime``, which is whole seconds, so it may be up to 1 s early). Now when it cannot
    be read."""
    return time.time() - (since_process_start_s(process_pid()) or 0.0)


def at_start(reset: Callable[[], None]) -> None:
    """Have :func:`started_for` call ``reset``: for state a module makes when imported that
    belongs to one run of the tool (a fork server's child starts with its server's)."""
    _AT_START.append(reset)


def started_for(client_pid: int) -> None:
    """In a child of the lab's fork server, before the tool's entry: the tool runs for
    ``client_pid`` (:data:`CLIENT_PID`), and each :func:`at_start` reset runs."""
    global CLIENT_PID
    CLIENT_PID = client_pid
    for reset in _AT_START:
        reset()


def record_cmdline(tool: str) -> None:
    """Append the command line of the process the caller started (:func:`process_pid`: this
    one, or a forked tool's client) as the kernel shows it to every user of the node
    (``/proc/<pid>/cmdline``, NUL-separated; proc(5)) to ``cmdlines.jsonl`` beside the file
    ``$EK8S_EMULATION`` names: ``{"t", "tool", "pid", "cmdline": [...]}``. The emulated
    kubeadm and k3s call it first thing, so the lab's tests can check that no token or key is
    on a command line while the tools run (docs/security.md). Nothing without the variable;
    never raises (a lab without the file loses the record, not the command)."""
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        pid = process_pid()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        line = {
            "t": time.time(),
            "tool": tool,
            "pid": pid,
            "cmdline": [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a],
        }
        with open(Path(path).parent / "cmdlines.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
    except OSError:
        pass
