"""Phylactery's HTTP API over real HTTP (aiohttp test server): who may call what (the control
and the worker credential, rotation), bad input, status."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.config import parse_config
from core.credentials import CONTROL, WORKER
from core.drivers import driver_for
from core.tls import client_context, issue_server_certificate, server_context
from phylactery import render
from phylactery.app import make_app
from phylactery.auth import Authorizer
from phylactery.service import Phylactery

POSTS = ["/v1/refresh", "/v1/prune", "/v1/join-material", "/v1/remove"]


def make_phylactery(tmp_path: Path) -> Phylactery:
    """A Phylactery of control0 (10.0.0.21) on a temp share that holds its credentials and CA."""
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
    p.store.ensure_credentials()
    return p


def loopback_tls(p: Phylactery, where: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts for a test server on 127.0.0.1: a server certificate for
    that address from the share's Phylactery CA, and a client trusting only that CA."""
    cert, key = issue_server_certificate(p.store.read_phylactery_ca_pair(), p.cfg.node.name, "127.0.0.1")
    where.mkdir(parents=True, exist_ok=True)
    (where / "server.crt").write_bytes(cert)
    (where / "server.key").write_bytes(key)
    server = server_context(str(where / "server.crt"), str(where / "server.key"))
    return server, client_context(p.store.read_phylactery_ca())


def call(
    tmp_path: Path, requests: list[tuple[str, str, dict[str, str], Any]], p: Phylactery | None = None
) -> list[tuple[int, Any]]:
    """Each request through the app; ``{control}`` and ``{worker}`` in a header become the
    share's credentials. The test client's requests come from 127.0.0.1."""

    async def _run() -> list[tuple[int, Any]]:
        phyl = p or make_phylactery(tmp_path)
        tokens = {"{control}": phyl.store.read_credential(CONTROL), "{worker}": phyl.store.read_credential(WORKER)}
        out = []
        async with TestClient(TestServer(make_app(phyl))) as client:
            for method, path, headers, body in requests:
                for k, v in tokens.items():
                    headers = {h: value.replace(k, v) for h, value in headers.items()}
                kwargs = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
                resp = await client.request(method, path, headers=headers, **kwargs)
                out.append((resp.status, await resp.json(content_type=None)))
        return out

    return asyncio.run(_run())


CONTROL_AUTH = {"Authorization": "Bearer {control}"}
WORKER_AUTH = {"Authorization": "Bearer {worker}"}


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic {control}", "Bearer ", "Bearer {control}x"])
def test_every_post_needs_a_credential(tmp_path: Path, path: str, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    [(status, body)] = call(tmp_path, [("POST", path, headers, {"name": "x", "address": "10.0.0.1"})])
    assert status == 401
    assert "credential" in body["error"]


@pytest.mark.parametrize("path", ["/v1/refresh", "/v1/join-material"])
def test_the_worker_credential_may_not_refresh_nor_ask_for_join_material(tmp_path: Path, path: str) -> None:
    [(status, body)] = call(tmp_path, [("POST", path, WORKER_AUTH, {})])
    assert status == 403
    assert body["error"] == f"the worker credential may not call POST {path}: it needs control"


def test_a_worker_prune_from_another_address_than_the_node_it_names_is_forbidden(tmp_path: Path) -> None:
    """The test client asks from 127.0.0.1: a worker credential naming 10.0.0.41 (its own node
    or another, by name or by address) is refused before anything is looked at."""
    bodies = [
        {"name": "worker0", "address": "10.0.0.41", "boot_id": "boot-of-worker1"},  # another node
        {"name": "ghost", "address": "10.0.0.41", "boot_id": "x"},  # a live worker by address
    ]
    answers = call(tmp_path, [("POST", "/v1/prune", WORKER_AUTH, b) for b in bodies])
    for status, answer in answers:
        assert status == 403, answer
        assert answer["error"] == (
            "the request comes from 127.0.0.1, not from 10.0.0.41: the worker credential prunes only "
            "the node it is sent from; nothing removed"
        )


def test_the_control_credential_prunes_any_node_but_the_serving_one(tmp_path: Path) -> None:
    (s1, a1), (s2, a2) = call(
        tmp_path,
        [
            ("POST", "/v1/prune", CONTROL_AUTH, {"name": "control0", "address": "10.0.0.21", "boot_id": "b"}),
            ("POST", "/v1/prune", CONTROL_AUTH, {"name": "worker1", "address": "10.0.0.42", "boot_id": "b"}),
        ],
    )
    assert s1 == 409 and "this node" in a1["error"]
    assert s2 == 503 and "kubeconfig" in a2["error"], "allowed: it reached the (missing) API"


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
    auth = {**CONTROL_AUTH, "Content-Type": "application/json"}
    [(status, answer)] = call(tmp_path, [("POST", "/v1/prune", auth, body)])
    assert status == 400
    assert field in answer["error"]


def test_prune_of_a_node_alive_in_another_boot_is_refused_without_naming_its_boot(tmp_path: Path) -> None:
    from core.share import ShareStore

    share = ShareStore(tmp_path / "share", "default", "control1")
    share.ensure()
    share.heartbeat("boot-that-runs", "control", "watch", 1)  # control1 is alive, in this boot
    [(status, answer)] = call(
        tmp_path,
        [("POST", "/v1/prune", CONTROL_AUTH, {"name": "control1", "address": "10.0.0.22", "boot_id": "another"})],
    )
    assert status == 409 and "control1 is alive in another boot than the requester's" in answer["error"]
    assert "boot-that-runs" not in answer["error"] and "another" not in answer["error"].split("boot", 1)[1]


def test_join_material_before_the_generation_is_ready_is_a_409(tmp_path: Path) -> None:
    [(status, body)] = call(tmp_path, [("POST", "/v1/join-material", CONTROL_AUTH, {})])
    assert status == 409 and "not ready" in body["error"]


def test_refresh_with_the_control_credential_is_accepted(tmp_path: Path) -> None:
    [(status, body)] = call(tmp_path, [("POST", "/v1/refresh", CONTROL_AUTH, {})])
    assert status == 202 and body == {"accepted": True}


def test_status_says_only_healthy_or_not_without_the_control_credential(tmp_path: Path) -> None:
    answers = call(
        tmp_path,
        [
            ("GET", "/healthz", {}, None),
            ("GET", "/v1/status", {}, None),
            ("GET", "/v1/status", WORKER_AUTH, None),
            ("GET", "/v1/status", {"Authorization": "Bearer nope"}, None),
        ],
    )
    (hs, health), *statuses = answers
    assert hs == 503 and health == {"ok": False, "node": "control0"}, "not started yet"
    assert statuses == [(200, {"ok": False})] * 3


def test_status_with_the_control_credential_has_the_documented_keys_and_no_boot_ids(tmp_path: Path) -> None:
    from core.share import MemberRecord

    p = make_phylactery(tmp_path)
    p.store.register_member(MemberRecord("control1", "10.0.0.22", "https://10.0.0.22:9999", "boot-of-control1", 1))
    [(ss, status)] = call(tmp_path, [("GET", "/v1/status", CONTROL_AUTH, None)], p)
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
    assert set(status["keepalived"]) >= {"running", "vip", "vip_held", "scheduling"}
    assert status["keepalived"]["scheduling"] in ("realtime", f"nice {render.VRRP_NICE}")
    assert set(status["etcd"]) == {"members", "quorum", "error"}
    assert status["node"] == "control0" and status["role"] == "control"
    assert status["members"] == [
        {"name": "control1", "address": "10.0.0.22", "phylactery_url": "https://10.0.0.22:9999"}
    ]
    assert "boot-of-control1" not in str(status)


def test_a_rotated_credential_is_accepted_with_the_new_one_until_its_grace_ends(tmp_path: Path) -> None:
    """Rotation without an outage: right after ``rotate_credentials`` the new value is taken
    at once (an unknown credential makes the Authorizer read the share again) and the old one
    still is; past the grace window the old one is refused, the new one still taken."""
    p = make_phylactery(tmp_path)
    import time

    t0 = time.time()
    now = [t0]
    auth = Authorizer(p.store, clock=lambda: now[0])
    old = {k: p.store.read_credential(k) for k in (CONTROL, WORKER)}

    async def run() -> list[tuple[str | None, ...]]:
        seen = [tuple([await auth.identify(f"Bearer {old[k]}") for k in (CONTROL, WORKER)])]
        p.store.rotate_credentials(grace_s=300.0)  # the old ones stay until t0 + 300 s
        new = {k: p.store.read_credential(k) for k in (CONTROL, WORKER)}
        assert new != old
        ids = [await auth.identify(f"Bearer {new[k]}") for k in (CONTROL, WORKER)]
        ids += [await auth.identify(f"Bearer {old[k]}") for k in (CONTROL, WORKER)]
        seen.append(tuple(ids))
        now[0] = t0 + 301.0  # the grace window is over (Unix seconds, the previous value's end)
        ids = [await auth.identify(f"Bearer {new[k]}") for k in (CONTROL, WORKER)]
        ids += [await auth.identify(f"Bearer {old[k]}") for k in (CONTROL, WORKER)]
        seen.append(tuple(ids))
        return seen

    before, during, after = asyncio.run(run())
    assert before == ("control", "worker")
    assert during == ("control", "worker", "control", "worker")
    assert after == ("control", "worker", None, None)


def test_a_new_credential_is_taken_at_once_by_the_running_app(tmp_path: Path) -> None:
    """The app re-reads the share when a credential it does not know comes in (at most once a
    second): a client that read the new value right after ``ek8s credentials rotate`` passes."""
    p = make_phylactery(tmp_path)

    async def run() -> tuple[int, int]:
        async with TestClient(TestServer(make_app(p))) as client:
            first = await client.post("/v1/refresh", headers={"Authorization": f"Bearer {p.store.read_token()}"})
            await asyncio.sleep(1.05)
            p.store.rotate_credentials(grace_s=0.0)  # the old one refused at once
            second = await client.post("/v1/refresh", headers={"Authorization": f"Bearer {p.store.read_token()}"})
            return first.status, second.status

    assert asyncio.run(run()) == (202, 202)


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
    [(status, answer)] = call(tmp_path, [("POST", "/v1/remove", CONTROL_AUTH, body)])
    assert status == 400 and f"field '{field}'" in answer["error"]


def test_remove_of_the_serving_node_is_refused_and_without_etcd_it_is_503(tmp_path: Path) -> None:
    auth = CONTROL_AUTH
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
    p = make_phylactery(tmp_path)
    p.driver.etcd_client_context = lambda: ssl.create_default_context()  # type: ignore[method-assign]

    async def etcd_members() -> dict[str, Any]:
        nodes = [("control0", True), ("control1", False), ("control2", True)]
        return {"members": [{"node": n, "is_learner": False, "answers": ok} for n, ok in nodes], "error": None}

    p.etcd_members = etcd_members  # type: ignore[method-assign]
    from phylactery.prune import PruneRefused

    with pytest.raises(PruneRefused, match="after removing control2, 2 voting members need 2 but only 1 answer"):
        asyncio.run(p.remove("control2", "10.0.0.23"))


def test_the_etcd_view_needs_the_control_credential_and_without_a_member_says_why(tmp_path: Path) -> None:
    (s1, a1), (s2, a2), (s3, a3) = call(
        tmp_path,
        [("GET", "/v1/etcd", headers, None) for headers in ({}, WORKER_AUTH, CONTROL_AUTH)],
    )
    assert s1 == 401 and "credential" in a1["error"]
    assert s2 == 403 and a2["error"] == "the worker credential may not call GET /v1/etcd: it needs control"
    assert s3 == 200 and a3 == {"members": [], "error": "no etcd member on this node"}


def test_the_worker_credential_may_not_remove_a_node(tmp_path: Path) -> None:
    body = {"name": "worker0", "address": "127.0.0.1", "user": "root"}
    [(status, answer)] = call(tmp_path, [("POST", "/v1/remove", WORKER_AUTH, body)])
    assert status == 403
    assert answer["error"] == "the worker credential may not call POST /v1/remove: it needs control"


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
    auth = CONTROL_AUTH
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


def test_haproxy_checks_verify_against_the_published_ca_of_the_current_generation_only(tmp_path: Path) -> None:
    from dataclasses import replace

    from lab import pki
    from leader.election import rule_for
    from phylactery import daemons
    from tests.unit.agent_fakes import material

    p = make_phylactery(tmp_path)
    reconcile = p.controllers.reconcile
    assert reconcile.generation_ca(1) is None, "nothing published yet: checks stay unverified"
    rule = rule_for("control", "control0", "b", 30)
    state, action, _ = p.store.attempt_leadership("10.0.0.21", "boot-control0", rule)
    fence = state.claim()
    assert action == "lead" and fence is not None
    ca = pki.new_ca("kubernetes")[0].decode()
    p.store.publish_join_material(fence, replace(material(fence.generation, fence.epoch), ca_cert=ca))
    assert reconcile.generation_ca(1) == ca
    assert reconcile.generation_ca(2) is None, "join.json of the generation before names the old CA"
    # Named by content: another CA is another file, so haproxy.cfg changes and HAProxy reloads.
    first = daemons.haproxy_ca_file(p.cfg.root, ca)
    assert first.parent == p.cfg.root / "etc/haproxy" and first.name.startswith("cluster-ca-")
    assert daemons.haproxy_ca_file(p.cfg.root, pki.new_ca("kubernetes")[0].decode()) != first
    # A ca_cert that is no certificate leaves the checks unverified rather than the config refused.
    p.store.publish_join_material(fence, material(fence.generation, fence.epoch))  # ca_cert "CA PEM"
    assert reconcile.generation_ca(1) is None
