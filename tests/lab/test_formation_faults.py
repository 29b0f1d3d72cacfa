"""Faults that need a lab of their own: a leader that crashes while it initialises the
cluster (the lab's emulated init is slowed to 6 s so the crash lands inside it), and every
node lost with ``on_cluster_lost: wait``. The faults on a formed cluster are in
test_faults.py, one lab per distribution."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.share import ShareStore
from lab.cluster import Lab
from lab.emulation import Emulation
from tests.conftest import wait_for
from tests.lab.kit import ALL, boot_lab, healthy

LAB_PREFIX = "ek8si"
# make test runs these on processes; EK8S_LAB_TOURS=all runs them on machines as well (as the
# fault tour, see test_faults.py: both pass on both runners).
# The leader's crash during init is judged by the same code for both distributions: make test
# crashes a kubeadm leader; EK8S_LAB_TOURS=all a k3s one too.
MODES = ["processes", *(["machines"] if os.environ.get("EK8S_LAB_TOURS") == "all" else [])]
DISTRIBUTIONS = ["kubeadm", *(["k3s"] if os.environ.get("EK8S_LAB_TOURS") == "all" else [])]


@pytest.mark.lab
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_leader_crash_during_init_is_replaced_and_does_not_split_the_cluster(
    lab: Lab, distribution: str, mode: str
) -> None:
    timeouts = {"lease_ttl_s": 4, "heartbeat_interval_s": 1}
    overrides = {"timeouts": timeouts, "kubernetes": {"distribution": distribution}}
    state = boot_lab(lab, overrides, Emulation(init_s=6.0), wait=False, mode=mode)
    store = ShareStore(Path(state.share), "default", "test")

    def claimed() -> str | None:
        try:
            leader = store.read_state().leader
        except FileNotFoundError:  # no agent has created the share's state yet
            return None
        return leader.node if leader else None

    first = wait_for(claimed, 20, 0.05, "a leader claimed")
    lab.stop_node(state, state.node(first), crash=True)
    survivors = [n for n in ALL if n != first]
    lab.wait_ready(state, 120, since=state.t0, names=survivors)
    new = store.read_state()
    assert new.ready and new.leader is not None and new.leader.node != first and new.epoch == 2
    # The late leader comes back: it joins the new leader's cluster instead of splitting it.
    booted = time.time()
    lab.boot_node(state, state.node(first))
    lab.wait_ready(state, 120, since=booted, names=[first])
    r = healthy(lab, state)
    assert r["generation"] == 1 and store.read_state().epoch == 2


@pytest.mark.lab
@pytest.mark.parametrize("mode", MODES)
def test_every_node_rebooted_with_wait_records_it_and_waits_for_ek8s_reset(lab: Lab, mode: str) -> None:
    state = boot_lab(lab, {"on_cluster_lost": "wait", "timeouts": {"cluster_lost_grace_s": 4}}, mode=mode)
    store = ShareStore(Path(state.share), "default", "test")
    for n in ALL:
        lab.stop_node(state, state.node(n), crash=False)
    booted = time.time()
    for n in ALL:
        lab.boot_node(state, state.node(n))
    lost = wait_for(lambda: [e for e in store.events() if e["event"] == "cluster_lost"], 60, 0.5, "cluster_lost")
    assert "waiting for 'ek8s reset'" in lost[0]["message"] and lost[0]["t"] >= booted
    time.sleep(3)
    assert store.read_state().generation == 1, "'wait' must not start a generation by itself"
    res = subprocess.run(
        [sys.executable, "-m", "manager", "reset", "--share", state.share, "--yes"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    lab.wait_ready(state, 120, since=time.time())
    assert store.read_state().generation == 2
