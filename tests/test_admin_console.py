"""The admin console's API: search, bulk export, staff management, sign-in delays, audit."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx

from .support import STAFF_PASSWORD, Agent, Server, Visitor


async def _conversation(server: Server, body: str, email: str | None = None) -> str:
    v = Visitor(server)
    await v.start(name="Searcher", email=email or f"s{uuid.uuid4().hex[:8]}@example.com")
    s = await v.socket()
    conversation_id = (await s.wait_type("welcome"))["conversation_id"]
    await s.send({"type": "message", "body": body, "client_msg_id": "1"})
    await s.wait_type("ack")
    await s.close()
    await v.aclose()
    return str(conversation_id)


async def test_search_finds_a_conversation_by_words_in_it(server: Server, admin: Agent) -> None:
    """Full-text search finds words, prefixes and quoted phrases; filters narrow the list."""
    word = "zq" + uuid.uuid4().hex[:8]
    email = f"{word}@example.com"
    target = await _conversation(server, f"The {word}printer makes a grinding noise", email)
    other = await _conversation(server, f"The {word}printer is fine")

    async def ids(**params: str) -> set[str]:
        response = await admin.http.get("/api/admin/conversations", params=params)
        assert response.status_code == 200, response.text
        return {c["id"] for c in response.json()["conversations"]}

    assert await ids(q=f"{word}printer grinding") == {target}
    assert await ids(q=f"{word}print") == {target, other}  # a prefix
    assert await ids(q=f'"{word}printer makes"') == {target}
    assert await ids(q=f'"makes {word}printer"') == set()  # phrase order matters
    assert await ids(q=f"{word}print", email=email) == {target}
    today = datetime.now(UTC).date()
    assert await ids(q=f"{word}print", **{"from": str(today), "to": str(today)}) == {
        target, other}
    tomorrow = today + timedelta(days=1)
    assert await ids(q=f"{word}print", **{"from": str(tomorrow)}) == set()
    assert await ids(q=f"{word}print", status="closed") == set()
    bad = await admin.http.get("/api/admin/conversations", params={"from": "yesterday"})
    assert bad.status_code == 422 and bad.json()["field"] == "from"
    weird = await admin.http.get("/api/admin/conversations", params={"q": 'AND OR NOT " * ('})
    assert weird.status_code == 200  # operators are words, never a syntax error


async def test_agent_filter(server: Server, admin: Agent) -> None:
    """Conversations filter by the agent who claimed them."""
    conversation_id = await _conversation(server, "agent filter")
    agent = await Agent(server, "agent2").login()
    ags = await agent.socket()
    await ags.wait_type("queue")
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    await ags.wait_type("status", conversation_id=conversation_id)
    await ags.close()
    me = (await agent.http.get("/api/staff/me")).json()["staff"]
    found = await admin.http.get("/api/admin/conversations",
                                 params={"agent": str(me["id"]), "limit": "200"})
    ids = {c["id"] for c in found.json()["conversations"]}
    assert conversation_id in ids
    assert all(c["agent_id"] == me["id"] for c in found.json()["conversations"])
    await agent.aclose()


async def test_bulk_export_streams_every_message_in_range(server: Server, admin: Agent) -> None:
    """JSONL and CSV exports hold the range's messages; CSV cells are neutralised; audited."""
    marker = "bulk" + uuid.uuid4().hex[:8]
    await _conversation(server, f"=cmd| {marker}")
    today = str(datetime.now(UTC).date())
    jsonl = await admin.http.get("/api/admin/export",
                                 params={"from": today, "to": today, "format": "jsonl"})
    assert jsonl.status_code == 200 and "attachment" in jsonl.headers["content-disposition"]
    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    assert any(r["body"] == f"=cmd| {marker}" for r in rows)
    assert all(r["type"] == "message" for r in rows)
    as_csv = await admin.http.get("/api/admin/export", params={"format": "csv"})
    table = list(csv.reader(io.StringIO(as_csv.text)))
    assert table[0] == ["conversation_id", "seq", "sent_at", "sender", "author", "body"]
    assert any(row[5] == f"'=cmd| {marker}" for row in table[1:])
    empty = await admin.http.get("/api/admin/export",
                                 params={"from": "2001-01-01", "to": "2001-01-02"})
    assert empty.text == ""
    audit = (await admin.http.get("/api/admin/audit", params={"action": "export"})).json()
    assert audit["entries"][0]["action"] == "export.bulk"
    assert (await admin.http.get("/api/admin/export", params={"format": "xml"})).status_code == 422


async def test_staff_lifecycle(make_server: Callable[..., Server]) -> None:
    """Add, refuse weak passwords, change role, disable (sockets close), reset, force logout."""
    server = make_server()
    server.add_staff("chief", "admin")
    chief = await Agent(server, "chief").login()
    weak = await chief.http.post("/api/admin/staff", json={"name": "sam", "role": "agent",
                                                            "password": "password1234"})
    assert weak.status_code == 422 and weak.json()["error"] == "weak_password"
    short = await chief.http.post("/api/admin/staff", json={"name": "sam", "role": "agent",
                                                             "password": "short"})
    assert short.status_code == 422
    unnamed = await chief.http.post("/api/admin/staff", json={
        "name": "sam", "role": "agent", "password": STAFF_PASSWORD, "display_name": None})
    assert unnamed.status_code == 422 and unnamed.json()["error"] == "invalid_display_name"
    added = await chief.http.post("/api/admin/staff", json={"name": "sam", "role": "agent",
                                                             "password": STAFF_PASSWORD})
    assert added.status_code == 200
    sam_id = added.json()["staff"]["id"]
    taken = await chief.http.post("/api/admin/staff", json={"name": "SAM", "role": "agent",
                                                             "password": STAFF_PASSWORD})
    assert taken.status_code == 409

    sam = await Agent(server, "sam").login()
    socket = await sam.socket()
    await socket.wait_type("queue")
    disabled = await chief.http.patch(f"/api/admin/staff/{sam_id}", json={"state": "disabled"})
    assert disabled.status_code == 200 and disabled.json()["staff"]["state"] == "disabled"
    assert await socket.closed_code() == 4401
    assert (await sam.http.get("/api/staff/me")).status_code == 401
    again = await sam.http.post("/api/staff/login",
                                json={"username": "sam", "password": STAFF_PASSWORD})
    assert again.status_code == 401
    await chief.http.patch(f"/api/admin/staff/{sam_id}", json={"state": "active"})

    await sam.login()
    new_password = "a much better passphrase 42"
    reset = await chief.http.post(f"/api/admin/staff/{sam_id}/password",
                                  json={"password": new_password})
    assert reset.status_code == 200 and reset.json()["sessions_ended"] == 1
    old = await sam.http.post("/api/staff/login",
                              json={"username": "sam", "password": STAFF_PASSWORD})
    assert old.status_code == 401
    fresh = await sam.http.post("/api/staff/login",
                                json={"username": "sam", "password": new_password})
    assert fresh.status_code == 200
    socket = await sam.socket()
    await socket.wait_type("queue")
    ended = await chief.http.post(f"/api/admin/staff/{sam_id}/logout", json={})
    assert ended.json()["sessions_ended"] == 1
    assert await socket.closed_code() == 4401

    promoted = await chief.http.patch(f"/api/admin/staff/{sam_id}", json={"role": "admin"})
    assert promoted.json()["staff"]["role"] == "admin"
    me = (await chief.http.get("/api/staff/me")).json()["staff"]
    await chief.http.patch(f"/api/admin/staff/{sam_id}", json={"role": "agent"})
    last = await chief.http.patch(f"/api/admin/staff/{me['id']}", json={"role": "agent"})
    assert last.status_code == 409 and last.json()["error"] == "last_admin"
    history = await chief.http.get(f"/api/admin/staff/{sam_id}/logins")
    outcomes = [e["outcome"] for e in history.json()["logins"]]
    assert "success" in outcomes and "bad_password" in outcomes and "disabled" in outcomes
    audit = await chief.http.get("/api/admin/audit", params={"target": f"staff:{sam_id}"})
    actions = {e["action"] for e in audit.json()["entries"]}
    assert {"staff.create", "staff.update", "staff.password_reset",
            "staff.force_logout", "staff.login"} <= actions
    for client in (chief, sam):
        await client.aclose()


async def test_repeated_failures_slow_down_sign_in_with_the_same_answer(
    make_server: Callable[..., Server],
) -> None:
    """After five failures even the right password is refused for a while, with the answer an
    unknown user gets; then it works again."""
    server = make_server()
    server.add_staff("target", "agent")
    async with httpx.AsyncClient(base_url=server.url) as client:
        unknown = await client.post("/api/staff/login",
                                    json={"username": "nobody", "password": "x" * 12})
        for _ in range(5):
            wrong = await client.post("/api/staff/login",
                                      json={"username": "target", "password": "wrong" * 3})
            assert wrong.json() == unknown.json() and wrong.status_code == 401
        # Judged by when it arrives: at once after the fifth failure, inside its delay.
        right = await client.post("/api/staff/login",
                                  json={"username": "target", "password": STAFF_PASSWORD})
        assert right.status_code == 401 and right.json() == unknown.json()
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # the delay after five failures is one second
            right = await client.post("/api/staff/login",
                                      json={"username": "target", "password": STAFF_PASSWORD})
            if right.status_code == 200 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        assert right.status_code == 200
    outcomes = [r[0] for r in server.query("SELECT outcome FROM login_events ORDER BY id")]
    assert outcomes[0] == "unknown_user" and "throttled" in outcomes and outcomes[-1] == "success"


async def test_customer_access_records_are_shown_and_audited(server: Server, admin: Agent
                                                             ) -> None:
    """An admin sees a customer's access records (IP, agent, time); the viewing is audited."""
    v = Visitor(server)
    email = f"acc{uuid.uuid4().hex[:8]}@example.com"
    await v.start(name="Access", email=email)
    s = await v.socket()
    await s.wait_type("welcome")
    await s.close()
    [customer] = (await admin.http.get("/api/admin/customers",
                                       params={"q": email})).json()["customers"]
    records = await admin.http.get(f"/api/admin/customers/{customer['id']}/access")
    kinds = {r["kind"] for r in records.json()["access"]}
    assert kinds == {"session_start", "socket"}
    assert all(r["ip"] == "127.0.0.1" for r in records.json()["access"])
    entries = (await admin.http.get("/api/admin/audit",
                                    params={"target": f"customer:{customer['id']}"})).json()
    assert entries["entries"][0]["action"] == "customer.access_view"
    await v.aclose()


async def test_audit_filters_and_no_edit_route(server: Server, admin: Agent) -> None:
    """The audit log filters by action prefix and actor; no method edits or deletes it."""
    conversation_id = await _conversation(server, "audit me")
    await admin.http.get(f"/api/admin/conversations/{conversation_id}/transcript?format=txt")
    me = (await admin.http.get("/api/staff/me")).json()["staff"]
    got = await admin.http.get("/api/admin/audit",
                               params={"action": "transcript", "actor": f"staff:{me['id']}"})
    entries = got.json()["entries"]
    assert entries and all(e["action"].startswith("transcript.") for e in entries)
    assert all(e["actor"] == f"staff:{me['id']}" for e in entries)
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        assert (await admin.http.request(method, "/api/admin/audit")).status_code == 405
    verify = await admin.http.get("/api/admin/audit/verify")
    assert verify.json()["intact"] is True and verify.json()["first_broken_id"] is None


async def test_odd_parameters_get_422_not_500(server: Server, admin: Agent) -> None:
    """Unicode digits, far-future dates and unparsable times are clear 4xx answers."""
    for path, params in [
        ("/api/admin/conversations", {"agent": "²"}),
        ("/api/admin/conversations", {"to": "9999-12-31"}),
        ("/api/admin/export", {"to": "9999-12-31"}),
        ("/api/admin/audit", {"since": "yesterday"}),
    ]:
        response = await admin.http.get(path, params=params)
        assert response.status_code == 422, (path, params, response.status_code)
    assert (await admin.http.get("/api/admin/staff/²/logins")).status_code == 404


async def test_audit_time_filters_compare_as_times(server: Server, admin: Agent) -> None:
    """since/before take dates or ISO times and compare as instants, not as text."""
    entries = (await admin.http.get("/api/admin/audit", params={"limit": "1"})).json()["entries"]
    at = entries[0]["at"]  # e.g. 2026-11-28T21:55:11.343799Z
    second = at[:19] + "Z"
    since = await admin.http.get("/api/admin/audit", params={"since": second})
    assert at in {e["at"] for e in since.json()["entries"]}
    before = await admin.http.get("/api/admin/audit", params={"before": second})
    assert at not in {e["at"] for e in before.json()["entries"]}


async def test_same_role_keeps_sessions_and_last_login_survives_failures(
    make_server: Callable[..., Server],
) -> None:
    """Setting the role someone already has signs nobody out; failed attempts do not hide the
    last successful sign-in."""
    server = make_server()
    server.add_staff("lead", "admin")
    lead = await Agent(server, "lead").login()
    me = (await lead.http.get("/api/staff/me")).json()["staff"]
    same = await lead.http.patch(f"/api/admin/staff/{me['id']}", json={"role": "admin"})
    assert same.status_code == 200 and same.json()["staff"]["last_login"] is not None
    assert (await lead.http.get("/api/staff/me")).status_code == 200
    async with httpx.AsyncClient(base_url=server.url) as other:
        for _ in range(25):
            await other.post("/api/staff/login", json={"username": "lead", "password": "x" * 12})
    listed = (await lead.http.get("/api/admin/staff")).json()["staff"]
    assert next(s for s in listed if s["name"] == "lead")["last_login"] is not None
    await lead.aclose()
