"""The Broadcast interface: fan-out of already-stored events to every process that listens.

Broadcast only notifies; storage is the source of truth. A subscriber that misses an event (a
dropped pub/sub message, a reconnect) catches up from storage by seq.

Shared backends (Redis, PostgreSQL) also hold the little state processes must agree on that is
not worth a table in the store: which processes have agents online, with an expiry, so a killed
process's agents disappear by themselves; and windowed counters for the per-IP limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Listener = Callable[[str], None]

# A local-only channel: a shared backend publishes "down" on it when its connection drops and
# "up" once it is back (then every socket catches up from storage). Never sent to other processes.
CONNECTION_CHANNEL = "@connection"
DOWN = "down"
UP = "up"


class BroadcastUnavailable(Exception):
    """The backend does not answer; a publish that raises this reached this process only."""


class Subscription(Protocol):
    def cancel(self) -> None: ...


class Broadcast(Protocol):
    # Whether other processes hear what this one publishes (False: memory://).
    shared: bool
    # The largest payload `publish` carries, in bytes (None: no limit): larger frames are sent as
    # references that listeners resolve from storage (PostgreSQL's NOTIFY takes 8000 bytes).
    max_payload: int | None
    # Whether a subscription takes a round trip to the backend before it hears other processes'
    # publications (`settled()` waits for it): True where each process subscribes per channel.
    per_channel: bool

    async def connect(self) -> None:
        """Raise BroadcastUnavailable with a reason a person can act on when unreachable."""

    async def disconnect(self) -> None: ...
    async def ping(self) -> None:
        """Raise when the backend does not answer, or this process's listening side is down."""

    async def publish(self, channel: str, payload: str) -> None:
        """Deliver `payload` to every listener of `channel`, in every process.

        Raises BroadcastUnavailable when the other processes could not be reached; this
        process's listeners have heard it all the same."""

    def subscribe(self, channel: str, listener: Listener) -> Subscription:
        """Call `listener(payload)` for each payload on `channel` until cancelled.

        Listeners run on the event loop and must not block: they hand the payload to a queue.
        """

    async def settled(self) -> None:
        """Return once every subscription made before the call hears what other processes
        publish (a shared backend subscribes per channel, and that takes a round trip); at
        once when there is nothing to wait for. Gives up after a few seconds: a backend that
        does not answer says "down" and then "up", and listeners catch up on "up"."""

    async def heartbeat(self, process_id: str, agents: int, ttl: float) -> None:
        """Say this process has `agents` agent sockets open, for `ttl` seconds."""

    async def agents_online(self) -> bool:
        """Whether any process, this one included, said within its ttl that it has agents."""

    async def lease(self, key: str, member: str, ttl: float, hold: bool) -> int:
        """Hold (or renew) `member`'s lease in the set `key` for `ttl` seconds, or give it up
        (`hold` False); the number of members whose lease still runs. A killed process's
        leases run out by themselves."""

    async def count(self, key: str, amount: float, window: float) -> float:
        """Add `amount` to the counter `key`, which starts at 0 and lives `window` seconds from
        its first addition (a fixed window shared by every process); the new total."""
