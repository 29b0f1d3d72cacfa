"""Planned maintenance of RAM-rooted nodes: cordon, drain, reboot, wait until back, uncordon;
the building blocks of ``ek8s node reboot`` and ``ek8s node remove`` (docs/operations.md), and
of a rolling upgrade, which brings its own "reboot" (another image, then the reboot).

The API the rest of the project uses:

* :class:`Cluster` - what the Warewulf server sees of one cluster: the share (``ShareStore``),
  the API behind the VIP (the share's admin kubeconfig), each control node's Phylactery
  (``GET /v1/etcd``, ``GET /v1/status``, ``POST /v1/remove``);
* :meth:`Cluster.cordon`, :meth:`Cluster.uncordon`, :meth:`Cluster.drain` (the eviction API,
  PodDisruptionBudgets respected, with a timeout);
* :func:`batches` - control nodes one at a time first, then workers ``max_unavailable`` at once;
* :meth:`Cluster.down_refusal` - :func:`core.quorum.down_refusal` on the etcd members as a
  live Phylactery sees them now;
* :meth:`Cluster.wait_back` - the node booted again (a new boot id: proof, not silence), its
  agent watches, its Node is Ready, and for a control node its etcd member votes and answers,
  every member answers, and every HAProxy has every control node's backend UP;
* :func:`roll` - all of the above over a list of nodes with any ``action`` for the batch.

Every step says what it does through ``say`` (one line each) and raises
:class:`MaintenanceError` naming the node, the step and what was left as it was; nothing is
taken down on silence, and a node whose drain failed is uncordoned again.

Drain follows ``kubectl drain`` (``staging/src/k8s.io/kubectl/pkg/drain``, v1.32): Pods on the
node are listed with ``fieldSelector=spec.nodeName=<node>``; mirror Pods (annotation
``kubernetes.io/config.mirror``) and running DaemonSet Pods are left (``--ignore-daemonsets``:
they come back with the node); a Pod no controller owns is refused unless ``force`` (nothing
would recreate it); Pods with ``emptyDir`` volumes are evicted (``--delete-emptydir-data``:
on a RAM root the reboot wipes that data anyway). Each Pod is evicted through the eviction
subresource (``policy/v1`` ``Eviction``), which the API server refuses with 429 while the
Pod's PodDisruptionBudget allows no disruption; like kubectl, a refused eviction is tried
again every 5 s until the timeout, then each evicted Pod is waited for until it is gone.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import hostlist

from core import probes, quorum
from core.share import ShareStore
from manager.status import phylactery_access

Say = Callable[[str], None]
EVICT_RETRY_S = 5.0  # kubectl drain's wait before it tries a refused eviction again
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


class MaintenanceError(Exception):
    """A maintenance step failed or was refused; ``str()`` names the node, the step, why, and
    what was left as it was."""


# -- pure parts -----------------------------------------------------------------------------
def classify(pod: dict[str, Any], force: bool) -> tuple[str, str]:
    """What a drain does with ``pod`` (the API's JSON): ``("evict", why)``, ``("skip", why)``
    or ``("refuse", why)``, by kubectl drain's filters (module docstring)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    finished = status.get("phase") in ("Succeeded", "Failed")
    if MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        return "skip", "a mirror Pod (the kubelet's static Pod)"
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner is not None and owner.get("kind") == "DaemonSet" and not finished:
        return "skip", "a DaemonSet's Pod: it comes back with the node"
    if owner is None and not finished:
        if not force:
            return "refuse", "no controller owns it, nothing would recreate it (--force evicts it anyway)"
        return "evict", "no controller owns it: it is gone for good (--force)"
    if any("emptyDir" in v for v in spec.get("volumes") or []) and not finished:
        return "evict", "its emptyDir data goes (the node's reboot wipes it anyway)"
    return (
        "evict",
        "finished" if finished else f"owned by {owner['kind'] if owner else '?'} {owner['name'] if owner else ''}",
    )


def batches(nodes: Iterable[tuple[str, str]], max_unavailable: int) -> list[list[str]]:
    """``(name, role)`` pairs -> the order maintenance takes them: every control node alone,
    first (in hostlist order), then the workers ``max_unavailable`` at a time. Raises
    ``ValueError`` for ``max_unavailable`` below 1."""
    if max_unavailable < 1:
        raise ValueError("max_unavailable must be at least 1")
    pairs = list(nodes)
    control = hostlist.numerically_sorted([n for n, r in pairs if r == "control"])
    workers = hostlist.numerically_sorted([n for n, r in pairs if r != "control"])
    out = [[n] for n in control]
    out += [workers[i : i + max_unavailable] for i in range(0, len(workers), max_unavailable)]
    return out


def command_argvs(template: str, nodes: list[str]) -> list[list[str]]:
    """The commands a ``--reboot-command`` or ``--poweroff-command`` template runs for
    ``nodes``: with ``{node}``, one per node; with ``{nodes}``, one for all (a hostlist such as
    ``worker[1-3]``). Raises ``ValueError`` for a template with neither or with both."""
    has_one, has_all = "{node}" in template, "{nodes}" in template
    if has_one == has_all:
        raise ValueError(f"{template!r}: name the node with {{node}} (one command each) or {{nodes}} (one for all)")
    if has_all:
        joined = str(hostlist.collect_hostlist(nodes))
        return [[a.replace("{nodes}", joined) for a in shlex.split(template)]]
    return [[a.replace("{node}", n) for a in shlex.split(template)] for n in nodes]


def run_commands(argvs: list[list[str]], timeout_s: float, say: Say) -> None:
    """Run each command (no terminal); raise :class:`MaintenanceError` for one that fails,
    cannot start or outlasts ``timeout_s`` seconds."""
    for argv in argvs:
        say("running: " + shlex.join(argv))
        try:
            res = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise MaintenanceError(f"{argv[0]} did not finish within {timeout_s:.0f}s: {shlex.join(argv)}") from None
        except OSError as err:
            raise MaintenanceError(f"{argv[0]}: {err.strerror}") from None
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            raise MaintenanceError(f"{shlex.join(argv)} exited {res.returncode}: {' | '.join(tail)}")


# -- the cluster as the Warewulf server sees it ---------------------------------------------
class NodeApi(Protocol):
    """The Kubernetes calls maintenance makes (:class:`KubeApi` is the real one; tests fake
    it). Nodes and Pods as the API's JSON; ``evict`` returns the HTTP status (201 evicted,
    404 gone, 429 refused by a disruption budget) and the message."""

    def node(self, name: str) -> dict[str, Any] | None: ...

    def patch_node(self, name: str, patch: dict[str, Any]) -> None: ...

    def pods_on(self, node: str) -> list[dict[str, Any]]: ...

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def evict(self, namespace: str, name: str) -> tuple[int, str]: ...


class KubeApi:
    """:class:`NodeApi` through the official ``kubernetes`` client with the admin kubeconfig
    ``kubeconfig`` (the share's ``kube.config``: the API behind the VIP). Raises what
    :func:`core.probes.kube_errors` lists when the API does not answer."""

    def __init__(self, kubeconfig: Any, timeout_s: float = 10.0) -> None:
        self.kubeconfig, self.timeout_s = kubeconfig, timeout_s

    def _api(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(probes.kube_client(self.kubeconfig))

    def _json(self, api: Any, obj: Any) -> dict[str, Any]:
        return dict(api.api_client.sanitize_for_serialization(obj))

    def node(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        api = self._api()
        try:
            return self._json(api, api.read_node(name, _request_timeout=self.timeout_s))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        self._api().patch_node(
            name, patch, _request_timeout=self.timeout_s, _content_type="application/merge-patch+json"
        )

    def pods_on(self, node: str) -> list[dict[str, Any]]:
        api = self._api()
        found = api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}", _request_timeout=self.timeout_s)
        return [self._json(api, p) for p in found.items]

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        api = self._api()
        try:
            return self._json(api, api.read_namespaced_pod(name, namespace, _request_timeout=self.timeout_s))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def evict(self, namespace: str, name: str) -> tuple[int, str]:
        from kubernetes.client.rest import ApiException

        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        try:
            self._api().create_namespaced_pod_eviction(name, namespace, body, _request_timeout=self.timeout_s)
        except ApiException as err:
            return int(err.status or 0), _status_message(err.body)
        return 201, "evicted"


def _status_message(body: Any) -> str:
    """A ``v1 Status`` body's message and its causes, as one line."""
    import json

    try:
        d = json.loads(body) if isinstance(body, str | bytes) else {}
    except ValueError:
        return str(body)[:200]
    causes = [c.get("message", "") for c in (d.get("details") or {}).get("causes") or []]
    return " ".join([d.get("message", ""), *causes]).strip()


@dataclass
class Cluster:
    """One cluster seen from the Warewulf server (module docstring). ``api`` makes the
    :class:`NodeApi` (the share's admin kubeconfig by default); :meth:`get` and :meth:`post`
    reach Phylactery over HTTPS with the control credential, the server verified with the
    Phylactery CA (:func:`manager.status.phylactery_access`, docs/security.md); ``sleep`` and
    ``now`` are the clock (tests pass fakes); ``poll_s`` is how often the waits look."""

    store: ShareStore
    say: Say = print
    api_factory: Callable[[], NodeApi] | None = None
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.monotonic
    poll_s: float = 2.0
    _api: NodeApi | None = field(default=None, init=False, repr=False)

    def get(self, url: str, path: str, timeout_s: float) -> dict[str, Any] | None:
        """``GET <url><path>`` with the control credential (:func:`core.probes.phylactery_get`):
        the JSON object, or None when Phylactery does not answer, cannot be verified, or the
        share holds no credential or CA yet."""
        access = phylactery_access(self.store)
        if access is None:
            return None
        tls, token = access
        return probes.phylactery_get(url, path, tls, token, timeout_s)

    def post(self, url: str, path: str, body: dict[str, Any], timeout_s: float) -> tuple[int, Any]:
        """``POST`` ``body`` to ``<url><path>`` with the control credential
        (:func:`core.probes.phylactery_post`): (HTTP status, answer). Raises ``OSError`` when
        Phylactery does not answer or cannot be verified, or the share holds no credential or
        CA yet."""
        access = phylactery_access(self.store)
        if access is None:
            raise OSError("the share holds no Phylactery credential or CA yet")
        tls, token = access
        return probes.phylactery_post(url, path, token, body, tls, timeout_s)

    @property
    def api(self) -> NodeApi:
        """The :class:`NodeApi`, made on first use."""
        if self._api is None:
            self._api = self.api_factory() if self.api_factory else KubeApi(self.store.admin_kubeconfig_path)
        return self._api

    # -- what the share says ----------------------------------------------------------------
    def role_of(self, name: str) -> str | None:
        """``name``'s role: its heartbeat's, else ``control`` when it has a member record, else
        None (never reported)."""
        hb = self.store.read_any_heartbeat(name)
        if hb is not None:
            return hb.role
        return "control" if any(m.name == name for m in self.store.members()) else None

    def boot_of(self, name: str) -> str | None:
        """The boot id of ``name``'s heartbeat, or None."""
        hb = self.store.read_any_heartbeat(name)
        return hb.boot_id if hb is not None else None

    # -- Phylactery ---------------------------------------------------------------------------
    def phylacteries(self, avoid: Iterable[str] = ()) -> list[tuple[str, str]]:
        """``(node, URL)`` of the registered control nodes but ``avoid``."""
        skip = set(avoid)
        return [(m.name, m.phylactery_url) for m in self.store.members() if m.name not in skip]

    def etcd_members(self, avoid: Iterable[str] = ()) -> list[dict[str, Any]] | None:
        """The etcd members (``GET /v1/etcd``) as the first Phylactery that answers sees them,
        asking none of ``avoid``; None when none answers with members."""
        for _, url in self.phylacteries(avoid):
            view = self.get(url, "/v1/etcd", 5.0)
            if view is not None and view.get("members"):
                return list(view["members"])
        return None

    def quorum_view(self, avoid: Iterable[str] = ()) -> list[quorum.Member] | None:
        """:meth:`etcd_members` as :class:`core.quorum.Member` values."""
        members = self.etcd_members(avoid)
        if members is None:
            return None
        return [quorum.Member(str(m["node"]), bool(m.get("is_learner")), bool(m.get("answers"))) for m in members]

    def down_refusal(self, taking: list[str]) -> str | None:
        """Why the control nodes ``taking`` may not go down now (:func:`core.quorum.down_refusal`),
        or None; a cluster whose etcd no Phylactery reports is refused too."""
        view = self.quorum_view(avoid=taking)
        if view is None:
            return "no Phylactery reports etcd's members: its quorum cannot be judged (ek8s status)"
        return quorum.down_refusal(view, taking)

    def backends(self) -> dict[str, dict[str, str] | None]:
        """Per registered control node, its HAProxy's backends (``name -> status``) from its
        ``/v1/status``, or None when it does not answer."""
        out: dict[str, dict[str, str] | None] = {}
        for name, url in self.phylacteries():
            status = self.get(url, "/v1/status", 3.0)
            if status is None:
                out[name] = None
            else:
                out[name] = {b["name"]: b["status"] for b in status.get("haproxy", {}).get("backends", [])}
        return out

    # -- cordon and drain ---------------------------------------------------------------------
    def cordon(self, name: str) -> bool:
        """Mark Node ``name`` unschedulable (``spec.unschedulable``, as ``kubectl cordon``).
        Returns whether it was schedulable before (False: already cordoned, or no Node)."""
        node = self.api.node(name)
        if node is None or (node.get("spec") or {}).get("unschedulable"):
            return False
        self.api.patch_node(name, {"spec": {"unschedulable": True}})
        self.say(f"{name}: cordoned")
        return True

    def uncordon(self, name: str) -> None:
        """Mark Node ``name`` schedulable again (nothing when it is, or is gone)."""
        node = self.api.node(name)
        if node is not None and (node.get("spec") or {}).get("unschedulable"):
            self.api.patch_node(name, {"spec": {"unschedulable": None}})
            self.say(f"{name}: uncordoned")

    def drain(self, name: str, timeout_s: float, force: bool = False) -> list[str]:
        """Evict every Pod of Node ``name`` that :func:`classify` says to (the node is expected
        cordoned), trying refused evictions again every :data:`EVICT_RETRY_S`, then wait until
        they are gone; all within ``timeout_s``. Returns the evicted Pods (``ns/name``). Raises
        :class:`MaintenanceError` naming the Pods a drain cannot take (unowned without
        ``force``) before evicting anything, or those still there at the timeout and why."""
        deadline = self.now() + timeout_s
        pods = self.api.pods_on(name)
        plan = [(p, *classify(p, force)) for p in pods]
        refused = [f"{_ref(p)} ({why})" for p, action, why in plan if action == "refuse"]
        if refused:
            raise MaintenanceError(f"{name}: drain refused: {'; '.join(refused)}")
        todo = {_ref(p): p for p, action, _ in plan if action == "evict"}
        skipped = [_ref(p) for p, action, _ in plan if action == "skip"]
        if skipped:
            self.say(f"{name}: left in place: {', '.join(skipped)}")
        evicted: dict[str, str] = {}  # ns/name -> uid
        last_refusal: dict[str, str] = {}
        while todo:
            for ref, pod in list(todo.items()):
                meta = pod["metadata"]
                code, message = self.api.evict(meta["namespace"], meta["name"])
                if code in (200, 201, 404):
                    evicted[ref] = meta.get("uid", "")
                    del todo[ref]
                    self.say(f"{name}: evicted {ref}" if code != 404 else f"{name}: {ref} already gone")
                elif code == 429:
                    if last_refusal.get(ref) != message:
                        self.say(f"{name}: eviction of {ref} refused, trying again every {EVICT_RETRY_S:g}s: {message}")
                    last_refusal[ref] = message
                else:
                    raise MaintenanceError(f"{name}: cannot evict {ref}: HTTP {code} {message}")
            if not todo:
                break
            if self.now() + EVICT_RETRY_S > deadline:
                why = "; ".join(f"{ref}: {last_refusal.get(ref, '?')}" for ref in todo)
                raise MaintenanceError(f"{name}: drain did not finish within {timeout_s:.0f}s: {why}")
            self.sleep(EVICT_RETRY_S)
        while True:
            left = [
                ref
                for ref, uid in evicted.items()
                if (p := self.api.pod(*ref.split("/", 1))) is not None and p["metadata"].get("uid") == uid
            ]
            if not left:
                return list(evicted)
            if self.now() > deadline:
                raise MaintenanceError(f"{name}: evicted Pods still there after {timeout_s:.0f}s: {', '.join(left)}")
            self.sleep(1.0)

    # -- waiting for a node to be back --------------------------------------------------------
    def back(self, name: str, role: str, old_boot: str | None) -> str | None:
        """What ``name`` still lacks to count as back after a reboot, or None when it is back:
        a heartbeat from a new boot (not ``old_boot``) in phase ``watch``, its Node Ready and
        schedulable or cordoned; for a control node its etcd member voting and answering,
        every member answering, and every HAProxy with every control node's backend UP."""
        hb = self.store.read_any_heartbeat(name)
        if hb is None or hb.boot_id == old_boot:
            return "a heartbeat from a new boot"
        if hb.phase != "watch":
            return f"its agent in watch (now {hb.phase})"
        node = self.api.node(name)
        ready = node is not None and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (node.get("status") or {}).get("conditions", [])
        )
        if not ready:
            return "its Node Ready"
        if role != "control":
            return None
        members = self.etcd_members()
        mine = [m for m in members or [] if m.get("node") == name]
        if not mine or mine[0].get("is_learner") or not mine[0].get("answers"):
            return "its etcd member voting and answering"
        silent = [str(m["node"]) for m in members or [] if not m.get("answers")]
        if silent:
            return f"every etcd member answering (not: {', '.join(silent)})"
        control = sorted(n for n, _ in self.phylacteries())
        for owner, backends in self.backends().items():
            if backends is None:
                return f"{owner}'s Phylactery answering"
            down = [c for c in control if not str(backends.get(c, "")).startswith("UP")]
            if down:
                return f"{owner}'s HAProxy with {', '.join(down)} UP"
        return None

    def wait_back(
        self, names: list[str], roles: dict[str, str], boots: dict[str, str | None], timeout_s: float
    ) -> None:
        """Wait until every node of ``names`` is :meth:`back`, saying what it waits for when
        that changes; raises :class:`MaintenanceError` after ``timeout_s`` seconds naming what
        each node still lacks."""
        deadline = self.now() + timeout_s
        said: dict[str, str] = {}
        while True:
            lacking = {}
            for n in names:
                try:
                    why = self.back(n, roles[n], boots.get(n))
                except probes.kube_errors() as err:
                    why = f"the API behind the VIP answering ({type(err).__name__})"
                if why is not None:
                    lacking[n] = why
            for n, why in lacking.items():
                if said.get(n) != why:
                    self.say(f"{n}: waiting for {why}")
                    said[n] = why
            if not lacking:
                return
            if self.now() > deadline:
                raise MaintenanceError(
                    "not back within "
                    + f"{timeout_s:.0f}s: "
                    + "; ".join(f"{n} lacks {why}" for n, why in lacking.items())
                )
            self.sleep(self.poll_s)


def _ref(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '?')}"


@dataclass(frozen=True)
class RollOptions:
    """How :func:`roll` takes nodes: ``max_unavailable`` workers at once, each drain within
    ``drain_timeout_s``, each batch back within ``timeout_s``; ``force`` evicts unowned Pods."""

    max_unavailable: int = 1
    drain_timeout_s: float = 300.0
    timeout_s: float = 900.0
    force: bool = False


def take_down(cluster: Cluster, batch: list[str], roles: dict[str, str], opts: RollOptions) -> dict[str, str | None]:
    """Make ``batch`` ready to go down: for control nodes the quorum guard first
    (:meth:`Cluster.down_refusal`), then cordon and drain each. A failure uncordons what this
    cordoned and raises :class:`MaintenanceError`. Returns each node's boot id before (the
    proof that it rebooted is a new one)."""
    control = [n for n in batch if roles[n] == "control"]
    if control:
        why = cluster.down_refusal(control)
        if why is not None:
            raise MaintenanceError(f"{', '.join(control)}: refused, {why}; nothing was done to it")
    boots = {n: cluster.boot_of(n) for n in batch}
    cordoned: list[str] = []
    failures: tuple[type[BaseException], ...] = (MaintenanceError, *probes.kube_errors())
    try:
        for n in batch:
            if cluster.cordon(n):
                cordoned.append(n)
        for n in batch:
            gone = cluster.drain(n, opts.drain_timeout_s, opts.force)
            cluster.say(f"{n}: drained ({len(gone)} Pods evicted)")
    except failures as err:
        for n in cordoned:
            try:
                cluster.uncordon(n)
            except probes.kube_errors():
                cluster.say(f"{n}: could not be uncordoned; run kubectl uncordon {n}")
        raise MaintenanceError(f"{err}; {', '.join(batch)} not taken down (uncordoned again)") from None
    return boots


def roll(
    cluster: Cluster,
    nodes: list[str],
    action: Callable[[list[str]], None],
    opts: RollOptions,
    on_batch: Callable[[list[str], str], None] | None = None,
) -> list[list[str]]:
    """Take ``nodes`` through ``action`` (a reboot, or an image switch and a reboot) in
    :func:`batches`: for each batch :func:`take_down`, ``action(batch)``, :meth:`Cluster.wait_back`
    and uncordon. ``on_batch(batch, stage)`` hears ``"down"`` and ``"back"``. Stops at the
    first failure with :class:`MaintenanceError` saying which batches are done. Returns the
    batches. Raises ``ValueError`` for a node that never reported to the share."""
    roles: dict[str, str] = {}
    for n in nodes:
        role = cluster.role_of(n)
        if role is None:
            raise ValueError(f"{n}: no such node in cluster {cluster.store.cluster} (it never reported)")
        roles[n] = role
    plan = batches(roles.items(), opts.max_unavailable)
    done: list[list[str]] = []
    for batch in plan:
        try:
            boots = take_down(cluster, batch, roles, opts)
            if on_batch:
                on_batch(batch, "down")
            action(batch)
            cluster.wait_back(batch, roles, boots, opts.timeout_s)
            for n in batch:
                cluster.uncordon(n)
        except MaintenanceError as err:
            finished = ", ".join(",".join(b) for b in done) or "none"
            raise MaintenanceError(f"{err} (done before it: {finished}; the rest untouched)") from None
        if on_batch:
            on_batch(batch, "back")
        done.append(batch)
    return done
