"""Moving between databases: copy an SQLite database into an empty PostgreSQL one, and the
consistent online copy of an SQLite database (`chatserver backup`).

The copy keeps every id, seq and audit hash as it is, in one PostgreSQL transaction (a failure
leaves the target empty), then checks that every table holds as many rows as the source and
that the audit chain verifies and ends in the same hash.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Conflict

# Parents before children, so foreign keys hold at every row.
ORDER = ("policy_versions", "customers", "visitor_sessions", "consents", "staff",
         "staff_sessions", "login_events", "conversations", "messages", "access_events",
         "setup_tokens", "audit_log", "erasures", "mail_outbox", "mail_tokens",
         "conversation_reads", "job_runs", "notes", "conversation_ratings", "canned_responses",
         "blocks")
# SQLite-only machinery: the full-text index is rebuilt by PostgreSQL's own `search` column (with
# `search_index_state`, how far SQLite's background indexer got), and `upkeep` notes an index
# scrub that SQLite still owes (PostgreSQL's index is built anew).
SKIPPED_PREFIXES = ("sqlite_", "messages_fts", "search_index_state", "upkeep")
BATCH = 5000


@dataclass
class Summary:
    counts: dict[str, int] = field(default_factory=dict)
    audit_entries: int = 0
    audit_last_hash: str = ""


def _sqlite_tables(db: sqlite3.Connection) -> dict[str, list[str]]:
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    tables = {}
    for name in names:
        if name.startswith(SKIPPED_PREFIXES) or name == "schema_migrations":
            continue
        tables[name] = [r[1] for r in db.execute(f'PRAGMA table_info("{name}")')]
    return tables


async def _target_columns(conn: Any) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name <> 'schema_migrations'")
    found: dict[str, dict[str, str]] = {}
    for table, column, kind in rows:
        found.setdefault(table, {})[column] = kind
    return found


async def _refuse_unless_empty(conn: Any, tables: list[str]) -> None:
    filled = []
    for table in tables:
        count = await conn.fetchval(f'SELECT COUNT(*) FROM "{table}"')
        if count:
            filled.append(f"{table} ({count})")
    if filled:
        raise Conflict("The target database is not empty: " + ", ".join(filled)
                       + ". Copy into a new, empty database.", code="target_not_empty")


def _converter(kind: str) -> Any:
    if kind == "boolean":
        return lambda v: None if v is None else bool(v)
    return lambda v: v


async def copy_sqlite_to_postgres(source: Path, target_url: str) -> Summary:
    """Copy everything from the SQLite file `source` into the empty PostgreSQL database at
    `target_url` (migrated first); check counts and the audit chain."""
    import asyncpg

    from .postgres.folding import fold
    from .postgres.store import PostgresStore

    store = await PostgresStore(target_url, pool_size=2).open()  # creates the schema
    summary = Summary()
    try:
        with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as db:
            db.execute("BEGIN")  # one read snapshot of the whole source
            tables = _sqlite_tables(db)
            async with store.engine.pool.acquire() as conn:
                target = await _target_columns(conn)
                missing = [t for t in tables if t not in target]
                if missing:
                    raise Conflict("The PostgreSQL schema has no table for: " + ", ".join(missing)
                                   + "; use the same chatserver version for both.",
                                   code="schema_mismatch")
                lost = [f"{t}.{c}" for t, cols in tables.items() for c in cols
                        if c not in target[t]]
                if lost:
                    raise Conflict("The PostgreSQL schema has no column for: " + ", ".join(lost)
                                   + "; use the same chatserver version for both.",
                                   code="schema_mismatch")
                order = [t for t in ORDER if t in tables] + sorted(set(tables) - set(ORDER))
                await _refuse_unless_empty(conn, list(target))
                async with conn.transaction():
                    for table in order:
                        summary.counts[table] = db.execute(
                            f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
                        copied = await _copy_table(db, conn, table, tables[table], target[table],
                                                   fold)
                        if copied != summary.counts[table]:
                            raise Conflict(f"{table}: read {copied} rows of "
                                           f"{summary.counts[table]}.", code="copy_mismatch")
                    await _restart_counters(conn, order)
                last = db.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
            db.execute("ROLLBACK")
        await _check(store, summary, last[0] if last else "")
    except asyncpg.PostgresError as exc:
        raise Conflict(f"The copy failed and was rolled back: {exc}", code="copy_failed"
                       ) from exc
    finally:
        await store.close()
    return summary


async def _copy_table(db: sqlite3.Connection, conn: Any, table: str, columns: list[str],
                      kinds: dict[str, str], fold: Any) -> int:
    convert = [_converter(kinds[c]) for c in columns]
    names = ", ".join(f'"{c}"' for c in columns)
    is_messages = table == "messages" and "search" in kinds
    if is_messages:
        # The search column is PostgreSQL's own: computed from the folded body on the way in.
        await conn.execute(
            f'CREATE TEMP TABLE import_messages ON COMMIT DROP AS '
            f'SELECT {names}, \'\'::text AS folded FROM messages WITH NO DATA')
    copied = 0
    cursor = db.execute(f'SELECT {names} FROM "{table}"')
    while True:
        rows = cursor.fetchmany(BATCH)
        if not rows:
            break
        records = [tuple(f(v) for f, v in zip(convert, row, strict=True)) for row in rows]
        if is_messages:
            body = columns.index("body")
            records = [(*r, fold(r[body])) for r in records]
            await conn.copy_records_to_table("import_messages", records=records,
                                             columns=[*columns, "folded"])
        else:
            await conn.copy_records_to_table(table, records=records, columns=columns)
        copied += len(records)
    if is_messages:
        await conn.execute(
            f"INSERT INTO messages ({names}, search) "
            f"SELECT {names}, to_tsvector('simple', folded) FROM import_messages")
    return copied


async def _restart_counters(conn: Any, tables: list[str]) -> None:
    """Identity columns continue after the highest copied id."""
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES'")
    for table, column in rows:
        if table in tables:
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence($1, $2), "
                f'COALESCE((SELECT MAX("{column}") FROM "{table}"), 0) + 1, false)',
                f'"{table}"', column)


async def _check(store: Any, summary: Summary, source_last_hash: str) -> None:
    """Row counts equal, the audit chain intact and ending where the source's ends."""
    async with store.engine.pool.acquire() as conn:
        for table, expected in summary.counts.items():
            found = await conn.fetchval(f'SELECT COUNT(*) FROM "{table}"')
            if found != expected:
                raise Conflict(f"{table}: {found} rows arrived of {expected}.",
                               code="copy_mismatch")
    entries = await store.all_audit()
    # The hashes are keyed with the server's secret, which a copy need not know: the chain's
    # links are checked here (every hash is copied as it is; `audit verify` checks the keys).
    for prev, entry in zip(entries, entries[1:], strict=False):
        if entry["id"] != prev["id"] + 1 or entry["prev_hash"] != prev["hash"]:
            raise Conflict(f"The copied audit log breaks at entry {entry['id']}.",
                           code="copy_mismatch")
    summary.audit_entries = len(entries)
    summary.audit_last_hash = entries[-1]["hash"] if entries else ""
    if source_last_hash != summary.audit_last_hash:
        raise Conflict("The copied audit log does not end where the source's does.",
                       code="copy_mismatch")


def backup_sqlite(source: Path, target: Path) -> dict[str, int]:
    """A consistent copy of a live SQLite database (the online backup API: what is still in
    the WAL is included), checked with integrity_check. Refuses to overwrite."""
    if target.exists():
        raise Conflict(f"{target} exists already; name a new file.", code="exists")
    if not source.exists():
        raise Conflict(f"There is no database at {source}.", code="no_database")
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src, \
            closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
        (ok,) = dst.execute("PRAGMA integrity_check").fetchone()
        if ok != "ok":
            raise Conflict(f"The copy failed its integrity check: {ok}", code="backup_failed")
        tables = [r[0] for r in dst.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name NOT LIKE 'messages_fts%'")]
        return {t: dst.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
