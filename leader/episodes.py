"""The agent's episodes: what it remembers about one leader term, one join, one held join
slot, one silence of the API and one pending reset, each as one record.

A record is replaced whole when its episode starts (``agent.join = JoinEpisode()``) and
dropped (``agent.silence = None``) when it ends, instead of resetting its fields one by one
at each transition (issue 19 point 7). Fields that change within an episode (a counter, a
flag recorded once per episode) are plain attributes; the agent (:mod:`leader.agent`) is the
only writer. docs/architecture.md, "The agent's episodes", lists when each starts and ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.drivers import Credentials, InitResult
from core.share import Fence
from leader.states import State


@dataclass
class LeaderTerm:
    """This node leads a generation that is not ready yet. Starts when the election makes it
    the leader (``leader_claimed``; ELECT -> LEAD); ends (``Agent.term = None``) when the
    generation is ready (join material published), when it is deposed, or when a new
    generation replaces it. A failed init keeps the term until the next claim replaces it:
    its fence is what ``shutdown`` releases.

    ``fence``: the claim (generation, epoch) every share write of the term is checked
    against, None when the share's claim did not return one (the next LEAD cycle deposes);
    ``credentials``: the bootstrap token and certificate key made for this init;
    ``init_result``: what the driver's init returned (CA, admin kubeconfig);
    ``kubeadm_s``: seconds the init job took; ``api_seen``: the API answered behind the VIP;
    ``publishing``: the publish job was started; ``others_since``: when (agent clock) API
    servers of another CA were first found at other control nodes' addresses, None while
    none were (publishing waits for them, bounded)."""

    fence: Fence | None
    credentials: Credentials | None = None
    init_result: InitResult | None = None
    kubeadm_s: float = 0.0
    api_seen: bool = False
    publishing: bool = False
    others_since: float | None = None


@dataclass
class JoinEpisode:
    """This node's way into a ready generation, over attempts. Starts when the election says
    join (ELECT -> JOIN: ``JoinEpisode()``; leading starts an empty one too, so that a leader
    that joined an earlier generation is not taken for a joiner) or when this node must rejoin after its Node or
    etcd member was removed or its member's data was declared lost
    (``JoinEpisode(must_prune=True)``, then RESET -> JOIN); ends when the next one replaces
    it. A join that succeeds keeps it: a Node that is not Ready in time fails attempt
    ``attempt`` of the same episode.

    ``attempt``: the last attempt started (0: none yet; AWAIT_NODE takes 0 for the leader);
    ``pruned_for``: the attempt the last prune was made for (a prune runs once per attempt);
    ``must_prune``: prune before the first attempt too (the member was removed)."""

    attempt: int = 0
    pruned_for: int = 0
    must_prune: bool = False


@dataclass
class JoinSlot:
    """A join slot this node holds on the share: the control-plane slot (one control node
    joins at a time) or one of the workers' slots. Starts when the share grants it; ends
    (``Agent.slot = None``) when the agent gives it back (``Agent._release_slot``: after a
    control node's join, once a worker's Node is Ready, on a reset, a new generation or a
    stop). ``admission_judged``: a worker reported this slot's ``/readyz`` probe to the
    join admission window (:mod:`core.admission`), once per slot."""

    admission_judged: bool = False


@dataclass
class Silence:
    """The API of the agent's generation does not answer. Starts at the first probe behind the
    VIP that gets no answer; ends (``Agent.silence = None``) when the API answers again (the
    probe behind the VIP, a worker's admission probe, the Node check), when a new generation
    replaces the agent's (silence is judged per generation), when this node started a new
    generation for a lost cluster, or when its etcd re-form finished.

    ``since``: the agent's clock (monotonic seconds) at the start; ``waiting_reported``:
    ``recovery_waiting`` was recorded in this silence (once); ``etcd_index``: the raft index
    of this node's etcd member, reported in its heartbeats while etcd has no quorum (the
    survivors compare them to choose who re-forms etcd, :func:`core.recovery.reformer`),
    None while etcd has quorum."""

    since: float
    waiting_reported: bool = False
    etcd_index: int | None = None


@dataclass(frozen=True)
class PendingReset:
    """The driver's reset runs (state RESET). Starts with the reset (``Agent._reset``);
    ends when the agent enters ``then`` after ``resume_at`` (the agent's clock, seconds:
    the reset's start plus its backoff)."""

    then: State
    resume_at: float
