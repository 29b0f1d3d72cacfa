"""Phylactery's HTTP API over real HTTP (aiohttp test server): auth, bad input, status."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.config import parse_config
from core.drivers import driver_for
from phylactery.app import make_app
from phylactery.service import Phylactery

POSTS = ["/v1/refresh", "/v1/prune", "/v1/join-material", "/v1/remove"]


def make_phylactery(tmp_path: Path) -> Phylactery:
    cfg = parse_config(
        {
            "role": "control",
            "node": {"name": "control0", "address": "10.0.0.21"},
            "share": {"path": str(tmp_path / "share")},
            "root": str(tmp_path / "root"),
            "service_manager": "process",
        },
        tmp_path / "node.yaml",
    )
    p = Phylactery(cfg, driver_for(cfg))
    p.store.ensure()
    return p


def call(tmp_path: Path, requests: list[tuple[str, str, dict[str, str], Any]]) -> list[tuple[int, Any]]:
    async def _run() -> list[tuple[int, Any]]:
        p = make_phylactery(tmp_path)
        token = p.store.read_token()
        out = []
        async with TestClient(TestServer(make_app(p, token))) as client:
            for method, path, headers, body in requests:
                headers = {k: v.replace("{token}", token) for k, v in headers.items()}
                kwargs = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
                resp = await client.request(method, path, headers=headers, **kwargs)
                out.append((resp.status, await resp.json(content_type=None)))
        return out

    return asyncio.run(_run())


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic {token}", "Bearer "])
def test_every_post_needs_the_bearer_token(tmp_path: Path, path: str, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    [(status, body)] = call(tmp_path, [("POST", path, headers, {"name": "x", "address": "10.0.0.1"})])
    assert status == 401
    assert "token" in body["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("{not json", "JSON"),
        ("[1, 2]", "object"),
        ({"address": "10.0.0.22", "boot_id": "b"}, "name"),
        ({"name": "control1", "boot_id": "b"}, "address"),
        ({"name": "control1", "address": "10.0.0.300", "boot_id": "b"}, "address"),
        ({"name": "control1", "address": 7, "boot_id": "b"}, "address"),
        ({"name": "control1", "address": "10.0.0.22"}, "boot_id"),
    ],
)
def test_malformed_prune_bodies_get_400_with_a_json_error(tmp_path: Path, body: Any, field: str) -> None:
    auth = {"Authorization": "Bearer {token}", "Content-Type": "application/json"}
    [(status, answer)] = call(tmp_path, [("POST", "/v1/prune", auth, body)])
    assert status == 400
    assert field in answer["error"]


def test_prune_of_the_serving_node_is_refused_and_unreachable_stores_give_503(tmp_path: Path) -> None:
    auth = {"Authorization": "Bearer {token}"}
    (s1, a1), (s2, a2) = call(
        tmp_path,
        [
            ("POST", "/v1/prune", auth, {"name": "control0", "address": "10.0.0.21", "boot_id": "b"}),
            ("POST", "/v1/prune", auth, {"name": "control1", "address": "10.0.0.22", "boot_id": "b"}),
        ],
    )
    assert s1 == 409 and "this node" in a1["error"]
    assert s2 == 503 and "kubeconfig" in a2["error"]


def test_prune_of_a_node_alive_in_another_boot_is_refused(tmp_path: Path) -> None:
    from core.share import ShareStore

    share = ShareStore(tmp_path / "share", "default", "control1")
    share.ensure()
    share.heartbeat("boot-that-runs", "control", "watch", 1)  # control1 is alive, in this boot
    auth = {"Authorization": "Bearer {token}"}
    [(status, answer)] = call(
        tmp_path, [("POST", "/v1/prune", auth, {"name": "control1", "address": "10.0.0.22", "boot_id": "another"})]
    )
    assert status == 409 and "alive in another boot (boot-that-runs" in answer["error"]


def test_join_material_before_the_generation_is_ready_is_a_409(tmp_path: Path) -> None:
    [(status, body)] = call(tmp_path, [("POST", "/v1/join-material", {"Authorization": "Bearer {token}"}, {})])
    assert status == 409 and "not ready" in body["error"]


def test_refresh_with_token_is_accepted(tmp_path: Path) -> None:
    [(status, body)] = call(tmp_path, [("POST", "/v1/refresh", {"Authorization": "Bearer {token}"}, {})])
    assert status == 202 and body == {"accepted": True}


def test_status_and_healthz_documented_keys(tmp_path: Path) -> None:
    (hs, health), (ss, status) = call(tmp_path, [("GET", "/healthz", {}, None), ("GET", "/v1/status", {}, None)])
    assert hs == 503 and health == {"ok": False, "node": "control0"}, "not started yet"
    assert ss == 200
    assert set(status) >= {
        "node",
        "role",
        "cluster",
        "generation",
        "ready",
        "leader",
        "members",
        "haproxy",
        "keepalived",
        "etcd",
    }
    assert set(status["haproxy"]) >= {"running", "reloads", "backends"}
    assert set(status["keepalived"]) >= {"running", "vip", "vip_held"}
    assert set(status["etcd"]) == {"members", "quorum", "error"}
    assert status["node"] == "control0" and status["role"] == "control"


# -- the operator's removal, the etcd view and the published inventory -------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"address": "10.0.0.22", "user": "alice"}, "name"),
        ({"name": "Control1", "address": "10.0.0.22", "user": "alice"}, "name"),
        ({"name": "control1", "address": "10.0.0.256", "user": "alice"}, "address"),
        ({"name": "control1", "address": "10.0.0.22"}, "user"),
        ({"name": "control1", "address": "10.0.0.22", "user": "a b"}, "user"),
    ],
)
def test_malformed_remove_bodies_get_400_naming_the_field(tmp_path: Path, body: Any, field: str) -> None:
    [(status, answer)] = call(tmp_path, [("POST", "/v1/remove", {"Authorization": "Bearer {token}"}, body)])
    assert status == 400 and f"field '{field}'" in answer["error"]


def test_remove_of_the_serving_node_is_refused_and_without_etcd_it_is_503(tmp_path: Path) -> None:
    auth = {"Authorization": "Bearer {token}"}
    (s1, a1), (s2, a2) = call(
        tmp_path,
        [
            ("POST", "/v1/remove", auth, {"name": "control0", "address": "10.0.0.21", "user": "alice"}),
            ("POST", "/v1/remove", auth, {"name": "control1", "address": "10.0.0.22", "user": "alice"}),
        ],
    )
    assert s1 == 409 and "its own Phylactery" in a1["error"]
    assert s2 == 503 and "runs no etcd member yet" in a2["error"]


def test_remove_that_would_cost_the_quorum_is_refused(tmp_path: Path) -> None:
    import ssl

    p = make_phylactery(tmp_path)
    p.driver.etcd_client_context = lambda: ssl.create_default_context()  # type: ignore[method-assign]

    async def etcd_members() -> dict[str, Any]:
        nodes = [("control0", True), ("control1", False), ("control2", True)]
        return {"members": [{"node": n, "is_learner": False, "answers": ok} for n, ok in nodes], "error": None}

    p.etcd_members = etcd_members  # type: ignore[method-assign]
    from phylactery.prune import PruneRefused

    with pytest.raises(PruneRefused, match="after removing control2, 2 voting members need 2 but only 1 answer"):
        asyncio.run(p.remove("control2", "10.0.0.23"))


def test_the_etcd_view_without_a_member_says_why(tmp_path: Path) -> None:
    [(status, body)] = call(tmp_path, [("GET", "/v1/etcd", {}, None)])
    assert status == 200 and body == {"members": [], "error": "no etcd member on this node"}


def test_a_node_the_published_inventory_does_not_list_is_not_pruned_for_a_join(tmp_path: Path) -> None:
    from core.records import InventoryNode, PublishedInventory
    from core.share import ShareStore

    store = ShareStore(tmp_path / "share", "default", "operator")
    store.publish_inventory(
        PublishedInventory(
            cluster="default",
            nodes={"control1": InventoryNode(role="control", address="10.0.0.22")},
            published_by="alice",
            published_at=1.0,
        )
    )
    auth = {"Authorization": "Bearer {token}"}
    (s1, a1), (s2, a2) = call(
        tmp_path,
        [
            ("POST", "/v1/prune", auth, {"name": "worker0", "address": "10.0.0.41", "boot_id": "b"}),
            ("POST", "/v1/prune", auth, {"name": "control1", "address": "10.0.0.99", "boot_id": "b"}),
        ],
    )
    assert s1 == 409 and a1["error"] == (
        "worker0 (10.0.0.41) is not a node of cluster default: the inventory published by alice does not list it "
        "(a node.yaml of another cluster?); nothing removed"
    )
    assert s2 == 409 and "lists it at 10.0.0.22" in a2["error"]
