"""Listeners of this process, by channel: every backend delivers what it receives through one."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

from .base import Listener

log = logging.getLogger("chatserver.broadcast")


class LocalSubscription:
    __slots__ = ("_listeners", "channel", "listener")

    def __init__(self, listeners: Listeners, channel: str, listener: Listener) -> None:
        self._listeners = listeners
        self.channel = channel
        self.listener = listener

    def cancel(self) -> None:
        self._listeners.remove(self)


class Listeners:
    def __init__(self, changed: Callable[[], None] | None = None) -> None:
        self._channels: dict[str, set[LocalSubscription]] = defaultdict(set)
        # Called when a channel gains its first listener or loses its last: a shared backend
        # subscribes this process to the channels it has listeners for, and no others.
        self._changed = changed

    def add(self, channel: str, listener: Listener) -> LocalSubscription:
        sub = LocalSubscription(self, channel, listener)
        listeners = self._channels[channel]
        listeners.add(sub)
        if len(listeners) == 1 and self._changed is not None:
            self._changed()
        return sub

    def remove(self, sub: LocalSubscription) -> None:
        listeners = self._channels.get(sub.channel)
        if listeners is not None:
            listeners.discard(sub)
            if not listeners:
                del self._channels[sub.channel]
                if self._changed is not None:
                    self._changed()

    def channels(self) -> set[str]:
        """The channels with a listener."""
        return set(self._channels)

    def deliver(self, channel: str, payload: str) -> None:
        # A copy: a listener may cancel its own subscription while we iterate.
        for sub in list(self._channels.get(channel, ())):
            try:
                sub.listener(payload)
            except Exception:  # one socket's listener must not stop the others hearing it
                log.exception("a broadcast listener failed")

    def clear(self) -> None:
        self._channels.clear()
