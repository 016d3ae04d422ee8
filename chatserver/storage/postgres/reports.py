"""The rows admin reports are computed from, on PostgreSQL (as sqlite/reports.py)."""

from __future__ import annotations

from typing import Any

from ..rows import REPORT_KEYS as KEYS
from .engine import Connection

REPORT = """
    SELECT c.id, c.created_at, c.claimed_at, c.closed_at, c.status, c.agent_id, s.name,
           (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id
            AND m.sender <> 'system'),
           (SELECT MIN(m.sent_at) FROM messages m WHERE m.conversation_id = c.id
            AND m.sender = 'agent'),
           r.score
    FROM conversations c
    LEFT JOIN staff s ON s.id = c.agent_id
    LEFT JOIN conversation_ratings r ON r.conversation_id = c.id
    WHERE c.created_at >= $1 AND c.created_at < $2
    ORDER BY c.created_at
"""


async def report_rows(c: Connection, created_from: str, created_before: str
                      ) -> list[dict[str, Any]]:
    return [dict(zip(KEYS, tuple(row), strict=True))
            for row in await c.fetch(REPORT, created_from, created_before)]
