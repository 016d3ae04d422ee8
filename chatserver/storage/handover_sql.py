"""SQLite statements for handing conversations over, agents' away state and paused chats.

Plain functions on a connection, called by thin `SQLiteStore` methods, so they move as they are
into the SQLite package's conversations and staff modules. The PostgreSQL twins are in
`postgres/handover.py`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import NotFound
from .base import Clock, Conversation, iso

# As in sqlite.py: a conversation with its agent's sign-in and display names.
CONVERSATION_COLUMNS = """
    c.id, c.customer_id, c.status, c.agent_id, s.name, c.created_at, c.claimed_at, c.closed_at,
    c.last_seq, c.last_message_at, s.display_name
"""
CONVERSATION_FROM = "conversations c LEFT JOIN staff s ON s.id = c.agent_id"

# Open conversations whose customer holds no standing consent (every consent withdrawn): the
# conversation is paused until the customer consents again.
_PAUSED = """
    SELECT c.id FROM conversations c
    WHERE c.status <> 'closed' AND NOT EXISTS (
        SELECT 1 FROM consents WHERE customer_id = c.customer_id AND withdrawn_at IS NULL)
"""


def move(c: sqlite3.Connection, conversation_id: str, *, expect_agent_id: int | None,
         to_agent_id: int | None, now: str) -> bool:
    """Hand the conversation to `to_agent_id` (None: back to the queue), provided it is still
    open and held by `expect_agent_id` (None: queued). One conditional UPDATE: of two moves
    made at once from the same state, exactly one changes the row. True when this one did."""
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
    return cur.rowcount == 1


def set_away(c: sqlite3.Connection, staff_id: int, away: bool) -> bool:
    """True when the staff member exists."""
    cur = c.execute("UPDATE staff SET away = ? WHERE id = ?", (1 if away else 0, staff_id))
    return cur.rowcount == 1


def away_staff(c: sqlite3.Connection) -> set[int]:
    return {r[0] for r in c.execute("SELECT id FROM staff WHERE away = 1")}


def paused_conversations(c: sqlite3.Connection) -> set[str]:
    return {r[0] for r in c.execute(_PAUSED)}


def conversation_paused(c: sqlite3.Connection, conversation_id: str) -> bool:
    return c.execute(_PAUSED + " AND c.id = ?", (conversation_id,)).fetchone() is not None


class SQLiteHandover:
    """The store methods over the functions above; `SQLiteStore` inherits them."""

    _write: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    _read: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
    clock: Clock

    async def move_conversation(self, conversation_id: str, *, expect_agent_id: int | None,
                                to_agent_id: int | None) -> tuple[Conversation, bool]:
        now = iso(self.clock())

        def job(c: sqlite3.Connection) -> tuple[Conversation, bool]:
            moved = move(c, conversation_id, expect_agent_id=expect_agent_id,
                         to_agent_id=to_agent_id, now=now)
            row = c.execute(f"SELECT {CONVERSATION_COLUMNS} FROM {CONVERSATION_FROM} "
                            "WHERE c.id = ?", (conversation_id,)).fetchone()
            if row is None:
                raise NotFound("No such conversation.")
            return Conversation(*row), moved

        result: tuple[Conversation, bool] = await self._write(job)
        return result

    async def set_staff_away(self, staff_id: int, away: bool) -> None:
        if not await self._write(lambda c: set_away(c, staff_id, away)):
            raise NotFound("No such staff member.")

    async def away_staff(self) -> set[int]:
        result: set[int] = await self._read(away_staff)
        return result

    async def paused_conversations(self) -> set[str]:
        result: set[str] = await self._read(paused_conversations)
        return result

    async def conversation_paused(self, conversation_id: str) -> bool:
        result: bool = await self._read(lambda c: conversation_paused(c, conversation_id))
        return result
