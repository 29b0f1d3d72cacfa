"""The real kubectl (Debian's 1.32 and 1.36, ``make kubectl``) against the emulated API server
(lab/apiserver.py) on a real etcd member: discovery, server-side tables, the objects the lab
has, the errors kubectl users meet, and what the official ``kubernetes`` client of the
project's own code keeps doing. Then every malformed or unsupported request a client can
send: a ``Status`` with the real code, never a 500 or a traceback.

One etcd and one API server (loopback, TLS, the admin's client certificate) for the module;
the lab tour (tests/lab/test_faults.py) runs the same kubectl through the VIP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from core.etcd import EtcdClient, kubeadm_client_context
from lab import pki
from lab.nodekit import etcd_argv
from tests import realkubectl
from tests.conftest import free_port, wait_for
from tests.integration.conftest import make_etcd_pki

VERSION = "v1.32.1"


@dataclass
class Server:
    """The running pair: the API server's URL, the admin kubeconfig, a TLS context with the
    admin's certificate (for raw requests), the official client, and scratch space."""

    url: str
    kubeconfig: Path
    ctx: ssl.SSLContext
    core: client.CoreV1Api
    tmp: Path

    def kubectl(self, minor: str, *args: str) -> subprocess.CompletedProcess[str]:
        return realkubectl.run(minor, self.kubeconfig, self.tmp / f"cache-{minor}", *args)

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        admin: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTPS request (as the admin, or anonymous); (status, headers, body)."""
        ctx = self.ctx if admin else ssl.create_default_context(cafile=str(self.tmp / "pki/ca.crt"))
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("apiserver")
    d = tmp / "pki"
    make_etcd_pki(d, ["127.0.0.1"])
    ca = pki.new_ca("kubernetes")
    pki.write_pair(d, "ca", ca)
    pki.write_pair(d, "apiserver", pki.issue(ca, "kube-apiserver", ips=("127.0.0.1",), server=True))
    cport, pport, port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        argv = etcd_argv(
            "etcd", "m0", tmp / "m0", d / "etcd", [f"https://127.0.0.1:{cport}"], f"https://127.0.0.1:{pport}",
            f"m0=https://127.0.0.1:{pport}", "new",
        )  # fmt: skip
        with open(tmp / "etcd.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [*argv, f"--listen-metrics-urls=http://127.0.0.1:{free_port()}"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

        async def etcd_up() -> bool:
            try:
                async with EtcdClient([f"https://127.0.0.1:{cport}"], kubeadm_client_context(d)) as c:
                    await c.put("/probe", b"1")
                    return True
            except Exception:
                return False

        wait_for(lambda: asyncio.run(etcd_up()), 30, 0.2, "etcd answers")
        conf = {
            "bind_address": "127.0.0.1",
            "advertise_address": "127.0.0.1",
            "port": port,
            "version": VERSION,
            "tls_cert": str(d / "apiserver.crt"),
            "tls_key": str(d / "apiserver.key"),
            "client_ca": str(d / "ca.crt"),
            "pki_dir": str(d),
            "etcd_servers": [f"https://127.0.0.1:{cport}"],
            "etcd_ca": str(d / "etcd/ca.crt"),
            "etcd_cert": str(d / "apiserver-etcd-client.crt"),
            "etcd_key": str(d / "apiserver-etcd-client.key"),
        }
        (tmp / "api.json").write_text(json.dumps(conf))
        with open(tmp / "api.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "lab.apiserver", "--config", str(tmp / "api.json")],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        cert = pki.issue(ca, "kubernetes-admin", orgs=("kubeadm:cluster-admins",), client=True)
        kubeconfig = tmp / "admin.conf"
        kubeconfig.write_bytes(
            pki.kubeconfig(f"https://127.0.0.1:{port}", ca[0], cert, "kubernetes-admin", "kubernetes")
        )
        (tmp / "admin.pem").write_bytes(cert[0] + cert[1])
        ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
        ctx.load_cert_chain(str(tmp / "admin.pem"))
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        s = Server(f"https://127.0.0.1:{port}", kubeconfig, ctx, core, tmp)

        def ready() -> bool:  # the API answers and the system namespaces controller ran
            try:
                return {n.metadata.name for n in core.list_namespace(_request_timeout=1).items} >= {
                    "default",
                    "kube-system",
                }
            except Exception:
                return False

        wait_for(ready, 30, 0.2, "the emulated API server answers")
        yield s
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def kubelet_node(name: str, address: str) -> dict[str, Any]:
    """A Node as the emulated kubelet registers and reports it (lab/kubelet.py)."""
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready status (emulated)",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    info = {
        "kubeletVersion": "v1.32.1-emulated",
        "osImage": "ephemeral-k8s lab (emulated kubelet)",
        "kernelVersion": "6.1.0",
        "containerRuntimeVersion": "emulated://0",
        "operatingSystem": "linux",
        "architecture": "amd64",
        "machineID": name,
        "systemUUID": name,
        "bootID": name,
        "kubeProxyVersion": "",
    }
    labels = {"kubernetes.io/hostname": name, "node-role.kubernetes.io/control-plane": ""}
    addresses = [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}]
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": addresses, "conditions": [ready], "nodeInfo": info},
    }


@pytest.mark.parametrize("minor", realkubectl.MINORS)
def test_the_operators_everyday_kubectl_commands(server: Server, minor: str) -> None:
    node = f"control{minor[-1]}"
    # The kubelet's registration and status post go through the official client, as before.
    server.core.create_node(kubelet_node(node, "10.0.0.21"))
    server.core.replace_node_status(node, kubelet_node(node, "10.0.0.21"))

    v = server.kubectl(minor, "version")
    assert v.returncode == 0, v.stderr
    assert f"Client Version: v{minor}." in v.stdout and f"Server Version: {VERSION}" in v.stdout

    wide = server.kubectl(minor, "get", "nodes", node, "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    header, row = wide.stdout.splitlines()
    assert header.split() == [
        "NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
    ]  # fmt: skip
    cells = row.split()
    assert cells[:3] == [node, "Ready", "control-plane"] and cells[4:7] == ["v1.32.1-emulated", "10.0.0.21", "<none>"]
    assert cells[-2:] == ["6.1.0", "emulated://0"] and "   ephemeral-k8s lab (emulated kubelet)   " in row
    plain = server.kubectl(minor, "get", "nodes")
    assert plain.stdout.split("\n")[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]

    desc = server.kubectl(minor, "describe", "node", node)
    assert desc.returncode == 0, desc.stderr
    for line in (f"Name:               {node}", "Roles:              control-plane", "Unschedulable:      false",
                 "InternalIP:  10.0.0.21", "Kubelet Version:            v1.32.1-emulated",
                 "Non-terminated Pods:          (0 in total)", "Events:              <none>"):  # fmt: skip
        assert line in desc.stdout, line
    assert "KubeletReady   kubelet is posting ready status (emulated)" in desc.stdout
    # The emulated kubelet keeps no node Lease: describe says so, as it would of a real node without one.
    assert f'Failed to get lease: leases.coordination.k8s.io "{node}" not found' in desc.stdout

    cm = f"kept-{minor.replace('.', '-')}"
    made = server.kubectl(minor, "create", "configmap", cm, "--from-literal=kept=yes")  # a protobuf body
    assert (made.returncode, made.stdout.strip()) == (0, f"configmap/{cm} created"), made.stderr
    got = json.loads(server.kubectl(minor, "get", "configmap", cm, "-o", "json").stdout)
    assert got["data"] == {"kept": "yes"} and got["metadata"]["namespace"] == "default"
    assert got["metadata"]["uid"] and int(got["metadata"]["resourceVersion"]) > 0
    assert server.core.read_namespaced_config_map(cm, "default").data == {"kept": "yes"}
    listed = server.kubectl(minor, "get", "configmap", cm)
    assert listed.stdout.splitlines()[0].split() == ["NAME", "DATA", "AGE"]
    assert listed.stdout.splitlines()[1].split()[:2] == [cm, "1"]

    again = server.kubectl(minor, "create", "configmap", cm)
    assert again.returncode == 1 and f'configmaps "{cm}" already exists' in again.stderr

    pods = server.kubectl(minor, "get", "pods", "-A")
    assert (pods.returncode, pods.stdout, pods.stderr.strip()) == (0, "", "No resources found")

    api = server.kubectl(minor, "api-resources")
    assert api.returncode == 0, api.stderr
    rows = [line.split() for line in api.stdout.splitlines()]
    assert rows[0] == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert ["configmaps", "cm", "v1", "true", "ConfigMap"] in rows
    assert ["nodes", "no", "v1", "false", "Node"] in rows
    assert ["leases", "coordination.k8s.io/v1", "true", "Lease"] in rows

    readyz = server.kubectl(minor, "get", "--raw", "/readyz")
    assert (readyz.returncode, readyz.stdout) == (0, "ok")

    deleted = server.kubectl(minor, "delete", "configmap", cm)
    assert deleted.returncode == 0 and f'configmap "{cm}" deleted' in deleted.stdout
    gone = server.kubectl(minor, "get", "configmap", cm)
    assert gone.returncode == 1 and f'Error from server (NotFound): configmaps "{cm}" not found' in gone.stderr


@pytest.mark.parametrize("minor", realkubectl.MINORS)
def test_kubectl_namespaces_secrets_labels_paging_and_refusals(server: Server, minor: str) -> None:
    ns = f"team-{minor.replace('.', '-')}"
    k = lambda *a: server.kubectl(minor, *a)  # noqa: E731
    assert k("create", "namespace", ns).returncode == 0
    for i in range(3):
        assert k("create", "configmap", f"c{i}", "-n", ns, f"--from-literal=i={i}").returncode == 0
    assert k("create", "secret", "generic", "s", "-n", ns, "--from-literal=token=s3cr3t").returncode == 0
    # Paging: one item per request, every item once, in key order.
    paged = k("get", "configmaps", "-n", ns, "--chunk-size=1", "-o", "name")
    assert paged.stdout.split() == ["configmap/c0", "configmap/c1", "configmap/c2"]
    secret = json.loads(k("get", "secret", "s", "-n", ns, "-o", "json").stdout)
    assert secret["type"] == "Opaque" and secret["data"] == {"token": "czNjcjN0"}
    assert k("get", "secrets", "-n", ns).stdout.splitlines()[0].split() == ["NAME", "TYPE", "DATA", "AGE"]

    node = f"control{minor[-1]}"
    server.core.create_node(kubelet_node(node, "10.0.0.22")) if not _exists(server, node) else None
    assert k("label", "node", node, f"team={ns}").returncode == 0
    assert k("get", "nodes", "-l", f"team={ns}", "-o", "name").stdout.split() == [f"node/{node}"]
    assert k("cordon", node).returncode == 0
    assert k("get", "node", node).stdout.splitlines()[1].split()[1] == "Ready,SchedulingDisabled"
    assert k("uncordon", node).returncode == 0
    assert f"node/{node}" in k("get", "nodes", "--field-selector", "spec.unschedulable=false", "-o", "name").stdout

    bad = k("create", "configmap", "Bad_Name")
    assert (
        bad.returncode == 1
        and 'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"' in bad.stderr
    )
    nowhere = k("create", "configmap", "x", "-n", "nowhere")
    assert 'namespaces "nowhere" not found' in nowhere.stderr
    field = k("get", "configmaps", "--field-selector", "data.i=1")
    assert "Error from server (BadRequest)" in field.stderr and '"data.i" is not a known field selector' in field.stderr
    kept = k("delete", "namespace", "kube-system")
    assert (
        'Error from server (Forbidden): namespaces "kube-system" is forbidden: this namespace may not be deleted'
        in kept.stderr
    )

    assert k("delete", "namespace", ns).returncode == 0
    assert k("get", "configmaps", "-n", ns, "-o", "name").stdout == ""  # its contents went with it
    assert ns not in k("get", "namespaces", "-o", "name").stdout


def _exists(server: Server, node: str) -> bool:
    return node in {n.metadata.name for n in server.core.list_node().items}


def test_discovery_is_aggregated_with_an_etag_or_legacy_as_asked(server: Server) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    code, headers, body = server.raw("GET", "/apis", headers={"Accept": accept})
    assert (
        code == 200
        and headers["Content-Type"] == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    assert json.loads(body)["kind"] == "APIGroupDiscoveryList" and headers["Vary"] == "Accept"
    code, _, body = server.raw("GET", "/apis", headers={"Accept": accept, "If-None-Match": headers["ETag"]})
    assert (code, body) == (304, b"")
    code, headers, body = server.raw("GET", "/api")
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{server.url.rsplit(':', 1)[1]}"}
        ],
    }
    assert json.loads(server.raw("GET", "/api/v1")[2])["kind"] == "APIResourceList"
    assert json.loads(server.raw("GET", "/apis/coordination.k8s.io")[2])["kind"] == "APIGroup"
    # Discovery is for authenticated users (system:discovery); health and version for anyone.
    code, _, body = server.raw("GET", "/api", admin=False)
    assert code == 403 and json.loads(body)["reason"] == "Forbidden"
    assert server.raw("GET", "/version", admin=False)[0] == 200
    code, _, body = server.raw("GET", "/readyz?verbose", admin=False)
    assert (code, body.decode()) == (200, "[+]ping ok\n[+]log ok\n[+]etcd ok\nreadyz check passed\n")
    assert server.raw("GET", "/readyz/etcd", admin=False)[:3:2] == (200, b"ok")


JSON_CT = {"Content-Type": "application/json"}
PB_CT = {"Content-Type": "application/vnd.kubernetes.protobuf"}
CMS = "/api/v1/namespaces/default/configmaps"
BAD = [
    ("GET", "/nope", None, {}, 404, "NotFound"),
    ("GET", "/openapi/v2", None, {}, 404, "NotFound"),
    ("GET", f"{CMS}/missing", None, {}, 404, "NotFound"),
    ("GET", "/api/v1/configmaps/x", None, {}, 404, "NotFound"),
    ("POST", CMS, b"{not json", JSON_CT, 400, "BadRequest"),
    ("POST", CMS, b"[1, 2]", JSON_CT, 400, "BadRequest"),
    ("POST", CMS, b'{"metadata": 5}', JSON_CT, 400, "BadRequest"),
    ("POST", CMS, b'{"kind": "Secret", "metadata": {"name": "a"}}', JSON_CT, 400, "BadRequest"),
    ("POST", CMS, b'{"metadata": {"name": "a", "namespace": "b"}}', JSON_CT, 400, "BadRequest"),
    ("POST", CMS, b'{"metadata": {}}', JSON_CT, 422, "Invalid"),
    ("POST", CMS, b'{"metadata": {"name": "a"}, "data": {"bad key": "x"}}', JSON_CT, 422, "Invalid"),
    ("POST", "/api/v1/namespaces/default/secrets", b'{"metadata": {"name": "a"}, "data": {"k": "%%"}}', JSON_CT, 400,
     "BadRequest"),
    ("POST", f"{CMS}?fieldValidation=Loose", b'{"metadata": {"name": "a"}}', JSON_CT, 422, "Invalid"),
    ("POST", CMS, b"<xml/>", {"Content-Type": "application/xml"}, 415, "UnsupportedMediaType"),
    ("POST", "/api/v1/namespaces/default/pods", b"k8s\x00\x0a\x09\x0a\x02v1\x12\x03Pod", PB_CT, 415,
     "UnsupportedMediaType"),
    ("POST", CMS, b"k8s\x00\x0a\xff", PB_CT, 400, "BadRequest"),
    ("POST", f"{CMS}/x", b"{}", JSON_CT, 405, "MethodNotAllowed"),
    ("POST", "/version", b"{}", JSON_CT, 405, "MethodNotAllowed"),
    ("DELETE", "/readyz/etcd", None, {}, 405, "MethodNotAllowed"),
    ("POST", "/api/v1/configmaps", b"{}", JSON_CT, 405, "MethodNotAllowed"),
    ("DELETE", CMS, None, {}, 405, "MethodNotAllowed"),
    ("GET", "/api/v1/nodes?watch=true", None, {}, 405, "MethodNotAllowed"),
    ("GET", "/apis/certificates.k8s.io/v1/certificatesigningrequests", None, {}, 405, "MethodNotAllowed"),
    ("PATCH", f"{CMS}/x", b"{}", {"Content-Type": "application/apply-patch+yaml"}, 415, "UnsupportedMediaType"),
    ("PATCH", f"{CMS}/missing", b"{}", {"Content-Type": "application/merge-patch+json"}, 404, "NotFound"),
    ("PUT", f"{CMS}/a", b'{"metadata": {"name": "b"}}', JSON_CT, 400, "BadRequest"),
    ("GET", "/api/v1/pods?fieldSelector=nonsense", None, {}, 400, "BadRequest"),
    ("GET", "/api/v1/pods?fieldSelector=spec.foo%3Dx", None, {}, 400, "BadRequest"),
    ("GET", "/api/v1/pods?labelSelector=a%20b%3Dc", None, {}, 400, "BadRequest"),
    ("GET", "/api/v1/pods?limit=ten", None, {}, 400, "BadRequest"),
    ("GET", "/api/v1/pods?limit=1&continue=garbage", None, {}, 400, "BadRequest"),
    ("GET", "/api/v1/pods?includeObject=All", None, {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}, 400,
     "BadRequest"),
    ("GET", "/api/v1/pods", None, {"Accept": "application/vnd.kubernetes.protobuf"}, 406, "NotAcceptable"),
    ("POST", CMS, b"{" + b" " * (3 * 1024 * 1024) + b"}", JSON_CT, 413, "RequestEntityTooLarge"),
    ("POST", "/api/v1/nodes", b'{"metadata": {"name": "intruder"}}', JSON_CT, 403, "Forbidden"),  # anonymous
    ("GET", "/api/v1/nodes", None, {"Authorization": "Bearer abcdef.0123456789abcdef"}, 401, "Unauthorized"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "headers", "code", "reason"), BAD)
def test_bad_requests_get_the_real_status_never_a_500(
    server: Server, method: str, path: str, body: bytes | None, headers: dict[str, str], code: int, reason: str
) -> None:
    admin = reason not in ("Forbidden", "Unauthorized")
    got, resp_headers, raw = server.raw(method, path, body, headers, admin=admin)
    assert got == code, raw[:300]
    assert resp_headers["Content-Type"] == "application/json"
    status = json.loads(raw)
    assert (status["kind"], status["status"], status["code"], status["reason"]) == ("Status", "Failure", code, reason)
    assert "Traceback" not in raw.decode(errors="replace")


def test_the_project_clients_calls_keep_working(server: Server) -> None:
    """What lab/kubeadm/ (PUT create-or-replace), the kubelet (status PUT), Phylactery
    (Secret delete) and the tests (ConfigMaps) do, through the official client."""
    core = server.core
    core.create_namespaced_secret("kube-system", {"metadata": {"name": "n0.node-password.k3s"}, "data": {}})
    assert [s.metadata.name for s in core.list_namespaced_secret("kube-system").items] == ["n0.node-password.k3s"]
    core.delete_namespaced_secret("n0.node-password.k3s", "kube-system")
    assert core.list_namespaced_secret("kube-system").items == []
    # A PUT of a missing object creates it (201), then replaces it (200), keeping its uid.
    put = json.dumps({"metadata": {"name": "kubeadm-config"}, "data": {"a": "1"}}).encode()
    code, _, first = server.raw("PUT", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config", put, JSON_CT)
    assert code == 201
    code, _, second = server.raw("PUT", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config", put, JSON_CT)
    assert code == 200 and json.loads(second)["metadata"]["uid"] == json.loads(first)["metadata"]["uid"]
    # A stale resourceVersion is a conflict, as the real optimistic concurrency has it.
    stale = json.dumps({"metadata": {"name": "kubeadm-config", "resourceVersion": "1"}, "data": {}}).encode()
    code, _, raw = server.raw("PUT", "/api/v1/namespaces/kube-system/configmaps/kubeadm-config", stale, JSON_CT)
    assert code == 409 and json.loads(raw)["reason"] == "Conflict"
    core.create_node(kubelet_node("w9", "10.0.0.49"))
    with pytest.raises(client.ApiException) as err:
        core.create_node(kubelet_node("w9", "10.0.0.49"))
    assert err.value.status == 409
    core.delete_node("w9")
    with pytest.raises(client.ApiException) as err:
        core.read_node("w9")
    assert err.value.status == 404


def test_it_listens_with_the_kernels_backlog_as_the_real_server_does(server: Server) -> None:
    """Go's net.Listen gives kube-apiserver a backlog of net.core.somaxconn, not aiohttp's
    128 (lab.apiserver.listen_backlog): a burst of joins must not overflow the emulated one's
    accept queue where the real one's holds. ``ss`` shows a listening socket's backlog as its
    Send-Q."""
    port = server.url.rsplit(":", 1)[1]
    res = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    [line] = res.stdout.splitlines()
    send_q = int(line.split()[2])
    assert send_q == int(Path("/proc/sys/net/core/somaxconn").read_text()) > 128, line
