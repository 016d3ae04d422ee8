"""The SQLite schema: the numbered migrations in chatserver/storage/migrations, applied in order,
each in a transaction of its own, on the writer's connection when the store opens."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ..rows import read_migrations


def statements(script: str) -> list[str]:
    """Split a migration into statements; triggers hold semicolons of their own."""
    found, buffer = [], ""
    for line in script.splitlines(keepends=True):
        if not buffer and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            found.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise ValueError("a migration ends in the middle of a statement")
    return found


def migrations() -> list[tuple[int, str]]:
    return read_migrations("chatserver.storage")


def migrate(conn: sqlite3.Connection, now: Callable[[], str]) -> None:
    """Apply the migrations `conn`'s database has not had yet."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    for version, sql in migrations():
        if version in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, now()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
