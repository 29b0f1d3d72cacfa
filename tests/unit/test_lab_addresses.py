"""The lab's address plan (docs/lab.md): reference addresses for the first nodes, one /24."""

from __future__ import annotations

import pytest

from lab.state import MAX_WORKERS, VIP, control_address, worker_address


def test_first_nodes_keep_the_reference_addresses() -> None:
    assert [control_address(i) for i in range(3)] == ["10.0.0.21", "10.0.0.22", "10.0.0.23"]
    assert worker_address(0) == "10.0.0.41" and worker_address(57) == "10.0.0.98"


def test_workers_beyond_58_skip_the_vip_and_stay_in_the_24() -> None:
    addresses = [worker_address(i) for i in range(MAX_WORKERS)]
    assert worker_address(58) == "10.0.0.100" and addresses[-1] == "10.0.0.254"
    assert len(set(addresses)) == MAX_WORKERS >= 100
    assert VIP not in addresses and "10.0.0.13" not in addresses
    assert not set(addresses) & {control_address(i) for i in range(9)}
    with pytest.raises(ValueError):
        worker_address(MAX_WORKERS)
