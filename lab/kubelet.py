"""EMULATED kubelet for the lab: registers its Node and posts status, nothing else.

It reads the node's ``kubelet.conf`` (client certificate ``system:node:<name>``), creates the
Node if missing, and every ``--interval`` seconds replaces the Node's status with
``Ready=True`` and a fresh ``lastHeartbeatTime`` (what kubelet's node status updates do). When
it stops posting, the emulated API server's node lifecycle controller turns Ready Unknown
after the grace period. Standard library only, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from lab.pki import parse_kubeconfig


def rfc3339(t: float) -> str:
    """Unix seconds as the API's timestamp format, UTC to the second (``2006-01-02T15:04:05Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _context(kubeconfig: Path, workdir: Path) -> tuple[str, ssl.SSLContext]:
    server, ca, (cert, key) = parse_kubeconfig(kubeconfig.read_bytes())
    ctx = ssl.create_default_context(cadata=ca.decode())
    pem = workdir / "kubelet-client-current.pem"
    pem.write_bytes(cert + key)
    pem.chmod(0o600)
    ctx.load_cert_chain(str(pem))
    return server, ctx


def _request(server: str, ctx: ssl.SSLContext, method: str, path: str, body: object) -> int:
    req = urllib.request.Request(
        server + path, data=json.dumps(body).encode(), method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def main(argv: list[str] | None = None) -> int:
    """Run the emulated kubelet until SIGTERM (exit 0); never returns otherwise.

    ``--kubeconfig`` is the node's ``kubelet.conf``; ``--node-ip`` an IPv4 address string;
    ``--interval`` seconds between status updates; ``--pki-dir`` where the client certificate
    PEM goes (a temporary directory by default). Registers the Node (201 or 409 both count),
    then every interval PUTs ``/api/v1/nodes/<name>/status`` with Ready=True, as the kubelet's
    node status updates do (``pkg/kubelet/kubelet_node_status.go``; the real default interval
    is 10 s); a 404 (the Node was deleted) registers it again. Network errors are printed and
    retried. Raises at start what :func:`lab.pki.parse_kubeconfig` raises, or ``OSError``
    (``ssl.SSLError`` is one) when the kubeconfig cannot be read or used.
    """
    p = argparse.ArgumentParser(description="EMULATED kubelet (ephemeral-k8s lab only)")
    p.add_argument("--kubeconfig", type=Path, required=True)
    p.add_argument("--node-name", required=True)
    p.add_argument("--node-ip", required=True)
    p.add_argument("--control-plane", action="store_true")
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--pki-dir", type=Path, default=None)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    workdir = args.pki_dir or Path(tempfile.mkdtemp())
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    server, ctx = _context(args.kubeconfig, workdir)
    labels = {"kubernetes.io/hostname": args.node_name, "kubernetes.io/os": "linux"}
    if args.control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
    node = {
        "metadata": {"name": args.node_name, "labels": labels},
        "spec": {},
        "status": {"addresses": [{"type": "InternalIP", "address": args.node_ip}]},
    }
    node_info = {
        "architecture": "amd64",
        "bootID": args.node_name,
        "containerRuntimeVersion": "emulated://0",
        "kernelVersion": os.uname().release,
        "kubeProxyVersion": "",
        "kubeletVersion": "v1.32.1-emulated",
        "machineID": args.node_name,
        "operatingSystem": "linux",
        "osImage": "ephemeral-k8s lab (emulated kubelet)",
        "systemUUID": args.node_name,
    }
    registered = False
    while True:
        try:
            if not registered:
                code = _request(server, ctx, "POST", "/api/v1/nodes", node)
                registered = code in (201, 409)
                print(f"emulated kubelet: register node {args.node_name}: HTTP {code}", flush=True)
            now = rfc3339(time.time())
            status = {
                "addresses": [
                    {"type": "InternalIP", "address": args.node_ip},
                    {"type": "Hostname", "address": args.node_name},
                ],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "kubelet is posting ready status (emulated)",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }
                ],
                "nodeInfo": node_info,
            }
            code = _request(server, ctx, "PUT", f"/api/v1/nodes/{args.node_name}/status", {"status": status})
            if code == 404:  # deleted (pruned) while we run: register again, as kubelet does
                registered = False
                continue
        except (OSError, urllib.error.URLError) as err:
            print(f"emulated kubelet: status update failed: {err}", flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
