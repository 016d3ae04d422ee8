"""Upgrading a PostgreSQL database made by the first schema: staff get a display name, and the
system notices that named agents by their sign-in names are reworded, searchable by the new
words (as SQLite's migration 5 does)."""

from __future__ import annotations

import asyncpg

from chatserver.storage import open_store
from chatserver.storage.base import DEFAULT_DISPLAY_NAME, ConversationSearch
from chatserver.storage.postgres.migrate import migrations

from . import databases

_ROWS = """
INSERT INTO staff (id, name, role, password_hash, created_at)
    VALUES (1, 'alice', 'agent', 'x', '2026-01-01T00:00:00.000000Z');
INSERT INTO customers (id, name, email, created_at, updated_at, last_active_at)
    VALUES ('cu_1', 'Ada', 'ada@example.com', 't', 't', 't');
INSERT INTO conversations (id, customer_id, status, agent_id, created_at, last_seq)
    VALUES ('cv_1', 'cu_1', 'closed', 1, 't', 3);
INSERT INTO messages (conversation_id, seq, sender, sender_id, body, sent_at, search) VALUES
    ('cv_1', 1, 'system', 'system', 'alice joined the conversation.', 't',
     to_tsvector('simple', 'alice joined the conversation')),
    ('cv_1', 2, 'visitor', 'cu_1', 'alice joined the conversation.', 't',
     to_tsvector('simple', 'alice joined the conversation')),
    ('cv_1', 3, 'system', 'system', 'The conversation was closed by alice.', 't',
     to_tsvector('simple', 'the conversation was closed by alice'));
"""


async def test_old_notices_are_reworded_with_the_display_name(postgres_url: str) -> None:
    """System notices naming an agent by sign-in name now name the display name (a visitor's
    message with the same words is left alone); search finds the new words, not the old."""
    url = databases.create_database()
    first = migrations()[0]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                           "applied_at text NOT NULL)")
        await conn.execute(first[1])
        await conn.execute("INSERT INTO schema_migrations VALUES ($1, 'then')", first[0])
        await conn.execute(_ROWS)
    finally:
        await conn.close()
    store = await open_store(url)
    try:
        staff = await store.get_staff(1)
        assert staff is not None and staff.display_name == DEFAULT_DISPLAY_NAME
        bodies = [m.body for m in await store.messages_after("cv_1", 0)]
        assert bodies == [f"{DEFAULT_DISPLAY_NAME} joined the conversation.",
                          "alice joined the conversation.",
                          f"The conversation was closed by {DEFAULT_DISPLAY_NAME}."]
        found, _ = await store.search_conversations(ConversationSearch(query="support agent"))
        assert [s.conversation.id for s in found] == ["cv_1"]
        summary = found[0].conversation
        assert summary.agent_name == "alice"
        assert summary.agent_display_name == DEFAULT_DISPLAY_NAME
        closed_by = databases.query(url, "SELECT COUNT(*) FROM messages WHERE search @@ "
                                    "to_tsquery('simple', 'closed & alice')")
        assert closed_by == [(0,)]
    finally:
        await store.close()
