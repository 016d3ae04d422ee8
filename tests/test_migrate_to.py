"""Moving between databases as an operator would: chat on SQLite, `chatserver migrate-to` a fresh
PostgreSQL database, restart on it and carry on; `chatserver backup` of a live SQLite database;
the pg_dump and pg_restore commands docs/deploy.md gives."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from chatserver import audit
from chatserver.consent import bundled_policy
from chatserver.settings import load
from chatserver.storage import open_store
from chatserver.storage.base import ConversationSearch

from . import databases
from .support import Agent, Server, Visitor


def _sqlite_env(server_dir: Path) -> dict[str, str]:
    """These tests start on SQLite even when the suite runs its servers on PostgreSQL."""
    return {"CHATSERVER_DATABASE_URL": f"sqlite://{server_dir / 'chat.db'}",
            "CHATSERVER_LIMITS_EXEMPT": "127.0.0.1"}


async def test_a_sqlite_deployment_moves_to_postgresql_and_carries_on(tmp_path: Path,
                                                                     postgres_url: str) -> None:
    """Chat on SQLite, stop, migrate-to an empty PostgreSQL database, start on it: the
    visitor's conversation resumes (same id, every message, next seq), the transcript
    downloads, the audit chain verifies, and an erasure leaves nothing a SELECT finds."""
    data = tmp_path / "data"
    server = Server(data, env=_sqlite_env(data)).start()
    server.add_staff("boss", "admin")
    visitor = await Visitor(server).start(name="Moving Person", email="moving@example.com",
                                          company="Moving Co")
    boss = await Agent(server, "boss").login()
    try:
        vs = await visitor.socket()
        conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
        for n in range(5):
            await vs.send({"type": "message", "body": f"relocating words {n}",
                           "client_msg_id": f"m{n}"})
            await vs.wait_type("ack", client_msg_id=f"m{n}")
        ags = await boss.socket()
        await ags.wait_type("queue")
        await ags.send({"type": "claim", "conversation_id": conversation_id})
        await ags.send({"type": "message", "conversation_id": conversation_id,
                        "body": "we will follow you", "client_msg_id": "r1"})
        await ags.wait_type("ack", client_msg_id="r1")
        await ags.close()
        await vs.close()
        assert (await boss.http.get(
            f"/api/admin/conversations/{conversation_id}/transcript")).status_code == 200
    finally:
        server.stop()

    target = databases.create_database()
    done = server.cli("migrate-to", target)
    assert done.returncode == 0, done.stderr
    assert "messages: 7 rows" in done.stdout and "audit log intact" in done.stdout

    moved = Server(data, env={"CHATSERVER_DATABASE_URL": target,
                              "CHATSERVER_LIMITS_EXEMPT": "127.0.0.1"}, port=server.port)
    moved.start()
    try:
        vs = await visitor.socket()  # the same cookie: the secret key stayed in the data folder
        welcome = await vs.wait_type("welcome")
        assert welcome["conversation_id"] == conversation_id and welcome["last_seq"] == 7
        await vs.send({"type": "resume", "after_seq": 0})
        replayed = [await vs.wait_type("message") for _ in range(7)]
        assert [m["seq"] for m in replayed] == list(range(1, 8))
        assert replayed[-1]["body"] == "we will follow you"
        await vs.send({"type": "message", "body": "still here", "client_msg_id": "m9"})
        assert (await vs.wait_type("ack", client_msg_id="m9"))["seq"] == 8
        await vs.send({"type": "message", "body": "relocating words 0", "client_msg_id": "m0"})
        assert (await vs.wait_type("ack", client_msg_id="m0"))["seq"] == 1  # ids kept
        await vs.close()
        await boss.login()
        transcript = await boss.http.get(
            f"/api/admin/conversations/{conversation_id}/transcript", params={"format": "json"})
        assert transcript.status_code == 200 and "still here" in transcript.text
        found = (await boss.http.get("/api/admin/conversations",
                                     params={"q": "relocating"})).json()
        assert [c["id"] for c in found["conversations"]] == [conversation_id]
        verified = moved.cli("audit", "verify")
        assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout

        assert (await visitor.http.delete("/api/me")).status_code == 200
        assert databases.tables_holding(target, ["Moving Person", "moving@example.com",
                                                 "relocating", "follow you"]) == []
    finally:
        moved.stop()
        await boss.aclose()
        await visitor.aclose()


async def test_migrate_to_refuses_a_database_that_is_not_empty(
    make_server: Callable[..., Server], tmp_path: Path, postgres_url: str,
) -> None:
    """A second copy into the same database is refused, naming what is there; nothing changes."""
    server = make_server(**_sqlite_env(tmp_path / "data0"))
    target = databases.create_database()
    assert server.cli("migrate-to", target).returncode == 0
    before = databases.query(target, "SELECT COUNT(*) FROM policy_versions")
    again = server.cli("migrate-to", target)
    assert again.returncode == 2 and "not empty" in again.stderr
    assert "Traceback" not in again.stderr and len([line for line in again.stderr.strip().splitlines()
                    if not line.startswith("chatserver: using")]) == 1
    assert databases.query(target, "SELECT COUNT(*) FROM policy_versions") == before
    wrong = server.cli("migrate-to", "mysql://somewhere/db")
    assert wrong.returncode == 2 and "postgresql://" in wrong.stderr


async def test_backup_copies_a_live_database(make_server: Callable[..., Server],
                                             tmp_path: Path) -> None:
    """`chatserver backup FILE` while the server runs: the copy holds every acked message and
    the audit chain; an existing file is not overwritten."""
    server = make_server(**_sqlite_env(tmp_path / "data0"))
    visitor = await Visitor(server).start()
    vs = await visitor.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    for n in range(20):
        await vs.send({"type": "message", "body": f"keep me {n}", "client_msg_id": f"k{n}"})
    for n in range(20):
        await vs.wait_type("ack", client_msg_id=f"k{n}")
    copy = tmp_path / "backup.db"
    done = server.cli("backup", str(copy))
    assert done.returncode == 0 and "integrity ok" in done.stdout, done.stderr
    await vs.close()
    await visitor.aclose()
    store = await open_store(f"sqlite://{copy}")
    try:
        assert [m.seq for m in await store.messages_after(conversation_id, 0)] == list(
            range(1, 21))
        ids = [e["id"] for e in await store.all_audit()]
        assert ids and ids == list(range(ids[0], ids[0] + len(ids)))  # the log came along whole
    finally:
        await store.close()
    again = server.cli("backup", str(copy))
    assert again.returncode == 2 and "exists" in again.stderr


async def _run(*command: str) -> None:
    process = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()


async def test_pg_dump_and_restore_as_documented(postgres_url: str, tmp_path: Path) -> None:
    """The commands docs/deploy.md gives (pg_dump -Fc, createdb, pg_restore) bring back a
    database that verifies, searches, and carries on counting ids and seqs."""
    missing = [tool for tool in ("pg_dump", "pg_restore") if shutil.which(tool) is None]
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"not installed: {missing}")
    source = databases.create_database()
    settings = load(environ={"CHATSERVER_DATA_DIR": str(tmp_path / "data")})
    store = await open_store(source)
    await audit.attach(store, settings)
    await store.publish_policy(bundled_policy())
    await store.create_visitor_session("s")
    customer = await store.save_customer("s", name="Dumped", email="d@example.com", company="")
    conversation, _ = await store.open_conversation(customer.id)
    for n in range(3):
        await store.append_message(conversation.id, sender="visitor", sender_id=customer.id,
                                   author="Dumped", body=f"archived sentence {n}",
                                   client_msg_id=str(n))
    await audit.record(store, actor="cli", action="backup.test")
    first = await store.add_staff("first", "agent", "h")
    await audit.detach(store)
    await store.close()

    dump = tmp_path / "chat.dump"
    restored = databases.create_database()  # stands for `createdb chat_restored`
    await _run("pg_dump", "--format=custom", f"--file={dump}", source)
    await _run("pg_restore", "--no-owner", "--exit-on-error", f"--dbname={restored}", str(dump))

    store = await open_store(restored)
    await audit.attach(store, settings)  # the same secret key and anchor as before the dump
    try:
        assert (await audit.check(store)).intact
        found, total = await store.search_conversations(ConversationSearch(query="archive"))
        assert total == 1 and found[0].conversation.id == conversation.id
        message, new, _ = await store.append_message(
            conversation.id, sender="visitor", sender_id=customer.id, author="Dumped",
            body="after the restore", client_msg_id="after")
        assert new and message.seq == 4
        assert (await store.add_staff("second", "agent", "h")).id == first.id + 1
    finally:
        await store.close()


async def test_migrate_to_carries_the_team_tools_tables(tmp_path: Path,
                                                        postgres_url: str) -> None:
    """Notes, ratings, canned responses and blocks (issue 12) arrive in PostgreSQL as they were
    on SQLite, ids included, and their id counters carry on after the copy."""
    from chatserver.storage.transfer import copy_sqlite_to_postgres

    path = tmp_path / "chat.db"
    store = await open_store(f"sqlite://{path}")
    try:
        await store.publish_policy(bundled_policy())
        await store.create_visitor_session("s")
        customer = await store.save_customer("s", name="Team Tools", email="tt@example.com",
                                             company="")
        agent = await store.add_staff("agent", "agent", "h")
        conversation, _ = await store.open_conversation(customer.id)
        await store.append_message(conversation.id, sender="visitor", sender_id=customer.id,
                                   author="Team Tools", body="hello", client_msg_id="1")
        note, _ = await store.add_note(conversation.id, staff_id=agent.id,
                                       body="prefers email", client_msg_id="n1")
        await store.close_conversation(conversation.id)
        rating = await store.rate_conversation(conversation.id, score=4, comment="quick")
        canned = await store.add_canned("hi", "Hello {customer_first_name}!")
        block = await store.add_block(customer.id, conversation_id=conversation.id,
                                      ip="203.0.113.9", reason="abuse", staff_id=agent.id,
                                      expires_at="2999-01-01T00:00:00.000000Z")
    finally:
        await store.close()

    target = databases.create_database()
    summary = await copy_sqlite_to_postgres(path, target)
    for table in ("notes", "conversation_ratings", "canned_responses", "blocks"):
        assert summary.counts[table] == 1, (table, summary.counts)

    moved = await open_store(target)
    try:
        assert await moved.notes_after(conversation.id, 0) == [note]
        assert await moved.get_rating(conversation.id) == rating
        assert await moved.list_canned() == [canned]
        assert await moved.customer_blocks(customer.id) == [block]
        assert await moved.active_block(None, "203.0.113.9") == block
        assert [h["rating"] for h in await moved.customer_history(customer.id)] == [4]
        assert (await moved.add_canned("bye", "Goodbye")).id == canned.id + 1
        later = await moved.add_block(customer.id, conversation_id=None, ip=None, reason="again",
                                      staff_id=agent.id, expires_at=block["expires_at"])
        assert later["id"] == block["id"] + 1
        reopened, _ = await moved.open_conversation(customer.id)
        second, new = await moved.add_note(reopened.id, staff_id=agent.id, body="later",
                                           client_msg_id="n2")
        assert new and second.id == note.id + 1
    finally:
        await moved.close()
