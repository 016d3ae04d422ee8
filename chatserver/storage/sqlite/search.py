"""The admin's conversation search, on SQLite's FTS5 index of message bodies.

Plain words must all appear, each as a word or the start of one ("print" finds "printer"); text
in double quotes is a phrase. Customer name, email, company (substring) and the exact
conversation id match too.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from ..base import ConversationSearch, ConversationSummary
from ..rows import SUMMARY, like, to_summary


def fts_query(text: str) -> str | None:
    """User words to an FTS5 query: "a quoted phrase" as a phrase, else every word (AND).

    Each word is quoted, so FTS5 operators typed by a user are taken as plain words."""
    stripped = text.strip()
    if len(stripped) > 2 and stripped[0] == stripped[-1] == '"':
        words = re.findall(r"\w+", stripped[1:-1])
        return '"' + " ".join(words) + '"' if words else None
    words = re.findall(r"\w+", stripped)
    return " ".join(f'"{w}"*' for w in words) if words else None  # prefixes: "print" finds "printer"


def search_conversations(
    c: sqlite3.Connection, search: ConversationSearch, *, limit: int, offset: int
) -> tuple[list[ConversationSummary], int]:
    where: list[str] = []
    args: list[Any] = []
    if search.status:
        where.append("c.status = ?")
        args.append(search.status)
    if search.email:
        where.append("lower(cu.email) = lower(?)")
        args.append(search.email)
    if search.agent_id is not None:
        where.append("c.agent_id = ?")
        args.append(search.agent_id)
    if search.created_from:
        where.append("c.created_at >= ?")
        args.append(search.created_from)
    if search.created_before:
        where.append("c.created_at < ?")
        args.append(search.created_before)
    if search.query:
        pattern = like(search.query)
        match = fts_query(search.query)
        words = (
            " OR c.id IN (SELECT m.conversation_id FROM messages_fts "
            "JOIN messages m ON m.id = messages_fts.rowid WHERE messages_fts MATCH ?)"
            if match else ""
        )
        where.append(
            "(cu.name LIKE ? ESCAPE '\\' OR cu.email LIKE ? ESCAPE '\\' OR "
            f"cu.company LIKE ? ESCAPE '\\' OR c.id = ?{words})"
        )
        args += [pattern, pattern, pattern, search.query, *([match] if match else [])]
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    rows = c.execute(
        SUMMARY + clause + " ORDER BY c.created_at DESC LIMIT ? OFFSET ?",
        (*args, limit, offset),
    ).fetchall()
    (total,) = c.execute(
        "SELECT COUNT(*) FROM conversations c JOIN customers cu ON cu.id = c.customer_id"
        + clause,
        args,
    ).fetchone()
    return [to_summary(r) for r in rows], total
