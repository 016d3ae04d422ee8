"""Staff sign-in: the cookie's name under HTTPS, throttles that a stranger cannot turn against the
account's owner, and an overall bound on attempts."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable

import httpx

from chatserver.storage.base import iso, utc_now

from .support import STAFF_PASSWORD, Server

HTTPS = {"X-Forwarded-Proto": "https"}  # the server trusts forwarded headers from 127.0.0.1


def _cookie_value(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0].split("=", 1)[1]


async def test_under_https_only_the_host_prefixed_staff_cookie_counts(server: Server) -> None:
    """Under HTTPS the sign-in is read from `__Host-chat_staff` only: the same value under the
    plain name, which a sibling subdomain or a plain-HTTP answer could plant, is no sign-in."""
    async with httpx.AsyncClient(base_url=server.url, headers=HTTPS) as client:
        login = await client.post("/api/staff/login",
                                  json={"username": "agent", "password": STAFF_PASSWORD})
        assert login.status_code == 200
        value = _cookie_value(login.headers["set-cookie"])
        client.cookies.clear()
        good = await client.get("/api/staff/me", headers={"Cookie": f"__Host-chat_staff={value}"})
        assert good.status_code == 200
        planted = await client.get("/api/staff/me", headers={"Cookie": f"chat_staff={value}"})
        assert planted.status_code == 401
    async with httpx.AsyncClient(base_url=server.url) as plain:  # plain HTTP: the plain name
        login = await plain.post("/api/staff/login",
                                 json={"username": "agent", "password": STAFF_PASSWORD})
        value = _cookie_value(login.headers["set-cookie"])
        assert login.headers["set-cookie"].startswith("chat_staff=")
        plain.cookies.clear()
        assert (await plain.get("/api/staff/me",
                                headers={"Cookie": f"chat_staff={value}"})).status_code == 200
        assert (await plain.get("/api/staff/me", headers={
            "Cookie": f"__Host-chat_staff={value}"})).status_code == 401


async def _login(client: httpx.AsyncClient, name: str, password: str = STAFF_PASSWORD
                 ) -> httpx.Response:
    return await client.post("/api/staff/login", json={"username": name, "password": password})


def _outcomes(server: Server, name: str) -> list[str]:
    rows = server.query("SELECT outcome FROM login_events WHERE staff_id = (SELECT id FROM staff "
                        "WHERE name = ?) ORDER BY id", name)
    return [r[0] for r in rows]


async def test_a_strangers_failures_do_not_lock_the_owner_out(
    make_server: Callable[..., Server],
) -> None:
    """A stranger's failures put the account's delay on strangers only: the owner, in the
    browser they signed in from before, gets in with the right password at once."""
    server = make_server()
    server.add_staff("owner", "admin")
    async with httpx.AsyncClient(base_url=server.url) as own, \
            httpx.AsyncClient(base_url=server.url) as stranger:
        first = await _login(own, "owner")
        assert first.status_code == 200
        assert any(c.name == "chat_staff_device" for c in own.cookies.jar)
        assert (await own.post("/api/staff/logout")).status_code == 200
        unknown = await _login(stranger, "nobody", "x" * 12)
        for _ in range(5):
            wrong = await _login(stranger, "owner", "not the password")
            assert wrong.status_code == 401 and wrong.json() == unknown.json()
        # As if the stranger kept it up for a while: twelve failures, the last one now, and a
        # delay of minutes (one wrong attempt every 15 minutes would keep it up for good).
        server.query("UPDATE staff SET failed_logins = 12, last_failed_at = ? "
                     "WHERE name = 'owner'", iso(utc_now()))
        refused = await _login(stranger, "owner")
        assert refused.status_code == 401 and refused.json() == unknown.json()
        back = await _login(own, "owner")
        assert back.status_code == 200, back.text
    assert _outcomes(server, "owner") == ["success", *["bad_password"] * 5, "throttled",
                                          "success"]


async def test_a_known_browser_is_throttled_by_its_own_failures(
    make_server: Callable[..., Server],
) -> None:
    """A browser that signed in before is held to the same growing delay by its own failures,
    with the same answer as anyone; its failures do not delay the account elsewhere."""
    server = make_server()
    server.add_staff("typo", "agent")
    async with httpx.AsyncClient(base_url=server.url) as own, \
            httpx.AsyncClient(base_url=server.url) as elsewhere:
        assert (await _login(own, "typo")).status_code == 200
        unknown = await _login(elsewhere, "nobody", "x" * 12)
        for _ in range(5):  # five free failures; the browser then waits a second, and more
            wrong = await _login(own, "typo", "not the password")
            assert wrong.status_code == 401 and wrong.json() == unknown.json()
        refused = await _login(own, "typo")
        assert refused.status_code == 401 and refused.json() == unknown.json()
        assert (await _login(elsewhere, "typo")).status_code == 200
    assert _outcomes(server, "typo") == ["success", *["bad_password"] * 5, "throttled",
                                         "success"]


async def test_sign_in_attempts_per_address_are_limited(make_server: Callable[..., Server]
                                                        ) -> None:
    """Past CHATSERVER_STAFF_SIGN_INS_PER_IP attempts an address gets 429 at once, for any name
    alike; a browser that signed in to its account before still gets in from that address."""
    server = make_server(CHATSERVER_STAFF_SIGN_INS_PER_IP="4")
    server.add_staff("busy", "agent")
    async with httpx.AsyncClient(base_url=server.url) as known, \
            httpx.AsyncClient(base_url=server.url) as guesser:
        assert (await _login(known, "busy")).status_code == 200  # the 1st attempt
        for name in ("busy", "nobody", "busy"):  # the 2nd to 4th
            assert (await _login(guesser, name, "wrong password")).status_code == 401
        for name in ("busy", "nobody"):
            limited = await _login(guesser, name, "wrong password")
            assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
        right = await _login(guesser, "busy")
        assert right.status_code == 429
        page = await guesser.get("/agent", headers={"Accept": "text/html"})
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        form = await guesser.post("/staff/login", data={
            "csrf_token": token.group(1), "username": "busy", "password": STAFF_PASSWORD})
        assert form.status_code == 429 and "Too many sign-in attempts" in form.text
        assert (await _login(known, "busy")).status_code == 200
    # Refused before any password check: nothing of them was stored against the account.
    assert _outcomes(server, "busy") == ["success", "bad_password", "bad_password", "success"]


async def test_a_flood_of_sign_ins_is_bounded_overall(make_server: Callable[..., Server]
                                                      ) -> None:
    """Attempts from many addresses together beyond CHATSERVER_STAFF_SIGN_INS_PER_SECOND get
    429 at once instead of queueing for the password check; a browser that signed in before
    gets in meanwhile."""
    server = make_server(CHATSERVER_STAFF_SIGN_INS_PER_SECOND="1")
    server.add_staff("calm", "agent")
    async with httpx.AsyncClient(base_url=server.url) as known:
        assert (await _login(known, "calm")).status_code == 200

        async def attempt(n: int) -> int:
            transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{n}")
            async with httpx.AsyncClient(base_url=server.url, transport=transport) as client:
                return (await _login(client, "calm", "wrong password")).status_code

        flood = [asyncio.create_task(attempt(n)) for n in range(2, 26)]
        started = time.monotonic()
        during = await _login(known, "calm")
        took = time.monotonic() - started
        codes = await asyncio.gather(*flood)
    assert during.status_code == 200
    assert codes.count(429) >= 15 and set(codes) <= {401, 429}
    assert took < 10
