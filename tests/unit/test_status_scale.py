"""``ek8s status`` at 100 nodes: a line per role, the nodes that need attention first, every
node with ``--all``."""

from __future__ import annotations

from typing import Any

from manager.status import node_problem, render, role_summary


def node(name: str, role: str, phase: str = "watch", ready: bool | None = True, age: float = 3.0) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "phase": phase,
        "heartbeat_age_s": age,
        "ready": ready,
        "last_event": {"event": "node_ready", "t": 1763784000.0, "message": ""},
    }


def doc(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cluster": "default",
        "generation": 1,
        "epoch": 1,
        "ready": True,
        "reason": "",
        "leader": "control0",
        "api_reachable": True,
        "nodes": nodes,
        "etcd_members": ["control0", "control1", "control2"],
        "etcd_quorum": True,
        "vip_holder": "control0",
        "haproxy_backends_up": {},
        "newest_snapshot_age_s": 10.0,
        "attention": [],
    }


def big() -> dict[str, Any]:
    nodes = [node(f"control{i}", "control") for i in range(3)]
    nodes += [node(f"worker{i}", "worker", age=80.0) for i in range(100)]  # workers beat every 90 s
    nodes[10] = node("worker7", "worker", ready=False)
    nodes[50] = node("worker47", "worker", phase="join", ready=None)
    nodes[2] = node("control2", "control", age=45.0)
    return doc(nodes)


def test_problems_follow_the_role_liveness() -> None:
    assert node_problem(node("w", "worker", age=200.0), True) is None  # a worker beats every 90 s
    assert node_problem(node("w", "worker", age=300.0), True) == "heartbeat 300s old"
    assert node_problem(node("c", "control", age=31.0), True) == "heartbeat 31s old"
    assert node_problem(node("w", "worker", phase="failed"), True) == "phase failed"
    assert node_problem(node("w", "worker", ready=False), True) == "not Ready"
    assert node_problem(node("w", "worker", ready=None), True) == "not in the API"
    assert node_problem(node("w", "worker", ready=None), False) is None
    assert node_problem({**node("w", "worker"), "role": None, "phase": None}, True) == "no heartbeat on the share"


def test_a_line_per_role() -> None:
    assert role_summary(big()) == [
        "control: 3 nodes, 3 Ready, 1 need attention; watch 3",
        "worker: 100 nodes, 98 Ready, 2 need attention; watch 99, join 1",
    ]


def test_100_nodes_list_only_those_that_need_attention_first() -> None:
    text = render(big())
    lines = text.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("NODE"))) + 1 :]
    assert [line.split()[0] for line in table[:-1]] == ["control2", "worker7", "worker47"]
    assert table[-1] == "(100 healthy nodes not listed; --all lists every node)"
    assert "worker: 100 nodes, 98 Ready, 2 need attention" in text


def test_all_lists_every_node_attention_first() -> None:
    lines = render(big(), all_nodes=True).splitlines()
    start = lines.index(next(line for line in lines if line.startswith("NODE"))) + 1
    table = lines[start:]
    assert len(table) == 103
    assert [line.split()[0] for line in table[:3]] == ["control2", "worker7", "worker47"]
    assert "not listed" not in "\n".join(lines)


def test_a_small_cluster_lists_every_node() -> None:
    small = doc([node(f"control{i}", "control") for i in range(3)] + [node("worker0", "worker")])
    text = render(small)
    rows = [line for line in text.splitlines() if line.startswith(("control", "worker")) and ":" not in line[:8]]
    assert len(rows) == 4 and "not listed" not in text
