"""Staff sign-in and sign-out (API and HTML form), login records, first-admin setup, user CLI."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from .support import STAFF_PASSWORD, Agent, Server, cookie_header, open_socket

HTML = {"Accept": "text/html"}
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def _client(server: Server, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=10, **kw)


def _set_cookie_names(response: httpx.Response) -> set[str]:
    return {h.split("=", 1)[0].strip() for h in response.headers.get_list("set-cookie")}


def _cookie_value(response: httpx.Response, name: str) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        got, _, rest = header.partition("=")
        if got.strip() == name:
            return rest.split(";", 1)[0]
    return None


def _csrf(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "no csrf_token hidden field in the page"
    return found.group(1)


async def _login_form(client: httpx.AsyncClient) -> str:
    """Open the signed-out agent page; the form's CSRF token (its cookie is now in the client)."""
    response = await client.get("/agent", headers=HTML)
    assert response.status_code == 200
    return _csrf(response.text)


def _query(server: Server, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return server.query(sql, *args)


# -- the JSON API ------------------------------------------------------------------------------


async def test_api_login_success_sets_staff_cookie(server: Server) -> None:
    """A correct name and password answer the staff record and set an HttpOnly chat_staff cookie."""
    async with _client(server) as client:
        response = await client.post("/api/staff/login",
                                     json={"username": "agent", "password": STAFF_PASSWORD})
        assert response.status_code == 200, response.text
        staff = response.json()["staff"]
        assert staff["name"] == "agent" and staff["role"] == "agent"
        assert staff["state"] == "active" and isinstance(staff["id"], int)
        assert "password_hash" not in response.text
        header = next(h for h in response.headers.get_list("set-cookie")
                      if h.startswith("chat_staff="))
        lowered = header.lower()
        assert "httponly" in lowered and "path=/" in lowered and "samesite=" in lowered
        # Every sign-in gets a fresh session id, even with a session cookie already present.
        again = await client.post("/api/staff/login",
                                  json={"username": "agent", "password": STAFF_PASSWORD})
        assert _cookie_value(again, "chat_staff") not in {None, _cookie_value(response,
                                                                              "chat_staff")}


async def test_api_login_failures_look_the_same(server: Server) -> None:
    """A wrong password and an unknown user both get 401 invalid_credentials with the same body."""
    async with _client(server) as client:
        wrong = await client.post("/api/staff/login",
                                  json={"username": "agent", "password": "not the password"})
        unknown = await client.post("/api/staff/login",
                                    json={"username": f"nobody-{uuid.uuid4().hex[:8]}",
                                          "password": STAFF_PASSWORD})
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json()["error"] == "invalid_credentials"
        assert wrong.content == unknown.content
        assert "chat_staff" not in _set_cookie_names(wrong) | _set_cookie_names(unknown)
        assert (await client.get("/api/staff/me")).status_code == 401


async def test_api_login_refuses_bad_bodies(server: Server) -> None:
    """A login body without text username and password is 422, not a crash."""
    async with _client(server) as client:
        for body in ({}, {"username": "agent"}, {"username": 1, "password": 2}, [1, 2]):
            response = await client.post("/api/staff/login", json=body)
            assert response.status_code == 422, (body, response.text)


async def test_staff_me(server: Server, agent: Agent, admin: Agent) -> None:
    """GET /api/staff/me names the signed-in staff member; without a cookie it is 401."""
    me = await agent.http.get("/api/staff/me")
    assert me.status_code == 200
    assert me.json()["staff"]["name"] == "agent" and me.json()["staff"]["role"] == "agent"
    boss = await admin.http.get("/api/staff/me")
    assert boss.json()["staff"]["name"] == "admin" and boss.json()["staff"]["role"] == "admin"
    async with _client(server) as anonymous:
        response = await anonymous.get("/api/staff/me")
        assert response.status_code == 401
        assert response.json()["error"] == "not_signed_in"


async def test_logout_revokes_session_and_closes_its_socket(server: Server) -> None:
    """Logout ends the session on the server: its socket closes 4401 and the old cookie is dead."""
    agent = await Agent(server, "agent").login()
    other = await Agent(server, "agent").login()  # a second session of the same person
    old_cookie = cookie_header(agent.http)
    socket = await agent.socket()
    await socket.wait_type("queue")
    survivor = await other.socket()
    await survivor.wait_type("queue")

    response = await agent.http.post("/api/staff/logout")
    assert response.status_code == 200
    cleared = next(h for h in response.headers.get_list("set-cookie")
                   if h.startswith("chat_staff="))
    assert "max-age=0" in cleared.lower() or "expires=" in cleared.lower()
    assert await socket.closed_code() == 4401

    async with _client(server, headers={"Cookie": old_cookie}) as replay:
        assert (await replay.get("/api/staff/me")).status_code == 401
        assert (await replay.get("/api/admin/conversations")).status_code == 401
    again = await open_socket(server, "/ws/agent", old_cookie)
    assert await again.closed_code() == 4401

    # Only that session ended: the other one still works.
    assert (await other.http.get("/api/staff/me")).status_code == 200
    await survivor.send({"type": "ping"})
    await survivor.wait_type("pong")
    await survivor.close()
    await agent.aclose()
    await other.aclose()


# -- the HTML form -----------------------------------------------------------------------------


async def test_signed_out_agent_page_is_a_login_form(server: Server) -> None:
    """GET /agent signed out shows a sign-in form with a CSRF field and sets chat_csrf."""
    async with _client(server) as client:
        response = await client.get("/agent", headers=HTML)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert 'action="/staff/login"' in response.text
        assert 'name="password"' in response.text
        assert _csrf(response.text)
        assert "chat_csrf" in _set_cookie_names(response)
        assert "chat_staff" not in _set_cookie_names(response)
        assert response.headers.get("cache-control") == "no-store"


async def test_form_login_without_or_with_wrong_csrf_is_403(server: Server) -> None:
    """POST /staff/login without the CSRF token, or with a wrong one, is 403 and signs no one in."""
    async with _client(server) as client:
        await _login_form(client)
        creds = {"username": "agent", "password": STAFF_PASSWORD}
        missing = await client.post("/staff/login", data=creds)
        assert missing.status_code == 403
        assert "chat_staff" not in _set_cookie_names(missing)

        await _login_form(client)
        wrong = await client.post("/staff/login", data={**creds, "csrf_token": "forged.token"})
        assert wrong.status_code == 403
        assert "chat_staff" not in _set_cookie_names(wrong)

        # A genuine token from another browser does not match this browser's cookie either.
        async with _client(server) as elsewhere:
            foreign = await _login_form(elsewhere)
        await _login_form(client)
        crossed = await client.post("/staff/login", data={**creds, "csrf_token": foreign})
        assert crossed.status_code == 403
        assert "chat_staff" not in _set_cookie_names(crossed)

    # A right token without the chat_csrf cookie is refused too.
    async with _client(server) as fresh:
        token = await _login_form(fresh)
        fresh.cookies.clear()
        bare = await fresh.post("/staff/login", data={**creds, "csrf_token": token})
        assert bare.status_code == 403
        assert "chat_staff" not in _set_cookie_names(bare)


async def test_form_login_with_csrf_redirects_to_agent(server: Server) -> None:
    """With the right CSRF token and password the form redirects (303) to /agent, signed in."""
    async with _client(server) as client:
        token = await _login_form(client)
        response = await client.post("/staff/login", data={"csrf_token": token,
                                                           "username": "agent",
                                                           "password": STAFF_PASSWORD})
        assert response.status_code == 303
        assert response.headers["location"] == "/agent"
        assert _cookie_value(response, "chat_staff")
        assert (await client.get("/api/staff/me")).json()["staff"]["name"] == "agent"
        dashboard = await client.get("/agent", headers=HTML)
        assert dashboard.status_code == 200 and 'action="/staff/login"' not in dashboard.text


async def test_form_login_with_wrong_password_stays_on_the_form(server: Server) -> None:
    """A wrong password on the form answers 401 with the form again and no staff cookie."""
    async with _client(server) as client:
        token = await _login_form(client)
        response = await client.post("/staff/login", data={"csrf_token": token,
                                                           "username": "agent",
                                                           "password": "wrong password!!"})
        assert response.status_code == 401
        assert "chat_staff" not in _set_cookie_names(response)
        assert _csrf(response.text)


async def test_form_login_next_is_never_an_open_redirect(server: Server) -> None:
    """`next` pointing off-site redirects to /agent instead; a local path is honoured."""
    cases = {
        "//evil.example": "/agent",
        "https://evil.example": "/agent",
        "http://evil.example/agent": "/agent",
        "/\\evil.example": "/agent",
        "\\\\evil.example": "/agent",
        "javascript:alert(1)": "/agent",
        "/admin": "/admin",
    }
    for next_path, expected in cases.items():
        async with _client(server) as client:
            token = await _login_form(client)
            response = await client.post("/staff/login", data={
                "csrf_token": token, "username": "admin", "password": STAFF_PASSWORD,
                "next": next_path,
            })
            assert response.status_code == 303, next_path
            assert response.headers["location"] == expected, next_path


async def test_every_login_attempt_is_recorded(server: Server) -> None:
    """Success, bad password and unknown user each leave a login_events row with IP and agent."""
    user_agent = f"pytest-login-audit/{uuid.uuid4().hex}"
    async with _client(server, headers={"User-Agent": user_agent}) as client:
        ok = await client.post("/api/staff/login",
                               json={"username": "agent2", "password": STAFF_PASSWORD})
        assert ok.status_code == 200
        bad = await client.post("/api/staff/login",
                                json={"username": "agent2", "password": "wrong password"})
        assert bad.status_code == 401
        ghost = await client.post("/api/staff/login",
                                  json={"username": "ghost-" + uuid.uuid4().hex[:6],
                                        "password": STAFF_PASSWORD})
        assert ghost.status_code == 401
        token = await _login_form(client)
        form = await client.post("/staff/login", data={"csrf_token": token, "username": "agent2",
                                                       "password": "still wrong!"})
        assert form.status_code == 401
        staff_id = ok.json()["staff"]["id"]

    rows = _query(server, "SELECT staff_id, ip, user_agent, outcome, at FROM login_events "
                          "WHERE user_agent = ? ORDER BY id", (user_agent,))
    assert [r[3] for r in rows] == ["success", "bad_password", "unknown_user", "bad_password"]
    assert [r[0] for r in rows] == [staff_id, staff_id, None, staff_id]
    for _, ip, agent, _, at in rows:
        assert ip == "127.0.0.1"
        assert agent == user_agent
        assert at


# -- first-admin setup -------------------------------------------------------------------------


async def _setup_token(server: Server) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        found = re.search(r"/setup\?token=(\S+)", server.log())
        if found:
            return found.group(1)
        assert loop.time() < deadline, "no setup link in the log:\n" + server.log()
        await asyncio.sleep(0.05)


async def test_first_admin_setup(make_server: Callable[..., Server]) -> None:
    """A server without staff prints a one-time setup link that creates and signs in the first admin."""
    server = make_server()
    token = await _setup_token(server)

    async with _client(server) as client:
        bad = await client.get("/setup", params={"token": "not-the-token"}, headers=HTML)
        assert bad.status_code == 404
        assert "csrf_token" not in bad.text
        assert (await client.get("/setup", headers=HTML)).status_code == 404

        form = await client.get("/setup", params={"token": token}, headers=HTML)
        assert form.status_code == 200
        assert 'name="password2"' in form.text
        assert form.headers.get("cache-control") == "no-store"
        csrf = _csrf(form.text)

        no_csrf = await client.post("/setup", data={"token": token, "username": "boss",
                                                    "password": "long enough pw", "password2":
                                                    "long enough pw"})
        assert no_csrf.status_code == 403
        assert "chat_staff" not in _set_cookie_names(no_csrf)
        csrf = _csrf(no_csrf.text)

        short = await client.post("/setup", data={"token": token, "csrf_token": csrf,
                                                  "username": "boss", "password": "short",
                                                  "password2": "short"})
        assert short.status_code == 422
        assert "chat_staff" not in _set_cookie_names(short)
        csrf = _csrf(short.text)

        differ = await client.post("/setup", data={"token": token, "csrf_token": csrf,
                                                   "username": "boss",
                                                   "password": "long enough pw",
                                                   "password2": "long enough pX"})
        assert differ.status_code == 422
        csrf = _csrf(differ.text)

        done = await client.post("/setup", data={"token": token, "csrf_token": csrf,
                                                 "username": "boss",
                                                 "password": "long enough pw",
                                                 "password2": "long enough pw"})
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/admin"
        assert _cookie_value(done, "chat_staff")
        me = await client.get("/api/staff/me")
        assert me.json()["staff"] == {**me.json()["staff"], "name": "boss", "role": "admin"}
        listing = await client.get("/api/admin/conversations")
        assert listing.status_code == 200
        assert listing.json()["total"] == 0

    async with _client(server) as replay:
        again = await replay.get("/setup", params={"token": token}, headers=HTML)
        assert again.status_code == 404
        # Even with a fresh CSRF pair, posting the used token creates nobody.
        csrf = _csrf((await replay.get("/agent", headers=HTML)).text)
        reused = await replay.post("/setup", data={"token": token, "csrf_token": csrf,
                                                   "username": "intruder",
                                                   "password": "long enough pw",
                                                   "password2": "long enough pw"})
        assert reused.status_code == 404
        assert "chat_staff" not in _set_cookie_names(reused)

    listed = server.cli("user", "list")
    assert listed.returncode == 0
    assert [line.split() for line in listed.stdout.splitlines()] == [["boss", "admin", "active"]]
    # The one-time token appears once in the log, where it was printed: requests do not log it.
    assert server.log().count(token) == 1
    assert "long enough pw" not in server.log()


async def test_setup_name_clash_keeps_the_link_usable(make_server: Callable[..., Server]) -> None:
    """Choosing a name that an agent already has is refused without using up the one-time link."""
    server = make_server()
    server.add_staff("helper", "agent")  # an agent, but still no admin: the link stays valid
    token = await _setup_token(server)
    async with _client(server) as client:
        form = await client.get("/setup", params={"token": token}, headers=HTML)
        assert form.status_code == 200
        clash = await client.post("/setup", headers=HTML, data={
            "token": token, "csrf_token": _csrf(form.text), "username": "helper",
            "password": "long enough pw", "password2": "long enough pw"})
        assert clash.status_code in {409, 422}
        assert "chat_staff" not in _set_cookie_names(clash)

        again = await client.get("/setup", params={"token": token}, headers=HTML)
        assert again.status_code == 200, "a refused name used up the one-time setup link"
        done = await client.post("/setup", data={
            "token": token, "csrf_token": _csrf(again.text), "username": "boss",
            "password": "long enough pw", "password2": "long enough pw"})
        assert done.status_code == 303
        assert done.headers["location"] == "/admin"


async def test_setup_link_dies_once_an_admin_exists(server: Server) -> None:
    """The shared server printed a setup link (it started with no staff); with an admin it is 404."""
    token = re.search(r"/setup\?token=(\S+)", server.log())
    assert token, "the shared server printed no setup link"
    async with _client(server) as client:
        response = await client.get("/setup", params={"token": token.group(1)}, headers=HTML)
        assert response.status_code == 404
        assert "csrf_token" not in response.text


# -- the user CLI ------------------------------------------------------------------------------


def test_cli_user_add_refuses_a_short_password(server: Server) -> None:
    """`chatserver user add` with a password under 12 characters fails and adds nobody."""
    name = "short-" + uuid.uuid4().hex[:6]
    done = server.cli("user", "add", name, "--role", "agent", "--password-stdin",
                      stdin="tooshort\n")
    assert done.returncode != 0
    assert done.stderr.strip()
    assert name not in server.cli("user", "list").stdout


def test_cli_user_add_refuses_a_duplicate_name(server: Server) -> None:
    """Adding a staff member whose name exists already fails with a non-zero exit."""
    done = server.cli("user", "add", "agent", "--role", "agent", "--password-stdin",
                      stdin=STAFF_PASSWORD + "\n")
    assert done.returncode != 0


def test_cli_user_list(server: Server) -> None:
    """`chatserver user list` prints one line per account: name, role, state."""
    done = server.cli("user", "list")
    assert done.returncode == 0, done.stderr
    rows = {tuple(line.split()) for line in done.stdout.splitlines() if line.strip()}
    assert {("admin", "admin", "active"), ("agent", "agent", "active"),
            ("agent2", "agent", "active")} <= rows
    assert STAFF_PASSWORD not in done.stdout
    assert "argon2" not in done.stdout


async def test_cli_added_user_can_sign_in(server: Server) -> None:
    """A staff member added with the CLI can sign in with that password and shows in the list."""
    name = "cli-" + uuid.uuid4().hex[:6]
    server.add_staff(name, "agent")
    assert (name, "agent", "active") in {
        tuple(line.split()) for line in server.cli("user", "list").stdout.splitlines()
    }
    async with _client(server) as client:
        response = await client.post("/api/staff/login",
                                     json={"username": name, "password": STAFF_PASSWORD})
        assert response.status_code == 200
        assert response.json()["staff"]["role"] == "agent"
