"""Questions asked over the network, each bounded in time, none of which raise for "no".

* :func:`api_ready` - ``GET https://<vip>:<port>/readyz`` (anonymous, TLS checked against the
  cluster CA): the API behind the VIP answers (kube-apiserver's ``/readyz`` is readable
  without credentials through the ``system:public-info-viewer`` ClusterRole);
* :func:`node_ready` - a Node's ``Ready`` condition (official ``kubernetes`` client, without
  its generated ``CoreV1Api``: :func:`get_json`);
* :func:`node_found` - whether a Node exists (the API answered with it, or with 404);
* :func:`serves_another_ca` - an API server whose certificate the cluster CA did not sign
  answers at an address (a control node not yet reset after ``ek8s reset``);
* :func:`phylactery_healthy`, :func:`phylactery_get`, :func:`phylactery_post` - Phylactery's
  HTTPS API (docs/phylactery.md), the server verified with the Phylactery CA
  (:func:`core.tls.client_context`); nothing is sent to a URL that is not ``https://``.

HTTP to Phylactery and the readyz probe use the standard library (``urllib``), which starts
in milliseconds; the agent must not pay aiohttp's import on its critical path.
"""

from __future__ import annotations

import functools
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from core.tls import client_context


@functools.cache
def kube_errors() -> tuple[type[BaseException], ...]:
    """What a call through the ``kubernetes`` client raises when the answer is "not now", for
    ``except kube_errors():`` (imported on first use, not at start-up).

    ``ApiException``: the API answered with an error status; urllib3's ``HTTPError``
    (``MaxRetryError``, ``ProtocolError``, timeouts): it did not answer; ``ConfigException``,
    ``YAMLError``, ``ValueError``, ``KeyError``: the kubeconfig is unusable (half-written, or replaced by a
    reset); ``OSError``: the kubeconfig or a file it names is gone.
    """
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError
    from yaml import YAMLError

    return (ApiException, HTTPError, ConfigException, YAMLError, OSError, ValueError, KeyError)


def api_ready(url: str, ca_pem: bytes, timeout_s: float = 1.0) -> bool:
    """True when ``url`` (``https://host:port/readyz``) answers 200 within ``timeout_s``
    seconds with a certificate that ``ca_pem`` (PEM bytes) signed; False otherwise."""
    return readyz(url, ca_pem, timeout_s)[0] == 200


def readyz(url: str, ca_pem: bytes, timeout_s: float = 1.0) -> tuple[int | None, float]:
    """``GET url`` (``https://host:port/readyz``) verified with ``ca_pem``: (the HTTP status,
    or None when nothing answered within ``timeout_s`` seconds or the TLS check failed; the
    seconds it took, monotonic). kube-apiserver answers 200 when ready, 500 naming the failed
    checks otherwise, 429 when its max-in-flight limit throttles the request
    (kubernetes staging/src/k8s.io/apiserver/pkg/server/filters/maxinflight.go), and HAProxy
    503 when no backend is up."""
    ctx = _chain_context(ca_pem)  # the VIP address is a SAN, but callers may use either name
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout_s) as resp:
            return int(resp.status), time.monotonic() - started
    except urllib.error.HTTPError as err:
        err.close()
        return int(err.code), time.monotonic() - started
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return None, time.monotonic() - started


def _chain_context(ca_pem: bytes) -> ssl.SSLContext:
    """:func:`core.tls.client_context` for ``ca_pem`` that checks the chain only, not the name."""
    ctx = client_context(ca_pem)
    ctx.check_hostname = False
    return ctx


def serves_another_ca(host: str, port: int, ca_pem: bytes, timeout_s: float = 0.3) -> bool:
    """True when ``host:port`` completes a TLS handshake within ``timeout_s`` seconds with a
    certificate that ``ca_pem`` (PEM bytes) did not sign: an API server of another cluster, or
    of this cluster's generation before ``ek8s reset`` (kubeadm init and k3s make a new CA).
    False for the CA's own server, and when nothing answers (refused, no route, timeout): the
    question is only whether a server that is not ours is serving there. The host name is not
    checked, the chain is (the server's SANs are not ours to know)."""
    ctx = _chain_context(ca_pem)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw, ctx.wrap_socket(raw):
            return False
    except ssl.SSLCertVerificationError:
        return True
    except OSError:  # refused, unreachable, timed out, reset, another TLS failure
        return False


_clients: dict[tuple[str, int | None], Any] = {}


def kube_client(kubeconfig: Path, retries: int | None = None) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``kubeconfig``, cached by the file's content
    (after a reset the same path holds other credentials and another CA) and ``retries``
    (urllib3's retries of a request that failed or timed out; None: the client's default,
    three; 0 for a probe that must not wait out an API server that accepts and never answers,
    as one whose etcd is gone does). Raises what :func:`kube_errors` lists when the file is
    missing or unusable."""
    from kubernetes import client, config

    key = (kubeconfig.read_text(), retries)
    if key not in _clients:
        if len(_clients) >= 4:  # a process uses one or two kubeconfigs; old ones are stale
            _clients.pop(next(iter(_clients)))
        configuration = client.Configuration()
        configuration.retries = retries
        _clients[key] = config.new_client_from_config(config_file=str(kubeconfig), client_configuration=configuration)
    return _clients[key]


def get_json(kubeconfig: Path, path: str, timeout_s: float, retries: int | None = None) -> dict[str, Any]:
    """``GET path`` (``/api/v1/nodes/<name>``) on the API server of ``kubeconfig`` through the
    official client's ``ApiClient`` (its kubeconfig loading, TLS, credentials and retries:
    :func:`kube_client`), the answer as parsed JSON. It is what ``CoreV1Api.read_node(...,
    _preload_content=False)`` does (``ApiClient.param_serialize``, ``call_api``, an error
    status raised as ``ApiException``) without importing ``kubernetes.client.api.core_v1_api``:
    that generated module (4.5 MB, every method wrapped by pydantic's ``validate_call``) costs
    ~0.7-1 CPU-s to import, more than the rest of an agent's start, for one Node read. Raises
    what :func:`kube_errors` lists."""
    from kubernetes.client.rest import ApiException

    api = kube_client(kubeconfig, retries)
    request = api.param_serialize(
        method="GET", resource_path=path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    response = api.call_api(*request, _request_timeout=timeout_s)
    response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    answer = json.loads(response.data)
    if not isinstance(answer, dict):
        raise ValueError(f"GET {path}: the answer is not a JSON object")
    return answer


def node_ready(kubeconfig: Path, name: str, timeout_s: float = 2.0) -> bool | None:
    """The ``Ready`` condition of Node ``name`` as the API behind ``kubeconfig`` reports it:
    True or False, or None when the Node does not exist, the kubeconfig is missing, or the API
    does not answer within ``timeout_s`` seconds."""
    try:
        node = get_json(kubeconfig, f"/api/v1/nodes/{name}", timeout_s)
    except kube_errors():
        return None
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def node_found(kubeconfig: Path, name: str, timeout_s: float = 2.0) -> bool | None:
    """Whether Node ``name`` exists as the API behind ``kubeconfig`` says: True (it answered
    with the Node), False (it answered 404 Not Found), or None when there is no such answer
    (no API, another error, the kubeconfig missing) within ``timeout_s`` seconds."""
    from kubernetes.client.rest import ApiException

    try:  # one try: this runs in the agent's cycle
        get_json(kubeconfig, f"/api/v1/nodes/{name}", timeout_s, retries=0)
    except ApiException as err:
        return False if err.status == 404 else None
    except kube_errors():
        return None
    return True


def _https(base_url: str) -> None:
    """Refuse a Phylactery URL that is not ``https://``: no credential crosses the network
    in clear text, and no client talks to a server it cannot verify (docs/security.md)."""
    if not base_url.lower().startswith("https://"):
        raise urllib.error.URLError(f"{base_url}: not https; Phylactery is reached over TLS only")


def phylactery_healthy(base_url: str, tls: ssl.SSLContext, timeout_s: float = 1.0) -> bool:
    """``GET <base_url>/healthz`` answered 200 (HAProxy and keepalived run) within
    ``timeout_s``, by a server ``tls`` verifies (:func:`core.tls.client_context`)."""
    try:
        _https(base_url)
        with urllib.request.urlopen(base_url + "/healthz", timeout=timeout_s, context=tls) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def phylactery_get(
    base_url: str, path: str, tls: ssl.SSLContext, token: str | None = None, timeout_s: float = 1.5
) -> dict[str, Any] | None:
    """``GET <base_url><path>`` (with ``Authorization: Bearer <token>`` when given) parsed as a
    JSON object, or None when Phylactery does not answer within ``timeout_s`` seconds, cannot
    be verified with ``tls``, or answers something else."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        _https(base_url)
        req = urllib.request.Request(base_url + path, headers=headers)
        with urllib.request.urlopen(req, timeout=timeout_s, context=tls) as resp:
            data = json.loads(resp.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def phylactery_post(
    base_url: str, path: str, token: str, body: dict[str, Any], tls: ssl.SSLContext, timeout_s: float = 15.0
) -> tuple[int, Any]:
    """POST ``body`` as JSON with ``Authorization: Bearer <token>`` to a server ``tls``
    verifies; returns (HTTP status, parsed JSON, or the text when it is not JSON). Raises
    ``OSError`` (``URLError`` is one) when Phylactery does not answer within ``timeout_s``
    seconds, cannot be verified, or ``base_url`` is not ``https://`` (nothing is sent then)."""
    _https(base_url)
    req = urllib.request.Request(
        base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=tls) as resp:
            return int(resp.status), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return int(err.code), json.loads(raw)
        except json.JSONDecodeError:
            return int(err.code), raw.decode(errors="replace")
