"""``ek8s upgrade``: a rolling Kubernetes upgrade by reimaging, driven from the Warewulf server
(docs/operations.md). The rules (path, skew, order, the state machine) are
:mod:`core.upgrade`'s; the cordon, drain, quorum guard and wait-until-back are
:mod:`manager.maintenance`'s; this module runs the steps and writes ``rollout.json`` after
each one, so a stopped rollout is resumed or rolled back from where it stopped.

A step that moves nodes (``move`` forward, ``return`` back):

1. :func:`manager.maintenance.take_down`: for a control node the etcd quorum guard, then
   cordon and drain (the eviction API, PodDisruptionBudgets respected, ``--drain-timeout``).
   A failure here leaves the nodes as they were (uncordoned again) and stops the rollout;
2. the nodes are recorded ``moving`` (``returning``), then switched to their image on Warewulf
   (``--image-command``, one command per node: the per-node override ``wwctl node set --yes
   --image IMAGE NODE`` on Warewulf 4.6+, ``--container`` on 4.5) and rebooted
   (``--reboot-command``);
3. waited for (:meth:`VersionedCluster.back`): a new boot, the agent in ``watch``, the Node
   Ready *and reporting the version its image carries* (``status.nodeInfo.kubeletVersion``);
   for a control node its etcd member voting and answering and every HAProxy with every
   control node UP. Then uncordoned and recorded ``new`` (``old``). A failure records the
   nodes ``failed`` and the rollout ``stopped``: the cluster keeps serving on the other nodes
   (one control node or ``--max-unavailable`` workers are down at most).

kubeadm's cluster-wide steps (``kubeadm upgrade apply`` semantics) run here, with the share's
admin kubeconfig, not on the node: a node that boots a new image has only a bootstrap token,
whose RBAC may read ``kubeadm-config`` but not write it (kubeadm's
``kubeadm:nodes-kubeadm-config`` Role: ``get``). ``cluster_config`` sets the
ClusterConfiguration's ``kubernetesVersion`` in the ``kube-system/kubeadm-config`` ConfigMap
before the first control node moves (kubeadm's ``upload-config`` phase; the node's
``kubeadm join`` then renders its static Pods at the new version); ``addons`` sets
kube-proxy's image tag once every control node is new (``cmd/phases/upgrade/addons.go``).
Each is recorded in ``rollout.json`` by compare and swap, so it is done once per rollout; each
is idempotent (the same value written again), so a run that died between the write and the
record does it again harmlessly.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from core import probes, upgrade
from core.records import RolloutRecord
from core.share import ShareStore
from core.upgrade import FAILED, MOVING, NEW, OLD, RETURNING, ROLLED_BACK, STOPPED
from manager import maintenance

Say = Callable[[str], None]
KUBELET_VERSION_RE = re.compile(r"^(v\d+\.\d+\.\d+)")  # v1.36.4, v1.36.4+k3s1, v1.36.4-emulated
KUBEADM_CONFIG = ("kube-system", "kubeadm-config")
KUBE_PROXY = ("kube-system", "kube-proxy")
DEFAULT_IMAGE_COMMAND = "wwctl node set --yes --image {image} {node}"
DEFAULT_REBOOT_COMMAND = "wwctl ssh {node} reboot"


class UpgradeError(Exception):
    """A rollout step failed; ``str()`` names the step, the nodes and why."""


def kubelet_version(node: dict[str, Any]) -> str | None:
    """``v1.M.P`` from a Node's ``status.nodeInfo.kubeletVersion`` (whatever suffix follows:
    ``+k3s1``, the lab's ``-emulated``), or None."""
    text = str(((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion") or "")
    m = KUBELET_VERSION_RE.match(text)
    return m.group(1) if m else None


def with_kubernetes_version(cluster_configuration: str, version: str) -> str:
    """The ``ClusterConfiguration`` document (the ``kubeadm-config`` ConfigMap's
    ``ClusterConfiguration`` key, YAML) with ``kubernetesVersion`` set to ``version``.
    Raises ``ValueError`` when it is not a YAML mapping."""
    doc = yaml.safe_load(cluster_configuration)
    if not isinstance(doc, dict):
        raise ValueError("the ClusterConfiguration is not a YAML mapping")
    doc["kubernetesVersion"] = version
    return str(yaml.safe_dump(doc, sort_keys=False))


def image_with_tag(image: str, tag: str) -> str:
    """``registry.k8s.io/kube-proxy:v1.35.2`` -> ``...:<tag>`` (a digest or no tag: the tag is
    appended to the name)."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return f"{name}:{tag}"


class UpgradeApi(Protocol):
    """The Kubernetes calls of the cluster-wide steps (:class:`KubeUpgradeApi` is the real one;
    tests fake it). ``None`` where the object does not exist."""

    def nodes(self) -> list[dict[str, Any]]: ...

    def cluster_configuration(self) -> str | None: ...

    def put_cluster_configuration(self, text: str) -> None: ...

    def kube_proxy_image(self) -> str | None: ...

    def set_kube_proxy_image(self, image: str) -> None: ...

    def server_version(self) -> str: ...


class KubeUpgradeApi:
    """:class:`UpgradeApi` through the official ``kubernetes`` client with the admin
    kubeconfig ``kubeconfig`` (the share's ``kube.config``: the API behind the VIP)."""

    def __init__(self, kubeconfig: Any, timeout_s: float = 10.0) -> None:
        self.kubeconfig, self.timeout_s = kubeconfig, timeout_s

    def _client(self) -> Any:
        return probes.kube_client(self.kubeconfig)

    def nodes(self) -> list[dict[str, Any]]:
        from kubernetes import client

        api = client.CoreV1Api(self._client())
        found = api.list_node(_request_timeout=self.timeout_s)
        return [dict(api.api_client.sanitize_for_serialization(n)) for n in found.items]

    def cluster_configuration(self) -> str | None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            cm = client.CoreV1Api(self._client()).read_namespaced_config_map(
                KUBEADM_CONFIG[1], KUBEADM_CONFIG[0], _request_timeout=self.timeout_s
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return (cm.data or {}).get("ClusterConfiguration")

    def put_cluster_configuration(self, text: str) -> None:
        from kubernetes import client

        body = {"data": {"ClusterConfiguration": text}}
        client.CoreV1Api(self._client()).patch_namespaced_config_map(
            KUBEADM_CONFIG[1], KUBEADM_CONFIG[0], body, _request_timeout=self.timeout_s
        )

    def kube_proxy_image(self) -> str | None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            ds = client.AppsV1Api(self._client()).read_namespaced_daemon_set(
                KUBE_PROXY[1], KUBE_PROXY[0], _request_timeout=self.timeout_s
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        containers = (ds.spec.template.spec.containers if ds.spec.template.spec else None) or []
        return str(containers[0].image) if containers else None

    def set_kube_proxy_image(self, image: str) -> None:
        from kubernetes import client

        body = {"spec": {"template": {"spec": {"containers": [{"name": "kube-proxy", "image": image}]}}}}
        client.AppsV1Api(self._client()).patch_namespaced_daemon_set(
            KUBE_PROXY[1], KUBE_PROXY[0], body, _request_timeout=self.timeout_s
        )

    def server_version(self) -> str:
        """The answering API server's ``/version`` ``gitVersion`` (``v1.35.2``, ``v1.35.2+k3s1``)."""
        from kubernetes import client

        info = client.VersionApi(self._client()).get_code(_request_timeout=self.timeout_s)
        return str(info.git_version)


@dataclass
class VersionedCluster(maintenance.Cluster):
    """:class:`manager.maintenance.Cluster` whose "back" also needs the Node to report the
    version its new image carries (``expect``: node -> ``v1.M.P``)."""

    expect: dict[str, str] | None = None

    def back(self, name: str, role: str, old_boot: str | None) -> str | None:
        """:meth:`manager.maintenance.Cluster.back`, then :meth:`version_lacking`."""
        return super().back(name, role, old_boot) or self.version_lacking(name)

    def version_lacking(self, name: str) -> str | None:
        """``"its Node at v1.36.4 (it reports v1.35.2)"`` while Node ``name`` does not report
        the version :attr:`expect` names for it, else None."""
        if not self.expect or name not in self.expect:
            return None
        have = kubelet_version(self.api.node(name) or {})
        if have != self.expect[name]:
            return f"its Node at {self.expect[name]} (it reports {have or 'no version'})"
        return None


@dataclass
class Commands:
    """How a node is switched to an image and rebooted: templates for
    :func:`manager.maintenance.command_argvs` (``{node}``: one command per node; the image
    command also takes ``{image}``), each run within ``timeout_s`` seconds."""

    image: str = DEFAULT_IMAGE_COMMAND
    reboot: str = DEFAULT_REBOOT_COMMAND
    timeout_s: float = 120.0

    def check(self) -> None:
        """Raise ``ValueError`` naming the option for a template that cannot work."""
        if "{image}" not in self.image or "{node}" not in self.image:
            raise ValueError(f"--image-command: {self.image!r} must name {{image}} and {{node}}")
        maintenance.command_argvs(self.image.replace("{image}", "x"), ["x"])
        try:
            maintenance.command_argvs(self.reboot, ["x"])
        except ValueError as err:
            raise ValueError(f"--reboot-command: {err}") from None


def cluster_distribution(api: UpgradeApi, given: str | None) -> str:
    """Which distribution the cluster behind ``api`` runs, checked against ``given``
    (``--distribution``, or None). The evidence: kubeadm's ``upload-config`` phase stores the
    ClusterConfiguration in ``kube-system/kubeadm-config`` at ``kubeadm init``
    (``cmd/kubeadm/app/phases/uploadconfig``), which k3s never writes; a k3s server's
    ``/version`` names k3s in its ``gitVersion`` (``v1.35.2+k3s1``: k3s's ``pkg/version``
    builds it from the Kubernetes version and a ``+k3s<N>`` suffix). Raises ``ValueError``
    when ``given`` contradicts the evidence (a kubeadm rollout of a k3s cluster would stop at
    its ClusterConfiguration step; a k3s rollout of a kubeadm cluster would skip it and run
    new kubelets under the old control plane), or when there is neither kind of evidence and
    no ``given``."""
    kubeadm = api.cluster_configuration() is not None
    k3s = "+k3s" in api.server_version()
    found = "kubeadm" if kubeadm and not k3s else "k3s" if k3s and not kubeadm else None
    evidence = (
        "kube-system/kubeadm-config holds a ClusterConfiguration" if kubeadm else "no kube-system/kubeadm-config"
    ) + (", the API server's version names k3s" if k3s else ", the API server's version does not name k3s")
    if found is None and given is None:
        raise ValueError(f"cannot tell the cluster's distribution ({evidence}): say --distribution kubeadm or k3s")
    if found is not None and given is not None and given != found:
        raise ValueError(f"--distribution {given}: the cluster runs {found} ({evidence})")
    return str(found or given)


def cluster_versions(api: UpgradeApi) -> tuple[dict[str, str], dict[str, str]]:
    """``(node -> version, node -> role)`` from the API's Nodes: each Node's kubelet version
    and its role (``control`` with the ``node-role.kubernetes.io/control-plane`` label, else
    ``worker``). A Node without a version reports ``?`` (refused by the path check)."""
    versions: dict[str, str] = {}
    roles: dict[str, str] = {}
    for n in api.nodes():
        meta = n.get("metadata") or {}
        name = str(meta.get("name"))
        versions[name] = kubelet_version(n) or "?"
        labels = meta.get("labels") or {}
        roles[name] = "control" if "node-role.kubernetes.io/control-plane" in labels else "worker"
    return versions, roles


def plan_lines(record: RolloutRecord) -> list[str]:
    """What the rollout will do, one line per step, from ``record`` as it stands (a fresh one,
    or a stopped one about to be resumed or rolled back)."""
    lines = []
    r = record
    guard = 0
    while (step := upgrade.next_step(r)) is not None and step.action != "finish" and guard < 1000:
        guard += 1
        nodes = [n for n in r.nodes if n.name in step.nodes]
        if step.action == "move":
            images = ", ".join(f"{n.name} -> {n.new_image}" for n in nodes)
            lines.append(f"cordon, drain, switch the image ({images}), reboot, wait for {r.to_version}, uncordon")
            for n in nodes:
                if n.state in (MOVING, RETURNING):
                    r = upgrade.move_node(r, n.name, FAILED, r.updated_at)
                r = upgrade.move_node(upgrade.move_node(r, n.name, MOVING, r.updated_at), n.name, NEW, r.updated_at)
        elif step.action == "return":
            images = ", ".join(f"{n.name} -> {n.old_image}" for n in nodes)
            lines.append(f"cordon, drain, switch the image back ({images}), reboot, wait for {r.from_version}")
            for n in nodes:
                if n.state == MOVING:
                    r = upgrade.move_node(r, n.name, FAILED, r.updated_at)
                if n.state != RETURNING:
                    r = upgrade.move_node(r, n.name, RETURNING, r.updated_at)
                r = upgrade.move_node(r, n.name, OLD, r.updated_at)
        else:
            lines.append(f"{step.action.replace('_', ' ')}: {step.why}")
            done = not step.action.startswith("revert_")
            name = step.action.removeprefix("revert_")
            r = upgrade.set_step(r, name, done, r.updated_at)
            if step.action == "revert_cluster_config" and r.addons:
                r = upgrade.set_step(r, "addons", False, r.updated_at)
    return lines


@dataclass
class Driver:
    """Runs a rollout step by step (module docstring). ``record`` is the stored rollout (its
    ``revision`` is the one the next write expects); ``store`` the cluster's share."""

    store: ShareStore
    cluster: VersionedCluster
    api: UpgradeApi
    commands: Commands
    opts: maintenance.RollOptions
    record: RolloutRecord
    say: Say = print
    now: Callable[[], float] = time.time

    def save(self, new: RolloutRecord) -> None:
        """Write ``new`` over the stored record (compare and swap on its revision)."""
        self.record = self.store.write_rollout(new, self.record.revision)

    def run(self) -> RolloutRecord:
        """Take every step until the rollout is finished or a step fails (then it is
        ``stopped``, the error recorded). Returns the record as stored."""
        while (step := upgrade.next_step(self.record)) is not None:
            self.say(f"next: {step.action} {' '.join(step.nodes)} ({step.why})".replace("  ", " "))
            try:
                if step.action == "finish":
                    final = upgrade.DONE if self.record.phase == upgrade.ROLLING else ROLLED_BACK
                    self.save(upgrade.move_phase(self.record, final, self.now()))
                    self.say(upgrade.summary(self.record))
                    break
                if step.action in ("move", "return"):
                    self.nodes(list(step.nodes), forward=step.action == "move")
                else:
                    self.cluster_step(step.action)
            except (UpgradeError, maintenance.MaintenanceError, upgrade.RolloutError) as err:
                self.save(upgrade.move_phase(self.record, STOPPED, self.now(), str(err)))
                self.say(f"stopped: {err}")
                break
        return self.record

    # -- kubeadm's cluster-wide steps ---------------------------------------------------------
    def cluster_step(self, action: str) -> None:
        """``cluster_config``/``addons`` forward, ``revert_*`` back (module docstring)."""
        forward = not action.startswith("revert_")
        version = self.record.to_version if forward else self.record.from_version
        name = action.removeprefix("revert_")
        try:
            if name == "cluster_config":
                text = self.api.cluster_configuration()
                if text is None:
                    raise UpgradeError("kube-system/kubeadm-config has no ClusterConfiguration: is this kubeadm?")
                self.api.put_cluster_configuration(with_kubernetes_version(text, version))
                self.say(f"kubeadm-config: ClusterConfiguration kubernetesVersion {version} (upload-config)")
            else:
                image = self.api.kube_proxy_image()
                if image is None:
                    self.say("kube-proxy: no DaemonSet kube-system/kube-proxy, nothing to change")
                else:
                    self.api.set_kube_proxy_image(image_with_tag(image, version))
                    self.say(f"kube-proxy: image {image_with_tag(image, version)}")
        except ValueError as err:
            raise UpgradeError(f"{action}: {err}") from None
        except probes.kube_errors() as err:
            raise UpgradeError(f"{action}: the API behind the VIP: {type(err).__name__}: {err}") from None
        r = upgrade.set_step(self.record, name, forward, self.now())
        if not forward and name == "cluster_config" and r.addons:
            r = upgrade.set_step(r, "addons", False, self.now())
        self.save(r)

    # -- nodes --------------------------------------------------------------------------------
    def nodes(self, batch: list[str], forward: bool) -> None:
        """Move ``batch`` to its new image (``forward``) or back to its old one."""
        by_name = {n.name: n for n in self.record.nodes}
        roles: dict[str, str] = {n: str(by_name[n].role) for n in batch}
        going, there = (MOVING, NEW) if forward else (RETURNING, OLD)
        version = self.record.to_version if forward else self.record.from_version
        try:
            boots = maintenance.take_down(self.cluster, batch, roles, self.opts)
        except probes.kube_errors() as err:
            raise UpgradeError(f"{', '.join(batch)}: the API behind the VIP: {type(err).__name__}") from None
        r = self.record
        for n in batch:
            state = by_name[n].state
            if (state == MOVING and not forward) or (state in (MOVING, RETURNING) and forward):
                r = upgrade.move_node(r, n, FAILED, self.now())
            if not (state == RETURNING and not forward):
                r = upgrade.move_node(r, n, going, self.now())
        self.save(r)
        failures: tuple[type[BaseException], ...] = (maintenance.MaintenanceError, *probes.kube_errors())
        try:
            for n in batch:
                image = by_name[n].new_image if forward else by_name[n].old_image
                generation = self.store.read_state().generation
                self.store.record_event(
                    "node_reimage", generation, f"{n} to image {image} ({version})", target=n, image=image
                )
                argvs = maintenance.command_argvs(self.commands.image.replace("{image}", image), [n])
                maintenance.run_commands(argvs, self.commands.timeout_s, self.say)
            maintenance.run_commands(
                maintenance.command_argvs(self.commands.reboot, batch), self.commands.timeout_s, self.say
            )
            self.cluster.expect = {n: version for n in batch}
            self.cluster.wait_back(batch, roles, boots, self.opts.timeout_s)
            for n in batch:
                self.cluster.uncordon(n)
        except failures as err:
            r = self.record
            for n in batch:
                r = upgrade.move_node(r, n, FAILED, self.now())
            self.save(r)
            raise UpgradeError(f"{', '.join(batch)} ({'to' if forward else 'back to'} {version}): {err}") from None
        r = self.record
        for n in batch:
            r = upgrade.move_node(r, n, there, self.now())
        self.save(r)
        self.say(f"{', '.join(batch)}: at {version}")
