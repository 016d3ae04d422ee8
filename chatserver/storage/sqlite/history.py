"""A customer's conversations as the history the agent handling one of them sees: times,
status, agent display name, message count and rating; no message text."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..rows import HISTORY, HISTORY_KEYS


def of_customer(c: sqlite3.Connection, customer_id: str) -> list[dict[str, Any]]:
    return [dict(zip(HISTORY_KEYS, row, strict=True)) for row in c.execute(
        HISTORY + " WHERE c.customer_id = ? ORDER BY c.created_at DESC, c.id", (customer_id,))]
