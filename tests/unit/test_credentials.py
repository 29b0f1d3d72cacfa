"""Phylactery's credentials and CA on the share, TLS between Phylactery and its clients, and
who gets a credential at all (docs/security.md)."""

from __future__ import annotations

import asyncio
import json
import ssl
import stat
import urllib.error
from pathlib import Path

import pytest

from core import probes
from core.credentials import CONTROL, WORKER, CredentialSet
from core.share import InvalidShareRecord, MemberRecord, ShareStore
from core.tls import client_context, issue_server_certificate, make_ca, server_context
from leader.peers import peer_urls
from phylactery.app import serve
from tests.unit.agent_fakes import age_heartbeat
from tests.unit.test_phylactery_http import loopback_tls, make_phylactery


def store(tmp_path: Path) -> ShareStore:
    s = ShareStore(tmp_path / "share", "default", "control0")
    s.ensure()
    return s


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_credentials_and_the_ca_are_made_once_where_the_share_split_puts_them(tmp_path: Path) -> None:
    s = store(tmp_path)
    assert not s.token_path.exists(), "ensure() makes no credential: Phylactery's start does"
    s.ensure_credentials()
    control, worker = s.read_credential(CONTROL), s.read_credential(WORKER)
    assert control != worker and len(control) >= 43
    # The control-only tree: the control credential and the CA key; the node tree: the worker's.
    assert s.token_path == s.dir / "phylactery.token" and mode(s.token_path) == 0o600
    assert (s.dir / "nodes/phylactery-worker.token").read_text().strip() == worker
    assert mode(s.dir / "phylactery-ca.key") == 0o600
    assert s.read_phylactery_ca("worker") == s.read_phylactery_ca("control")
    s.ensure_credentials()
    assert (s.read_credential(CONTROL), s.read_credential(WORKER)) == (control, worker), "idempotent"


def test_a_ca_copy_a_worker_changed_is_written_again_at_the_next_start(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.ensure_credentials()
    (s.dir / "nodes/phylactery-ca.crt").write_bytes(make_ca("evil")[0])
    s.ensure_credentials()
    assert s.read_phylactery_ca("worker") == s.read_phylactery_ca("control")


def test_an_empty_credential_file_is_refused_not_compared(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.ensure_credentials()
    (s.dir / "nodes/phylactery-worker.token").write_text("\n")
    with pytest.raises(InvalidShareRecord, match=r"nodes/phylactery-worker\.token"):
        s.read_credentials(WORKER)


def test_rotation_keeps_the_old_value_for_the_grace_window_then_refuses_it(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.ensure_credentials()
    old = s.read_credential(WORKER)
    [control_set, worker_set] = s.rotate_credentials(grace_s=300.0)
    assert worker_set.kind == WORKER and worker_set.current != old and worker_set.previous == old
    until = worker_set.previous_valid_until
    assert until is not None
    assert worker_set.accepts(old, until - 1) and worker_set.accepts(worker_set.current, until - 1)
    assert not worker_set.accepts(old, until) and worker_set.accepts(worker_set.current, until + 1e6)
    assert control_set.previous is not None and control_set.previous != old
    # Without a grace window the old one is refused at once.
    [now_set] = s.rotate_credentials((CONTROL,), grace_s=0.0)
    assert now_set.previous is None and not (s.dir / "phylactery.token.previous").exists()


def test_a_credential_set_accepts_nothing_else() -> None:
    s = CredentialSet(CONTROL, "current", "previous", 100.0)
    assert [s.accepts(v, 50.0) for v in ("current", "previous", "", "curren", "current ", "x" * 43)] == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]


def test_the_server_certificate_names_the_node_address_and_the_ca_verifies_it(tmp_path: Path) -> None:
    ca = make_ca("default")
    cert, key = issue_server_certificate(ca, "control0", "10.0.0.21")
    from cryptography import x509

    c = x509.load_pem_x509_certificate(cert)
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.21"]
    assert san.get_values_for_type(x509.DNSName) == ["control0"]
    (tmp_path / "c.crt").write_bytes(cert)
    (tmp_path / "c.key").write_bytes(key)
    server_context(str(tmp_path / "c.crt"), str(tmp_path / "c.key"))  # the pair loads


def https_status(url: str, tls: ssl.SSLContext | None) -> int | str:
    """GET ``url``: the HTTP status, or the reason it failed."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5, context=tls) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, OSError) as err:
        return type(getattr(err, "reason", err)).__name__


def test_clients_verify_phylactery_and_nothing_is_sent_in_clear_text(tmp_path: Path) -> None:
    """Over real TLS on loopback: a client trusting the share's CA gets its answer; one
    trusting another CA, or reaching a server whose certificate names another address, is
    refused by its own TLS; plain HTTP to the port gets no answer; and the clients of
    core.probes never send to an ``http://`` URL."""
    p = make_phylactery(tmp_path)
    p.started = True
    server_tls, client_tls = loopback_tls(p, tmp_path / "tls")
    other_ca = client_context(make_ca("other")[0])
    wrong = issue_server_certificate(p.store.read_phylactery_ca_pair(), "control0", "10.0.0.21")
    (tmp_path / "w.crt").write_bytes(wrong[0])
    (tmp_path / "w.key").write_bytes(wrong[1])
    wrong_tls = server_context(str(tmp_path / "w.crt"), str(tmp_path / "w.key"))

    async def main() -> dict[str, object]:
        runner = await serve(p, "127.0.0.1", 0, server_tls)
        wrong_runner = await serve(p, "127.0.0.1", 0, wrong_tls)
        port, wrong_port = (next(iter(r.sites)).bound_port for r in (runner, wrong_runner))  # type: ignore[attr-defined]
        try:
            base = f"https://127.0.0.1:{port}"
            out: dict[str, object] = {}
            out["verified"] = await asyncio.to_thread(https_status, base + "/healthz", client_tls)
            out["other CA"] = await asyncio.to_thread(https_status, base + "/healthz", other_ca)
            out["other address"] = await asyncio.to_thread(
                https_status, f"https://127.0.0.1:{wrong_port}/healthz", client_tls
            )
            out["plain http"] = await asyncio.to_thread(https_status, f"http://127.0.0.1:{port}/healthz", None)
            out["probe"] = await asyncio.to_thread(probes.phylactery_healthy, base, client_tls)
            token = p.store.read_token()
            out["status"] = await asyncio.to_thread(probes.phylactery_get, base, "/v1/status", client_tls, token)
            with pytest.raises(urllib.error.URLError, match="not https"):
                probes.phylactery_post(f"http://127.0.0.1:{port}", "/v1/refresh", token, {}, client_tls)
            return out
        finally:
            await runner.cleanup()
            await wrong_runner.cleanup()

    out = asyncio.run(main())
    assert out["verified"] == 200 and out["probe"] is True
    assert out["other CA"] == "SSLCertVerificationError"
    assert out["other address"] == "SSLCertVerificationError"
    assert out["plain http"] in ("RemoteDisconnected", "ConnectionResetError", "BadStatusLine")
    status = out["status"]
    assert isinstance(status, dict) and status["node"] == "control0", "the control credential sees the details"


def test_credentials_go_only_to_live_members_over_https(tmp_path: Path) -> None:
    """Issue 20: the token was sent to every ``members/*.json`` URL, nodes gone for good
    included. Now only to members whose node heartbeated within the liveness TTL and whose URL
    is https (the agent's peers and Phylactery's refresh notices alike)."""
    p = make_phylactery(tmp_path)
    s = p.store
    for name, address, scheme in (
        ("control1", "10.0.0.22", "https"),  # alive
        ("control2", "10.0.0.23", "https"),  # silent for 31 s
        ("control3", "10.0.0.24", "http"),  # alive, but an old record in clear text
        ("gone", "10.0.0.25", "https"),  # never heartbeats: gone for good
    ):
        s.register_member(MemberRecord(name, address, f"{scheme}://{address}:9999", f"boot-{name}", 1))
        if name != "gone":
            ShareStore(s.dir.parent, "default", name).heartbeat(f"boot-{name}", "control", "watch", 1)
    age_heartbeat(s, "control2", 31)
    assert peer_urls(s, "control0", 30.0) == ["https://10.0.0.22:9999"]
    assert [m.name for m in p.controllers.notify.live_peers()] == ["control1"]


def test_the_previous_record_is_json_with_its_end(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.ensure_credentials()
    s.rotate_credentials((WORKER,), grace_s=60.0)
    record = json.loads((s.dir / "nodes/phylactery-worker.token.previous").read_text())
    assert set(record) == {"token", "valid_until", "rotated_at"}
    assert record["valid_until"] - record["rotated_at"] == pytest.approx(60.0)
