"""The Broadcast interface: fan-out of already-stored events to every process that listens.

Broadcast only notifies; storage is the source of truth. A subscriber that misses an event (a
dropped pub/sub message, a reconnect) catches up from storage by seq.

Shared backends (Redis, PostgreSQL) also hold the little state processes must agree on that is
not worth a table in the store: which agents have a dashboard open in which process and whether
each is away, with an expiry, so a killed process's agents disappear by themselves; and windowed
counters and leases for the per-IP limits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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

    async def heartbeat(self, process_id: str, agents: Mapping[int, bool], ttl: float) -> None:
        """Say which agents have a dashboard open in this process (staff id -> away), for `ttl`
        seconds; an empty mapping takes the process out at once."""

    async def agents_online(self) -> bool:
        """Whether any process, this one included, said within its ttl that it has an agent
        who is not away."""

    async def present_agents(self) -> dict[int, bool]:
        """Every agent some process (this one included) said within its ttl has a dashboard
        open: staff id -> away (away only when away in every process that has them)."""

    async def lease(self, key: str, member: str, ttl: float, hold: bool) -> int:
        """Hold (or renew) `member`'s lease in the set `key` for `ttl` seconds, or give it up
        (`hold` False); the number of members whose lease still runs. A killed process's
        leases run out by themselves."""

    async def count(self, key: str, amount: float, window: float) -> float:
        """Add `amount` to the counter `key`, which starts at 0 and lives `window` seconds from
        its first addition (a fixed window shared by every process); the new total."""


def merge_rosters(rosters: list[Mapping[int, bool]]) -> dict[int, bool]:
    """Processes' rosters as one: an agent present anywhere, away only where away everywhere."""
    merged: dict[int, bool] = {}
    for roster in rosters:
        for staff_id, away in roster.items():
            merged[staff_id] = merged.get(staff_id, True) and away
    return merged


def dump_roster(roster: Mapping[int, bool]) -> str:
    return json.dumps({str(k): bool(v) for k, v in roster.items()}, separators=(",", ":"))


def load_roster(text: str | None) -> dict[int, bool]:
    """A roster as `dump_roster` wrote it; {} for anything else (a process of an older
    version wrote none)."""
    try:
        data = json.loads(text) if text else {}
        return {int(k): bool(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {}
