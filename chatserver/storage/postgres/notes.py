"""Staff-only notes and the customer's ratings on PostgreSQL (migration 004), as on SQLite
(sqlite/notes.py). A repeated note or a second rating meets a unique constraint
(`INSERT ... ON CONFLICT DO NOTHING`), so two processes storing one at once store it once."""

from __future__ import annotations

from typing import Any

from ...errors import Conflict, NotFound
from ..base import Note, Rating
from .engine import Connection

_NOTE_SELECT = """
    SELECT n.id, n.conversation_id, n.after_seq, n.staff_id, st.display_name, n.body,
           n.client_msg_id, n.created_at
    FROM notes n JOIN staff st ON st.id = n.staff_id
"""


def _note(row: Any) -> Note:
    return Note(*row)


async def add_note(c: Connection, conversation_id: str, staff_id: int, body: str,
                   client_msg_id: str, now: str) -> tuple[Note, bool]:
    last_seq = await c.fetchval("SELECT last_seq FROM conversations WHERE id = $1",
                                conversation_id)
    if last_seq is None:
        raise NotFound("No such conversation.")
    new_id = await c.fetchval(
        "INSERT INTO notes (conversation_id, after_seq, staff_id, body, client_msg_id, "
        "created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
        conversation_id, last_seq, staff_id, body, client_msg_id, now)
    if new_id is not None:
        return _note(await c.fetchrow(_NOTE_SELECT + " WHERE n.id = $1", new_id)), True
    row = await c.fetchrow(
        _NOTE_SELECT + " WHERE n.conversation_id = $1 AND n.staff_id = $2 "
        "AND n.client_msg_id = $3", conversation_id, staff_id, client_msg_id)
    return _note(row), False


async def notes_after(c: Connection, conversation_id: str, after_seq: int) -> list[Note]:
    rows = await c.fetch(
        _NOTE_SELECT + " WHERE n.conversation_id = $1 AND n.after_seq >= $2 ORDER BY n.id",
        conversation_id, after_seq)
    return [_note(r) for r in rows]


async def rate(c: Connection, conversation_id: str, score: int, comment: str,
               now: str) -> Rating:
    status = await c.fetchval("SELECT status FROM conversations WHERE id = $1", conversation_id)
    if status is None:
        raise NotFound("No such conversation.")
    if status != "closed":
        raise Conflict("A conversation can be rated once it is closed.", code="not_closed")
    done = await c.fetchval(
        "INSERT INTO conversation_ratings (conversation_id, score, comment, rated_at) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING conversation_id",
        conversation_id, score, comment, now)
    if done is None:
        raise Conflict("This conversation has been rated already.", code="already_rated")
    return Rating(conversation_id, score, comment, now)


async def get_rating(c: Connection, conversation_id: str) -> Rating | None:
    row = await c.fetchrow(
        "SELECT conversation_id, score, comment, rated_at FROM conversation_ratings "
        "WHERE conversation_id = $1", conversation_id)
    return Rating(*row) if row else None


async def export_extras(c: Connection, conversation_id: str) -> dict[str, Any]:
    """What a customer's export adds to each conversation: its notes and its rating."""
    rating = await get_rating(c, conversation_id)
    return {"notes": [n.public() for n in await notes_after(c, conversation_id, 0)],
            "rating": rating.public() if rating else None}
