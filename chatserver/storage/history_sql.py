"""SQLite: a customer's conversations as the history an agent sees (issue 12): times, status,
agent display name, message count and rating; no message text. Plain functions."""

from __future__ import annotations

import sqlite3
from typing import Any

HISTORY = """
    SELECT c.id, c.status, c.created_at, c.closed_at, s.display_name,
           (SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id), r.score
    FROM conversations c
    LEFT JOIN staff s ON s.id = c.agent_id
    LEFT JOIN conversation_ratings r ON r.conversation_id = c.id
    WHERE c.customer_id = ? ORDER BY c.created_at DESC, c.id
"""
KEYS = ("id", "status", "created_at", "closed_at", "agent", "message_count", "rating")


def customer_history(c: sqlite3.Connection, customer_id: str) -> list[dict[str, Any]]:
    return [dict(zip(KEYS, row, strict=True)) for row in c.execute(HISTORY, (customer_id,))]
