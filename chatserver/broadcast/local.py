"""Listeners of this process, by channel: every backend delivers what it receives through one."""

from __future__ import annotations

import logging
from collections import defaultdict

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
    def __init__(self) -> None:
        self._channels: dict[str, set[LocalSubscription]] = defaultdict(set)

    def add(self, channel: str, listener: Listener) -> LocalSubscription:
        sub = LocalSubscription(self, channel, listener)
        self._channels[channel].add(sub)
        return sub

    def remove(self, sub: LocalSubscription) -> None:
        listeners = self._channels.get(sub.channel)
        if listeners is not None:
            listeners.discard(sub)
            if not listeners:
                del self._channels[sub.channel]

    def deliver(self, channel: str, payload: str) -> None:
        # A copy: a listener may cancel its own subscription while we iterate.
        for sub in list(self._channels.get(channel, ())):
            try:
                sub.listener(payload)
            except Exception:  # one socket's listener must not stop the others hearing it
                log.exception("a broadcast listener failed")

    def clear(self) -> None:
        self._channels.clear()
