"""SQLite: blocks of abusive visitors (migration 012), as plain functions; the store's thin
methods are in sqlite_team.py."""

from __future__ import annotations

import sqlite3
from typing import Any

KEYS = ("id", "conversation_id", "ip", "reason", "created_at", "expires_at")
_SELECT = "SELECT id, conversation_id, ip, reason, created_at, expires_at FROM blocks"


def add(c: sqlite3.Connection, customer_id: str, conversation_id: str | None, ip: str | None,
        reason: str, staff_id: int, now: str, expires_at: str) -> dict[str, Any]:
    cur = c.execute(
        "INSERT INTO blocks (customer_id, conversation_id, ip, reason, staff_id, created_at, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (customer_id, conversation_id, ip, reason, staff_id, now, expires_at))
    return dict(zip(KEYS, c.execute(_SELECT + " WHERE id = ?", (cur.lastrowid,)).fetchone(),
                    strict=True))


def active(c: sqlite3.Connection, customer_id: str | None, ip: str | None, now: str
           ) -> dict[str, Any] | None:
    row = c.execute(
        _SELECT + " WHERE expires_at > ? AND (customer_id = ? OR (ip IS NOT NULL AND ip = ?)) "
        "ORDER BY expires_at DESC LIMIT 1", (now, customer_id, ip)).fetchone()
    return dict(zip(KEYS, row, strict=True)) if row else None


def of_customer(c: sqlite3.Connection, customer_id: str) -> list[dict[str, Any]]:
    return [dict(zip(KEYS, row, strict=True)) for row in c.execute(
        _SELECT + " WHERE customer_id = ? ORDER BY id", (customer_id,))]


def last_ip(c: sqlite3.Connection, customer_id: str) -> str | None:
    row = c.execute(
        "SELECT a.ip FROM access_events a JOIN visitor_sessions s ON s.id = a.session_id "
        "WHERE s.customer_id = ? AND a.ip IS NOT NULL ORDER BY a.id DESC LIMIT 1",
        (customer_id,)).fetchone()
    return row[0] if row else None


def purge(c: sqlite3.Connection, now: str, dry_run: bool) -> int:
    if dry_run:
        return int(c.execute("SELECT COUNT(*) FROM blocks WHERE expires_at <= ?",
                             (now,)).fetchone()[0])
    return c.execute("DELETE FROM blocks WHERE expires_at <= ?", (now,)).rowcount
