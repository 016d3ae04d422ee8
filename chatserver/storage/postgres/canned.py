"""Canned responses on PostgreSQL (migration 005), as on SQLite (sqlite/canned.py)."""

from __future__ import annotations

import asyncpg

from ...errors import Conflict, NotFound
from ..base import CannedResponse
from .engine import Connection

_SELECT = "SELECT id, shortcut, body, created_at, updated_at FROM canned_responses"
TAKEN = "Another canned response has that shortcut."


async def list_all(c: Connection) -> list[CannedResponse]:
    return [CannedResponse(*r) for r in await c.fetch(_SELECT + " ORDER BY shortcut")]


async def _get(c: Connection, canned_id: int) -> CannedResponse:
    row = await c.fetchrow(_SELECT + " WHERE id = $1", canned_id)
    if row is None:
        raise NotFound("No such canned response.")
    return CannedResponse(*row)


async def add(c: Connection, shortcut: str, body: str, now: str) -> CannedResponse:
    new_id = await c.fetchval(
        "INSERT INTO canned_responses (shortcut, body, created_at, updated_at) "
        "VALUES ($1, $2, $3, $3) ON CONFLICT (shortcut) DO NOTHING RETURNING id",
        shortcut, body, now)
    if new_id is None:
        raise Conflict(TAKEN, code="shortcut_taken")
    return await _get(c, new_id)


async def update(c: Connection, canned_id: int, shortcut: str | None, body: str | None,
                 now: str) -> CannedResponse:
    before = await _get(c, canned_id)
    try:
        async with c.transaction():  # a savepoint: the clash must not end the outer one
            await c.execute(
                "UPDATE canned_responses SET shortcut = $1, body = $2, updated_at = $3 "
                "WHERE id = $4", shortcut or before.shortcut, body or before.body, now,
                canned_id)
    except asyncpg.UniqueViolationError:
        raise Conflict(TAKEN, code="shortcut_taken") from None
    return await _get(c, canned_id)


async def delete(c: Connection, canned_id: int) -> None:
    if await c.fetchval("DELETE FROM canned_responses WHERE id = $1 RETURNING id",
                        canned_id) is None:
        raise NotFound("No such canned response.")
