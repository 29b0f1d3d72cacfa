"""Helpers every tier shares. The tiers (docs/architecture.md):

* ``tests/unit/`` - no root, no daemons: decisions, renderers, the store on a temp dir, config;
* ``tests/integration/`` - root, real etcd, HAProxy, keepalived, and the tools the project
  drives (Go for Warewulf's templates, shellcheck, vagrant);
* ``tests/lab/`` - root, whole lab clusters in network namespaces.

Every process a fixture starts is stopped and every file it made is removed, also when the
test fails. Network traffic stays on loopback (127.0.0.0/8) or inside namespaces the tests
create themselves.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(check, timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not true after {timeout_s}s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Remember each phase's outcome on the item, so fixtures can keep logs of failed tests."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def keep_logs_if_failed(request: pytest.FixtureRequest, lab_dir: Path, dest: Path) -> None:
    """Copy a lab's logs next to the test's tmp files when the test failed (before `down`)."""
    rep = getattr(request.node, "rep_call", None)
    if rep is None or not rep.failed:
        return
    keep_logs(lab_dir, dest)


def keep_logs(lab_dir: Path, dest: Path) -> None:
    """Copy a lab's logs and the share's events to ``<dest>/lab-logs`` (before `down` removes
    them); nothing when the lab is gone."""
    if not lab_dir.exists():
        return
    for log in list(lab_dir.glob("logs/*.log")) + list(lab_dir.glob("nodes/*/var/log/ek8s/*.log")):
        target = dest / "lab-logs" / log.relative_to(lab_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, target)
    for events in (lab_dir / "share/default").glob("events.jsonl*"):  # with its rotated files
        (dest / "lab-logs").mkdir(parents=True, exist_ok=True)
        shutil.copy(events, dest / "lab-logs" / events.name)
    print(f"lab logs kept in {dest / 'lab-logs'}")
