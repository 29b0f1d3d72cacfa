"""Run inside one lab node's namespace (``ek8s lab`` calls it through ``ip netns exec``):
read the cluster as an operator would and print one JSON document.

* Nodes, from the API behind the VIP, with the admin kubeconfig (``kube.config``) on the share
  (official ``kubernetes`` client);
* each control node's Phylactery ``GET /v1/status`` (HAProxy backends, etcd members, VIP).
"""

from __future__ import annotations

import argparse
import http.client
import json
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


def phylactery_status(url: str) -> dict[str, Any] | str:
    """Phylactery's ``GET <url>/v1/status`` (docs/phylactery.md) as a dict, or the error as
    ``"<type>: <message>"`` when it does not answer within 5 s or answers something else."""
    try:
        with urllib.request.urlopen(url + "/v1/status", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as err:
        return f"{type(err).__name__}: {err}"


def main(argv: list[str] | None = None) -> int:
    """``--kubeconfig PATH --phylactery NAME=URL...``: print ``{"nodes": ..., "phylactery":
    {NAME: ...}}`` as JSON on one line (what :meth:`lab.cluster.Lab.probe` parses) and
    return 0. ``nodes`` is "no kube.config yet" before the first generation is ready."""
    p = argparse.ArgumentParser()
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--phylactery", action="append", default=[], help="name=url")
    args = p.parse_args(argv)
    statuses = {}
    for item in args.phylactery:
        name, _, url = item.partition("=")
        statuses[name] = phylactery_status(url)
    doc = {
        "nodes": api_nodes(args.kubeconfig) if args.kubeconfig.exists() else "no kube.config yet",
        "phylactery": statuses,
    }
    json.dump(doc, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
