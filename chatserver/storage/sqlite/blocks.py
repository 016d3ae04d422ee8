"""Blocks of abusive visitors (migration 013): the customer, and optionally the IP address they
last chatted from, for a limited time. Exported, and purged once expired, in privacy.py."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..rows import BLOCK, BLOCK_KEYS


def add(c: sqlite3.Connection, customer_id: str, conversation_id: str | None, ip: str | None,
        reason: str, staff_id: int, now: str, expires_at: str) -> dict[str, Any]:
    cur = c.execute(
        "INSERT INTO blocks (customer_id, conversation_id, ip, reason, staff_id, created_at, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (customer_id, conversation_id, ip, reason, staff_id, now, expires_at))
    return dict(zip(BLOCK_KEYS, c.execute(BLOCK + " WHERE id = ?", (cur.lastrowid,)).fetchone(),
                    strict=True))


def active(c: sqlite3.Connection, customer_id: str | None, ip: str | None, now: str
           ) -> dict[str, Any] | None:
    row = c.execute(
        BLOCK + " WHERE expires_at > ? AND (customer_id = ? OR (ip IS NOT NULL AND ip = ?)) "
        "ORDER BY expires_at DESC LIMIT 1", (now, customer_id, ip)).fetchone()
    return dict(zip(BLOCK_KEYS, row, strict=True)) if row else None


def last_ip(c: sqlite3.Connection, customer_id: str) -> str | None:
    row = c.execute(
        "SELECT a.ip FROM access_events a JOIN visitor_sessions s ON s.id = a.session_id "
        "WHERE s.customer_id = ? AND a.ip IS NOT NULL ORDER BY a.id DESC LIMIT 1",
        (customer_id,)).fetchone()
    return row[0] if row else None
