"""The embedded SQLite store, one module per aggregate, as in the PostgreSQL store."""

from .migrate import migrations
from .store import PURGE_BATCH, SQLiteStore

__all__ = ["PURGE_BATCH", "SQLiteStore", "migrations"]
