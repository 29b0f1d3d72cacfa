"""The kubeadm driver's per-version choices and its handling of what kubeadm leaves, without
root: a stand-in ``kubeadm`` (a shell script that prints what the test gives it and exits
with its code) and stand-in etcd tools on a private PATH."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from core.config import parse_config
from core.drivers import DriverError
from core.drivers.kubeadm import KubeadmDriver, PreflightFailed, preflight_errors

# What kubeadm 1.32 prints when preflight fails (preflight/checks.go Error, inside the phase error).
PREFLIGHT_1_32 = """[preflight] Running pre-flight checks
error execution phase preflight: [preflight] Some fatal errors occurred:
\t[ERROR Port-2380]: Port 2380 is in use
\t[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty
[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`
To see the stack trace of this error execute with --v=5 or higher
"""
# ... and since 1.34 (kubernetes#132080): the block on stderr, then "preflight checks failed".
PREFLIGHT_1_34 = """[preflight] Running pre-flight checks
[preflight] Some fatal errors occurred:
\t[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty
[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`
error: error execution phase preflight: preflight checks failed
To see the stack trace of this error execute with --v=5 or higher
"""


def driver(tmp_path: Path, version: str = "v1.36.4", output: str = "", code: int = 0) -> KubeadmDriver:
    """A kubeadm driver for a control node under ``tmp_path/root`` whose kubeadm is a script
    that records its arguments in ``tmp_path/args``, prints ``output`` and exits ``code``."""
    script = tmp_path / "kubeadm"
    (tmp_path / "out").write_text(output)
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/args\ncat {tmp_path}/out\nexit {code}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    data = {
        "role": "control",
        "node": {"name": "control0", "address": "10.0.0.21"},
        "kubernetes": {"version": version, "kubeadm": str(script)},
        "root": str(tmp_path / "root"),
        "timeouts": {"command_s": 20},
    }
    return KubeadmDriver(parse_config(data, Path("node.yaml")))


@pytest.mark.parametrize("output", [PREFLIGHT_1_32, PREFLIGHT_1_34], ids=["1.32", "1.34+"])
def test_a_preflight_refusal_names_each_failed_check(tmp_path: Path, output: str) -> None:
    d = driver(tmp_path, output=output, code=1)
    with pytest.raises(PreflightFailed) as err:
        d.join(_material())
    assert "DirAvailable--var-lib-etcd" in err.value.checks
    assert err.value.checks["DirAvailable--var-lib-etcd"] == "/var/lib/etcd is not empty"
    assert str(err.value).startswith("kubeadm preflight refused: ")
    assert "DirAvailable--var-lib-etcd (/var/lib/etcd is not empty)" in str(err.value)
    assert isinstance(err.value, DriverError) and err.value.returncode == 1


def test_preflight_errors_reads_every_error_line() -> None:
    assert preflight_errors(PREFLIGHT_1_32) == {
        "Port-2380": "Port 2380 is in use",
        "DirAvailable--var-lib-etcd": "/var/lib/etcd is not empty",
    }
    assert preflight_errors("error execution phase check-etcd: etcd cluster is not healthy") == {}


def test_another_failure_stays_a_plain_driver_error(tmp_path: Path) -> None:
    d = driver(tmp_path, output="error execution phase check-etcd: etcd cluster is not healthy\n", code=1)
    with pytest.raises(DriverError) as err:
        d.join(_material())
    assert not isinstance(err.value, PreflightFailed)


def _etcd_data(d: KubeadmDriver) -> Path:
    data = d.cfg.host_path("/var/lib/etcd")
    (data / "member/snap").mkdir(parents=True)
    (data / "member/snap/db").write_bytes(b"x")
    return data


@pytest.mark.parametrize("code", [0, 1])
def test_a_whole_cluster_reset_empties_what_kubeadm_leaves_in_var_lib_etcd(tmp_path: Path, code: int) -> None:
    # --skip-phases=remove-etcd-member skips the only phase that empties the data directory
    # (cmd/phases/reset/removeetcdmember.go); the driver empties it, even when kubeadm failed.
    d = driver(tmp_path, code=code)
    data = _etcd_data(d)
    if code:
        with pytest.raises(DriverError):
            d.reset(whole_cluster=True)
    else:
        d.reset(whole_cluster=True)
    assert (tmp_path / "args").read_text().split()[:3] == ["reset", "-f", "--skip-phases=remove-etcd-member"]
    assert data.is_dir() and not any(data.iterdir())


def test_a_single_node_reset_leaves_var_lib_etcd_to_kubeadm(tmp_path: Path) -> None:
    d = driver(tmp_path)
    data = _etcd_data(d)
    d.reset()
    assert (tmp_path / "args").read_text().split()[:2] == ["reset", "-f"]
    assert "--skip-phases=remove-etcd-member" not in (tmp_path / "args").read_text()
    assert (data / "member/snap/db").exists(), "kubeadm's remove-etcd-member phase empties it, not the driver"


def _tools(tmp_path: Path, *names: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        tool = bin_dir / name
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.mark.parametrize("version", ["v1.32.3", "v1.36.4"])
def test_etcdutl_restores_in_every_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    bin_dir = _tools(tmp_path, "etcdutl", "etcdctl", monkeypatch=monkeypatch)
    assert driver(tmp_path, version).etcd_restore_tool() == str(bin_dir / "etcdutl")


def test_etcdctl_restores_only_while_kubeadm_runs_etcd_3_5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = _tools(tmp_path, "etcdctl", monkeypatch=monkeypatch)
    assert driver(tmp_path, "v1.33.1").etcd_restore_tool() == str(bin_dir / "etcdctl")
    with pytest.raises(DriverError) as err:
        driver(tmp_path, "v1.34.0").etcd_restore_tool()
    assert "etcdutl not found: kubeadm v1.34 runs etcd 3.6, whose etcdctl has no 'snapshot restore'" in str(err.value)
    assert err.value.returncode == 127


def test_no_tool_at_all_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tools(tmp_path, monkeypatch=monkeypatch)
    with pytest.raises(DriverError, match="neither etcdutl nor etcdctl found"):
        driver(tmp_path, "v1.32.1").etcd_restore_tool()


def test_node_yaml_names_the_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.defpath)
    tool = tmp_path / "my-etcdutl"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    d = driver(tmp_path)
    cfg = d.cfg.model_copy(update={"kubernetes": d.cfg.kubernetes.model_copy(update={"etcdutl": str(tool)})})
    assert KubeadmDriver(cfg).etcd_restore_tool() == str(tool)


def test_the_driver_writes_the_config_api_every_supported_kubeadm_reads(tmp_path: Path) -> None:
    import yaml

    d = driver(tmp_path, "v1.32.1")
    d.join(_material())
    written = yaml.safe_load(d.cfg.host_path("/run/ek8s/kubeadm/join.yaml").read_text())
    assert written["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert d.kubelet_service == "kubelet"


def _material():  # type: ignore[no-untyped-def]
    from core.share import JoinMaterial

    return JoinMaterial(
        generation=1,
        epoch=1,
        api_server_endpoint="vip.kubernetes.local:8443",
        token="abcdef.0123456789abcdef",
        token_expires_at=0.0,
        ca_cert_hashes=["sha256:" + "0" * 64],
        certificate_key="0" * 64,
        certificate_key_expires_at=0.0,
        ca_cert="",
        published_by="control0",
    )
