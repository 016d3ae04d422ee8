"""Publications of many coroutines sent in few round trips, in the order they were made.

Each publish used to take a connection from the pool, write one command and wait for its reply:
per message that is a system call each way and a dozen awaits. Flat out, many sockets publish at
once; here every publish made while a batch is on its way joins the next batch, which goes out
as one command (one write, one read: redis.py sends it as one script call) once the batch
before it is answered. One batch is in flight at a time, so the backend receives publications in
the order they were made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Send = Callable[[list[tuple[str, str]]], Awaitable[None]]


class Batches:
    def __init__(self, send: Send) -> None:
        self._send = send
        self._next: tuple[list[tuple[str, str]], asyncio.Future[None]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def publish(self, channel: str, payload: str) -> None:
        """Return once the batch holding this publication was sent; raise what sending it
        raised."""
        if self._next is None:
            self._next = ([], asyncio.get_running_loop().create_future())
        items, sent = self._next
        items.append((channel, payload))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        # Shielded: a publisher that gives up must not cancel the others' batch.
        await asyncio.shield(sent)

    async def _run(self) -> None:
        while self._next is not None:
            (items, sent), self._next = self._next, None
            try:
                await self._send(items)
            except Exception as exc:  # every publisher of the batch hears it
                sent.set_exception(exc)
                sent.exception()  # retrieved: no "never retrieved" warning if all gave up
            else:
                sent.set_result(None)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
