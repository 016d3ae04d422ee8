"""How `chatserver serve` holds connections: deadlines, caps and the open-file limit.

uvicorn on its own times out only an idle keep-alive after a response: a connection that sends
nothing, or sends its headers a byte every few seconds, stays open for ever, and a few hundred
of them (or a few thousand, past the open-file limit) stop the server accepting anyone. So each
HTTP connection here gets:

- a header deadline: a request's headers must be complete within CHATSERVER_HEADER_TIMEOUT_SECONDS
  of the connection opening or of the previous response, however they trickle in;
- a body deadline: once the headers are in, the body within CHATSERVER_BODY_TIMEOUT_SECONDS;
- the keep-alive timeout (CHATSERVER_KEEPALIVE_SECONDS) between requests, as uvicorn does;
- a place under two caps, counted until the socket closes (WebSockets included): all open
  connections (CHATSERVER_MAX_CONNECTIONS, kept below the open-file limit) and those of one
  address (CHATSERVER_MAX_CONNECTIONS_PER_IP; CHATSERVER_TRUSTED_PROXIES and
  CHATSERVER_LIMITS_EXEMPT are exempt, a proxy must cap per client itself). A connection over a
  cap gets an immediate 503 and is closed.

A WebSocket, once upgraded, is the sockets' business (idle timeout, pings, rate limits).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from . import metrics
from .settings import Settings
from .wsprotocol import GuardedWebSocketProtocol

log = logging.getLogger("chatserver.connections")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# asyncio reads each socket with recv(256 KiB) and shrinks the result: with glibc's sliding mmap
# threshold those big short-lived buffers come from the heap and leave it fragmented around the
# small objects every open socket keeps, about 40 KiB of RSS per idle socket (bench/sockets.py:
# 86-95 KiB per visitor socket, 50-53 with 64 KiB reads). A WebSocket frame is at most 64 KiB
# (1009 above), so a larger read buys nothing.
READ_CHUNK = 64 * 1024


def _response(status: str, code: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": code, "message": message}).encode()
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n")
    return head.encode("ascii") + body


BUSY = _response("503 Service Unavailable", "too_many_connections",
                 "The server holds as many connections as it may. Try again shortly.",
                 "Retry-After: 5\r\n")
TOO_SLOW = _response("408 Request Timeout", "request_timeout",
                     "The request did not arrive in time.")


def open_file_limit() -> int | None:
    """Raise the soft open-file limit to the hard one; the soft limit now in force."""
    try:
        import resource
    except ImportError:  # not on this platform: the cap alone applies
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return None if soft == resource.RLIM_INFINITY else int(soft)


@dataclass
class Capacity:
    """The connection cap that fits the open-file limit, and the accept backlog that goes with it.

    Files besides connections (the database with its WAL and shared memory for each reader
    thread, the event loop's own) and connections accepted in one burst before they can be
    refused need descriptors too: a reserve of a quarter of the limit (at least 128) is kept for
    them, and the backlog is half of it (64 to 2048): a smaller backlog makes a burst of new
    connections wait for the kernel's SYN retry, a larger one could outrun the reserve before
    the excess is refused."""

    max_connections: int
    backlog: int

    @classmethod
    def fit(cls, wanted: int, file_limit: int | None) -> Capacity:
        if file_limit is None:
            return cls(wanted, 2048)
        reserve = max(128, file_limit // 4)
        return cls(max(1, min(wanted, file_limit - reserve)), max(64, min(2048, reserve // 2)))


@dataclass
class Gate:
    """Counts open connections, in all and per address, from accept to close."""

    max_connections: int
    max_per_ip: int
    uncapped: tuple[Network, ...] = ()
    per_ip: Counter[str] = field(default_factory=Counter)
    open: dict[int, str] = field(default_factory=dict)  # id(transport) -> address

    def _capped(self, ip: str) -> bool:
        if not ip:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return not any(address in net for net in self.uncapped)

    def admit(self, transport: asyncio.BaseTransport, ip: str) -> str | None:
        """None when the connection may stay (it is counted); else the reason it may not."""
        if len(self.open) >= self.max_connections:
            return "the server's cap (CHATSERVER_MAX_CONNECTIONS)"
        if self._capped(ip) and self.per_ip[ip] >= self.max_per_ip:
            return "one address's cap (CHATSERVER_MAX_CONNECTIONS_PER_IP)"
        self.open[id(transport)] = ip
        self.per_ip[ip] += 1
        return None

    def release(self, transport: asyncio.BaseTransport) -> None:
        ip = self.open.pop(id(transport), None)
        if ip is not None:
            self.per_ip[ip] -= 1
            if self.per_ip[ip] <= 0:
                del self.per_ip[ip]


def gate_for(settings: Settings, capacity: Capacity) -> Gate:
    """The gate for this server: trusted proxies (CHATSERVER_TRUSTED_PROXIES) and the
    limits-exempt networks are not capped per address, only counted."""
    return Gate(capacity.max_connections, settings.max_connections_per_ip,
                uncapped=tuple(settings.trusted_proxies) + tuple(settings.limits_exempt))


@dataclass(frozen=True)
class Deadlines:
    headers: float
    body: float


def protocols(gate: Gate, deadlines: Deadlines) -> tuple[type[H11Protocol],
                                                         type[WebSocketsSansIOProtocol]]:
    """uvicorn's HTTP and WebSocket protocols, held by `gate` and `deadlines`."""

    class GuardedHTTP(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._timer: asyncio.TimerHandle | None = None
            self._phase = ""
            self._refused = False
            self._upgraded = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if hasattr(transport, "max_size"):  # asyncio's selector transport (see READ_CHUNK)
                transport.max_size = READ_CHUNK
            super().connection_made(transport)
            reason = gate.admit(transport, self.client[0] if self.client else "")
            if reason is not None:
                self._refused = True
                metrics.rate_limited("too_many_connections")
                log.warning("refused a connection: it would exceed %s", reason)
                transport.write(BUSY)
                transport.close()
                return
            self._follow()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._phase = ""  # the next request's headers get a deadline of their own
            self._follow()

        def handle_websocket_upgrade(self, event: h11.Request) -> None:
            self._upgraded = True
            self._cancel()
            super().handle_websocket_upgrade(event)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            gate.release(self.transport)
            super().connection_lost(exc)

        def _follow(self) -> None:
            """Arm the deadline that fits where the current request stands."""
            if self._upgraded or self.transport.is_closing():
                self._cancel()
                return
            state = self.conn.their_state
            if state is h11.IDLE:
                if self._phase != "headers":
                    self._arm("headers", deadlines.headers)
            elif state is h11.SEND_BODY:
                if self._phase != "body":
                    self._arm("body", deadlines.body)
            else:  # the request is in: the rest is the application's time
                self._cancel()
                self._phase = "app"

        def _arm(self, phase: str, seconds: float) -> None:
            self._cancel()
            self._phase = phase
            self._timer = self.loop.call_later(seconds, self._expire)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if self._phase == "body":
                slow, answered = True, self.cycle is not None and self.cycle.response_started
            else:
                # Nothing of a request yet is an unused keep-alive or preconnect: closed quietly.
                slow, answered = bool(self.conn.trailing_data[0]), False
            if slow:
                log.info("closed a connection whose request did not arrive within its deadline")
                if not answered:
                    self.transport.write(TOO_SLOW)
            self.transport.close()

    class GuardedWebSocket(GuardedWebSocketProtocol):  # pings charged to the socket's budget
        def connection_lost(self, exc: Exception | None) -> None:
            gate.release(self.transport)
            super().connection_lost(exc)

    return GuardedHTTP, GuardedWebSocket
