"""The monitoring kit and the metrics against Prometheus' own checker, promtool (Debian's
``prometheus`` package, installed by ``make``): the alert rules (``check rules``), their unit
tests (``test rules``), the scrape configuration (``check config``), every query of the
Grafana dashboard (parsed as recording rules), and what the agent and Phylactery serve
(``check metrics``, which refuses a family's ``# TYPE`` twice and lints names). The same
check on a live lab node is in tests/lab/test_machines.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from phylactery.app import make_app
from tests.unit.test_agent_states import joined_worker
from tests.unit.test_phylactery_http import make_phylactery

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "warewulf_conf" / "monitoring"


def promtool(*args: str, stdin: str | None = None, cwd: Path = KIT) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is needed (Debian's prometheus package; `make test` installs it)"
    return subprocess.run([tool, *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_the_alert_rules_are_valid() -> None:
    res = promtool("check", "rules", "ek8s-alerts.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 12 rules found" in res.stdout


def test_the_alert_rules_pass_their_unit_tests() -> None:
    res = promtool("test", "rules", "ek8s-alerts.test.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: the snapshot alert at 30 intervals instead of 3 is caught."""
    for name in ("ek8s-alerts.yml", "ek8s-alerts.test.yml"):
        shutil.copy(KIT / name, tmp_path / name)
    rules = tmp_path / "ek8s-alerts.yml"
    threshold = "(ek8s_etcd_snapshot_interval_seconds > 0)) > 3\n"
    assert threshold in rules.read_text()
    rules.write_text(rules.read_text().replace(threshold, "(ek8s_etcd_snapshot_interval_seconds > 0)) > 30\n"))
    res = promtool("test", "rules", "ek8s-alerts.test.yml", cwd=tmp_path)
    assert res.returncode != 0 and "EK8sEtcdSnapshotTooOld" in res.stdout + res.stderr


def test_the_scrape_configuration_is_valid() -> None:
    res = promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    dash = json.loads((KIT / "grafana-ek8s.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    rules = [
        {"record": f"ek8s:dashboard_panel_{i}", "expr": e.replace("$cluster", "ek8s").replace("$__rate_interval", "2m")}
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = promtool("check", "rules", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in res.stdout


def phylactery_metrics(tmp_path: Path) -> str:
    async def _run() -> str:
        p = make_phylactery(tmp_path)
        p.controllers.reconcile.last_result = {"members": ["control0"]}
        async with TestClient(TestServer(make_app(p))) as client:
            return await (await client.get("/metrics")).text()

    return asyncio.run(_run())


@pytest.mark.parametrize("who", ["phylactery", "agent"])
def test_promtool_accepts_what_each_process_serves(tmp_path: Path, who: str) -> None:
    if who == "phylactery":
        text = phylactery_metrics(tmp_path)
    else:
        h = joined_worker(tmp_path)
        h.agent.export_metrics(force=True)
        text = h.cfg.metrics_textfile.read_text()
    res = promtool("check", "metrics", stdin=text)
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_refuses_a_family_served_twice(tmp_path: Path) -> None:
    """What Phylactery served before: its body and the agent's textfile, both with
    ek8s_share_operations_total."""
    h = joined_worker(tmp_path / "w")
    h.agent.export_metrics(force=True)
    res = promtool("check", "metrics", stdin=phylactery_metrics(tmp_path) + h.cfg.metrics_textfile.read_text())
    assert res.returncode != 0 and "ek8s_share_operations_total" in res.stdout + res.stderr
