"""Rate and count limits: per socket, per session and per client IP.

Buckets refill evenly; counters follow sockets as they open and close. Every limit but size is
waived for CHATSERVER_LIMITS_EXEMPT addresses (load tests, trusted relays). The tables are
bounded so a flood of addresses cannot grow memory without end.

With a shared broadcast (several processes) the per-IP message rate, new conversations and
consents are also counted across processes in the broadcast's windowed counters (`SharedCounter`),
so a client spread over N processes does not get N times the limit. The hot path stays
synchronous: an IP's messages are added in the background, and once the shared total is over the
limit the IP is refused in this process for the rest of the window. Open sockets per IP and per
session are counted across processes as leases that each process renews while the socket is open,
so the sockets of a killed process stop counting within SOCKET_LEASE_SECONDS. The staff sign-in
limits (per address, and for everyone together) are counted across processes in the same
counters; a known browser's own delay after its failures stays per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import logging
import secrets
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from .broadcast import Broadcast, BroadcastUnavailable
from .passwords import login_delay
from .settings import Settings

log = logging.getLogger("chatserver.limits")

MAX_TRACKED_IPS = 50_000
MAX_TRACKED_DEVICES = 50_000

# Staff sign-in attempts from browsers the account does not know (see `known_device` in
# web/agent.py) are limited per address (CHATSERVER_STAFF_SIGN_INS_PER_IP per this window) and
# from everyone together (CHATSERVER_STAFF_SIGN_INS_PER_SECOND, bursts of twice as many), so a
# flood neither guesses far nor queues up in front of real sign-ins: each attempt costs an
# argon2 verification.
SIGN_IN_PER_IP_WINDOW = 300.0
SOCKET_LEASE_SECONDS = 30.0  # renewed every third of that while the socket is open


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


class SharedCounter:
    """Per-IP counts every process adds to, kept by the shared broadcast. Addresses go there
    only as keyed hashes (HMAC with the secret key), never as they are."""

    def __init__(self, broadcast: Broadcast, secret: str) -> None:
        self.broadcast = broadcast
        self._secret = secret.encode()

    def key(self, kind: str, ip: str) -> str:
        digest = hmac.new(self._secret, ip.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{kind}:{digest}"

    async def hold(self, key: str, member: str, hold: bool) -> int | None:
        """Hold or give up a socket's lease; the leases held under `key` in every process, or
        None when the broadcast is away."""
        try:
            return await self.broadcast.lease(key, member, SOCKET_LEASE_SECONDS, hold)
        except BroadcastUnavailable:
            return None

    async def add(self, kind: str, ip: str, amount: float, window: float) -> float | None:
        """The shared total after adding; None when the broadcast is away (then the limits of
        this process alone apply)."""
        try:
            return await self.broadcast.count(self.key(kind, ip), amount, window)
        except BroadcastUnavailable:
            return None


@dataclass(eq=False)
class Ticket:
    """One admitted (or refused) socket: what to give back when it closes."""

    ip: str | None
    session: str
    refused: str | None = None
    leases: list[tuple[str, str]] = field(default_factory=list)  # (key, member) held


class Limits:
    def __init__(self, settings: Settings, shared: SharedCounter | None = None) -> None:
        self.settings = settings
        self.shared = shared
        self._process = secrets.token_hex(6)
        self._serial = itertools.count(1)
        self._tickets: set[Ticket] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._pending: dict[str, float] = {}  # IP -> message cost not yet added to the shared
        self._flush: asyncio.Task[None] | None = None
        self._over: OrderedDict[str, float] = OrderedDict()  # IP -> refused until (monotonic)
        self._ip_buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._ip_sockets: Counter[str] = Counter()
        self._session_sockets: Counter[str] = Counter()
        self._conversations: OrderedDict[str, deque[float]] = OrderedDict()
        self._sign_in_ips: OrderedDict[str, TokenBucket] = OrderedDict()
        per_second = settings.staff_sign_ins_per_second
        burst = max(1, round(2 * per_second))  # bursts of 2N, refilled at N a second
        self._sign_in_overall = TokenBucket(burst, burst / per_second)
        # device id -> (failed attempts in a row, monotonic time of the last one)
        self._devices: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._consents: OrderedDict[str, TokenBucket] = OrderedDict()

    def exempt(self, ip: str | None) -> bool:
        return self.settings.is_exempt(ip)

    def socket_bucket(self, staff: bool) -> TokenBucket:
        capacity = self.settings.staff_rate_messages if staff else self.settings.rate_messages
        return TokenBucket(capacity, self.settings.rate_window_seconds)

    def allow_from_ip(self, ip: str | None, cost: float) -> bool:
        """The IP's shared bucket, across all its sockets (and, with a shared broadcast, all
        processes)."""
        if ip is None or self.exempt(ip):
            return True
        if self.shared is not None:
            if self._over.get(ip, 0.0) > time.monotonic():
                return False
            self._note(ip, cost)
        bucket = self._ip_buckets.get(ip)
        if bucket is None:
            bucket = TokenBucket(self.settings.ip_rate_messages, self.settings.rate_window_seconds)
            self._ip_buckets[ip] = bucket
            if len(self._ip_buckets) > MAX_TRACKED_IPS:
                self._ip_buckets.popitem(last=False)
        else:
            self._ip_buckets.move_to_end(ip)
        return bucket.take(cost)

    def _note(self, ip: str, cost: float) -> None:
        self._pending[ip] = self._pending.get(ip, 0.0) + cost
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._add_pending())

    async def _add_pending(self) -> None:
        assert self.shared is not None
        window = self.settings.rate_window_seconds
        while self._pending:
            ip, cost = self._pending.popitem()
            total = await self.shared.add("rate", ip, cost, window)
            if total is not None and total > self.settings.ip_rate_messages:
                self._over[ip] = time.monotonic() + window
                self._over.move_to_end(ip)
                if len(self._over) > MAX_TRACKED_IPS:
                    self._over.popitem(last=False)

    async def _shared_within(self, kind: str, ip: str | None, limit: int, window: float) -> bool:
        if self.shared is None or ip is None or self.exempt(ip):
            return True
        total = await self.shared.add(kind, ip, 1, window)
        return total is None or total <= limit

    async def admit_conversation(self, ip: str | None) -> bool:
        """allow_new_conversation, and the same limit across processes."""
        return self.allow_new_conversation(ip) and await self._shared_within(
            "conversations", ip, self.settings.new_conversations_per_ip_hour, 3600)

    async def admit_consent(self, ip: str | None) -> bool:
        """allow_consent, and the same limit across processes."""
        return self.allow_consent(ip) and await self._shared_within(
            "consents", ip, self.settings.consents_per_ip_hour, 3600)

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

    async def admit_socket(self, ip: str | None, session: str) -> Ticket:
        """open_socket, and the same limits across processes; `refused` says why not. An
        admitted ticket goes back through release_socket."""
        ticket = Ticket(ip, session, refused=self.open_socket(ip, session))
        if ticket.refused or self.shared is None or self.exempt(ip):
            return ticket
        member = f"{self._process}:{next(self._serial)}"
        checks = [("session-sockets", session, self.settings.max_sockets_per_session,
                   "Too many open chat windows for this session.")]
        if ip is not None:
            checks.append(("sockets", ip, self.settings.max_sockets_per_ip,
                           "Too many open connections from your address."))
        for kind, who, limit, reason in checks:
            key = self.shared.key(kind, who)
            held = await self.shared.hold(key, member, True)
            if held is None:  # the broadcast is away: this process's counts alone decide
                continue
            ticket.leases.append((key, member))
            if held > limit:
                await self.release_socket(ticket)
                ticket.refused = reason
                return ticket
        if ticket.leases:
            self._tickets.add(ticket)
            if self._renewer is None or self._renewer.done():
                self._renewer = asyncio.get_running_loop().create_task(self._renew())
        return ticket

    async def release_socket(self, ticket: Ticket) -> None:
        self.close_socket(ticket.ip, ticket.session)
        self._tickets.discard(ticket)
        leases, ticket.leases = ticket.leases, []
        if self.shared is not None:
            for key, member in leases:
                await self.shared.hold(key, member, False)

    async def _renew(self) -> None:
        assert self.shared is not None
        while self._tickets:
            await asyncio.sleep(SOCKET_LEASE_SECONDS / 3)
            for ticket in list(self._tickets):
                for key, member in ticket.leases:
                    await self.shared.hold(key, member, True)

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._renewer

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

    # -- staff sign-in ----------------------------------------------------------------------

    async def admit_sign_in(self, ip: str | None) -> str | None:
        """sign_in_refused, and the same limits across processes: "address" or "overall" when
        over one, else None."""
        refused = self.sign_in_refused(ip)
        if refused or self.shared is None or self.exempt(ip):
            return refused
        if ip is not None and not await self._shared_within(
                "sign-ins", ip, self.settings.staff_sign_ins_per_ip, SIGN_IN_PER_IP_WINDOW):
            return "address"
        # Everyone together: the bucket's burst per the time it takes to refill, as a window.
        per_second = self.settings.staff_sign_ins_per_second
        burst = max(1, round(2 * per_second))
        total = await self.shared.add("sign-ins-overall", "everyone", 1, burst / per_second)
        if total is not None and total > burst:
            return "overall"
        return None

    def sign_in_refused(self, ip: str | None) -> str | None:
        """Charge a sign-in attempt from a browser the account does not know: "address" or
        "overall" when over that limit, else None. Known browsers are not charged."""
        if self.exempt(ip):
            return None
        if ip is not None:
            bucket = self._sign_in_ips.get(ip)
            if bucket is None:
                bucket = TokenBucket(self.settings.staff_sign_ins_per_ip, SIGN_IN_PER_IP_WINDOW)
                self._sign_in_ips[ip] = bucket
                if len(self._sign_in_ips) > MAX_TRACKED_IPS:
                    self._sign_in_ips.popitem(last=False)
            else:
                self._sign_in_ips.move_to_end(ip)
            if not bucket.take():
                return "address"
        if not self._sign_in_overall.take():
            return "overall"
        return None

    def device_wait(self, device: str) -> float:
        """Seconds a known browser must still wait after its own failed attempts (0: none).
        Its failures count against it alone, with the growing delay accounts have."""
        failed, last = self._devices.get(device, (0, 0.0))
        return max(0.0, last + login_delay(failed) - time.monotonic()) if failed else 0.0

    def device_failed(self, device: str) -> None:
        failed, _ = self._devices.pop(device, (0, 0.0))
        self._devices[device] = (failed + 1, time.monotonic())
        if len(self._devices) > MAX_TRACKED_DEVICES:
            self._devices.popitem(last=False)

    def device_succeeded(self, device: str) -> None:
        self._devices.pop(device, None)
