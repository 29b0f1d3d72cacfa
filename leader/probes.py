"""What the agent asks of the outside world while it waits, each call bounded in time.

* :func:`api_ready` - ``GET https://<vip>:<port>/readyz`` (anonymous, TLS checked against the
  cluster CA): the API behind the VIP answers;
* :func:`node_ready` - this node's Node object has ``Ready=True`` (official ``kubernetes``
  client with the node's kubelet kubeconfig);
* :func:`phylactery_healthy` / :func:`phylactery_post` - Phylactery's HTTP API.

HTTP to Phylactery and the readyz probe use the standard library (``urllib``), which starts
in milliseconds; the agent must not pay aiohttp's import on its critical path.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def api_ready(url: str, ca_pem: bytes, timeout_s: float = 1.0) -> bool:
    """True when ``url`` (``https://host:port/readyz``) answers 200 with a CA-valid cert."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.check_hostname = False  # the VIP address is a SAN, but callers may use either name
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False


_core_api: dict[str, Any] = {}


def node_ready(kubeconfig: Path, name: str) -> bool | None:
    """``Ready`` condition of Node ``name``: True/False, or None if absent or unreachable."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    # Keyed by content: after a reset the same path holds other credentials and another CA.
    try:
        key = kubeconfig.read_text()
    except FileNotFoundError:
        return None
    if key not in _core_api:
        _core_api.clear()
        _core_api[key] = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    try:
        node = _core_api[key].read_node(name, _request_timeout=2)
    except ApiException:
        return None
    except Exception:  # urllib3 connection errors
        return None
    for cond in (node.status.conditions or []) if node.status else []:
        if cond.type == "Ready":
            return bool(cond.status == "True")
    return False


def phylactery_healthy(base_url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/healthz", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def phylactery_post(
    base_url: str, path: str, token: str, body: dict[str, Any], timeout_s: float = 15.0
) -> tuple[int, Any]:
    """POST JSON with the bearer token; returns (HTTP status, parsed JSON or text).
    Raises ``OSError``/``URLError`` when the service does not answer."""
    req = urllib.request.Request(
        base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return int(err.code), json.loads(raw)
        except json.JSONDecodeError:
            return int(err.code), raw.decode(errors="replace")
