"""Conversations and their messages.

Seqs are gapless per conversation: an append bumps the conversation's last_seq and stores the
message under it in one job on the single writer, so no two appends interleave. This is the
one-at-a-time path; the writer stores runs of appends set-based (appends.py) and falls back to
this one for repeats and errors.
"""

from __future__ import annotations

import secrets
import sqlite3
from typing import Any

from ...errors import AlreadyClaimed, ConsentWithdrawn, ConversationClosed, NotFound
from ..base import Conversation, ConversationSummary, Message
from ..rows import COLUMNS, FROM, MESSAGES, SUMMARY, to_conversation, to_message, to_summary
from .search_index import next_message_id

MESSAGE_SELECT = MESSAGES.format(agent="st.id = CAST(m.sender_id AS INTEGER)")


def get(c: sqlite3.Connection, conversation_id: str) -> Conversation | None:
    row = c.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE c.id = ?", (conversation_id,)).fetchone()
    return to_conversation(row) if row else None


def of_customer(c: sqlite3.Connection, customer_id: str) -> list[Conversation]:
    rows = c.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE c.customer_id = ? "
                     "ORDER BY c.created_at DESC", (customer_id,)).fetchall()
    return [to_conversation(r) for r in rows]


def require(c: sqlite3.Connection, conversation_id: str) -> Conversation:
    found = get(c, conversation_id)
    if found is None:
        raise NotFound("No such conversation.")
    return found


def open_conversation(c: sqlite3.Connection, customer_id: str, *, create: bool, now: str
                      ) -> tuple[Conversation, bool]:
    row = c.execute(
        f"""SELECT {COLUMNS} FROM {FROM}
            WHERE c.customer_id = ? AND c.status != 'closed'
            ORDER BY c.created_at DESC LIMIT 1""",
        (customer_id,),
    ).fetchone()
    if row:
        return to_conversation(row), False
    if not create:
        raise NotFound("No open conversation.")
    conversation_id = "cv_" + secrets.token_hex(10)
    c.execute(
        "INSERT INTO conversations (id, customer_id, status, created_at) "
        "VALUES (?, ?, 'queued', ?)",
        (conversation_id, customer_id, now),
    )
    return require(c, conversation_id), True


def claim(c: sqlite3.Connection, conversation_id: str, staff_id: int, now: str
          ) -> tuple[Conversation, bool]:
    found = require(c, conversation_id)
    if found.status == "closed":
        raise ConversationClosed()
    if found.status == "active":
        if found.agent_id == staff_id:
            return found, False
        raise AlreadyClaimed()
    c.execute(
        "UPDATE conversations SET status = 'active', agent_id = ?, claimed_at = ? "
        "WHERE id = ? AND status = 'queued'",
        (staff_id, now, conversation_id),
    )
    return require(c, conversation_id), True


def close(c: sqlite3.Connection, conversation_id: str, now: str) -> Conversation | None:
    found = require(c, conversation_id)
    if found.status == "closed":
        return None
    c.execute(
        "UPDATE conversations SET status = 'closed', closed_at = ? WHERE id = ?",
        (now, conversation_id),
    )
    return get(c, conversation_id)


def append(
    c: sqlite3.Connection, conversation_id: str, *, sender: str, sender_id: str, author: str,
    body: str, client_msg_id: str | None, now: str, unless_paused: bool = False,
) -> tuple[Message, bool, str]:
    if unless_paused and is_paused(c, conversation_id):
        raise ConsentWithdrawn()
    if client_msg_id is not None:
        row = c.execute(
            MESSAGE_SELECT + " WHERE m.conversation_id = ? AND m.sender = ? "
            "AND m.sender_id = ? AND m.client_msg_id = ?",
            (conversation_id, sender, sender_id, client_msg_id),
        ).fetchone()
        if row:
            (status,) = c.execute(
                "SELECT status FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            return to_message(row), False, status
    row = c.execute(
        "UPDATE conversations SET last_seq = last_seq + 1, last_message_at = ? "
        "WHERE id = ? RETURNING last_seq, customer_id, status",
        (now, conversation_id),
    ).fetchone()
    if row is None:
        raise NotFound("No such conversation.")
    seq, customer_id, status = row
    if status == "closed" and sender != "system":
        raise ConversationClosed()
    c.execute(
        "INSERT INTO messages (id, conversation_id, seq, sender, sender_id, body, "
        "client_msg_id, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (next_message_id(c), conversation_id, seq, sender, sender_id, body, client_msg_id, now),
    )
    if sender == "visitor":
        c.execute("UPDATE customers SET last_active_at = ? WHERE id = ?", (now, customer_id))
    message = Message(conversation_id, seq, sender, sender_id, author, body, client_msg_id, now)
    return message, True, status


def messages_after(c: sqlite3.Connection, conversation_id: str, after_seq: int, limit: int
                   ) -> list[Message]:
    rows = c.execute(
        MESSAGE_SELECT + " WHERE m.conversation_id = ? AND m.seq > ? ORDER BY m.seq LIMIT ?",
        (conversation_id, after_seq, limit),
    ).fetchall()
    return [to_message(r) for r in rows]


def open_conversations(c: sqlite3.Connection) -> list[ConversationSummary]:
    rows = c.execute(
        SUMMARY + " WHERE c.status IN ('queued', 'active') ORDER BY c.created_at"
    ).fetchall()
    return [to_summary(r) for r in rows]


def summary(c: sqlite3.Connection, conversation_id: str) -> ConversationSummary | None:
    row = c.execute(SUMMARY + " WHERE c.id = ?", (conversation_id,)).fetchone()
    return to_summary(row) if row else None


def messages_between(
    c: sqlite3.Connection, created_from: str | None, created_before: str | None, after_id: int,
    limit: int,
) -> tuple[list[Message], int]:
    where: list[str] = ["m.id > ?"]
    args: list[Any] = [after_id]
    if created_from:
        where.append("m.sent_at >= ?")
        args.append(created_from)
    if created_before:
        where.append("m.sent_at < ?")
        args.append(created_before)
    rows = c.execute(
        MESSAGE_SELECT.replace("SELECT m.conversation_id", "SELECT m.id, m.conversation_id")
        + " WHERE " + " AND ".join(where) + " ORDER BY m.id LIMIT ?",
        (*args, limit),
    ).fetchall()
    last = rows[-1][0] if rows else after_id
    return [to_message(r[1:]) for r in rows], last


# -- handing over and paused conversations ----------------------------------------------------

# Open conversations whose customer holds no standing consent (every consent withdrawn): paused
# until the customer consents again. PostgreSQL's conversations.py says the same.
PAUSED = """
    SELECT c.id FROM conversations c
    WHERE c.status <> 'closed' AND NOT EXISTS (
        SELECT 1 FROM consents WHERE customer_id = c.customer_id AND withdrawn_at IS NULL)
"""


def move(c: sqlite3.Connection, conversation_id: str, *, expect_agent_id: int | None,
         to_agent_id: int | None, now: str) -> tuple[Conversation, bool]:
    """Hand the conversation to `to_agent_id` (None: back to the queue), provided it is still
    open and held by `expect_agent_id` (None: queued). One conditional UPDATE: of two moves
    made at once from the same state, exactly one changes the row. The conversation as it now
    is, and whether this call moved it."""
    if to_agent_id is None:
        cur = c.execute(
            "UPDATE conversations SET status = 'queued', agent_id = NULL, claimed_at = NULL "
            "WHERE id = ? AND status <> 'closed' AND agent_id IS ?",
            (conversation_id, expect_agent_id),
        )
    else:
        cur = c.execute(
            "UPDATE conversations SET status = 'active', agent_id = ?, claimed_at = ? "
            "WHERE id = ? AND status <> 'closed' AND agent_id IS ?",
            (to_agent_id, now, conversation_id, expect_agent_id),
        )
    return require(c, conversation_id), cur.rowcount == 1


def paused(c: sqlite3.Connection) -> set[str]:
    return {r[0] for r in c.execute(PAUSED)}


def is_paused(c: sqlite3.Connection, conversation_id: str) -> bool:
    return c.execute(PAUSED + " AND c.id = ?", (conversation_id,)).fetchone() is not None


def paused_among(c: sqlite3.Connection, conversation_ids: set[str]) -> set[str]:
    if not conversation_ids:
        return set()
    ids = list(conversation_ids)
    marks = ",".join("?" * len(ids))
    return {r[0] for r in c.execute(PAUSED + f" AND c.id IN ({marks})", ids)}
