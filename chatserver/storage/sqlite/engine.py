"""The SQLite engine: one writer thread with group commit, and a pool of reader connections.

One writer thread owns the only writing connection; writes queue up and run in batches inside one
`BEGIN IMMEDIATE` transaction, each job in its own savepoint, then one commit with
`synchronous=FULL` (group commit: one fsync serves every message that arrived meanwhile, and no
caller hears "stored" before the commit returns). Reads run on a small pool of reader connections,
which WAL lets proceed beside the writer. `secure_delete` overwrites deleted content.

We call the stdlib sqlite3 module from our own threads rather than through aiosqlite: a batch is
one thread hop for the whole transaction, where aiosqlite makes one hop per statement.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .migrate import migrate
from .upkeep import BUSY_TIMEOUT_MS, Upkeep

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], Any]
MAX_BATCH = 512


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
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(4, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._jobs: list[tuple[Job, asyncio.Future[Any]]] = []
        self._flushing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.upkeep = Upkeep(path, self.write, self.on_writer, lambda: self._writer)

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self, now: Callable[[], str]) -> None:
        """Open the writer (migrating the database), then finish a scrub a crash interrupted."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        self._writer = await loop.run_in_executor(self._writer_pool, self._open_writer, now)
        await self.upkeep.scrub_if_needed()

    def _open_writer(self, now: Callable[[], str]) -> sqlite3.Connection:
        conn = connect(str(self.path))
        # Checkpoints run on a thread of their own (upkeep.py), never inside a commit here.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        migrate(conn, now)
        return conn

    async def close(self) -> None:
        await self.upkeep.close()
        await self._idle.wait()
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            await loop.run_in_executor(self._writer_pool, self._writer.close)
            self._writer = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)

    # -- writes: queued, run in batches, one commit each ------------------------------------

    async def write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append((job, future))
        if not self._flushing:
            self._flushing = True
            self._idle.clear()
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._jobs:
                batch, self._jobs = self._jobs[:MAX_BATCH], self._jobs[MAX_BATCH:]
                try:
                    results = await loop.run_in_executor(self._writer_pool, self._run_batch, batch)
                except BaseException as exc:  # the commit itself failed: nobody's write stuck
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                self.upkeep.after_batch()
        finally:
            self._flushing = False
            self._idle.set()

    def _run_batch(self, batch: list[tuple[Job, asyncio.Future[Any]]]) -> list[Any]:
        conn = self._writer
        assert conn is not None, "store is closed"
        results: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for job, _ in batch:
                conn.execute("SAVEPOINT job")
                try:
                    results.append(job(conn))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append(exc)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    async def on_writer(self, job: Callable[[], T]) -> T:
        """Run `job` on the writer's thread between batches (outside any transaction)."""
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, job)

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
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, lambda: job(self._reader()))
