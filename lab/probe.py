"""Read the cluster as an operator would, from inside the lab's network: one JSON document.

* Nodes, from the API behind the VIP, with the admin kubeconfig (``kube.config``) on the share
  (official ``kubernetes`` client);
* each control node's Phylactery ``GET /v1/status`` (HAProxy backends, etcd members, VIP),
  over HTTPS verified with the Phylactery CA and with the control credential, both read from
  the share's control-only tree as the operator's ``ek8s status`` reads them.

``python -m lab.probe serve --socket PATH`` is a daemon the lab starts in its manager namespace
(the Warewulf server's stand-in) when it creates the namespaces; it answers requests on a UNIX
socket on the host (a UNIX socket crosses network namespaces), so a probe costs a few
milliseconds instead of a Python start and the client's import (~1 s of CPU each, on a lab
whose waits probe twice a second). It also answers API calls for the lab's tests (``op: api``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import http.client
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from core.probes import kube_errors


def api_nodes(kubeconfig: Path) -> list[dict[str, Any]] | str:
    """Every Node the API lists, as ``{"name", "ready", "address"}`` (``ready``: the Ready
    condition is True; ``address``: the first InternalIP string or None). When the kubeconfig
    is unusable or the API does not answer within 5 s (per attempt; the client retries), the
    error as ``"<type>: <message>"`` instead; never raises for that."""
    from kubernetes import client, config

    try:
        api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        items = api.list_node(_request_timeout=5).items
    except kube_errors() as err:
        return f"{type(err).__name__}: {err}"
    out = []
    for n in items:
        status = n.status
        conditions = (status.conditions if status else None) or []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        ips = [a.address for a in ((status.addresses if status else None) or []) if a.type == "InternalIP"]
        out.append(
            {"name": n.metadata.name if n.metadata else None, "ready": ready, "address": ips[0] if ips else None}
        )
    return out


def phylactery_status(url: str, access: tuple[ssl.SSLContext, str] | str) -> dict[str, Any] | str:
    """Phylactery's ``GET <url>/v1/status`` (docs/phylactery.md) with ``access`` (a client
    context for the Phylactery CA and the control credential) as a dict, or the error as
    ``"<type>: <message>"`` when it does not answer within 5 s, cannot be verified, or answers
    something else (``access`` a string: why there is none)."""
    if isinstance(access, str):
        return access
    tls, token = access
    req = urllib.request.Request(url + "/v1/status", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5, context=tls) as resp:
            return dict(json.loads(resp.read()))
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as err:
        return f"{type(err).__name__}: {err}"


def phylactery_access(ca_file: Path, token_file: Path) -> tuple[ssl.SSLContext, str] | str:
    """A client context for the CA certificate at ``ca_file`` and the credential in
    ``token_file``, or why not (``"<type>: <message>"``: before the first Phylactery made them)."""
    from core.tls import client_context

    try:
        return client_context(ca_file.read_bytes()), token_file.read_text().strip()
    except (OSError, ValueError) as err:
        return f"{type(err).__name__}: {err}"


def probe(
    kubeconfig: Path, phylactery: dict[str, str], ca_file: Path | None = None, token_file: Path | None = None
) -> dict[str, Any]:
    """``{"nodes": ..., "phylactery": {NAME: ...}}`` (:func:`api_nodes`, one
    :func:`phylactery_status` per ``NAME: URL``, with the CA at ``ca_file`` and the control
    credential in ``token_file``), asked at the same time so a crashed node's 5 s timeout is
    paid once. ``nodes`` is "no kube.config yet" before the first generation is ready."""
    access = (
        phylactery_access(ca_file, token_file)
        if ca_file is not None and token_file is not None
        else "ValueError: no Phylactery CA or credential named"
    )
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(phylactery) + 1) as pool:
        nodes = pool.submit(api_nodes, kubeconfig) if kubeconfig.exists() else None
        statuses = {name: pool.submit(phylactery_status, url, access) for name, url in phylactery.items()}
        return {
            "nodes": nodes.result() if nodes else "no kube.config yet",
            "phylactery": {name: f.result() for name, f in statuses.items()},
        }


API_VERBS = ("read_", "list_", "create_", "delete_", "patch_", "replace_")


API_GROUPS = ("CoreV1Api", "PolicyV1Api")


def api_call(
    kubeconfig: Path, method: str, args: list[Any], kwargs: dict[str, Any], group: str = "CoreV1Api"
) -> dict[str, Any]:
    """``<group>.<method>(*args, **kwargs)`` (``group`` one of :data:`API_GROUPS`) with a 5 s
    request timeout: ``{"result": the object as the API's JSON}``, ``{"status": HTTP status,
    "reason": ...}`` when the API refused, or ``{"error": "<type>: <message>"}`` when it did
    not answer. ``method`` must start with one of :data:`API_VERBS`."""
    from kubernetes import client, config

    cls = getattr(client, group) if group in API_GROUPS else None
    if cls is None or not method.startswith(API_VERBS) or not hasattr(cls, method):
        return {"error": f"ValueError: no {group} call {method!r}"}
    try:
        api = cls(config.new_client_from_config(config_file=str(kubeconfig)))
        result = getattr(api, method)(*args, _request_timeout=5, **kwargs)
        return {"result": api.api_client.sanitize_for_serialization(result)}
    except client.ApiException as err:
        return {"status": err.status, "reason": err.reason}
    except kube_errors() as err:
        return {"error": f"{type(err).__name__}: {err}"}


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """One request of the daemon: ``{"op": "probe", "kubeconfig": PATH, "phylactery": {NAME:
    URL}, "ca_file": PATH, "token_file": PATH}`` -> :func:`probe`'s document; ``{"op": "api",
    "kubeconfig": PATH, "method": NAME, "args": [...], "kwargs": {...}, "group": "CoreV1Api"}``
    -> :func:`api_call`. Anything else: ``{"error": ...}``."""
    kubeconfig = Path(str(request.get("kubeconfig", "")))
    if request.get("op") == "probe":
        ca, token = request.get("ca_file"), request.get("token_file")
        return probe(
            kubeconfig,
            dict(request.get("phylactery") or {}),
            Path(str(ca)) if ca else None,
            Path(str(token)) if token else None,
        )
    if request.get("op") == "api":
        return api_call(kubeconfig, str(request.get("method")), list(request.get("args") or []),
                        dict(request.get("kwargs") or {}), str(request.get("group") or "CoreV1Api"))  # fmt: skip
    return {"error": f"ValueError: unknown op {request.get('op')!r}"}


async def serve(socket_path: Path) -> None:
    """Answer one JSON request per connection on ``socket_path`` (mode 0600) with one JSON
    line (:func:`answer`; each in a thread: the kubernetes client blocks), until killed (the
    lab deletes the namespace it runs in)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(await asyncio.wait_for(reader.readline(), 10))
            reply = await asyncio.to_thread(answer, request)
        except Exception as err:
            reply = {"error": f"{type(err).__name__}: {err}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        try:
            await writer.drain()
        finally:
            writer.close()

    socket_path.unlink(missing_ok=True)
    old = os.umask(0o077)  # the socket is root's alone from the start
    try:
        server = await asyncio.start_unix_server(handle, path=str(socket_path))
    finally:
        os.umask(old)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    """``serve --socket PATH``: run the daemon (:func:`serve`) until killed."""
    p = argparse.ArgumentParser(prog="python -m lab.probe")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="answer probes on a UNIX socket").add_argument("--socket", type=Path, required=True)
    asyncio.run(serve(p.parse_args(argv).socket))
    return 0


if __name__ == "__main__":
    sys.exit(main())
