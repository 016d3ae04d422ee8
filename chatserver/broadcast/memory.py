"""In-process fan-out: the embedded default, for one server process."""

from __future__ import annotations

from collections import defaultdict

from .base import Listener


class _Subscription:
    __slots__ = ("_hub", "channel", "listener")

    def __init__(self, hub: MemoryBroadcast, channel: str, listener: Listener) -> None:
        self._hub = hub
        self.channel = channel
        self.listener = listener

    def cancel(self) -> None:
        listeners = self._hub._channels.get(self.channel)
        if listeners is not None:
            listeners.discard(self)
            if not listeners:
                del self._hub._channels[self.channel]


class MemoryBroadcast:
    def __init__(self) -> None:
        self._channels: dict[str, set[_Subscription]] = defaultdict(set)

    async def connect(self) -> None:
        return None

    async def disconnect(self) -> None:
        self._channels.clear()

    async def ping(self) -> None:
        return None

    async def publish(self, channel: str, payload: str) -> None:
        # A copy: a listener may cancel its own subscription while we iterate.
        for sub in list(self._channels.get(channel, ())):
            sub.listener(payload)

    def subscribe(self, channel: str, listener: Listener) -> _Subscription:
        sub = _Subscription(self, channel, listener)
        self._channels[channel].add(sub)
        return sub
