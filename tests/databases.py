"""Databases for tests: SQLite files in temp folders, and fresh PostgreSQL databases.

PostgreSQL is found at CHATSERVER_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/
postgres). Each test run creates its databases (`chatserver_test_<random>`) and drops them at the
end. Without a server there, PostgreSQL tests are skipped with the reason, unless the environment
variable CI is set: then they fail, so CI never passes by skipping them.

CHATSERVER_TEST_DATABASE=postgresql://... runs every server the tests start (tests/support.py
`Server`) on a fresh PostgreSQL database of its own instead of SQLite.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

T = TypeVar("T")
ADMIN_URL = os.environ.get("CHATSERVER_TEST_POSTGRES",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
SERVER_DATABASE = os.environ.get("CHATSERVER_TEST_DATABASE", "")
_created: list[str] = []
_lock = threading.Lock()
_unavailable: list[str] = []  # the reason, once found


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _admin(statement: str, url: str = ADMIN_URL) -> Any:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetch(statement)
    finally:
        await conn.close()


def postgres_problem(admin_url: str = ADMIN_URL) -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    if _unavailable:
        return _unavailable[0]
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _unavailable.append("asyncpg is not installed (pip install '.[test]')")
        return _unavailable[0]
    try:
        run(lambda: _admin("SELECT 1", admin_url))
    except Exception as exc:  # noqa: BLE001 - any failure means: no PostgreSQL here
        _unavailable.append(f"no PostgreSQL at {admin_url}: {type(exc).__name__}: {exc}")
        return _unavailable[0]
    return None


def require_postgres(admin_url: str = ADMIN_URL) -> None:
    """Skip the test without PostgreSQL, or fail it when the environment variable CI is set."""
    problem = postgres_problem(admin_url)
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the PostgreSQL tests, but: {problem}")
    pytest.skip(problem)


def create_database(admin_url: str = ADMIN_URL) -> str:
    """A fresh, empty database; its URL. Dropped by drop_all()."""
    name = "chatserver_test_" + secrets.token_hex(6)
    run(lambda: _admin(f'CREATE DATABASE "{name}"', admin_url))
    url = with_database(admin_url, name)
    with _lock:
        _created.append(url)
    return url


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    run(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                       with_database(url, "postgres")))


_server_databases: dict[str, str] = {}


def server_database(data_dir: object) -> str:
    """The PostgreSQL database of the server whose data folder is `data_dir`: made fresh on
    first use (under CHATSERVER_TEST_DATABASE's server), the same one for its restarts."""
    key = str(data_dir)
    with _lock:
        found = _server_databases.get(key)
    if found:
        return found
    url = _clone(_migrated_template())
    with _lock:
        _server_databases[key] = url
    return url


_template: list[str] = []
_template_lock = threading.Lock()  # held while the template is made, which takes _lock itself


def _migrated_template() -> str:
    """A database with the schema and nothing else, made once per run: each server's database
    is a copy of it, which skips a second of migrations per server start. The migrations
    themselves run on fresh databases in the store tests and the multi-process tests."""
    with _template_lock:
        if _template:
            return _template[0]
        url = create_database(SERVER_DATABASE)

        async def migrate() -> None:
            from chatserver.storage import open_store

            store = await open_store(url)
            await store.close()

        run(migrate)
        _template.append(url)
        return url


def _clone(template: str) -> str:
    name = "chatserver_test_" + secrets.token_hex(6)
    source = urlsplit(template).path.lstrip("/")
    run(lambda: _admin(f'CREATE DATABASE "{name}" TEMPLATE "{source}"', SERVER_DATABASE))
    url = with_database(SERVER_DATABASE, name)
    with _lock:
        _created.append(url)
    return url


def database_env(data_dir: object) -> dict[str, str]:
    """The environment that puts a server or CLI run on the test run's database for the data
    folder `data_dir`: empty (SQLite in the folder) unless CHATSERVER_TEST_DATABASE is set."""
    if not SERVER_DATABASE:
        return {}
    return {"CHATSERVER_DATABASE_URL": server_database(data_dir)}


def copy_server_database(source_dir: object, target_dir: object) -> None:
    """Give the data folder `target_dir` a copy of `source_dir`'s PostgreSQL database (the
    folder itself is copied by the caller); nothing to do on SQLite, whose file is in it. No
    one may be connected to the source while it is copied."""
    if not SERVER_DATABASE:
        return
    url = _clone(server_database(source_dir))
    with _lock:
        _server_databases[str(target_dir)] = url


def drop_all() -> None:
    with _lock:
        urls, _created[:] = list(_created), []
    for url in urls:
        drop_database(url)


def empty_database(url: str) -> None:
    """Delete every row (the schema stays migrated) and restart the id counters, so each test
    starts from nothing. DELETE of a few rows is much faster than TRUNCATE of many tables."""

    async def job() -> None:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=5)
        try:
            tables = [r[0] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'schema_migrations'")]
            counters = await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND is_identity = 'YES'")
            async with conn.transaction():
                # Foreign keys are triggers: off for this transaction, so the order is free.
                await conn.execute("SET LOCAL session_replication_role = replica")
                for table in tables:
                    await conn.execute(f'DELETE FROM "{table}"')
                for table, column in counters:
                    await conn.execute(
                        "SELECT setval(pg_get_serial_sequence($1, $2), 1, false)",
                        f'"{table}"', column)
        finally:
            await conn.close()

    run(job)


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the database at `url` (SQLite or PostgreSQL) outside the store, as
    an operator's shell or an attacker with file access would; `?` marks parameters. The rows."""
    if url.startswith("sqlite:"):
        import sqlite3
        from contextlib import closing

        from chatserver.storage import sqlite_path

        with closing(sqlite3.connect(sqlite_path(url))) as db:
            rows = db.execute(sql, args).fetchall()
            db.commit()
            return rows
    numbered, n = "", 0
    for ch in sql:
        if ch == "?":
            n += 1
            numbered += f"${n}"
        else:
            numbered += ch

    async def job() -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=5)
        try:
            return [tuple(r) for r in await conn.fetch(numbered, *args)]
        finally:
            await conn.close()

    return run(job)


def tables_holding(url: str, markers: list[str]) -> list[tuple[str, str, str]]:
    """(table, column, marker) for every value, in every table and column, that contains a
    marker (any case): what any SELECT could still find."""
    if url.startswith("sqlite:"):
        import sqlite3
        from contextlib import closing

        from chatserver.storage import sqlite_path

        with closing(sqlite3.connect(sqlite_path(url))) as db:
            tables = [r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'messages_fts_%' AND name NOT LIKE 'sqlite_%'")]
            found = []
            for table in tables:
                for column in [r[1] for r in db.execute(f'PRAGMA table_info("{table}")')]:
                    for marker in markers:
                        (hits,) = db.execute(
                            f'SELECT COUNT(*) FROM "{table}" WHERE lower(CAST("{column}" AS TEXT))'
                            " LIKE ?", (f"%{marker.lower()}%",)).fetchone()
                        if hits:
                            found.append((table, column, marker))
            return found

    async def job() -> list[tuple[str, str, str]]:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=5)
        try:
            columns = await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public'")
            found = []
            for table, column in columns:
                for marker in markers:
                    if await conn.fetchval(
                            f'SELECT COUNT(*) FROM "{table}" WHERE lower("{column}"::text) '
                            "LIKE $1", f"%{marker.lower()}%"):
                        found.append((table, column, marker))
            return found
        finally:
            await conn.close()

    return run(job)
