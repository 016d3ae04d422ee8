"""Message appends stored a batch at a time: four round trips per batch, not per message.

One at a time, an append costs a transaction of its own: BEGIN, a look-up of a repeated
client_msg_id, the append statement and COMMIT, four round trips and a WAL flush per message,
which capped a process at about 900 acks a second. Here the appends of one turn of the event loop
go together (`AppendQueue`; two batches at most are being stored at once, the rest wait), and a
batch is stored set-based, as on SQLite (../sqlite/appends.py): BEGIN; lock the conversations it
touches, in id order, reading which are paused; one statement that inserts every row, moves each
conversation's last_seq and marks its visiting customers active; COMMIT.

Correctness rests on the database, not on this module's arithmetic:
- the conversations are locked (FOR UPDATE) before anything is read from them, and READ
  COMMITTED gives each later statement a fresh snapshot, so seqs are counted from the newest
  committed last_seq and no other writer can append to them until the commit: gapless and unique;
- locks are taken in conversation id order, so two batches (of two processes) cannot deadlock on
  conversations (the database breaks any other deadlock, and the engine runs the batch again);
- a repeated client_msg_id is not looked up on this path: the unique index refuses the INSERT,
  the batch is rolled back, and each append runs alone through conversations.append (the old
  path, which returns the first copy of a repeat). Any other refusal (a NUL in a body, say) also
  sends the batch down that path, so each append fails or succeeds exactly as it would alone;
- appends to a missing or closed conversation, and a second copy of a client_msg_id within one
  batch, are left out of the set-based part and run alone after it, in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from ...errors import ChatError, Unavailable
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


# Locks the conversations in id order (as every batch does, so two cannot deadlock on them) and
# says which are paused: open, with no consent of their customer in force.
_LOCK = """
    SELECT c.id, c.last_seq, c.customer_id, c.status,
           c.status <> 'closed' AND NOT EXISTS (
               SELECT 1 FROM consents WHERE customer_id = c.customer_id AND withdrawn_at IS NULL)
    FROM conversations c
    WHERE c.id = ANY($1::text[]) ORDER BY c.id FOR UPDATE
"""
# The rows, each conversation's new last_seq and its visiting customer's activity, in one
# statement (one round trip).
_WRITE = """
    WITH ins AS (
        INSERT INTO messages (conversation_id, seq, sender, sender_id, body, client_msg_id,
                              sent_at, search)
        SELECT c, s, se, si, b, m, t, to_tsvector('simple', f)
        FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::text[], $8::text[]) AS u(c, s, se, si, b, m, t, f)
    ), moved AS (
        UPDATE conversations SET last_seq = u.s, last_message_at = u.t
        FROM unnest($9::text[], $10::bigint[], $11::text[]) AS u(c, s, t)
        WHERE conversations.id = u.c
    ), active AS (
        UPDATE customers SET last_active_at = u.t
        FROM unnest($12::text[], $13::text[]) AS u(c, t)
        WHERE customers.id = u.c
    )
    SELECT 1
"""


async def append_many(c: Connection, group: list[Append]) -> list[Result | ChatError]:
    """Store the group in this transaction; each append's result or its own error (a closed
    conversation, say), in order. Raises what the database raised when it refused a row (the
    caller runs each append alone instead)."""
    ids = sorted({a.conversation_id for a in group})
    rows = await c.fetch(_LOCK, ids)
    state: dict[str, list[Any]] = {row[0]: [row[1], row[2], row[3]] for row in rows}
    paused = {row[0] for row in rows if row[4]}
    results: list[Result | None] = []
    columns: list[list[Any]] = [[] for _ in range(8)]
    touched: dict[str, tuple[int, str]] = {}
    customers: dict[str, str] = {}
    keys: set[tuple[str, str, str, str]] = set()
    for a in group:
        found = state.get(a.conversation_id)
        key = a.key()
        if found is None or (found[2] == "closed" and a.sender != "system") or key in keys or (
                a.unless_paused and a.conversation_id in paused):
            results.append(None)  # run alone, below: its error, or the first copy's seq
            continue
        if key is not None:
            keys.add(key)
        found[0] += 1
        seq, customer_id, status = found
        for column, value in zip(columns, (a.conversation_id, seq, a.sender, a.sender_id,
                                           a.body, a.client_msg_id, a.now, fold(a.body)),
                                 strict=True):
            column.append(value)
        touched[a.conversation_id] = (seq, a.now)
        if a.sender == "visitor":
            customers[customer_id] = a.now
        results.append((Message(a.conversation_id, seq, a.sender, a.sender_id, a.author, a.body,
                                a.client_msg_id, a.now), True, status))
    if columns[0]:
        await c.execute(_WRITE, *columns, list(touched), [s for s, _ in touched.values()],
                        [t for _, t in touched.values()], list(customers),
                        list(customers.values()))
    done: list[Result | ChatError] = []
    for a, result in zip(group, results, strict=True):
        if result is None:
            try:  # raised after its statement ran, so the transaction goes on
                result = await a.alone(c)
            except ChatError as exc:
                done.append(exc)
                continue
        done.append(result)
    return done


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
        if len(batch) == 1:
            await _settle(batch[0], self.engine.write(batch[0].alone))
            return
        try:
            results = await self.engine.write(lambda c: append_many(c, batch))
        except Unavailable as exc:  # not known to be committed: none of them is acked
            for a in batch:
                _fail(a, exc)
            return
        except Exception:  # noqa: BLE001 - a refused row: each alone, as it would have gone
            for a in batch:
                await _settle(a, self.engine.write(a.alone))
            return
        for a, result in zip(batch, results, strict=True):
            if isinstance(result, ChatError):
                _fail(a, result)
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

