"""An HTTPS stand-in for the emulated API server in unit tests: a threaded ``http.server`` on
127.0.0.1 with a server certificate of a fresh lab CA (``lab.pki``), optionally asking for a
client certificate of that CA as kube-apiserver does."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab import pki


@contextmanager
def serve_https(
    handler: type[http.server.BaseHTTPRequestHandler],
    workdir: Path,
    server_class: type[http.server.ThreadingHTTPServer] = http.server.ThreadingHTTPServer,
    client_certificates: bool = False,
) -> Iterator[tuple[http.server.ThreadingHTTPServer, str, pki.Pair]]:
    """Serve ``handler`` over TLS until the block ends; yields (the server, its
    ``https://127.0.0.1:<port>`` URL, the CA pair that signed its certificate). The
    certificate files go to ``workdir``; ``client_certificates`` requires a client
    certificate signed by the same CA."""
    ca = pki.new_ca("kubernetes")
    pki.write_pair(workdir, "apiserver", pki.issue(ca, "kube-apiserver", ips=("127.0.0.1",), server=True))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(workdir / "apiserver.crt", workdir / "apiserver.key")
    if client_certificates:
        ctx.load_verify_locations(cadata=ca[0].decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
    server = server_class(("127.0.0.1", 0), handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server, f"https://127.0.0.1:{server.server_address[1]}", ca
    finally:
        server.shutdown()
        server.server_close()
