"""The client's address and scheme behind trusted reverse proxies (CHATSERVER_TRUSTED_PROXIES).

Anyone can send `X-Forwarded-For: 1.2.3.4`. The header is believed only when the connection comes
from a proxy the operator named; then the client is the right-most address in the chain that is
not itself a trusted proxy (the left part of the header is whatever the client sent, and a client
can write anything there). `X-Real-IP` is the fallback for proxies that send only that, and
`X-Forwarded-Proto` gives the scheme the browser used (https behind a TLS-terminating proxy).
From any other peer these headers change nothing: the client is the peer.

uvicorn's own proxy-header handling (FORWARDED_ALLOW_IPS, which trusts loopback by default) is
switched off by `chatserver serve`, so this is the one place that decides.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
FORWARDED_HEADERS = (b"x-forwarded-for", b"x-real-ip", b"forwarded", b"x-forwarded-proto")


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def within(ip: str | None, networks: Iterable[Network]) -> bool:
    """Whether `ip` (text, maybe not an address at all) lies in one of `networks`."""
    address = _address(ip) if ip else None
    return address is not None and any(address in net for net in networks)


def client_from(forwarded_for: str, real_ip: str, trusted: tuple[Network, ...]) -> str | None:
    """The client address a trusted proxy reports, or None when it reports none usable."""
    chain = [_address(part) for part in forwarded_for.split(",")] if forwarded_for else []
    found = None
    for address in reversed(chain):
        if address is None:
            break  # garbage from here leftwards: the last good hop is the best we know
        found = address
        if not any(address in net for net in trusted):
            break
    if found is None and real_ip:
        found = _address(real_ip)
    return str(found) if found is not None else None


class TrustedProxies:
    """ASGI middleware: rewrites `client` and `scheme` from forwarded headers, for trusted peers."""

    def __init__(self, app: ASGIApp, trusted: tuple[Network, ...]) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in {"http", "websocket"}:
            client = scope.get("client")
            peer = client[0] if client else None
            through = self.trusted and within(peer, self.trusted)
            scope["chatserver.proxied"] = bool(through)
            if through:
                self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> None:
        headers = {k: v.decode("latin-1") for k, v in scope["headers"] if k in FORWARDED_HEADERS}
        client = client_from(headers.get(b"x-forwarded-for", ""), headers.get(b"x-real-ip", ""),
                             self.trusted)
        if client is not None:
            scope["client"] = (client, 0)
        proto = headers.get(b"x-forwarded-proto", "").split(",")[-1].strip().lower()
        if proto in {"http", "https", "ws", "wss"}:
            secure = proto in {"https", "wss"}
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = "https" if secure else "http"


def sent_through_unknown_proxy(scope: Scope) -> bool:
    """A request that names a forwarded client but came from a peer not trusted as a proxy: a
    proxy we do not know may be relaying it for anyone, so its peer address says nothing."""
    if scope.get("chatserver.proxied"):
        return False
    return any(k in FORWARDED_HEADERS[:3] for k, _ in scope["headers"])
