"""Message appends stored a batch at a time: one statement per batch, not a transaction per message.

One at a time, an append costs a transaction of its own: BEGIN, a look-up of a repeated
client_msg_id, the append statement and COMMIT, four round trips and a WAL flush per message,
which capped a process at about 900 acks a second. Here the appends of one turn of the event loop
go together (`AppendQueue`; two batches at most are being stored at once, the rest wait), and a
batch is stored set-based, as on SQLite (../sqlite/appends.py), by one statement outside an
explicit transaction (its own, committed when it returns), a call of append_batch
(migrations/008_append_batch.sql): lock the conversations it touches, in id order, reading which
are paused; insert every row, move each conversation's last_seq and mark its visiting customers
active. One round trip, where BEGIN, the lock, the write and COMMIT were four: flat out, that
took one process from about 6,200 to about 10,000 msgs/s (bench/RESULTS.md, section 14).
A batch with a system message, which has no client_msg_id to make a second run harmless, still
goes in a transaction: its BEGIN finds a dead pooled connection before anything is sent.

Correctness rests on the database, not on this module's arithmetic:
- the conversations are locked (FOR UPDATE) before their last_seq is used, and READ COMMITTED
  gives the locking step the newest committed version of each row, so seqs are counted from the
  newest committed last_seq and no other writer can append to them until the commit: gapless and
  unique (the (conversation_id, seq) constraint would refuse a repeat);
- locks are taken in conversation id order, so two batches (of two processes) cannot deadlock on
  conversations (the database breaks any other deadlock, and the engine runs the batch again);
- a repeated client_msg_id is not looked up on this path: the unique index refuses the INSERT,
  nothing of the batch is stored, and each append runs alone through conversations.append (the
  old path, which returns the first copy of a repeat). Any other refusal (a NUL in a body, say)
  also sends the batch down that path, so each append fails or succeeds exactly as it would alone;
- appends to a missing, closed or paused conversation, and a second copy of a client_msg_id
  within one batch, are left out of the statement and run alone after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from ...errors import Unavailable
from ..base import Message
from ..rows import AppendRequest
from . import conversations
from .engine import Connection, Engine
from .folding import fold

MAX_BATCH = 500  # appends per transaction: the rest wait for the next one
IN_FLIGHT = 2  # batches being stored at once, per process

Result = tuple[Message, bool, str]


@dataclass(slots=True)
class Append(AppendRequest):
    done: asyncio.Future[Result] = field(default_factory=lambda: asyncio.get_running_loop()
                                         .create_future())

    async def alone(self, c: Connection) -> Result:
        return await conversations.append(
            c, self.conversation_id, sender=self.sender, sender_id=self.sender_id,
            author=self.author, body=self.body, client_msg_id=self.client_msg_id, now=self.now,
            unless_paused=self.unless_paused)


# The statement lives in a function (migrations/008_append_batch.sql), for its plan settings.
_BATCH = "SELECT row_n, row_seq, row_status FROM append_batch($1, $2, $3, $4, $5, $6, $7, $8)"


async def append_many(c: Connection, group: list[Append]) -> list[Result | None]:
    """Store the group in one statement; each append's result, or None for one that must run
    alone (its error, or the first copy of a client_msg_id repeated within the group). Raises
    what the database raised when it refused a row (the caller runs each append alone)."""
    columns: list[list[Any]] = [[] for _ in range(8)]
    sent: list[int] = []  # the group's index of each row sent
    keys: set[tuple[str, str, str, str]] = set()
    for index, a in enumerate(group):
        key = a.key()
        if key is not None:
            if key in keys:
                continue
            keys.add(key)
        sent.append(index)
        for column, value in zip(columns, (a.conversation_id, a.sender, a.sender_id, a.body,
                                           a.client_msg_id, a.now, fold(a.body),
                                           a.unless_paused), strict=True):
            column.append(value)
    results: list[Result | None] = [None] * len(group)
    for n, seq, status in await c.fetch(_BATCH, *columns):
        index = sent[n - 1]
        a = group[index]
        results[index] = (Message(a.conversation_id, seq, a.sender, a.sender_id, a.author,
                                  a.body, a.client_msg_id, a.now), True, status)
    return results


class AppendQueue:
    """Appends waiting for a batch. The appends of one turn of the event loop go together; up to
    IN_FLIGHT batches are stored at once (one commits while the next is written), the rest wait."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._waiting: list[Append] = []
        self._storing: set[asyncio.Task[None]] = set()
        self._kick_due = False

    async def add(self, append: Append) -> Result:
        self._waiting.append(append)
        if not self._kick_due:
            self._kick_due = True
            asyncio.get_running_loop().call_soon(self._kick)
        return await append.done

    def _kick(self) -> None:
        self._kick_due = False
        while self._waiting and len(self._storing) < IN_FLIGHT:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            task = asyncio.get_running_loop().create_task(self._store_or_fail(batch))
            self._storing.add(task)
            task.add_done_callback(self._stored)

    def _stored(self, task: asyncio.Task[None]) -> None:
        self._storing.discard(task)
        if self._waiting:
            self._kick()

    async def drain(self) -> None:
        """Before the pool closes: let the batches being stored finish, briefly."""
        if self._storing:
            await asyncio.wait(set(self._storing), timeout=5)

    async def _store_or_fail(self, batch: list[Append]) -> None:
        try:
            await self._store(batch)
        except BaseException as exc:  # a bug, or shutdown: nobody may wait for ever
            for a in batch:
                _fail(a, exc if isinstance(exc, Exception) else Unavailable())
            raise

    async def _store(self, batch: list[Append]) -> None:
        async def job(c: Connection) -> list[Result | None]:
            return await append_many(c, batch)

        if all(a.client_msg_id is not None for a in batch):
            # Safe to run again after a lost connection: had the first run committed, the second
            # meets the unique index and each append, alone, finds its stored copy.
            outcome = self.engine.statement(job)
        else:
            # A row without one (a system message) could be stored twice: in a transaction,
            # whose BEGIN finds a dead pooled connection before anything is sent.
            outcome = self.engine.write(job)
        try:
            results = await outcome
        except Unavailable as exc:  # not known to be committed: none of them is acked
            for a in batch:
                _fail(a, exc)
            return
        except Exception:  # noqa: BLE001 - a refused row: each alone, as it would have gone
            results = [None] * len(batch)
        for a, result in zip(batch, results, strict=True):
            if result is None:  # its own error, or a repeat's first copy, as alone
                await _settle(a, self.engine.write(a.alone))
            elif not a.done.done():
                a.done.set_result(result)


async def _settle(a: Append, outcome: Awaitable[Result]) -> None:
    try:
        result = await outcome
    except Exception as exc:  # noqa: BLE001 - the append's own error, for its caller
        _fail(a, exc)
        return
    if not a.done.done():
        a.done.set_result(result)


def _fail(a: Append, exc: BaseException) -> None:
    with contextlib.suppress(asyncio.InvalidStateError):
        a.done.set_exception(exc)

