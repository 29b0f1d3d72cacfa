"""EMULATED tools' shared parts (lab only): what the emulated kubeadm (:mod:`lab.kubeadm`) and
the emulated k3s (:mod:`lab.k3s`) both need on a node, so neither imports the other: node
paths under ``--rootfs``, a small API client and TLS contexts, etcd's command line with TLS on
both sides, and the wait for this node's own API server.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from core.fileperm import write_atomic
from lab import pki


class ToolError(Exception):
    """A refusal or failure of an emulated tool; each tool reports it its own way
    (kubeadm: ``error execution phase ...``; k3s: ``level=fatal``) and exits 1."""


class Root:
    """Node paths under ``--rootfs``."""

    def __init__(self, rootfs: str | None) -> None:
        self.root = Path(rootfs or "/")

    def __call__(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def pki(self) -> Path:
        """``/etc/kubernetes/pki`` under the root (kubeadm's ``certificatesDir`` default)."""
        return self("/etc/kubernetes/pki")


# -- a minimal API client (urllib; the real kubeadm uses client-go) ---------------------
GET_RETRIES = 10  # client-go's rest.Request: "about ten retry attempts" (maxRetries)
GET_RETRY_AFTER_S = 1.0  # the artificial "Retry-After: 1" client-go sets on such an error


def probable_eof(err: BaseException) -> bool:
    """Whether ``err`` is what client-go's ``IsProbableEOF`` or ``IsConnectionReset``
    (``k8s.io/apimachinery/pkg/util/net/http.go``) call a transient error: the server, or a
    proxy in front of it such as HAProxy with no server to send to, closed the connection
    without an answer (an EOF during the TLS handshake or before the response, a reset).
    ``URLError`` is looked into; a refused connection or a timeout is not one."""
    reason = err.reason if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException) else err
    return isinstance(reason, (ssl.SSLEOFError, ConnectionResetError, http.client.IncompleteRead))


class Api:
    """An API server at ``server`` (``https://host:port``) over ``ctx``, optionally with a
    bootstrap token as bearer (``<id>.<secret>``)."""

    def __init__(self, server: str, ctx: ssl.SSLContext, bearer: str | None = None, timeout: float = 5.0) -> None:
        self.server, self.ctx, self.bearer, self.timeout = server.rstrip("/"), ctx, bearer, timeout

    def call(self, method: str, path: str, body: object | None = None, timeout: float | None = None) -> tuple[int, Any]:
        """One request with ``body`` as JSON. Returns (HTTP status, the answer parsed as JSON
        when it starts with ``{``, else its text); error statuses are returned, not raised.
        ``timeout`` (seconds, for the connection, the TLS handshake and each read; None: the
        client's, 5 s unless it was made with another) bounds a server that does not answer.
        A ``GET`` closed without an answer (:func:`probable_eof`) is tried again after 1 s,
        up to :data:`GET_RETRIES` times, as client-go's ``Request.request`` does for GETs
        only (writes are not idempotent). Raises ``OSError`` (``URLError``, ``ssl.SSLError``,
        a timeout after ``timeout`` seconds) when there is no answer."""
        for _ in range(GET_RETRIES):
            try:
                return self._once(method, path, body, self.timeout if timeout is None else timeout)
            except OSError as err:
                if method != "GET" or not probable_eof(err):
                    raise
            time.sleep(GET_RETRY_AFTER_S)
        return self._once(method, path, body, self.timeout if timeout is None else timeout)

    def _once(self, method: str, path: str, body: object | None, timeout: float) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self.bearer:
            headers["Authorization"] = f"Bearer {self.bearer}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
                raw = resp.read()
                return int(resp.status), (json.loads(raw) if raw.startswith(b"{") else raw.decode())
        except urllib.error.HTTPError as err:
            raw = err.read()
            return int(err.code), (json.loads(raw) if raw.startswith(b"{") else raw.decode())

    def wait(self, method: str, path: str, body: object | None = None, timeout_s: float = 60.0) -> tuple[int, Any]:
        """One request every 50 ms until the endpoint answers at all (kubeadm's API client
        retries likewise); returns that answer. This poll is the retry, so each try is one
        request, without :meth:`call`'s GET retries inside it. Raises :class:`ToolError` after
        ``timeout_s`` seconds without one."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                return self._once(method, path, body, self.timeout)
            except (OSError, urllib.error.URLError) as err:
                last = err
                time.sleep(0.05)
        raise ToolError(f"{self.server}{path}: no answer in {timeout_s:.0f}s: {last}")


def ctx_for(ca_pem: bytes | None, cert: pki.Pair | None = None, workdir: Path | None = None) -> ssl.SSLContext:
    """A TLS client context trusting ``ca_pem`` (no verification at all when None, as
    kubeadm's first, insecure request for ``cluster-info``); with ``cert`` and ``workdir``,
    it presents that client certificate (written to ``workdir/client.pem``, 0600)."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else ssl._create_unverified_context()
    if cert is not None and workdir is not None:
        pem = workdir / "client.pem"
        write_atomic(pem, cert[0] + cert[1])
        ctx.load_cert_chain(str(pem))
    return ctx


def etcd_argv(
    etcd: str,
    name: str,
    data_dir: Path,
    pki_etcd: Path,
    client_urls: list[str],
    peer_url: str,
    initial_cluster: str,
    state: str,
    *,
    listen_client_urls: list[str] | None = None,
    listen_peer_urls: list[str] | None = None,
    listen_client_http_urls: list[str] | None = None,
    listen_metrics_urls: list[str] | None = None,
    heartbeat_ms: int | None = None,
    election_ms: int | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """etcd's command line with TLS and client certificates on both the client and the peer
    side, as kubeadm's static pod sets it (``phases/etcd/local.go``, ``getEtcdCommand``) and
    k3s's ``executor.ETCD`` does (``pkg/etcd/etcd.go``, ``cluster``).

    ``client_urls[0]`` is advertised; ``listen_client_urls`` (default: ``client_urls``) are
    listened on, serving gRPC and, unless ``listen_client_http_urls`` is given, etcd's HTTP
    JSON gateway too; with ``listen_client_http_urls`` (etcd >= 3.4.25/3.5.8) HTTP answers
    only there and the client URLs serve gRPC alone. ``listen_peer_urls`` default to
    ``[peer_url]``, which is advertised. ``state`` is ``new`` or ``existing``;
    ``initial_cluster`` is ``name=peer URL,...``. ``heartbeat_ms``/``election_ms`` (etcd's
    defaults 100/1000 when None), ``listen_metrics_urls`` (none when None) and ``extra``
    flags are added as given. ``--strict-reconfig-check`` is etcd's default, spelled out;
    kubeadm's metrics URL and corruption check are left out."""
    argv = [
        etcd,
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--advertise-client-urls={client_urls[0]}",
        f"--listen-client-urls={','.join(listen_client_urls or client_urls)}",
        f"--listen-peer-urls={','.join(listen_peer_urls or [peer_url])}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster={initial_cluster}",
        f"--initial-cluster-state={state}",
        f"--cert-file={pki_etcd / 'server.crt'}",
        f"--key-file={pki_etcd / 'server.key'}",
        "--client-cert-auth=true",
        f"--trusted-ca-file={pki_etcd / 'ca.crt'}",
        f"--peer-cert-file={pki_etcd / 'peer.crt'}",
        f"--peer-key-file={pki_etcd / 'peer.key'}",
        "--peer-client-cert-auth=true",
        f"--peer-trusted-ca-file={pki_etcd / 'ca.crt'}",
        "--strict-reconfig-check=true",
        "--snapshot-count=10000",
        "--logger=zap",
        "--log-outputs=stderr",
    ]
    if listen_client_http_urls:
        argv.append(f"--listen-client-http-urls={','.join(listen_client_http_urls)}")
    if listen_metrics_urls:
        argv.append(f"--listen-metrics-urls={','.join(listen_metrics_urls)}")
    if heartbeat_ms is not None:
        argv.append(f"--heartbeat-interval={heartbeat_ms}")
    if election_ms is not None:
        argv.append(f"--election-timeout={election_ms}")
    return [*argv, *extra]


def wait_local_api(address: str, port: int, ca_pem: bytes, timeout_s: float = 60.0, path: str = "/readyz") -> None:
    """Poll ``https://address:port<path>`` (this node's API server, not the VIP; ``/readyz``,
    or ``/livez`` as kubeadm's control-plane-check asks) every 50 ms until 200, as kubeadm's
    wait-control-plane does. Raises :class:`ToolError` after ``timeout_s`` seconds (kubeadm
    waits up to 4 min)."""
    api = Api(f"https://{address}:{port}", ctx_for(ca_pem))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            code, _ = api.call("GET", path, timeout=2)
            if code == 200:
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise ToolError(f"[api-check] the API server at {address}:{port} is not ready after {timeout_s:.0f}s")
