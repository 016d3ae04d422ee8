"""Staff sign-in: the cookie's name under HTTPS, throttles that a stranger cannot turn against the
account's owner, and an overall bound on attempts."""

from __future__ import annotations

import httpx

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
