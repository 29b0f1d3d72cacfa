"""The emulated kubelet keeps one HTTPS connection to the API as the real one does
(lab/kubelet.py ApiConnection): status updates reuse it (no TLS handshake each), a
connection the server closed is replaced and the request sent once more, and an API that
does not answer is an ``OSError`` (what the status loop logs and retries)."""

from __future__ import annotations

import http.server
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.kubelet import ApiConnection
from tests.unit.https_stub import serve_https


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    connections = 0
    requests: list[str]
    close_after_first = False


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the API server's

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # type: ignore[attr-defined]

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        if self.server.close_after_first:  # type: ignore[attr-defined]
            self.send_header("Connection", "close")
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[_Server, ssl.SSLContext]]:
    with serve_https(_Handler, tmp_path, server_class=_Server) as (server, _, ca):
        assert isinstance(server, _Server)
        server.requests = []
        yield server, ssl.create_default_context(cadata=ca[0].decode())


def test_status_updates_reuse_one_connection(api: tuple[_Server, ssl.SSLContext]) -> None:
    server, ctx = api
    conn = ApiConnection(f"https://127.0.0.1:{server.server_address[1]}", ctx)
    assert conn.request("POST", "/api/v1/nodes", {"metadata": {"name": "w0"}}) == 200
    for _ in range(5):
        assert conn.request("PUT", "/api/v1/nodes/w0/status", {"status": {}}) == 200
    assert server.connections == 1
    assert server.requests == ["/api/v1/nodes"] + ["/api/v1/nodes/w0/status"] * 5
    conn.close()


def test_a_connection_the_server_closed_is_replaced(api: tuple[_Server, ssl.SSLContext]) -> None:
    server, ctx = api
    server.close_after_first = True
    conn = ApiConnection(f"https://127.0.0.1:{server.server_address[1]}", ctx)
    assert conn.request("PUT", "/api/v1/nodes/w0/status", {"status": {}}) == 200
    assert conn.request("PUT", "/api/v1/nodes/w0/status", {"status": {}}) == 200
    assert server.connections == 2 and len(server.requests) == 2


def test_an_api_that_does_not_answer_is_an_oserror() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    conn = ApiConnection(f"https://127.0.0.1:{port}", ssl.create_default_context())
    with pytest.raises(OSError):
        conn.request("PUT", "/api/v1/nodes/w0/status", {"status": {}}, timeout=1)
    assert conn.conn is None


def test_a_manifest_is_read_again_only_when_it_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the real kubelet re-reads on inotify events: an unchanged file is not parsed again
    each pass, a rewritten one is, and a hidden one never (lab/kubelet.py StaticPods)."""
    import yaml

    from core.fileperm import write_atomic
    from lab import kubelet
    from lab.kubeadm.controlplane import static_pod

    manifests = tmp_path / "manifests"
    manifests.mkdir()
    reads: list[str] = []
    real = kubelet.read_manifest
    monkeypatch.setattr(kubelet, "read_manifest", lambda path, node: reads.append(path.name) or real(path, node))
    pods = kubelet.StaticPods(manifests, tmp_path, "n1")
    write_atomic(manifests / "etcd.yaml", yaml.safe_dump(static_pod("etcd", ["sleep", "1"], {}, {})))
    sig = pods.signature()
    assert pods.desired()["etcd"].argv == ("sleep", "1")
    assert pods.desired()["etcd"].argv == ("sleep", "1")
    assert reads == ["etcd.yaml"] and pods.signature() == sig
    write_atomic(manifests / "etcd.yaml", yaml.safe_dump(static_pod("etcd", ["sleep", "2"], {}, {})))
    assert pods.signature() != sig
    assert pods.desired()["etcd"].argv == ("sleep", "2") and reads == ["etcd.yaml", "etcd.yaml"]
    (manifests / "etcd.yaml").unlink()
    assert pods.desired() == {} and pods.signature() == ()
