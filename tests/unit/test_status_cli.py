"""``ek8s status`` as a script sees it: exit 0 healthy, 1 degraded or not ready, 2 bad input;
``--wait`` returns once every node is Ready (exit 1 when it runs out of time); NODES narrows
the view; ``-o json|yaml``; the cluster from ``--cluster``, ``$EK8S_CLUSTER`` or the only one
on the share.

The share is a real directory and the API a real HTTP server on loopback answering
``GET /api/v1/nodes`` with a NodeList (the shape the Kubernetes API returns), which the
official client reads through the kubeconfig the leader wrote to the share; the same server
answers ``GET /v1/status`` as each control node's Phylactery (docs/phylactery.md), with etcd
members named as k3s names them (``<node>-<8 hex>``, the node beside).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from core.share import MemberRecord, ShareStore
from leader.election import rule_for
from manager.cli import cli

CONTROL = ["control0", "control1", "control2"]
WORKERS = ["worker0", "worker1"]


class FakeApi:
    """Node objects served as ``GET /api/v1/nodes``; ``ready`` says which are Ready."""

    def __init__(self, names: list[str]) -> None:
        self.ready = dict.fromkeys(names, True)
        self.calls = 0
        self.on_call: Callable[[int], None] = lambda _: None  # called with the count, before answering
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/v1/status":
                    self.answer(api.phylactery())
                    return
                if self.path.split("?")[0] != "/api/v1/nodes":
                    self.send_error(404)
                    return
                api.calls += 1
                api.on_call(api.calls)
                items = [
                    {
                        "metadata": {"name": name},
                        "status": {
                            "conditions": [{"type": "Ready", "status": "True" if ok else "False"}],
                            "addresses": [{"type": "InternalIP", "address": f"10.0.0.{21 + i}"}],
                        },
                    }
                    for i, (name, ok) in enumerate(sorted(api.ready.items()))
                ]
                self.answer({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": items})

            def answer(self, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.handler = Handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.tls_server: ThreadingHTTPServer | None = None

    def serve_phylactery(self, store: ShareStore) -> str:
        """The same answers over HTTPS with a server certificate of ``store``'s Phylactery CA
        for 127.0.0.1 (what ``ek8s status`` verifies); returns its URL."""
        from core.tls import issue_server_certificate, server_context

        cert, key = issue_server_certificate(store.read_phylactery_ca_pair(), "control0", "127.0.0.1")
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "tls.crt").write_bytes(cert)
            (Path(d) / "tls.key").write_bytes(key)
            ctx: ssl.SSLContext = server_context(f"{d}/tls.crt", f"{d}/tls.key")
        self.tls_server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self.tls_server.socket = ctx.wrap_socket(self.tls_server.socket, server_side=True)
        threading.Thread(target=self.tls_server.serve_forever, daemon=True).start()
        return f"https://127.0.0.1:{self.tls_server.server_address[1]}"

    def phylactery(self) -> dict[str, Any]:
        """A Phylactery ``GET /v1/status`` (the parts ``ek8s status`` reads)."""
        members = [{"name": f"{n}-1a2b3c4d", "node": n} for n in CONTROL]
        return {
            "etcd": {"members": members, "quorum": True, "error": None},
            "keepalived": {"vip_held": False},
            "haproxy": {"backends": [{"name": n, "status": "UP 1/3"} for n in CONTROL]},
        }

    def close(self) -> None:
        for server in (self.server, self.tls_server):
            if server is not None:
                server.shutdown()
                server.server_close()
        self.thread.join(5)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi(CONTROL + WORKERS)
    yield fake
    fake.close()


def formed(share: Path, api: FakeApi, cluster: str = "ek8s") -> ShareStore:
    """A ready generation 1 of 3 + 2 nodes in watch, a snapshot, the kubeconfig for ``api``."""
    store = ShareStore(share, cluster, "control0")
    store.ensure()
    store.ensure_credentials()
    phylactery_url = api.serve_phylactery(store)
    state, _, _ = store.attempt_leadership("10.0.0.21", "b-control0", rule_for("control", "control0", "b-control0", 30))
    fence = state.claim()
    assert fence is not None
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": api.url}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    store.write_admin_kubeconfig(fence, yaml.safe_dump(kubeconfig).encode())
    store.mark_ready(fence)
    for name in CONTROL + WORKERS:
        ShareStore(share, cluster, name).heartbeat(f"b-{name}", "control" if name in CONTROL else "worker", "watch", 1)
    for name in CONTROL:
        # Every Phylactery is the loopback stand-in: a member record's URL must name its address.
        store.register_member(MemberRecord(name, "127.0.0.1", phylactery_url, f"b-{name}", 1))
        ShareStore(share, cluster, name).record_incarnation(f"b-{name}", 1)
    store.save_snapshot(1, b"etcd snapshot", keep=2, revision=42, cluster_id=0xCAFE)
    return store


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def ek8s(*args: str, env: dict[str, str] | None = None) -> Ran:
    """``ek8s ARGS`` in this process (click's test runner: no terminal on stdin), for speed:
    the Kubernetes client is imported once, not per command."""
    res = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return Ran(res.exit_code, res.stdout, res.stderr)


def ek8s_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m manager ARGS``: the console entry point and its exit status, for real."""
    return subprocess.run(
        [sys.executable, "-m", "manager", *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_a_healthy_cluster_exits_0_and_a_not_ready_node_exits_1(tmp_path: Path, api: FakeApi) -> None:
    formed(tmp_path, api)
    ok = ek8s_process("status", "--share", str(tmp_path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "control[0-2]" in ok.stdout and "worker[0-1]" in ok.stdout  # folded, healthy
    api.ready["worker1"] = False
    bad = ek8s_process("status", "--share", str(tmp_path))
    assert bad.returncode == 1 and "not Ready" in bad.stdout and "worker1" in bad.stdout
    # Narrowed to the healthy ones, the verdict is theirs.
    assert ek8s("status", "--share", str(tmp_path), "control[0-2],worker0").returncode == 0
    assert ek8s("status", "--share", str(tmp_path), "worker1").returncode == 1


def test_a_generation_not_ready_or_an_api_that_does_not_answer_is_not_healthy(tmp_path: Path, api: FakeApi) -> None:
    store = formed(tmp_path, api)
    api.close()
    res = ek8s("status", "--share", str(tmp_path))
    assert res.returncode == 1 and "API behind the VIP: no" in res.stdout
    store.rebuild("test")
    assert ek8s("status", "--share", str(tmp_path)).returncode == 1


def test_a_name_that_never_reported_needs_attention(tmp_path: Path, api: FakeApi) -> None:
    formed(tmp_path, api)
    res = ek8s("status", "--share", str(tmp_path), "-o", "json", "worker[0-2]")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert [(n["name"], n["problem"]) for n in doc["nodes"]] == [
        ("worker0", None),
        ("worker1", None),
        ("worker2", "no heartbeat on the share"),
    ]
    assert doc["selected"] is True and doc["healthy"] is False


def test_json_yaml_and_wide(tmp_path: Path, api: FakeApi) -> None:
    formed(tmp_path, api)
    as_json = json.loads(ek8s("status", "--share", str(tmp_path), "--json").stdout)
    assert as_json.keys() == json.loads(ek8s("status", "--share", str(tmp_path), "-o", "json").stdout).keys()
    node = next(n for n in as_json["nodes"] if n["name"] == "control1")
    assert node["address"] == "10.0.0.22" and node["boot_id"] == "b-control1" and node["generation"] == 1
    assert as_json["healthy"] is True and as_json["ready"] is True and as_json["attention"] == []
    assert as_json["etcd_members"] == CONTROL  # by node, though k3s names members <node>-<8 hex>
    assert as_json["haproxy_backends_up"] == dict.fromkeys(CONTROL, 3)
    as_yaml = yaml.safe_load(ek8s("status", "--share", str(tmp_path), "-o", "yaml").stdout)
    assert as_yaml["cluster"] == "ek8s" and len(as_yaml["nodes"]) == 5
    wide = ek8s("status", "--share", str(tmp_path), "-o", "wide").stdout
    assert "BOOT ID" in wide and "b-worker1" in wide and "10.0.0.25" in wide


def test_wait_returns_once_every_node_is_ready(tmp_path: Path, api: FakeApi) -> None:
    formed(tmp_path, api)
    api.ready["worker0"] = False
    api.on_call = lambda n: api.ready.update(worker0=True) if n == 3 else None  # Ready at the third look
    res = ek8s("status", "--share", str(tmp_path), "--wait", "--interval", "0.2", "--timeout", "60")
    assert res.returncode == 0, res.stderr
    assert api.calls == 3
    assert "4/5 nodes Ready; waiting for worker0" in res.stderr  # a progress line while it waited
    assert "worker[0-1]" in res.stdout  # then the status, once


def test_wait_gives_up_with_exit_1(tmp_path: Path, api: FakeApi) -> None:
    formed(tmp_path, api)
    api.ready["control2"] = False
    res = ek8s("status", "--share", str(tmp_path), "--wait", "--interval", "0.2", "--timeout", "1")
    assert res.returncode == 1
    assert "not every node is Ready after 1s" in res.stderr and "control2" in res.stdout
    legacy = ek8s("status", "--share", str(tmp_path), "--watch", "--interval", "0.2", "--timeout", "0")
    assert legacy.returncode == 1 and "--watch is now --wait" in legacy.stderr


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["bad["], "NODES: 'bad[' is not a node name or hostlist"),
        (["-o", "xml"], "'-o' / '--output': 'xml' is not one of"),
        (["--interval", "0", "--wait"], "--interval must be above 0"),
    ],
)
def test_bad_input_exits_2_naming_it(tmp_path: Path, api: FakeApi, args: list[str], names: str) -> None:
    formed(tmp_path, api)
    res = ek8s("status", "--share", str(tmp_path), *args)
    assert res.returncode == 2 and names in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_the_cluster_is_named_found_alone_or_refused_with_the_list(tmp_path: Path, api: FakeApi) -> None:
    formed(tmp_path, api, "ek8s")
    assert ek8s("status", "--share", str(tmp_path)).returncode == 0  # the only one: no --cluster needed
    ShareStore(tmp_path, "lab", "x").ensure()
    several = ek8s("status", "--share", str(tmp_path))
    assert several.returncode == 2
    assert "holds several clusters (ek8s, lab): name one with --cluster or $EK8S_CLUSTER" in several.stderr
    assert ek8s("status", "--share", str(tmp_path), env={"EK8S_CLUSTER": "ek8s"}).returncode == 0
    assert ek8s("status", "--share", str(tmp_path), "--cluster", "ek8s").returncode == 0
    unknown = ek8s("status", "--share", str(tmp_path), "--cluster", "default")
    assert unknown.returncode == 2 and "no cluster 'default'" in unknown.stderr
    assert "clusters found: ek8s, lab" in unknown.stderr
    for command in ("kubeconfig", "events", "reset"):
        res = ek8s(command, "--share", str(tmp_path))
        assert res.returncode == 2 and "several clusters" in res.stderr, (command, res.stderr)
    empty = ek8s("status", "--share", str(tmp_path / "nothing"))
    assert empty.returncode == 1 and "is the share mounted?" in empty.stderr
