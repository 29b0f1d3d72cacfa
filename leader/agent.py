"""The node agent: boot -> elect -> init | join -> watch, as a state machine.

Like Patroni's HA cycle, :meth:`Agent.run_cycle` reads one snapshot of the share, checks the
generation in exactly one place, runs the handler of the current :class:`State` and returns
the sentence saying what it decided and why; :meth:`Agent.run` logs each new sentence (and
"still ..." every 10 s while a wait goes on) and records milestones in ``events.jsonl``.
Long actions run as one background job (:class:`leader.states.Jobs`) that cycles observe and
cancel; SIGTERM stops the agent cleanly (exit 0, after releasing the join slot and an
unfinished leader claim).

Milestone events (docs/share-protocol.md): ``boot``, ``leader_claimed``, ``phylactery_up``,
``api_ready``, ``leader_ready``, ``init_failed``, ``join_started``, ``pruned``,
``join_material_refreshed``, ``joined``, ``join_failed``, ``node_ready``, ``deposed``,
``generation_changed``, ``cluster_lost``, ``phylactery_restarted``, ``node_vanished``,
``stopped``.

Everything the agent touches comes in through its constructor (store, driver, services,
probes, clock, executor), so every transition is unit-tested without root
(``tests/unit/test_agent_states.py``); :meth:`Agent.for_node` wires the real ones.
"""

from __future__ import annotations

import functools
import logging
import random
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core import probes, recovery
from core.admission import INITIAL, Signal, readyz_signal
from core.bootid import boot_id
from core.config import NodeConfig
from core.credentials import CONTROL
from core.drivers import Credentials, Driver, DriverError, InitResult, driver_for
from core.logs import get_logger
from core.notify import ServiceNotifier
from core.services import ServiceError, ServiceManager, service_manager
from core.share import EpochSuperseded, Fence, Heartbeat, ShareError, ShareStore, Snapshot
from core.supervise import Supervisor
from core.tls import TrustedCA
from leader import peers
from leader.boot import Booted, announce, since_process_start_s
from leader.election import rule_for
from leader.episodes import JoinEpisode, JoinSlot, LeaderTerm, PendingReset, Silence
from leader.host import prepare_host
from leader.metrics import AgentMetrics
from leader.states import CYCLE_S, Jobs, State

if TYPE_CHECKING:  # core.etcd imports aiohttp (~0.15 s): not on the agent's start-up path
    from core.etcd import EtcdMember, LocalView

log = get_logger("ek8s.agent", "agent")

PHYLACTERY_UP_S = 60.0  # Phylactery must serve /healthz this soon after init or before a join
API_UP_S = 120.0  # the API must answer behind the VIP this soon after kubeadm init
# The leader waits at most this long for other control nodes' API servers of another CA (the
# generation before a reset) to stop before it publishes: kubeadm reset stops them in seconds.
OTHER_API_WAIT_S = 30.0
LEASE_CHECK_S = 1.0  # a control node that follows judges the leader's lease at most this often
PROGRESS_S = 10.0  # while a wait goes on, say so this often
HEARTBEAT_LOOP = "heartbeat"  # the supervised loop's name (ek8s_loop_failures_total{loop})
MEMBER_CHECK_S = 3.0  # a watching control node checks its etcd member is still listed this often (2 misses: <= ~6 s)
# A watching node checks its Node still exists this often (2 misses before it acts); a
# worker's check goes through the VIP and stands in for that cycle's API probe, so it stays
# within the load budget.
NODE_CHECK_S = {"control": 10.0, "worker": 30.0}


class PruneFailed(Exception):
    """No Phylactery pruned this node's stale state (none answered, or one refused because
    another incarnation of the node is alive); the join does not go ahead."""


class NotInInventory(Exception):
    """The cluster's published inventory does not list this node (name, address, role): its
    node.yaml names a cluster it does not belong to; the join does not go ahead."""


class Probes(Protocol):
    """What the agent asks over the network (bounded in time, never raising for "no")."""

    def api_ready(self, ca_pem: bytes) -> bool:
        """The API answers ``/readyz`` behind the VIP with a certificate ``ca_pem`` signed."""
        ...

    def api_readyz(self, ca_pem: bytes) -> tuple[int | None, float]:
        """``/readyz`` behind the VIP: (HTTP status or None for no answer, seconds taken)."""
        ...

    def node_ready(self) -> bool | None:
        """This node's Node is Ready (None: absent or the API did not answer)."""
        ...

    def node_found(self) -> bool | None:
        """This node's Node exists: True, False (the API answered 404), None (no answer)."""
        ...

    def phylactery_healthy(self, url: str) -> bool:
        """The Phylactery at ``url`` serves ``/healthz`` (HAProxy and keepalived run)."""
        ...

    def serves_another_ca(self, address: str, ca_pem: bytes) -> bool:
        """An API server answers at ``address`` (the API port) with a certificate ``ca_pem``
        did not sign (False when nothing answers there)."""
        ...

    def post(self, url: str, path: str, token: str, body: dict[str, Any], timeout_s: float) -> tuple[int, Any]:
        """POST to a Phylactery; raises ``OSError`` when it does not answer."""
        ...

    def etcd_view(self) -> LocalView | None:
        """This node's own etcd member's view (members, raft index, quorum), or None when it
        runs no member or the member does not answer."""
        ...

    def quorum_members(self, urls: list[str], token: str) -> list[str] | None:
        """The etcd member list a quorum agrees on (the members' node names), asked of the
        other control nodes' Phylacteries at ``urls`` (``GET /v1/status`` with the control
        credential ``token``: each asks its own member with a linearizable read); None when
        none of them answers with quorum (then nothing is proven)."""
        ...


class NodeProbes:
    """:class:`Probes` for one node, through :mod:`core.probes`; Phylactery is verified with
    ``ca`` (the Phylactery CA the node's role trusts, read from the share on first use)."""

    def __init__(self, cfg: NodeConfig, driver: Driver, ca: TrustedCA) -> None:
        self.driver = driver
        self.vip_url = f"https://{cfg.vip.address}:{cfg.vip.port}/readyz"
        self.api_port = cfg.kubernetes.api_server_port
        self.kubeconfig = driver.kubelet_kubeconfig
        self.node = cfg.node.name
        self.ca = ca

    def api_ready(self, ca_pem: bytes) -> bool:
        """``GET /readyz`` behind the VIP, 1 s timeout."""
        return probes.api_ready(self.vip_url, ca_pem, timeout_s=1.0)

    def api_readyz(self, ca_pem: bytes) -> tuple[int | None, float]:
        """``GET /readyz`` behind the VIP, 1 s timeout: (status or None, seconds taken)."""
        return probes.readyz(self.vip_url, ca_pem, timeout_s=1.0)

    def node_ready(self) -> bool | None:
        """This node's Ready condition through its kubelet kubeconfig."""
        return probes.node_ready(self.kubeconfig, self.node)

    def node_found(self) -> bool | None:
        """Whether this node's Node exists, through its kubelet kubeconfig."""
        return probes.node_found(self.kubeconfig, self.node)

    def serves_another_ca(self, address: str, ca_pem: bytes) -> bool:
        """A TLS handshake with ``address``'s API port, 0.3 s timeout
        (:func:`core.probes.serves_another_ca`)."""
        return probes.serves_another_ca(address, self.api_port, ca_pem, timeout_s=0.3)

    def phylactery_healthy(self, url: str) -> bool:
        """``GET <url>/healthz`` over TLS, 0.5 s timeout (False while no CA is on the share)."""
        try:
            tls = self.ca.context()
        except OSError:
            return False
        return probes.phylactery_healthy(url, tls, 0.5)

    def post(self, url: str, path: str, token: str, body: dict[str, Any], timeout_s: float) -> tuple[int, Any]:
        """POST to a Phylactery with the bearer token over verified TLS
        (:func:`core.probes.phylactery_post`). Raises ``OSError``; a certificate the CA does
        not verify makes the next call read the CA again (it may have been replaced)."""
        try:
            return probes.phylactery_post(url, path, token, body, self.ca.context(), timeout_s)
        except OSError as err:
            if isinstance(getattr(err, "reason", err), ssl.SSLCertVerificationError):
                self.ca.forget()
            raise

    def etcd_view(self) -> LocalView | None:
        """:func:`core.etcd.local_view` of this node's member through the driver's client."""
        from core.etcd import EtcdError, local_view

        ctx = self.driver.etcd_client_context()
        if ctx is None:
            return None
        try:
            return local_view(self.driver.etcd_endpoint, ctx)
        except EtcdError:
            return None

    def quorum_members(self, urls: list[str], token: str) -> list[str] | None:
        """The first answer with quorum among the Phylacteries at ``urls`` (``etcd.quorum``
        true in ``/v1/status``: its member list was read linearizably), as node names; 3 s per
        Phylactery. Through Phylactery, not the other members' client URLs: k3s serves only
        gRPC there (its JSON gateway listens on loopback)."""
        try:
            tls = self.ca.context()
        except OSError:
            return None
        for url in urls:
            answer = probes.phylactery_get(url, "/v1/status", tls, token, 3.0)
            etcd = answer.get("etcd") if answer else None
            if isinstance(etcd, dict) and etcd.get("quorum") is True and isinstance(etcd.get("members"), list):
                return [str(m.get("node")) for m in etcd["members"] if isinstance(m, dict)]
        return None


class Agent:
    """One node's agent. ``config_path`` is handed to Phylactery when the agent starts it."""

    def __init__(
        self,
        cfg: NodeConfig,
        *,
        store: ShareStore,
        driver: Driver,
        services: ServiceManager,
        probes: Probes,
        boot_id: str,
        config_path: Path,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
        prepare: Callable[[], None] | None = None,
        notifier: ServiceNotifier | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.driver = driver
        self.services = services
        self.probes = probes
        self.boot_id = boot_id
        self.config_path = config_path
        self.clock = clock
        self.wake = threading.Event()  # set by a finished job and by stop(): cycle now
        self.jobs = Jobs(
            executor or ThreadPoolExecutor(1, thread_name_prefix="kubeadm"), driver.abort, clock, self.wake.set
        )
        self._prepare = prepare
        self.host_prepared = threading.Event()
        self.stop_requested = threading.Event()
        self.rule = rule_for(cfg.role, cfg.node.name, boot_id, cfg.timeouts.lease_ttl_s)

        self.state = State.ELECT
        self.entered_at = clock()
        self.generation = 0
        # The episodes (leader/episodes.py), each replaced whole when it starts, None between.
        self.term: LeaderTerm | None = None  # while we lead an unready generation
        self.join = JoinEpisode()
        self.slot: JoinSlot | None = None
        self.silence: Silence | None = None
        self.pending_reset: PendingReset | None = None
        self.previous: Heartbeat | None = None  # this node's heartbeat from before this boot
        self.booted: Booted | None = None  # the boot already announced on the share (leader.boot)
        self.resume_checked = False  # the first ELECT asks whether a restart can resume
        self.init_failures = 0  # failed inits since the last Node Ready (across leader terms)
        self.lease_checked_at = clock()
        self.phylactery_started = False
        self.phylactery_up = False
        self._ca: tuple[int, bytes] | None = None  # (generation, cluster CA PEM)
        self.member_checked_at = clock()
        self.node_checked_at = clock()
        self.node_missing = 0  # consecutive checks whose API answered that this node's Node is gone
        self._last_snap: tuple[float, Snapshot] | None = None  # (clock, snapshot) of the share
        self.jitter: Callable[[], float] = random.random  # in [0, 1): spreads workers' polls
        self.metrics = AgentMetrics(store, cfg.node.name, cfg.role, cfg.kubernetes.distribution)
        self.supervisor = Supervisor("agent")  # the heartbeat thread (core/supervise.py)
        self.metrics.registry.register(self.supervisor)  # ek8s_loop_failures_total{process="agent"}
        self.supervisor.register(HEARTBEAT_LOOP)
        self.metrics_written_at: float | None = None
        # systemd (Type=notify): READY after boot, STATUS per sentence, WATCHDOG per cycle.
        self.notifier = notifier or ServiceNotifier({})

    @classmethod
    def for_node(cls, cfg: NodeConfig, config_path: Path, booted: Booted | None = None) -> Agent:
        """The agent with the real store, driver, service manager and probes of node.yaml;
        ``booted``: what :func:`leader.boot.announce` did already (its store is reused)."""
        driver = driver_for(cfg)
        # A worker's store reads and writes the node tree only (it mounts nothing else).
        store = (
            booted.store
            if booted is not None
            else ShareStore(cfg.share.path, cfg.cluster, cfg.node.name, role=cfg.role)
        )
        agent = cls(
            cfg,
            store=store,
            driver=driver,
            services=service_manager(cfg.service_manager, cfg.root),
            probes=NodeProbes(cfg, driver, TrustedCA(functools.partial(store.read_phylactery_ca, cfg.role))),
            boot_id=booted.boot_id if booted is not None else boot_id(cfg.root),
            config_path=config_path,
            notifier=ServiceNotifier(),
        )
        agent._prepare = agent._prepare_host
        agent.booted = booted
        return agent

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> int:
        """Boot, then run cycles until SIGTERM (returns 0) or until every attempt failed
        (returns 1). Logs each new sentence with the state as ``phase``."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
        self.boot()
        self.notifier.ready(self._status("booted"))
        beats = (HEARTBEAT_LOOP, self._heartbeat_loop, self.stop_requested)
        threading.Thread(target=self.supervisor.run_thread, args=beats, name="heartbeat", daemon=True).start()
        threading.Thread(target=self._run_prepare, name="prepare-host", daemon=True).start()
        threading.Thread(target=_warm_imports, name="warm-imports", daemon=True).start()
        last, said_at, since = "", 0.0, self.clock()
        while not self.stop_requested.is_set():
            before = self.state
            try:
                sentence = self.run_cycle()
            except (ShareError, OSError) as err:
                # The share (NFS) hiccupped: nothing was decided; try again next cycle.
                sentence = f"cannot read the share: {err}"
            now = self.clock()
            self.notifier.watchdog()  # a cycle that hangs (a hard NFS mount) stops these
            if sentence != last:
                log.log(self._severity(sentence), sentence, extra={"phase": self.state.value})
                self.notifier.status(self._status(sentence))
                last, said_at, since = sentence, now, now
            elif now - said_at >= PROGRESS_S:
                log.info(f"still: {sentence}", extra={"phase": self.state.value, "waited_s": round(now - since)})
                said_at = now
            self.export_metrics()
            if self.state is State.FAILED:
                self.shutdown("gave up")
                return 1
            if self.state is before:
                self._pause(self.cycle_s())
            self.wake.clear()
        self.shutdown("SIGTERM")
        return 0

    def _severity(self, sentence: str) -> int:
        """The log level of a new sentence (its journald priority): ``error`` when the agent
        gave up or the cluster is lost, ``warning`` for a reset or a share that does not
        answer, ``info`` for the rest."""
        if self.state in (State.FAILED, State.LOST):
            return logging.ERROR
        if self.state is State.RESET or sentence.startswith("cannot read the share"):
            return logging.WARNING
        return logging.INFO

    def _status(self, sentence: str) -> str:
        return f"{self.state.value}, generation {self.generation}: {sentence}"

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` for the next cycle, or less when woken; telling systemd's watchdog
        that the loop is alive at least every half watchdog period meanwhile (a wait is not a
        hung cycle)."""
        step = self.notifier.ping_every_s
        deadline = time.monotonic() + seconds
        while step is not None and deadline - time.monotonic() > step:
            if self.wake.wait(step):
                return
            self.notifier.watchdog()
        self.wake.wait(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        """Ask :meth:`run` to stop after the current cycle (the SIGTERM handler)."""
        self.stop_requested.set()
        self.wake.set()

    def cycle_s(self) -> float:
        """Seconds until the next cycle in the current state. Workers keep to the share's
        load budget (docs/share-protocol.md): in WATCH every ``worker_watch_interval_s``, in
        FOLLOW a backoff with jitter up to ``worker_follow_max_s``, in JOIN and AWAIT_NODE
        between half of ``worker_follow_max_s`` and all of it (jitter)."""
        t = self.cfg.timeouts
        if not self.cfg.is_control and self.state is State.WATCH:
            return t.worker_watch_interval_s
        if not self.cfg.is_control and self.state is State.FOLLOW:
            first = max(t.poll_interval_s, t.worker_follow_max_s / 2)
            return follow_backoff_s(self._in_state_s(), first, t.worker_follow_max_s, self.jitter)
        if not self.cfg.is_control and self.state in (State.JOIN, State.AWAIT_NODE):
            # Each such cycle may probe the API behind the VIP (a TLS handshake): a hundred
            # workers polling every 0.2 s starve the API servers; a finished join wakes the loop.
            return follow_backoff_s(60.0, t.poll_interval_s, t.worker_follow_max_s, self.jitter)
        return CYCLE_S.get(self.state) or t.poll_interval_s

    def run_cycle(self) -> str:
        """One cycle: one snapshot of the share, the generation checked here and only here,
        then the current state's handler. Returns the sentence saying what it decided."""
        if self.state in (State.FAILED, State.STOPPED):
            return f"{self.state.value}: nothing more to do"
        snap = self._snapshot()
        if self.generation and snap.state.generation != self.generation and self.state is not State.ELECT:
            return self._generation_replaced(snap)
        handler: Callable[[Snapshot], str] = getattr(self, f"_on_{self.state.name.lower()}")
        return handler(snap)

    def _snapshot(self) -> Snapshot:
        """The cycle's snapshot of the share. In a healthy WATCH the last one is reused until
        it is ``watch_share_interval_s`` old (``worker_share_interval_s`` on workers): a new
        generation is noticed that much later, or at once when the API falls silent. Only a
        following control node reads leases (workers never lead)."""
        now, t = self.clock(), self.cfg.timeouts
        every = t.watch_share_interval_s if self.cfg.is_control else t.worker_share_interval_s
        cached = self._last_snap
        if self.state is State.WATCH and self.silence is None and cached and now - cached[0] < every:
            return cached[1]
        snap = self.store.snapshot(leases=self.state is State.FOLLOW and self.cfg.is_control)
        self._last_snap = (now, snap)
        return snap

    def boot(self) -> None:
        """What happens once per boot before the first cycle: the share's directory, the
        previous heartbeat (did this node belong to the generation before?), the ``boot``
        event, and Phylactery on control nodes (HAProxy and keepalived come up beside the
        election, before kubeadm needs the VIP). The ``boot`` event carries
        ``first_share_op_s``: seconds from the process's start to its first share operation
        (docs/benchmarks.md), done by :func:`leader.boot.announce`."""
        if self.booted is None:  # ek8s-node run announces the boot before importing this module
            self.booted = announce(self.cfg, self.store, self.boot_id)
        self.previous = self.booted.previous
        if self.cfg.is_control:
            self.start_phylactery(wait=False)

    def shutdown(self, why: str) -> None:
        """Stop the running job, give back the join slot and an unfinished leader claim, and
        say so on the share (best effort: a share that does not answer is only logged)."""
        self.stop_requested.set()
        self.notifier.stopping(self._status(f"stopping ({why})"))
        self.jobs.cancel(wait_s=10.0)
        try:
            self._release_slot()
            fence = self.term.fence if self.term is not None else None
            if fence is not None and self.store.release_leadership(
                fence, f"{self.cfg.node.name} stopped ({why}) before its generation was ready"
            ):
                log.info("released my unfinished leader claim", extra={"phase": self.state.value})
            self._event("stopped", f"agent stopped ({why}) in state {self.state.value}")
        except (OSError, ShareError) as err:
            log.warning("could not release my share state", extra={"phase": self.state.value, "error": str(err)})
        self.state = State.STOPPED
        try:
            self.store.heartbeat(self.boot_id, self.cfg.role, self.state.value, self.generation)
        except OSError as err:
            log.warning("last heartbeat failed", extra={"phase": "stopped", "error": str(err)})
        log.info(f"stopped ({why})", extra={"phase": self.state.value})
        self.export_metrics(force=True)

    # -- transitions ----------------------------------------------------------------------
    def _go(self, state: State, sentence: str, event: str | None = None, **fields: object) -> str:
        """Enter ``state``; record ``event`` with ``sentence`` on the share's timeline."""
        self.state = state
        self.entered_at = self.clock()
        if event:
            self._event(event, sentence, **fields)
        return sentence

    def _event(self, event: str, message: str, **fields: object) -> None:
        self.metrics.on_event(event, fields)
        self.store.record_event(event, self.generation, message, role=self.cfg.role, **fields)

    def _in_state_s(self) -> float:
        return self.clock() - self.entered_at

    def _generation_replaced(self, snap: Snapshot) -> str:
        """The only place a new generation is noticed: stop what runs, reset if this node holds
        anything of the old one, then run the election again."""
        old, new = self.generation, snap.state.generation
        had_job = self.jobs.current is not None
        self.jobs.cancel()
        self._release_slot()
        self.term = None
        self.generation = new
        self.silence = None  # silence is judged per generation
        if self.phylactery_started:
            self.refresh_phylactery()
        if had_job or self.driver.is_joined():
            return self._reset(
                State.ELECT,
                f"generation {new} replaced {old}; resetting to follow it",
                "generation_changed",
                whole_cluster=True,
            )
        return self._go(
            State.ELECT, f"generation {new} replaced {old}; running the election again", "generation_changed"
        )

    def _reset(
        self,
        then: State,
        sentence: str,
        event: str | None = None,
        backoff_s: float = 0.0,
        whole_cluster: bool = False,
        **fields: object,
    ) -> str:
        """Run the driver's reset in the background; then, after ``backoff_s``, enter ``then``.
        ``whole_cluster``: a new generation, every node resets (see the driver's ``reset``)."""
        self.jobs.cancel()
        self._release_slot()
        self.jobs.start("reset", lambda: self.driver.reset(whole_cluster))
        self.pending_reset = PendingReset(then, self.clock() + backoff_s)
        return self._go(State.RESET, sentence, event, **fields)

    def _resume(self, snap: Snapshot) -> str | None:
        """The agent was restarted within the same boot (``systemctl restart ek8s-node``, an
        upgrade): when this node still serves the ready generation, watch it again instead of
        resetting. A reset here would throw away an etcd member that holds the cluster's data
        (on a lone control node: all of it), so a control node whose etcd member answers and
        lists itself resumes whatever the API says (an API blip is judged in WATCH, never by a
        prune, which Phylactery refuses with 409 for a member that answers); a worker resumes
        unless the API answers that its Node is not Ready. Returns the sentence, or None to
        take the normal path (elect, join)."""
        prev, st = self.previous, snap.state
        if prev is None or prev.boot_id != self.boot_id or prev.generation != st.generation or not st.ready:
            return None
        if not self.driver.is_joined():
            return None
        self.generation = st.generation
        why = f"restarted within the same boot: this node serves generation {st.generation}"
        if self.cfg.is_control:
            view = self.probes.etcd_view()
            if view is not None and self._listed(view.members):
                quiet = "" if self._api_alive() else "; the API does not answer behind the VIP now"
                why += f" (its etcd member answers and is listed{quiet})"
                return self._go(State.WATCH, f"{why}; resuming without a reset", "resumed")
            return None
        api = self._api_alive()
        ready = self.probes.node_ready() if api else None
        if api and not ready:
            return None
        now = "Node Ready" if api else "the API does not answer behind the VIP now"
        return self._go(State.WATCH, f"{why} ({now}); resuming without a reset", "resumed")

    def _listed(self, members: tuple[EtcdMember, ...] | list[EtcdMember]) -> bool:
        """Whether ``members`` holds this node's etcd member (by the driver's naming rule)."""
        return any(self.driver.etcd_member_node(m.name) == self.cfg.node.name for m in members)

    def _deposed(self, why: str) -> str:
        self.term = None
        return self._reset(State.ELECT, f"deposed ({why}); resetting and following the new leader", "deposed")

    def _init_failed(self, why: str) -> str:
        """A failed init or publish as leader: reset and elect again after a backoff."""
        self.init_failures += 1
        n = self.init_failures
        self._event("init_failed", f"init failed ({n}x): {why}")
        return self._attempt_failed("init", n, State.ELECT, f"init failed ({n}/{{N}})", "electing again", why)

    def _join_failed(self, why: str) -> str:
        """A failed prune, join, or first Node Ready after a join: reset and join again."""
        if not self.cfg.is_control and self.slot is not None:
            self._admission_signal(Signal.JOIN_FAILED)
        n = self.join.attempt
        self._event("join_failed", f"join attempt {n} failed: {why}", attempt=n)
        return self._attempt_failed("join", n, State.JOIN, f"join attempt {n}/{{N}} failed", "retrying", why)

    def _attempt_failed(self, what: str, n: int, then: State, failed: str, retry: str, why: str) -> str:
        """Failure number ``n`` of ``what``: reset, then ``then`` after ``join_backoff_s`` x n;
        or give up (FAILED) at ``timeouts.join_attempts``."""
        attempts = self.cfg.timeouts.join_attempts
        if n >= attempts:
            return self._go(State.FAILED, f"giving up: {what} failed {n} times: {why}", "join_failed")
        backoff = self.cfg.timeouts.join_backoff_s * n
        sentence = f"{failed.format(N=attempts)}: {why}; resetting, {retry} in {backoff:g}s"
        return self._reset(then, sentence, backoff_s=backoff)

    # -- handlers, one per state ----------------------------------------------------------
    def _on_elect(self, snap: Snapshot) -> str:
        if not self.resume_checked:
            self.resume_checked = True
            resumed = self._resume(snap)
            if resumed is not None:
                return resumed
        state, action, why = self.store.attempt_leadership(self.cfg.node.address, self.boot_id, self.rule)
        if self.generation and state.generation != self.generation and self.phylactery_started:
            self.refresh_phylactery()
        self.generation = state.generation
        if action == "lead":
            self.term = LeaderTerm(state.claim())
            self.join = JoinEpisode()  # a leader has joined nothing: AWAIT_NODE keeps its control plane
            fence = self.term.fence
            epoch = fence.epoch if fence else state.epoch
            return self._go(
                State.LEAD,
                f"I lead generation {state.generation} with epoch {epoch}: {why}",
                "leader_claimed",
                epoch=epoch,
            )
        if action == "follow":
            self.lease_checked_at = self.clock()
            return self._go(State.FOLLOW, f"following: {why}")
        self.join = JoinEpisode()
        return self._go(State.JOIN, f"joining: {why}")

    def _on_follow(self, snap: Snapshot) -> str:
        state = snap.state
        leader = state.leader
        if state.ready:
            return self._go(State.ELECT, f"generation {state.generation} is ready; electing to join it")
        now = self.clock()
        if self.cfg.is_control and now - self.lease_checked_at >= LEASE_CHECK_S:
            # Workers never lead: only a ready generation moves them on.
            self.lease_checked_at = now
            if not snap.leader_alive(self.cfg.timeouts.lease_ttl_s):
                who = f"leader {leader.node} holds" if leader else "nobody holds"
                return self._go(State.ELECT, f"{who} no live lease; running the election again")
        if leader is None:
            return "waiting for a control node to lead"
        return f"waiting for {leader.node} to make generation {state.generation} ready"

    def _on_lead(self, snap: Snapshot) -> str:
        term = self.term
        if term is None or term.fence is None or not term.fence.holds(snap.state):
            return self._deposed(f"the share records epoch {snap.state.epoch}")
        if self.jobs.current is None:
            if not self._host_ready():
                return "waiting for the host preparation (image import) before kubeadm init"
            restore = Path(snap.state.restore_from) if snap.state.restore_from else None
            # k3s restores a snapshot only with the token it was taken with: kept beside it.
            secret = self.store.snapshot_secret(restore) if restore is not None else None
            credentials = self.driver.new_credentials(restore_secret=secret)
            if restore is not None:
                self._event("etcd_restore", f"restoring etcd from the snapshot {restore}")
            term.credentials = credentials
            self.jobs.start("init", lambda: self._run_init(credentials, restore))
            return f"running {self.driver.name} init" + (f" with etcd restored from {restore.name}" if restore else "")
        job = self.jobs.take()
        if job is None:
            return f"{self.driver.name} init is running"
        error = job.error()
        if error is not None:
            if isinstance(error, (DriverError, OSError)):
                return self._init_failed(str(error))
            raise error
        term.init_result = job.result()
        term.kubeadm_s = round(self.clock() - job.started, 3)
        self.store.record_incarnation(self.boot_id, self.generation)
        return self._go(State.PUBLISH, f"{self.driver.name} init finished in {term.kubeadm_s:.1f}s")

    def _run_init(self, credentials: Credentials, restore: Path | None) -> InitResult:
        if self.driver.is_joined():
            log.info("leftovers of an earlier init/join found; resetting first", extra={"phase": "lead"})
            self.driver.reset()
        return self.driver.init(credentials, restore)

    def _on_publish(self, snap: Snapshot) -> str:
        term = self.term
        if term is None or term.fence is None or not term.fence.holds(snap.state):
            return self._deposed(f"the share records epoch {snap.state.epoch}")
        assert term.init_result is not None
        if self.cfg.is_control and not self.phylactery_up and not self._phylactery_healthy():
            if self._in_state_s() > PHYLACTERY_UP_S:
                return self._init_failed(f"Phylactery did not serve /healthz within {PHYLACTERY_UP_S:.0f}s")
            return "waiting for my Phylactery (HAProxy and keepalived) to serve /healthz"
        if not term.api_seen:
            if not self.probes.api_ready(term.init_result.ca_cert_pem):
                if self._in_state_s() > API_UP_S:
                    return self._init_failed(f"the API did not answer behind the VIP within {API_UP_S:.0f}s")
                return f"waiting for the API behind the VIP {self.cfg.vip.address}:{self.cfg.vip.port}"
            term.api_seen = True
            self._event(
                "api_ready",
                f"the API answers behind the VIP {self.cfg.vip.address}:{self.cfg.vip.port}",
                kubeadm_s=term.kubeadm_s,
            )
        if not term.publishing:
            waiting = self._await_other_api_servers(term)
            if waiting:
                return waiting
            term.publishing = True
            fence, result, credentials = term.fence, term.init_result, term.credentials
            assert credentials is not None
            self.jobs.start("publish", lambda: self._publish(fence, result, credentials))
            return "the API answers behind the VIP; publishing join material and applying manifests"
        job = self.jobs.take()
        if job is None:
            return "publishing join material and applying manifests"
        error = job.error()
        if isinstance(error, EpochSuperseded):
            return self._deposed(str(error))
        if error is not None:
            from kubernetes.utils import FailToCreateError

            if isinstance(error, (OSError, ShareError, FailToCreateError, *probes.kube_errors())):
                return self._init_failed(f"publishing failed: {error}")
            raise error
        self.term = None  # the generation is ready: nothing of the claim is left to release
        return self._go(State.AWAIT_NODE, f"generation {self.generation} is ready; join material published")

    def _await_other_api_servers(self, term: LeaderTerm) -> str | None:
        """Before joiners are let in: the sentence to wait with while another registered
        control node still serves an API server whose certificate our CA did not sign (one
        of the generation before ``ek8s reset`` whose reset has not stopped it yet: HAProxy
        verifies servers against the new CA only once it is published, so until then it would
        send joiners there and their TLS would fail); None once none does, or after
        ``OTHER_API_WAIT_S`` (said once, as a warning: a join that meets one then fails and is
        tried again)."""
        assert term.init_result is not None
        try:
            peers = [m for m in self.store.members() if m.name != self.cfg.node.name]
        except (OSError, ShareError):
            return None
        ca = term.init_result.ca_cert_pem
        others = sorted(m.name for m in peers if self.probes.serves_another_ca(m.address, ca))
        if not others:
            if term.others_since is not None:
                log.info(
                    "no API server of another CA is left behind the VIP",
                    extra={"phase": self.state.value, "waited_s": round(self.clock() - term.others_since, 1)},
                )
            return None
        now = self.clock()
        if term.others_since is None:
            term.others_since = now
        waited = now - term.others_since
        if waited >= OTHER_API_WAIT_S:
            log.warning(
                "API servers of another CA still answer; publishing anyway (a join that meets one fails and retries)",
                extra={"phase": self.state.value, "nodes": others, "waited_s": round(waited, 1)},
            )
            return None
        return (
            f"waiting for the API servers on {', '.join(others)} (another CA: the generation before) to stop "
            f"before joiners are let in ({waited:.0f}s of {OTHER_API_WAIT_S:.0f}s)"
        )

    def _publish(self, fence: Fence, result: InitResult, credentials: Credentials) -> None:
        """Join material, the operator's kubeconfig, manifests, then ready: every share write
        fenced by our claim (a deposed leader writes nothing)."""
        material = self.driver.join_material(result, credentials, fence.generation, fence.epoch)
        self.store.publish_join_material(fence, material, self.driver.control_only_fields)
        self.store.write_admin_kubeconfig(fence, result.admin_kubeconfig)
        self.apply_manifests()
        self.store.mark_ready(fence)
        # Recorded here, not a cycle later: the timeline's leader_ready is when joiners can start.
        self._event("leader_ready", f"generation {fence.generation} is ready; join material published")
        # My Phylactery learns at once that it serves the ready generation's leader (keepalived's
        # priority, etcd snapshots), not at its next periodic reconcile.
        self.refresh_phylactery()

    def apply_manifests(self) -> None:
        """Apply ``kubernetes.manifests`` (the CNI first) with the admin kubeconfig."""
        if not self.cfg.kubernetes.manifests:
            return
        from kubernetes import utils

        api = probes.kube_client(self.driver.admin_kubeconfig)
        for manifest in self.cfg.kubernetes.manifests:
            log.info(f"applying {manifest}", extra={"phase": self.state.value})
            utils.create_from_yaml(api, str(self.cfg.host_path(manifest)))

    def _on_join(self, snap: Snapshot) -> str:
        job = self.jobs.take()
        if job is not None and job.name == "prune":
            error = job.error()
            if error is not None:
                if not isinstance(error, (PruneFailed, OSError, ShareError)):
                    raise error
                self.join.attempt += 1  # a failed prune is a failed attempt: no join follows it
                return self._join_failed(str(error))
        elif job is not None:
            error = job.error()
            if error is not None:
                if isinstance(error, (DriverError, OSError, ShareError, NotInInventory)):
                    return self._join_failed(str(error))  # the reset gives the slot back
                raise error
            if self.cfg.is_control:
                # The incarnation before the slot goes: until then Phylactery's reaper must
                # not take the new member, listed under this name, for the old boot's.
                self.store.record_incarnation(self.boot_id, self.generation)
                self._release_slot()  # a worker keeps its slot until its Node is Ready
            else:
                slow = self.clock() - job.started > self.cfg.timeouts.worker_join_slot_s / 2
                self._admission_signal(Signal.SLOW_JOIN if slow else Signal.HEALTHY)
            self.join.must_prune = False
            return self._go(
                State.AWAIT_NODE,
                f"{self.driver.name} join succeeded",
                "joined",
                attempt=self.join.attempt,
                kubeadm_s=round(self.clock() - job.started, 3),
            )
        running = self.jobs.running
        if running is not None:
            if running.name == "prune":
                return self._prune_sentence()
            return f"{self.driver.name} join is running (attempt {self.join.attempt})"
        if not self.cfg.is_control and self.slot is None:
            # Before the API probe: a worker waiting for a slot costs one share read a look.
            k = self.cfg.kubernetes.worker_join_concurrency
            initial = float(k) if not self._adaptive else INITIAL
            busy = self.store.try_worker_join_slot(self.boot_id, k, self.cfg.timeouts.worker_join_slot_s, initial)
            if busy is not None:
                held, allowed = busy
                return (
                    f"all {allowed} worker join slots are taken ({held} workers joining; the admission window "
                    f"allows {allowed}, at most {k}); waiting for one"
                )
            self.slot = JoinSlot()
        if not self.cfg.is_control and (self.slot is None or not self.slot.admission_judged):
            if not self._admission_probe():
                return self._judge_silence("before joining")
        elif not self._api_alive():
            return self._judge_silence("before joining")
        attempt = self.join.attempt + 1
        if self._needs_prune(attempt, snap.state.restore_from is not None) and self.join.pruned_for != attempt:
            # Beside our own Phylactery's start-up, not after it: other nodes' Phylacteries do
            # both, since a rejoin may come days after init (certificates last 2 h, the token
            # 24 h) and a rebooted node leaves its Node and etcd member behind.
            self.join.pruned_for = attempt
            self.jobs.start("prune", self._prune_and_renew)
            return self._prune_sentence()
        if not self._host_ready():
            return "waiting for the host preparation (image import) before joining"
        if self.cfg.is_control:
            if not self.phylactery_up and not self._phylactery_healthy():
                return "waiting for my Phylactery (HAProxy and keepalived) before joining the control plane"
            holder = self.store.try_join_slot(self.boot_id, self.cfg.timeouts.lease_ttl_s)
            if holder is not None:
                return f"{holder} is joining the control plane; waiting for my turn"
            self.slot = JoinSlot()
        self.join.attempt = attempt
        self.jobs.start("join", self._run_join)
        attempts = self.cfg.timeouts.join_attempts
        sentence = f"running {self.driver.name} join as {self.cfg.role} (attempt {attempt}/{attempts})"
        self._event("join_started", sentence, attempt=attempt)
        return sentence

    def _prune_sentence(self) -> str:
        if self.cfg.is_control:
            return "asking the other control nodes to prune my stale state and renew the join material"
        return "asking the control nodes to prune my stale state"

    def _needs_prune(self, attempt: int, restored: bool) -> bool:
        """Prune unless this node has never been part of this generation (a first join
        leaves nothing behind to prune). A generation restored from a snapshot (``restored``)
        holds the Nodes of the one before, which kube-controller-manager shows Ready for its
        node-monitor-grace-period (40 s) after the restore; kubeadm's join refuses a name whose
        Node is Ready, so every first join of a restored generation prunes too."""
        prev = self.previous
        same_generation = prev is not None and prev.generation == self.generation
        return attempt > 1 or self.join.must_prune or restored or same_generation

    def _prune_and_renew(self) -> None:
        """The prune job: other control nodes' Phylacteries remove this node's stale Node and
        etcd member and, for a control node, renew the join material, side by side (a worker's
        credential cannot ask for join material: Phylactery keeps the token valid by itself)."""
        post = self.probes.post
        name, address = self.cfg.node.name, self.cfg.node.address
        ttl = self.cfg.timeouts.liveness_ttl_s("control")
        with ThreadPoolExecutor(2) as pool:
            renewed = (
                pool.submit(peers.ensure_join_material, self.store, post, name, ttl) if self.cfg.is_control else None
            )
            pruned = pool.submit(peers.prune_self, self.store, post, name, address, self.boot_id, self.cfg.role, ttl)
            refreshed = renewed.result() if renewed is not None else []
            ok, answer = pruned.result()
        if refreshed:
            self._event("join_material_refreshed", f"join material refreshed: {', '.join(refreshed)}")
        if not ok:
            # A member left behind would be reused by kubeadm's join and crash-loop
            # (kubernetes/kubernetes#127491): never join after a failed prune.
            raise PruneFailed(f"no Phylactery pruned my stale state: {answer.get('errors')}")
        self._event(
            "pruned",
            f"pruned my stale state through {answer.get('url')}",
            deleted_nodes=answer.get("deleted_nodes"),
            removed_etcd_members=[m["id"] for m in answer.get("removed_etcd_members", [])],
            deleted_secrets=answer.get("deleted_secrets", []),
        )

    def _run_join(self) -> None:
        """The join job: leftovers of an earlier attempt reset, then the driver's join. Refused
        (:class:`NotInInventory`) first when the cluster's published inventory does not list
        this node with its address and role: a node.yaml of another cluster never joins this
        one (docs/operations.md, "Several clusters on one Warewulf server")."""
        inventory = self.store.read_inventory()
        if inventory is not None and inventory.cluster == self.cfg.cluster:
            why = inventory.refusal(self.cfg.node.name, self.cfg.node.address, self.cfg.role)
            if why is not None:
                raise NotInInventory(f"refusing to join: {why}")
        if self.driver.is_joined():
            self.driver.reset()
        self.driver.join(self.store.read_join_material())

    def _on_await_node(self, snap: Snapshot) -> str:
        if self.probes.node_ready():
            self.init_failures = 0
            self._release_slot()
            return self._go(
                State.WATCH,
                f"node {self.cfg.node.name} is Ready",
                "node_ready",
                cpu_s=round(time.process_time(), 3),  # this process's threads, not kubeadm's
                since_start_s=since_process_start_s(),
            )
        if self._in_state_s() > self.cfg.timeouts.node_ready_s:
            why = f"my Node was not Ready within {self.cfg.timeouts.node_ready_s:.0f}s"
            if self.join.attempt == 0:
                # The leader: its control plane serves the ready generation; resetting it would
                # take the cluster down for a kubelet or CNI problem. Keep it, and say so.
                return f"{why}; my control plane serves generation {self.generation}, so I keep it and wait"
            return self._join_failed(why)
        return f"waiting for my Node {self.cfg.node.name} to be Ready"

    def _on_watch(self, snap: Snapshot) -> str:
        reform = self._reform_progress()
        if reform is not None:
            return reform
        if self.cfg.is_control and not self.services.is_running("phylactery"):
            # Supervision: Phylactery in turn restarts HAProxy and keepalived when it reconciles.
            self.phylactery_started = self.phylactery_up = False
            self._event("phylactery_restarted", "Phylactery is not running; starting it again")
            self.start_phylactery()
        answered = False
        if self.clock() - self.node_checked_at >= NODE_CHECK_S[self.cfg.role]:
            self.node_checked_at = self.clock()
            found = self.probes.node_found()
            if found is not None:
                answered = True  # the API answered: this cycle needs no other probe of it
                self.silence = None
                vanished = self._node_vanished(found)
                if vanished is not None:
                    return vanished
        if not answered and not self._api_alive():
            return self._judge_silence("while watching")
        if self.cfg.is_control and self.clock() - self.member_checked_at >= MEMBER_CHECK_S:
            removed = self._member_removed()
            if removed is not None:
                return removed
        return f"no action: generation {self.generation} is healthy"

    def _node_vanished(self, found: bool) -> str | None:
        """Did this node's Node vanish while it runs (deleted: a wrong prune, an operator's
        ``kubectl delete node``)? Its kubelet does not register it again until it restarts
        (:func:`core.versions.kubelet_reregisters_deleted_node`; kubernetes#71398). After two
        checks that miss it, restart the kubelet (the driver's ``kubelet_service``) and wait
        for the Node to be Ready again; when the restart fails, reset and rejoin."""
        if found:
            self.node_missing = 0
            return None
        self.node_missing += 1
        if self.node_missing < 2:
            return None
        self.node_missing = 0
        service = self.driver.kubelet_service
        why = (
            f"my Node {self.cfg.node.name} is gone from the API while this node runs, and a running kubelet does "
            "not register it again (kubernetes#71398)"
        )
        try:
            self.services.restart(service)
        except ServiceError as err:
            self.join = JoinEpisode(must_prune=True)
            return self._reset(
                State.JOIN, f"{why}; restarting {service} failed ({err}): resetting and rejoining", "node_vanished"
            )
        return self._go(
            State.AWAIT_NODE, f"{why}; restarted {service} to register it, waiting for it to be Ready", "node_vanished"
        )

    def _member_removed(self) -> str | None:
        """Was this node's etcd member removed (``etcdctl member remove``, a prune of a live
        node, a survivor's re-form after the operator accepted this node's loss)? Only a quorum
        says so: when the local member does not answer or does not list itself, the member list
        is asked of the other control nodes' Phylacteries, each reading its own member's list
        linearizably (:meth:`Probes.quorum_members`); when that list lacks this node's member,
        reset and rejoin (pruned first). A local etcd that is slow or restarting, or no other
        member answering with quorum, proves nothing: the node keeps its member and its data
        and asks again at the next check."""
        self.member_checked_at = self.clock()
        view = self.probes.etcd_view()
        if view is not None and self._listed(view.members):
            return None
        me = self.cfg.node.name
        ttl = self.cfg.timeouts.liveness_ttl_s("control")
        quorum = self.probes.quorum_members(peers.peer_urls(self.store, me, ttl), self.store.read_credential(CONTROL))
        if quorum is None or me in quorum:
            return None
        self.join = JoinEpisode(must_prune=True)
        asked = "my etcd member does not answer" if view is None else "my etcd member does not list itself"
        why = f"{asked}, and a quorum's member list (asked through another member) lacks it: it was removed"
        return self._reset(State.JOIN, f"{why}; resetting and rejoining", "member_removed")

    def _on_lost(self, snap: Snapshot) -> str:
        reform = self._reform_progress()
        if reform is not None:
            return reform
        if self._api_alive():
            return self._go(State.WATCH, f"the API of generation {self.generation} answers again")
        return f"generation {self.generation} is lost; on_cluster_lost is 'wait': waiting for 'ek8s reset'"

    def _on_reset(self, snap: Snapshot) -> str:
        job = self.jobs.running
        if job is not None:
            return f"{self.driver.name} reset is running"
        done = self.jobs.take()
        if done is not None and done.error() is not None:
            log.warning("reset failed; going on", extra={"phase": "reset", "error": str(done.error())})
        pending = self.pending_reset or PendingReset(State.ELECT, 0.0)
        left = pending.resume_at - self.clock()
        if left > 0:
            return f"backing off before {pending.then.value}"
        return self._go(pending.then, f"reset done; {pending.then.value} again")

    # -- the API behind the VIP, and a lost cluster ---------------------------------------
    def _cluster_ca(self) -> bytes:
        """The generation's CA (from ``join.json``, read once per generation)."""
        if self._ca is None or self._ca[0] != self.generation:
            try:
                ca = self.store.read_join_material().ca_cert.encode()
            except (FileNotFoundError, ValueError, TypeError, ShareError):
                return b""
            self._ca = (self.generation, ca)
        return self._ca[1]

    def _admission_probe(self) -> bool:
        """A worker that has just taken a join slot probes ``/readyz`` behind the VIP once and
        reports what it saw to the admission window (:mod:`core.admission`): 200 in time grows
        it, a 429, a 5xx, no answer or a slow 200 halves it. True when the API answered 200
        (the join may go ahead); a probe that did not is repeated by the next cycles through
        :meth:`_api_alive` without another report."""
        ca = self._cluster_ca()
        if not ca:
            return False
        status, latency_s = self.probes.api_readyz(ca)
        if self.slot is not None:
            self.slot.admission_judged = True
        self._admission_signal(readyz_signal(status, latency_s))
        if status != 200:
            return False
        self.silence = None
        return True

    @property
    def _adaptive(self) -> bool:
        return self.cfg.kubernetes.worker_join_admission == "adaptive"

    def _admission_signal(self, signal: Signal) -> None:
        """Report ``signal`` to the share's admission window; a share that fails now only
        loses this report (the window is advice, the slots are the bound). Nothing is
        reported with ``kubernetes.worker_join_admission: fixed``."""
        if not self._adaptive:
            return
        try:
            window = self.store.worker_join_signal(signal, self.cfg.kubernetes.worker_join_concurrency)
        except (OSError, ShareError) as err:
            log.warning("cannot update the join admission window", extra={"phase": self.state.value, "error": str(err)})
            return
        if signal.distress:  # growth is not recorded: two events per worker would flood the timeline
            why = f"join admission: {signal.value}; the window is now {window.size:.1f} slots"
            self._event("join_admission", why, signal=signal.value, window=round(window.size, 1))

    def _api_alive(self) -> bool:
        ca = self._cluster_ca()
        if ca and self.probes.api_ready(ca):
            self.silence = None
            return True
        if self.silence is None:
            self.silence = Silence(since=self.clock())
        return False

    def _judge_silence(self, when: str) -> str:
        """The API of a ready generation is silent. Recovery is ordered by what it keeps and
        acts only on proof (:mod:`core.recovery`, docs/recovery.md): a control node whose own
        member's loss was proven (fenced, accepted) while it still runs resets and rejoins; a
        control node that still holds etcd data re-forms etcd from it when a majority of the
        members is proven to have lost theirs; nobody starts a new generation while a survivor
        holds data or while any member is merely silent (it may be serving behind a partition):
        the node waits and says what is proven and what is not, and after
        ``timeouts.cluster_lost_grace_s`` records it once (``recovery_waiting``). When every
        member's data is proven gone, ``on_cluster_lost``: ``restore``/``reinit`` start a new
        generation at once (the next cycle follows it), ``wait`` enters LOST. Workers only
        wait."""
        grace = self.cfg.timeouts.cluster_lost_grace_s
        silent = self._silent_s()
        vip = f"{self.cfg.vip.address}:{self.cfg.vip.port}"
        silence = f"the API of generation {self.generation} does not answer behind {vip} {when}"
        if not self.cfg.is_control:
            return f"{silence} (grace {grace:.0f}s)"
        a = self._assess()
        me = self.cfg.node.name
        mine = a.incarnations.get(me)
        if (
            a.fates.get(me) in (recovery.Fate.FENCED, recovery.Fate.ACCEPTED)
            and mine is not None
            and mine.boot_id == self.boot_id  # the proof is about this boot's member, not an earlier boot's
            and self.driver.is_joined()
        ):
            self.join = JoinEpisode(must_prune=True)
            why = f"my etcd member's data was declared lost ({me} {a.proof_of(me)}) while this node runs"
            why += ": it must not serve its old data; resetting and rejoining"
            return self._reset(State.JOIN, why, "member_removed")
        if me in a.survivors:
            return self._as_survivor(a, silence)
        if a.survivors:
            return f"{silence}; {', '.join(a.survivors)} still hold etcd data: waiting for etcd to be re-formed"
        if not a.all_lost:
            return self._wait_for_proof(a, silence, silent)
        why = f"cluster lost: generation {self.generation} is marked ready but no API answered"
        why += f" behind {vip} for {silent:.0f}s"
        if self.cfg.on_cluster_lost == "wait":
            return self._go(State.LOST, f"{why}; on_cluster_lost is 'wait': waiting for 'ek8s reset'", "cluster_lost")
        if self.cfg.on_cluster_lost == "restore" and not self.driver.restores_snapshots:
            # Starting from nothing is the operator's call ('reinit' or 'ek8s reset'), never a
            # silent stand-in for a restore; failing init after init would not help either.
            cannot = f"{self.driver.name} cannot restore a snapshot into a new generation"
            sentence = f"{why}; on_cluster_lost is 'restore' but {cannot}: waiting for 'ek8s reset'"
            return self._go(State.LOST, sentence, "cluster_lost")
        restoring = self.cfg.on_cluster_lost == "restore"
        source = self.store.newest_valid_snapshot(self.driver.restore_needs_secret) if restoring else None
        plan = f"restoring etcd from {source.name}" if source else "starting from nothing"
        if self.cfg.on_cluster_lost == "restore" and source is None:
            plan += " (on_cluster_lost is 'restore' but the share holds no snapshot)"
        new = self.store.start_generation(f"{why}; {plan}", expected=self.generation, restore_from=source)
        outcome = f"started generation {new.generation}, {plan}" if new else "another node started a new one"
        sentence = f"{why}; {outcome}"
        self._event("cluster_lost", sentence)
        self.silence = None
        return sentence

    def _silence(self) -> Silence:
        """The current silence of the API (a control node judges silence only after a probe
        behind the VIP went unanswered, which started it; one starts now otherwise)."""
        if self.silence is None:
            self.silence = Silence(since=self.clock())
        return self.silence

    @property
    def etcd_index(self) -> int | None:
        """The raft index this node's heartbeats report: its member's while the API is silent
        and etcd has no quorum (:class:`leader.episodes.Silence`), else None."""
        silence = self.silence
        return silence.etcd_index if silence is not None else None

    def _silent_s(self) -> float:
        """Seconds the API has been silent (0 when it is not)."""
        silence = self.silence
        return self.clock() - silence.since if silence is not None else 0.0

    def _assess(self) -> recovery.Assessment:
        """The generation's etcd members and what became of their data, from the share
        (:func:`core.recovery.assess_share`, the one place it is judged)."""
        return recovery.assess_share(self.store, self.generation, self.cfg.timeouts.lease_ttl_s)

    def _wait_for_proof(self, a: recovery.Assessment, silence: str, silent_s: float, survivor: bool = False) -> str:
        """Nothing proves enough lost to act: wait, saying what is proven and what is not;
        after ``timeouts.cluster_lost_grace_s`` of silence record it once (``recovery_waiting``,
        with the silent members) so that ``ek8s events`` and ``ek8s status`` show it. A
        ``survivor`` (it holds etcd data) with ``fencing: warewulf-power`` files a fence
        request for each silent member (``fence_requested``): the Warewulf server's fence
        service power-cycles it and records the proof (docs/recovery.md, "Fencing")."""
        sentence = f"{silence}; {a.explain()}: waiting, not acting on silence"
        if survivor and self.cfg.fencing == "warewulf-power" and a.silent:
            me = self.cfg.node.name
            filed = [n for n in a.silent if n in a.incarnations and self.store.request_fence(a.incarnations[n], me)]
            if filed:
                self._event("fence_requested", f"asked the Warewulf server to fence {', '.join(filed)}", nodes=filed)
            sentence += f"; fence requested for {', '.join(a.silent)} (fencing: warewulf-power)"
        episode = self._silence()
        if not episode.waiting_reported and silent_s >= self.cfg.timeouts.cluster_lost_grace_s:
            episode.waiting_reported = True
            self._event("recovery_waiting", sentence, silent=a.silent, lost=a.lost, survivors=a.survivors)
        return sentence

    def _as_survivor(self, a: recovery.Assessment, silence: str) -> str:
        """This node still holds its etcd data while the API is silent: re-form etcd from it
        when a majority lost theirs and this node has the most recent data."""
        if self.jobs.running is not None:
            return "re-forming etcd from my data"
        view = self.probes.etcd_view()
        if view is None:
            return f"{silence}; my etcd member does not answer"
        if view.quorum:
            self._silence().etcd_index = None
            return f"{silence}; etcd has quorum, the API should come back"
        self._silence().etcd_index = view.raft_index
        if not a.quorum_lost:
            if a.silent:
                silent = self._silent_s()
                return self._wait_for_proof(a, f"{silence}; etcd lost quorum", silent, survivor=True)
            return f"{silence}; etcd lost quorum, but a majority of members may come back ({', '.join(a.lost)} lost)"
        me = self.cfg.node.name
        others = self.store.heartbeats([n for n in a.survivors if n != me])
        indexes = {n: (hb.etcd_index if hb else None) for n, hb in others.items()} | {me: view.raft_index}
        chosen = recovery.reformer(a.survivors, indexes)
        if chosen is None:
            return f"{silence}; waiting for every survivor ({', '.join(a.survivors)}) to report its etcd data"
        if chosen != me:
            return f"{silence}; {chosen} holds the most recent etcd data and re-forms etcd"
        holder = self.store.claim_reform(self.generation, self.boot_id, self.cfg.timeouts.lease_ttl_s)
        if holder is not None:
            return f"{silence}; {holder} is re-forming etcd"
        sentence = (
            f"etcd lost quorum ({', '.join(a.lost)} lost their data); re-forming etcd from my data "
            f"(raft index {view.raft_index}) as a one-member cluster; generation {self.generation} stays"
        )
        self._event("etcd_reform_started", sentence, lost=a.lost, raft_index=view.raft_index)
        self.jobs.start("reform", self.driver.reform_etcd)
        return sentence

    def _reform_progress(self) -> str | None:
        """The re-form job's progress in WATCH and LOST, or None when there is none."""
        if self.jobs.running is not None:
            return "re-forming etcd from my data"
        job = self.jobs.take()
        if job is None:
            return None
        self.silence = None
        error = job.error()
        if error is not None:
            if not isinstance(error, (DriverError, OSError)):
                raise error
            sentence = f"re-forming etcd failed: {error}"
            self._event("etcd_reform_failed", sentence)
            return sentence
        sentence = f"etcd re-formed from my data in {self.clock() - job.started:.1f}s; the other control nodes rejoin"
        self._event("etcd_reformed", sentence)
        return sentence

    # -- Phylactery, the join slot, the host ----------------------------------------------
    @property
    def phylactery_url(self) -> str:
        """This node's own Phylactery (HTTPS: its certificate names the node's address)."""
        return f"https://{self.cfg.node.address}:{self.cfg.phylactery.port}"

    def start_phylactery(self, wait: bool = True) -> None:
        """Start Phylactery (it brings up HAProxy and keepalived). Without ``wait`` return
        once the start is queued (at boot, beside the election: ``phylactery.service`` is
        ``Type=notify`` and serves only after its imports, ~1.5 s); with it, once it serves."""
        argv = [sys.executable, "-m", "phylactery", "--config", str(self.config_path)]
        try:
            self.services.start("phylactery", argv, wait=wait)
            self.phylactery_started = True
        except ServiceError as err:
            log.error("cannot start Phylactery", extra={"phase": self.state.value, "error": str(err)})

    def _phylactery_healthy(self) -> bool:
        if self.probes.phylactery_healthy(self.phylactery_url):
            if not self.phylactery_up:
                self.phylactery_up = True
                self._event("phylactery_up", "Phylactery, HAProxy and keepalived are up")
            return True
        return False

    def refresh_phylactery(self) -> None:
        """Ask the local Phylactery to reconcile now (it re-registers in a new generation)."""
        try:
            self.probes.post(self.phylactery_url, "/v1/refresh", self.store.read_credential(CONTROL), {}, 2.0)
        except (OSError, ShareError) as err:
            log.info("local Phylactery did not take the refresh", extra={"phase": self.state.value, "error": str(err)})

    def _release_slot(self) -> None:
        """Give back the join slot this node holds: the control-plane slot after its join,
        a worker's once its Node is Ready; either on a reset, a new generation or a stop."""
        if self.slot is not None:
            if self.cfg.is_control:
                self.store.release_join_slot()
            else:
                self.store.release_worker_join_slot()
            self.slot = None

    def _host_ready(self) -> bool:
        """The host preparation is done, or has taken longer than ``timeouts.command_s`` (then
        kubeadm's own preflight names what is missing)."""
        return self.host_prepared.is_set() or self._in_state_s() > self.cfg.timeouts.command_s

    def _run_prepare(self) -> None:
        try:
            if self._prepare is not None:
                self._prepare()
        finally:
            self.host_prepared.set()

    def _prepare_host(self) -> None:
        result = prepare_host(self.cfg)
        if result is not None:
            self._event(
                "images_imported",
                f"imported {len(result.imported)} image archives in {result.seconds:.1f}s",
                failed=len(result.failed),
            )

    def heartbeat_due(self, last_at: float, last_phase: str) -> bool:
        """Whether to heartbeat now, ``last_at`` (clock) being the last beat, which said
        ``last_phase``: on a new phase, and every :meth:`core.config.Timeouts.heartbeat_every_s`
        (a control node beats faster outside a healthy WATCH, and while it reports its raft
        index for an etcd re-form)."""
        steady = self.state is State.WATCH and self.silence is None
        every = self.cfg.timeouts.heartbeat_every_s(self.cfg.role, steady)
        return self.state.value != last_phase or self.clock() - last_at >= every

    def export_metrics(self, force: bool = False) -> None:
        """Write the metrics textfile (:mod:`leader.metrics`) on a new phase and at most every
        ``metrics.textfile_interval_s``; a node-local write, never the share."""
        changed = self.metrics.observe(self.state.value, self.generation)
        now, last = self.clock(), self.metrics_written_at
        if not (force or changed or last is None or now - last >= self.cfg.metrics.textfile_interval_s):
            return
        self.metrics_written_at = now
        try:
            self.metrics.write(self.cfg.metrics_textfile)
        except OSError as err:
            log.warning("cannot write the metrics textfile", extra={"phase": self.state.value, "error": str(err)})

    def _heartbeat_loop(self) -> None:
        """The heartbeat thread's loop, run by :attr:`supervisor` (started again after an
        exception; an ``OSError`` from the share is only logged). The first run follows
        boot()'s beat; a run started again beats at once (the failed one's beat may be lost)."""
        restarted = self.supervisor.failures().get(HEARTBEAT_LOOP, 0) > 0
        last_at, last_phase = self.clock(), "" if restarted else self.state.value
        tick = min(1.0, self.cfg.timeouts.heartbeat_interval_s)
        while not self.stop_requested.wait(tick):
            if not self.heartbeat_due(last_at, last_phase):
                continue
            last_at, last_phase = self.clock(), self.state.value
            try:
                other = self.store.heartbeat(self.boot_id, self.cfg.role, last_phase, self.generation, self.etcd_index)
            except OSError as err:
                log.warning("heartbeat failed", extra={"phase": "heartbeat", "error": str(err)})
                other = None
            if other is not None:
                why = f"another machine (boot {other}) heartbeats as {self.cfg.node.name}: two nodes share one name"
                log.error(why, extra={"phase": "heartbeat"})
                self._event("duplicate_name", why, other_boot_id=other)


def follow_backoff_s(waited_s: float, first_s: float, max_s: float, jitter: Callable[[], float]) -> float:
    """The wait before a following worker's next look at the share: ``first_s`` doubling
    with every 2 s waited (``waited_s``) up to ``max_s``, then drawn between half of it and
    all of it with ``jitter()`` in [0, 1), so that many workers' polls spread out."""
    base = min(max_s, first_s * 2 ** (waited_s / 2.0))
    return base * (0.5 + 0.5 * jitter())


def _warm_imports() -> None:
    """Import the kubernetes client (~0.3 s) while we wait, not when the Node check needs it."""
    import kubernetes.client
    import kubernetes.config  # noqa: F401
