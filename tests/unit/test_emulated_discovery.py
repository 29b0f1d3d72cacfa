"""The emulated kubeadm's token discovery (lab/kubeadm/join.py) against an HTTPS stand-in for
the API server that serves ``cluster-info`` signed as the bootstrap signer signs it: a good
signature and pin pass, a wrong secret is refused with kubeadm's message, and a worker's
discovery does not import the emulated API server or aiohttp (~0.2 CPU-s per join)."""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from core.joinmaterial import ca_cert_hash
from lab import pki
from tests.unit.https_stub import serve_https

TOKEN_ID, SECRET = "abcdef", "0123456789abcdef"


class _ClusterInfo(http.server.BaseHTTPRequestHandler):
    body = b""  # set by the fixture: the cluster-info ConfigMap as JSON

    def do_GET(self) -> None:
        self.send_response(200 if self.path.endswith("/configmaps/cluster-info") else 404)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    with serve_https(_ClusterInfo, tmp_path) as (_, url, ca):
        authority = base64.b64encode(ca[0]).decode()
        kubeconfig = yaml.safe_dump(
            {
                "clusters": [
                    {"name": "", "cluster": {"server": "https://vip:8443", "certificate-authority-data": authority}}
                ]
            }
        )
        signature = pki.jws_signature(TOKEN_ID, SECRET, kubeconfig.encode())
        data = {"kubeconfig": kubeconfig, f"jws-kubeconfig-{TOKEN_ID}": signature}
        _ClusterInfo.body = json.dumps({"kind": "ConfigMap", "data": data}).encode()
        yield url.removeprefix("https://"), ca[0]


def discover_in_a_fresh_process(endpoint: str, secret: str, pin: str) -> dict[str, object]:
    jc = {
        "discovery": {
            "bootstrapToken": {"token": f"{TOKEN_ID}.{secret}", "apiServerEndpoint": endpoint, "caCertHashes": [pin]}
        }
    }
    code = (
        "import json, sys\nfrom lab.kubeadm.join import discover\nfrom lab.kubeadm.workflow import KubeadmError\n"
        f"try:\n    out = discover({jc!r})[0]\nexcept KubeadmError as err:\n    out = str(err)\n"
        "print(json.dumps({'out': out, 'heavy': sorted(m for m in sys.modules if m in ('aiohttp', 'lab.apiserver'))}))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_discovery_checks_the_signature_and_the_pin_without_the_api_servers_imports(endpoint) -> None:  # type: ignore[no-untyped-def]
    address, ca_pem = endpoint
    good = discover_in_a_fresh_process(address, SECRET, ca_cert_hash(ca_pem))
    assert good == {"out": f"https://{address}", "heavy": []}
    forged = discover_in_a_fresh_process(address, "fedcba9876543210", ca_cert_hash(ca_pem))
    assert "failed to verify JWS signature of received cluster info object" in str(forged["out"])
