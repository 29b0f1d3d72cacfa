"""Phylactery under bad input: generated request bodies all get a JSON 4xx (or the 503 of a
store that does not answer, for a well-formed prune), never a 500; a forged member record
never reaches keepalived.conf or haproxy.cfg, refused by the registry's reader and by the
renderers on their own."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import NODE_NAME_RE
from core.records import BOOT_ID_RE
from phylactery import render
from phylactery.app import serve
from tests.unit.test_phylactery_http import loopback_tls, make_phylactery

FORGED = '10.0.0.23\n    }\n    notify_master "/bin/sh -c id"\n    unicast_peer {\n        10.0.0.23'


def keepalived_args() -> dict[str, Any]:
    """The arguments of the golden keepalived.conf (tests/golden/keepalived.conf)."""
    return {
        "node": "control0",
        "cluster": "default",
        "generation": 1,
        "address": "10.0.0.21",
        "interface": "eth0",
        "peers": ["10.0.0.21", "10.0.0.23", "10.0.0.22"],
        "vip": "10.0.0.99",
        "prefix_length": 24,
        "virtual_router_id": 51,
        "advert_int": 0.5,
        "is_leader": False,
        "check_script": "/etc/keepalived/check_haproxy.sh",
    }


Server = tuple[str, str, ssl.SSLContext]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Phylactery's app on loopback over TLS, served from a thread: (base URL, the control
    credential, a client context that verifies the server with the share's Phylactery CA)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    p = make_phylactery(tmp)
    server_tls, client_tls = loopback_tls(p, tmp / "tls")
    loop = asyncio.new_event_loop()
    runner = loop.run_until_complete(serve(p, "127.0.0.1", 0, server_tls))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    [site] = runner.sites
    try:
        yield f"https://127.0.0.1:{site.bound_port}", p.store.read_token(), client_tls  # type: ignore[attr-defined]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def post(server: Server, path: str, body: bytes) -> tuple[int, Any]:
    url, token, tls = server
    req = urllib.request.Request(
        url + path,
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=tls) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def well_formed(body: Any) -> bool:
    """What ``POST /v1/prune`` accepts (core/records.py's rules and an IPv4 address)."""
    import ipaddress

    if not isinstance(body, dict):
        return False
    name, address, boot = body.get("name"), body.get("address"), body.get("boot_id")
    if not (isinstance(name, str) and NODE_NAME_RE.match(name) and isinstance(boot, str) and BOOT_ID_RE.match(boot)):
        return False
    try:
        ipaddress.IPv4Address(address)  # type: ignore[arg-type]
    except ValueError:
        return False
    return isinstance(address, str)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELD = st.one_of(
    JSON,
    st.sampled_from(["control1", "10.0.0.22", "boot-x", "../cluster.json", "a\nb", "Control1", "10.0.0.300", ""]),
)
PRUNE_SHAPED = st.fixed_dictionaries({}, optional={"name": FIELD, "address": FIELD, "boot_id": FIELD})
BODIES = st.one_of(
    JSON.map(lambda v: json.dumps(v).encode()),
    PRUNE_SHAPED.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.just(b"[" * 60_000),  # far deeper than json's recursion limit, under the 64 KiB cap
    st.just(b"\xff\xfe{}"),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_every_generated_prune_body_gets_a_json_4xx_never_a_500(server: Server, body: bytes) -> None:
    status, answer = post(server, "/v1/prune", body)
    try:
        parsed: Any = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    if well_formed(parsed):
        assert status in (409, 503), (status, answer)  # the serving node, or no API/etcd here
    else:
        assert status == 400, (status, answer)
        assert "field '" in answer["error"] or "body" in answer["error"]
    assert isinstance(answer, dict) and isinstance(answer.get("error"), str)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, path=st.sampled_from(["/v1/refresh", "/v1/join-material"]))
def test_other_posts_ignore_their_body(server: Server, body: bytes, path: str) -> None:
    status, _ = post(server, path, body)
    assert status == (202 if path == "/v1/refresh" else 409)


@pytest.mark.parametrize("name", ["../cluster.json", "control1/../../x", "a\nb", "x" * 64, "Control1"])
def test_a_name_that_is_no_node_is_refused_before_any_path(server: Server, name: str) -> None:
    status, answer = post(
        server, "/v1/prune", json.dumps({"name": name, "address": "10.0.0.22", "boot_id": "b"}).encode()
    )
    assert status == 400 and answer["error"].startswith("field 'name': ")


def test_a_forged_peer_never_reaches_keepalived_conf() -> None:
    args = keepalived_args()
    args["peers"] = ["10.0.0.22", FORGED]
    with pytest.raises(render.RenderRefused, match=r"^peers: .* is not an IP address; nothing rendered"):
        render.render_keepalived(**args)


@pytest.mark.parametrize(
    ("field", "value"),
    [("address", FORGED), ("interface", "eth0 notify"), ("node", "a\nb"), ("check_script", '/x"; /bin/sh')],
)
def test_the_keepalived_renderer_refuses_on_its_own(field: str, value: str) -> None:
    args = keepalived_args()
    args[field] = value
    with pytest.raises(render.RenderRefused, match=f"^{field}: "):
        render.render_keepalived(**args)


def test_a_forged_backend_never_reaches_haproxy_cfg() -> None:
    with pytest.raises(render.RenderRefused, match=r"^members\.address: "):
        render.Backend("control2", FORGED)
    with pytest.raises(render.RenderRefused, match=r"^members\.name: "):
        render.Backend("control2\n    server evil 6.6.6.6:443", "10.0.0.23")


def test_a_forged_member_record_is_refused_and_reported_by_the_registry_reader(tmp_path: Path) -> None:
    p = make_phylactery(tmp_path)
    record = {
        "name": "control2",
        "address": FORGED,
        "phylactery_url": "https://10.0.0.23:9999",
        "boot_id": "b",
        "generation": 1,
        "registered_at": 0.0,
    }
    (p.store.dir / "members").mkdir(exist_ok=True)
    (p.store.dir / "members/control2.json").write_text(json.dumps(record))
    assert p.store.members() == []
    [event] = [e for e in p.store.events() if e["event"] == "invalid_record"]
    assert (event["node"], event["file"], event["field"]) == ("control0", "members/control2.json", "address")
