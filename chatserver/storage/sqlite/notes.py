"""Staff-only notes and the customer's ratings (migration 011). A note takes no seq (the
customer's seqs stay gapless); it is placed after the conversation's last seq when written.
Exported, erased and purged with the conversation (privacy.py)."""

from __future__ import annotations

import sqlite3

from ...errors import Conflict, NotFound
from ..base import Note, Rating
from ..rows import NOTE, RATING


def add(c: sqlite3.Connection, conversation_id: str, staff_id: int, body: str,
        client_msg_id: str, now: str) -> tuple[Note, bool]:
    row = c.execute(
        NOTE + " WHERE n.conversation_id = ? AND n.staff_id = ? AND n.client_msg_id = ?",
        (conversation_id, staff_id, client_msg_id)).fetchone()
    if row:
        return Note(*row), False
    found = c.execute("SELECT last_seq FROM conversations WHERE id = ?",
                      (conversation_id,)).fetchone()
    if found is None:
        raise NotFound("No such conversation.")
    cur = c.execute(
        "INSERT INTO notes (conversation_id, after_seq, staff_id, body, client_msg_id, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (conversation_id, found[0], staff_id, body, client_msg_id, now))
    return Note(*c.execute(NOTE + " WHERE n.id = ?", (cur.lastrowid,)).fetchone()), True


def after(c: sqlite3.Connection, conversation_id: str, after_seq: int) -> list[Note]:
    return [Note(*r) for r in c.execute(
        NOTE + " WHERE n.conversation_id = ? AND n.after_seq >= ? ORDER BY n.id",
        (conversation_id, after_seq))]


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
    row = c.execute(RATING + " WHERE conversation_id = ?", (conversation_id,)).fetchone()
    return Rating(*row) if row else None
