"""node.yaml validation: bad input exits 2, names the field and the file, writes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.config import ConfigError, load_config

GOOD = {
    "cluster": "default",
    "role": "control",
    "node": {"name": "control0", "address": "10.0.0.21", "interface": "eth0"},
    "vip": {"address": "10.0.0.99", "hostname": "vip.kubernetes.local", "port": 8443},
}


def write(tmp_path: Path, data: object) -> Path:
    share = tmp_path / "share"
    if isinstance(data, dict):
        data = {**data, "share": {"path": str(share)}, "root": str(tmp_path / "root")}
    path = tmp_path / "node.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.kubernetes.pod_subnet == "10.249.0.0/16"
    assert cfg.vip.port == 8443 and cfg.phylactery.port == 9999
    assert cfg.host_path("/etc/kubernetes") == tmp_path / "root/etc/kubernetes"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"role": "master"}, "role"),
        ({"node": {"name": "Control_0", "address": "10.0.0.21"}}, "node.name"),
        ({"node": {"name": "control0", "address": "10.0.0.256"}}, "node.address"),
        ({"kubernetes": {"pod_subnet": "10.249.0.1/16"}}, "kubernetes.pod_subnet"),
        ({"kubernetes": {"version": "1.32"}}, "kubernetes.version"),
        ({"vip": {"port": 70000}}, "vip.port"),
        ({"kubernetes": {"distribution": "rke2"}}, "kubernetes.distribution"),
        ({"cluster": "Lab_1"}, "cluster"),
        ({"timeouts": {"lease_ttl_s": 2, "heartbeat_interval_s": 2}}, "timeouts"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_config_names_the_field(tmp_path: Path, change: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {**GOOD, **change}))
    assert field in str(err.value) and "node.yaml" in str(err.value)


@pytest.mark.parametrize("command", [["node", "run"], ["phylactery"], ["config", "check"]])
def test_cli_exits_2_names_the_field_and_leaves_the_share_untouched(tmp_path: Path, command: list[str]) -> None:
    path = write(tmp_path, {**GOOD, "kubernetes": {"service_subnet": "nonsense"}})
    args = [*command, str(path)] if command[0] == "config" else [*command, "--config", str(path)]
    res = subprocess.run([sys.executable, "-m", "manager", *args], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "kubernetes.service_subnet" in res.stderr and str(path) in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "share").exists() and not (tmp_path / "root").exists()


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "role: [unclosed"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
