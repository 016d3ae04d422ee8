"""Canned responses (migration 012): replies admins prepare, agents insert by shortcut. No
customer data."""

from __future__ import annotations

import sqlite3

from ...errors import Conflict, NotFound
from ..base import CannedResponse
from ..rows import CANNED, CANNED_TAKEN


def list_all(c: sqlite3.Connection) -> list[CannedResponse]:
    return [CannedResponse(*r) for r in c.execute(CANNED + " ORDER BY shortcut")]


def get(c: sqlite3.Connection, canned_id: int) -> CannedResponse:
    row = c.execute(CANNED + " WHERE id = ?", (canned_id,)).fetchone()
    if row is None:
        raise NotFound("No such canned response.")
    return CannedResponse(*row)


def add(c: sqlite3.Connection, shortcut: str, body: str, now: str) -> CannedResponse:
    try:
        cur = c.execute("INSERT INTO canned_responses (shortcut, body, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?)", (shortcut, body, now, now))
    except sqlite3.IntegrityError:
        raise Conflict(CANNED_TAKEN, code="shortcut_taken") from None
    assert cur.lastrowid is not None
    return get(c, cur.lastrowid)


def update(c: sqlite3.Connection, canned_id: int, shortcut: str | None, body: str | None,
           now: str) -> CannedResponse:
    before = get(c, canned_id)
    try:
        c.execute("UPDATE canned_responses SET shortcut = ?, body = ?, updated_at = ? "
                  "WHERE id = ?", (shortcut or before.shortcut, body or before.body, now,
                                   canned_id))
    except sqlite3.IntegrityError:
        raise Conflict(CANNED_TAKEN, code="shortcut_taken") from None
    return get(c, canned_id)


def delete(c: sqlite3.Connection, canned_id: int) -> None:
    if c.execute("DELETE FROM canned_responses WHERE id = ?", (canned_id,)).rowcount == 0:
        raise NotFound("No such canned response.")
