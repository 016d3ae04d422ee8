"""How often mail may be asked for: per address, per customer and per client IP.

Links by mail can be aimed at anyone's mailbox, so the limit per address protects its owner and
applies to every client, CHATSERVER_LIMITS_EXEMPT addresses included. Addresses are counted by a
keyed hash (HMAC with the server's secret), so this table names nobody. Per process, like the
other limits; the tables are bounded so a flood of keys cannot grow memory without end.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict, deque

from ..settings import Settings

MAX_KEYS = 50_000
LINKS_PER_ADDRESS = 3  # sign-in and termination links together
ADDRESS_WINDOW_SECONDS = 15 * 60
REQUESTS_PER_IP = 10  # link and transcript requests together
IP_WINDOW_SECONDS = 3600
TRANSCRIPTS_PER_CUSTOMER = 5
CUSTOMER_WINDOW_SECONDS = 3600


class Window:
    """At most `limit` events per key in any `seconds`."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        stamps = self._events.setdefault(key, deque())
        self._events.move_to_end(key)
        while stamps and stamps[0] <= now - self.seconds:
            stamps.popleft()
        if len(stamps) >= self.limit:
            return False
        stamps.append(now)
        if len(self._events) > MAX_KEYS:
            self._events.popitem(last=False)
        return True


class MailThrottle:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._key = hashlib.sha256(("mail-throttle:" + settings.secret_key).encode()).digest()
        self.addresses = Window(LINKS_PER_ADDRESS, ADDRESS_WINDOW_SECONDS)
        self.ips = Window(REQUESTS_PER_IP, IP_WINDOW_SECONDS)
        self.customers = Window(TRANSCRIPTS_PER_CUSTOMER, CUSTOMER_WINDOW_SECONDS)

    def address_key(self, email: str) -> str:
        return hmac.new(self._key, email.strip().lower().encode(), hashlib.sha256).hexdigest()

    def allow_ip(self, ip: str | None) -> bool:
        return ip is None or self.settings.is_exempt(ip) or self.ips.allow(ip)

    def allow_address(self, email: str) -> bool:
        return self.addresses.allow(self.address_key(email))

    def allow_customer(self, customer_id: str) -> bool:
        return self.customers.allow(customer_id)
