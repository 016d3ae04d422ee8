"""In-process fan-out: the embedded default, for one server process."""

from __future__ import annotations

import time
from collections.abc import Mapping

from .base import Listener, merge_rosters
from .local import Listeners, LocalSubscription


class MemoryBroadcast:
    shared = False
    max_payload: int | None = None
    per_channel = False

    def __init__(self) -> None:
        self._listeners = Listeners()
        self._beats: dict[str, tuple[dict[int, bool], float]] = {}  # process -> roster, expiry
        self._counts: dict[str, tuple[float, float]] = {}  # key -> (total, expiry)
        self._leases: dict[str, dict[str, float]] = {}  # key -> member -> expiry

    async def connect(self) -> None:
        return None

    async def disconnect(self) -> None:
        self._listeners.clear()

    async def ping(self) -> None:
        return None

    async def publish(self, channel: str, payload: str) -> None:
        self._listeners.deliver(channel, payload)

    def subscribe(self, channel: str, listener: Listener) -> LocalSubscription:
        return self._listeners.add(channel, listener)

    async def settled(self) -> None:
        return None

    async def heartbeat(self, process_id: str, agents: Mapping[int, bool], ttl: float) -> None:
        if agents:
            self._beats[process_id] = (dict(agents), time.monotonic() + ttl)
        else:
            self._beats.pop(process_id, None)

    async def agents_online(self) -> bool:
        return not all((await self.present_agents()).values())

    async def present_agents(self) -> dict[int, bool]:
        now = time.monotonic()
        return merge_rosters([roster for roster, until in self._beats.values() if until > now])

    async def lease(self, key: str, member: str, ttl: float, hold: bool) -> int:
        now = time.monotonic()
        members = self._leases.setdefault(key, {})
        if hold:
            members[member] = now + ttl
        else:
            members.pop(member, None)
        for gone in [m for m, until in members.items() if until <= now]:
            del members[gone]
        if not members:
            del self._leases[key]
        return len(members)

    async def count(self, key: str, amount: float, window: float) -> float:
        now = time.monotonic()
        total, until = self._counts.get(key, (0.0, 0.0))
        if until <= now:
            total, until = 0.0, now + window
            if len(self._counts) > 10_000:  # forget the expired, so the table stays small
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        self._counts[key] = (total + amount, until)
        return total + amount
