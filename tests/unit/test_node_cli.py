"""``ek8s node reboot`` and ``ek8s node remove`` as an operator meets them before anything is
done: bad input (exit 2), no terminal without --yes (exit 2), and the refusals that name why
(exit 1, nothing done). The share is a real directory; a loopback HTTPS server with a
certificate of the share's Phylactery CA answers ``GET /v1/etcd`` as the other control nodes'
Phylactery (docs/phylactery.md), only to the control credential."""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from core.credentials import CONTROL
from core.share import MemberRecord, ShareStore
from core.tls import issue_server_certificate, server_context
from manager.cli import cli
from tests.unit.agent_fakes import ready_generation


class FakePhylactery:
    """``GET /v1/etcd`` answering ``members`` (node name -> answers) over TLS, with a server
    certificate of ``store``'s Phylactery CA for 127.0.0.1; 401 without its control credential."""

    def __init__(self, store: ShareStore) -> None:
        self.members: dict[str, bool] = {}
        self.requests: list[str] = []
        phyl = self
        control = store.read_credential(CONTROL)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                phyl.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {control}":
                    self.send_error(401)
                    return
                doc = {
                    "members": [{"node": n, "is_learner": False, "answers": ok} for n, ok in phyl.members.items()],
                    "error": None,
                }
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        cert, key = issue_server_certificate(store.read_phylactery_ca_pair(), "control0", "127.0.0.1")
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "tls.crt").write_bytes(cert)
            (Path(d) / "tls.key").write_bytes(key)
            ctx = server_context(f"{d}/tls.crt", f"{d}/tls.key")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def share(tmp_path: Path) -> Iterator[tuple[Path, FakePhylactery]]:
    store = ready_generation(tmp_path / "share")
    phyl = FakePhylactery(store)
    for n in ("control0", "control1"):
        s = ShareStore(store.dir.parent, "default", n)
        s.heartbeat(f"boot-{n}", "control", "watch", 1)
        s.register_member(MemberRecord(n, "127.0.0.1", phyl.url, f"boot-{n}", 1))
    # A worker heartbeats in the node tree (nodes/heartbeats/): the commands read it there.
    ShareStore(store.dir.parent, "default", "worker0", role="worker").heartbeat("boot-w", "worker", "watch", 1)
    yield tmp_path / "share", phyl
    phyl.server.shutdown()


def run(share: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["node", *args, "--share", str(share)], catch_exceptions=False)


def test_bad_input_is_exit_2_and_nothing_is_asked(share: tuple[Path, FakePhylactery]) -> None:
    path, _ = share
    assert "NODES: 'worker[0' is not a node name or hostlist" in run(path, "reboot", "worker[0").output
    res = run(path, "reboot", "worker0,worker7")
    assert res.exit_code == 2 and "no node worker7 in cluster default" in res.output
    res = run(path, "reboot", "worker0", "--reboot-command", "reboot")
    assert res.exit_code == 2 and "--reboot-command" in res.output
    res = run(path, "remove", "worker9")
    assert res.exit_code == 2 and "no node worker9" in res.output


def test_without_a_terminal_it_says_the_order_and_wants_yes(share: tuple[Path, FakePhylactery]) -> None:
    path, _ = share
    res = run(path, "reboot", "worker0,control[0-1]", "--max-unavailable", "2")
    assert res.exit_code == 2
    assert res.output.index("control0: cordon") < res.output.index("control1: cordon") < res.output.index("worker0")
    assert "add --yes to reboot them from a script" in res.output


def test_removing_a_control_node_below_two_is_refused_naming_why(share: tuple[Path, FakePhylactery]) -> None:
    path, phyl = share
    phyl.members = {"control0": True, "control1": True}
    res = run(path, "remove", "control1", "--yes")
    assert res.exit_code == 1
    assert "control1: refused, removing control1 would leave 1 control node (control0): below 2" in res.output
    assert "nothing done" in res.output
    assert "/v1/etcd" in phyl.requests, "asked over HTTPS with the control credential"
    assert ShareStore(path, "default", "x").read_heartbeat("control1") is not None, "nothing forgotten"


def test_a_node_that_still_runs_is_not_removed_on_no_poweroff(share: tuple[Path, FakePhylactery]) -> None:
    path, _ = share
    res = run(path, "remove", "worker0", "--no-poweroff", "--yes")
    assert res.exit_code == 1 and "worker0 still heartbeats (phase watch" in res.output
