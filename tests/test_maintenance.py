"""Erasure, purge, checkpoint and backup beside live chats: none of them stalls a chat write, and
erased data still leaves every file of the data folder once readers let go."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from . import databases
from .support import Server, Socket, Visitor

ACK_BOUND = 1.0  # seconds: a correctness bound for "not stalled", not a benchmark
ON_POSTGRES = bool(databases.SERVER_DATABASE)
SQLITE_FILES = pytest.mark.skipif(
    ON_POSTGRES, reason="reads the SQLite files of the data folder; the servers of this run use "
    "PostgreSQL (its counterpart: ..._on_postgresql below)")


def _marker(kind: str) -> str:
    return f"{kind}{uuid.uuid4().hex[:12]}"


async def _chatting(server: Server, name: str, email: str, body: str) -> tuple[Visitor, Socket]:
    visitor = await Visitor(server).start(name=name, email=email)
    socket = await visitor.socket()
    await socket.wait_type("welcome")
    await socket.send({"type": "message", "body": body, "client_msg_id": "first"})
    await socket.wait_type("ack", client_msg_id="first")
    return visitor, socket


async def _ack_time(socket: Socket, tag: str) -> float:
    started = time.monotonic()
    await socket.send({"type": "message", "body": f"still here {tag}", "client_msg_id": tag})
    await socket.wait_type("ack", client_msg_id=tag, timeout=30)
    return time.monotonic() - started


def _files_holding(data_dir: Path, markers: list[str]) -> list[tuple[str, str]]:
    found = []
    for path in (p for p in data_dir.rglob("*") if p.is_file()):
        content = path.read_bytes()
        found += [(path.name, m) for m in markers if m.encode() in content]
    return found


async def _until_clean(data_dir: Path, markers: list[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1)):
        left = _files_holding(data_dir, markers)
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert not left, left


@SQLITE_FILES
async def test_erasure_beside_an_open_reader_does_not_stall_chats(
    make_server: Callable[..., Server],
) -> None:
    """With a read transaction held open on the database (as an online backup holds one), erasing
    a customer does not hold up another conversation's acks, and once the reader lets go no file
    of the data folder holds the erased customer's data, the WAL included."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    name, email, body = _marker("Name"), _marker("mail") + "@example.com", _marker("Body")
    gone, gone_socket = await _chatting(server, name, email, body)
    other, other_socket = await _chatting(server, "Other Person", "other@example.com", "hi")
    # The search index keeps words folded to lower case: look for those too.
    markers = [name, email, body, body.lower()]
    assert _files_holding(server.data_dir, markers)  # the check can see them

    reader = sqlite3.connect(server.data_dir / "chat.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM messages").fetchone()  # holds this snapshot
        erasure = asyncio.create_task(gone.http.delete("/api/me", timeout=60))
        await asyncio.sleep(0.2)  # let the erasure reach the database first
        waits = [await _ack_time(other_socket, f"during{n}") for n in range(5)]
        assert max(waits) < ACK_BOUND, waits
        response = await erasure
        assert response.status_code == 200 and response.json()["erased"] is True
        assert await gone_socket.closed_code() == 4401
        assert max(await _ack_time(other_socket, "after-erasure"), 0) < ACK_BOUND
    finally:
        reader.execute("ROLLBACK")
        reader.close()
    await _until_clean(server.data_dir, markers)
    assert "WAL truncation waits for a reader" in server.log()  # the reader did hold it up
    assert (await _ack_time(other_socket, "end")) < ACK_BOUND
    with contextlib.suppress(Exception):
        await other_socket.close()
    await other.aclose()
    await gone.aclose()


@pytest.mark.skipif(not ON_POSTGRES, reason="the servers of this run use SQLite; "
                    "CHATSERVER_TEST_DATABASE=postgresql://... runs this one")
async def test_erasure_beside_an_open_reader_does_not_stall_chats_on_postgresql(
    make_server: Callable[..., Server],
) -> None:
    """With a repeatable-read transaction held open on the database (as pg_dump holds one),
    erasing a customer does not hold up another conversation's acks, and no SELECT finds the
    erased customer's data, neither during the reader's snapshot's life nor after it."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    name, email, body = _marker("Name"), _marker("mail") + "@example.com", _marker("Body")
    gone, gone_socket = await _chatting(server, name, email, body)
    other, other_socket = await _chatting(server, "Other Person", "other@example.com", "hi")
    markers = [name, email, body]
    assert databases.tables_holding(server.database_url, markers)  # the check can see them

    import asyncpg

    reader = await asyncpg.connect(server.database_url, timeout=5)
    try:
        snapshot = reader.transaction(isolation="repeatable_read", readonly=True)
        await snapshot.start()
        await reader.fetchval("SELECT COUNT(*) FROM messages")  # holds this snapshot
        erasure = asyncio.create_task(gone.http.delete("/api/me", timeout=60))
        await asyncio.sleep(0.2)  # let the erasure reach the database first
        waits = [await _ack_time(other_socket, f"during{n}") for n in range(5)]
        assert max(waits) < ACK_BOUND, waits
        response = await erasure
        assert response.status_code == 200 and response.json()["erased"] is True
        assert await gone_socket.closed_code() == 4401
        assert max(await _ack_time(other_socket, "after-erasure"), 0) < ACK_BOUND
        assert databases.tables_holding(server.database_url, markers) == []
        await snapshot.rollback()
    finally:
        await reader.close()
    assert databases.tables_holding(server.database_url, markers) == []
    assert (await _ack_time(other_socket, "end")) < ACK_BOUND
    with contextlib.suppress(Exception):
        await other_socket.close()
    await other.aclose()
    await gone.aclose()


@pytest.mark.skipif(ON_POSTGRES, reason="`chatserver backup` copies a SQLite database; on "
                    "PostgreSQL pg_dump does (test_migrate_to.py::"
                    "test_pg_dump_and_restore_as_documented)")
async def test_backup_while_chatting_is_consistent_and_restores_with_its_anchor(
    make_server: Callable[..., Server], tmp_path: Path,
) -> None:
    """`chatserver backup FILE` copies the database while a chat goes on (acks stay quick), the
    copy passes SQLite's integrity check and holds the chat, and restored with FILE.anchor and
    the secret key it passes `chatserver audit verify`."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("boss", "admin")  # something in the audit log
    visitor, socket = await _chatting(server, "Backed Up", "backed@example.com", "keep me")
    copy = tmp_path / "copy.db"
    backup = asyncio.create_task(asyncio.to_thread(server.cli, "backup", str(copy)))
    n = 0
    while not backup.done():
        assert (await _ack_time(socket, f"b{n}")) < ACK_BOUND
        n += 1
    done = await backup
    assert done.returncode == 0, done.stderr
    assert "integrity ok" in done.stdout
    with contextlib.closing(sqlite3.connect(copy)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM messages WHERE body = 'keep me'").fetchone() == (1,)
    assert not (tmp_path / "copy.db.part").exists()

    restored = tmp_path / "restored"
    restored.mkdir()
    (restored / "chat.db").write_bytes(copy.read_bytes())
    (restored / "audit.anchor").write_bytes((tmp_path / "copy.db.anchor").read_bytes())
    (restored / "secret.key").write_bytes((server.data_dir / "secret.key").read_bytes())
    verified = Server(restored).cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    await socket.close()
    await visitor.aclose()


async def test_a_scrub_cut_short_by_a_crash_is_finished_at_the_next_open(tmp_path: Path) -> None:
    """An erasure commits a note in `upkeep` with its deletions; if the process dies before the
    search index is scrubbed, the next open scrubs it, and the erased words leave the files."""
    from chatserver.consent import bundled_policy
    from chatserver.storage import open_store

    path = tmp_path / "chat.db"
    secret = _marker("secret")  # lower case: the index keeps words folded to lower case
    store = await open_store(f"sqlite://{path}")
    await store.publish_policy(bundled_policy())
    await store.create_visitor_session("s")
    customer = await store.save_customer("s", name="N", email="n@example.com", company="")
    conversation, _ = await store.open_conversation(customer.id)
    await store.close()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        # One large index segment holding the secret among many other words...
        db.execute("BEGIN")
        for n in range(3000):
            body = f"{secret} number{n}" if n % 150 == 0 else f"filler word{n} other{n % 97}"
            db.execute("INSERT INTO messages (conversation_id, seq, sender, sender_id, body, "
                       "sent_at) VALUES (?, ?, 'visitor', 'c', ?, 'now')",
                       (conversation.id, n + 1, body))
        # (indexed as the background indexer does it: one batch, then its mark moves)
        db.execute("INSERT INTO messages_fts (rowid, body) SELECT id, body FROM messages")
        db.execute("UPDATE search_index_state SET indexed_up_to = (SELECT max(id) FROM messages)")
        db.execute("COMMIT")
        # ...then what a crash right after an erasure's commit leaves: the rows and their
        # deletion markers, the old segment not yet merged away.
        db.execute("BEGIN")
        db.execute("DELETE FROM messages WHERE body LIKE ?", (secret + "%",))
        db.execute("INSERT INTO upkeep (task, since) VALUES ('search_index_scrub', 'now')")
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert secret.encode() in path.read_bytes()  # still in an old index segment

    store = await open_store(f"sqlite://{path}")
    await store.compact()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM upkeep").fetchone() == (0,)
    await store.close()
    assert _files_holding(tmp_path, [secret]) == []
