"""Storage behind one interface; `open_store(url)` picks the implementation by URL scheme."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import urlparse, urlsplit

from ..errors import DatabaseError
from .base import Clock, Store, utc_now

POSTGRES_SCHEMES = {"postgres", "postgresql"}


def describe(url: str) -> str:
    """The URL without its password, for messages: postgresql://user@host:port/db."""
    if url.startswith("sqlite:"):
        return url
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


def sqlite_path(url: str) -> Path:
    """The file of a sqlite:///path URL (sqlite:////abs/path works too)."""
    path = url[len("sqlite://"):]
    if path.startswith("/") and path[1:2] == "/":
        path = path[1:]
    return Path(path)


def _check_sqlite_schema(path: Path, newest: int) -> None:
    """Refuse a database file migrated by a newer version of the code."""
    if not path.exists():
        return
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        found = conn.execute(
            "SELECT name FROM sqlite_master WHERE name = 'schema_migrations'").fetchone()
        if not found:
            return
        (version,) = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    if version is not None and version > newest:
        raise DatabaseError(
            f"{path} is at schema version {version}, newer than this version of chatserver "
            f"knows ({newest}); run the newer chatserver, or restore a backup taken before it "
            "migrated"
        )


async def open_store(url: str, clock: Clock = utc_now, *, pool_size: int = 10) -> Store:
    """Open (and migrate) the store named by `url`: sqlite:///path or postgresql://...

    Raises DatabaseError, with a one-line reason, when the database cannot be used."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        from .sqlite import SQLiteStore, migrations

        path = sqlite_path(url)
        try:
            _check_sqlite_schema(path, migrations()[-1][0])
            return await SQLiteStore(path, clock).open()
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseError(f"cannot open {path}: {exc}") from exc
    if scheme in POSTGRES_SCHEMES:
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise DatabaseError(
                "PostgreSQL needs the asyncpg driver: pip install 'chatserver[postgres]'"
            ) from exc
        return await PostgresStore(url, clock, pool_size=pool_size).open()
    raise DatabaseError(
        f"unsupported scheme {scheme + '://' if scheme else url!r}: use sqlite:///path/chat.db "
        "or postgresql://user@host:5432/database"
    )


__all__ = ["Store", "open_store", "Clock", "utc_now", "describe", "sqlite_path"]
