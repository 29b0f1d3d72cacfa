"""EMULATED kubeadm's workflow (lab only): a command is an ordered list of phases, as in
kubeadm's ``cmd/kubeadm/app/cmd/phases/workflow`` (``phase.go``, ``runner.go``).

A :class:`Phase` has a name, a ``run`` and a ``run_if``, and may hold sub-phases; its full
name is the path of names (``control-plane-prepare/download-certs``). :class:`Runner` visits
the phases depth-first in order, as ``Runner.Run`` does: a phase named in ``--skip-phases``
(or under a skipped parent) is left out with its sub-phases; a ``run_if`` that says no skips
only that phase's own ``run``; an error escaping ``run`` becomes
``error execution phase <full name>: <error>``. A behaviour that differs by Kubernetes version
is a phase entry whose ``run_if`` asks :mod:`core.versions` (``control-plane-join/etcd`` in
1.32, ``etcd-join`` from 1.33 on).

Also here: the output helpers every phase uses (kubeadm's progress lines on stdout, klog
verbosity lines, klog warnings on stderr) and :class:`Timings`, the seconds spent per phase
that the lab's benchmark reads.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from lab import emulation
from lab.nodekit import ToolError


class KubeadmError(ToolError):
    """A refusal or failure inside a phase; the runner wraps it as ``error execution phase
    <phase>: <message>`` (:class:`PhaseError`)."""


class PhaseError(KubeadmError):
    """An error that escaped a phase's ``run``: ``phase`` is the full phase name, ``cause``
    the error; ``str()`` is kubeadm's ``error execution phase <phase>: <cause>``."""

    def __init__(self, phase: str, cause: BaseException) -> None:
        super().__init__(f"error execution phase {phase}: {cause}")
        self.phase = phase
        self.cause = cause


D = TypeVar("D")


@dataclass(frozen=True)
class Phase(Generic[D]):
    """One workflow phase (``workflow.Phase``): ``name``; ``run(data)`` (None for a phase
    that only groups sub-phases); ``run_if(data)``, asked before ``run`` (None: always);
    ``phases``, its sub-phases, run after its own ``run``; ``hidden`` as kubeadm hides a
    deprecated or experimental phase from ``--help`` (it still runs)."""

    name: str
    run: Callable[[D], None] | None = None
    run_if: Callable[[D], bool] | None = None
    phases: tuple[Phase[D], ...] = ()
    hidden: bool = False


@dataclass
class Runner(Generic[D]):
    """Runs ``phases`` over one data object (``workflow.Runner``). ``skip`` holds full phase
    names (``--skip-phases``, or the configuration's ``skipPhases``); ``ran`` and ``skipped``
    record what happened, in order, for tests and logs."""

    phases: tuple[Phase[D], ...]
    skip: frozenset[str] = frozenset()
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def visit(self) -> Iterator[tuple[str, Phase[D], bool]]:
        """(full name, phase, selected) depth-first, as ``visitAll``; a phase is not selected
        when it or a parent is in :attr:`skip`."""

        def walk(prefix: str, phases: tuple[Phase[D], ...], parent_on: bool) -> Iterator[tuple[str, Phase[D], bool]]:
            for p in phases:
                full = f"{prefix}{p.name}"
                on = parent_on and full not in self.skip
                yield full, p, on
                yield from walk(full + "/", p.phases, on)

        yield from walk("", self.phases, True)

    def run(self, data: D) -> None:
        """Run every selected phase. Raises :class:`PhaseError` for the first error a phase's
        ``run`` raises (:class:`KubeadmError`, ``OSError``, ``KeyError`` or an etcd error:
        anything the caller catches), with that phase's full name."""
        for full, p, on in self.visit():
            if not on:
                self.skipped.append(full)
                continue
            if p.run_if is not None and not p.run_if(data):
                self.skipped.append(full)
                continue
            if p.run is None:
                continue
            try:
                p.run(data)
            except PhaseError:
                raise
            except Exception as err:
                raise PhaseError(full, err) from err
            self.ran.append(full)
            TIMINGS.mark(full)


# -- output ------------------------------------------------------------------------------
def with_etcd_errors(*errors: type[Exception]) -> tuple[type[Exception], ...]:
    """``errors`` and :class:`core.etcd.EtcdError` once :mod:`core.etcd` is imported (else
    ``errors`` alone): what an ``except`` clause names so the commands that never talk to
    etcd (a worker's join, token and certificate commands) do not import it (its aiohttp
    costs ~0.1-0.25 CPU-s per process). No ``EtcdError`` can be raised before its module is
    imported, so nothing escapes."""
    module = sys.modules.get("core.etcd")
    return (*errors, module.EtcdError) if module is not None else errors


def say(msg: str) -> None:
    """One line of progress on stdout, flushed (the driver logs kubeadm's output as it comes)."""
    print(msg, flush=True)


def klog(level: int, msg: str) -> None:
    """A line kubeadm logs only at ``--v=<level>`` or higher (klog ``V(level).Info``); printed
    here always, marked with its level, so the lab's logs show what kubeadm decided."""
    print(f"[v={level}] {msg}", flush=True)


def warn(msg: str, source: str) -> None:
    """A klog warning as kubeadm prints it on stderr (``W<MMDD> <time> <pid> <file>] msg``;
    klog adds the line number, which the emulation does not pretend to know)."""
    t = time.time()
    stamp = time.strftime("%m%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1e6):06d}"
    print(f"W{stamp} {os.getpid():>7} {source}] {msg}", file=sys.stderr, flush=True)


# -- timings -----------------------------------------------------------------------------
class Timings:
    """Seconds spent per phase of one emulated command, appended as a JSON line to
    ``timings.jsonl`` beside ``$EK8S_EMULATION`` (the lab's benchmark reads it)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Start over, from the start of the process the caller started
        (:func:`lab.emulation.process_pid`; a fork server's child calls it through
        :func:`lab.emulation.at_start`, as it starts with its server's)."""
        self.started = emulation.process_started()
        self.last = time.time()
        self.phases: dict[str, float] = {"python_start": round(self.last - self.started, 3)}
        self.node = ""

    def mark(self, name: str) -> None:
        """Charge the seconds since the last mark to phase ``name`` (added up if repeated)."""
        now = time.time()
        self.phases[name] = round(self.phases.get(name, 0.0) + now - self.last, 3)
        self.last = now

    def save(self, command: str, ok: bool) -> None:
        """Append ``{t, started, node, command, ok, phases}`` to ``timings.jsonl`` beside the
        file ``$EK8S_EMULATION`` names (``t`` and ``started``, the process's start, in Unix
        seconds); nothing without it. Raises ``OSError``."""
        path = os.environ.get(emulation.ENV)
        if not path:
            return
        line = {"t": time.time(), "started": self.started, "node": self.node, "command": command, "ok": ok}
        line["phases"] = self.phases
        with open(Path(path).parent / "timings.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")

    def pad_to(self, total_s: float, command: str) -> None:
        """Make this command last ``total_s`` seconds in all (the emulation's own work
        included), as a measured kubeadm duration includes pulling images and starting
        components."""
        remaining = total_s - (time.time() - self.started)
        if remaining > 0:
            say(f"[emulation] kubeadm {command} is set to take {total_s:g}s; waiting {remaining:.2f}s more")
            time.sleep(remaining)
            self.mark("emulated_duration_pad")


TIMINGS = Timings()
emulation.at_start(TIMINGS.restart)
