"""Rolling Kubernetes upgrades by reimaging: the version path, the skew every step must hold,
and the rollout's state machine over :class:`RolloutRecord` (``rollout.json`` on the share).
Pure: no I/O; ``manager/upgrade.py`` drives it, :class:`core.share.ShareStore` stores it.

On a RAM-rooted node the Warewulf image is the version: a node "upgrades" by rebooting into
another image, and its kubeadm or k3s joins the cluster afresh at the image's version. So the
rules a real in-place upgrade obeys are obeyed here per reboot:

* **One minor at a time, never down.** kubeadm refuses a target more than one minor above the
  cluster's (``cmd/kubeadm/app/phases/upgrade/policy.go`` ``EnforceVersionPolicies``:
  "Specified version to upgrade to ... is too high; kubeadm can upgrade only 1 minor version
  at a time", ``MaximumAllowedMinorVersionUpgradeSkew = 1``), and a kubeadm ``join`` refuses a
  cluster more than one minor older than itself (``util/config/common.go``
  ``NormalizeKubernetesVersion``, ``MinimumControlPlaneVersion``). k3s: "Ensure that your plan
  does not skip intermediate minor versions" (docs.k3s.io/upgrades/manual). Downgrades are
  refused: the Kubernetes docs support none ("Skipping MINOR versions when upgrading is
  unsupported", tasks/administer-cluster/kubeadm/kubeadm-upgrade; etcd's cluster version never
  goes down once every member moved on); ``--rollback`` only returns the nodes of an
  *unfinished* rollout to the image they came from.
* **The skew policy at every moment** (kubernetes.io/releases/version-skew-policy):
  kube-apiserver instances within one minor; a kubelet never newer than any kube-apiserver it
  talks to. A worker's kubelet talks to every API server (through the VIP), so no worker may
  carry the new version while a control node is still on the old one; a control node's
  kubelet talks to its own API server only (kubeadm's ControlPlaneKubeletLocalMode, on since
  1.33, which exists for exactly this skew: kubernetes/enhancements KEP-4471; k3s's kubelet
  on a server talks to its own supervisor). Hence the order: control nodes one at a time,
  then workers (docs.k3s.io/upgrades/manual: "upgrade server nodes first one at a time, then
  any agent nodes"), and a rollback in the reverse order (workers first).
* **kubeadm's cluster-wide step once.** ``kubeadm upgrade apply`` uploads the new
  ClusterConfiguration (``kubernetesVersion``) and the kubelet configuration; a node that
  joins afterwards renders its static Pods from it (``cmd/phases/join`` reads ``kubeadm-config``
  through ``FetchInitConfigurationFromCluster``). A new-image node joining before it would run
  the *old* control plane under a *new* kubelet: so the step comes before the first control
  node moves, exactly once (:attr:`RolloutRecord.cluster_step`). The addons (kube-proxy,
  CoreDNS) wait until every control node moved, as ``kubeadm upgrade`` does
  (``cmd/phases/upgrade/addons.go`` ``shouldUpgradeAddons``: "Skipping upgrade of addons
  because control plane instances ... have not been upgraded").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import hostlist

from core import versions
from core.records import NodeState, Role, RolloutNode, RolloutPhase, RolloutRecord
from core.versions import KubernetesVersion

Distribution = Literal["kubeadm", "k3s"]

# A node's states (RolloutNode.state) and the moves between them.
OLD: NodeState = "old"
MOVING: NodeState = "moving"
NEW: NodeState = "new"
FAILED: NodeState = "failed"
RETURNING: NodeState = "returning"
NODE_MOVES: dict[str, frozenset[str]] = {
    OLD: frozenset({MOVING}),  # cordoned, drained, switched to the new image, rebooted
    MOVING: frozenset({NEW, FAILED, RETURNING}),
    NEW: frozenset({RETURNING}),  # --rollback
    FAILED: frozenset({MOVING, RETURNING}),  # --resume tries it again, --rollback returns it
    RETURNING: frozenset({OLD, FAILED, MOVING}),  # MOVING: --resume after a stopped --rollback
}
# States in which a node may carry the new version (its image was switched).
MAY_BE_NEW = frozenset({MOVING, NEW, FAILED, RETURNING})

# The rollout's phases and the moves between them.
ROLLING: RolloutPhase = "rolling"
STOPPED: RolloutPhase = "stopped"
DONE: RolloutPhase = "done"
ROLLING_BACK: RolloutPhase = "rolling_back"
ROLLED_BACK: RolloutPhase = "rolled_back"
PHASE_MOVES: dict[str, frozenset[str]] = {
    ROLLING: frozenset({STOPPED, DONE}),
    STOPPED: frozenset({ROLLING, ROLLING_BACK}),  # --resume, --rollback
    ROLLING_BACK: frozenset({STOPPED, ROLLED_BACK}),
    DONE: frozenset(),
    ROLLED_BACK: frozenset(),
}
FINISHED = frozenset({DONE, ROLLED_BACK})


class PathRefused(ValueError):
    """An upgrade path refused. ``rule`` names the rule (``skip``, ``downgrade``, ``same``,
    ``mixed``, ``unsupported``), ``str()`` says why, citing the rule's source."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        super().__init__(message)


class RolloutError(ValueError):
    """A move the state machine refuses (a node or phase move not in :data:`NODE_MOVES` or
    :data:`PHASE_MOVES`, or a record breaking the skew invariant)."""


# -- the path --------------------------------------------------------------------------------
def check_path(current: Mapping[str, str], target: str) -> tuple[KubernetesVersion, KubernetesVersion]:
    """The cluster's version now (``current``: node name -> the version its kubelet reports,
    ``v1.M.P``) and ``target`` -> ``(from, to)``. Raises :class:`PathRefused`:

    * ``unsupported``: ``target`` is not ``v1.M.P`` of a minor :mod:`core.versions` supports;
    * ``mixed``: the nodes run different versions (an unfinished rollout: ``--resume`` or
      ``--rollback`` it first), or no node reports one;
    * ``same``: every node runs ``target`` already;
    * ``downgrade``: ``target`` is older than the cluster;
    * ``skip``: ``target`` is more than one minor above the cluster (kubeadm's own message).
    """
    try:
        to = versions.supported(target)
    except ValueError as err:
        raise PathRefused("unsupported", f"--to: {err}") from None
    found = {}
    for node, text in current.items():
        try:
            found[node] = versions.parse(text)
        except ValueError:
            raise PathRefused("mixed", f"{node} reports version {text!r}, which is not a Kubernetes release") from None
    if not found:
        raise PathRefused("mixed", "no node reports a version: the cluster's version is unknown")
    distinct = sorted(set(found.values()))
    if len(distinct) > 1:
        per = "; ".join(
            f"{v} on {hostlist.collect_hostlist([n for n, w in found.items() if w == v])}" for v in distinct
        )
        raise PathRefused(
            "mixed",
            f"the cluster runs several versions ({per}): finish or undo the rollout that left it so "
            "(ek8s upgrade --resume or --rollback) before starting another",
        )
    now = distinct[0]
    if to == now:
        raise PathRefused("same", f"every node runs {now} already: nothing to upgrade")
    if to < now:
        raise PathRefused(
            "downgrade",
            f"{to} is older than the cluster's {now}: downgrades are not supported (Kubernetes supports upgrades "
            "only; --rollback returns an unfinished rollout's nodes to their old image)",
        )
    if to.minor > now.minor + 1 or to.major != now.major:
        raise PathRefused(
            "skip",
            f'Specified version to upgrade to "{to}" is too high; kubeadm can upgrade only 1 minor version at a '
            f"time (kubeadm phases/upgrade/policy.go; k3s and the version skew policy: no minor skipped): "
            f"upgrade to v1.{now.minor + 1} first",
        )
    return now, to


# -- the skew --------------------------------------------------------------------------------
def skew_refusal(nodes: list[RolloutNode]) -> str | None:
    """Why this set of node states breaks the version skew policy (module docstring), or None:
    a worker that may carry the new version while a control node is not at it."""
    behind = [n.name for n in nodes if n.role == "control" and n.state != NEW]
    ahead = [n.name for n in nodes if n.role != "control" and n.state in MAY_BE_NEW]
    if behind and ahead:
        return (
            f"worker(s) {', '.join(ahead)} would run a kubelet newer than the API server of "
            f"{', '.join(behind)} (version skew policy: a kubelet is never newer than kube-apiserver)"
        )
    return None


# -- the record ------------------------------------------------------------------------------
def order(nodes: Mapping[str, str]) -> list[tuple[str, Role]]:
    """``name -> role`` in the order a rollout takes them: control nodes (hostlist order),
    then workers."""
    control = hostlist.numerically_sorted([n for n, r in nodes.items() if r == "control"])
    workers = hostlist.numerically_sorted([n for n, r in nodes.items() if r != "control"])
    out: list[tuple[str, Role]] = [(n, "control") for n in control]
    return out + [(n, "worker") for n in workers]


def new_rollout(
    cluster: str,
    distribution: Distribution,
    current: Mapping[str, str],
    roles: Mapping[str, str],
    target: str,
    images: Mapping[str, tuple[str, str]],
    max_unavailable: int,
    now: float,
) -> RolloutRecord:
    """A rollout from ``current`` (node -> version) to ``target``: :func:`check_path` first
    (raises :class:`PathRefused`), every node ``old``, phase ``rolling``. ``roles`` is node ->
    ``control``/``worker`` and must name every node of ``current``; ``images`` is role ->
    ``(old image, new image)``. Raises ``ValueError`` for ``max_unavailable`` below 1, a node
    without a role or a role without images."""
    if max_unavailable < 1:
        raise ValueError("--max-unavailable must be at least 1")
    missing = sorted(set(current) - set(roles))
    if missing:
        raise ValueError(f"no role known for {', '.join(missing)}")
    lacking = sorted({roles[n] for n in current} - set(images))
    if lacking:
        raise ValueError(f"no image given for the {', '.join(lacking)} nodes")
    frm, to = check_path(current, target)
    return RolloutRecord(
        cluster=cluster,
        distribution=distribution,
        from_version=str(frm),
        to_version=str(to),
        max_unavailable=max_unavailable,
        phase=ROLLING,
        nodes=[
            RolloutNode(name=n, role=r, state=OLD, old_image=images[r][0], new_image=images[r][1])
            for n, r in order({k: roles[k] for k in current})
        ],
        started_at=now,
        updated_at=now,
    )


def move_node(record: RolloutRecord, name: str, state: NodeState, now: float, error: str = "") -> RolloutRecord:
    """``record`` with node ``name`` moved to ``state``. Raises :class:`RolloutError` for a move
    :data:`NODE_MOVES` does not allow, an unknown node, or a result that breaks the skew
    (:func:`skew_refusal`)."""
    nodes = list(record.nodes)
    idx = next((i for i, n in enumerate(nodes) if n.name == name), None)
    if idx is None:
        raise RolloutError(f"{name} is not part of this rollout")
    cur = nodes[idx].state
    if state not in NODE_MOVES[cur]:
        raise RolloutError(f"{name}: {cur} -> {state} is not a rollout move (allowed: {sorted(NODE_MOVES[cur])})")
    nodes[idx] = dataclasses.replace(nodes[idx], state=state)
    why = skew_refusal(nodes)
    if why is not None:
        raise RolloutError(f"{name} -> {state} refused: {why}")
    return dataclasses.replace(record, nodes=nodes, updated_at=now, error=error or record.error)


def move_phase(record: RolloutRecord, phase: RolloutPhase, now: float, error: str = "") -> RolloutRecord:
    """``record`` in ``phase`` (:data:`PHASE_MOVES`), with ``error`` (kept while stopped,
    cleared when it moves on). Raises :class:`RolloutError` for a move not allowed, or
    ``done``/``rolled_back`` while a node is not ``new``/``old``."""
    if phase not in PHASE_MOVES[record.phase]:
        raise RolloutError(f"the rollout is {record.phase}: it cannot become {phase}")
    want = {DONE: NEW, ROLLED_BACK: OLD}.get(phase)
    if want is not None and any(n.state != want for n in record.nodes):
        left = [f"{n.name} ({n.state})" for n in record.nodes if n.state != want]
        raise RolloutError(f"the rollout cannot be {phase}: {', '.join(left)} not {want}")
    return dataclasses.replace(record, phase=phase, updated_at=now, error=error if phase == STOPPED else "")


def set_step(record: RolloutRecord, step: str, done: bool, now: float) -> RolloutRecord:
    """``record`` with the cluster-wide ``step`` (``cluster_config`` or ``addons``) marked done
    or undone."""
    if step not in ("cluster_config", "addons"):
        raise RolloutError(f"unknown cluster-wide step {step!r}")
    if step == "addons":
        return dataclasses.replace(record, addons=done, updated_at=now)
    return dataclasses.replace(record, cluster_config=done, updated_at=now)


@dataclass(frozen=True)
class Step:
    """What the rollout does next: ``action`` is ``cluster_config`` / ``addons`` (kubeadm's
    cluster-wide steps, forward), ``revert_addons`` / ``revert_cluster_config`` (back),
    ``move`` (switch ``nodes`` to the new image and reboot them), ``return`` (to the old
    image), or ``finish``; ``why`` says it in one line."""

    action: str
    nodes: tuple[str, ...] = ()
    why: str = ""


def next_step(record: RolloutRecord) -> Step | None:
    """The next step of ``record`` in its phase, or None when it is finished or stopped.

    Forward (``rolling``): a node left ``moving``/``failed`` by a stopped run first (it is
    retried alone); for kubeadm the cluster configuration before the first control node; the
    control nodes one at a time; the addons once every control node is new; the workers
    ``max_unavailable`` at a time; then ``finish``. Back (``rolling_back``): workers first
    (``max_unavailable`` at a time), the addons and the cluster configuration reverted before
    the first control node returns, the control nodes one at a time in reverse order, then
    ``finish``."""
    nodes = record.nodes
    kubeadm = record.distribution == "kubeadm"
    control = [n for n in nodes if n.role == "control"]
    workers = [n for n in nodes if n.role != "control"]
    if record.phase == ROLLING:
        stuck = [n for n in nodes if n.state in (MOVING, FAILED, RETURNING)]
        if stuck:
            return Step("move", (stuck[0].name,), f"{stuck[0].name} was left {stuck[0].state}: taking it again")
        pending = [n for n in control if n.state == OLD]
        if pending:
            if kubeadm and not record.cluster_config:
                return Step(
                    "cluster_config", (), f"ClusterConfiguration to {record.to_version} before {pending[0].name}"
                )
            return Step("move", (pending[0].name,), "control nodes first, one at a time")
        if kubeadm and not record.addons:
            return Step("addons", (), "every control node runs the new version: kube-proxy and CoreDNS")
        batch = tuple(n.name for n in workers if n.state == OLD)[: record.max_unavailable]
        if batch:
            return Step("move", batch, f"workers, {record.max_unavailable} at a time")
        return Step("finish", (), "every node runs the new version")
    if record.phase == ROLLING_BACK:
        back = tuple(n.name for n in workers if n.state in MAY_BE_NEW)[: record.max_unavailable]
        if back:
            return Step("return", back, "workers first, back to the old image")
        ctl = [n for n in reversed(control) if n.state in MAY_BE_NEW]
        if ctl and kubeadm and record.addons:
            return Step("revert_addons", (), "kube-proxy and CoreDNS back before the control plane")
        if ctl and kubeadm and record.cluster_config:
            return Step(
                "revert_cluster_config",
                (),
                f"ClusterConfiguration back to {record.from_version} before {ctl[0].name} rejoins",
            )
        if ctl:
            return Step("return", (ctl[0].name,), "control nodes one at a time, last moved first")
        if kubeadm and (record.addons or record.cluster_config):
            return Step("revert_cluster_config", (), "the cluster configuration back")
        return Step("finish", (), "every node runs the old version")
    return None


def summary(record: RolloutRecord) -> str:
    """One line: ``v1.35.2 -> v1.36.4 rolling: control1 new, ...; next: move worker1``."""
    states = ", ".join(f"{n.name} {n.state}" for n in record.nodes)
    step = next_step(record)
    nxt = f"; next: {step.action} {' '.join(step.nodes)}".rstrip() if step else ""
    if record.phase == STOPPED:
        nxt = "; next: ek8s upgrade --resume or --rollback"
    err = f" ({record.error})" if record.error else ""
    return f"{record.from_version} -> {record.to_version} {record.phase}{err}: {states}{nxt}"
