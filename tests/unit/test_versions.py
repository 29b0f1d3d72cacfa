"""core/versions.py: parsing, the supported minors, and each behaviour's switch at the minor
its source names (the module's table)."""

from __future__ import annotations

import pytest

from core import versions
from core.config import KubernetesSettings
from core.versions import KubernetesVersion


def test_parse_orders_and_names_versions() -> None:
    v = versions.parse("v1.36.4")
    assert v == KubernetesVersion(1, 36, 4) and str(v) == "v1.36.4" and v.minor_tag == "v1.36"
    assert versions.parse("v1.32.10") > versions.parse("v1.32.9") > versions.parse("v1.31.99")


@pytest.mark.parametrize("bad", ["1.36.4", "v1.36", "v1.36.4-rc.0", "v1.36.4+k3s1", "", "latest"])
def test_parse_refuses_what_is_not_a_release(bad: str) -> None:
    with pytest.raises(ValueError, match=r"must look like v1\.36\.4"):
        versions.parse(bad)


def test_supported_minors_and_the_default() -> None:
    assert versions.SUPPORTED_MINORS == (32, 33, 34, 35, 36)
    assert versions.supported(versions.DEFAULT_KUBERNETES_VERSION).minor == versions.SUPPORTED_MINORS[-1]
    for bad in ("v1.31.9", "v1.37.0", "v2.36.0"):
        with pytest.raises(ValueError, match=r"supported minors are v1\.32 to v1\.36"):
            versions.supported(bad)


def test_node_yaml_default_is_supported_and_unsupported_versions_are_refused() -> None:
    assert KubernetesSettings().version == versions.DEFAULT_KUBERNETES_VERSION
    with pytest.raises(ValueError, match="not supported"):
        KubernetesSettings(version="v1.30.2")


# minor -> expected value, for every supported minor (the table in core/versions.py)
MATRIX = {
    versions.kubeadm_reads_v1beta3: {32: True, 33: True, 34: True, 35: True, 36: False},
    versions.kubeadm_kubelet_local_mode: {32: False, 33: True, 34: True, 35: True, 36: True},
    versions.kubeadm_waits_for_all_components: {32: False, 33: True, 34: True, 35: True, 36: True},
    versions.etcd_minor: {32: (3, 5), 33: (3, 5), 34: (3, 6), 35: (3, 6), 36: (3, 6)},
    versions.etcdctl_restores_snapshots: {32: True, 33: True, 34: False, 35: False, 36: False},
    versions.kubeadm_error_prefix: {32: "", 33: "", 34: "error: ", 35: "error: ", 36: "error: "},
    versions.kubeadm_preflight_error_inline: {32: True, 33: True, 34: False, 35: False, 36: False},
    versions.kubeadm_etcd_join_phase: {
        32: "control-plane-join/etcd",
        33: "etcd-join",
        34: "etcd-join",
        35: "etcd-join",
        36: "etcd-join",
    },
    versions.kubelet_reregisters_deleted_node: {32: False, 33: False, 34: False, 35: False, 36: False},
}


@pytest.mark.parametrize("predicate", list(MATRIX), ids=lambda p: p.__name__)
def test_each_behaviour_switches_where_its_source_says(predicate: object) -> None:
    expected = MATRIX[predicate]  # type: ignore[index]
    assert sorted(expected) == list(versions.SUPPORTED_MINORS)
    for minor, value in expected.items():
        assert predicate(f"v1.{minor}.0") == value, (predicate, minor)  # type: ignore[operator]
        assert predicate(KubernetesVersion(1, minor, 7)) == value  # type: ignore[operator]


def test_predicates_refuse_a_malformed_version() -> None:
    with pytest.raises(ValueError):
        versions.kubelet_reregisters_deleted_node("1.36")
