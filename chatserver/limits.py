"""Rate and count limits for one server process: per socket, per session and per client IP.

Buckets refill evenly; counters follow sockets as they open and close. Every limit but size is
waived for CHATSERVER_LIMITS_EXEMPT addresses (load tests, trusted relays). The tables are
bounded so a flood of addresses cannot grow memory without end.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque

from .settings import Settings

MAX_TRACKED_IPS = 50_000


class TokenBucket:
    """`capacity` tokens, refilled evenly over `window` seconds."""

    __slots__ = ("capacity", "rate", "tokens", "stamp")

    def __init__(self, capacity: int, window: float) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / window
        self.tokens = float(capacity)
        self.stamp = time.monotonic()

    def take(self, cost: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class Limits:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ip_buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._ip_sockets: Counter[str] = Counter()
        self._session_sockets: Counter[str] = Counter()
        self._conversations: OrderedDict[str, deque[float]] = OrderedDict()
        self._consents: OrderedDict[str, TokenBucket] = OrderedDict()

    def exempt(self, ip: str | None) -> bool:
        return self.settings.is_exempt(ip)

    def socket_bucket(self, staff: bool) -> TokenBucket:
        capacity = self.settings.staff_rate_messages if staff else self.settings.rate_messages
        return TokenBucket(capacity, self.settings.rate_window_seconds)

    def allow_from_ip(self, ip: str | None, cost: float) -> bool:
        """The IP's shared bucket, across all its sockets."""
        if ip is None or self.exempt(ip):
            return True
        bucket = self._ip_buckets.get(ip)
        if bucket is None:
            bucket = TokenBucket(self.settings.ip_rate_messages, self.settings.rate_window_seconds)
            self._ip_buckets[ip] = bucket
            if len(self._ip_buckets) > MAX_TRACKED_IPS:
                self._ip_buckets.popitem(last=False)
        else:
            self._ip_buckets.move_to_end(ip)
        return bucket.take(cost)

    def allow_consent(self, ip: str | None) -> bool:
        """Each consent stores a session, a consent receipt and an access record: at most N per
        IP in an hour (a bucket refilled evenly over the hour), so nobody can fill the disk."""
        if ip is None or self.exempt(ip):
            return True
        bucket = self._consents.get(ip)
        if bucket is None:
            bucket = TokenBucket(self.settings.consents_per_ip_hour, 3600)
            self._consents[ip] = bucket
            if len(self._consents) > MAX_TRACKED_IPS:
                self._consents.popitem(last=False)
        else:
            self._consents.move_to_end(ip)
        return bucket.take()

    def open_socket(self, ip: str | None, session: str) -> str | None:
        """Count a new socket; the reason it is refused, or None."""
        if not self.exempt(ip):
            if self._session_sockets[session] >= self.settings.max_sockets_per_session:
                return "Too many open chat windows for this session."
            if ip is not None and self._ip_sockets[ip] >= self.settings.max_sockets_per_ip:
                return "Too many open connections from your address."
        self._session_sockets[session] += 1
        if ip is not None:
            self._ip_sockets[ip] += 1
        return None

    def close_socket(self, ip: str | None, session: str) -> None:
        for counter, key in ((self._session_sockets, session), (self._ip_sockets, ip)):
            if key is None:
                continue
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def allow_new_conversation(self, ip: str | None) -> bool:
        """At most N new conversations per IP in any hour."""
        if ip is None or self.exempt(ip):
            return True
        now = time.monotonic()
        stamps = self._conversations.setdefault(ip, deque())
        self._conversations.move_to_end(ip)
        while stamps and stamps[0] < now - 3600:
            stamps.popleft()
        if len(stamps) >= self.settings.new_conversations_per_ip_hour:
            return False
        stamps.append(now)
        if len(self._conversations) > MAX_TRACKED_IPS:
            self._conversations.popitem(last=False)
        return True
