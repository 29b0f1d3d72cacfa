"""The emulated tools' API client retries a GET closed without an answer, as client-go does,
and nothing else (lab/nodekit.py); the emulated kubelet's TLS bootstrap asks again after a
restart's 10 s when its CSR got no answer (lab/kubeadm/certs.py)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
import urllib.error
from collections.abc import Iterator

import pytest

from lab import nodekit
from lab.kubeadm import certs


@pytest.fixture
def flaky() -> Iterator[tuple[str, dict[str, int]]]:
    """An HTTP server on loopback that closes the first ``close`` connections without a word
    (as HAProxy with no server left does) and answers 200 ``{}`` after; counts connections."""
    srv = socket.create_server(("127.0.0.1", 0))
    seen = {"close": 0, "connections": 0}

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                seen["connections"] += 1
                if seen["connections"] <= seen["close"]:
                    continue
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", seen
    srv.close()


def api(url: str) -> nodekit.Api:
    return nodekit.Api(url, ssl.create_default_context())


def test_a_get_closed_without_an_answer_is_tried_again(flaky, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(nodekit, "GET_RETRY_AFTER_S", 0.01)
    url, seen = flaky
    seen["close"] = 3
    assert api(url).call("GET", "/api/v1/nodes/worker0") == (200, {})
    assert seen["connections"] == 4


def test_a_get_gives_up_after_client_gos_ten_retries(flaky, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(nodekit, "GET_RETRY_AFTER_S", 0.01)
    url, seen = flaky
    seen["close"] = 100
    with pytest.raises(OSError) as err:
        api(url).call("GET", "/api/v1/nodes/worker0")
    assert nodekit.probable_eof(err.value)
    assert seen["connections"] == 1 + nodekit.GET_RETRIES


def test_a_write_or_a_refused_connection_is_not_tried_again(flaky, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(nodekit, "GET_RETRY_AFTER_S", 0.01)
    url, seen = flaky
    seen["close"] = 1
    with pytest.raises(OSError):
        api(url).call("POST", "/api/v1/namespaces", {})
    assert seen["connections"] == 1
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(urllib.error.URLError) as refused:
        api(f"http://127.0.0.1:{port}").call("GET", "/readyz")
    assert not nodekit.probable_eof(refused.value)


def test_the_kubelets_tls_bootstrap_asks_again_after_a_restart(flaky, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(certs, "KUBELET_RESTART_S", 0.01)
    url, seen = flaky
    seen["close"] = 2
    calls: list[str] = []

    class Signed(nodekit.Api):
        def call(self, method, path, body=None, timeout=5.0):  # type: ignore[no-untyped-def]
            calls.append(method)
            super().call(method, path, body, timeout)
            return 201, {"status": {"certificate": "Y2VydA=="}}

    cert, key = certs.tls_bootstrap(Signed(url, ssl.create_default_context()), "worker0")
    assert cert == b"cert" and key.startswith(b"-----BEGIN")
    assert calls == ["POST", "POST", "POST"]


def test_a_client_waits_its_own_timeout_for_a_server_that_never_answers() -> None:
    """kubeadm join's clients wait longer than the emulation's usual 5 s (client-go sets no
    request timeout): the bound is the client's, or the call's when given."""
    from lab.kubeadm.join import JOIN_API_TIMEOUT_S

    assert nodekit.Api("http://x", ssl.create_default_context()).timeout < JOIN_API_TIMEOUT_S
    silent = socket.create_server(("127.0.0.1", 0))  # accepts into its queue, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        for client, call_timeout in (
            (nodekit.Api(url, ssl.create_default_context(), timeout=0.3), None),
            (api(url), 0.3),
        ):
            started = time.monotonic()
            with pytest.raises(OSError):
                client.call("GET", "/api/v1/nodes/worker0", timeout=call_timeout)
            assert 0.25 <= time.monotonic() - started < 3.0
    finally:
        silent.close()
