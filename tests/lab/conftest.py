"""Lab tier: whole lab clusters in network namespaces (root, the real daemons)."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import netns, runners
from lab.cluster import Lab, LabError
from tests.conftest import keep_logs_if_failed
from tests.integration.conftest import require_root_and_tools
from tests.lab.kit import gone, lab_cgroups, lab_processes


@pytest.fixture(autouse=True, scope="session")
def _root_and_tools() -> None:
    require_root_and_tools()


def keep_journals_if_failed(request: pytest.FixtureRequest, lab: Lab, dest: Path) -> None:
    """A failed test on machines: each running machine's journal of this boot
    (``journalctl -b`` inside) to ``<dest>/lab-logs/<node>.journal``, before ``down`` takes
    the machines' RAM roots away."""
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed:
        return
    keep_journals(lab, dest)


def keep_journals(lab: Lab, dest: Path) -> None:
    """Each running machine's journal of this boot to ``<dest>/lab-logs/<node>.journal``;
    nothing for a lab of processes or one that is gone."""
    try:
        state = lab.load()
    except (LabError, ValueError, TypeError):
        return
    if state.mode != runners.MACHINES:
        return
    (dest / "lab-logs").mkdir(parents=True, exist_ok=True)
    for node in state.nodes:
        with contextlib.suppress(runners.RunnerError, subprocess.TimeoutExpired):
            argv = lab.runner(state).exec_argv(state, node, ["journalctl", "-b", "--no-pager", "-o", "short-precise"])
            with open(dest / "lab-logs" / f"{node.name}.journal", "wb") as out:
                subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=60)


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    """An empty lab under ``/run/<prefix>-<random>``, the prefix from the module's
    ``LAB_PREFIX`` (namespaces ``<prefix>-*``), for either mode. Taken down after the test,
    failed or not (its logs, and a machine's journal, kept beside the test's tmp files when it
    failed); nothing of it may remain: no namespace, process, mount, cgroup or file."""
    prefix = getattr(request.module, "LAB_PREFIX", "ek8sl")
    the_lab = Lab(Path(f"/run/{prefix}-{uuid.uuid4().hex[:8]}"), prefix)
    try:
        yield the_lab
    finally:
        keep_journals_if_failed(request, the_lab, tmp_path)
        keep_logs_if_failed(request, the_lab.dir, tmp_path)
        procs = the_lab.processes(the_lab.load()) if the_lab.state_path.exists() else []
        the_lab.down()
        assert gone(procs) == []
        assert netns.existing(prefix) == []
        assert lab_processes(the_lab.dir) == []
        assert lab_cgroups(prefix) == []
        assert str(the_lab.dir) not in Path("/proc/self/mountinfo").read_text()
        assert not the_lab.dir.exists()
