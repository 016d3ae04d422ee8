"""Upkeep of the SQLite files: checkpoints, and scrubbing after deletions, never stalling writes.

Erased text must leave every file of the data folder. Two things keep copies after the DELETE has
committed: the FTS5 index (a deletion is only a marker in a new segment until the old segments
are merged) and the WAL (the frames that once held the rows stay until the log is truncated).

Both used to be done in one go on the writer: an index `optimize` inside the erasure's
transaction (its cost grows with the whole index) and a `wal_checkpoint(TRUNCATE)` that waited,
holding the writer lock, for every reader to let go of its snapshot. An online backup holds one for
as long as it copies, so every chat write waited that long. Now:

- the writer does not checkpoint in its commits (`wal_autocheckpoint=0`): a checkpointer thread
  with a connection of its own copies the WAL back into the database (`PASSIVE`: it takes no lock
  a writer needs) at most once every CHECKPOINT_SECONDS while there are writes, and the writer
  copies only what was committed while it ran, between two batches, so that the WAL starts over
  (before_batch); a reader holding an old snapshot only makes the WAL grow for a while;
- the index is merged in small steps (`merge`, a few hundred pages each), each a write job of its
  own, so chat writes slip in between;
- truncating the WAL first lets the checkpointer catch up, then tries a `TRUNCATE` on the
  writer's thread between batches with the busy timeout at zero (so only the few frames written
  meanwhile are copied while writers wait); when a reader still holds an old snapshot it is tried
  again a little later, from a background task, until the WAL is empty.

A crash before the index is scrubbed leaves a note in the table `upkeep`; the next open finishes
the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("chatserver.storage")

MERGE_PAGES = 200  # pages written per index merge step: tens of milliseconds at most
CHECKPOINT_SECONDS = 1.0  # at most one passive checkpoint this often, after writes
WAIT_SECONDS = 1.0  # how long truncate_wal() waits for readers before leaving it to a task
RETRY_SECONDS = (0.02, 0.05, 0.1, 0.25, 0.5, 1.0)  # pauses between attempts, the last repeating
SCRUB_TASK = "search_index_scrub"
BUSY_TIMEOUT_MS = 10_000

Write = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
OnWriter = Callable[[Callable[[], Any]], Awaitable[Any]]


def note_scrub_needed(c: sqlite3.Connection, now: str) -> None:
    """Inside a deleting transaction: the index must be scrubbed, even after a crash."""
    c.execute("INSERT OR IGNORE INTO upkeep (task, since) VALUES (?, ?)", (SCRUB_TASK, now))


def _merge_step(first: bool) -> Callable[[sqlite3.Connection], bool]:
    """One bounded step of a full merge of the index; False once there was nothing left to do.

    A negative page count first puts every segment on one level, so the steps that follow merge
    all of them (as `optimize` would), which drops the deleted entries for good."""

    def job(c: sqlite3.Connection) -> bool:
        before = c.total_changes
        pages = -MERGE_PAGES if first else MERGE_PAGES
        c.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('merge', ?)", (pages,))
        worked = c.total_changes - before >= 2  # FTS5's documented sign that it merged something
        if not worked and not first:
            c.execute("DELETE FROM upkeep WHERE task = ?", (SCRUB_TASK,))
        return worked or first

    return job


def _truncate_now(conn: sqlite3.Connection) -> bool:
    """One attempt that waits on no lock; True when the WAL is now empty."""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError:  # another process's writer holds the lock: try later
        busy = 1
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return not busy


def _pauses() -> Iterator[float]:
    yield from RETRY_SECONDS
    while True:
        yield RETRY_SECONDS[-1]


class Upkeep:
    def __init__(self, path: Path, write: Write, on_writer: OnWriter,
                 writer: Callable[[], sqlite3.Connection | None]) -> None:
        self._path = path
        self._last_checkpoint = 0.0
        self._write = write
        self._on_writer = on_writer
        self._writer = writer
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
        self._conn: sqlite3.Connection | None = None
        self._caught_up = False  # the last passive checkpoint copied every frame it saw
        self._checkpointing: asyncio.Future[None] | None = None
        self._scrub_lock = asyncio.Lock()
        self._scrub_wanted = 0
        self._scrub_done = 0
        self._truncation: asyncio.Task[None] | None = None
        self._closed = False

    # -- passive checkpoints, off the writer's thread -------------------------------------------

    def _passive(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA busy_timeout=0")
        with contextlib.suppress(sqlite3.OperationalError):  # busy: the next round copies it
            busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            # Copied all it saw: the writer copies what was committed meanwhile before its next
            # batch, so that batch starts the WAL over (before_batch).
            self._caught_up = not busy and 0 < frames == copied

    def before_batch(self, conn: sqlite3.Connection) -> None:
        """On the writer, before each batch: after a passive checkpoint that copied all it saw,
        copy what was committed while it ran.

        SQLite starts the WAL over only when a write begins with every frame copied back, and
        under steady writes the checkpointer never gets there: frames are committed while it
        copies. The WAL then grew by every commit (about 45 MB a second at 2,000 msgs/s), and
        each commit that grew it made its flush write the file's metadata too. Copying the
        frames committed during the last checkpoint (a few milliseconds' worth) here, where no
        commit can add more, lets the next batch start over.
        """
        if not self._caught_up:
            return
        self._caught_up = False
        with contextlib.suppress(sqlite3.OperationalError):  # busy: the next round
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def checkpoint(self) -> asyncio.Future[None]:
        """Start a passive checkpoint unless one is running; the future of the running one."""
        loop = asyncio.get_running_loop()
        if self._closed:  # the writer's own close folds the WAL back
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        if self._checkpointing is None or self._checkpointing.done():
            self._checkpointing = loop.run_in_executor(self._pool, self._passive)
        return self._checkpointing

    def after_batch(self) -> None:
        """Called after each committed batch: copy the WAL back now and then."""
        now = time.monotonic()
        if now - self._last_checkpoint >= CHECKPOINT_SECONDS:
            self._last_checkpoint = now
            self.checkpoint()

    # -- scrubbing the search index ----------------------------------------------------------

    async def scrub_search_index(self) -> None:
        """Merge the whole index in small steps; returns once every deletion committed before the
        call is gone from it. Concurrent callers share one pass."""
        self._scrub_wanted += 1
        wanted = self._scrub_wanted
        async with self._scrub_lock:
            if self._scrub_done >= wanted:
                return
            target = self._scrub_wanted
            first = True
            while await self._write(_merge_step(first)):
                first = False
            self._scrub_done = target

    async def scrub_if_needed(self) -> None:
        pending = await self._write(lambda c: c.execute(
            "SELECT 1 FROM upkeep WHERE task = ?", (SCRUB_TASK,)).fetchone())
        if pending:
            await self.scrub_search_index()

    # -- truncating the WAL ------------------------------------------------------------------

    async def _attempt(self) -> bool:
        await self._write(lambda c: None)  # whatever was queued is committed first
        await self.checkpoint()  # the bulk is copied without holding writers up

        def attempt() -> bool:
            conn = self._writer()
            return conn is None or _truncate_now(conn)

        done: bool = await self._on_writer(attempt)
        return done

    async def truncate_wal(self) -> None:
        """Empty the WAL. Waits up to WAIT_SECONDS while readers hold old snapshots; after that a
        background task keeps trying until it succeeds, and this returns."""
        if self._truncation is not None and not self._truncation.done():
            return  # the task already running truncates after this deletion too
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        for pause in _pauses():
            if await self._attempt():
                return
            if loop.time() + pause > deadline:
                break
            await asyncio.sleep(pause)
        log.info("WAL truncation waits for a reader holding an old snapshot (a backup?)")
        self._truncation = loop.create_task(self._keep_trying())

    async def _keep_trying(self) -> None:
        for pause in _pauses():
            await asyncio.sleep(pause)
            if await self._attempt():
                log.info("WAL truncated after readers let go")
                return

    async def close(self, grace: float = 5.0) -> None:
        """Before the writer closes: give a pending truncation a little longer, then stop."""
        task, self._truncation = self._truncation, None
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), grace)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                log.warning("WAL not truncated before closing: a reader still holds an old "
                            "snapshot; the next erasure, purge or start truncates it")
        self._closed = True
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing
        loop = asyncio.get_running_loop()
        if self._conn is not None:
            await loop.run_in_executor(self._pool, self._conn.close)
            self._conn = None
        self._pool.shutdown(wait=True)

