"""A rolling k3s upgrade by reimaging (docs/operations.md): a 3 + 2 lab of the EMULATED k3s
(lab/k3s.py: real etcd, emulated supervisor, API server and kubelet) at v1.34.2 goes to v1.35.2
one node at a time, servers first then agents (docs.k3s.io/upgrades/manual: "upgrade server
nodes first one at a time, then any agent nodes").

One step only (processes mode; the refused skip and the rollback are kubeadm's module,
tests/lab/test_upgrade.py, whose lab class and rollout check this one shares): ConfigMaps and
two Pods under a PodDisruptionBudget created first and read back, a 10 Hz probe on the VIP.
k3s has no cluster-wide step: no ``kubeadm-config`` exists, and each k3s server carries its
control plane at its binary's version (nothing replaces the ClusterConfiguration).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab.kit import in_order
from tests.lab.test_upgrade import Upgrade, boot, roll

FROM, TO = "v1.34.2", "v1.35.2"


class K3sUpgrade(Upgrade):
    prefix = "ek8sr"


@pytest.fixture(scope="module")
def up_k3s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upgrade]:
    """3 + 2, k3s, Kubernetes v1.34.2 (:func:`tests.lab.test_upgrade.boot`)."""
    yield from boot(tmp_path_factory, K3sUpgrade, "--distribution", "k3s", "--kubernetes-version", FROM)


@pytest.fixture(autouse=True)
def _in_order(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from in_order(request, "up_k3s")


@pytest.mark.lab
def test_a_k3s_rolling_upgrade_servers_then_agents_keeps_the_api_the_budget_and_every_object(
    up_k3s: Upgrade,
) -> None:
    up = up_k3s
    assert up.up is not None and up.up.returncode == 0, (up.up.stdout + up.up.stderr)[-3000:]
    up.create("before-k3s-upgrade-a", "before-k3s-upgrade-b")
    plan = up.upgrade("--to", TO, "--dry-run")  # the distribution found from the API
    assert f"of cluster default (k3s): {FROM} -> {TO}" in plan.stdout, plan.stdout
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "cluster config" not in plan.stdout and "addons" not in plan.stdout, plan.stdout
    assert f"control0 -> ek8s-k3s-{TO}" in plan.stdout and f"worker1 -> ek8s-k3s-{TO}" in plan.stdout
    res, _ = roll(up, TO, "--distribution", "k3s")
    assert "ClusterConfiguration" not in res.stdout and "kube-proxy" not in res.stdout, res.stdout
