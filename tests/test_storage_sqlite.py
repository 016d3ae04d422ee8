"""The store, used directly, on SQLite and on PostgreSQL: seq, idempotency, claims, batches;
and the settings of the SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from chatserver.consent import bundled_policy
from chatserver.errors import AlreadyClaimed, Conflict, ConversationClosed
from chatserver.storage import open_store
from chatserver.storage.base import Store
from chatserver.storage.sqlite import migrations


@pytest.fixture
async def store(store_url: str) -> Store:
    s = await open_store(store_url)
    await s.publish_policy(bundled_policy())
    yield s  # type: ignore[misc]
    await s.close()


async def _customer(store: Store, name: str = "Ada") -> str:
    await store.create_visitor_session("s-" + name)
    customer = await store.save_customer("s-" + name, name=name, email="a@example.com",
                                         company="")
    return customer.id


async def test_concurrent_posts_get_gapless_seqs(store: Store) -> None:
    """Hundreds of concurrent appends to one conversation get seq 1..N with no gap or repeat."""
    conversation, created = await store.open_conversation(await _customer(store))
    assert created
    results = await asyncio.gather(*[
        store.append_message(conversation.id, sender="visitor", sender_id="c", author="Ada",
                             body=f"m{n}", client_msg_id=f"id{n}")
        for n in range(300)
    ])
    assert sorted(m.seq for m, _, _ in results) == list(range(1, 301))
    stored = await store.messages_after(conversation.id, 0, 1000)
    assert [m.seq for m in stored] == list(range(1, 301))


async def test_client_msg_id_is_idempotent_per_sender(store: Store) -> None:
    """A repeated client_msg_id from the same sender returns the first message, not a new one."""
    conversation, _ = await store.open_conversation(await _customer(store))
    first, new1, _ = await store.append_message(conversation.id, sender="visitor", sender_id="c",
                                                author="Ada", body="x", client_msg_id="same")
    again, new2, _ = await store.append_message(conversation.id, sender="visitor", sender_id="c",
                                                author="Ada", body="x", client_msg_id="same")
    other, new3, _ = await store.append_message(conversation.id, sender="agent", sender_id="1",
                                                author="Bo", body="y", client_msg_id="same")
    assert (new1, new2, new3) == (True, False, True)
    assert again.seq == first.seq == 1 and other.seq == 2


async def test_one_open_conversation_per_customer(store: Store) -> None:
    """open_conversation returns the open one; after closing, a new one is made."""
    customer = await _customer(store)
    a, made_a = await store.open_conversation(customer)
    b, made_b = await store.open_conversation(customer)
    assert a.id == b.id and made_a and not made_b
    await store.close_conversation(a.id)
    c, made_c = await store.open_conversation(customer)
    assert made_c and c.id != a.id


async def test_claims_are_exclusive_and_closed_is_final(store: Store) -> None:
    """Only one agent claims; a closed conversation takes no claim and no message."""
    agent1 = await store.add_staff("one", "agent", "h")
    agent2 = await store.add_staff("two", "agent", "h")
    conversation, _ = await store.open_conversation(await _customer(store))
    claimed, now = await store.claim_conversation(conversation.id, agent1.id)
    assert now and claimed.status == "active" and claimed.agent_name == "one"
    again, now_again = await store.claim_conversation(conversation.id, agent1.id)
    assert not now_again
    with pytest.raises(AlreadyClaimed):
        await store.claim_conversation(conversation.id, agent2.id)
    assert (await store.close_conversation(conversation.id)) is not None
    assert (await store.close_conversation(conversation.id)) is None
    with pytest.raises(ConversationClosed):
        await store.claim_conversation(conversation.id, agent2.id)
    with pytest.raises(ConversationClosed):
        await store.append_message(conversation.id, sender="visitor", sender_id="c",
                                   author="Ada", body="late", client_msg_id="late")


async def test_a_failing_job_does_not_undo_its_batch_neighbours(store: Store) -> None:
    """In one group commit, a job that raises is rolled back alone; the others are stored."""
    conversation, _ = await store.open_conversation(await _customer(store))
    outcomes = await asyncio.gather(
        store.append_message(conversation.id, sender="visitor", sender_id="c", author="Ada",
                             body="kept", client_msg_id="k1"),
        store.add_staff("dup", "agent", "h"),
        store.add_staff("dup", "agent", "h"),
        store.append_message(conversation.id, sender="visitor", sender_id="c", author="Ada",
                             body="kept too", client_msg_id="k2"),
        return_exceptions=True,
    )
    assert sum(isinstance(o, Conflict) for o in outcomes) == 1
    # Each store numbers the two appends in the order it commits them (PostgreSQL's pool may
    # commit the second first), so compare against the seqs each append was acknowledged with.
    kept = sorted((outcomes[0][0], outcomes[3][0]), key=lambda m: m.seq)
    stored = await store.messages_after(conversation.id, 0)
    assert [(m.seq, m.body) for m in stored] == [(m.seq, m.body) for m in kept]
    assert sorted(m.body for m in stored) == ["kept", "kept too"]


async def test_corrected_name_shows_in_old_messages(store: Store) -> None:
    """Authors are read at display time, so a corrected name shows in earlier messages too."""
    customer = await _customer(store, "Old")
    conversation, _ = await store.open_conversation(customer)
    await store.append_message(conversation.id, sender="visitor", sender_id=customer,
                               author="Old", body="hi", client_msg_id="1")
    await store.save_customer("s-Old", name="New", email="n@example.com", company="")
    [message] = await store.messages_after(conversation.id, 0)
    assert message.author == "New"


async def test_database_file_settings(tmp_path: Path) -> None:
    """The file is in WAL mode with the schema migrated; secure_delete is on for our connections."""
    store = await open_store(f"sqlite://{tmp_path / 'chat.db'}")
    await store.publish_policy(bundled_policy())
    conn = sqlite3.connect(tmp_path / "chat.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == [number for number, _ in migrations()]
    assert versions[0] == 1
    conn.close()
    assert await store.current_policy() is not None
    await store.close()


async def test_message_batches_make_no_temporary_files(tmp_path: Path) -> None:
    """A group of appends runs in a savepoint, whose undo pages SQLite keeps in memory only up to
    64 KiB and otherwise in a file it creates and unlinks in the temporary folder, once a commit
    (a batch across many conversations touches that many index pages). The writer keeps them in
    memory. SQLite's temp folder is pointed at the test's own: a file created and unlinked there
    would move the folder's modification time."""
    scratch = tmp_path / "sqlite-temp"
    scratch.mkdir()
    probe = sqlite3.connect(":memory:")
    probe.execute(f"PRAGMA temp_store_directory = '{scratch}'")  # process-wide, undone below
    try:
        store = await open_store(f"sqlite://{tmp_path / 'chat.db'}")
        try:
            await store.publish_policy(bundled_policy())
            conversations = [(await store.open_conversation(await _customer(store, f"c{n}")))[0]
                             for n in range(40)]

            async def one_each(round_: int) -> None:
                await asyncio.gather(*[
                    store.append_message(c.id, sender="visitor", sender_id="c", author="Ada",
                                         body="hello", client_msg_id=f"{c.id}-{round_:04}")
                    for c in conversations])

            for round_ in range(20):  # indexes over many pages, as on a server that has chatted
                await one_each(round_)
            before = scratch.stat().st_mtime_ns
            for round_ in range(20, 40):  # one commit each, over several ticks of the file clock
                await one_each(round_)
            assert scratch.stat().st_mtime_ns == before
            stored = await store.messages_after(conversations[0].id, 0, 1000)
            assert [m.seq for m in stored] == list(range(1, 41))
        finally:
            await store.close()
    finally:
        probe.execute("PRAGMA temp_store_directory = ''")
        probe.close()


async def test_appends_wait_behind_a_long_write_job_without_holding_up_the_event_loop(
        tmp_path: Path) -> None:
    """Appends are committed on the event loop only while the writer thread is idle: queued
    behind a job that runs on the writer thread, they wait for it and are stored after it, in
    the order they were queued, and the event loop runs on meanwhile (the job is let go from
    it; had the job run on the loop, it would wait for itself and fail)."""
    import threading

    from chatserver.storage.sqlite.store import SQLiteStore

    store = await open_store(f"sqlite://{tmp_path / 'chat.db'}")
    assert isinstance(store, SQLiteStore)
    try:
        await store.publish_policy(bundled_policy())
        conversation, _ = await store.open_conversation(await _customer(store))
        running, release = threading.Event(), threading.Event()

        def long_job(c: sqlite3.Connection) -> bool:
            running.set()
            return release.wait(10)

        job = asyncio.create_task(store.engine.write(long_job))
        assert await asyncio.get_running_loop().run_in_executor(None, running.wait, 10)
        appends = [asyncio.create_task(store.append_message(
            conversation.id, sender="visitor", sender_id="c", author="Ada", body=f"m{n}",
            client_msg_id=f"id{n}")) for n in range(5)]
        for _ in range(20):  # turns of the event loop, each a chance to commit them here
            await asyncio.sleep(0.005)
        assert not any(a.done() for a in appends)
        release.set()
        assert await job is True
        stored = [m for m, _, _ in await asyncio.gather(*appends)]
        assert [(m.seq, m.body) for m in stored] == [(n + 1, f"m{n}") for n in range(5)]
    finally:
        await store.close()


async def test_the_wal_starts_over_while_writes_never_pause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite starts the WAL over only when a write begins with every frame copied back into
    the database, and the checkpointer, copying while commits go on, never gets there by
    itself: the WAL grew by every commit for as long as writes kept coming. The writer copies
    what was committed during each checkpoint before its next batch, so under appends that
    never pause the WAL starts over again and again (the checkpoint counter in its header,
    bytes 12-15, moves on at each start) and stays small."""
    from chatserver.storage.sqlite import upkeep

    monkeypatch.setattr(upkeep, "CHECKPOINT_SECONDS", 0.05)
    store = await open_store(f"sqlite://{tmp_path / 'chat.db'}")
    wal = tmp_path / "chat.db-wal"

    def starts() -> int:
        with wal.open("rb") as f:
            return int.from_bytes(f.read(16)[12:], "big")

    try:
        await store.publish_policy(bundled_policy())
        conversations = [(await store.open_conversation(await _customer(store, f"c{n}")))[0]
                         for n in range(20)]
        loop = asyncio.get_running_loop()
        before, stop = starts(), loop.time() + 1.0
        sent = [0] * len(conversations)

        async def talk(k: int) -> None:  # back to back: a commit in every turn of the loop
            while loop.time() < stop:
                await store.append_message(
                    conversations[k].id, sender="visitor", sender_id="c", author="Ada",
                    body=f"message {sent[k]}", client_msg_id=f"{k}-{sent[k]}")
                sent[k] += 1

        await asyncio.gather(*[talk(k) for k in range(len(conversations))])
        assert starts() - before >= 3
        assert wal.stat().st_size < sum(sent) * 4096  # not a page for every message
        stored = await store.messages_after(conversations[0].id, 0, 100_000)
        assert [m.seq for m in stored] == list(range(1, sent[0] + 1))
    finally:
        await store.close()


async def test_closing_leaves_a_long_index_backlog_to_the_next_open(tmp_path: Path) -> None:
    """Closing the store indexes at most CLOSE_JOBS write jobs of messages (`serve` opens and
    closes the store once before it starts, so a start must not wait for a whole index to be
    built); the rest is indexed by the next open, in the background, and a search flushes
    first, so it finds even the last message of the backlog."""
    from chatserver.storage.base import ConversationSearch
    from chatserver.storage.sqlite import search_index

    path = tmp_path / "chat.db"
    store = await open_store(f"sqlite://{path}")
    await store.publish_policy(bundled_policy())
    conversation, _ = await store.open_conversation(await _customer(store))
    await store.close()
    rows = search_index.INDEX_ROWS * (search_index.CLOSE_JOBS + 2)
    db = sqlite3.connect(path)  # stored by other means: nothing of it is in the index yet
    with db:
        db.executemany(
            "INSERT INTO messages (conversation_id, seq, sender, sender_id, body, sent_at) "
            "VALUES (?, ?, 'visitor', 'c', ?, '2026-12-01T00:00:00.000000+00:00')",
            ((conversation.id, n, "zebra" if n == rows else f"message {n}")
             for n in range(1, rows + 1)))
        db.execute("UPDATE conversations SET last_seq = ? WHERE id = ?", (rows, conversation.id))
    db.close()

    def mark() -> int:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return int(db.execute("SELECT indexed_up_to FROM search_index_state").fetchone()[0])

    await (await open_store(f"sqlite://{path}")).close()  # as serve's check before it starts
    assert mark() == search_index.CLOSE_JOBS * search_index.INDEX_ROWS
    store = await open_store(f"sqlite://{path}")
    try:
        found, total = await store.search_conversations(ConversationSearch(query="zebra"))
        assert total == 1 and found[0].conversation.id == conversation.id
        assert mark() == rows
    finally:
        await store.close()


async def test_writers_of_several_processes_take_turns_through_the_lock_file(tmp_path: Path
                                                                             ) -> None:
    """Another process holding the writers' lock file (`chat.db-writer`, flock) makes a write
    wait for its turn, without error, and it is stored as soon as the lock is let go; two stores
    on one file (as two workers) then write 200 messages at once with gapless seqs."""
    import fcntl
    import os

    path = tmp_path / "chat.db"
    first = await open_store(f"sqlite://{path}")
    second = await open_store(f"sqlite://{path}")
    try:
        await first.publish_policy(bundled_policy())
        conversation, _ = await first.open_conversation(await _customer(first))
        holder = os.open(f"{path}-writer", os.O_RDWR)
        fcntl.flock(holder, fcntl.LOCK_EX)  # as another process's writer in its transaction
        try:
            write = asyncio.create_task(first.append_message(
                conversation.id, sender="visitor", sender_id="c", author="Ada", body="waits",
                client_msg_id="w"))
            await asyncio.sleep(0.3)
            assert not write.done()
        finally:
            fcntl.flock(holder, fcntl.LOCK_UN)
            os.close(holder)
        message, new, _ = await write
        assert new and message.seq == 1
        results = await asyncio.gather(*[
            (first, second)[n % 2].append_message(
                conversation.id, sender="visitor", sender_id="c", author="Ada", body=f"m{n}",
                client_msg_id=f"id{n}")
            for n in range(200)
        ])
        assert sorted(m.seq for m, _, _ in results) == list(range(2, 202))
        stored = await second.messages_after(conversation.id, 0, 1000)
        assert [m.seq for m in stored] == list(range(1, 202))
    finally:
        await second.close()
        await first.close()


async def test_policy_versions_are_immutable(store: Store) -> None:
    """Publishing an existing version again is refused."""
    with pytest.raises(Conflict):
        await store.publish_policy(bundled_policy())
