"""A new operator's, agent's and customer's first day: the stumbles a newcomer met, each pinned."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import databases
from .support import STAFF_PASSWORD, Agent, Server, Visitor

ROOT = Path(__file__).resolve().parent.parent
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


# -- the command line works on the server's data folder, or says it cannot ----------------------


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`chatserver ...` as an operator runs it: its own folder, no controlling terminal."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "chatserver", *args], cwd=cwd, env={**base, **(env or {})},
        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60, start_new_session=True,
    )


def _where(server: Server) -> str:
    """How commands name the server's data: its folder and SQLite file, or, on PostgreSQL, the
    database (the folder then holds only the secret key and the audit anchor)."""
    if server.on_postgres:
        return f"database {server.database_url} (secret key in data folder {server.data_dir})"
    return f"data folder {server.data_dir} (database chat.db)"


COMMANDS = [
    ["user", "add", "newagent", "--role", "agent", "--password-stdin"],
    ["user", "list"],
    ["policy", "publish", "policy.md", "--version", "9.0", "--summary", "Ours"],
    ["purge", "--dry-run"],
    ["export", "--email", "ada@example.com"],
    ["erase", "--email", "ada@example.com"],
    ["audit", "verify"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_commands_other_than_serve_never_create_a_data_folder(tmp_path: Path,
                                                              args: list[str]) -> None:
    """Run from a folder without the server's data, each command fails in one line naming
    CHATSERVER_DATA_DIR, creates no `chatserver-data` there, and prints no traceback."""
    (tmp_path / "policy.md").write_text("# Our policy\n", encoding="utf-8")
    done = _run(args, tmp_path, stdin=STAFF_PASSWORD + "\n")
    assert done.returncode == 2, done.stderr
    assert not (tmp_path / "chatserver-data").exists()
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CHATSERVER_DATA_DIR" in lines[0], done.stderr
    assert str(tmp_path / "chatserver-data") in lines[0]
    assert done.stdout == ""


def test_explicit_database_url_that_does_not_exist_is_named(tmp_path: Path) -> None:
    """A CHATSERVER_DATABASE_URL naming a missing SQLite file fails naming that setting."""
    done = _run(["user", "list"], tmp_path,
                env={"CHATSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'nope.db'}",
                     "CHATSERVER_SECRET_KEY": "k" * 40})
    assert done.returncode == 2
    assert "CHATSERVER_DATABASE_URL" in done.stderr and not (tmp_path / "nope.db").exists()


def test_every_command_says_which_data_folder_it_uses(server: Server, tmp_path: Path) -> None:
    """With the server's folder, each command names it on stderr; export's stdout stays JSON."""
    env = {"CHATSERVER_DATA_DIR": str(server.data_dir), **databases.database_env(server.data_dir)}
    listed = _run(["user", "list"], tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.strip() == f"chatserver: using {_where(server)}"
    assert "admin\tadmin\tactive" in listed.stdout

    verify = _run(["audit", "verify"], tmp_path, env=env)
    assert f"using {_where(server)}" in verify.stderr

    missing = _run(["export", "--email", "nobody-here@example.com"], tmp_path, env=env)
    assert missing.returncode == 1 and missing.stdout == ""
    assert f"using {_where(server)}" in missing.stderr

    # The serve line names the folder too (it went to the server's log).
    assert f"using {_where(server)}" in server.log()


def test_user_add_without_a_terminal_says_so_in_one_line(server: Server, tmp_path: Path) -> None:
    """No terminal and no --password-stdin: one line pointing to --password-stdin, exit 2."""
    done = _run(["user", "add", "noterminal", "--role", "agent"], tmp_path,
                env={"CHATSERVER_DATA_DIR": str(server.data_dir),
                     **databases.database_env(server.data_dir)})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "--password-stdin" in last and "Staff tab" in last
    assert "noterminal" not in server.cli("user", "list").stdout


async def test_user_add_in_the_servers_folder_makes_an_agent_who_signs_in(tmp_path: Path) -> None:
    """Run where the server was started (default ./chatserver-data), the new agent signs in."""
    server = Server(tmp_path / "chatserver-data").start()
    try:
        done = _run(["user", "add", "newcomer", "--role", "agent", "--password-stdin"], tmp_path,
                    env=databases.database_env(server.data_dir), stdin=STAFF_PASSWORD + "\n")
        assert done.returncode == 0, done.stderr
        assert server.data_dir == tmp_path / "chatserver-data"
        assert done.stderr.strip() == f"chatserver: using {_where(server)}"
        async with _client(server) as client:
            signed = await client.post("/api/staff/login",
                                       json={"username": "newcomer", "password": STAFF_PASSWORD})
            assert signed.status_code == 200
    finally:
        server.stop()


# -- one organisation on every page, and the operator's choice of consent boxes -----------------


async def test_default_organisation_is_the_one_the_bundled_policy_names(server: Server) -> None:
    """Out of the box the demo page, the widget and the policy page name the bundled policy's
    organisation, and no other company."""
    async with _client(server) as client:
        policy = (await client.get("/api/policy")).json()
        assert "EmergencySupport" in policy["html"]
        for path in ("/", "/widget", "/policy"):
            text = (await client.get(path)).text
            assert "EmergencySupport" in text, path
            assert "Example Co" not in text, path


async def test_organisation_setting_names_the_operator_everywhere(make_server: Any) -> None:
    """CHATSERVER_ORGANISATION is the name on the demo page, in the widget's consent screen and in
    the policy page's generated section."""
    server = make_server(CHATSERVER_ORGANISATION="Acme <Widgets> Ltd")
    async with _client(server) as client:
        demo = (await client.get("/")).text
        assert "<title>Acme &lt;Widgets&gt; Ltd support (demo)</title>" in demo
        assert "<h1>Acme &lt;Widgets&gt; Ltd support</h1>" in demo
        widget = (await client.get("/widget")).text
        assert "To chat, Acme &lt;Widgets&gt; Ltd stores your name" in widget
        assert "privacy policy of Acme &lt;Widgets&gt; Ltd" in widget
        policy = (await client.get("/policy")).text
        generated = policy[policy.index('id="practice-title"'):]
        assert "run by <strong>Acme &lt;Widgets&gt; Ltd</strong>" in generated
    assert "bundled sample" in server.log()  # the operator is reminded to publish their own


async def test_on_behalf_box_is_an_operator_setting(make_server: Any, server: Server) -> None:
    """Off: the widget and the account page hide the box and consent refuses on_behalf: true;
    on (the default): the box shows and the receipt keeps it."""
    async with _client(server) as client:
        assert 'id="on-behalf"' in (widget := (await client.get("/widget")).text)
        assert '<label class="check" hidden><input type="checkbox" id="on-behalf">' not in widget

    off = make_server(CHATSERVER_ON_BEHALF_CONSENT="off")
    async with _client(off) as client:
        widget = (await client.get("/widget")).text
        assert '<label class="check" hidden><input type="checkbox" id="on-behalf">' in widget
        account = (await client.get("/account")).text
        assert '<label class="check" hidden><input type="checkbox" id="give-behalf">' in account
        refused = await client.post("/api/consent",
                                    json={"policy_version": "1.01", "on_behalf": True})
        assert refused.status_code == 422
        assert refused.json()["error"] == "invalid_on_behalf"
        assert "chat_session" not in refused.headers.get("set-cookie", "")
        plain = await client.post("/api/consent",
                                  json={"policy_version": "1.01", "on_behalf": False})
        assert plain.status_code == 200


def test_bad_on_behalf_or_organisation_setting_stops_the_command(tmp_path: Path) -> None:
    """A value that is neither on nor off, or an empty organisation, is refused by name."""
    from chatserver.settings import SettingsError, load

    for env, name in (({"CHATSERVER_ON_BEHALF_CONSENT": "maybe"}, "CHATSERVER_ON_BEHALF_CONSENT"),
                      ({"CHATSERVER_ORGANISATION": "  "}, "CHATSERVER_ORGANISATION")):
        with pytest.raises(SettingsError, match=name):
            load(environ={"CHATSERVER_DATA_DIR": str(tmp_path), **env})


# -- the widget asks whether it has a session without a failing request -------------------------


async def test_session_status_answers_200_with_or_without_a_session(server: Server) -> None:
    """GET /api/session: {"session": false} without a cookie (no 401, no cookie set); with one,
    true and the same view as GET /api/me."""
    async with _client(server) as client:
        bare = await client.get("/api/session")
        assert bare.status_code == 200 and bare.json() == {"session": False}
        assert "set-cookie" not in bare.headers
        assert bare.headers["cache-control"] == "no-store"
        client.cookies.set("chat_session", "forged.value")
        assert (await client.get("/api/session")).json() == {"session": False}
        client.cookies.clear()

        assert (await client.post("/api/consent", json={"policy_version": "1.01"})).status_code == 200
        consented = (await client.get("/api/session")).json()
        me = (await client.get("/api/me")).json()
        assert consented == {"session": True, "open_conversation": False, **me}
        assert consented["customer"] is None and consented["consent"]["current"] is True


# -- publishing a policy: starts from the current text, previews, counts what it pauses ---------


async def test_policy_preview_renders_and_counts_the_chats_it_would_pause(
    make_server: Any,
) -> None:
    """POST /api/admin/policies/preview renders the text as /policy would and counts the open
    chats; it publishes nothing. GET .../current gives the text a new version starts from."""
    server = make_server()
    server.add_staff("boss", "admin")
    server.add_staff("helper", "agent")
    admin = await Agent(server, "boss").login()
    agent = await Agent(server, "helper").login()
    visitors = [await Visitor(server).start(email=f"p{i}@example.com") for i in range(2)]
    sockets = [await v.socket() for v in visitors]
    for sock in sockets:
        await sock.wait_type("welcome")
    try:
        current = await admin.http.get("/api/admin/policies/current")
        assert current.status_code == 200
        data = current.json()
        assert data["policy"]["version"] == "1.01" and data["bundled"] is True
        assert data["policy"]["text"].startswith("# EmergencySupport")
        assert data["open_conversations"] == 2

        text = "# Our policy\n\nWe keep <b>little</b>.\n"
        preview = await admin.http.post("/api/admin/policies/preview", json={"text": text})
        assert preview.status_code == 200
        body = preview.json()
        assert body["open_conversations"] == 2
        assert "<h1>Our policy</h1>" in body["html"] and "&lt;b&gt;" in body["html"]
        assert (await admin.http.get("/api/policy")).json()["version"] == "1.01"  # nothing published

        empty = await admin.http.post("/api/admin/policies/preview", json={"text": "  "})
        assert empty.status_code == 422 and empty.json()["error"] == "invalid_text"
        for path, method in (("/api/admin/policies/current", "GET"),
                             ("/api/admin/policies/preview", "POST")):
            refused = await agent.http.request(method, path, json={"text": text})
            assert refused.status_code == 403, path
            async with _client(server) as anonymous:
                signed_out = await anonymous.request(method, path, json={"text": text})
            assert signed_out.status_code == 401, path

        await sockets[0].send({"type": "close"})
        await sockets[0].wait_type("status", status="closed")
        after = await admin.http.post("/api/admin/policies/preview", json={"text": text})
        assert after.json()["open_conversations"] == 1
    finally:
        for sock in sockets:
            await sock.close()
        for client in (admin, agent, *visitors):
            await client.aclose()


# -- a brand colour never makes the widget unreadable -------------------------------------------


def test_brand_colours_choose_text_by_contrast_and_refuse_unreadable_ones() -> None:
    """White or dark text, whichever reaches 4.5:1; colours that reach it with neither, and
    malformed ones, fall back to the default; links use the accent only where it is readable."""
    from chatserver.web.widget import DEFAULT_COLOR, brand_colours, contrast

    assert round(contrast("#ffffff", "#000000"), 2) == 21.0
    assert round(contrast("#777777", "#ffffff"), 2) == 4.48
    assert brand_colours("#0A7D5A") == ("#0a7d5a", "#ffffff", "#0a7d5a")
    assert brand_colours("#ffeb3b") == ("#ffeb3b", "#1b1f24", "#1b1f24")
    assert brand_colours("#ff6b6b") == ("#ff6b6b", "#1b1f24", "#1b1f24")
    default = brand_colours(None)
    assert default == (DEFAULT_COLOR, "#ffffff", DEFAULT_COLOR)
    for bad in ("#777777", "#808080", "red", "#12345", "#zzzzzz", "", "#2357d9;x"):
        assert brand_colours(bad) == default, bad
    for value in ("#000000", "#ffffff", "#ffeb3b", "#0a7d5a", "#ff6b6b", "#8a8a8a", "#3366ff"):
        accent, ink, link = brand_colours(value)
        assert contrast(accent, ink) >= 4.5 and contrast(link, "#ffffff") >= 4.5, value


async def test_widget_page_applies_the_brand_colour_rule(server: Server) -> None:
    """GET /widget?color= carries the chosen accent, text and link colours to the page."""
    async with _client(server) as client:
        light = (await client.get("/widget", params={"color": "#ffeb3b"})).text
        assert 'data-color="#ffeb3b" data-ink="#1b1f24" data-link="#1b1f24"' in light
        grey = (await client.get("/widget", params={"color": "#777777"})).text
        assert 'data-color="#2357d9" data-ink="#ffffff" data-link="#2357d9"' in grey
