"""Attacks on a running server: headers, HTTPS cookies, CSRF, socket and conversation caps,
per-IP rates, idle sockets and idle staff sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from websockets.asyncio.client import connect

from .support import STAFF_PASSWORD, Agent, Server, Socket, Visitor, cookie_header

HTTPS = {"X-Forwarded-Proto": "https"}  # the server trusts forwarded headers from 127.0.0.1


async def test_security_headers_on_every_response_errors_included(server: Server) -> None:
    """Pages, JSON, 404, 405 and 413 all carry CSP, nosniff, referrer and framing headers."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        responses = [
            await client.get("/"), await client.get("/api/policy"),
            await client.get("/nowhere"), await client.put("/api/policy"),
            await client.post("/api/consent", content=b"x" * 70000,
                              headers={"Content-Type": "application/json"}),
            await client.get("/widget"), await client.get("/static/site.css"),
            await client.get("/account"),
        ]
    assert [r.status_code for r in responses] == [200, 200, 404, 405, 413, 200, 200, 200]
    for response in responses:
        headers = response.headers
        assert "object-src 'none'" in headers["content-security-policy"]
        assert "base-uri 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert "server" not in headers
        assert "strict-transport-security" not in headers  # plain HTTP here
    page = responses[0]
    for framable in (responses[5], responses[7]):  # the widget shows the account page in place
        assert "frame-ancestors 'self'" in framable.headers["content-security-policy"]
        assert "x-frame-options" not in framable.headers
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert responses[2].json()["error"] == "not_found"


async def test_https_cookies_and_hsts(server: Server) -> None:
    """Behind TLS: HSTS, a Secure partitioned visitor cookie, and a __Host- staff cookie."""
    async with httpx.AsyncClient(base_url=server.url, headers=HTTPS) as client:
        consent = await client.post("/api/consent", json={"policy_version": "1.01"})
        assert consent.headers["strict-transport-security"].startswith("max-age=")
        visitor_cookie = consent.headers["set-cookie"].lower()
        assert "secure" in visitor_cookie and "partitioned" in visitor_cookie
        login = await client.post("/api/staff/login",
                                  json={"username": "agent", "password": STAFF_PASSWORD})
        staff_cookie = login.headers["set-cookie"]
        assert staff_cookie.startswith("__Host-chat_staff=")
        lowered = staff_cookie.lower()
        assert "secure" in lowered and "path=/" in lowered and "domain" not in lowered
        assert "samesite=strict" in lowered and "httponly" in lowered


async def test_cross_site_writes_are_refused(server: Server, admin: Agent, visitor: Visitor
                                             ) -> None:
    """A foreign Origin, or a cross-site fetch without one, cannot change anything."""
    evil = {"Origin": "https://evil.example"}
    cross = {"Sec-Fetch-Site": "cross-site"}
    for headers in (evil, cross):
        for method, path, client in [
            ("POST", "/api/consent", visitor.http), ("PATCH", "/api/me", visitor.http),
            ("DELETE", "/api/me", visitor.http), ("POST", "/api/consent/withdraw", visitor.http),
            ("POST", "/api/admin/purge", admin.http), ("POST", "/api/staff/logout", admin.http),
            ("POST", "/staff/logout", admin.http), ("POST", "/api/admin/staff", admin.http),
        ]:
            response = await client.request(method, path, json={}, headers=headers)
            assert response.status_code == 403, (method, path, headers)
            assert response.json()["error"] == "origin_not_allowed"
    assert (await visitor.http.get("/api/me")).status_code == 200  # nothing happened
    assert (await admin.http.get("/api/staff/me")).status_code == 200
    same = await visitor.http.patch("/api/me", json={"company": "Same Origin Ltd"},
                                    headers={"Origin": server.url,
                                             "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200


async def test_allowed_embedding_origin_may_write(make_server: Callable[..., Server]) -> None:
    """An origin in CHATSERVER_ALLOWED_ORIGINS is not foreign; a look-alike is."""
    server = make_server(CHATSERVER_ALLOWED_ORIGINS="https://shop.example")
    async with httpx.AsyncClient(base_url=server.url) as client:
        ok = await client.post("/api/consent", json={"policy_version": "1.01"},
                               headers={"Origin": "https://shop.example",
                                        "Sec-Fetch-Site": "cross-site"})
        assert ok.status_code == 200
        bad = await client.post("/api/consent", json={"policy_version": "1.01"},
                                headers={"Origin": "https://shop.example.evil.com"})
        assert bad.status_code == 403


async def test_socket_caps_per_session_and_new_conversations_per_ip(
    make_server: Callable[..., Server],
) -> None:
    """Past the per-session socket cap and the hourly new-conversation cap: error, then 4429."""
    server = make_server(CHATSERVER_MAX_SOCKETS_PER_SESSION="2",
                         CHATSERVER_NEW_CONVERSATIONS_PER_IP_HOUR="2")
    v = await Visitor(server).start()
    first, second = await v.socket(), await v.socket()
    for s in (first, second):
        await s.wait_type("welcome")
    third = await v.socket()
    assert await third.closed_code() == 4429
    assert third.frames[0]["code"] == "too_many_sockets"
    await first.close()
    await second.close()

    # v made one conversation; one more is allowed from this IP this hour, not two.
    others = [await Visitor(server).start() for _ in range(2)]
    allowed = await others[0].socket()
    await allowed.wait_type("welcome")
    refused = await others[1].socket()
    assert await refused.closed_code() == 4429
    assert refused.frames[0]["code"] == "rate_limited"
    # Returning to an open conversation is never refused.
    back = await v.socket()
    await back.wait_type("welcome")
    for s in (allowed, back):
        await s.close()
    for c in (v, *others):
        await c.aclose()


async def test_per_ip_rate_spans_sockets(make_server: Callable[..., Server]) -> None:
    """Several sockets from one IP share the IP's bucket: spreading a flood does not help."""
    server = make_server(CHATSERVER_RATE_MESSAGES="100", CHATSERVER_IP_RATE_MESSAGES="6",
                         CHATSERVER_RATE_WINDOW_SECONDS="600")
    sockets, visitors = [], []
    for _ in range(3):
        v = await Visitor(server).start()
        s = await v.socket()
        await s.wait_type("welcome")
        sockets.append(s)
        visitors.append(v)
    for n in range(3):
        for s in sockets:
            await s.send({"type": "message", "body": "x", "client_msg_id": f"m{n}"})
    codes = [await s.closed_code() for s in sockets]
    assert 4429 in codes
    acked = sum(1 for s in sockets for f in s.frames if f["type"] == "ack")
    assert acked == 6
    for s in sockets:
        await s.close()
    for v in visitors:
        await v.aclose()


async def test_silent_socket_is_closed_1001(make_server: Callable[..., Server]) -> None:
    """A socket that sends nothing past the idle limit is closed with 1001."""
    server = make_server(CHATSERVER_SOCKET_IDLE_SECONDS="1")
    v = await Visitor(server).start()
    s = await v.socket()
    await s.wait_type("welcome")
    assert await s.closed_code(timeout=10) == 1001
    await v.aclose()


async def test_idle_staff_session_ends(make_server: Callable[..., Server]) -> None:
    """A staff sign-in unused past CHATSERVER_STAFF_IDLE_MINUTES is no longer accepted."""
    server = make_server(CHATSERVER_STAFF_IDLE_MINUTES="0.02")  # 1.2 seconds
    server.add_staff("sleepy", "agent")
    sleepy = await Agent(server, "sleepy").login()
    deadline = asyncio.get_running_loop().time() + 10
    status = 200
    while status == 200 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.3)
        status = (await sleepy.http.get("/api/staff/me")).status_code
    assert status == 401
    socket = await sleepy.socket()
    assert await socket.closed_code() == 4401
    await sleepy.aclose()


async def test_forwarded_client_ip_is_recorded(server: Server, admin: Agent) -> None:
    """Behind a trusted proxy the access records hold the client's address, not the proxy's."""
    v = Visitor(server)
    v.http.headers["X-Forwarded-For"] = "198.51.100.23"
    await v.start(name="Proxied", email="proxied@example.com")
    ws = await connect(server.ws_url + "/ws/visitor",
                       additional_headers={"Cookie": cookie_header(v.http),
                                           "X-Forwarded-For": "198.51.100.23"})
    s = Socket(ws)
    await s.wait_type("welcome")
    await s.close()
    export = (await v.http.get("/api/me/export")).json()
    assert {r["ip"] for r in export["access_records"]} == {"198.51.100.23"}
    await v.aclose()
