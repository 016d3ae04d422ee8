"""The PostgreSQL store under concurrency and faults: several connections (and processes) racing
for seqs, one client_msg_id, one claim and the audit chain; migrations applied once; connections
killed by the server; a database of a newer schema refused."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from chatserver import audit
from chatserver.consent import bundled_policy
from chatserver.errors import (
    AlreadyClaimed,
    ConversationClosed,
    DatabaseError,
    NotFound,
    Unavailable,
    ValidationFailed,
)
from chatserver.storage import open_store
from chatserver.storage.base import Store
from chatserver.storage.postgres.migrate import migrations

from . import databases

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[list[Store]]:
    """Four stores on one empty database, each with its own pool: four processes' worth of
    connections."""
    databases.empty_database(postgres_url)
    opened = [await open_store(postgres_url, pool_size=4) for _ in range(4)]
    await opened[0].publish_policy(bundled_policy())
    yield opened
    for store in opened:
        await store.close()


async def _conversation(store: Store, tag: str = "ada") -> tuple[str, str]:
    await store.create_visitor_session("s-" + tag)
    customer = await store.save_customer("s-" + tag, name=tag, email=f"{tag}@example.com",
                                         company="")
    conversation, _ = await store.open_conversation(customer.id)
    return conversation.id, customer.id


async def test_seqs_stay_gapless_with_writers_on_several_connections(stores: list[Store]) -> None:
    """400 appends spread over four pools at once get seq 1..400, each once."""
    conversation_id, customer_id = await _conversation(stores[0])
    results = await asyncio.gather(*[
        stores[n % 4].append_message(conversation_id, sender="visitor", sender_id=customer_id,
                                     author="ada", body=f"m{n}", client_msg_id=f"id{n}")
        for n in range(400)
    ])
    assert sorted(m.seq for m, _, _ in results) == list(range(1, 401))
    stored = await stores[1].messages_after(conversation_id, 0, 1000)
    assert [m.seq for m in stored] == list(range(1, 401))
    assert (await stores[2].get_conversation(conversation_id)).last_seq == 400  # type: ignore[union-attr]


async def test_one_client_msg_id_sent_on_every_connection_is_stored_once(stores: list[Store]
                                                                        ) -> None:
    """The same message stored through four pools at the same instant, eight times each: one
    row, one "new", every caller told the same seq."""
    conversation_id, customer_id = await _conversation(stores[0])
    for round_ in range(5):
        results = await asyncio.gather(*[
            stores[n % 4].append_message(conversation_id, sender="visitor",
                                         sender_id=customer_id, author="ada", body="once",
                                         client_msg_id=f"same{round_}")
            for n in range(32)
        ])
        assert sum(new for _, new, _ in results) == 1
        assert {m.seq for m, _, _ in results} == {round_ + 1}
    stored = await stores[3].messages_after(conversation_id, 0)
    assert [m.client_msg_id for m in stored] == [f"same{n}" for n in range(5)]


async def test_one_batch_of_appends_gives_each_what_it_would_get_alone(stores: list[Store]
                                                                      ) -> None:
    """Appends arriving together are stored as one batch (postgres/appends.py). Mixed into one:
    fresh messages to two conversations, the same new client_msg_id twice, a closed
    conversation, a missing one; then, in a batch the database refuses, a repeat of a stored
    message and a body with NUL beside a fresh message. Each caller hears what it would alone,
    and the stored seqs stay gapless."""
    store = stores[0]
    first, customer = await _conversation(store, "ada")
    second, other = await _conversation(store, "bob")
    closed, closed_customer = await _conversation(store, "cy")
    await store.close_conversation(closed)
    stored, _, _ = await store.append_message(first, sender="visitor", sender_id=customer,
                                              author="ada", body="before", client_msg_id="old")

    def visitor(conversation: str, who: str, body: str, msg_id: str) -> Any:
        return store.append_message(conversation, sender="visitor", sender_id=who,
                                    author="x", body=body, client_msg_id=msg_id)

    outcomes = await asyncio.gather(
        visitor(first, customer, "one", "a1"),
        visitor(second, other, "two", "b1"),
        visitor(first, customer, "three", "a2"),
        visitor(first, customer, "three again", "a2"),  # the same new id twice in one batch
        visitor(closed, closed_customer, "late", "c1"),
        visitor("cv_missing", customer, "nowhere", "m1"),
        visitor(second, other, "four", "b2"),
        return_exceptions=True,
    )
    one, two, three, three_again, late, nowhere, four = outcomes
    assert (one[0].seq, one[1]) == (2, True)
    assert (two[0].seq, two[1]) == (1, True)
    assert (three[0].seq, three[1]) == (3, True)
    assert (three_again[0].seq, three_again[1], three_again[0].body) == (3, False, "three")
    assert isinstance(late, ConversationClosed)
    assert isinstance(nowhere, NotFound)
    assert (four[0].seq, four[1]) == (2, True)
    # A stored repeat, or a NUL, makes the database refuse the batch: each runs alone.
    repeat, nul, fine = await asyncio.gather(
        visitor(first, customer, "again", "old"),
        visitor(first, customer, "bad\x00body", "n1"),
        visitor(second, other, "fine", "b3"),
        return_exceptions=True)
    assert (repeat[0].seq, repeat[1], repeat[0].body) == (stored.seq, False, "before")
    assert isinstance(nul, ValidationFailed)
    assert fine[0].seq == 3
    assert [m.body for m in await store.messages_after(first, 0)] == ["before", "one", "three"]
    assert [m.body for m in await store.messages_after(second, 0)] == ["two", "four", "fine"]
    assert (await store.get_conversation(second)).last_seq == 3  # type: ignore[union-attr]


async def test_simultaneous_claims_have_exactly_one_winner(stores: list[Store]) -> None:
    """Eight agents on four pools claim one conversation at once: one wins, seven hear
    already_claimed; ten times over."""
    agents = [await stores[0].add_staff(f"agent{n}", "agent", "h") for n in range(8)]
    for round_ in range(10):
        conversation_id, _ = await _conversation(stores[0], f"c{round_}")
        outcomes = await asyncio.gather(*[
            stores[n % 4].claim_conversation(conversation_id, agent.id)
            for n, agent in enumerate(agents)
        ], return_exceptions=True)
        winners = [o for o in outcomes if isinstance(o, tuple) and o[1]]
        assert len(winners) == 1, outcomes
        assert sum(isinstance(o, AlreadyClaimed) for o in outcomes) == 7
        assert winners[0][0].status == "active"


async def test_audit_appends_from_several_connections_stay_one_chain(stores: list[Store],
                                                                    tmp_path: Path) -> None:
    """100 audit entries appended at once through four pools form one chain that verifies."""
    from chatserver.settings import load

    settings = load(environ={"CHATSERVER_DATA_DIR": str(tmp_path / "data")})
    for store in stores:
        await audit.attach(store, settings)
    await asyncio.gather(*[
        audit.record(stores[n % 4], actor=f"staff:{n}", action="transcript.download",
                     target=f"conversation:{n}", detail={"n": n})
        for n in range(100)
    ])
    entries = await stores[0].all_audit()
    assert [e["id"] for e in entries] == list(range(1, len(entries) + 1))
    assert sum(e["action"] == "transcript.download" for e in entries) == 100
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(entries, entries[1:], strict=False))
    assert (await audit.check(stores[0])).intact
    for store in stores:
        await audit.detach(store)


async def test_several_processes_starting_at_once_migrate_once_and_write_one_conversation(
    tmp_path: Path, postgres_url: str,
) -> None:
    """Three processes open a fresh database at the same moment (each migrates under the
    advisory lock) and append to one conversation with overlapping client_msg_ids: every
    migration is applied once, seqs are 1..N without gap, each client_msg_id stored once."""
    databases.require_postgres()
    url = databases.create_database()
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent("""
        import asyncio, sys
        from chatserver.storage import open_store

        async def main(url, conversation_id, customer_id, start):
            store = await open_store(url, pool_size=3)
            while conversation_id == "-":  # the first run only migrates
                await store.close()
                return
            await asyncio.gather(*[
                store.append_message(conversation_id, sender="visitor", sender_id=customer_id,
                                     author="ada", body=f"m{n}", client_msg_id=f"id{n}")
                for n in range(start, start + 60)
            ])
            await store.close()

        asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
    """))

    def launch(conversation_id: str, customer_id: str, start: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), url, conversation_id, customer_id, str(start)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def finish(processes: list[subprocess.Popen[str]]) -> None:
        for process in processes:
            out, _ = process.communicate(timeout=60)
            assert process.returncode == 0, out

    finish([launch("-", "-", 0) for _ in range(3)])
    applied = databases.query(url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [v for (v,) in applied] == [number for number, _ in migrations()]

    store = await open_store(url)
    try:
        await store.publish_policy(bundled_policy())
        conversation_id, customer_id = await _conversation(store)
        # Starts 0, 30, 60: ids 30-59 and 60-89 are sent by two processes each.
        finish([launch(conversation_id, customer_id, start) for start in (0, 30, 60)])
        stored = await store.messages_after(conversation_id, 0, 1000)
        assert [m.seq for m in stored] == list(range(1, 121))
        assert sorted(m.client_msg_id or "" for m in stored) == sorted(
            f"id{n}" for n in range(120))
    finally:
        await store.close()


async def test_migrations_are_applied_once_when_stores_open_together(postgres_url: str) -> None:
    """Eight stores opening one fresh database at once: all open, each migration runs once."""
    url = databases.create_database()
    opened = await asyncio.gather(*[open_store(url, pool_size=1) for _ in range(8)])
    for store in opened:
        await store.close()
    rows = databases.query(url, "SELECT version, COUNT(*) FROM schema_migrations GROUP BY 1 ORDER BY 1")
    assert rows == [(number, 1) for number, _ in migrations()]


async def test_a_database_of_a_newer_schema_is_refused(postgres_url: str) -> None:
    """A database migrated by a newer version of the code is not used: DatabaseError names the
    versions."""
    url = databases.create_database()
    await (await open_store(url)).close()
    databases.query(url, "INSERT INTO schema_migrations VALUES (999, 'later')")
    with pytest.raises(DatabaseError, match="schema version 999, newer"):
        await open_store(url)


async def _terminate_backends(url: str) -> int:
    """pg_terminate_backend for every other connection to the database at `url`."""
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    finally:
        await conn.close()


async def test_connections_killed_while_idle_are_replaced(postgres_url: str) -> None:
    """After pg_terminate_backend of every pooled connection, the next writes and reads run on
    fresh connections and succeed."""
    databases.empty_database(postgres_url)
    store = await open_store(postgres_url, pool_size=3)
    try:
        await store.publish_policy(bundled_policy())
        conversation_id, customer_id = await _conversation(store)
        store_engine = store.engine  # type: ignore[attr-defined]

        async def fill_pool() -> None:
            """Hold every pooled connection at once, so all three are open (and get killed)."""
            held = [await store_engine.pool.acquire() for _ in range(3)]
            for conn in held:
                await store_engine.pool.release(conn)

        for round_ in range(3):
            await fill_pool()
            assert await _terminate_backends(postgres_url) == 3
            message, new, _ = await store.append_message(
                conversation_id, sender="visitor", sender_id=customer_id, author="ada",
                body="after the restart", client_msg_id=f"r{round_}")
            assert new and message.seq == round_ + 1
            await fill_pool()
            assert await _terminate_backends(postgres_url) == 3
            found = await asyncio.gather(*[store.messages_after(conversation_id, 0)
                                           for _ in range(3)])
            assert [len(f) for f in found] == [round_ + 1] * 3
    finally:
        await store.close()


async def _kill_the_writer_waiting_for(blocker: Any, write: asyncio.Task[Any]) -> None:
    """Terminate the backend of the write waiting for the row lock `blocker` holds."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # until the write waits for the row lock, inside its statement
        # pg_locks, not pg_stat_activity: the blocker's transaction would see one snapshot of
        # the activity statistics for as long as it lasts.
        waiting = await blocker.fetchval(
            "SELECT pid FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid() LIMIT 1")
        if waiting or asyncio.get_running_loop().time() > deadline or write.done():
            break
        await asyncio.sleep(0.02)
    assert waiting, "the write never waited for the lock"
    await blocker.execute("SELECT pg_terminate_backend($1)", waiting)


async def test_a_write_whose_connection_dies_mid_statement_is_failed_or_run_again_once(
    postgres_url: str,
) -> None:
    """A message whose connection is killed while it waits for its conversation's row lock may or
    may not have committed. Without a client_msg_id (a system message) it is reported as failed
    (Unavailable) and is not stored; with one, running it again cannot store it twice, so it runs
    again on another connection once the lock is free, and is stored once, with the next seq."""
    databases.empty_database(postgres_url)
    store = await open_store(postgres_url, pool_size=2)
    blocker = await asyncpg.connect(postgres_url)
    try:
        await store.publish_policy(bundled_policy())
        conversation_id, customer_id = await _conversation(store)
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE",
                              conversation_id)
        notice = asyncio.create_task(store.append_message(
            conversation_id, sender="system", sender_id="system", author="system",
            body="lost in transit", client_msg_id=None))
        await _kill_the_writer_waiting_for(blocker, notice)
        with pytest.raises(Unavailable):
            await notice
        assert await store.messages_after(conversation_id, 0) == []

        write = asyncio.create_task(store.append_message(
            conversation_id, sender="visitor", sender_id=customer_id, author="ada",
            body="run again", client_msg_id="again"))
        await _kill_the_writer_waiting_for(blocker, write)
        await asyncio.sleep(0.2)  # the second run waits for the lock in its turn
        assert not write.done()
        await blocking.rollback()
        message, new, _ = await write
        assert new and message.seq == 1
        assert [m.body for m in await store.messages_after(conversation_id, 0)] == ["run again"]
        repeat, new, _ = await store.append_message(
            conversation_id, sender="visitor", sender_id=customer_id, author="ada",
            body="run again", client_msg_id="again")
        assert not new and repeat.seq == 1
    finally:
        await blocker.close()
        await store.close()


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://postgres@127.0.0.1:1/postgres", "cannot reach postgresql://postgres@127.0.0.1:1"),
    ("postgresql://no_such_role_here@127.0.0.1:5432/postgres", "no_such_role_here"),
    ("postgresql://postgres:secret-pw@127.0.0.1:5432/no_such_db_here", "no_such_db_here"),
])
async def test_unusable_databases_are_refused_in_one_line(postgres_url: str, url: str,
                                                          expected: str) -> None:
    """Unreachable, unknown role, unknown database: DatabaseError with a one-line reason that
    never shows the password."""
    with pytest.raises(DatabaseError) as caught:
        await open_store(url)
    message = caught.value.message
    assert expected in message and "\n" not in message and "secret-pw" not in message


async def test_nul_characters_are_refused_as_input_and_found_nowhere(postgres_url: str) -> None:
    """PostgreSQL text holds no NUL: storing one is a ValidationFailed (422); a look-up with one
    finds nothing, as on SQLite; never a driver error that would end as a 500. Numbers are
    64-bit as on SQLite; beyond that, the same two answers."""
    databases.empty_database(postgres_url)
    store = await open_store(postgres_url)
    try:
        with pytest.raises(ValidationFailed):
            await store.add_staff("nul\x00name", "agent", "h")
        assert await store.get_staff_by_name("nul\x00name") is None
        assert await store.get_conversation("cv_\x00") is None
        assert await store.messages_after("cv_\x00", 0) == []
        assert await store.list_customers(query="a\x00", limit=5, offset=0) == ([], 0)
        with pytest.raises(NotFound):  # a look-up the store did not foresee: found nowhere
            await store.export_customer("cu_\x00")
        assert await store.list_staff() == []
        with pytest.raises(ValidationFailed):
            await store.note_login(2**70, ok=True)
        assert await store.get_staff(2**62) is None  # 64-bit numbers fit, as on SQLite
        with pytest.raises(NotFound):
            await store.get_staff(2**70)
    finally:
        await store.close()


async def test_an_erasure_amid_writes_on_other_connections_neither_deadlocks_nor_misses(
    stores: list[Store],
) -> None:
    """Messages and access records stream in on three pools while a fourth erases the customer:
    every write either lands before the erasure (and is counted and erased with it) or finds
    the conversation gone (NotFound); no deadlock, nothing left behind."""
    conversation_id, customer_id = await _conversation(stores[0])

    async def write(n: int) -> str:
        store = stores[1 + n % 3]
        try:
            if n % 4 == 3:
                await store.record_access("s-ada", "socket", "192.0.2.1", "UA")
            else:
                await store.append_message(conversation_id, sender="visitor",
                                           sender_id=customer_id, author="ada",
                                           body=f"zebraword {n}", client_msg_id=f"id{n}")
            return "stored" if n % 4 != 3 else "access"
        except NotFound:
            return "gone"

    async def erase_soon() -> dict[str, object]:
        await asyncio.sleep(0)  # let the writes start first
        return await stores[0].erase_customer(customer_id, reason="request")

    *outcomes, tombstone = await asyncio.gather(*[write(n) for n in range(160)], erase_soon())
    assert set(outcomes) <= {"stored", "access", "gone"}
    assert tombstone["messages"] == outcomes.count("stored")
    assert await stores[1].get_conversation(conversation_id) is None
    url = stores[0].url  # type: ignore[attr-defined]
    assert databases.tables_holding(url, ["zebraword", "192.0.2.1"]) == []


async def test_an_erasure_by_a_user_that_cannot_compact_is_still_reported_done(
    postgres_url: str,
) -> None:
    """A database user with every right on the rows but not owning the tables cannot REINDEX:
    the erasure is committed, so it is reported done (the log says the compaction failed)."""
    databases.empty_database(postgres_url)
    role = "chatserver_test_rows_" + secrets.token_hex(4)
    owner = await open_store(postgres_url)
    await owner.publish_policy(bundled_policy())
    conversation_id, customer_id = await _conversation(owner)
    await owner.close()
    for statement in (
        f"CREATE ROLE {role} LOGIN",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}",
    ):
        databases.query(postgres_url, statement)
    limited = urlsplit(postgres_url)._replace(
        netloc=f"{role}@{urlsplit(postgres_url).hostname}:{urlsplit(postgres_url).port}").geturl()
    store = await open_store(limited)
    try:
        result = await store.erase_customer(customer_id, reason="request")
        assert result["conversation_ids"] == [conversation_id]
        assert await store.get_customer(customer_id) is None
    finally:
        await store.close()
        databases.query(postgres_url, f"DROP OWNED BY {role}")
        databases.query(postgres_url, f"DROP ROLE {role}")
