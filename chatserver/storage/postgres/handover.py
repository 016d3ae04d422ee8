"""Handing conversations over, agents' away state and paused chats: the PostgreSQL twins of
`storage/handover_sql.py`.

A move is one conditional UPDATE, like a claim: a rival move blocks on the row lock, then finds
the row changed and changes nothing.
"""

from __future__ import annotations

from .engine import Connection
from .visitors import rowcount

_PAUSED = """
    SELECT c.id FROM conversations c
    WHERE c.status <> 'closed' AND NOT EXISTS (
        SELECT 1 FROM consents WHERE customer_id = c.customer_id AND withdrawn_at IS NULL)
"""


async def move(c: Connection, conversation_id: str, *, expect_agent_id: int | None,
               to_agent_id: int | None, now: str) -> bool:
    if to_agent_id is None:
        status = await c.execute(
            "UPDATE conversations SET status = 'queued', agent_id = NULL, claimed_at = NULL "
            "WHERE id = $1 AND status <> 'closed' AND agent_id IS NOT DISTINCT FROM $2",
            conversation_id, expect_agent_id)
    else:
        status = await c.execute(
            "UPDATE conversations SET status = 'active', agent_id = $1, claimed_at = $2 "
            "WHERE id = $3 AND status <> 'closed' AND agent_id IS NOT DISTINCT FROM $4",
            to_agent_id, now, conversation_id, expect_agent_id)
    return rowcount(status) == 1


async def set_away(c: Connection, staff_id: int, away: bool) -> bool:
    status = await c.execute("UPDATE staff SET away = $1 WHERE id = $2", away, staff_id)
    return rowcount(status) == 1


async def away_staff(c: Connection) -> set[int]:
    return {r[0] for r in await c.fetch("SELECT id FROM staff WHERE away")}


async def paused_conversations(c: Connection) -> set[str]:
    return {r[0] for r in await c.fetch(_PAUSED)}


async def conversation_paused(c: Connection, conversation_id: str) -> bool:
    return await c.fetchval(_PAUSED + " AND c.id = $1", conversation_id) is not None
