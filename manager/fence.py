"""``ek8s fence serve``: the Warewulf server proves silent control nodes down by power-cycling them.

The Pacemaker/STONITH pattern (docs/recovery.md, "Fencing"): a survivor that holds etcd data
but cannot act because members are only silent (they may serve behind a partition) files a
fence request on the share (``fence-requests/<node>.json``, with ``fencing: warewulf-power``).
This service, on the Warewulf server where the share is local, looks every ``interval_s``;
for each request whose node is still silent in the incarnation named, it power-cycles the node
through Warewulf's own power control (``wwctl power cycle NODE``: IPMI settings from Warewulf's
registry; the ``power_command`` is a template with ``{node}``), waits for it to succeed, and
only then writes the fence record (``losses/<node>.json``, ``kind: fenced``, who and how) and a
``node_fenced`` event. A request whose node heartbeats again from that boot, or whose loss is
already proven, is dropped unfenced; a failed power command is recorded (``fence_failed``) and
tried again ``retry_s`` later (not at every turn: a BMC that does not answer would otherwise
flood the events with one failure a second). After the power cycle the node's RAM (its etcd data) is gone: the
record is the truth, not a guess.

``ek8s warewulf apply`` runs it as the systemd unit :func:`unit_name` (``ek8s-fence@<cluster>.service``,
the text of :func:`unit_text`) when the inventory sets ``fencing: warewulf-power``, one instance
per cluster on the server, and stops and removes it when the inventory no longer does.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from core import recovery
from core.logs import get_logger
from core.share import LossProof, ShareStore

log = get_logger("ek8s.fence", "fence")
POWER_COMMAND = "wwctl power cycle {node}"
POWER_TIMEOUT_S = 120.0
RETRY_S = 10.0


def unit_name(cluster: str) -> str:
    """The fence service's systemd unit for ``cluster``: an instance of ``ek8s-fence@``, one per
    cluster on the server (each serves its own share tree)."""
    return f"ek8s-fence@{cluster}.service"


def ek8s_argv() -> tuple[str, ...]:
    """How the unit starts ``ek8s``: the ``ek8s`` on ``$PATH`` (absolute, as systemd wants
    ``ExecStart``), else this interpreter with ``-m manager`` (a run from a source tree)."""
    found = shutil.which("ek8s")
    return (str(Path(found).absolute()),) if found else (sys.executable, "-m", "manager")


def _exec_word(word: str) -> str:
    """One ``ExecStart`` word: shell-quoted where needed (systemd.syntax(7) takes single and
    double quotes), ``%`` doubled (systemd.unit(5) specifiers) and ``$`` doubled
    (systemd.service(5): ``$$`` is a literal dollar)."""
    return shlex.quote(word).replace("%", "%%").replace("$", "$$")


def unit_text(cluster: str, share: Path, ek8s: tuple[str, ...], lease_ttl_s: float = 30.0) -> str:
    """The text of :func:`unit_name`'s unit file: ``ek8s fence serve --cluster C --share S``
    restarted whenever it stops (it must be there when a survivor asks), after the network and
    ``warewulfd`` (whose ``wwctl power`` it runs). ``lease_ttl_s``: the nodes'
    ``timeouts.lease_ttl_s`` (seconds; the inventory keeps the default, 30 s)."""
    argv = (*ek8s, "fence", "serve", "--cluster", cluster, "--share", str(share), "--lease-ttl", f"{lease_ttl_s:g}")
    return (
        f"# Written by `ek8s warewulf apply` for cluster {cluster} (inventory: fencing: warewulf-power);\n"
        "# the next apply overwrites changes, and removes the unit when fencing is off.\n"
        "[Unit]\n"
        f"Description=ek8s fencing of cluster {cluster}: power-cycle silent control nodes on request\n"
        "Documentation=https://github.com/ephemeral-k8s/ephemeral-k8s/blob/main/docs/recovery.md#fencing\n"
        "Wants=network-online.target\n"
        "After=network-online.target warewulfd.service\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={' '.join(_exec_word(a) for a in argv)}\n"
        "Restart=always\n"
        "RestartSec=5\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def unit_state(systemctl: str, cluster: str) -> tuple[bool, bool] | None:
    """(enabled, active) of the cluster's fence unit, from ``systemctl is-enabled`` and
    ``is-active`` (exit 0 each: yes); None when ``systemctl`` cannot be run (no systemd)."""
    name = unit_name(cluster)
    try:
        enabled, active = (
            subprocess.run([systemctl, verb, name], capture_output=True, timeout=30, check=False).returncode == 0
            for verb in ("is-enabled", "is-active")
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return enabled, active


class FenceService:
    """The fence service of ``store``'s cluster. ``power_command``: the template run per node
    (``{node}`` replaced; split like a shell word list, run without a shell); ``lease_ttl_s``:
    how long a node must be silent to be fenced (the nodes' ``timeouts.lease_ttl_s``);
    ``retry_s``: seconds before a node whose power command failed is tried again."""

    def __init__(
        self,
        store: ShareStore,
        power_command: str = POWER_COMMAND,
        lease_ttl_s: float = 30.0,
        timeout_s: float = POWER_TIMEOUT_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self.store = store
        self.power_command = power_command
        self.lease_ttl_s = lease_ttl_s
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        # node -> time.monotonic() before which a failed node is not tried again
        self.retry_at: dict[str, float] = {}
        self.by = f"ek8s-fence@{socket.gethostname()}"

    def argv(self, node: str) -> list[str]:
        """The power command for ``node`` as an argument list."""
        return [a.replace("{node}", node) for a in shlex.split(self.power_command)]

    def serve_once(self) -> list[str]:
        """One turn over the filed requests; returns a sentence per request handled. Raises
        ``OSError``/:class:`core.share.ShareError` when the share does not answer."""
        requests = self.store.fence_requests()
        if not requests:
            return []
        said = []
        generation = self.store.read_state().generation
        a = recovery.assess_share(self.store, generation, self.lease_ttl_s)
        for node, req in sorted(requests.items()):
            inc = a.incarnations.get(node)
            same = inc is not None and (inc.boot_id, inc.generation, inc.at) == (
                req.boot_id,
                req.generation,
                req.incarnation_at,
            )
            fate = a.fates.get(node)
            if not same or fate is not recovery.Fate.SILENT:
                why = "no longer its current incarnation" if not same else f"it is {a.proof_of(node)}"
                self.store.remove_fence_request(node)
                said.append(f"{node}: not fenced, {why}; request dropped")
                continue
            if time.monotonic() < self.retry_at.get(node, 0.0):
                continue  # its last power command failed; said then, tried again later
            said.append(self._fence(req.node, req.boot_id, req.generation, req.incarnation_at, req.requested_by))
        for line in said:
            log.info(line)
        return said

    def _fence(self, node: str, boot_id: str, generation: int, incarnation_at: float, requested_by: str) -> str:
        argv = self.argv(node)
        started = time.monotonic()
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False)
            failed = f"exited {res.returncode}: {res.stderr.strip()[-200:]}" if res.returncode else ""
        except subprocess.TimeoutExpired:
            failed = f"did not finish within {self.timeout_s:.0f}s"
        except OSError as err:
            failed = err.strerror or str(err)
        how = " ".join(argv)
        if failed:
            self.retry_at[node] = time.monotonic() + self.retry_s
            why = f"fencing {node} failed: {how} {failed}; trying again in {self.retry_s:g}s"
            self.store.record_event("fence_failed", generation, why, target=node)
            return why
        proof = LossProof(
            node=node,
            boot_id=boot_id,
            generation=generation,
            incarnation_at=incarnation_at,
            kind="fenced",
            by=self.by,
            how=how,
            at=time.time(),
            reason=f"requested by {requested_by}",
        )
        self.retry_at.pop(node, None)
        self.store.record_loss(proof)
        self.store.remove_fence_request(node)
        why = f"fenced {node} ({how}, {time.monotonic() - started:.1f}s), requested by {requested_by}"
        self.store.record_event("node_fenced", generation, why, target=node, requested_by=requested_by)
        return why

    def serve(self, interval_s: float = 1.0) -> None:
        """:meth:`serve_once` every ``interval_s`` until interrupted; a share that does not
        answer is logged and the next turn tries again."""
        from core.share import ShareError

        while True:
            try:
                self.serve_once()
            except (OSError, ShareError) as err:
                log.warning("cannot read the share", extra={"error": str(err)})
            time.sleep(interval_s)
