"""The k3s driver without root: token formats, config files, the service it starts and waits
for (a stand-in ``k3s`` executable in process mode), reset and the driver factory."""

from __future__ import annotations

import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from core.config import parse_config
from core.drivers import DriverError, driver_for, k3s
from core.drivers.base import Credentials
from core.drivers.kubeadm import KubeadmDriver
from core.share import JoinMaterial
from tests.unit.test_join_credentials import self_signed


def cfg(tmp_path: Path, role: str = "control", name: str = "control0", **kubernetes: object):  # type: ignore[no-untyped-def]
    data = {
        "role": role,
        "node": {"name": name, "address": "10.0.0.21"},
        "kubernetes": {"distribution": "k3s", **kubernetes},
        "root": str(tmp_path / "root"),
        "service_manager": "process",
        "timeouts": {"command_s": 20},
    }
    return parse_config(data, Path("node.yaml"))


@pytest.fixture
def ca_pem() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec

    return self_signed(ec.generate_private_key(ec.SECP256R1()))


def test_the_factory_picks_the_distribution(tmp_path: Path) -> None:
    assert isinstance(driver_for(cfg(tmp_path)), k3s.K3sDriver)
    kubeadm = parse_config({"role": "worker", "node": {"name": "w0", "address": "10.0.0.41"}}, Path("node.yaml"))
    assert isinstance(driver_for(kubeadm), KubeadmDriver)


def test_ca_hash_is_sha256sum_of_the_ca_file(tmp_path: Path, ca_pem: bytes) -> None:
    # k3s's documented check of a token's hash: sha256sum of server-ca.crt.
    path = tmp_path / "server-ca.crt"
    path.write_bytes(ca_pem)
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True, timeout=30)
    assert k3s.ca_hash(ca_pem) == out.stdout.split()[0]


def test_secure_tokens_pin_the_ca_and_name_the_user(ca_pem: bytes) -> None:
    server = k3s.secure_token(ca_pem, "server", "s3cret")
    assert server == f"K10{k3s.ca_hash(ca_pem)}::server:s3cret"
    parsed = k3s.parse_token(server)
    assert (parsed.ca_hash, parsed.user, parsed.secret) == (k3s.ca_hash(ca_pem), "server", "s3cret")
    assert k3s.parse_token("K10::node:x") == k3s.Token("", "node", "x")


@pytest.mark.parametrize(
    "bad", ["s3cret", "K10abc::server:s3cret", "K10" + "0" * 64 + "::server:", "K10" + "g" * 64 + "::a:s3cret"]
)
def test_a_malformed_token_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as err:
        k3s.parse_token(bad)
    assert "s3cret" not in str(err.value)


def test_redact_hides_token_secrets() -> None:
    text = "token: abc123\nK10" + "a" * 64 + "::server:topsecret x\nagent-token: zzz"
    shown = k3s.redact(text)
    assert "abc123" not in shown and "topsecret" not in shown and "zzz" not in shown
    assert "::server:<redacted>" in shown


def test_join_material_pins_the_ca_and_workers_get_only_the_agent_token(tmp_path: Path, ca_pem: bytes) -> None:
    driver = k3s.K3sDriver(cfg(tmp_path))
    result = k3s.InitResult(admin_kubeconfig=b"", ca_cert_pem=ca_pem)
    material = driver.join_material(result, Credentials(token="srv", certificate_key="agt"), 3, 7)
    assert material.token == k3s.secure_token(ca_pem, "server", "srv")
    assert material.certificate_key == k3s.secure_token(ca_pem, "node", "agt")
    assert material.ca_cert_hashes == [f"sha256:{k3s.ca_hash(ca_pem)}"]
    assert material.token_expires_at > material.published_at + 365 * 24 * 3600
    worker = yaml.safe_load(k3s.render_join_config(cfg(tmp_path, role="worker", name="worker0"), material))
    assert worker["token"] == material.certificate_key and "srv" not in str(worker)
    server = yaml.safe_load(k3s.render_join_config(cfg(tmp_path, name="control1"), material))
    assert server["token"] == material.token and server["agent-token"] == "agt"
    assert server["server"] == "https://vip.kubernetes.local:8443"


def test_the_operator_kubeconfig_names_the_vip() -> None:
    local = yaml.safe_dump(
        {"apiVersion": "v1", "clusters": [{"name": "default", "cluster": {"server": "https://127.0.0.1:6443"}}]}
    )
    out = yaml.safe_load(k3s.operator_kubeconfig(local, "https://vip.kubernetes.local:8443"))
    assert out["clusters"][0]["cluster"]["server"] == "https://vip.kubernetes.local:8443"
    with pytest.raises(ValueError):
        k3s.operator_kubeconfig("- a list", "https://x:1")


# A stand-in for the k3s executable: writes what a started server or agent leaves, as
# MODE says ("ok"; "exit": dies at once; "password": logs k3s's refusal and keeps retrying).
FAKE_K3S = textwrap.dedent(
    """\
    #!{python}
    import sys, time, pathlib
    args = sys.argv[1:]
    root = pathlib.Path(args[args.index("--rootfs") + 1])
    mode = (root / "mode").read_text().strip()
    with open(root / "calls", "a") as calls:
        print(" ".join(args), file=calls)
    with open(root / "cmdlines", "a") as seen:  # what every user of the node sees (proc(5))
        print(open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").decode(), file=seen)
    if args[:2] == ["etcd-snapshot", "save"]:
        d = root / args[args.index("--dir") + 1].lstrip("/")
        name = args[args.index("--name") + 1] + "-" + args[args.index("--node-name") + 1] + "-1700000000"
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(b"etcd backend")
        print('level=info msg="Snapshot ' + name + ' saved."', flush=True)
        sys.exit(0)
    restore = [a for a in args if a.startswith("--cluster-reset-restore-path=")]
    if restore:
        copy = root / restore[0].split("=", 1)[1].lstrip("/")
        (root / "restored").write_bytes(copy.read_bytes())
        if mode == "wrongtoken":
            print('level=fatal msg="bootstrap data already found and encrypted with different token"', flush=True)
            sys.exit(1)
        print('level=info msg="Managed etcd cluster membership has been reset, restart without --cluster-reset '
              'flag now. Backup and delete ${{datadir}}/server/db on each peer etcd server and rejoin the nodes"')
        sys.exit(0)
    UNPROMOTED = ("Failed to test data store connection: this server has not yet been promoted from learner to "
                  "voting member")
    def say(msg, every=0.2, times=None):
        n = 0
        while times is None or n < times:
            print('time="2026-12-06T00:00:00Z" level=info msg="' + msg + '"', flush=True)
            time.sleep(every)
            n += 1
    if mode == "exit":
        print("level=fatal msg=\\"starting kubernetes: preparing server: something else\\"", flush=True)
        sys.exit(1)
    if mode == "unreachable":
        print("level=fatal msg=\\"starting kubernetes: preparing server: failed to get CA certs\\"", flush=True)
        sys.exit(1)
    if mode == "duplicate":
        print('level=info msg="Adding member control1-0a1b2c3d=https://10.0.0.22:2380 to etcd cluster"', flush=True)
        print('level=fatal msg="etcd cluster join failed: duplicate node name found, please use a unique name '
              'for this node"', flush=True)
        sys.exit(1)
    if mode == "learners":
        say("Waiting for other members to finish joining etcd cluster: etcdserver: too many learner members in cluster")
    if mode == "unpromoted":
        say("Starting etcd to join cluster with members [control0-11111111=https://10.0.0.21:2380]", times=1)
        say(UNPROMOTED)
    if mode == "slowjoin":  # two waits, each shorter than the stall bound, then up
        say("Waiting for other members to finish joining etcd cluster: etcdserver: unhealthy cluster", times=6)
        say("Starting etcd to join cluster with members [control0-11111111=https://10.0.0.21:2380]", times=1)
        say(UNPROMOTED, times=6)
        say("etcd data store connection OK", times=1)
    if mode == "password":
        while True:
            print("level=info msg=\\"Waiting to retrieve agent configuration; server is not ready: Node password "
                  "rejected, duplicate hostname or contents of '/etc/rancher/node/password' may not match server "
                  "node-passwd entry, try enabling a unique node name with the --with-node-id flag\\"", flush=True)
            time.sleep(0.2)
    k = root / "var/lib/rancher/k3s"
    for p, text in [("server/tls/server-ca.crt", (root / "ca.pem").read_text()), ("agent/kubelet.kubeconfig", "x")]:
        (k / p).parent.mkdir(parents=True, exist_ok=True)
        (k / p).write_text(text)
    if args[0] == "server":
        (root / "etc/rancher/k3s/k3s.yaml").write_text(
            "clusters:\\n- name: default\\n  cluster:\\n    server: https://127.0.0.1:6443\\n")
    time.sleep(600)
    """
)


@pytest.fixture
def fake_k3s(tmp_path: Path, ca_pem: bytes) -> Path:
    exe = tmp_path / "k3s"
    exe.write_text(FAKE_K3S.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "root").mkdir()
    (tmp_path / "root/ca.pem").write_bytes(ca_pem)
    return exe


def test_init_starts_the_server_and_returns_the_operator_kubeconfig(
    tmp_path: Path, fake_k3s: Path, ca_pem: bytes
) -> None:
    (tmp_path / "root/mode").write_text("ok")
    images = tmp_path / "root/var/lib/rancher/k3s/agent/images"
    images.mkdir(parents=True)
    (images / "k3s-airgap-images-amd64.tar.zst").write_bytes(b"airgap")
    driver = k3s.K3sDriver(cfg(tmp_path, k3s=str(fake_k3s)))
    try:
        result = driver.init(Credentials(token="srv", certificate_key="agt"))
        assert result.ca_cert_pem == ca_pem
        assert b"https://vip.kubernetes.local:8443" in result.admin_kubeconfig
        assert driver.is_joined() and driver.services.is_running("k3s")
        written = driver.config_path
        assert stat.S_IMODE(written.stat().st_mode) == 0o600
        assert yaml.safe_load(written.read_text())["cluster-init"] is True
        (tmp_path / "root/etc/rancher/node").mkdir(parents=True)
        (tmp_path / "root/etc/rancher/node/password").write_text("pw")
    finally:
        driver.reset()
    assert not driver.services.is_running("k3s") and not driver.is_joined()
    assert not written.exists()
    # Everything of k3s's data directory goes but the airgap images the node image brought.
    data = tmp_path / "root/var/lib/rancher/k3s"
    assert [p.relative_to(data).as_posix() for p in sorted(data.rglob("*"))] == [
        "agent",
        "agent/images",
        "agent/images/k3s-airgap-images-amd64.tar.zst",
    ]
    # Like k3s-uninstall.sh, the node password stays: a rejoin in the same boot keeps it.
    assert (tmp_path / "root/etc/rancher/node/password").read_text() == "pw"


def material() -> JoinMaterial:
    return JoinMaterial(
        generation=1,
        epoch=1,
        api_server_endpoint="vip.kubernetes.local:8443",
        token="K10" + "a" * 64 + "::server:srv",
        token_expires_at=0.0,
        ca_cert_hashes=[],
        certificate_key="K10" + "a" * 64 + "::node:agt",
        certificate_key_expires_at=0.0,
        ca_cert="",
        published_by="control0",
    )


@pytest.mark.parametrize(
    ("mode", "role", "why"),
    [
        ("exit", "worker", "the k3s-agent service exited"),
        ("unreachable", "worker", "k3s refused this node: server unreachable: starting kubernetes"),
        ("password", "worker", "k3s refused this node: node password rejected: Waiting to retrieve agent"),
        ("duplicate", "control", "k3s refused this node: duplicate node name (a stale etcd member of this node): "
         "etcd cluster join failed: duplicate node name found, please use a unique name for this node"),
        ("learners", "control", "k3s join stalled: retrying for 1s: Waiting for other members to finish joining "
         "etcd cluster: etcdserver: too many learner members in cluster"),
        ("unpromoted", "control", "k3s join stalled: retrying for 1s: Failed to test data store connection: this "
         "server has not yet been promoted from learner to voting member"),
    ],
)  # fmt: skip
def test_a_refused_or_stalled_join_fails_naming_why(
    tmp_path: Path, fake_k3s: Path, mode: str, role: str, why: str
) -> None:
    """Each refusal k3s logs is named in the error's last line (the agent's join_failed event
    carries it); a retry loop k3s would keep up for ever fails after the stall bound, not
    after ``command_s`` (20 s here); the service is stopped either way."""
    (tmp_path / "root/mode").write_text(mode)
    node = cfg(tmp_path, role=role, name="control1" if role == "control" else "worker0", k3s=str(fake_k3s))
    driver = k3s.K3sDriver(node)
    driver.join_stall_s = 1.0
    with pytest.raises(DriverError) as err:
        driver.join(material())
    assert str(err.value).splitlines()[-1].startswith(why), str(err.value)
    assert ("agent" if role == "worker" else "server") in err.value.command
    assert not driver.services.is_running(driver.service)


def test_retry_waits_shorter_than_the_stall_bound_do_not_fail_the_join(tmp_path: Path, fake_k3s: Path) -> None:
    """k3s retries a refused member add, then waits to be promoted: ~1.2 s each, and a new
    kind of wait starts the clock again, so a 2 s bound does not end a join that goes on."""
    (tmp_path / "root/mode").write_text("slowjoin")
    driver = k3s.K3sDriver(cfg(tmp_path, name="control1", k3s=str(fake_k3s)))
    driver.join_stall_s = 2.0
    try:
        driver.join(material())
        assert driver.is_joined()
    finally:
        driver.reset()


def test_the_verdict_reads_refusals_and_the_wait_k3s_is_in() -> None:
    line = 'time="t" level={} msg="{}"'.format
    waiting = line("info", "Waiting for other members to finish joining etcd cluster: etcdserver: unhealthy cluster")
    assert k3s.join_verdict("") == k3s.Verdict()
    v = k3s.join_verdict(waiting)
    assert v.waiting == "Waiting for other members to finish joining etcd cluster" and v.line.endswith(
        "unhealthy cluster"
    )
    assert (
        k3s.join_verdict(waiting + "\n" + line("info", "Starting etcd to join cluster with members [a]")).waiting == ""
    )
    dup = line("fatal", "etcd cluster join failed: duplicate node name found, please use a unique name for this node")
    assert k3s.join_verdict(waiting + "\n" + dup).refusal.startswith("duplicate node name")
    peer = line("fatal", "etcd cluster join failed: etcdserver: Peer URLs already exists")
    assert k3s.join_verdict(peer) == k3s.Verdict("etcd refused the member", "", peer.split('msg="')[1][:-1])


def test_a_snapshot_is_taken_with_k3s_etcd_snapshot_save_and_carries_the_server_token(
    tmp_path: Path, fake_k3s: Path
) -> None:
    (tmp_path / "root/mode").write_text("ok")
    token = tmp_path / "root/var/lib/rancher/k3s/server/token"
    token.parent.mkdir(parents=True)
    token.write_text("K10" + "a" * 64 + "::server:the-server-secret\n")
    driver = k3s.K3sDriver(cfg(tmp_path, k3s=str(fake_k3s)))
    taken = driver.save_snapshot()
    assert (taken.data, taken.secret, taken.tool) == (b"etcd backend", "the-server-secret", "k3s etcd-snapshot save")
    call = (tmp_path / "root/calls").read_text().split()
    assert call[:3] == ["etcd-snapshot", "save", "--node-name"] and "the-server-secret" not in call
    assert call[call.index("--name") + 1] == "ek8s"
    assert call[call.index("--dir") + 1] == "/var/lib/rancher/k3s/server/db/snapshots"
    assert call[call.index("--etcd-server") + 1] == "https://127.0.0.1:6443"
    assert not list((tmp_path / "root/var/lib/rancher/k3s/server/db/snapshots").iterdir()), "the share keeps it"
    token.unlink()
    with pytest.raises(DriverError, match="no snapshot or server token"):
        driver.save_snapshot()


def test_credentials_reuse_the_token_kept_with_the_snapshot(tmp_path: Path) -> None:
    driver = k3s.K3sDriver(cfg(tmp_path))
    assert driver.restores_snapshots and driver.restore_needs_secret
    assert driver.new_credentials(restore_secret="old").token == "old"
    fresh = driver.new_credentials()
    assert len(fresh.token) == 64 and fresh.token != fresh.certificate_key


@pytest.mark.parametrize("mode", ["ok", "wrongtoken"])
def test_init_restores_with_cluster_reset_restore_path_then_starts_normally(
    tmp_path: Path, fake_k3s: Path, ca_pem: bytes, mode: str
) -> None:
    (tmp_path / "root/mode").write_text(mode)
    snapshot = tmp_path / "share/gen3-1700000000000.db"
    snapshot.parent.mkdir()
    snapshot.write_bytes(b"snapshot bytes")
    driver = k3s.K3sDriver(cfg(tmp_path, k3s=str(fake_k3s)))
    try:
        if mode == "wrongtoken":
            with pytest.raises(DriverError, match="encrypted with different token"):
                driver.init(Credentials(token="old-secret", certificate_key="agt"), restore_from=snapshot)
            assert not driver.services.is_running("k3s")
        else:
            driver.init(Credentials(token="old-secret", certificate_key="agt"), restore_from=snapshot)
            assert driver.services.is_running("k3s")
        calls = (tmp_path / "root/calls").read_text().splitlines()
        local = "/var/lib/rancher/k3s/server/db/snapshots/restore-gen3-1700000000000.db"
        assert calls[0].startswith(f"server --cluster-reset --cluster-reset-restore-path={local} --config ")
        assert (tmp_path / "root/restored").read_bytes() == b"snapshot bytes"
        assert not (tmp_path / "root" / local.lstrip("/")).exists(), "the node keeps no copy"
        assert yaml.safe_load(driver.config_path.read_text())["token"] == "old-secret"
        if mode == "ok":
            assert calls[1].startswith("server --config ")
    finally:
        driver.reset()


def test_etcd_members_map_to_their_nodes(tmp_path: Path) -> None:
    driver = k3s.K3sDriver(cfg(tmp_path))
    assert driver.etcd_member_node("control0-0a1b2c3d") == "control0"
    assert driver.etcd_member_node("ctl-1-0a1b2c3d") == "ctl-1"
    assert driver.etcd_member_node("control0") == "control0"
    # k3s's own rule (ETCD.join): any suffix after the last "-" names the node, so a member
    # "control0-old" blocks control0's join as "duplicate node name" and is control0's to prune.
    assert driver.etcd_member_node("control0-old") == "control0"
    assert driver.etcd_member_node("a-0a1b2c3d") == "a-0a1b2c3d"  # k3s cuts only past the second character


OVERLAY_UNITS = Path(__file__).resolve().parents[2] / "overlay/ek8s/rootfs/etc/systemd/system"


def _unit(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a systemd unit (comments and section headers dropped), values by key."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize(("role", "command"), [("control", "server"), ("worker", "agent")])
def test_the_overlay_units_run_what_the_driver_starts(role: str, command: str) -> None:
    """In systemd mode the driver starts ``<service>.service`` and ignores its argv: the
    overlay's unit must run the same command, with the config the driver writes, and be
    something the driver can wait on (Type=exec) and not something that starts at boot."""
    node = parse_config(
        {
            "role": role,
            "node": {"name": "n0", "address": "10.0.0.21"},
            "kubernetes": {"distribution": "k3s", "k3s": "/usr/local/bin/k3s"},
            "service_manager": "systemd",
        },
        Path("node.yaml"),
    )
    driver = k3s.K3sDriver(node)
    path = OVERLAY_UNITS / f"{driver.service}.service"
    unit = _unit(path)
    assert unit["ExecStart"] == [" ".join(driver._argv(command))]
    assert unit["ConditionPathExists"] == [k3s.CONFIG] and unit["Type"] == ["exec"]
    assert unit["Restart"] == ["always"] and unit["Delegate"] == ["yes"]
    assert "[Install]" not in path.read_text().splitlines() and "WantedBy" not in unit
    assert not (OVERLAY_UNITS / "multi-user.target.wants" / path.name).exists()


def test_lab_bench_reads_the_lab_distribution_from_node_yaml(tmp_path: Path) -> None:
    from lab.cli import lab_distribution
    from lab.state import LabNode, LabState

    config = tmp_path / "node.yaml"
    node = LabNode("control0", "control", "10.0.0.21", "ns", str(tmp_path), str(config), "log")
    state = LabState(prefix="p", dir=str(tmp_path), share=str(tmp_path), nodes=[node])
    assert lab_distribution(state) == "kubeadm", "unreadable: node.yaml's default"
    config.write_text(yaml.safe_dump({"kubernetes": {"distribution": "k3s"}}))
    assert lab_distribution(state) == "k3s"


def test_killall_unmounts_like_k3s_killall_deepest_first() -> None:
    mounts = textwrap.dedent(
        """\
        proc /proc proc rw 0 0
        tmpfs /run/k3s tmpfs rw 0 0
        shm /run/k3s/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm tmpfs rw 0 0
        tmpfs /var/lib/kubelet/pods/uid/volumes/kubernetes.io~projected/kube-api-access tmpfs rw 0 0
        nsfs /run/netns/cni-1234 nsfs rw 0 0
        nsfs /run/netns/ek8sl-control0 nsfs rw 0 0
        tmpfs /run/k3sother tmpfs rw 0 0
        tmpfs /var/lib/kubelet/pods/with\\040space tmpfs rw 0 0
        """
    )
    got = k3s.mounts_under(mounts, ["/run/k3s/", "/var/lib/kubelet/pods", "/run/netns/cni-"])
    assert got == [
        "/var/lib/kubelet/pods/with space",
        "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~projected/kube-api-access",
        "/run/netns/cni-1234",
        "/run/k3s/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm",
    ]


def test_killall_drops_only_kubernetes_cni_and_flannel_rules() -> None:
    saved = "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n-A FORWARD -j KUBE-FORWARD\n"
    saved += '-A FORWARD -s 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT\n'
    saved += "-A CNI-FORWARD -j ACCEPT\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"
    kept = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n"
    assert k3s.iptables_without_k8s(saved) == kept


def test_a_lab_node_reset_never_touches_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = k3s.K3sDriver(cfg(tmp_path))  # root is not "/": a lab node in process mode

    def forbidden() -> None:
        raise AssertionError("network namespaces, links and iptables are the lab's, not the node's")

    monkeypatch.setattr(driver, "_remove_cni_network", forbidden)
    cni = tmp_path / "root/var/lib/cni/networks"
    cni.mkdir(parents=True)
    driver.reset()
    assert not cni.parent.exists()


def test_the_embedded_etcd_follows_the_kubernetes_minor() -> None:
    assert [k3s.embedded_etcd(v) for v in ("v1.32.1", "v1.33.4", "v1.34.0", "v1.36.2")] == ["3.5", "3.5", "3.6", "3.6"]
    assert k3s.k3s_minor("v1.36.2") == 36
    with pytest.raises(ValueError):
        k3s.k3s_minor("latest")
