"""The Broadcast interface: fan-out of already-stored events to every process that listens.

Broadcast only notifies; storage is the source of truth. A subscriber that misses an event (a
dropped pub/sub message, a reconnect) catches up from storage by seq.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Listener = Callable[[str], None]


class Subscription(Protocol):
    def cancel(self) -> None: ...


class Broadcast(Protocol):
    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def ping(self) -> None:
        """Raise when the backend does not answer."""

    async def publish(self, channel: str, payload: str) -> None:
        """Deliver `payload` to every listener of `channel`, in every process."""

    def subscribe(self, channel: str, listener: Listener) -> Subscription:
        """Call `listener(payload)` for each payload on `channel` until cancelled.

        Listeners run on the event loop and must not block: they hand the payload to a queue.
        """
