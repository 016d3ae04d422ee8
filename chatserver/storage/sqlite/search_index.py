"""The full-text index, kept up in the background in batches instead of by a trigger per message.

Appends only store their rows; the indexer adds every message above the mark
`search_index_state.indexed_up_to` to FTS5 in one statement per batch and moves the mark, as a
write job of its own on the writer, about INDEX_DELAY_SECONDS after the first append it was not
yet told of. So the index lags the messages by about a second, and a message costs the chat's
commit nothing for it.

Search does not lag: before a query that matches words, search checks on a reader whether any
message is above the mark, and if so flushes the index first (a write job) - an admin's search
is rare and must find a message that was just acknowledged. Deletions stay exact: the delete
trigger (migration 015) takes out of the index only the messages that were in it, and the
indexer and every deletion run on the one writer, so no message is indexed after it was deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("chatserver.storage")

INDEX_DELAY_SECONDS = 0.5  # batch this long's messages into one index write
INDEX_ROWS = 5000  # messages indexed per write job, so chat writes slip in between
CLOSE_JOBS = 2  # write jobs of indexing at most when the store closes

Write = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]


def next_message_id(c: sqlite3.Connection) -> int:
    """An id above every stored message and above the indexer's mark (never a reused one)."""
    (top,) = c.execute(
        "SELECT max(coalesce((SELECT max(id) FROM messages), 0), indexed_up_to) "
        "FROM search_index_state").fetchone()
    return int(top) + 1


def index_some(c: sqlite3.Connection) -> int:
    """Index up to INDEX_ROWS messages above the mark and move it; how many were indexed."""
    (mark,) = c.execute("SELECT indexed_up_to FROM search_index_state").fetchone()
    count, top = c.execute(
        "SELECT count(*), max(id) FROM "
        "(SELECT id FROM messages WHERE id > ? ORDER BY id LIMIT ?)",
        (mark, INDEX_ROWS)).fetchone()
    if not count:
        return 0
    c.execute("INSERT INTO messages_fts (rowid, body) "
              "SELECT id, body FROM messages WHERE id > ? AND id <= ?", (mark, top))
    c.execute("UPDATE search_index_state SET indexed_up_to = ?", (top,))
    return int(count)


def behind(c: sqlite3.Connection) -> bool:
    """True when some stored message is not in the index yet (a reader's check)."""
    row = c.execute(
        "SELECT (SELECT max(id) FROM messages) > indexed_up_to FROM search_index_state"
    ).fetchone()
    return bool(row and row[0])


class Indexer:
    """Schedules index_some on the writer a little after appends; flush() catches up now."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def appended(self) -> None:
        """Messages were stored: index them within about INDEX_DELAY_SECONDS."""
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(INDEX_DELAY_SECONDS)
        try:
            await self.flush()
        except Exception:  # the next append schedules another try; search flushes for itself
            log.exception("search index update failed")

    async def flush(self, most: int | None = None) -> int:
        """Index every message stored so far, or at most `most` write jobs' worth; how many
        were added."""
        total, jobs = 0, 0
        while most is None or jobs < most:
            done: int = await self._write(index_some)
            total, jobs = total + done, jobs + 1
            if done < INDEX_ROWS:
                break
        return total

    async def close(self) -> None:
        """Stop scheduling and index what is pending, up to CLOSE_JOBS write jobs: a clean
        shutdown after ordinary traffic leaves the index whole (it lags by about a second's
        messages). A longer backlog (the index of messages stored by another means, say) is
        left to the next open, which catches up in the background, and to search, which
        flushes first: closing the store, as `serve` does once before it starts, must not take
        as long as indexing a million messages (it took 7.7 s)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        try:
            await self.flush(CLOSE_JOBS)
        except Exception:  # the next open catches up
            log.exception("search index update at shutdown failed")
