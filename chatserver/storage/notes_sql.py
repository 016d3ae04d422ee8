"""SQLite: staff-only notes and the customer's ratings (migration 010), as plain functions on
a connection. The store's thin methods (sqlite_team.py) run them on its writer or a reader.

Kept apart from sqlite.py so the aggregate moves as one piece when the SQLite store is split.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..errors import Conflict, NotFound
from .base import Note, Rating

# The author is the writer's display name, read at display time like a message's.
_NOTE_SELECT = """
    SELECT n.id, n.conversation_id, n.after_seq, n.staff_id, st.display_name, n.body,
           n.client_msg_id, n.created_at
    FROM notes n JOIN staff st ON st.id = n.staff_id
"""


def _note(row: tuple[Any, ...]) -> Note:
    return Note(*row)


def add_note(c: sqlite3.Connection, conversation_id: str, staff_id: int, body: str,
             client_msg_id: str, now: str) -> tuple[Note, bool]:
    row = c.execute(
        _NOTE_SELECT + " WHERE n.conversation_id = ? AND n.staff_id = ? AND n.client_msg_id = ?",
        (conversation_id, staff_id, client_msg_id)).fetchone()
    if row:
        return _note(row), False
    found = c.execute("SELECT last_seq FROM conversations WHERE id = ?",
                      (conversation_id,)).fetchone()
    if found is None:
        raise NotFound("No such conversation.")
    cur = c.execute(
        "INSERT INTO notes (conversation_id, after_seq, staff_id, body, client_msg_id, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (conversation_id, found[0], staff_id, body, client_msg_id, now))
    row = c.execute(_NOTE_SELECT + " WHERE n.id = ?", (cur.lastrowid,)).fetchone()
    return _note(row), True


def notes_after(c: sqlite3.Connection, conversation_id: str, after_seq: int) -> list[Note]:
    rows = c.execute(
        _NOTE_SELECT + " WHERE n.conversation_id = ? AND n.after_seq >= ? ORDER BY n.id",
        (conversation_id, after_seq)).fetchall()
    return [_note(r) for r in rows]


def rate(c: sqlite3.Connection, conversation_id: str, score: int, comment: str,
         now: str) -> Rating:
    found = c.execute("SELECT status FROM conversations WHERE id = ?",
                      (conversation_id,)).fetchone()
    if found is None:
        raise NotFound("No such conversation.")
    if found[0] != "closed":
        raise Conflict("A conversation can be rated once it is closed.", code="not_closed")
    if get_rating(c, conversation_id) is not None:
        raise Conflict("This conversation has been rated already.", code="already_rated")
    c.execute("INSERT INTO conversation_ratings (conversation_id, score, comment, rated_at) "
              "VALUES (?, ?, ?, ?)", (conversation_id, score, comment, now))
    return Rating(conversation_id, score, comment, now)


def get_rating(c: sqlite3.Connection, conversation_id: str) -> Rating | None:
    row = c.execute("SELECT conversation_id, score, comment, rated_at FROM conversation_ratings "
                    "WHERE conversation_id = ?", (conversation_id,)).fetchone()
    return Rating(*row) if row else None


def export_extras(c: sqlite3.Connection, conversation_id: str) -> dict[str, Any]:
    """What a customer's export adds to each conversation: its notes and its rating."""
    rating = get_rating(c, conversation_id)
    return {"notes": [n.public() for n in notes_after(c, conversation_id, 0)],
            "rating": rating.public() if rating else None}
