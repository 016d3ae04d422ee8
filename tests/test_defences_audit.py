"""The audit chain and erasure: every edit of a logged entry is found at that entry, nothing but
the server writes the log, and an erasure leaves no trace of the customer while its audit entry
holds counts and opaque ids only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from chatserver import audit, privacy, sessions

from .inprocess import App, receive, running_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with running_app(tmp_path) as running:
        yield running


def chain(app: App, n: int = 4) -> list[dict[str, Any]]:
    for k in range(n):
        app.call(audit.record, app.state.store, actor=f"staff:{k}", action="test.action",
                 ip="192.0.2.1", target=f"conversation:{k}", detail={"k": k})
    entries: list[dict[str, Any]] = app.call(app.state.store.all_audit)
    return entries


def _tamper(app: App, sql: str, *args: Any) -> Any:
    """Change the log straight in the SQLite file, as someone with the database but not the
    secret key could, then run the verifier the CLI and the console run."""
    conn = sqlite3.connect(app.settings.data_dir / "chat.db")
    conn.execute(sql, args)
    conn.commit()
    conn.close()
    return app.call(audit.check, app.state.store)


def test_recorded_entries_form_a_chain(app: App) -> None:
    """Ids rise by one, each entry names the previous one's hash, and the log verifies."""
    entries = chain(app)
    assert [e["id"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0]["prev_hash"] == ""
    for before, after in zip(entries, entries[1:], strict=False):
        assert after["prev_hash"] == before["hash"]
    assert app.call(audit.check, app.state.store).intact
    last = entries[-1]
    assert (last["actor"], last["action"], last["ip"], last["target"], last["detail"]) == (
        "staff:3", "test.action", "192.0.2.1", "conversation:3", {"k": 3})


@pytest.mark.parametrize("field", ["at", "actor", "action", "ip", "target", "detail"])
def test_changing_any_field_is_found_at_that_entry(app: App, field: str) -> None:
    """A change to any hashed field of an entry breaks verification exactly there."""
    entries = chain(app)
    victim = entries[-2]["id"]
    value = '{"changed": true}' if field == "detail" else "changed"
    report = _tamper(app, f"UPDATE audit_log SET {field} = ? WHERE id = ?", value, victim)
    assert not report.intact and report.first_broken_id == victim


def test_rewriting_hashes_or_links_is_found(app: App) -> None:
    """A wrong prev_hash, or a hash recomputed with plain SHA-256 (all that is possible without
    the key), is found at the entry changed."""
    entries = chain(app)
    victim = entries[-2]
    report = _tamper(app, "UPDATE audit_log SET prev_hash = ? WHERE id = ?", "0" * 64,
                     victim["id"])
    assert not report.intact and report.first_broken_id == victim["id"]
    _tamper(app, "UPDATE audit_log SET prev_hash = ? WHERE id = ?", victim["prev_hash"],
            victim["id"])
    forged = {**victim, "target": "conversation:x"}
    report = _tamper(app, "UPDATE audit_log SET target = ?, hash = ? WHERE id = ?",
                     "conversation:x", audit.entry_hash(victim["prev_hash"], forged),
                     victim["id"])
    assert not report.intact and report.first_broken_id == victim["id"]


def test_the_hash_covers_every_field_and_the_link() -> None:
    """entry_hash changes with the previous hash and with each hashed field, and ignores key
    order."""
    entry = {"id": 1, "at": "t", "actor": "a", "action": "x", "ip": None, "target": None,
             "detail": {"b": 1, "a": 2}}
    base = audit.entry_hash("", entry)
    assert len(base) == 64 and base != audit.entry_hash("p", entry)
    for key in ("id", "at", "actor", "action", "ip", "target", "detail"):
        assert audit.entry_hash("", {**entry, key: "other"}) != base, key
    assert audit.entry_hash("", {**entry, "detail": {"a": 2, "b": 1}}) == base
    assert audit.entry_hash("", {**entry, "hash": "ignored", "prev_hash": "x"}) == base
    assert audit.entry_hash("", {**entry, "detail": {"b": 1, "a": 2, "é": "ü"}}) != base


def test_the_hash_of_an_entry_does_not_change_between_versions() -> None:
    """A known answer: the canonical form (compact JSON, sorted keys, text kept as UTF-8) is
    part of the log's format, or logs written by one version would fail to verify in the next."""
    entry = {"id": 7, "at": "2026-01-02T03:04:05.000006Z", "actor": "staff:1",
             "action": "transcript.download", "ip": "192.0.2.1", "target": "conversation:cv_1",
             "detail": {"format": "csv", "note": "ü"}}
    assert audit.entry_hash("ab" * 32, entry) == (
        "374465d9bf3a39fcce407c1125e893cb8f3882aa813c489812e6f6bf36f50ff1")


def test_an_edit_in_the_database_is_found(app: App) -> None:
    """An UPDATE straight in the SQLite file is found by the verifier, at that entry."""
    entries = chain(app)
    report = _tamper(app, "UPDATE audit_log SET ip = '198.51.100.7' WHERE id = ?",
                     entries[2]["id"])
    assert not report.intact and report.first_broken_id == entries[2]["id"]


def test_no_route_writes_the_audit_log(app: App) -> None:
    """Every method but GET on the audit routes is 405 for an admin, and the log is unchanged."""
    boss = app.staff_client("boss", "admin")
    before = app.call(app.state.store.all_audit)
    for path in ("/api/admin/audit", "/api/admin/audit/1", "/api/admin/audit/verify"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = boss.request(method, path, json={})
            assert response.status_code in {404, 405}, (method, path)
    assert app.call(app.state.store.all_audit) == before
    assert boss.get("/api/admin/audit/verify").json()["intact"] is True


# -- erasure -----------------------------------------------------------------------------------


MARKER = "Zanzibar-7731"


def test_erasure_leaves_no_trace_and_closes_the_socket(app: App) -> None:
    """DELETE /api/me: the socket closes 4401, the cookie is cleared, the customer's words and
    details are in no file of the data folder, and the audit entry holds counts only."""
    visitor = app.visitor_client(name=f"Name {MARKER}", email=f"{MARKER.lower()}@example.com")
    agent = app.staff_client("agent")
    with visitor.websocket_connect("/ws/visitor") as ws:
        conversation_id = receive(ws)["conversation_id"]
        ws.send_json({"type": "message", "body": f"my secret {MARKER}", "client_msg_id": "m1"})
        while receive(ws)["type"] != "ack":
            pass
        with agent.websocket_connect("/ws/agent") as agent_ws:
            receive(agent_ws)
            agent_ws.send_json({"type": "claim", "conversation_id": conversation_id})
            agent_ws.send_json({"type": "message", "conversation_id": conversation_id,
                                "body": f"agent quotes {MARKER}", "client_msg_id": "a1"})
            while receive(agent_ws)["type"] != "ack":
                pass
        erased = visitor.delete("/api/me")
        assert erased.status_code == 200 and erased.json()["erased"] is True
        assert "max-age=0" in erased.headers["set-cookie"].lower()
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                receive(ws)
        assert closed.value.code == 4401
    assert visitor.get("/api/me").status_code == 401
    assert app.call(app.state.store.get_conversation, conversation_id) is None
    assert app.call(app.state.store.customers_by_email, f"{MARKER.lower()}@example.com") == []
    entries = app.call(app.state.store.all_audit)
    erasure = [e for e in entries if e["action"] == "customer.erase"]
    assert len(erasure) == 1 and erasure[0]["target"].startswith("erasure:")
    assert erasure[0]["detail"] == {"conversations": 1, "messages": 3, "sessions": 1,
                                    "consents": 1, "access_events": 2, "reason": "request"}
    assert erasure[0]["ip"] is None  # the customer's own request: no address kept of them
    assert MARKER not in str(entries) and MARKER.lower() not in str(entries)
    assert app.call(audit.check, app.state.store).intact
    app.call(app.state.store.ping)
    for path in app.settings.data_dir.iterdir():
        if path.is_file():
            data = path.read_bytes()
            assert MARKER.encode() not in data and MARKER.lower().encode() not in data, path


def test_erasure_closes_every_socket_of_the_customer(app: App) -> None:
    """An admin's erasure ends the customer's open sockets in every tab (4401) and is audited
    under the admin's id."""
    visitor = app.visitor_client()
    customer_id = app.call(app.state.store.customers_by_email, "ada@example.com")[0].id
    boss = app.staff_client("boss", "admin")
    with visitor.websocket_connect("/ws/visitor") as one, \
            visitor.websocket_connect("/ws/visitor") as two:
        receive(one)
        receive(two)
        response = boss.delete(f"/api/admin/customers/{customer_id}")
        assert response.status_code == 200 and response.json()["counts"]["sessions"] == 1
        for ws in (one, two):
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    receive(ws)
            assert closed.value.code == 4401
    entry = app.call(app.state.store.all_audit)[-1]
    assert entry["action"] == "customer.erase" and entry["actor"].startswith("staff:")
    assert entry["detail"]["reason"] == "admin" and entry["ip"] == "testclient"


def test_a_session_without_details_can_be_erased(app: App) -> None:
    """A visitor who consented but never gave details erases their session the same way:
    it is gone, and the audit entry names the erasure with counts."""
    client = app.client()
    client.post("/api/consent", json={"policy_version": "1.01"})
    client.get("/api/session")  # the cookie comes back: only now is the session recorded
    session_hash = sessions.hash_id(app.state.signer.unsign("chat_session",
                                                            client.cookies["chat_session"]))
    assert app.call(app.state.store.get_visitor_session, session_hash) is not None
    erased = client.delete("/api/me")
    assert erased.status_code == 200 and erased.json()["erased"] is True
    assert app.call(app.state.store.get_visitor_session, session_hash) is None
    entry = app.call(app.state.store.all_audit)[-1]
    assert entry["action"] == "customer.erase" and entry["actor"] == "customer"
    assert entry["target"] == f"erasure:{erased.json()['erasure_id']}"
    assert entry["detail"]["sessions"] == 1 and entry["detail"]["consents"] == 1
    assert entry["detail"]["reason"] == "request"


def test_a_legal_hold_blocks_erasure(app: App) -> None:
    """While on hold, neither the customer nor an admin can erase; nothing is deleted."""
    visitor = app.visitor_client()
    customer_id = app.call(app.state.store.customers_by_email, "ada@example.com")[0].id
    boss = app.staff_client("boss", "admin")
    assert boss.post(f"/api/admin/customers/{customer_id}/legal-hold",
                     json={"hold": True}).status_code == 200
    assert visitor.delete("/api/me").status_code == 409
    assert boss.delete(f"/api/admin/customers/{customer_id}").status_code == 409
    assert app.call(app.state.store.get_customer, customer_id) is not None


def test_purge_is_audited_with_counts_only(app: App) -> None:
    """A real purge run leaves one audit entry with its counts; a dry run changes nothing and
    leaves none."""
    app.visitor_client()
    before = len(app.call(app.state.store.all_audit))
    settings = app.settings.with_(retention_days=0)
    dry = app.call(privacy.purge, app.state.store, app.state.hub, settings, dry_run=True,
                   actor="test")
    assert dry["dry_run"] is True and len(app.call(app.state.store.all_audit)) == before
    real = app.call(privacy.purge, app.state.store, app.state.hub, settings, dry_run=False,
                    actor="test")
    entries = app.call(app.state.store.all_audit)
    assert len(entries) == before + 1
    assert entries[-1]["action"] == "retention.purge" and entries[-1]["actor"] == "test"
    assert entries[-1]["detail"] == real["counts"]
