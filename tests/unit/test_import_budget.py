"""The node agent's boot path imports only what it uses (issue 23, a lean agent): up to its
first share operation (``leader.cli`` and ``leader.boot``) nothing but the config and the
share store's libraries; the rest of the agent no Kubernetes client, aiohttp or asyncio, which
only later steps (a probe of the Node, a Phylactery, etcd's view) import when they run. The
start's time is a benchmark (scripts/bench_agent_start.py), not a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from leader.boot import announce, since_process_start_s
from tests.unit.agent_fakes import Harness, node_config, ready_generation

# Packages that are heavy to import (tens to hundreds of ms each) and not needed to boot.
LATER = ("kubernetes", "aiohttp", "urllib3", "asyncio", "cryptography", "jinja2", "ruamel")
# ... and, before the first share operation, neither the metrics nor the process tools, nor
# filelock (imported by the first lock the share store takes: core.share.ShareStore._file_lock).
NOT_BEFORE_FIRST_SHARE_OP = (*LATER, "prometheus_client", "psutil", "leader.agent", "core.drivers", "filelock")


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
    assert "pydantic" in loaded and "click" in loaded, "the probe sees imports (a test that can fail)"


def test_announce_writes_the_boot_and_an_announced_agent_does_not_write_it_again(tmp_path: Path) -> None:
    ready_generation(tmp_path / "share")
    h = Harness(tmp_path, "worker0", role="worker")  # boots by itself: announces as a unit test would
    assert len(h.events("boot")) == 1
    booted = announce(node_config(tmp_path, "worker0", role="worker"), h.store, "boot-worker0")
    boots = h.events("boot")
    assert len(boots) == 2 and boots[-1]["boot_id"] == "boot-worker0"
    assert 0 <= boots[-1]["first_share_op_s"] < 3600
    assert 0 < boots[-1]["first_share_op_cpu_s"] < 3600
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


# The share's records with a pydantic validator built after ``code``: their own
# (``__pydantic_complete__``) or the TypeAdapter core.records.parse made for them.
BUILT_RECORDS = """
import dataclasses, json, sys
import core.records, core.share
built = sorted(
    name
    for mod in (core.records, core.share)
    for name, v in vars(mod).items()
    if isinstance(v, type) and v.__module__ == mod.__name__ and dataclasses.is_dataclass(v)
    and (getattr(v, "__pydantic_complete__", False) or v in core.records._ADAPTERS)
)
print(json.dumps(built))
"""


def records_built_after(code: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\n{BUILT_RECORDS}"], capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out.splitlines()[-1]))


def test_the_boot_path_builds_no_record_validator_until_it_parses_one() -> None:
    """pydantic builds a record's schema when it is first used (core.records.RECORD,
    defer_build), so importing the share store builds none; parsing builds that one only."""
    assert records_built_after("import leader.cli, leader.boot") == []
    parsed = "from core.records import parse, HeartbeatRecord\n" + (
        'parse(HeartbeatRecord, b\'{"node": "w0", "boot_id": "b", "role": "worker", '
        '"phase": "elect", "generation": 0}\', \'heartbeats/w0\')'
    )
    assert records_built_after(parsed) == ["HeartbeatRecord"], "the probe sees a built record"


def test_a_worker_announcing_its_boot_builds_no_record_and_a_control_node_only_cluster_state(tmp_path: Path) -> None:
    for role, built in (("worker", []), ("control", ["ClusterState"])):
        node = tmp_path / role
        node.mkdir()
        (node / "node.yaml").write_text(
            f"role: {role}\nnode: {{name: {role}0, address: 10.0.0.41}}\n"
            f"share: {{path: {node / 'share'}}}\nroot: {node}\nservice_manager: process\n"
        )
        code = (
            "from core.config import load_config\nfrom leader.boot import announce\n"
            f"announce(load_config({str(node / 'node.yaml')!r}))"
        )
        assert records_built_after(code) == built, role


def test_a_worker_reaches_the_share_and_heartbeats_before_filelock_is_imported(tmp_path: Path) -> None:
    """The store makes its FileLocks when first taken: a worker's first share operations (its
    directories, its heartbeat) need none; its first event (events.lock) imports filelock."""
    code = f"""
import sys
from pathlib import Path
from core.share import ShareStore
store = ShareStore(Path({str(tmp_path)!r}), "default", "worker0", role="worker")
store.ensure()
store.heartbeat("boot-worker0", "worker", "elect", 0)
before = "filelock" in sys.modules
store.record_event("boot", 0, "booting")
print(before, "filelock" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
    assert (tmp_path / "default" / "nodes" / "heartbeats" / "worker0").is_file()


def test_the_agent_skips_pydantics_plugin_scan_unless_the_operator_sets_it() -> None:
    """``python -m leader`` sets PYDANTIC_DISABLE_PLUGINS before node.yaml's models are built,
    so pydantic never scans the installed distributions' entry points (its ``_plugins`` stays
    None); a value already in the environment is kept."""
    code = """
import os, runpy, sys
sys.argv = ["ek8s-node", "check", "/nonexistent/node.yaml"]
try:
    runpy.run_module("leader", run_name="__main__")
except SystemExit:
    pass
import pydantic.plugin._loader as loader
print(os.environ.get("PYDANTIC_DISABLE_PLUGINS"), loader._plugins is None)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert run.stdout.split() == ["__all__", "True"]
    env["PYDANTIC_DISABLE_PLUGINS"] = ""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert run.stdout.split() == ["False"], "the operator's (empty) value kept: the scan ran"
