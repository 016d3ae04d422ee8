"""Numbered SQL migrations (migrations/NNN_name.sql), each applied once, in one transaction.

Several processes starting at once (`serve --workers N`, a CLI command beside a server) take a
session-level advisory lock first, so exactly one applies a migration and the others find it done.
A database migrated by a newer version of the code is refused rather than used half-understood.
"""

from __future__ import annotations

from ...errors import DatabaseError
from ..rows import read_migrations
from .engine import Connection

# An arbitrary constant that names "chatserver schema migrations" among advisory locks.
MIGRATION_LOCK = 0x63686174_6D6967  # "chat" "mig"


def migrations() -> list[tuple[int, str]]:
    return read_migrations("chatserver.storage.postgres")


async def migrate(conn: Connection, now: str) -> list[int]:
    """Apply what is missing; the versions applied now."""
    known = migrations()
    newest = known[-1][0]
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        # Created only when missing: a user with rights on the rows but not on the schema
        # (the tables made by another, owning role) can then run an up-to-date database.
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                "applied_at text NOT NULL)"
            )
        done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        if done and max(done) > newest:
            raise DatabaseError(
                f"the database is at schema version {max(done)}, newer than this version of "
                f"chatserver knows ({newest}); run the newer chatserver, or restore a backup "
                "taken before it migrated"
            )
        for version, sql in known:
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations VALUES ($1, $2)", version, now)
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now
