"""How a lab node runs: one strategy per mode, behind the same few verbs (docs/lab.md).

* :class:`ProcessRunner` (``ek8s lab up --processes``, the default): the lab starts the node
  agent itself in the node's namespace, ``service_manager: process``, the node's root a
  directory of the lab that a reboot wipes.
* :class:`MachineRunner` (``--machines``): the node is a machine (:mod:`lab.machines`)
  booting the lab's node image with systemd, the Warewulf overlays rendered for it on top
  (:mod:`manager.wwrender`), the overlay's units starting the agent and Phylactery with
  ``service_manager: systemd``.

:class:`lab.cluster.Lab` creates the namespaces, the share and the report for both; a runner
writes each node's configuration (:meth:`configure`), boots (:meth:`boot`) and stops
(:meth:`stop`) it, and says how to run a command inside (:meth:`exec_argv`) and where the
host sees a file of the node's root (:meth:`host_path`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import psutil
import yaml

from core.fileperm import ensure_dir
from core.share import mounted_trees
from core.versions import DEFAULT_KUBERNETES_VERSION
from lab import machines, netns
from lab.emulation import ENV as EMULATION_ENV
from lab.emulation import Emulation
from lab.emulation import etcd_tool as emulation_etcd_tool
from lab.nodeimage import image_version
from lab.state import CLUSTER, MACHINES, MANAGER, PROCESSES, LabNode, LabState, merge

# The Warewulf whose template data the machines' overlays are rendered with: the current one
# (the rendered files are the same for 4.5-4.7: tests/integration/test_warewulf.py).
WAREWULF_VERSION = "4.7"


class Lab(Protocol):
    """What a runner needs of :class:`lab.cluster.Lab`: its directory, namespace prefix and
    share, and the node.yaml it would give a node (so runners never import the lab)."""

    dir: Path
    prefix: str
    node_overrides: dict[str, dict[str, Any]]  # node.yaml fields of one node, merged last

    @property
    def share(self) -> Path: ...

    def node_config(
        self,
        name: str,
        role: str,
        address: str,
        root: Path,
        kubeadm: Path,
        overrides: dict[str, Any],
        version: str = ...,
    ) -> dict[str, Any]: ...


SHARE_PATH = "/share"  # the share's path on a machine, node.yaml's default (Warewulf tag ek8s_share)
MACHINE_BOOT_TIMEOUT_S = 120.0
MACHINE_STOP_TIMEOUT_S = 60.0


K3S_SHIM = """#!/bin/sh
# EMULATED k3s (ephemeral-k8s lab machine): lab/k3s.py from the lab's layer.
PYTHONPATH=/usr/local/lib/ek8s/python${PYTHONPATH:+:$PYTHONPATH}
EK8S_EMULATION="${EK8S_EMULATION:-/var/lib/ek8s-lab/emulation.json}"
export PYTHONPATH EK8S_EMULATION
exec python3.11 -m lab.k3s "$@"
"""

# The EMULATED kubelet as a machine runs it: like the kubelet package's unit with kubeadm's
# drop-in (10-kubeadm.conf), flags from /var/lib/kubelet/kubeadm-flags.env, which the emulated
# kubeadm writes before `systemctl restart kubelet`. KillMode=process: the static pods (etcd,
# the API server) outlive a kubelet restart, as containers in containerd do.
KUBELET_UNIT = """[Unit]
Description=EMULATED kubelet (ephemeral-k8s lab: lab/kubelet.py)
Wants=network-online.target
After=network-online.target
ConditionPathExists=/var/lib/kubelet/kubeadm-flags.env

[Service]
Environment=PYTHONPATH=/usr/local/lib/ek8s/python EK8S_EMULATION=/var/lib/ek8s-lab/emulation.json
EnvironmentFile=/var/lib/kubelet/kubeadm-flags.env
ExecStart=/usr/bin/python3.11 -m lab.kubelet $KUBELET_KUBEADM_ARGS
KillMode=process
Restart=always
RestartSec=1
"""


class RunnerError(Exception):
    """A node could not be configured, booted or stopped; the message says which and why."""


class NodeRunner(Protocol):
    """The verbs a lab mode implements (see the module docstring)."""

    mode: str

    def configure(self, lab: Lab, state: LabState, emulation: Emulation, overrides: dict[str, Any]) -> None:
        """Write every node's configuration (node.yaml and what else boots it); start nothing."""

    def boot(self, lab: Lab, state: LabState, node: LabNode) -> None:
        """Start ``node`` from a fresh root; set ``node.pid``. Returns without waiting for it."""

    def stop(self, lab: Lab, state: LabState, node: LabNode, crash: bool) -> None:
        """Stop ``node``: cleanly, or (``crash``) at once with its cable pulled."""

    def exec_argv(self, state: LabState, node: LabNode, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` inside ``node``."""
        ...

    def host_path(self, state: LabState, node: LabNode, path: str) -> Path:
        """Where the file at absolute ``path`` of the node's root is seen from the host."""
        ...


def runner(mode: str) -> NodeRunner:
    """The runner for ``mode`` (:data:`PROCESSES` or :data:`MACHINES`); ``ValueError`` otherwise."""
    if mode == PROCESSES:
        return ProcessRunner()
    if mode == MACHINES:
        return MachineRunner()
    raise ValueError(f"unknown lab mode {mode!r} ({PROCESSES} or {MACHINES})")


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs: reaped when it is our child, and a zombie (whose
    parent, such as an ``ek8s lab up`` that started it, has not reaped it) counts as gone."""
    with contextlib.suppress(ChildProcessError):
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited:
            return False
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


_alive = alive


def boot_image(lab_dir: Path, state: LabState, node: LabNode) -> Path | None:
    """What booting ``node``'s image means in process mode (:mod:`lab.nodeimage`): the
    emulation settings file its tools read (``<lab>/emulation.json``, or for a node given an
    image its own ``emulation-<node>.json`` with the image's ``kubernetes_version``), with its
    node.yaml's ``kubernetes.version`` set to the same version. None, and a line in the node's
    log, when the lab has no such image: the node does not boot."""
    lab_version = str(state.emulation.get("kubernetes_version", DEFAULT_KUBERNETES_VERSION))
    version = image_version(node.image, lab_version)
    if version is None:
        with open(node.log, "a") as log:
            log.write(f"[lab] {node.name}: PXE boot failed: Warewulf has no image {node.image!r}; nothing runs\n")
        return None
    emulation_file = lab_dir / "emulation.json"
    if node.image:
        emulation_file = lab_dir / f"emulation-{node.name}.json"
        emulation_file.write_text(json.dumps({**state.emulation, "kubernetes_version": version}, indent=1) + "\n")
    cfg_path = Path(node.config)
    cfg = yaml.safe_load(cfg_path.read_text())
    if cfg.get("kubernetes", {}).get("version") != version:
        cfg.setdefault("kubernetes", {})["version"] = version
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return emulation_file


def node_environ() -> dict[str, str]:
    """The environment a process node's agent starts with: the lab's own, without
    ``PYTHONDONTWRITEBYTECODE``. A node runs the bytecode ``ek8s overlay build`` ships
    (:func:`manager.overlay.compile_bytecode`); a process node runs the checkout, so without
    its ``__pycache__`` every agent, Phylactery and emulated kubeadm, API server and kubelet
    would compile the project's modules at each start (~0.05-0.09 CPU-s a process here), a
    cost no node pays. The first of them writes the bytecode, the rest read it."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


class ProcessRunner:
    """Nodes as namespaces whose agent the lab starts (``service_manager: process``)."""

    mode = PROCESSES

    def configure(self, lab: Lab, state: LabState, emulation: Emulation, overrides: dict[str, Any]) -> None:
        """node.yaml per node from :meth:`lab.cluster.Lab.node_config` at ``node.config``."""
        for node in state.nodes:
            cfg_path = Path(node.config)
            ensure_dir(cfg_path.parent, 0o700)
            kubeadm = lab.dir / "bin/kubeadm"
            version = emulation.kubernetes_version
            cfg = lab.node_config(node.name, node.role, node.address, Path(node.root), kubeadm, overrides, version)
            cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def boot(self, lab: Lab, state: LabState, node: LabNode) -> None:
        """Wipe the node's root (its tmpfs is gone) and start its agent in its namespace, as
        ek8s-node.service would at boot; output to ``node.log``. The lab's etcd tools come
        first in its ``PATH`` (a node image has its etcd's ``etcdutl`` there, which the
        kubeadm driver's restore runs). Not waited for.

        The node runs the version of the image it boots (:mod:`lab.nodeimage`: ``ek8s lab
        image`` stands in for ``wwctl node set --image``): its node.yaml's
        ``kubernetes.version`` and its own ``emulation-<node>.json`` say it. An image the lab
        does not have boots nothing (``node.pid`` stays 0; its log says why)."""
        shutil.rmtree(node.root, ignore_errors=True)
        ensure_dir(Path(node.root), 0o755)
        emulation_file = boot_image(lab.dir, state, node)
        if emulation_file is None:
            node.pid = 0
            return
        tools = str(Path(str(state.emulation.get("etcdutl") or emulation_etcd_tool("etcdutl"))).parent)
        path = f"{tools}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        with open(node.log, "ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", node.ns, sys.executable, "-m", "leader", "run", "--config", node.config],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**node_environ(), EMULATION_ENV: str(emulation_file), "PATH": path},
            )
        node.pid = proc.pid

    def stop(self, lab: Lab, state: LabState, node: LabNode, crash: bool) -> None:
        """SIGTERM every process of the namespace (SIGKILL after 5 s), or SIGKILL with the
        cable pulled at the same moment (``crash``)."""
        if crash:
            netns.set_link(lab.prefix, node.name, up=False)
            netns.kill_all(node.ns, grace_s=0.0, sig=signal.SIGKILL)
        else:
            netns.kill_all(node.ns, grace_s=5.0)
        node.pid = 0

    def exec_argv(self, state: LabState, node: LabNode, argv: list[str]) -> list[str]:
        """``ip netns exec <ns> ARGV`` (the host's files, the node's network)."""
        return ["ip", "netns", "exec", node.ns, *argv]

    def host_path(self, state: LabState, node: LabNode, path: str) -> Path:
        """``path`` below the node's root directory (``node.root``)."""
        return Path(node.root) / path.lstrip("/")


class MachineRunner:
    """Nodes as systemd-nspawn machines (:mod:`lab.machines`)."""

    mode = MACHINES

    def configure(self, lab: Lab, state: LabState, emulation: Emulation, overrides: dict[str, Any]) -> None:
        """Build (or reuse) the image, then write under ``<dir>/machines``: ``common/`` (the
        ``ek8s`` and ``ek8s-hosts`` overlays without their templates, plus the emulation's
        code in ``/usr/local/lib/ek8s/python/lab`` and its ``kubelet.service``), and per
        node ``<node>/overlay/`` (every ``.ww`` template rendered for the node by Warewulf's renderer from the lab's
        inventory, ``/etc/hostname``; ``overrides`` merged into node.yaml) and
        ``<node>/machine.json``. The emulation's settings go to ``<dir>/emulation/``, bound
        into every machine. Raises :class:`lab.image.ImageError` or
        :class:`manager.wwrender.RenderError`. Files are made with the node's umask
        (:func:`lab.machines.node_umask`), whatever the caller's."""
        with machines.node_umask():
            self._configure(lab, state, emulation, overrides)

    def _configure(self, lab: Lab, state: LabState, emulation: Emulation, overrides: dict[str, Any]) -> None:
        from lab import image
        from manager import overlay, wwrender

        for tool in ("systemd-nspawn", "unshare", "nsenter"):
            if shutil.which(tool) is None:
                raise RunnerError(f"{tool} not found; apt-get install systemd-container util-linux (make lab does)")
        root = image.ensure_image()
        base = ensure_dir(lab.dir / "machines", 0o700)
        built = base / "built"
        overlay.build(built)
        common = base / "common"
        for name in overlay.OVERLAYS:
            machines.copy_tree(built / name / "rootfs", common, skip_suffix=wwrender.TEMPLATE_SUFFIX)
        lab_pkg = Path(__file__).resolve().parent
        machines.copy_tree(lab_pkg, common / overlay.LIB_DIR / "python" / "lab")
        (common / "etc/systemd/system/kubelet.service").write_text(KUBELET_UNIT)
        # The EMULATED k3s at k3s's install path (/usr/local/bin/k3s, where the overlay's k3s
        # and k3s-agent units and Containerfile.k3s have it), brought by the lab's layer like
        # its code, so the image stays the same for both distributions.
        k3s = ensure_dir(common / "usr/local/bin", 0o755) / "k3s"
        k3s.write_text(K3S_SHIM)
        k3s.chmod(0o755)
        emu_dir = ensure_dir(lab.dir / "emulation", 0o755)
        # The image's etcd 3.5 (image_builder/lab-node.sh) at Debian's paths.
        image_emulation = replace(
            emulation, python="python3.11", etcd="/usr/bin/etcd", etcdctl="/usr/bin/etcdctl", etcdutl="/usr/bin/etcdutl"
        )
        image_emulation.dump(emu_dir / "emulation.json")

        renderer = wwrender.build_renderer(image.cache_dir() / "wwtemplate" / "wwtemplate")
        fixture = wwrender.write_fixture(base / "registry.json", lab_inventory(state), lab_server())
        for node in state.nodes:
            node_dir = base / node.name
            layer = ensure_dir(node_dir / "overlay", 0o755)
            for name in overlay.OVERLAYS:
                wwrender.render_overlay(renderer, fixture, WAREWULF_VERSION, node.name, built / name / "rootfs", layer)
            (layer / "etc/hostname").write_text(node.name + "\n")
            node_yaml = layer / "etc/ek8s/node.yaml"
            mine = lab.node_overrides.get(node.name, {})
            if overrides or mine:
                cfg = yaml.safe_load(node_yaml.read_text())
                merge(cfg, overrides)
                merge(cfg, mine)
                node_yaml.write_text(
                    "# rendered by Warewulf's templates, then `ek8s lab up --set` merged in\n"
                    + yaml.safe_dump(cfg, sort_keys=False)
                )
            node.config = str(node_yaml)
            node.root = str(node_dir / "ram")
            cluster = str(mine.get("cluster", overrides.get("cluster", CLUSTER)))  # --second-cluster
            machines.MachineConfig(
                name=node.name,
                netns=f"/run/netns/{node.ns}",
                image=str(root),
                layers=[str(layer), str(common)],
                ram=node.root,
                boots=str(node_dir / "boots.jsonl"),
                # What the role's NFS exports allow (the lab's stand-in for the client
                # restrictions): a worker sees <share>/<cluster>/nodes only.
                binds=[
                    *([str(lab.share / tree), f"{SHARE_PATH}/{tree}"] for tree in mounted_trees(cluster, node.role)),
                    [str(emu_dir), machines.EMULATION_MOUNT],
                ],
                cgroups=str(node_dir / "cgroups"),
            ).dump(node_dir / "machine.json")

    def boot(self, lab: Lab, state: LabState, node: LabNode) -> None:
        """Start the machine's launcher (its own session; console to ``node.log``). A
        machine always boots on a new tmpfs. Not waited for."""
        with open(node.log, "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lab.machines",
                    "launch",
                    str(lab.dir / "machines" / node.name / "machine.json"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        node.pid = proc.pid

    def stop(self, lab: Lab, state: LabState, node: LabNode, crash: bool) -> None:
        """Clean: SIGTERM to the launcher, which has nspawn power the machine off (systemd
        stops every unit), SIGKILL to all after :data:`MACHINE_STOP_TIMEOUT_S`. ``crash``:
        cable out, then SIGKILL to the launcher, nspawn and every process of the machine at
        once (``cgroup.kill`` of the machine's cgroup2, :func:`lab.machines.kill_cgroups`;
        then to the launcher's process group and what is left in the namespace). Returns when
        no process of the machine is left; its cgroups (which a killed launcher could not
        remove) are removed then."""
        pid = node.pid
        if crash:
            netns.set_link(lab.prefix, node.name, up=False)
            # All at once where cgroup2 allows it; the kills below catch what it did not.
            machines.kill_cgroups(machines.recorded_cgroups(lab.dir / "machines" / node.name / "cgroups"))
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            netns.kill_all(node.ns, grace_s=0.0, sig=signal.SIGKILL)
        elif pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + MACHINE_STOP_TIMEOUT_S
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            netns.kill_all(node.ns, grace_s=0.0, sig=signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.remove_cgroups(lab, node)
        node.pid = 0

    @staticmethod
    def remove_cgroups(lab: Lab, node: LabNode, timeout_s: float = 5.0) -> list[Path]:
        """Remove the cgroups the node's launcher recorded (:func:`lab.machines.remove_cgroups`),
        trying again for up to ``timeout_s`` seconds while the processes just killed finish
        exiting (a cgroup is busy until then); returns those left."""
        record = lab.dir / "machines" / node.name / "cgroups"
        deadline = time.monotonic() + timeout_s
        while (left := machines.remove_cgroups(machines.recorded_cgroups(record))) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def exec_argv(self, state: LabState, node: LabNode, argv: list[str]) -> list[str]:
        """``nsenter`` into the machine (:func:`lab.machines.exec_argv`). Raises
        :class:`RunnerError` when it is not running."""
        pid = machines.leader_pid(node.ns)
        if pid is None:
            raise RunnerError(f"{node.name} is not running (ek8s lab boot {node.name})")
        return machines.exec_argv(pid, argv)

    def host_path(self, state: LabState, node: LabNode, path: str) -> Path:
        """``/proc/<PID 1 of the machine>/root/<path>``: the machine's RAM root lives in its
        launcher's mount namespace, which the host reaches through that link (proc(5),
        ``/proc/pid/root``). Valid while this boot lasts. Raises :class:`RunnerError` when the
        machine is not running."""
        pid = machines.leader_pid(node.ns)
        if pid is None:
            raise RunnerError(f"{node.name} is not running (ek8s lab boot {node.name})")
        return Path(f"/proc/{pid}/root") / path.lstrip("/")


def lab_inventory(state: LabState) -> Any:
    """The lab as a Warewulf inventory (:class:`manager.inventory.Inventory`): its nodes on
    ``eth0`` with made-up MACs, cluster ``default``, the share at ``/share``, no CNI manifest,
    ``on_cluster_lost: restore`` (node.yaml's default, as in process mode), the Kubernetes
    version of the lab's emulation."""
    from manager.inventory import Inventory

    nodes = [
        {"name": n.name, "role": n.role, "address": n.address, "mac": "52:54:00:00:00:%02x" % (i + 1)}
        for i, n in enumerate(state.nodes)
    ]
    return Inventory.model_validate(
        {
            "cluster": "default",
            "warewulf": {"netdev": "eth0", "netmask": "255.255.255.0"},
            "share": {"path": SHARE_PATH},
            "cni_manifest": None,
            "on_cluster_lost": "restore",
            "kubernetes": {"version": state.emulation.get("kubernetes_version", DEFAULT_KUBERNETES_VERSION)},
            "nodes": nodes,
        }
    )


def lab_server() -> dict[str, str]:
    """The Warewulf server as the renderer sees it: the lab's ``manager`` (10.0.0.13)."""
    return {"ipaddr": MANAGER, "netmask": "255.255.255.0", "network": "10.0.0.0", "buildhost": "manager"}
