"""Prometheus metrics: Phylactery's ``GET /metrics`` (its own only) and the agent's
node_exporter textfile; every metric named here is in docs/metrics.md. ``promtool check
metrics`` runs on both in tests/integration/test_monitoring.py and on a live lab node in
tests/lab/test_machines.py."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

import core
from phylactery.app import make_app
from tests.unit.agent_fakes import Harness
from tests.unit.test_agent_states import joined_worker
from tests.unit.test_phylactery_http import make_phylactery

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def scrape(tmp_path: Path, agent_text: bytes = b"") -> tuple[int, str, str]:
    async def _run() -> tuple[int, str, str]:
        p = make_phylactery(tmp_path)
        p.generation = 3
        if agent_text:
            p.cfg.metrics_textfile.parent.mkdir(parents=True)
            p.cfg.metrics_textfile.write_bytes(agent_text)
        async with TestClient(TestServer(make_app(p))) as client:
            resp = await client.get("/metrics")  # no token: read-only, like /healthz
            return resp.status, resp.headers["Content-Type"], await resp.text()

    return asyncio.run(_run())


def test_phylactery_serves_its_metrics_without_a_token(tmp_path: Path) -> None:
    status, content_type, text = scrape(tmp_path)
    assert status == 200 and content_type.startswith("text/plain")
    got = samples(text)
    assert got["ek8s_phylactery_generation"] == 3
    assert got['ek8s_phylactery_info{node="control0",role="control"}'] == 1
    assert got["ek8s_haproxy_backends_up"] == 0  # no HAProxy in a unit test
    assert got['ek8s_phylactery_reloads_total{daemon="haproxy"}'] == 0
    assert got['ek8s_phylactery_prunes_total{outcome="pruned"}'] == 0
    assert got['ek8s_share_operations_total{kind="reads",process="phylactery"}'] >= 1


def test_phylactery_serves_each_family_once_and_not_the_agents(tmp_path: Path) -> None:
    h = joined_worker(tmp_path / "w")
    h.agent.export_metrics(force=True)
    _, _, text = scrape(tmp_path, h.cfg.metrics_textfile.read_bytes())
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)), "a family's # TYPE appears twice"
    got = samples(text)
    assert got["ek8s_phylactery_generation"] == 3
    assert not [k for k in got if k.startswith("ek8s_agent_") or 'process="agent"' in k], "node_exporter serves those"


def test_both_say_which_code_runs(tmp_path: Path) -> None:
    h = joined_worker(tmp_path / "w")
    h.agent.export_metrics(force=True)
    _, _, text = scrape(tmp_path)
    for exposition in (text, h.cfg.metrics_textfile.read_text()):
        (info,) = [f for f in text_string_to_metric_families(exposition) if f.name == "ek8s_build_info"]
        (sample,) = info.samples
        assert sample.value == 1 and sample.labels["version"] == core.__version__
        assert sample.labels["distribution"] == "kubeadm" and sample.labels["revision"] == core.revision()


def test_phylactery_says_how_many_members_and_how_often_it_snapshots(tmp_path: Path) -> None:
    async def _run() -> tuple[str, str]:
        p = make_phylactery(tmp_path)
        p.controllers.reconcile.last_result = {"members": ["control0", "control1", "control2"], "verify": "none"}
        async with TestClient(TestServer(make_app(p))) as client:
            unverified = await (await client.get("/metrics")).text()
            p.controllers.reconcile.last_result["verify"] = "cluster-ca-0123456789abcdef.pem"
            return unverified, await (await client.get("/metrics")).text()

    unverified, verified = asyncio.run(_run())
    assert samples(unverified)["ek8s_haproxy_checks_verified"] == 0
    got = samples(verified)
    assert got["ek8s_haproxy_checks_verified"] == 1
    assert got["ek8s_phylactery_members"] == 3
    assert got["ek8s_etcd_snapshot_interval_seconds"] == 60.0


def test_the_agent_writes_its_textfile_on_a_new_phase_and_counts_joins(tmp_path: Path) -> None:
    h = joined_worker(tmp_path)
    h.probes.node = True
    h.agent.export_metrics()
    path = h.cfg.metrics_textfile
    assert path.name == "ek8s.prom" and str(path).startswith(str(tmp_path / "roots" / "worker0"))
    assert path.stat().st_mode & 0o777 == 0o644
    got = samples(path.read_text())
    assert got['ek8s_agent_phase{phase="await-node"}'] == 1 and got['ek8s_agent_phase{phase="watch"}'] == 0
    assert got['ek8s_agent_join_duration_seconds_count{kind="join"}'] == 1
    assert got['ek8s_agent_join_duration_seconds_count{kind="rejoin"}'] == 0
    assert got['ek8s_agent_info{node="worker0",role="worker"}'] == 1
    assert got['ek8s_share_operations_total{kind="writes",process="agent"}'] >= 1
    before = path.stat().st_mtime_ns
    h.agent.export_metrics()  # same phase, within metrics.textfile_interval_s: not rewritten
    assert path.stat().st_mtime_ns == before
    h.cycle()
    h.agent.export_metrics()
    assert samples(path.read_text())['ek8s_agent_phase{phase="watch"}'] == 1
    assert not list(path.parent.glob(".*.tmp")), "written atomically"


def test_a_prune_before_a_join_counts_as_a_rejoin(tmp_path: Path) -> None:
    h = Harness(tmp_path, "worker0", role="worker")
    h.agent.metrics.on_event("pruned", {})
    h.agent.metrics.on_event("joined", {"kubeadm_s": 7.5})
    got = samples(h.agent.metrics.text().decode())
    assert got["ek8s_agent_prunes_total"] == 1
    assert got['ek8s_agent_join_duration_seconds_sum{kind="rejoin"}'] == 7.5


def test_every_metric_is_documented(tmp_path: Path) -> None:
    h = joined_worker(tmp_path / "w")
    h.agent.export_metrics(force=True)
    _, _, text = scrape(tmp_path)
    text += h.cfg.metrics_textfile.read_text()
    names = {f.name for f in text_string_to_metric_families(text)}
    doc = DOC.read_text()
    # The tables of what is served; names reserved for a later feature are in their own section.
    served = doc.split("## Reserved names")[0]
    documented = set(re.findall(r"^\| `(ek8s_[a-z_]+)`", served, re.M))
    # Families the scrape may leave out (no etcd member, no snapshot, no reconcile in a unit test).
    optional = {
        "ek8s_etcd_members",
        "ek8s_etcd_snapshot_age_seconds",
        "ek8s_phylactery_members",
        "ek8s_haproxy_checks_verified",
    }
    assert names - {d.removesuffix("_total") for d in documented} == set()
    assert {d.removesuffix("_total") for d in documented} - names <= optional
