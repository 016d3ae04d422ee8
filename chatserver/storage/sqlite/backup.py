"""A consistent online copy of the SQLite database, taken while the server runs.

The copy is one snapshot (SQLite's backup API in a single step, from a connection that only reads), so
it is consistent and includes what is still in the WAL. Holding that snapshot for the length of
the copy does not hold chat writes up: the server never waits on readers to checkpoint (see
upkeep.py); the WAL only grows until the copy is done. A copy in several steps would not be
consistent without restarting whenever the server writes in between, which on a busy server is
always.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


class BackupFailed(Exception):
    pass


def backup(source: Path, target: Path) -> tuple[int, int, str] | None:
    """Copy `source` to `target` (replaced atomically). Returns the id and hash of the copy's
    newest audit entry with its size in bytes, as (id, size, hash), or None for an empty log."""
    if not source.exists():
        raise BackupFailed(f"there is no database at {source}")
    partial = target.with_name(target.name + ".part")
    partial.unlink(missing_ok=True)
    # Not mode=ro: a read-only connection that happens to be the last one to close could not
    # fold the WAL back and remove it. query_only keeps it from writing anything else.
    src = sqlite3.connect(f"file:{source}?mode=rw", uri=True)
    src.execute("PRAGMA query_only=ON")
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # pages=-1: the whole database from one snapshot
            (verdict,) = dst.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise BackupFailed(f"the copy fails its integrity check: {verdict}")
            dst.execute("PRAGMA journal_mode=DELETE")  # a copy is one self-contained file
            head = dst.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1"
                               ).fetchone()
        finally:
            dst.close()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    os.replace(partial, target)
    size = target.stat().st_size
    return (int(head[0]), size, str(head[1])) if head else None
