"""The lab's node images and the emulated kubeadm's version rule, without root: an image name
stands for the version a node boots (lab/nodeimage.py); a kubeadm two minors newer than the
cluster's ClusterConfiguration refuses to join it with kubeadm's own message, one minor newer
joins (util/config/common.go NormalizeKubernetesVersion); bootstrap tokens and nodes may read
kubeadm-config and nothing else of it (kubeadm's kubeadm:nodes-kubeadm-config Role)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.versions import parse
from lab.apiresources import resource
from lab.apiserver import User, allowed
from lab.kubeadm.config import check_minimum_version
from lab.kubeadm.workflow import KubeadmError
from lab.nodeimage import image_version


@pytest.mark.parametrize(
    ("name", "version"),
    [
        ("", "v1.35.2"),
        ("ek8s-control", "v1.35.2"),
        ("ek8s-base", "v1.35.2"),
        ("ek8s-control-v1.36.4", "v1.36.4"),
        ("ek8s-k3s-v1.34.1", "v1.34.1"),
        ("ek8s-control-v1.37.0", None),  # no such image: an unsupported minor
        ("ek8s-broken", None),
        ("ek8s-control-1.36.4", None),
    ],
)
def test_an_image_name_stands_for_a_version_or_for_no_image(name: str, version: str | None) -> None:
    assert image_version(name, "v1.35.2") == version


def test_a_kubeadm_two_minors_newer_refuses_to_join_the_cluster_one_minor_newer_joins() -> None:
    assert str(check_minimum_version("v1.35.2", parse("v1.36.4"))) == "v1.35.2"
    assert str(check_minimum_version("v1.36.4", parse("v1.35.2"))) == "v1.36.4", "an older kubeadm may join"
    with pytest.raises(KubeadmError) as err:
        check_minimum_version("v1.34.1", parse("v1.36.4"))
    assert str(err.value) == (
        "this version of kubeadm only supports deploying clusters with the control plane version >= 1.35.0. "
        "Current version: v1.34.1"
    )


def test_bootstrap_tokens_and_nodes_may_get_kubeadm_config_only() -> None:
    cm = resource("", "configmaps")
    boot = User("system:bootstrap:abcdef", {"system:bootstrappers"})
    node = User("system:node:worker1", {"system:nodes"})
    for user in (boot, node):
        assert allowed(user, "get", cm, "kube-system", "kubeadm-config", "")
        assert not allowed(user, "update", cm, "kube-system", "kubeadm-config", "")
        assert not allowed(user, "get", cm, "kube-system", "kube-proxy", "")


def test_a_boot_runs_the_version_of_the_nodes_image(tmp_path: Path) -> None:
    import json

    import yaml

    from lab.runners import boot_image
    from lab.state import LabNode, LabState

    cfg = tmp_path / "worker0.yaml"
    cfg.write_text(yaml.safe_dump({"kubernetes": {"version": "v1.34.2"}}))
    node = LabNode("worker0", "worker", "10.0.0.41", "ns", str(tmp_path / "root"), str(cfg), str(tmp_path / "w.log"))
    state = LabState("p", str(tmp_path), str(tmp_path / "share"), emulation={"kubernetes_version": "v1.34.2", "x": 1})
    assert boot_image(tmp_path, state, node) == tmp_path / "emulation.json", "no image given: the lab's"
    node.image = "ek8s-base-v1.35.2"
    path = boot_image(tmp_path, state, node)
    assert path == tmp_path / "emulation-worker0.json"
    assert json.loads(path.read_text()) == {"kubernetes_version": "v1.35.2", "x": 1}
    assert yaml.safe_load(cfg.read_text())["kubernetes"]["version"] == "v1.35.2"
    node.image = "ek8s-broken"
    assert boot_image(tmp_path, state, node) is None
    assert "Warewulf has no image 'ek8s-broken'" in (tmp_path / "w.log").read_text()
