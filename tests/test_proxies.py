"""The client address and scheme come from forwarded headers only on connections from a proxy
named in CHATSERVER_TRUSTED_PROXIES; from anyone else the headers change nothing."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from websockets.asyncio.client import connect

from chatserver.proxies import client_from

from .support import Server, Socket, Visitor, cookie_header

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def test_the_client_is_the_right_most_untrusted_address() -> None:
    """What a client wrote into X-Forwarded-For itself is never taken; X-Real-IP is the
    fallback; garbage is not an address."""
    assert client_from("198.51.100.1", "", LOOPBACK) == "198.51.100.1"
    assert client_from("203.0.113.9, 198.51.100.1", "", LOOPBACK) == "198.51.100.1"
    assert client_from("198.51.100.1, 127.0.0.5", "", LOOPBACK) == "198.51.100.1"
    assert client_from("", "198.51.100.2", LOOPBACK) == "198.51.100.2"
    assert client_from("not-an-address", "", LOOPBACK) is None
    assert client_from("2001:db8::1", "", LOOPBACK) == "2001:db8::1"
    assert client_from("[2001:db8::1]:443", "", LOOPBACK) == "2001:db8::1"
    assert client_from("127.0.0.2", "", LOOPBACK) == "127.0.0.2"  # only proxies: the first


async def _recorded_ip(server: Server, headers: dict[str, str]) -> set[str]:
    v = Visitor(server)
    v.http.headers.update(headers)
    await v.start(name="Proxied", email="proxied@example.com")
    ws = await connect(server.ws_url + "/ws/visitor",
                       additional_headers={"Cookie": cookie_header(v.http), **headers})
    socket = Socket(ws)
    await socket.wait_type("welcome")
    await socket.close()
    export = (await v.http.get("/api/me/export")).json()
    await v.aclose()
    return {r["ip"] for r in export["access_records"]}


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    make_server: Callable[..., Server],
) -> None:
    """With no trusted proxy (the default), X-Forwarded-For, X-Real-IP and X-Forwarded-Proto
    from a client change neither its recorded address nor the scheme."""
    server = make_server(CHATSERVER_TRUSTED_PROXIES="")
    spoofed = {"X-Forwarded-For": "198.51.100.23", "X-Real-IP": "198.51.100.24",
               "X-Forwarded-Proto": "https"}
    assert await _recorded_ip(server, spoofed) == {"127.0.0.1"}
    async with Visitor(server).http as http:
        page = await http.get("/widget", headers=spoofed)
    assert "strict-transport-security" not in page.headers


async def test_forwarded_headers_from_a_trusted_proxy_are_used(
    make_server: Callable[..., Server],
) -> None:
    """From a trusted proxy the recorded address is the forwarded client's (X-Real-IP when
    there is no X-Forwarded-For) and X-Forwarded-Proto sets the scheme."""
    server = make_server(CHATSERVER_TRUSTED_PROXIES="127.0.0.1")
    chain = {"X-Forwarded-For": "203.0.113.66, 198.51.100.23"}
    assert await _recorded_ip(server, chain) == {"198.51.100.23"}
    assert await _recorded_ip(server, {"X-Real-IP": "198.51.100.24"}) == {"198.51.100.24"}
    async with Visitor(server).http as http:  # (Secure cookies would not come back over http)
        page = await http.get("/widget", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" in page.headers
