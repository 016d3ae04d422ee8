"""Compaction on PostgreSQL does not hold an erasure up while a reader keeps an old snapshot:
REINDEX CONCURRENTLY waits for such readers, so the rest finishes in the background."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from chatserver.consent import bundled_policy
from chatserver.storage import open_store
from chatserver.storage.postgres.store import COMPACT_WAIT_SECONDS, PostgresStore

from . import databases


async def test_erasure_returns_while_a_reader_holds_an_old_snapshot(postgres_url: str) -> None:
    """With a repeatable-read transaction open elsewhere, an erasure returns in about
    COMPACT_WAIT_SECONDS; the compaction completes once the reader ends."""
    databases.empty_database(postgres_url)
    store = await open_store(postgres_url)
    assert isinstance(store, PostgresStore)
    reader = await asyncpg.connect(postgres_url)
    try:
        await store.publish_policy(bundled_policy())
        await store.create_visitor_session("s-ada")
        customer = await store.save_customer("s-ada", name="Ada", email="a@example.com",
                                             company="")
        conversation, _ = await store.open_conversation(customer.id)
        await store.append_message(conversation.id, sender="visitor", sender_id=customer.id,
                                   author="Ada", body="hello", client_msg_id=None)
        tx = reader.transaction(isolation="repeatable_read")
        await tx.start()
        await reader.fetchval("SELECT COUNT(*) FROM messages")  # takes the snapshot
        started = time.monotonic()
        await asyncio.wait_for(store.erase_customer(customer.id, reason="request"), 10)
        assert time.monotonic() - started < COMPACT_WAIT_SECONDS + 3
        task = store._compaction
        assert task is not None and not task.done()  # still waiting for the reader
        await tx.rollback()
        await asyncio.wait_for(asyncio.shield(task), 20)  # raises if the compaction failed
    finally:
        await reader.close()
        await store.close()
