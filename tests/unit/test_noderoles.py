"""Labels, taints and roles from the inventory (core/noderoles.py): their formats, who may set
which, and the patch that brings a Node in line touching only what the inventory manages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.config import ConfigError, parse_config
from core.drivers.k3s import render_join_config as k3s_join
from core.drivers.kubeadm import render_init_config, render_join_config
from core.noderoles import (
    MANAGED_LABELS,
    MANAGED_TAINTS,
    NodeRoles,
    Taint,
    kubelet_may_set,
    node_patch,
    parse_labels,
    parse_roles,
    parse_taints,
)
from tests.unit.agent_fakes import material


def test_formats_as_kubectl_writes_them() -> None:
    assert parse_labels("slurm.partition=gpu example.com/rack=r1 empty=") == {
        "slurm.partition": "gpu",
        "example.com/rack": "r1",
        "empty": "",
    }
    assert parse_labels({"gpu": True, "count": 4}) == {"gpu": "true", "count": "4"}
    assert parse_taints(["nvidia.com/gpu=present:NoSchedule", "dedicated:NoExecute"]) == (
        Taint("nvidia.com/gpu", "present", "NoSchedule"),
        Taint("dedicated", "", "NoExecute"),
    )
    assert str(Taint("dedicated", "", "NoExecute")) == "dedicated:NoExecute"
    assert Taint("a", "", "NoSchedule").to_api() == {"key": "a", "effect": "NoSchedule"}
    assert parse_roles("gpu storage gpu") == ("gpu", "storage")


@pytest.mark.parametrize(
    ("bad", "parse", "says"),
    [
        ("novalue", parse_labels, "a label is key=value"),
        ("Bad_Prefix.io/x=1", parse_labels, "prefix must be a lower-case DNS subdomain"),
        ("k=has space", parse_labels, "a label is key=value"),
        ("k=" + "v" * 64, parse_labels, "value must be empty or 1-63"),
        ("gpu=true:Sometimes", parse_taints, "Effect one of NoSchedule"),
        ("a=1:NoSchedule a=2:NoSchedule", parse_taints, "a:NoSchedule is given twice"),
        ("-gpu", parse_roles, "a role is 1-63"),
    ],
)
def test_bad_items_are_refused_naming_them(bad: str, parse: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse(bad)  # type: ignore[operator]


def test_a_kubelet_may_set_only_what_node_restriction_allows() -> None:
    # plugin/pkg/admission/noderestriction/admission.go, k8s.io/kubelet/pkg/apis/well_known_labels.go
    for ok in ("slurm.partition", "example.com/rack", "node.kubernetes.io/pool", "topology.kubernetes.io/zone"):
        assert kubelet_may_set(ok), ok
    for refused in (
        "node-role.kubernetes.io/gpu",
        "kubernetes.io/role",
        "x.k8s.io/y",
        "node-restriction.kubernetes.io/a",
    ):
        assert not kubelet_may_set(refused), refused


def test_roles_are_node_role_labels_and_tags_carry_all_three() -> None:
    r = NodeRoles({"slurm.partition": "gpu"}, parse_taints("g=1:NoSchedule"), ("gpu",))
    assert r.all_labels() == {"slurm.partition": "gpu", "node-role.kubernetes.io/gpu": ""}
    assert r.kubelet_labels() == {"slurm.partition": "gpu"}, "roles are Phylactery's to set"
    assert r.tags() == {"ek8s_labels": "slurm.partition=gpu", "ek8s_taints": "g=1:NoSchedule", "ek8s_roles": "gpu"}
    assert NodeRoles().tags() == {} and not NodeRoles()
    later = r.merged(NodeRoles({"slurm.partition": "batch"}, parse_taints("g=2:NoSchedule"), ("storage",)))
    assert later.labels == {"slurm.partition": "batch"} and later.roles == ("gpu", "storage")
    assert later.taints == (Taint("g", "2", "NoSchedule"),)


WANT = NodeRoles({"slurm.partition": "gpu"}, parse_taints("nvidia.com/gpu=present:NoSchedule"), ("gpu",))
CP = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def test_a_node_without_them_gets_them_and_the_note_of_what_is_managed() -> None:
    patch = node_patch({"kubernetes.io/hostname": "w1"}, [CP], {}, WANT)
    assert patch == {
        "metadata": {
            "labels": {"slurm.partition": "gpu", "node-role.kubernetes.io/gpu": ""},
            "annotations": {
                MANAGED_LABELS: "node-role.kubernetes.io/gpu,slurm.partition",
                MANAGED_TAINTS: "nvidia.com/gpu:NoSchedule",
            },
        },
        "spec": {"taints": [CP, {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
    }, "the control-plane taint nobody in the inventory set stays"


def test_a_node_in_line_needs_no_patch() -> None:
    labels = {"slurm.partition": "gpu", "node-role.kubernetes.io/gpu": "", "team": "hpc"}
    notes = {MANAGED_LABELS: "node-role.kubernetes.io/gpu,slurm.partition", MANAGED_TAINTS: "nvidia.com/gpu:NoSchedule"}
    taints = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule", "timeAdded": None}]
    assert node_patch(labels, taints, notes, WANT) is None


def test_only_what_the_inventory_managed_is_taken_away() -> None:
    labels = {"slurm.partition": "gpu", "node-role.kubernetes.io/gpu": "", "team": "hpc"}
    notes = {MANAGED_LABELS: "node-role.kubernetes.io/gpu,slurm.partition", MANAGED_TAINTS: "nvidia.com/gpu:NoSchedule"}
    taints = [
        CP,
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
        {"key": "x", "effect": "NoExecute"},
    ]
    patch = node_patch(labels, taints, notes, NodeRoles({"slurm.partition": "batch"}))
    assert patch is not None
    assert patch["metadata"]["labels"] == {"slurm.partition": "batch", "node-role.kubernetes.io/gpu": None}
    assert "team" not in patch["metadata"]["labels"], "a label someone else set is not touched"
    assert patch["metadata"]["annotations"] == {MANAGED_LABELS: "slurm.partition", MANAGED_TAINTS: None}
    assert patch["spec"]["taints"] == [CP, {"key": "x", "effect": "NoExecute"}]


def test_a_label_the_inventory_never_managed_is_kept_when_it_leaves_nothing() -> None:
    assert node_patch({"gpu": "yes"}, [], {}, NodeRoles()) is None


# -- node.yaml and the drivers' join configs ---------------------------------------------------


def config(role: str, **node: object) -> object:
    return parse_config(
        {"role": role, "node": {"name": "w1" if role == "worker" else "c1", "address": "10.0.0.41", **node}},
        Path("node.yaml"),
    )


def test_node_yaml_takes_the_tags_strings_and_says_which_field_is_wrong() -> None:
    cfg = config("worker", labels="a=b", taints="g=1:NoSchedule", roles="gpu")
    assert cfg.node.scheduling == NodeRoles({"a": "b"}, parse_taints("g=1:NoSchedule"), ("gpu",))  # type: ignore[attr-defined]
    dumped = cfg.model_dump(mode="json")  # type: ignore[attr-defined]
    assert dumped["node"]["taints"] == ["g=1:NoSchedule"], "ek8s config check prints what it reads back"
    with pytest.raises(ConfigError, match=r"node\.taints: .*'g:Bad'"):
        config("worker", taints="g:Bad")


def test_kubeadm_gives_the_kubelet_what_it_may_set_and_keeps_the_control_plane_taint() -> None:
    worker = config("worker", labels="slurm.partition=gpu", taints="g=1:NoSchedule", roles="gpu")
    reg = yaml.safe_load(render_join_config(worker, material(1, 1)))["nodeRegistration"]  # type: ignore[arg-type]
    assert {"name": "node-labels", "value": "slurm.partition=gpu"} in reg["kubeletExtraArgs"]
    assert reg["taints"] == [{"key": "g", "value": "1", "effect": "NoSchedule"}]
    control = config("control", taints="dedicated:NoSchedule")
    init = next(yaml.safe_load_all(render_init_config(control, "abcdef.0123456789abcdef", "0" * 64)))  # type: ignore[arg-type]
    assert init["nodeRegistration"]["taints"] == [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
        {"key": "dedicated", "effect": "NoSchedule"},
    ]
    plain = yaml.safe_load(render_join_config(config("worker"), material(1, 1)))["nodeRegistration"]  # type: ignore[arg-type]
    assert "taints" not in plain and [a["name"] for a in plain["kubeletExtraArgs"]] == ["node-ip"]


def test_k3s_gives_its_node_label_and_node_taint() -> None:
    cfg = parse_config(
        {
            "role": "worker",
            "node": {"name": "w1", "address": "10.0.0.41", "labels": "a=b", "roles": "gpu", "taints": "g:NoSchedule"},
            "kubernetes": {"distribution": "k3s"},
        },
        Path("node.yaml"),
    )
    m = material(1, 1)
    from dataclasses import replace

    token = "K10" + "a" * 64 + "::node:" + "s" * 32
    doc = yaml.safe_load(k3s_join(cfg, replace(m, certificate_key=token, token=token.replace("node", "server"))))
    assert doc["node-label"] == ["a=b"] and doc["node-taint"] == ["g:NoSchedule"]
