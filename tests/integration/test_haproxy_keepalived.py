"""Rendered configs checked by the real daemons; HAProxy reloads under load drop nothing."""

from __future__ import annotations

import http.server
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.services import ProcessServices
from lab import pki
from phylactery import daemons, render
from tests.conftest import free_port, wait_for


def haproxy_cfg(root: Path, backends: list[render.Backend], port: int, api_port: int, ca_file: str = "") -> str:
    return render.render_haproxy(
        node="control0",
        cluster="default",
        generation=1,
        members=backends,
        frontend_port=port,
        api_port=api_port,
        stats_socket=str(daemons.haproxy_stats_socket(root)),
        frontend_bind="127.0.0.1",
        ca_file=ca_file,
    )


def keepalived_cfg(root: Path, peers: list[str], realtime: bool = True) -> str:
    return render.render_keepalived(
        node="control0",
        cluster="default",
        generation=1,
        address="10.0.0.21",
        interface="eth0",
        peers=peers,
        vip="10.0.0.99",
        prefix_length=24,
        virtual_router_id=51,
        advert_int=0.5,
        is_leader=True,
        check_script=str(root / "etc/keepalived/check_haproxy.sh"),
        realtime=realtime,
    )


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"ok from {self.server.server_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _NotReady(_Handler):
    """An API server that serves but whose /readyz fails (etcd slow, or too busy to answer a
    check in time): HAProxy's checks mark it DOWN."""

    def do_GET(self) -> None:
        if self.path.startswith("/readyz"):
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture
def tls_backends(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[int, list[str]]]:
    """Two HTTPS servers (stand-ins for API servers) on 127.0.0.2 and 127.0.0.3, one port,
    certificates of one CA (its certificate in ``tmp_path/ca.pem``); ``indirect``
    parametrization "not-ready" makes their /readyz fail, "two-cas" gives 127.0.0.3 a
    certificate of another CA (an API server of the generation before ``ek8s reset``)."""
    param = getattr(request, "param", "")
    handler = _NotReady if param == "not-ready" else _Handler
    ca, other = pki.new_ca("test-ca"), pki.new_ca("test-ca")
    (tmp_path / "ca.pem").write_bytes(ca[0])
    hosts = ["127.0.0.2", "127.0.0.3"]
    pki.write_pair(tmp_path, "srv", pki.issue(ca, "srv", ips=tuple(hosts), server=True))
    second = other if param == "two-cas" else ca
    pki.write_pair(tmp_path, "old", pki.issue(second, "srv", ips=tuple(hosts), server=True))
    port = free_port("127.0.0.2")
    servers = []
    for h, pair in zip(hosts, ("srv", "old"), strict=True):
        srv = http.server.ThreadingHTTPServer((h, port), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp_path / f"{pair}.crt", tmp_path / f"{pair}.key")
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    try:
        yield port, hosts
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


@pytest.fixture
def haproxy_daemon() -> Iterator[daemons.ManagedDaemon]:
    # A short root of its own: HAProxy refuses a stats socket path over 97 bytes, which
    # pytest's tmp_path under a parallel run's worker directory can exceed.
    root = Path(tempfile.mkdtemp(prefix="ek8s-hap-"))
    services = ProcessServices(root)
    d = daemons.haproxy(root, services)
    daemons.haproxy_stats_socket(root).parent.mkdir(parents=True, exist_ok=True)
    try:
        yield d
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not services.is_running("haproxy")


def test_rendered_haproxy_config_passes_haproxy_check(tmp_path: Path, haproxy_daemon: daemons.ManagedDaemon) -> None:
    root = haproxy_daemon.config_path.parents[2]
    cfg = haproxy_cfg(
        root, [render.Backend("control0", "10.0.0.21"), render.Backend("control1", "10.0.0.22")], 8443, 6443
    )
    haproxy_daemon.validate(cfg)  # raises ConfigRejected if haproxy -c refuses
    with pytest.raises(daemons.ConfigRejected, match="haproxy"):
        haproxy_daemon.validate(cfg.replace("balance roundrobin", "balance nonsense"))
    assert not haproxy_daemon.config_path.exists(), "a rejected config is never installed"


def test_haproxy_reload_under_load_drops_no_request(
    tmp_path: Path, haproxy_daemon: daemons.ManagedDaemon, tls_backends
) -> None:  # type: ignore[no-untyped-def]
    api_port, hosts = tls_backends
    root = haproxy_daemon.config_path.parents[2]
    front = free_port()
    one = [render.Backend("control0", hosts[0])]
    two = [*one, render.Backend("control1", hosts[1])]
    assert haproxy_daemon.apply(haproxy_cfg(root, one, front, api_port)) == "started"
    assert haproxy_daemon.apply(haproxy_cfg(root, one, front, api_port)) == "unchanged"
    ctx = ssl._create_unverified_context()
    url = f"https://127.0.0.1:{front}/"
    wait_for(lambda: _get(url, ctx), 10, 0.05, "HAProxy frontend answers")
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []

    def client() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                    resp.read()
                counts["ok"] += 1
            except Exception as err:
                counts["failed"] += 1
                errors.append(repr(err))

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            time.sleep(0.15)
            assert haproxy_daemon.apply(haproxy_cfg(root, two if i % 2 == 0 else one, front, api_port)) == "reloaded"
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert haproxy_daemon.reloads == 20
    assert counts["ok"] > 40, counts
    assert counts["failed"] == 0, errors[:5]


def _get(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=1) as resp:
            return resp.status == 200
    except Exception:
        return False


def test_backend_states_come_from_the_stats_socket(
    tmp_path: Path, haproxy_daemon: daemons.ManagedDaemon, tls_backends
) -> None:  # type: ignore[no-untyped-def]
    api_port, hosts = tls_backends
    root = haproxy_daemon.config_path.parents[2]
    members = [render.Backend("alive", hosts[0]), render.Backend("dead", "127.0.0.9")]
    haproxy_daemon.apply(haproxy_cfg(root, members, free_port(), api_port))
    sock = daemons.haproxy_stats_socket(root)
    states = wait_for(lambda: (s := daemons.backend_states(sock)) and s.get("dead", "").startswith("DOWN") and s, 15)
    assert states["alive"].startswith("UP")


@pytest.mark.parametrize("tls_backends", ["not-ready"], indirect=True)
def test_with_no_server_ready_haproxy_uses_the_live_ones_only(
    tmp_path: Path, haproxy_daemon: daemons.ManagedDaemon, tls_backends
) -> None:  # type: ignore[no-untyped-def]
    """Both API servers fail their /readyz checks (DOWN) but serve: a client behind HAProxy
    still gets an answer from one of them (the backend checked on /livez) instead of a closed
    connection. A third server that accepts TCP and never completes TLS (an API server still
    starting) and a fourth address nothing answers never get a client: with them in the
    rotation one request in two would hang until its timeout."""
    api_port, hosts = tls_backends
    root = haproxy_daemon.config_path.parents[2]
    stalled = socket.socket()
    stalled.bind(("127.0.0.4", api_port))
    stalled.listen(64)  # accepts into the queue, never reads: the TLS handshake never ends
    try:
        members = [render.Backend("control0", hosts[0]), render.Backend("control1", hosts[1])]
        members += [render.Backend("starting", "127.0.0.4"), render.Backend("dead", "127.0.0.9")]
        front = free_port()
        haproxy_daemon.apply(haproxy_cfg(root, members, front, api_port))
        sock = daemons.haproxy_stats_socket(root)
        wait_for(lambda: all(v.startswith("DOWN") for v in (daemons.backend_states(sock) or {"x": "UP"}).values()), 15)
        alive = lambda: daemons.backend_states(sock, "kube-apiserver-alive")  # noqa: E731
        wait_for(lambda: [k for k, v in alive().items() if v.startswith("UP")] == ["control0", "control1"], 15)
        ctx = ssl._create_unverified_context()
        answers = []
        for _ in range(8):
            with urllib.request.urlopen(f"https://127.0.0.1:{front}/", context=ctx, timeout=3) as resp:
                answers.append(resp.read().decode().strip())
        assert set(answers) == {f"ok from {h}" for h in hosts}, answers
        assert all(v.startswith("DOWN") for v in daemons.backend_states(sock).values()), "strict backend unchanged"
    finally:
        stalled.close()


@pytest.mark.parametrize("tls_backends", ["two-cas"], indirect=True)
def test_an_api_server_of_another_ca_gets_no_client_once_the_generations_ca_is_known(
    tmp_path: Path, haproxy_daemon: daemons.ManagedDaemon, tls_backends
) -> None:  # type: ignore[no-untyped-def]
    """127.0.0.3 serves with a certificate of another CA (the generation before ek8s reset,
    its reset not done). Unverified checks (no CA published yet) let it take clients; with
    the generation's CA as ca-file, both checks (the /readyz one and the /livez one used
    when no server is ready) mark it DOWN and every request goes to 127.0.0.2."""
    api_port, hosts = tls_backends
    root = haproxy_daemon.config_path.parents[2]
    members = [render.Backend("control0", hosts[0]), render.Backend("control1", hosts[1])]
    front = free_port()
    sock = daemons.haproxy_stats_socket(root)
    haproxy_daemon.apply(haproxy_cfg(root, members, front, api_port))
    wait_for(lambda: set(daemons.backend_states(sock).values()) == {"UP"}, 15, 0.1, "both UP unverified")
    ca_pem = (tmp_path / "ca.pem").read_text()
    ca_file = daemons.haproxy_ca_file(root, ca_pem)
    haproxy_daemon.extra_files = {ca_file: (ca_pem, 0o600)}
    assert haproxy_daemon.apply(haproxy_cfg(root, members, front, api_port, str(ca_file))) == "reloaded"
    for backend in ("kube-apiserver", "kube-apiserver-alive"):
        states = wait_for(
            lambda b=backend: (s := daemons.backend_states(sock, b)) and s.get("control1", "").startswith("DOWN") and s,
            15,
            0.1,
            f"control1 DOWN in {backend}",
        )
        assert states["control0"] == "UP", states
    ctx = ssl._create_unverified_context()
    answers = set()
    for _ in range(6):
        with urllib.request.urlopen(f"https://127.0.0.1:{front}/", context=ctx, timeout=3) as resp:
            answers.add(resp.read().decode().strip())
    assert answers == {f"ok from {hosts[0]}"}


@pytest.mark.parametrize("peers", [["10.0.0.22", "10.0.0.23"], []], ids=["unicast", "alone"])
def test_rendered_keepalived_config_passes_config_test(tmp_path: Path, peers: list[str]) -> None:
    root = tmp_path / "root"
    d = daemons.keepalived(root, ProcessServices(root), render.render_check_script(8443))
    cfg = keepalived_cfg(root, peers)
    d.validate(cfg)
    assert ("unicast_peer" in cfg) == bool(peers)
    with pytest.raises(daemons.ConfigRejected):
        d.validate(cfg.replace("virtual_router_id 51", "virtual_router_id 999"))


def test_keepalived_vrrp_process_keeps_a_safe_scheduling_through_reloads(tmp_path: Path) -> None:
    """The rendered scheduling survives SIGHUP reloads: on this host's capabilities
    (:func:`daemons.vrrp_realtime_allowed`), the VRRP process after two reloads is either on
    SCHED_RR with a non-zero RLIMIT_RTTIME, or at normal scheduling with nice -20; never on
    SCHED_RR with the limit of 0 keepalived leaves without CAP_SYS_RESOURCE, which the kernel
    answers with SIGKILL (seen in the lab: the VIP moved during formation)."""
    realtime = daemons.vrrp_realtime_allowed()
    root = tmp_path / "root"
    d = daemons.keepalived(root, ProcessServices(root), render.render_check_script(8443))
    cfg = keepalived_cfg(root, ["10.0.0.22"], realtime=realtime)
    d.validate(cfg)
    d.config_path.write_text(cfg)
    (root / "run/keepalived").mkdir(parents=True)
    ns = f"ek8s-it-vrrp-{os.getpid()}"
    log = tmp_path / "keepalived.log"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    proc = None
    try:
        for args in (
            ["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
            ["addr", "add", "10.0.0.21/24", "dev", "eth0"],
        ):
            subprocess.run(["ip", "-n", ns, *args], check=True)
        for dev in ("lo", "eth0", "eth1"):
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *d.start_argv], stdout=out, stderr=subprocess.STDOUT)
        vrrp_pid = root / "run/keepalived/vrrp.pid"
        child = wait_for(lambda: vrrp_pid.exists() and int(vrrp_pid.read_text()), what="VRRP process started")
        wait_for(lambda: "Startup complete" in log.read_text(), what="keepalived started")
        for n in (1, 2):
            os.kill(proc.pid, signal.SIGHUP)
            wait_for(lambda n=n: log.read_text().count("Reload complete") >= n, what=f"reload {n} complete")
        policy = os.sched_getscheduler(child) & ~os.SCHED_RESET_ON_FORK
        rttime = resource.prlimit(child, resource.RLIMIT_RTTIME)
        if realtime:
            assert policy == os.SCHED_RR, policy
            assert 0 not in rttime, f"RLIMIT_RTTIME {rttime} after a reload: the kernel kills it"
        else:
            assert policy == os.SCHED_OTHER, f"SCHED_RR with RLIMIT_RTTIME {rttime}: the kernel kills it"
            assert os.getpriority(os.PRIO_PROCESS, child) == render.VRRP_NICE
        time.sleep(1.0)  # ten adverts later, the same process, never killed
        assert int(vrrp_pid.read_text()) == child and "signal 9" not in log.read_text(), log.read_text()
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        subprocess.run(["ip", "netns", "del", ns], check=False)
