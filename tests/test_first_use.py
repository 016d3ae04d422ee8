"""A new operator's, agent's and customer's first day: the stumbles a newcomer met, each pinned."""

from __future__ import annotations

import re

import httpx

from .support import STAFF_PASSWORD, Server

HTML = {"Accept": "text/html"}
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def _client(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=10)


# -- the sign-in page is where people look for it -----------------------------------------------


async def test_login_and_a_reloaded_sign_in_form_show_the_sign_in_page(server: Server) -> None:
    """`/login` and a GET of `/staff/login` (a reload after a failed sign-in) show the form."""
    async with _client(server) as client:
        for path in ("/login", "/staff/login"):
            response = await client.get(path, headers=HTML)
            assert response.status_code == 200, path
            assert 'action="/staff/login"' in response.text, path
            assert CSRF_RE.search(response.text), path
            assert response.headers["cache-control"] == "no-store"

        # A failed sign-in, then the reload the browser does as a GET: the form again.
        token = CSRF_RE.search((await client.get("/login", headers=HTML)).text)
        assert token is not None
        failed = await client.post("/staff/login", data={
            "csrf_token": token.group(1), "username": "agent", "password": "wrong password!!"})
        assert failed.status_code == 401
        again = await client.get("/staff/login", headers=HTML)
        assert again.status_code == 200 and 'name="password"' in again.text


async def test_login_page_keeps_a_local_next_and_refuses_others(server: Server) -> None:
    """`/login?next=/admin` signs in towards the console; an off-site next falls back to /agent."""
    async with _client(server) as client:
        page = await client.get("/login", params={"next": "/admin"}, headers=HTML)
        assert 'name="next" value="/admin"' in page.text
        assert "Admin sign-in" in page.text
        evil = await client.get("/login", params={"next": "//evil.example"}, headers=HTML)
        assert 'name="next" value="/agent"' in evil.text


async def test_login_page_when_signed_in_goes_where_the_user_was_going(server: Server) -> None:
    """Signed in already, `/login` redirects (303) to next, or to /agent."""
    async with _client(server) as client:
        ok = await client.post("/api/staff/login",
                               json={"username": "admin", "password": STAFF_PASSWORD})
        assert ok.status_code == 200
        plain = await client.get("/login")
        assert plain.status_code == 303 and plain.headers["location"] == "/agent"
        onward = await client.get("/staff/login", params={"next": "/admin"})
        assert onward.status_code == 303 and onward.headers["location"] == "/admin"
