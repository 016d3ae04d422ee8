"""SQLite: canned responses (migration 011), as plain functions on a connection; the store's
thin methods are in sqlite_team.py."""

from __future__ import annotations

import sqlite3

from ..errors import Conflict, NotFound
from .base import CannedResponse

_SELECT = "SELECT id, shortcut, body, created_at, updated_at FROM canned_responses"
TAKEN = "Another canned response has that shortcut."


def list_all(c: sqlite3.Connection) -> list[CannedResponse]:
    return [CannedResponse(*r) for r in c.execute(_SELECT + " ORDER BY shortcut").fetchall()]


def _get(c: sqlite3.Connection, canned_id: int) -> CannedResponse:
    row = c.execute(_SELECT + " WHERE id = ?", (canned_id,)).fetchone()
    if row is None:
        raise NotFound("No such canned response.")
    return CannedResponse(*row)


def add(c: sqlite3.Connection, shortcut: str, body: str, now: str) -> CannedResponse:
    try:
        cur = c.execute("INSERT INTO canned_responses (shortcut, body, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?)", (shortcut, body, now, now))
    except sqlite3.IntegrityError:
        raise Conflict(TAKEN, code="shortcut_taken") from None
    assert cur.lastrowid is not None
    return _get(c, cur.lastrowid)


def update(c: sqlite3.Connection, canned_id: int, shortcut: str | None, body: str | None,
           now: str) -> CannedResponse:
    before = _get(c, canned_id)
    try:
        c.execute("UPDATE canned_responses SET shortcut = ?, body = ?, updated_at = ? "
                  "WHERE id = ?", (shortcut or before.shortcut, body or before.body, now,
                                   canned_id))
    except sqlite3.IntegrityError:
        raise Conflict(TAKEN, code="shortcut_taken") from None
    return _get(c, canned_id)


def delete(c: sqlite3.Connection, canned_id: int) -> None:
    if c.execute("DELETE FROM canned_responses WHERE id = ?", (canned_id,)).rowcount == 0:
        raise NotFound("No such canned response.")
