"""The SQLite engine: one writer thread with group commit, and a pool of reader connections.

One writer thread owns the only writing connection; writes queue up and run in batches inside one
`BEGIN IMMEDIATE` transaction, each job in its own savepoint (each run of consecutive message
appends as one set-based group, appends.py), then one commit with
`synchronous=FULL` (group commit: one fsync serves every message that arrived meanwhile, and no
caller hears "stored" before the commit returns). Reads run on a small pool of reader connections,
which WAL lets proceed beside the writer. `secure_delete` overwrites deleted content.

Several processes on one file (`serve --workers N`, a CLI command beside a server) take turns
through a lock file beside the database (`<name>-writer`), locked with `flock` around each
transaction: a writer that finds another one writing sleeps in the kernel and wakes the moment
the other commits. SQLite's own busy handler, left to itself, polls with sleeps of 1 to 100 ms,
and under two busy workers that starved one of them for seconds (bench/RESULTS.md, section 14).
SQLite's locking still guards the file; the lock file only decides who tries next.

We call the stdlib sqlite3 module from our own threads rather than through aiosqlite: a batch is
one thread hop for the whole transaction, where aiosqlite makes one hop per statement.

Message appends skip even that hop when they can. A run of appends at the head of the queue is
committed on the event loop's own thread, once per turn of the loop (every append queued during
the turn joins it), whenever the writer thread is idle and the lock file is free at once. Handing
a batch to the thread and back cost more than the batch itself: the wake-ups, and the two threads
taking the GIL from each other around every SQLite call, made the thread path about a fifth
slower per message flat out (bench/RESULTS.md, section 18). Anything else (jobs of any length,
opening and closing) and any append that would have to wait (the thread busy, another process
writing) goes through the thread as before, so the event loop never waits for a lock; it waits
only for its own commit's flush. One lock (`_owner`) keeps the two from using the connection at
once, and both take jobs from the head of the one queue, so the order of writes is kept.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .appends import Append, append_many
from .migrate import migrate
from .upkeep import BUSY_TIMEOUT_MS, Upkeep

T = TypeVar("T")
MAX_BATCH = 512


class Outside:
    """A job for the writer's thread outside any transaction (opening, closing, truncating)."""

    __slots__ = ("job",)

    def __init__(self, job: Callable[[], Any]) -> None:
        self.job = job


Job = Callable[[sqlite3.Connection], Any] | Append | Outside


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


class Engine:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader_pool = ThreadPoolExecutor(4, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._turns: int | None = None  # the lock file's descriptor, while open
        # Jobs go from the event loop to the writer thread through a deque (append and popleft
        # are atomic) and a wake-up event; results come back one call_soon_threadsafe per batch.
        self._pending: deque[tuple[Job, asyncio.Future[Any]]] = deque()
        self._wake = threading.Event()
        self._owner = threading.Lock()  # held by whichever thread is using the writing connection
        self._inline_due = False  # a run of appends is to be tried on the loop at its next turn
        self._appends_to_thread = False  # the loop found the lock file taken: the thread waits
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._unfinished = 0  # queued or running, results not yet handed back (loop side)
        self._idle = asyncio.Event()
        self._idle.set()
        # Asked for once: on Python 3.11 asyncio.get_running_loop() makes a getpid system call,
        # about 4% of the event loop's time at 2,000 msgs/s when asked for on every write.
        self._loop: asyncio.AbstractEventLoop | None = None
        self.upkeep = Upkeep(path, self.write, self.on_writer, lambda: self._writer)

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self, now: Callable[[], str]) -> None:
        """Open the writer (migrating the database), then finish a scrub a crash interrupted."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._turns = os.open(f"{self.path}-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._writer = await self.on_writer(lambda: self._open_writer(now))
        except BaseException:
            os.close(self._turns)
            self._turns = None
            raise
        await self.upkeep.scrub_if_needed()

    def _open_writer(self, now: Callable[[], str]) -> sqlite3.Connection:
        conn = connect(str(self.path))
        # Checkpoints run on a thread of their own (upkeep.py), never inside a commit here; the
        # writer only copies the frames committed during the last one, between two batches.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        migrate(conn, now)
        # A savepoint's undo pages (its statement journal) stay in memory. Otherwise past 64 KiB
        # (16 pages: a batch across a dozen conversations) SQLite creates, unlinks and closes a
        # file in the temp folder in every commit, ~4% of the server's CPU at 2,000 msgs/s. The
        # writer's savepoints are bounded (batches of appends, purges a batch of rows at a time).
        # Set after the migrations: with temp_store=MEMORY a sort never spills to disk, and an
        # index built over a large table would be sorted in memory. Readers keep the default.
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    async def close(self) -> None:
        await self.upkeep.close()
        await self._idle.wait()
        if self._writer is not None:
            await self.on_writer(self._writer.close)
            self._writer = None
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping = True
            self._wake.set()
            thread.join()
            self._stopping = False
        if self._turns is not None:
            os.close(self._turns)
            self._turns = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._reader_pool.shutdown(wait=True)

    # -- writes: queued, run in batches, one commit each ------------------------------------

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return await self._queue(job)  # type: ignore[no-any-return]

    async def append(self, append: Append) -> Any:
        """Store a message in the next batch, grouped with the appends beside it: committed on
        the event loop at its next turn when nothing else is writing, else by the writer."""
        return await self._queue(append, inline=True)

    async def on_writer(self, job: Callable[[], T]) -> T:
        """Run `job` on the writer's thread between batches (outside any transaction)."""
        return await self._queue(Outside(job))  # type: ignore[no-any-return]

    async def _queue(self, job: Job, inline: bool = False) -> Any:
        loop = self._loop
        if loop is None or self._thread is None:
            loop = self._start()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((job, future))
        if not self._unfinished:
            self._idle.clear()
        self._unfinished += 1
        if inline:
            if not self._inline_due:
                self._inline_due = True
                loop.call_soon(self._commit_inline)
        elif not self._wake.is_set():  # the writer is asleep or past its last look at the queue
            self._wake.set()
        return await future

    def _commit_inline(self) -> None:
        """On the event loop: commit the run of appends at the head of the queue here, batch by
        batch, while the writer thread is idle and no other process holds the lock file; leave
        whatever remains to the writer thread."""
        self._inline_due = False
        pending = self._pending
        turns = self._turns
        while pending and isinstance(pending[0][0], Append):
            if turns is None:  # closed: the writer thread answers with the error
                self._appends_to_thread = True
                break
            if not self._owner.acquire(blocking=False):
                break  # the writer thread is at work: it takes these in turn
            try:
                try:
                    fcntl.flock(turns, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # another process is writing: wait for it on the writer thread
                    self._appends_to_thread = True
                    break
                try:
                    batch = [pending.popleft()]
                    while (pending and len(batch) < MAX_BATCH
                           and isinstance(pending[0][0], Append)):
                        batch.append(pending.popleft())
                    results = self._run_or_fail(batch)
                finally:
                    fcntl.flock(turns, fcntl.LOCK_UN)
            finally:
                self._owner.release()
            self._deliver(batch, results)
        if pending and not self._wake.is_set():
            self._wake.set()

    def _start(self) -> asyncio.AbstractEventLoop:
        loop = self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._serve, args=(loop,), name="sqlite-writer",
                                        daemon=True)
        self._thread.start()
        return loop

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        """The writer thread: take what is queued, up to MAX_BATCH, as one batch; hand the
        results back in one call and go straight on with what queued meanwhile (no round trip
        through the event loop between batches). Appends at the head of the queue go back to
        the event loop, unless it found the lock file taken."""
        pending, wake = self._pending, self._wake
        while True:
            wake.wait()
            wake.clear()
            while pending:
                with self._owner:
                    if not pending:  # the event loop committed them meanwhile
                        break
                    back = isinstance(pending[0][0], Append) and not self._appends_to_thread
                    if not back:
                        self._appends_to_thread = False
                        batch, results = self._next_batch()
                try:
                    if back:
                        loop.call_soon_threadsafe(self._commit_inline)
                        break
                    loop.call_soon_threadsafe(self._deliver, batch, results)
                except RuntimeError:  # the loop is closed: nobody is waiting any more
                    return
            if self._stopping:
                return

    def _next_batch(self) -> tuple[list[tuple[Job, asyncio.Future[Any]]], list[Any]]:
        pending = self._pending
        first = pending.popleft()
        if isinstance(first[0], Outside):
            try:
                return [first], [first[0].job()]
            except BaseException as exc:
                return [first], [exc]
        batch = [first]
        while pending and len(batch) < MAX_BATCH and not isinstance(pending[0][0], Outside):
            batch.append(pending.popleft())
        turns = self._turns
        try:
            assert self._writer is not None, "store is closed"
            assert turns is not None  # opened before the writer, closed after it
            fcntl.flock(turns, fcntl.LOCK_EX)  # blocks only while another process writes
        except BaseException as exc:
            return batch, [exc] * len(batch)
        try:
            return batch, self._run_or_fail(batch)
        finally:
            fcntl.flock(turns, fcntl.LOCK_UN)

    def _deliver(self, batch: list[tuple[Job, asyncio.Future[Any]]], results: list[Any]) -> None:
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._unfinished -= len(batch)
        if not self._unfinished:
            self._idle.set()
        if not isinstance(batch[0][0], Outside):
            self.upkeep.after_batch()

    def _run_or_fail(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[Any]:
        """The batch's results, once committed; with the lock file held by the caller."""
        try:
            conn = self._writer
            assert conn is not None, "store is closed"
            self.upkeep.before_batch(conn)
            return _transaction(conn, batch)
        except BaseException as exc:  # the commit itself failed: nobody's write stuck
            return [exc] * len(batch)

    # -- reads: one connection per reader thread --------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(str(self.path))
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        loop = self._loop or asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, lambda: job(self._reader()))


def _transaction(conn: sqlite3.Connection, batch: list[tuple[Job, asyncio.Future[Any]]]
                 ) -> list[Any]:
    """The batch in one transaction: each job's result (or its own error), once committed."""
    results: list[Any] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        start = 0
        while start < len(batch):
            job = batch[start][0]
            if not isinstance(job, Append):
                results.append(_run_alone(conn, job))  # type: ignore[arg-type]
                start += 1
                continue
            end = start + 1
            while end < len(batch) and isinstance(batch[end][0], Append):
                end += 1
            group = [a for a, _ in batch[start:end] if isinstance(a, Append)]
            results += _run_appends(conn, group)
            start = end
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


def _run_alone(conn: sqlite3.Connection, job: Callable[[sqlite3.Connection], Any]) -> Any:
    """One job in its own savepoint: its failure (returned) undoes only its own writes."""
    conn.execute("SAVEPOINT job")
    try:
        result = job(conn)
        conn.execute("RELEASE job")
        return result
    except Exception as exc:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        return exc


def _run_appends(conn: sqlite3.Connection, group: list[Append]) -> list[Any]:
    """A run of appends set-based under one savepoint; when a constraint refuses a row (a
    repeated client_msg_id), or anything else fails, the group is undone and every append runs
    alone, so a failing append still undoes no neighbour's."""
    conn.execute("SAVEPOINT appends")
    try:
        results = append_many(conn, group)
        conn.execute("RELEASE appends")
    except Exception:
        conn.execute("ROLLBACK TO appends")
        conn.execute("RELEASE appends")
        return [_run_alone(conn, a.alone()) for a in group]
    return [_run_alone(conn, a.alone()) if r is None else r
            for a, r in zip(group, results, strict=True)]
