"""The embedded SQLite store, one module per aggregate, as in the PostgreSQL store."""

from .migrate import migrations
from .privacy import PURGE_BATCH
from .store import SQLiteStore

__all__ = ["PURGE_BATCH", "SQLiteStore", "migrations"]
