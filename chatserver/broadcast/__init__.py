"""Fan-out behind one interface; `create(url)` picks the implementation by URL scheme."""

from __future__ import annotations

from urllib.parse import urlparse

from .base import Broadcast, Listener, Subscription


def create(url: str) -> Broadcast:
    scheme = urlparse(url).scheme
    if scheme == "memory":
        from .memory import MemoryBroadcast

        return MemoryBroadcast()
    if scheme in {"redis", "rediss"}:
        raise ValueError("The Redis broadcast is not available in this version yet.")
    raise ValueError(f"Unsupported broadcast URL scheme {scheme!r}")


__all__ = ["Broadcast", "Listener", "Subscription", "create"]
