"""A Node's Ready condition read through the official client's ApiClient (core/probes.py),
against an HTTPS server on loopback that checks the client certificate as kube-apiserver does:
Ready, NotReady, 404, no answer; and without importing the generated CoreV1Api module."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import probes
from lab import pki
from tests.unit.https_stub import serve_https

NODES = {"worker0": "True", "worker1": "False"}


class _Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        name = self.path.removeprefix("/api/v1/nodes/")
        if name in NODES and self.headers.get("Accept") == "application/json":
            status = {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": NODES[name]}]
            }
            body, code = json.dumps({"kind": "Node", "metadata": {"name": name}, "status": status}).encode(), 200
        else:
            body, code = json.dumps({"kind": "Status", "code": 404, "reason": "NotFound"}).encode(), 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    with serve_https(_Api, tmp_path, client_certificates=True) as (_, url, ca):
        path = tmp_path / "kubelet.conf"
        user = pki.issue(ca, "system:node:worker0", orgs=("system:nodes",), client=True)
        path.write_bytes(pki.kubeconfig(url, ca[0], user, "system:node:worker0", "c"))
        yield path


def test_a_nodes_ready_condition_and_whether_it_exists(kubeconfig: Path, tmp_path: Path) -> None:
    assert probes.node_ready(kubeconfig, "worker0") is True
    assert probes.node_ready(kubeconfig, "worker1") is False
    assert probes.node_ready(kubeconfig, "worker9") is None
    assert probes.node_found(kubeconfig, "worker1") is True
    assert probes.node_found(kubeconfig, "worker9") is False
    assert probes.node_ready(tmp_path / "missing.conf", "worker0") is None


def test_no_answer_is_none(tmp_path: Path, kubeconfig: Path) -> None:
    text = kubeconfig.read_text()
    port = text.split("https://127.0.0.1:")[1].split()[0]
    dead = tmp_path / "dead.conf"
    dead.write_text(text.replace(f"https://127.0.0.1:{port}", "https://127.0.0.1:1"))
    assert probes.node_ready(dead, "worker0", timeout_s=1.0) is None
    assert probes.node_found(dead, "worker0", timeout_s=1.0) is None


def test_reading_a_node_does_not_import_the_generated_core_v1_api(kubeconfig: Path) -> None:
    code = (
        "import sys, json\nfrom pathlib import Path\nfrom core import probes\n"
        f"ready = probes.node_ready(Path({str(kubeconfig)!r}), 'worker0')\n"
        "print(json.dumps([ready, 'kubernetes.client.api.core_v1_api' in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == [True, False], out.stderr


def test_an_api_server_of_another_ca_is_told_from_ours_and_from_silence(tmp_path: Path) -> None:
    other = pki.new_ca("kubernetes")  # the generation before ek8s reset: another CA
    with serve_https(_Api, tmp_path) as (_, url, ca):
        port = int(url.rsplit(":", 1)[1])
        assert not probes.serves_another_ca("127.0.0.1", port, ca[0])
        assert probes.serves_another_ca("127.0.0.1", port, other[0])
    # Nothing listens there any more, or a listener never completes TLS (still starting):
    # neither proves a server of another CA.
    assert not probes.serves_another_ca("127.0.0.1", port, other[0])
    with socket.create_server(("127.0.0.1", 0)) as silent:
        assert not probes.serves_another_ca("127.0.0.1", silent.getsockname()[1], other[0], timeout_s=0.2)
