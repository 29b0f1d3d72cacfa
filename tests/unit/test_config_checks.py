"""Config checks beyond one field: overlapping Pod, Service and node networks are refused
(node.yaml and the inventory, exit 2 naming both fields, nothing written); a number of control
nodes that etcd's quorum serves badly is warned about, with the reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import ConfigError, load_config, network_overlap
from manager.inventory import Inventory

NODE = {
    "role": "control",
    "node": {"name": "control0", "address": "10.0.0.21"},
    "vip": {"address": "10.0.0.99", "prefix_length": 24},
}


def ek8s(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "manager", *args], capture_output=True, text=True, timeout=60)


def test_disjoint_networks_pass_and_the_first_overlap_names_both() -> None:
    assert network_overlap({"a": "10.249.0.0/16", "b": "10.96.0.0/12", "c": "10.0.0.0/24"}) is None
    assert network_overlap({"a": "10.249.0.0/16", "b": "10.0.0.0/8", "c": "10.0.0.0/24"}) == (
        "a 10.249.0.0/16 overlaps b 10.0.0.0/8: Pod, Service and node addresses must not share a range"
    )


@pytest.mark.parametrize(
    ("kubernetes", "first", "second"),
    [
        ({"pod_subnet": "10.0.0.0/16"}, "kubernetes.pod_subnet 10.0.0.0/16", "the nodes' network"),
        ({"service_subnet": "10.0.0.0/12"}, "kubernetes.service_subnet 10.0.0.0/12", "the nodes' network"),
        ({"pod_subnet": "10.96.0.0/16"}, "kubernetes.pod_subnet 10.96.0.0/16", "kubernetes.service_subnet"),
    ],
)
def test_node_yaml_with_overlapping_networks_is_refused(
    tmp_path: Path, kubernetes: dict[str, str], first: str, second: str
) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({**NODE, "kubernetes": kubernetes, "share": {"path": str(tmp_path / "share")}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{first} overlaps {second}" in str(err.value)
    res = ek8s("config", "check", str(path))
    assert res.returncode == 2 and f"{first} overlaps {second}" in res.stderr and str(path) in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "share").exists()


def test_the_nodes_network_is_the_vips() -> None:
    # A /16 VIP network takes in 10.0.5.0/24; the default /24 does not.
    ok = {**NODE, "kubernetes": {"pod_subnet": "10.0.5.0/24"}}
    assert load_config_from(ok).kubernetes.pod_subnet == "10.0.5.0/24"
    with pytest.raises(ConfigError, match="overlaps the nodes' network"):
        load_config_from({**ok, "vip": {"address": "10.0.0.99", "prefix_length": 16}})


def load_config_from(data: dict[str, Any]) -> Any:
    from core.config import parse_config

    return parse_config(data, Path("node.yaml"))


def inventory(control: int, workers: int = 2, **extra: Any) -> dict[str, Any]:
    nodes = [
        {
            "name": f"control[0-{control - 1}]",
            "role": "control",
            "address": "10.0.0.21",
            "mac": [f"52:54:00:00:00:{21 + i:02x}" for i in range(control)],
        }
    ]
    if workers:
        nodes.append(
            {
                "name": f"worker[0-{workers - 1}]",
                "role": "worker",
                "address": "10.0.0.41",
                "mac": [f"52:54:00:00:01:{i:02x}" for i in range(workers)],
            }
        )
    return {"cluster": "ek8s", "nodes": nodes, **extra}


def test_an_inventory_with_overlapping_networks_exits_2_and_names_both(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(inventory(3, kubernetes={"pod_subnet": "10.0.0.0/16"})))
    res = ek8s("warewulf", "plan", "--offline", "--version", "4.6", str(path))
    assert res.returncode == 2 and res.stdout == "", res.stdout
    assert "kubernetes.pod_subnet 10.0.0.0/16 overlaps the nodes' network" in res.stderr
    assert "warewulf.netmask" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("control", "warned"),
    [
        (1, "1 control node: etcd needs 1 of 1 members to accept writes, so the loss of any control node"),
        (2, "2 control nodes: etcd needs 2 of 2 members to accept writes, so the loss of any control node"),
        (3, None),
        (4, "4 control nodes: etcd needs 3 of 4 members to accept writes, so it survives the loss of 1, as 3"),
        (5, None),
        (6, "6 control nodes: etcd needs 4 of 6 members to accept writes, so it survives the loss of 2, as 5"),
    ],
)
def test_control_counts_that_quorum_serves_badly_are_warned(control: int, warned: str | None) -> None:
    warning = Inventory.model_validate(inventory(control)).quorum_warning()
    if warned is None:
        assert warning is None
    else:
        assert warning is not None and warning.startswith(f"nodes: {warned}")


def test_the_plan_warns_on_stderr_and_still_plans(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(inventory(2)))
    res = ek8s("warewulf", "plan", "--offline", "--version", "4.6", str(path))
    assert res.returncode == 0, res.stderr
    assert "wwctl" in res.stdout and "warning:" not in res.stdout
    assert f"ek8s: warning: {path}: nodes: 2 control nodes: etcd needs 2 of 2" in res.stderr
    quiet = tmp_path / "three.yaml"
    quiet.write_text(yaml.safe_dump(inventory(3)))
    assert ek8s("warewulf", "plan", "--offline", "--version", "4.6", str(quiet)).stderr == ""
