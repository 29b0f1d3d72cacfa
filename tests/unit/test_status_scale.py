"""``ek8s status`` at 123 nodes with long names: columns as wide as their data, the nodes that
need attention first, the healthy ones folded into hostlists, one row per node with ``--all``
or ``-o wide`` (address, generation, boot id), and the verdict the exit status reports."""

from __future__ import annotations

import re
from typing import Any

from manager.status import fold, healthy, node_problem, progress, render, role_summary, table

LONG = "gpu-node-highmem-{:04d}-cluster-a"  # 31 characters: wider than any fixed column was


def node(name: str, role: str, phase: str = "watch", ready: bool | None = True, age: float = 3.0) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "phase": phase,
        "heartbeat_age_s": age,
        "generation": 1,
        "boot_id": f"boot-of-{name}",
        "address": "10.0.0.21",
        "ready": ready,
        "last_event": {"event": "node_ready", "t": 1763784000.0, "message": ""},
    }


def doc(nodes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    d = {
        "cluster": "ek8s",
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
        "selected": False,
        **extra,
    }
    for n in d["nodes"]:
        n["problem"] = node_problem(n, d["api_reachable"])
    return d


def big() -> dict[str, Any]:
    """3 control + 120 workers with long names, 3 that need attention."""
    nodes = [node(f"control{i}", "control") for i in range(3)]
    nodes += [node(LONG.format(i), "worker", age=7200.3 if i == 5 else 80.0) for i in range(1, 121)]
    nodes[10] = node(LONG.format(8), "worker", ready=False)
    nodes[50] = node(LONG.format(48), "worker", phase="join", ready=None)
    return doc(nodes)


def rows(text: str) -> list[str]:
    lines = text.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("NODE")) :]


def columns(header: str) -> list[int]:
    """Where each column starts in the header line."""
    return [m.start() for m in re.finditer(r"(?:(?<=  )|^)\S", header)]


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
        "control: 3 nodes, 3 Ready, 0 need attention; watch 3",
        "worker: 120 nodes, 118 Ready, 3 need attention; watch 119, join 1",
    ]


def test_columns_fit_the_longest_cell_and_never_run_together() -> None:
    lines = table(["NODE", "AGE", "NOTE"], [["a-very-long-node-name", "7200.3s ago", "x"], ["b", "1s", "last"]])
    assert lines == [
        "NODE                   AGE          NOTE",
        "a-very-long-node-name  7200.3s ago  x",
        "b                      1s           last",
    ]


def test_123_nodes_list_what_needs_attention_then_fold_the_healthy() -> None:
    table_rows = rows(render(big()))
    names = [r.split()[0] for r in table_rows[1:]]
    assert names == [
        LONG.format(5),  # heartbeat 7200s old
        LONG.format(8),  # not Ready
        LONG.format(48),  # phase join
        "control[0-2]",
        "gpu-node-highmem-[0001-0004,0006-0007,0009-0047,0049-0120]-cluster-a",
    ]
    start = columns(table_rows[0])
    for r in table_rows:  # every cell starts where its header does, two spaces at least before it
        for col in start[1:]:
            assert r[col - 2 : col] == "  " and r[col] != " ", (r, col)
    assert "heartbeat 7200s old" in table_rows[1] and "7200.3s ago" in table_rows[1]
    assert "<=80.0s ago" in table_rows[-1]


def test_all_lists_every_node_attention_first() -> None:
    table_rows = rows(render(big(), all_nodes=True))
    assert len(table_rows) == 1 + 123
    assert [r.split()[0] for r in table_rows[1:4]] == [LONG.format(5), LONG.format(8), LONG.format(48)]


def test_wide_shows_address_generation_and_boot_id_for_every_node() -> None:
    table_rows = rows(render(big(), "wide"))
    assert table_rows[0].split() == [
        "NODE", "ROLE", "PHASE", "READY", "ADDRESS", "GEN", "BOOT", "ID", "HEARTBEAT", "ATTENTION", "LAST", "EVENT"
    ]  # fmt: skip
    assert len(table_rows) == 1 + 123
    row = next(r for r in table_rows if r.startswith(LONG.format(120)))
    assert row.split()[4:7] == ["10.0.0.21", "1", f"boot-of-{LONG.format(120)}"]


def test_folding_groups_by_role_phase_and_readiness() -> None:
    groups = fold([node("w1", "worker"), node("w2", "worker"), node("c0", "control"), node("w3", "worker", ready=None)])
    assert [(names, len(g)) for names, g in groups] == [("c0", 1), ("w3", 1), ("w[1-2]", 2)]


def test_the_verdict() -> None:
    assert healthy(doc([node("c0", "control"), node("w0", "worker")]))
    assert not healthy(big())  # three nodes need attention
    assert not healthy(doc([node("c0", "control")], ready=False))  # the generation is not ready
    assert not healthy(doc([node("c0", "control", ready=None)], api_reachable=False))  # readiness unknown
    assert not healthy(doc([]))  # nothing reported
    snapshotless = [{"problem": "no etcd snapshot on the share", "heals": "..."}]
    assert not healthy(doc([node("c0", "control")], attention=snapshotless))
    # NODES narrowed the view: the cluster's own problems are not theirs.
    assert healthy(doc([node("w0", "worker")], attention=snapshotless, selected=True))


def test_progress_says_what_it_waits_for() -> None:
    assert progress(big(), 12.4) == (
        "[   12s] generation 1 ready; 120/123 nodes Ready; waiting for gpu-node-highmem-[0005,0008,0048]-cluster-a"
    )
    d = doc([node("c0", "control", ready=None)], api_reachable=False, ready=False)
    assert progress(d, 0) == "[    0s] generation 1 not ready; 0/1 nodes Ready; the API behind the VIP does not answer"
