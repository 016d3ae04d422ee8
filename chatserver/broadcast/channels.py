"""A shared backend's subscriptions, kept equal to the channels this process has listeners for.

Redis SUBSCRIBE and PostgreSQL LISTEN differ only in their statements; the bookkeeping is the
same: the changes of one turn of the loop go out as one batch, one batch at a time, on the
connection in use, and a new connection starts from everything wanted. A process subscribed to
every channel would receive every conversation's messages; one that subscribes per channel
receives only what its sockets follow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

Statement = Callable[[Any, set[str]], Awaitable[None]]


class ChannelSync:
    def __init__(self, wanted: Callable[[], set[str]], add: Statement, drop: Statement,
                 errors: tuple[type[BaseException], ...]) -> None:
        self.wanted = wanted  # the backend's channel names with a listener here
        self._add, self._drop, self._errors = add, drop, errors
        # The subscribing connection runs one statement at a time: (un)subscribing and the
        # backend's own checks on it (PING, SELECT 1) take turns under this lock.
        self.lock = asyncio.Lock()
        self.connection: Any = None  # None while down
        self.current: set[str] = set()
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    async def start(self, connection: Any) -> None:
        """A new connection: subscribe it to everything wanted, then use it."""
        async with self.lock:
            wanted = self.wanted()
            if wanted:
                await self._add(connection, wanted)
            self.connection, self.current = connection, wanted

    def lost(self) -> None:
        self.connection, self.current = None, set()

    def changed(self) -> None:
        """A channel gained its first listener or lost its last: (un)subscribe it soon, in one
        batch with the others of this turn of the loop."""
        self._dirty = True
        if self.connection is None or (self._task is not None and not self._task.done()):
            return  # the running batch looks again; a new connection subscribes all wanted
        with contextlib.suppress(RuntimeError):  # no loop yet: start() subscribes what is wanted
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._dirty:
            self._dirty = False
            await self.apply()

    async def apply(self) -> None:
        """Subscribe to the wanted channels and no others; in force once it returns."""
        async with self.lock:
            connection = self.connection
            if connection is None:
                return
            wanted = self.wanted()
            try:
                added = wanted - self.current
                if added:
                    await self._add(connection, added)
                    self.current |= added
                dropped = self.current - wanted
                if dropped:
                    await self._drop(connection, dropped)
                    self.current -= dropped
            except self._errors:
                return  # the backend finds the connection broken and starts a new one
