"""The lab's node images and the emulated kubeadm's version rule, without root: an image name
stands for the version a node boots (lab/nodeimage.py); a kubeadm two minors newer than the
cluster's ClusterConfiguration refuses to join it with kubeadm's own message, one minor newer
joins (util/config/common.go NormalizeKubernetesVersion); bootstrap tokens and nodes may read
kubeadm-config and nothing else of it (kubeadm's kubeadm:nodes-kubeadm-config Role)."""

from __future__ import annotations

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
