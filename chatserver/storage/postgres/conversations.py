"""Conversations and their messages.

Seqs are gapless and unique per conversation: an append (one statement) locks the conversation's
row (`SELECT ... FOR UPDATE`) and takes last_seq + 1, and the (conversation_id, seq) constraint
would refuse a repeat. A repeated client_msg_id meets a unique index (`INSERT ... ON CONFLICT DO
NOTHING`), so two processes storing the same message at once store it once. A claim is one
conditional UPDATE: of two agents claiming at the same instant, exactly one changes the row.
"""

from __future__ import annotations

import secrets
from typing import Any

from ...errors import AlreadyClaimed, ConsentWithdrawn, ConversationClosed, NotFound
from ..base import Conversation, ConversationSummary, Message
from ..rows import COLUMNS, FROM, MESSAGES, SUMMARY, to_conversation, to_message, to_summary
from .engine import Connection
from .folding import fold
from .visitors import rowcount

MESSAGE_SELECT = MESSAGES.format(agent="m.sender_id = st.id::text")


async def get(c: Connection, conversation_id: str) -> Conversation | None:
    row = await c.fetchrow(f"SELECT {COLUMNS} FROM {FROM} WHERE c.id = $1", conversation_id)
    return to_conversation(row) if row else None


async def of_customer(c: Connection, customer_id: str) -> list[Conversation]:
    rows = await c.fetch(f"SELECT {COLUMNS} FROM {FROM} WHERE c.customer_id = $1 "
                         "ORDER BY c.created_at DESC", customer_id)
    return [to_conversation(r) for r in rows]


async def require(c: Connection, conversation_id: str) -> Conversation:
    found = await get(c, conversation_id)
    if found is None:
        raise NotFound("No such conversation.")
    return found


async def _open_one(c: Connection, customer_id: str) -> Conversation | None:
    row = await c.fetchrow(
        f"""SELECT {COLUMNS} FROM {FROM} WHERE c.customer_id = $1 AND c.status <> 'closed'
            ORDER BY c.created_at DESC LIMIT 1""",
        customer_id,
    )
    return to_conversation(row) if row else None


async def open_conversation(c: Connection, customer_id: str, *, create: bool, now: str
                            ) -> tuple[Conversation, bool]:
    if create:
        # Two sockets of one customer opening at once: the second waits here, then finds the
        # first one's conversation (and the partial unique index would refuse a second).
        if await c.fetchval("SELECT 1 FROM customers WHERE id = $1 FOR UPDATE",
                            customer_id) is None:
            raise NotFound("No such customer.")
    found = await _open_one(c, customer_id)
    if found is not None:
        return found, False
    if not create:
        raise NotFound("No open conversation.")
    conversation_id = "cv_" + secrets.token_hex(10)
    await c.execute(
        "INSERT INTO conversations (id, customer_id, status, created_at) "
        "VALUES ($1, $2, 'queued', $3)",
        conversation_id, customer_id, now,
    )
    return await require(c, conversation_id), True


async def claim(c: Connection, conversation_id: str, staff_id: int, now: str
                ) -> tuple[Conversation, bool]:
    # Conditional on still being queued: a rival claim blocks on the row lock, then finds the
    # row active and changes nothing.
    won = await c.fetchval(
        "UPDATE conversations SET status = 'active', agent_id = $1, claimed_at = $2 "
        "WHERE id = $3 AND status = 'queued' RETURNING id",
        staff_id, now, conversation_id,
    )
    found = await require(c, conversation_id)
    if won:
        return found, True
    if found.status == "closed":
        raise ConversationClosed()
    if found.agent_id == staff_id:
        return found, False
    raise AlreadyClaimed()


async def close(c: Connection, conversation_id: str, now: str) -> Conversation | None:
    status = await c.fetchval("SELECT status FROM conversations WHERE id = $1 FOR UPDATE",
                              conversation_id)
    if status is None:
        raise NotFound("No such conversation.")
    if status == "closed":
        return None
    await c.execute("UPDATE conversations SET status = 'closed', closed_at = $1 WHERE id = $2",
                    now, conversation_id)
    return await get(c, conversation_id)


async def _repeat(c: Connection, conversation_id: str, sender: str, sender_id: str,
                  client_msg_id: str) -> tuple[Message, bool, str] | None:
    row = await c.fetchrow(
        MESSAGE_SELECT + " WHERE m.conversation_id = $1 AND m.sender = $2 "
        "AND m.sender_id = $3 AND m.client_msg_id = $4",
        conversation_id, sender, sender_id, client_msg_id,
    )
    if row is None:
        return None
    status = await c.fetchval("SELECT status FROM conversations WHERE id = $1", conversation_id)
    return to_message(row), False, status


# One statement, so a message costs one round trip and holds its conversation's row lock for as
# short a time as it can: lock the conversation and take its next seq; insert unless closed (system
# messages excepted) or a repeat (the unique index on client_msg_id); move last_seq; mark the
# customer active. Every part sees the row as locked, the newest committed version.
_APPEND = """
    WITH conv AS (
        SELECT id, last_seq, customer_id, status FROM conversations WHERE id = $1 FOR UPDATE
    ), ins AS (
        INSERT INTO messages (conversation_id, seq, sender, sender_id, body, client_msg_id,
                              sent_at, search)
        SELECT id, last_seq + 1, $2, $3, $4, $5, $6, to_tsvector('simple', $7) FROM conv
        WHERE status <> 'closed' OR $2 = 'system'
        ON CONFLICT (conversation_id, sender, sender_id, client_msg_id)
            WHERE client_msg_id IS NOT NULL DO NOTHING
        RETURNING seq
    ), moved AS (
        UPDATE conversations SET last_seq = ins.seq, last_message_at = $6
        FROM ins WHERE conversations.id = $1
        RETURNING 1
    ), active AS (
        UPDATE customers SET last_active_at = $6
        FROM conv, ins WHERE customers.id = conv.customer_id AND $2 = 'visitor'
        RETURNING 1
    )
    SELECT conv.status, ins.seq, (SELECT COUNT(*) FROM moved), (SELECT COUNT(*) FROM active)
    FROM conv LEFT JOIN ins ON true
"""


async def append(
    c: Connection, conversation_id: str, *, sender: str, sender_id: str, author: str, body: str,
    client_msg_id: str | None, now: str, unless_paused: bool = False,
) -> tuple[Message, bool, str]:
    if unless_paused and await is_paused(c, conversation_id):
        raise ConsentWithdrawn()
    if client_msg_id is not None:
        repeat = await _repeat(c, conversation_id, sender, sender_id, client_msg_id)
        if repeat is not None:
            return repeat
    row = await c.fetchrow(_APPEND, conversation_id, sender, sender_id, body, client_msg_id,
                           now, fold(body))
    if row is None:
        raise NotFound("No such conversation.")
    status, seq = row[0], row[1]
    if seq is None:
        if status == "closed" and sender != "system":
            raise ConversationClosed()
        # the same message, committed by another connection meanwhile
        assert client_msg_id is not None
        repeat = await _repeat(c, conversation_id, sender, sender_id, client_msg_id)
        assert repeat is not None
        return repeat
    return Message(conversation_id, seq, sender, sender_id, author, body, client_msg_id, now), \
        True, status


async def messages_after(c: Connection, conversation_id: str, after_seq: int, limit: int
                         ) -> list[Message]:
    rows = await c.fetch(
        MESSAGE_SELECT + " WHERE m.conversation_id = $1 AND m.seq > $2 ORDER BY m.seq LIMIT $3",
        conversation_id, after_seq, limit,
    )
    return [to_message(r) for r in rows]


async def open_conversations(c: Connection) -> list[ConversationSummary]:
    rows = await c.fetch(SUMMARY + " WHERE c.status IN ('queued', 'active') ORDER BY c.created_at")
    return [to_summary(r) for r in rows]


async def summary(c: Connection, conversation_id: str) -> ConversationSummary | None:
    row = await c.fetchrow(SUMMARY + " WHERE c.id = $1", conversation_id)
    return to_summary(row) if row else None


async def messages_between(
    c: Connection, created_from: str | None, created_before: str | None, after_id: int, limit: int
) -> tuple[list[Message], int]:
    where = ["m.id > $1"]
    args: list[Any] = [after_id]
    if created_from:
        args.append(created_from)
        where.append(f"m.sent_at >= ${len(args)}")
    if created_before:
        args.append(created_before)
        where.append(f"m.sent_at < ${len(args)}")
    args.append(limit)
    rows = await c.fetch(
        MESSAGE_SELECT.replace("SELECT m.conversation_id", "SELECT m.id, m.conversation_id")
        + " WHERE " + " AND ".join(where) + f" ORDER BY m.id LIMIT ${len(args)}",
        *args,
    )
    last = rows[-1][0] if rows else after_id
    return [to_message(r[1:]) for r in rows], int(last)


# -- handing over and paused conversations ----------------------------------------------------

# Open conversations whose customer holds no standing consent: paused (as in SQLite's module).
PAUSED = """
    SELECT c.id FROM conversations c
    WHERE c.status <> 'closed' AND NOT EXISTS (
        SELECT 1 FROM consents WHERE customer_id = c.customer_id AND withdrawn_at IS NULL)
"""


async def move(c: Connection, conversation_id: str, *, expect_agent_id: int | None,
               to_agent_id: int | None, now: str) -> tuple[Conversation, bool]:
    """One conditional UPDATE, like a claim: a rival move blocks on the row lock, then finds
    the row changed and changes nothing."""
    if to_agent_id is None:
        status = await c.execute(
            "UPDATE conversations SET status = 'queued', agent_id = NULL, claimed_at = NULL "
            "WHERE id = $1 AND status <> 'closed' AND agent_id IS NOT DISTINCT FROM $2",
            conversation_id, expect_agent_id)
    else:
        status = await c.execute(
            "UPDATE conversations SET status = 'active', agent_id = $1, claimed_at = $2 "
            "WHERE id = $3 AND status <> 'closed' AND agent_id IS NOT DISTINCT FROM $4",
            to_agent_id, now, conversation_id, expect_agent_id)
    return await require(c, conversation_id), rowcount(status) == 1


async def paused(c: Connection) -> set[str]:
    return {r[0] for r in await c.fetch(PAUSED)}


async def is_paused(c: Connection, conversation_id: str) -> bool:
    return await c.fetchval(PAUSED + " AND c.id = $1", conversation_id) is not None
