"""Fan-out behind one interface; `create(url)` picks the implementation by URL scheme."""

from __future__ import annotations

from urllib.parse import urlparse

from .base import (
    CONNECTION_CHANNEL,
    DOWN,
    UP,
    Broadcast,
    BroadcastUnavailable,
    Listener,
    Subscription,
)

POSTGRES_SCHEMES = {"postgresql", "postgres"}


def create(url: str) -> Broadcast:
    scheme = urlparse(url).scheme
    if scheme == "memory":
        from .memory import MemoryBroadcast

        return MemoryBroadcast()
    if scheme in {"redis", "rediss"}:
        try:
            from .redis import RedisBroadcast
        except ImportError:
            raise ValueError("CHATSERVER_BROADCAST_URL is redis://, but the redis package is "
                             "not installed (pip install 'chatserver[redis]')") from None
        return RedisBroadcast(url)
    if scheme in POSTGRES_SCHEMES:
        try:
            from .postgres import PostgresBroadcast
        except ImportError:
            raise ValueError("CHATSERVER_BROADCAST_URL is postgresql://, but the asyncpg "
                             "package is not installed (pip install 'chatserver[postgres]')"
                             ) from None
        return PostgresBroadcast(url)
    raise ValueError(f"Unsupported broadcast URL scheme {scheme!r}: use memory://, redis:// or "
                     "postgresql://")


__all__ = ["CONNECTION_CHANNEL", "DOWN", "UP", "Broadcast", "BroadcastUnavailable", "Listener",
           "Subscription", "create"]
