"""Secrets stay off command lines (docs/security.md): ``/proc/<pid>/cmdline`` is readable by
every user of a node, so the drivers pass tokens and certificate keys in config files, which
kubeadm (``--config`` for init, join, ``token create`` and ``init phase upload-certs``) and k3s
(``--config``, every flag a key) accept. Checked with stand-in tools that record their own
``/proc/self/cmdline`` while they run, and against the emulated kubeadm's argument rules, which
follow kubeadm's (``ValidateMixedArguments``)."""

from __future__ import annotations

import stat
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from core.config import parse_config
from core.drivers import k3s
from core.drivers.base import Credentials
from core.drivers.kubeadm import KubeadmDriver
from core.joinmaterial import generate_certificate_key, generate_token
from core.share import JoinMaterial
from tests.unit.test_k3s_driver import FAKE_K3S, ca_pem, cfg  # noqa: F401  (ca_pem: a fixture)

# A stand-in kubeadm: records its /proc/self/cmdline and the --config file it was given, and
# leaves what an init leaves (admin.conf, ca.crt) under --rootfs.
FAKE_KUBEADM = textwrap.dedent(
    """\
    #!{python}
    import pathlib, sys
    args = sys.argv[1:]
    root = pathlib.Path(args[args.index("--rootfs") + 1])
    with open(root / "cmdlines", "a") as seen:
        seen.write(open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").decode() + "\\n")
    if "--config" in args:
        config = root / args[args.index("--config") + 1].lstrip("/")
        with open(root / "configs", "a") as kept:
            kept.write(config.read_text() + "\\n---\\n")
    if args[0] == "init" and "phase" not in args:
        (root / "etc/kubernetes/pki").mkdir(parents=True, exist_ok=True)
        (root / "etc/kubernetes/admin.conf").write_text("admin")
        (root / "etc/kubernetes/pki/ca.crt").write_text("CA")
    """
)


class ExpiredEverything(KubeadmDriver):
    """The kubeadm driver on a cluster where both the token and kubeadm-certs expired (the API
    check is what this test does not need: it answers "both expired")."""

    def _join_material_valid(self, material: JoinMaterial) -> tuple[bool, bool]:
        return False, False


def kubeadm_node(tmp_path: Path, role: str = "control") -> KubeadmDriver:
    exe = tmp_path / "kubeadm"
    exe.write_text(FAKE_KUBEADM.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "root").mkdir(exist_ok=True)
    node = parse_config(
        {
            "role": role,
            "node": {"name": "control0" if role == "control" else "worker0", "address": "10.0.0.21"},
            "kubernetes": {"kubeadm": str(exe)},
            "root": str(tmp_path / "root"),
            "service_manager": "process",
            "timeouts": {"command_s": 20},
        },
        Path("node.yaml"),
    )
    return ExpiredEverything(node)


def material(token: str, key: str) -> JoinMaterial:
    return JoinMaterial(
        generation=1,
        epoch=1,
        api_server_endpoint="vip.kubernetes.local:8443",
        token=token,
        token_expires_at=0.0,
        ca_cert_hashes=["sha256:" + "0" * 64],
        certificate_key=key,
        certificate_key_expires_at=0.0,
        ca_cert="CA",
        published_by="control0",
    )


def seen(root: Path) -> str:
    return (root / "cmdlines").read_text()


def test_kubeadm_init_join_and_renewals_pass_tokens_and_keys_in_config_files(tmp_path: Path) -> None:
    driver = kubeadm_node(tmp_path)
    root = tmp_path / "root"
    token, key = generate_token(), generate_certificate_key()
    driver.init(Credentials(token=token, certificate_key=key))
    driver.join(material(token, key))
    renewed, parts = driver.renew_join_material(material(token, key))
    assert parts == ["token", "certificate_key"] and renewed.token != token and renewed.certificate_key != key
    cmdlines = seen(root)
    assert "token create --config /run/ek8s/kubeadm/renew.yaml" in cmdlines
    upload = "init phase upload-certs --upload-certs --config /run/ek8s/kubeadm/renew.yaml"
    assert f"{upload} --skip-certificate-key-print" in cmdlines
    for secret in (token, key, renewed.token, renewed.certificate_key, token.split(".")[1]):
        assert secret not in cmdlines
    configs = (root / "configs").read_text()
    for secret in (token, key, renewed.token, renewed.certificate_key):
        assert secret in configs, "the secrets went by file"
    renewal = [d for d in yaml.safe_load_all(configs) if d and d.get("kind") == "InitConfiguration"][-1]
    assert renewal["certificateKey"] == renewed.certificate_key
    assert renewal["bootstrapTokens"][0]["token"] == renewed.token and renewal["bootstrapTokens"][0]["ttl"] == "86400s"
    assert not (root / "run/ek8s/kubeadm/renew.yaml").exists(), "the renewal's config is removed after use"


def test_the_join_material_controller_renews_only_the_token(tmp_path: Path) -> None:
    driver = kubeadm_node(tmp_path)
    token, key = generate_token(), generate_certificate_key()
    renewed, parts = driver.renew_join_material(material(token, key), ("token",))
    assert parts == ["token"] and renewed.certificate_key == key
    assert "upload-certs" not in seen(tmp_path / "root")


@pytest.fixture
def fake_k3s(tmp_path: Path, ca_pem: bytes) -> Path:  # noqa: F811
    exe = tmp_path / "k3s"
    exe.write_text(FAKE_K3S.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "root").mkdir()
    (tmp_path / "root/ca.pem").write_bytes(ca_pem)
    (tmp_path / "root/mode").write_text("ok")
    return exe


def test_k3s_servers_and_agents_get_their_tokens_by_config_file(tmp_path: Path, fake_k3s: Path) -> None:
    server = k3s.K3sDriver(cfg(tmp_path, k3s=str(fake_k3s)))
    try:
        result = server.init(Credentials(token="the-server-secret", certificate_key="the-agent-secret"))
        config = server.config_path.read_text()
    finally:
        server.reset()
    worker = k3s.K3sDriver(cfg(tmp_path, role="worker", name="worker0", k3s=str(fake_k3s)))
    joined = replace(
        material(
            k3s.secure_token(result.ca_cert_pem, "server", "the-server-secret"),
            k3s.secure_token(result.ca_cert_pem, "node", "the-agent-secret"),
        ),
        ca_cert=result.ca_cert_pem.decode(),
    )
    try:
        worker.join(joined)
        worker_config = worker.config_path.read_text()
    finally:
        worker.reset()
    cmdlines = seen(tmp_path / "root")
    assert "server --config /etc/rancher/k3s/config.yaml" in cmdlines and "agent --config" in cmdlines
    assert "the-server-secret" not in cmdlines and "the-agent-secret" not in cmdlines
    assert "the-server-secret" in config and "the-agent-secret" in worker_config


def test_the_emulated_kubeadm_refuses_config_mixed_with_secret_flags_as_kubeadm_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lab.kubeadm import cli as emulated

    config = tmp_path / "renew.yaml"
    config.write_text("apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n")
    key = generate_certificate_key()
    cases = [
        (["token", "create", "--config", str(config), "--ttl", "1h"], "can not mix '--config' with arguments [ttl]"),
        (
            ["init", "phase", "upload-certs", "--upload-certs", "--config", str(config), "--certificate-key", key],
            "can not mix '--config' with arguments [certificate-key]",
        ),
        (["token", "create", "--config", str(config)], "the InitConfiguration names no bootstrap token"),
    ]
    for argv, message in cases:
        assert emulated.main(argv) == 1
        assert message in capsys.readouterr().err
    # Taken from the file: the emulation goes on to the API (which this test has not).
    config.write_text(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n"
        f"bootstrapTokens: [{{token: {generate_token()}, ttl: 86400s}}]\ncertificateKey: {key}\n"
    )
    for argv in (  # paths under --rootfs, as kubeadm takes them
        ["token", "create", "--config", "/renew.yaml"],
        ["init", "phase", "upload-certs", "--upload-certs", "--config", "/renew.yaml", "--skip-certificate-key-print"],
    ):
        assert emulated.main([*argv, "--rootfs", str(tmp_path)]) == 1
        assert "admin.conf not found" in capsys.readouterr().err
