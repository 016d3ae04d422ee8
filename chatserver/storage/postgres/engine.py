"""The PostgreSQL engine: a pool of asyncpg connections and one transaction per store call.

A write is reported done only once its COMMIT has returned. A connection that died while idle in
the pool (a database restart, `pg_terminate_backend`) is noticed when the transaction would begin,
before anything of the write was sent, so the write is simply run on a fresh connection. Once a
transaction has begun, losing the connection is reported as `Unavailable`: the caller hears that
the write failed (a chat message is not acked), never that it succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from ...errors import DatabaseError, NotFound, Unavailable, ValidationFailed
from .. import describe

T = TypeVar("T")
Connection = Any  # asyncpg.Connection; asyncpg ships no type hints
Job = Callable[[Connection], Awaitable[T]]

CONNECT_TIMEOUT_SECONDS = 5.0
# Errors that mean "the connection or the server is gone", as opposed to a refused statement.
LOST = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.IdleSessionTimeoutError,
    asyncpg.exceptions.InternalClientError,
)
UNAVAILABLE = "The database is not answering; this was not done. Please try again."
# PostgreSQL text cannot hold NUL (SQLite's can), and a number past 64 bits fits no column of
# either. Input is checked where it is stored and look-ups with a NUL find nothing (store.py), so
# one that reaches the database anyway is refused as input, or, in a look-up, found nowhere.
# Aborted by the database to break a deadlock or a serialization conflict: nothing was done.
RETRIABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
RETRIES_AFTER_DEADLOCK = 3
UNSTORABLE = "A value holds a NUL character or a number too large to store."


async def _reset(conn: Connection) -> None:
    """Before a connection goes back to the pool. The store leaves no session state behind (no
    SET, LISTEN, cursor or session advisory lock outlives its call: the migration lock is
    released where it is taken), so the driver's default reset, a round trip after every call,
    buys nothing; a transaction left open by a failure is still rolled back."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def _unstorable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.exceptions.CharacterNotInRepertoireError):
        return True  # a NUL
    # The driver's "value out of int64 range"; other data errors are bugs, raised as they are.
    return isinstance(exc, asyncpg.exceptions.DataError) and "out of" in str(exc)


def open_error(url: str, exc: BaseException) -> DatabaseError:
    """One line that says why the database at `url` cannot be used (no password, no trace)."""
    where = describe(url)
    if isinstance(exc, asyncpg.exceptions.InvalidPasswordError | asyncpg.exceptions.
                  InvalidAuthorizationSpecificationError):
        return DatabaseError(f"{where} refused the credentials: {exc}")
    if isinstance(exc, asyncpg.exceptions.InvalidCatalogNameError):
        return DatabaseError(f"{where}: {exc}")
    if isinstance(exc, TimeoutError):
        return DatabaseError(f"cannot reach {where}: no answer within "
                             f"{CONNECT_TIMEOUT_SECONDS:.0f} seconds")
    if isinstance(exc, OSError):
        if isinstance(exc, socket.gaierror):  # the host name is not known
            reason = str(exc.strerror).lower()
        else:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return DatabaseError(f"cannot reach {where}: {reason}")
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return DatabaseError(f"{where}: {exc}")
    return DatabaseError(f"{where}: {type(exc).__name__}")


async def _past_deadlocks(once: Callable[[], Awaitable[T]]) -> T:
    """A transaction the database chose to abort to break a deadlock changed nothing: it runs
    again, up to RETRIES_AFTER_DEADLOCK times in all."""
    for attempt in range(RETRIES_AFTER_DEADLOCK):
        try:
            return await once()
        except RETRIABLE:
            if attempt + 1 == RETRIES_AFTER_DEADLOCK:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _lost(conn: Connection | None, exc: BaseException) -> bool:
    return isinstance(exc, LOST) or (conn is not None and conn.is_closed())


class Engine:
    """The pool, and the two ways the store uses it: `write` (one transaction, committed or
    failed) and `read` (run again on another connection when its connection was lost)."""

    def __init__(self, pool: Any, size: int) -> None:
        self.pool = pool
        self.size = size

    @classmethod
    async def connect(cls, url: str, size: int) -> Engine:
        try:
            # No floor of open connections: the pool would retry it in the background while
            # the database is away, logging a traceback each time. Connections open on demand
            # and close after five idle minutes.
            pool = await asyncpg.create_pool(
                url, min_size=0, max_size=size, timeout=CONNECT_TIMEOUT_SECONDS,
                max_inactive_connection_lifetime=300.0, reset=_reset,
            )
        except Exception as exc:
            raise open_error(url, exc) from exc
        return cls(pool, size)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pool.close(), 10)
            return
        self.pool.terminate()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        try:
            conn = await self.pool.acquire(timeout=CONNECT_TIMEOUT_SECONDS * 2)
        except Exception as exc:
            if _lost(None, exc):
                raise Unavailable(UNAVAILABLE) from exc
            raise
        try:
            yield conn
        finally:
            # The pool replaces a connection it cannot reset; that is no failure of ours, and
            # must not turn a committed write into an error.
            with contextlib.suppress(Exception):
                await self.pool.release(conn)

    async def write(self, job: Job[T], *, isolation: str = "read_committed") -> T:
        """Run `job` in one transaction; its result once the commit has returned."""
        return await _past_deadlocks(lambda: self._write_once(job, isolation))

    async def _write_once(self, job: Job[T], isolation: str) -> T:
        attempts = self.size + 1  # every pooled connection may have died at once
        for attempt in range(attempts):
            async with self._connection() as conn:
                tx = conn.transaction(isolation=isolation)
                try:
                    await tx.start()
                except Exception as exc:
                    if _lost(conn, exc) and attempt + 1 < attempts:
                        continue  # nothing was sent: run it on another connection
                    raise Unavailable(UNAVAILABLE) from exc
                try:
                    result = await job(conn)
                except BaseException as exc:
                    with contextlib.suppress(Exception):
                        await tx.rollback()
                    if isinstance(exc, Exception) and _lost(conn, exc):
                        raise Unavailable(UNAVAILABLE) from exc
                    if _unstorable(exc):
                        raise ValidationFailed(UNSTORABLE) from exc
                    raise
                try:
                    await tx.commit()
                except Exception as exc:
                    if _lost(conn, exc):
                        raise Unavailable(UNAVAILABLE) from exc
                    raise
                return result
        raise Unavailable(UNAVAILABLE)  # pragma: no cover - the loop returns or raises

    async def statement(self, job: Job[T]) -> T:
        """Run `job`, a single statement that changes nothing more when run twice, outside an
        explicit transaction: it commits on its own, one round trip where `write` takes three
        more (BEGIN, COMMIT and the wait for each). There is no BEGIN to find a dead pooled
        connection before anything is sent, so after a lost connection it is not known whether
        the statement committed: it runs again on another connection."""
        return await _past_deadlocks(lambda: self._statement_once(job))

    async def _statement_once(self, job: Job[T]) -> T:
        attempts = self.size + 1  # every pooled connection may have died at once
        for attempt in range(attempts):
            async with self._connection() as conn:
                try:
                    return await job(conn)
                except Exception as exc:
                    if not _lost(conn, exc):
                        if _unstorable(exc):
                            raise ValidationFailed(UNSTORABLE) from exc
                        raise
                    if attempt + 1 == attempts:
                        raise Unavailable(UNAVAILABLE) from exc
        raise Unavailable(UNAVAILABLE)  # pragma: no cover - the loop returns or raises

    async def read(self, job: Job[T], *, snapshot: bool = False) -> T:
        """Run a read; with `snapshot`, its statements see one consistent state."""
        attempts = self.size + 1  # a read changes nothing: safe to run again elsewhere
        for attempt in range(attempts):
            async with self._connection() as conn:
                try:
                    if not snapshot:
                        return await job(conn)
                    async with conn.transaction(isolation="repeatable_read", readonly=True):
                        return await job(conn)
                except Exception as exc:
                    if _unstorable(exc):
                        raise NotFound() from exc
                    if not _lost(conn, exc):
                        raise
                    if attempt + 1 == attempts:
                        raise Unavailable(UNAVAILABLE) from exc
        raise Unavailable(UNAVAILABLE)  # pragma: no cover

    async def outside_transaction(self, statement: str) -> None:
        """Run a statement that may not run in a transaction (VACUUM)."""
        async with self._connection() as conn:
            try:
                await conn.execute(statement)
            except Exception as exc:
                if _lost(conn, exc):
                    raise Unavailable(UNAVAILABLE) from exc
                raise
