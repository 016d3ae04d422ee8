"""The rows admin reports are computed from (chatserver/reports.py): one per conversation
created in a range, with its times, agent, message count, first agent reply and rating."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..rows import REPORT, REPORT_KEYS


def rows(c: sqlite3.Connection, created_from: str, created_before: str) -> list[dict[str, Any]]:
    return [dict(zip(REPORT_KEYS, row, strict=True)) for row in c.execute(
        REPORT + " WHERE c.created_at >= ? AND c.created_at < ? ORDER BY c.created_at",
        (created_from, created_before))]
