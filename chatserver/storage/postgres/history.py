"""A customer's conversations as the history an agent sees, on PostgreSQL (as
sqlite/history.py): no message text."""

from __future__ import annotations

from typing import Any

from ..rows import HISTORY_KEYS as KEYS
from .engine import Connection

HISTORY = """
    SELECT c.id, c.status, c.created_at, c.closed_at, s.display_name,
           (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id), r.score
    FROM conversations c
    LEFT JOIN staff s ON s.id = c.agent_id
    LEFT JOIN conversation_ratings r ON r.conversation_id = c.id
    WHERE c.customer_id = $1 ORDER BY c.created_at DESC, c.id
"""


async def customer_history(c: Connection, customer_id: str) -> list[dict[str, Any]]:
    return [dict(zip(KEYS, tuple(row), strict=True))
            for row in await c.fetch(HISTORY, customer_id)]
