"""SQLite: the rows admin reports are computed from (issue 12): one per conversation created
in a range, with its times, agent, message count, first agent reply and rating. No text."""

from __future__ import annotations

import sqlite3
from typing import Any

REPORT = """
    SELECT c.id, c.created_at, c.claimed_at, c.closed_at, c.status, c.agent_id, s.name,
           (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id
            AND m.sender != 'system'),
           (SELECT MIN(m.sent_at) FROM messages m WHERE m.conversation_id = c.id
            AND m.sender = 'agent'),
           r.score
    FROM conversations c
    LEFT JOIN staff s ON s.id = c.agent_id
    LEFT JOIN conversation_ratings r ON r.conversation_id = c.id
    WHERE c.created_at >= ? AND c.created_at < ?
    ORDER BY c.created_at
"""
KEYS = ("id", "created_at", "claimed_at", "closed_at", "status", "agent_id", "agent",
        "messages", "first_reply_at", "rating")


def report_rows(c: sqlite3.Connection, created_from: str, created_before: str
                ) -> list[dict[str, Any]]:
    return [dict(zip(KEYS, row, strict=True))
            for row in c.execute(REPORT, (created_from, created_before))]
