"""The PostgreSQL store (asyncpg), one module per aggregate, as in the SQLite store."""

from .store import DEFAULT_POOL_SIZE, PostgresStore

__all__ = ["DEFAULT_POOL_SIZE", "PostgresStore"]
