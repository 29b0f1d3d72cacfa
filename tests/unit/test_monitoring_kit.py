"""The monitoring kit in warewulf_conf/monitoring (docs/metrics.md): the alert rules and the
Grafana dashboard name only metrics that exist (documented in docs/metrics.md, or
node_exporter's and Prometheus' own), and the dashboard is well formed. promtool checks the
rules, their unit tests and every panel's query in tests/integration/test_monitoring.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "warewulf_conf" / "monitoring"
DOC = ROOT / "docs" / "metrics.md"
NOT_OURS = {"up", "node_textfile_mtime_seconds"}  # Prometheus' and node_exporter's


def documented() -> set[str]:
    """Every ``ek8s_*`` family named in a table of docs/metrics.md (served or reserved)."""
    names = set(re.findall(r"^\| `(ek8s_[a-z_]+)`", DOC.read_text(), re.M))
    return names | {n.removesuffix("_total") for n in names}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers followed by ``{`` or that are ek8s's."""
    found = set(re.findall(r"\b([a-z_:][a-z0-9_:]*)\s*\{", expr)) | set(re.findall(r"\b(ek8s_[a-z0-9_]+)", expr))
    functions_and_keywords = {"by", "without", "on", "ignoring", "group_left", "group_right"}
    return found - functions_and_keywords


def family(name: str) -> str:
    """A histogram's series (``_bucket``, ``_sum``, ``_count``) belong to their family."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and base in documented():
            return base
    return name


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((KIT / "ek8s-alerts.yml").read_text())
    return [r for group in doc["groups"] for r in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads((KIT / "grafana-ek8s.json").read_text())


def panel_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_the_rules_cover_what_the_operators_asked_for() -> None:
    exprs = " ".join(r["expr"] for r in rules())
    for needed in (
        'ek8s_agent_phase{phase="watch"}',  # a phase stuck too long
        "ek8s_etcd_snapshot_age_seconds",  # newest snapshot older than 3 intervals
        "ek8s_haproxy_backends_up < ek8s_phylactery_members",  # HAProxy backends UP < control nodes
        "ek8s_haproxy_checks_verified == 0",  # HAProxy routes to servers it does not verify
        "ek8s_etcd_members != ek8s_phylactery_members",  # etcd members != control nodes
        "ek8s_agent_join_failures_total",
        "ek8s_loop_failures_total",
    ):
        assert needed in exprs, needed
    for r in rules():
        assert r["alert"].startswith("EK8s") and r["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description"} <= set(r["annotations"])


def test_rules_and_panels_name_only_metrics_that_exist() -> None:
    known = documented() | NOT_OURS
    for expr in [r["expr"] for r in rules()] + panel_exprs():
        unknown = {family(n) for n in metric_names(expr)} - known
        assert not unknown, f"{expr}: {unknown} not in docs/metrics.md"


def test_the_dashboard_is_well_formed() -> None:
    d = dashboard()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert {v["name"] for v in d["templating"]["list"]} == {"datasource", "cluster"}
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for t in p.get("targets", []):
            assert t["datasource"]["uid"] == "${datasource}" and 'cluster="$cluster"' in t["expr"], p["title"]
    assert len(panel_exprs()) >= 15
