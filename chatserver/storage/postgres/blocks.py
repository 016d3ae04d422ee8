"""Blocks of abusive visitors on PostgreSQL (migration 006), as sqlite/blocks.py."""

from __future__ import annotations

from typing import Any

from ..rows import BLOCK_KEYS as KEYS
from .engine import Connection

_SELECT = "SELECT id, conversation_id, ip, reason, created_at, expires_at FROM blocks"


async def add(c: Connection, customer_id: str, conversation_id: str | None, ip: str | None,
              reason: str, staff_id: int, now: str, expires_at: str) -> dict[str, Any]:
    row = await c.fetchrow(
        "INSERT INTO blocks (customer_id, conversation_id, ip, reason, staff_id, created_at, "
        "expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
        "RETURNING id, conversation_id, ip, reason, created_at, expires_at",
        customer_id, conversation_id, ip, reason, staff_id, now, expires_at)
    return dict(zip(KEYS, tuple(row), strict=True))


async def active(c: Connection, customer_id: str | None, ip: str | None, now: str
                 ) -> dict[str, Any] | None:
    row = await c.fetchrow(
        _SELECT + " WHERE expires_at > $1 AND (customer_id = $2 OR (ip IS NOT NULL AND ip = $3)) "
        "ORDER BY expires_at DESC LIMIT 1", now, customer_id, ip)
    return dict(zip(KEYS, tuple(row), strict=True)) if row else None


async def of_customer(c: Connection, customer_id: str) -> list[dict[str, Any]]:
    return [dict(zip(KEYS, tuple(row), strict=True)) for row in await c.fetch(
        _SELECT + " WHERE customer_id = $1 ORDER BY id", customer_id)]


async def last_ip(c: Connection, customer_id: str) -> str | None:
    ip = await c.fetchval(
        "SELECT a.ip FROM access_events a JOIN visitor_sessions s ON s.id = a.session_id "
        "WHERE s.customer_id = $1 AND a.ip IS NOT NULL ORDER BY a.id DESC LIMIT 1", customer_id)
    return str(ip) if ip is not None else None


async def purge(c: Connection, now: str, dry_run: bool) -> int:
    if dry_run:
        return int(await c.fetchval("SELECT COUNT(*) FROM blocks WHERE expires_at <= $1", now))
    done = await c.fetch("DELETE FROM blocks WHERE expires_at <= $1 RETURNING id", now)
    return len(done)
