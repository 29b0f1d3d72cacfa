"""The node agent's boot path imports only what it uses (issue 23, a lean agent): up to its
first share operation (``leader.cli`` and ``leader.boot``) nothing but the config and the
share store's libraries; the rest of the agent no Kubernetes client, aiohttp or asyncio, which
only later steps (a probe of the Node, a Phylactery, etcd's view) import when they run. The
start's time is a benchmark (scripts/bench_agent_start.py), not a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from leader.boot import announce, since_process_start_s
from tests.unit.agent_fakes import Harness, node_config, ready_generation

# Packages that are heavy to import (tens to hundreds of ms each) and not needed to boot.
LATER = ("kubernetes", "aiohttp", "urllib3", "asyncio", "cryptography", "jinja2", "ruamel")
# ... and, before the first share operation, neither the metrics nor the process tools.
NOT_BEFORE_FIRST_SHARE_OP = (*LATER, "prometheus_client", "psutil", "leader.agent", "core.drivers")


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def hits(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in modules))


def test_the_path_to_the_first_share_operation_imports_no_heavy_package() -> None:
    assert hits(loaded_after("import leader.cli, leader.boot"), NOT_BEFORE_FIRST_SHARE_OP) == []


def test_the_agent_imports_no_kubernetes_client_aiohttp_or_asyncio_until_it_needs_them() -> None:
    loaded = loaded_after("import leader.cli, leader.agent")
    assert hits(loaded, LATER) == []
    assert "pydantic" in loaded and "filelock" in loaded, "the probe sees imports (a test that can fail)"


def test_announce_writes_the_boot_and_an_announced_agent_does_not_write_it_again(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "worker0", role="worker")  # boots by itself: announces as a unit test would
    assert len(h.events("boot")) == 1
    booted = announce(node_config(tmp_path, "worker0", role="worker"), h.store, "boot-worker0")
    boots = h.events("boot")
    assert len(boots) == 2 and boots[-1]["boot_id"] == "boot-worker0"
    assert 0 <= boots[-1]["first_share_op_s"] < 3600
    assert booted.previous is not None and booted.previous.boot_id == "boot-worker0"
    h.agent.booted = booted
    h.agent.boot()
    assert len(h.events("boot")) == 2, "ek8s-node run announced it: boot() does not again"


def test_a_fresh_process_is_seconds_old() -> None:
    code = "from leader.boot import since_process_start_s as s; print(s())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0.0 < age < 30.0
    mine = since_process_start_s()
    assert mine is not None and mine > age, "this test process started before the one it ran"
