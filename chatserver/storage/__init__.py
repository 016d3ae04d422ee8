"""Storage behind one interface; `open_store(url)` picks the implementation by URL scheme."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from .base import Clock, Store, utc_now


async def open_store(url: str, clock: Clock = utc_now) -> Store:
    """Open (and migrate) the store named by `url`: sqlite:///path or postgresql://..."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        path = url[len("sqlite://"):]
        if path.startswith("/") and path[1:2] == "/":  # sqlite:////abs/path
            path = path[1:]
        return await SQLiteStore(Path(path), clock).open()
    if scheme in {"postgres", "postgresql"}:
        raise ValueError("The PostgreSQL store is not available in this version yet.")
    raise ValueError(f"Unsupported database URL scheme {scheme!r}")


__all__ = ["Store", "open_store", "Clock", "utc_now"]
