"""Customers see a staff member's display name, never the sign-in name."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import httpx

from chatserver.consent import bundled_policy
from chatserver.storage import open_store

from .support import STAFF_PASSWORD, Agent, Server, Visitor


def _add(server: Server, name: str, role: str = "agent", *extra: str) -> None:
    done = server.cli("user", "add", name, "--role", role, "--password-stdin", *extra,
                      stdin=STAFF_PASSWORD + "\n")
    assert done.returncode == 0, done.stderr


async def test_customers_see_the_display_name_only(server: Server) -> None:
    """Everything the customer receives about the agent (status, joined and closed notices,
    messages, typing, the welcome on reconnect, the export) names the display name, and the
    sign-in name appears nowhere in it."""
    sign_in = f"jdoe{uuid.uuid4().hex[:6]}"
    _add(server, sign_in, "agent", "--display-name", "Jane")
    agent = await Agent(server, sign_in).login()
    v = await Visitor(server).start(name="Curious", email=f"c{uuid.uuid4().hex[:6]}@example.com")
    vs = await v.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    ags = await agent.socket()
    await ags.wait_type("queue")
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    status = await vs.wait_type("status", status="active")
    assert status["agent"] == "Jane" and "agent_id" not in status and "agent_name" not in status
    staff_status = await ags.wait_type("status", conversation_id=conversation_id)
    assert staff_status["agent_name"] == sign_in and staff_status["agent"] == "Jane"
    joined = await vs.wait_type("message", sender="system")
    assert joined["body"] == "Jane joined the conversation."
    await ags.send({"type": "typing", "conversation_id": conversation_id, "state": True})
    assert (await vs.wait_type("typing"))["author"] == "Jane"
    await ags.send({"type": "message", "conversation_id": conversation_id, "body": "Hello",
                    "client_msg_id": "a1"})
    assert (await vs.wait_type("message", sender="agent"))["author"] == "Jane"
    await vs.close()
    again = await v.socket()
    assert (await again.wait_type("welcome"))["agent"] == "Jane"
    await again.send({"type": "resume", "after_seq": 0})
    await again.wait_type("message", seq=2)
    await ags.send({"type": "close", "conversation_id": conversation_id})
    closed = await again.wait_type("message", sender="system", seq=3)
    assert closed["body"] == "The conversation was closed by Jane."
    export = (await v.http.get("/api/me/export")).text
    assert "Jane" in export
    seen = json.dumps(vs.frames) + json.dumps(again.frames) + export
    assert sign_in not in seen
    await again.close()
    await ags.close()
    await v.aclose()
    await agent.aclose()


def test_cli_default_display_name_is_neutral(server: Server) -> None:
    """Without --display-name an account is shown as "Support agent"; a display name that is a
    sign-in name (its own or another's, in any case) is refused."""
    sign_in = f"kim{uuid.uuid4().hex[:6]}"
    _add(server, sign_in)
    assert "shown to customers as 'Support agent'" in server.cli(
        "user", "add", f"x{sign_in}", "--role", "agent", "--password-stdin",
        stdin=STAFF_PASSWORD + "\n").stdout
    for display in (sign_in.upper(), "Agent"):  # its own name; the shared server's "agent"
        done = server.cli("user", "add", f"new{uuid.uuid4().hex[:6]}", "--role", "agent",
                          "--password-stdin", "--display-name", display,
                          stdin=STAFF_PASSWORD + "\n")
        assert done.returncode == 2 and "sign-in name" in done.stderr
    mine = server.cli("user", "add", "ownname", "--role", "agent", "--password-stdin",
                      "--display-name", "OwnName", stdin=STAFF_PASSWORD + "\n")
    assert mine.returncode == 2 and "sign-in name" in mine.stderr


async def test_admins_set_display_names_under_the_same_rules(server: Server, admin: Agent
                                                             ) -> None:
    """The console creates and renames with a display name; sign-in names are refused as
    display names and display names as new sign-in names; the audit row holds no name."""
    sign_in = f"lee{uuid.uuid4().hex[:6]}"
    created = await admin.http.post("/api/admin/staff", json={
        "name": sign_in, "role": "agent", "password": STAFF_PASSWORD, "display_name": "Lee"})
    assert created.status_code == 200 and created.json()["staff"]["display_name"] == "Lee"
    staff_id = created.json()["staff"]["id"]
    default = await admin.http.post("/api/admin/staff", json={
        "name": f"d{sign_in}", "role": "agent", "password": STAFF_PASSWORD})
    assert default.json()["staff"]["display_name"] == "Support agent"

    own = await admin.http.patch(f"/api/admin/staff/{staff_id}",
                                 json={"display_name": sign_in.capitalize()})
    assert own.status_code == 422 and own.json()["error"] == "display_name_is_sign_in_name"
    other = await admin.http.patch(f"/api/admin/staff/{staff_id}", json={"display_name": "ADMIN"})
    assert other.status_code == 422 and other.json()["field"] == "display_name"
    for bad in ("", "   ", "x" * 61, "Bell\x07", "Zero\u200bwidth", 5):
        refused = await admin.http.patch(f"/api/admin/staff/{staff_id}",
                                         json={"display_name": bad})
        assert refused.status_code == 422, bad
    clash = await admin.http.post("/api/admin/staff", json={
        "name": "LEE", "role": "agent", "password": STAFF_PASSWORD})
    assert clash.status_code == 422 and clash.json()["error"] == "sign_in_name_is_display_name"

    renamed = await admin.http.patch(f"/api/admin/staff/{staff_id}",
                                     json={"display_name": "  Lee   from Support "})
    assert renamed.status_code == 200
    assert renamed.json()["staff"]["display_name"] == "Lee from Support"
    listed = (await admin.http.get("/api/admin/staff")).json()["staff"]
    assert {s["display_name"] for s in listed if s["id"] == staff_id} == {"Lee from Support"}
    entries = (await admin.http.get("/api/admin/audit",
                                    params={"target": f"staff:{staff_id}"})).json()["entries"]
    update = next(e for e in entries if e["action"] == "staff.update")
    assert update["detail"] == {"display_name": "changed"}
    assert "Lee from Support" not in json.dumps(entries)


async def test_migration_rewords_old_notices_that_named_sign_in_names(tmp_path: Path) -> None:
    """System messages stored before display names existed ("alice joined the conversation.")
    are reworded with the display name when the database is upgraded, and the search index
    follows: the sign-in name no longer finds them."""
    path = tmp_path / "chat.db"
    store = await open_store(f"sqlite://{path}")
    await store.publish_policy(bundled_policy())
    staff = await store.add_staff("alice", "agent", "hash")
    await store.create_visitor_session("s1")
    customer = await store.save_customer("s1", name="Ada", email="a@example.com", company="")
    conversation, _ = await store.open_conversation(customer.id)
    await store.claim_conversation(conversation.id, staff.id)
    for body in ("alice joined the conversation.", "The conversation was closed by alice.",
                 "bob joined the conversation."):
        await store.append_message(conversation.id, sender="system", sender_id="system",
                                   author="system", body=body, client_msg_id=None)
    await store.close()
    db = sqlite3.connect(path)  # back to the schema before display names
    db.execute("ALTER TABLE staff DROP COLUMN display_name")
    db.execute("DELETE FROM schema_migrations WHERE version = 5")
    db.commit()
    db.close()

    store = await open_store(f"sqlite://{path}")
    bodies = [m.body for m in await store.messages_after(conversation.id, 0)]
    assert bodies == ["Support agent joined the conversation.",
                      "The conversation was closed by Support agent.",
                      "bob joined the conversation."]  # no such staff member: left alone
    await store.close()
    db = sqlite3.connect(path)
    hits = {word: db.execute("SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH ?",
                             (word,)).fetchone()[0] for word in ("alice", "support", "bob")}
    db.close()
    assert hits == {"alice": 0, "support": 2, "bob": 1}


async def test_staff_pages_know_the_display_name(server: Server) -> None:
    """The dashboard is told the signed-in agent's display name (its own messages carry it)."""
    sign_in = f"pat{uuid.uuid4().hex[:6]}"
    _add(server, sign_in, "agent", "--display-name", "Patricia")
    async with httpx.AsyncClient(base_url=server.url) as client:
        await client.post("/api/staff/login",
                          json={"username": sign_in, "password": STAFF_PASSWORD})
        page = await client.get("/agent")
    assert 'data-staff-display-name="Patricia"' in page.text
