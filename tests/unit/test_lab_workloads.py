"""The lab's EMULATED Pods, PodDisruptionBudgets and eviction (lab/workloads.py), over real HTTP
through the official ``kubernetes`` client's shapes, with an in-memory store standing in for
etcd (the lab tier runs them on real etcd): the eviction API's 429 under a budget, the
ReplicaSet's replacement, the scheduler's choice, NodeRestriction for a node's own Node."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from lab.workloads import Workloads, node_label_refusal


class Store:
    """What :class:`lab.workloads.Workloads` uses of the API server, in memory; ``who`` is the
    requester (``system:admin`` or ``system:node:<name>``)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.who = "system:admin"

    async def user(self, request: web.Request) -> Any:
        class User:
            name = self.who
            admin = self.who == "system:admin"

        return User()

    async def get_prefix(self, prefix: str) -> list[tuple[str, bytes]]:
        return [(k, json.dumps(v).encode()) for k, v in sorted(self.data.items()) if k.startswith(prefix)]

    async def load(self, key: str) -> dict[str, Any] | None:
        v = self.data.get(key)
        return json.loads(json.dumps(v)) if v is not None else None

    async def store(self, key: str, obj: dict[str, Any]) -> None:
        self.data[key] = obj

    async def delete(self, key: str) -> int:
        return 1 if self.data.pop(key, None) is not None else 0

    def node(self, name: str, ready: bool = True, **spec: Any) -> None:
        cond = [{"type": "Ready", "status": "True" if ready else "False"}]
        node = {"metadata": {"name": name}, "spec": spec, "status": {"conditions": cond}}
        self.data[f"/registry/minions/{name}"] = node


def run(store: Store, steps: Any) -> Any:
    """``steps(client, workloads)`` against an app with the routes :class:`Workloads` adds to
    the API server (eviction, budgets); Pods are created and Nodes cordoned on the store, as
    the API server's own resources would (lab/apiserver.py calls ``admit_pod`` on a create)."""

    async def _run() -> Any:
        app = web.Application()
        w = Workloads(store)  # type: ignore[arg-type]
        w.routes(app.router)
        async with TestClient(TestServer(app)) as client:
            return await steps(client, w)

    return asyncio.run(_run())


RS = {"kind": "ReplicaSet", "name": "web", "controller": True}


def web_pod(name: str, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": {"app": "web"}, "ownerReferences": [RS]}, "spec": spec}


def pods(s: Store, node: str | None = None) -> list[dict[str, Any]]:
    out = [v for k, v in sorted(s.data.items()) if k.startswith("/registry/pods/")]
    return [p for p in out if node is None or p["spec"].get("nodeName") == node]


def cordon(s: Store, node: str, on: bool = True) -> None:
    spec = s.data[f"/registry/minions/{node}"]["spec"]
    if on:
        spec["unschedulable"] = True
    else:
        spec.pop("unschedulable", None)


def test_a_budget_refuses_the_eviction_that_would_break_it_and_replacements_keep_it() -> None:
    s = Store()
    s.node("worker0")
    s.node("worker1")
    s.node("control0", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])

    async def steps(c: TestClient[Any, Any], w: Workloads) -> None:
        for name in ("web-a", "web-b"):
            await w.create_pod("default", web_pod(name))
        assert sorted(p["spec"]["nodeName"] for p in pods(s)) == ["worker0", "worker1"], "spread, not on control0"
        pdb = {"metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}
        resp = await c.post("/apis/policy/v1/namespaces/default/poddisruptionbudgets", json=pdb)
        assert (await resp.json())["status"]["disruptionsAllowed"] == 1
        # worker0 cordoned: the eviction of its Pod is allowed, the replacement goes to worker1.
        cordon(s, "worker0")
        on0 = pods(s, "worker0")[0]["metadata"]["name"]
        assert (await c.post(f"/api/v1/namespaces/default/pods/{on0}/eviction", json={})).status == 201
        on1 = pods(s, "worker1")
        assert len(on1) == 2 and all(p["metadata"]["name"].startswith("web-") for p in on1)
        # worker1 cordoned too: one eviction goes, its replacement has nowhere to go, the next is refused.
        cordon(s, "worker1")
        first, second = (p["metadata"]["name"] for p in on1)
        assert (await c.post(f"/api/v1/namespaces/default/pods/{first}/eviction", json={})).status == 201
        refused = await c.post(f"/api/v1/namespaces/default/pods/{second}/eviction", json={})
        body = await refused.json()
        assert refused.status == 429 and body["reason"] == "TooManyRequests"
        assert body["details"]["causes"][0]["message"] == (
            "The disruption budget web needs 1 healthy pods and has 1 currently"
        )
        pending = [p for p in pods(s) if not p["spec"].get("nodeName")]
        assert len(pending) == 1 and pending[0]["status"]["phase"] == "Pending"
        # Uncordoned: the scheduler binds it.
        cordon(s, "worker0", on=False)
        assert await w.schedule_pending() == [pending[0]["metadata"]["name"]]
        on0 = pods(s, "worker0")
        assert len(on0) == 1 and on0[0]["status"]["phase"] == "Running"

    run(s, steps)


def test_a_node_may_register_only_the_labels_a_kubelet_may_set() -> None:
    assert node_label_refusal("worker0", {"rack": "r1", "node.kubernetes.io/instance-type": "x"}) is None
    assert node_label_refusal("control0", {"node-role.kubernetes.io/control-plane": ""}) is None, "see its docstring"
    assert node_label_refusal("worker0", {"node-role.kubernetes.io/gpu": "", "rack": "r1"}) == (
        'node "worker0" is not allowed to set the following labels: node-role.kubernetes.io/gpu'
    )


def test_an_unowned_pod_is_not_replaced_and_only_admins_evict() -> None:
    s = Store()
    s.node("worker0")

    async def steps(c: TestClient[Any, Any], w: Workloads) -> tuple[int, int, int]:
        body = {"metadata": {"name": "bare"}, "spec": {"nodeName": "worker0", "containers": []}}
        await w.create_pod("default", body)
        s.who = "system:node:worker0"
        refused = (await c.post("/api/v1/namespaces/default/pods/bare/eviction", json={})).status
        s.who = "system:admin"
        evicted = (await c.post("/api/v1/namespaces/default/pods/bare/eviction", json={})).status
        return refused, evicted, len(pods(s))

    assert run(s, steps) == (403, 201, 0)


def test_the_probes_longest_gap_is_between_two_successful_reads(tmp_path: Any) -> None:
    from lab.apiprobe import summary

    tries = [(10.0, True), (10.1, True), (10.2, False), (10.9, False), (11.6, True), (11.7, True), (11.8, False)]
    path = tmp_path / "probe.jsonl"
    lines = [{"t": t, "ok": ok, "ms": 1, "error": "" if ok else f"timeout {t}"} for t, ok in tries]
    path.write_text("".join(json.dumps(d) + "\n" for d in lines) + '{"t": 1')
    assert summary(path) == {
        "tries": 7,
        "failed": 3,
        "longest_gap_s": 1.5,
        "gap_started_at": 10.1,
        "gap_failures": [[0.1, 1, "timeout 10.2"], [0.8, 1, "timeout 10.9"]],
    }
    assert summary(path, since=11.65)["longest_gap_s"] == 0.1, "the window ends in a failure: counted to its end"
    assert summary(path, since=20)["tries"] == 0


def test_the_api_servers_pods_are_scheduled_at_create_and_replaced_after_a_delete() -> None:
    """lab/apiserver.py's own Pod create and delete call the stand-in scheduler and the
    ReplicaSet's replacement, and a node's Node create is held to NodeRestriction's label rule;
    the API server's storage in memory here (etcd in the lab tier)."""
    from lab.apiserver import ApiServer, User

    class MemoryApiServer(ApiServer):
        def __init__(self) -> None:  # no etcd, no CA: the storage methods below stand in
            self.conf, self.version, self.minor, self.server_address = {}, "v1.32.3", 32, None
            self.data: dict[str, tuple[bytes, int]] = {}
            self.revision = 1
            self.workloads = Workloads(self)
            self.who = "system:admin"

        async def user(self, request: web.Request) -> User:
            return User(self.who, {"system:masters"} if self.who == "system:admin" else {"system:nodes"})

        async def _range(self, prefix: str) -> tuple[list[tuple[str, bytes, int]], int]:
            rows = [(k, v, r) for k, (v, r) in sorted(self.data.items()) if k.startswith(prefix)]
            return rows, self.revision

        async def get_prefix(self, prefix: str) -> list[tuple[str, bytes]]:
            return [(k, v) for k, v, _ in (await self._range(prefix))[0]]

        async def put(self, key: str, value: bytes) -> None:
            self.revision += 1
            self.data[key] = (value, self.revision)

        async def delete(self, key: str) -> int:
            return 1 if self.data.pop(key, None) is not None else 0

        async def load(self, key: str) -> dict[str, Any] | None:
            found = self.data.get(key)
            return self._decode(*found) if found else None

        async def create(self, key: str, obj: dict[str, Any]) -> int | None:
            if key in self.data:
                return None
            await self.put(key, self._encode(obj))
            return self.revision

        async def update(self, key: str, obj: dict[str, Any], expect: int | None) -> int | None:
            await self.put(key, self._encode(obj))
            return self.revision

    server = MemoryApiServer()

    async def steps() -> list[Any]:
        app = web.Application(middlewares=[server.statuses])
        server.workloads.routes(app.router)
        app.router.add_route("*", "/{tail:.*}", server.dispatch)
        out: list[Any] = []
        async with TestClient(TestServer(app)) as c:
            for name in ("worker0", "worker1"):
                node = {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
                assert (await c.post("/api/v1/nodes", json=node)).status == 201
            server.who = "system:node:worker2"
            gpu = {"metadata": {"name": "worker2", "labels": {"node-role.kubernetes.io/gpu": ""}}}
            resp = await c.post("/api/v1/nodes", json=gpu)
            out.append((resp.status, (await resp.json())["message"]))
            server.who = "system:admin"
            merge = {"Content-Type": "application/strategic-merge-patch+json"}
            await c.patch("/api/v1/nodes/worker0", json={"spec": {"unschedulable": True}}, headers=merge)
            created = await (await c.post("/api/v1/namespaces/default/pods", json=web_pod("web-a"))).json()
            out.append((created["spec"].get("nodeName"), created["status"]["phase"]))
            await c.delete("/api/v1/namespaces/default/pods/web-a")
            listed = (await (await c.get("/api/v1/pods")).json())["items"]
            out.append([(p["metadata"]["name"].startswith("web-"), p["spec"].get("nodeName")) for p in listed])
        return out

    refused, created, after = asyncio.run(steps())
    assert refused == (
        403,
        'nodes "worker2" is forbidden: node "worker2" is not allowed to set the following labels: '
        "node-role.kubernetes.io/gpu",
    )
    assert created == ("worker1", "Running"), "bound at create to the Node that is not cordoned"
    assert after == [(True, "worker1")], "the ReplicaSet's Pod replaced after its delete"
