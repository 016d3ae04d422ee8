"""Sessions and cookies: signed random ids, one salt per purpose, hashes at rest, fresh ids at
sign-in, server-side revocation, idle and absolute lifetimes, cookie attributes.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import itsdangerous.timed
import pytest
from starlette.websockets import WebSocketDisconnect

from chatserver import sessions
from chatserver.sessions import CSRF_MAX_AGE, Signer

from .inprocess import App, receive, running_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with running_app(tmp_path) as running:
        yield running


# -- the signer: pure --------------------------------------------------------------------------


def test_a_signed_value_round_trips_for_its_own_purpose_only() -> None:
    """unsign gives back what was signed for the same purpose and secret, and None otherwise."""
    signer = Signer("secret one")
    token = signer.sign("chat_session", "abc")
    assert signer.unsign("chat_session", token) == "abc"
    assert signer.unsign("chat_staff", token) is None  # another purpose: another salt
    assert Signer("secret two").unsign("chat_session", token) is None
    assert signer.unsign("chat_session", signer.sign("chat_session", "abc") + "x") is None


@pytest.mark.parametrize("token", [None, "", "x" * 513, "not.a.token", "%00%ff", "a.b.c"])
def test_anything_malformed_unsigns_to_none(token: str | None) -> None:
    """Missing, over-long or malformed tokens are None, never an exception."""
    assert Signer("s").unsign("chat_session", token) is None


def test_long_tokens_are_refused_before_any_work() -> None:
    """The 512-character cap holds for a validly signed token too, and only past 512."""
    signer = Signer("s")
    rng = random.Random(0)
    noise = "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(700))  # barely compresses
    tokens = {len(t): t for t in (signer.sign("p", noise[:n]) for n in range(300, 500))}
    assert signer.unsign("p", tokens[512]) is not None
    assert signer.unsign("p", tokens[min(k for k in tokens if k > 512)]) is None


def test_only_text_values_are_accepted() -> None:
    """A signed non-text value (say, a list) is not a session id."""
    signer = Signer("s")
    token = signer._serializer("p").dumps(["a"])
    assert signer.unsign("p", token) is None


def test_expired_values_are_refused() -> None:
    """With a maximum age, an older signature is refused; without one it is accepted."""
    signer = Signer("s")
    token = signer.sign("p", "v")
    assert signer.unsign("p", token, max_age=-1) is None
    assert signer.unsign("p", token, max_age=60) == "v"


def test_csrf_tokens_match_only_in_pairs_of_the_same_valid_value() -> None:
    """Double submit: cookie and form must carry the same signed csrf value."""
    signer = Signer("s")
    token = signer.new_csrf()
    assert signer.csrf_matches(token, token)
    assert not signer.csrf_matches(token, signer.new_csrf())
    assert not signer.csrf_matches(None, token)
    assert not signer.csrf_matches(token, None)
    assert not signer.csrf_matches("", "")
    forged = signer.sign("chat_session", "x")  # signed, but for another purpose
    assert not signer.csrf_matches(forged, forged)


def test_csrf_tokens_expire_after_twelve_hours(monkeypatch: pytest.MonkeyPatch) -> None:
    """A form token signed more than CSRF_MAX_AGE ago no longer matches, whether it is the
    cookie's copy or the form's that is old."""
    signer = Signer("s")
    now = [1_800_000_000.0]
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: now[0])
    old = signer.sign("csrf", "same random value")
    now[0] += CSRF_MAX_AGE - 5
    fresh = signer.sign("csrf", "same random value")  # the same value, signed later
    assert signer.csrf_matches(old, fresh) and signer.csrf_matches(fresh, old)
    now[0] += 10  # old is now past twelve hours, fresh is not
    assert not signer.csrf_matches(old, fresh)
    assert not signer.csrf_matches(fresh, old)
    assert signer.csrf_matches(fresh, fresh)


def test_ids_are_random_and_stored_as_sha256() -> None:
    """A session id is 32 random bytes; what the server keeps is its SHA-256."""
    ids = {sessions.new_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) >= 43 for i in ids)
    raw = sessions.new_id()
    assert sessions.hash_id(raw) == hashlib.sha256(raw.encode()).hexdigest() != raw


def test_csrf_and_visitor_lifetimes() -> None:
    """The CSRF token lives 12 hours and the visitor cookie 30 days, as /cookies says."""
    assert CSRF_MAX_AGE == 12 * 3600
    assert sessions.VISITOR_MAX_AGE == 30 * 24 * 3600


# -- through the application -------------------------------------------------------------------


def test_the_database_holds_the_hash_of_the_cookie_id_not_the_id(app: App) -> None:
    """A copy of the database cannot be replayed as cookies: only hashes of the ids are in it."""
    visitor = app.visitor_client()
    staff = app.staff_client("agent")
    raw_visitor = app.state.signer.unsign("chat_session", visitor.cookies["chat_session"])
    raw_staff = app.state.signer.unsign("chat_staff", staff.cookies["chat_staff"])
    assert raw_visitor and raw_staff
    app.call(app.state.store.ping)
    conn = sqlite3.connect(app.settings.data_dir / "chat.db")
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    for raw in (raw_visitor, raw_staff):
        assert raw not in dump
        assert sessions.hash_id(raw) in dump


def test_a_cookie_for_one_purpose_is_worthless_for_another(app: App) -> None:
    """A valid staff cookie value used as the visitor cookie, or the reverse, is no cookie."""
    visitor = app.visitor_client()
    staff = app.staff_client("agent")
    swapped = app.client()
    swapped.cookies.set("chat_session", staff.cookies["chat_staff"])
    swapped.cookies.set("chat_staff", visitor.cookies["chat_session"])
    assert swapped.get("/api/me").status_code == 401
    assert swapped.get("/api/staff/me").status_code == 401
    assert visitor.get("/api/me").status_code == 200
    assert staff.get("/api/staff/me").status_code == 200


def test_a_tampered_visitor_cookie_is_no_cookie_on_every_path(app: App) -> None:
    """One changed character: 401 on the API, refused on the socket, a new session on consent."""
    visitor = app.visitor_client()
    good = visitor.cookies["chat_session"]
    tampered = good[:-3] + ("AAA" if good[-3:] != "AAA" else "BBB")
    client = app.client()
    client.cookies.set("chat_session", tampered)
    assert client.get("/api/me").status_code == 401
    assert client.post("/api/visitor", json={"name": "M", "email": "m@example.com"}
                       ).json()["error"] == "consent_required"
    with client.websocket_connect("/ws/visitor") as ws:
        assert receive(ws)["code"] == "not_signed_in"
        with pytest.raises(WebSocketDisconnect) as closed:
            receive(ws)
    assert closed.value.code == 4401
    fresh = client.post("/api/consent", json={"policy_version": "1.01"})
    assert fresh.cookies["chat_session"] not in {good, tampered}


def test_no_cookie_before_consent(app: App) -> None:
    """Reading pages and the policy sets no cookie; consent sets exactly the visitor cookie."""
    client = app.client()
    for path in ("/", "/widget", "/api/policy", "/policy", "/cookies", "/account"):
        response = client.get(path)
        assert response.status_code == 200 and "set-cookie" not in response.headers, path
    consent = client.post("/api/consent", json={"policy_version": "1.01"})
    names = [h.split("=", 1)[0] for h in consent.headers.get_list("set-cookie")]
    # chat_consent carries the pending consent until the browser shows it keeps chat_session
    assert names == ["chat_session", "chat_consent"]


def test_cookie_attributes_over_http(app: App) -> None:
    """Over HTTP: the visitor cookie is HttpOnly, Lax, Path=/, 30 days; the staff cookie is
    HttpOnly, Strict, Path=/ and ends with the browser."""
    consent = app.client().post("/api/consent", json={"policy_version": "1.01"})
    visitor = next(c for c in consent.headers.get_list("set-cookie")
                   if c.startswith("chat_session=")).lower()
    for part in ("httponly", "samesite=lax", "path=/", f"max-age={30 * 24 * 3600}"):
        assert part in visitor
    assert "secure" not in visitor
    app.add_staff("agent")
    login = app.client().post("/api/staff/login",
                              json={"username": "agent", "password": "correct horse battery staple"})
    staff = next(c for c in login.headers.get_list("set-cookie")
                 if c.startswith("chat_staff=")).lower()
    for part in ("httponly", "samesite=strict", "path=/"):
        assert part in staff
    assert "max-age" not in staff and "expires" not in staff


def test_cookie_attributes_and_hsts_over_https(app: App) -> None:
    """Under HTTPS: the visitor cookie is SameSite=None; Secure; Partitioned, the staff cookie
    is __Host-chat_staff (Secure, Path=/, no Domain), and HSTS is on; a plain chat_staff cookie
    name is not set."""
    client = app.client(base_url="https://testserver")
    consent = client.post("/api/consent", json={"policy_version": "1.01"})
    visitor = consent.headers["set-cookie"].lower()
    for part in ("httponly", "samesite=none", "secure", "partitioned", "path=/"):
        assert part in visitor
    assert consent.headers["strict-transport-security"] == "max-age=31536000"
    app.add_staff("agent")
    login = client.post("/api/staff/login",
                        json={"username": "agent", "password": "correct horse battery staple"})
    staff = login.headers["set-cookie"]
    assert staff.startswith("__Host-chat_staff=")
    lowered = staff.lower()
    for part in ("httponly", "samesite=strict", "path=/", "secure"):
        assert part in lowered
    assert "domain" not in lowered
    assert client.get("/api/staff/me").status_code == 200  # and it is the one that is read
    plain = app.client().get("/api/policy")
    assert "strict-transport-security" not in plain.headers


@pytest.mark.parametrize(("setting", "base", "secure"), [
    ("on", "http://testserver", True), ("off", "https://testserver", False),
])
def test_the_secure_cookie_setting_overrides_the_scheme(tmp_path: Path, setting: str, base: str,
                                                        secure: bool) -> None:
    """CHATSERVER_SECURE_COOKIES=on marks cookies Secure even when HTTPS ends at a proxy in
    front; off leaves it off even over HTTPS."""
    with running_app(tmp_path, CHATSERVER_SECURE_COOKIES=setting) as app:
        consent = app.client(base_url=base).post("/api/consent", json={"policy_version": "1.01"})
        assert ("secure" in consent.headers["set-cookie"].lower()) is secure
        app.add_staff("agent")
        login = app.client(base_url=base).post(
            "/api/staff/login", json={"username": "agent", "password": "correct horse battery staple"})
        header = login.headers["set-cookie"]
        assert header.startswith("__Host-chat_staff=" if secure else "chat_staff=")
        assert ("secure" in header.lower()) is secure


def test_a_clearing_cookie_keeps_the_attributes_it_was_set_with(app: App) -> None:
    """Erasure clears the visitor cookie with SameSite=None; Secure; Partitioned under HTTPS,
    or an embedded browser would ignore the deletion."""
    client = app.client(base_url="https://testserver")
    client.post("/api/consent", json={"policy_version": "1.01"})
    client.post("/api/visitor", json={"name": "A", "email": "a@example.com"})
    erased = client.delete("/api/me")
    header = erased.headers["set-cookie"].lower()
    assert header.startswith('chat_session="";') or header.startswith("chat_session=;")
    for part in ("max-age=0", "samesite=none", "secure", "partitioned"):
        assert part in header


def test_every_sign_in_gets_a_fresh_session_id(app: App) -> None:
    """Session fixation: signing in with a session cookie present still gives a new id, and the
    new session is the one the server knows."""
    agent = app.staff_client("agent")
    first = agent.cookies["chat_staff"]
    again = agent.post("/api/staff/login",
                       json={"username": "agent", "password": "correct horse battery staple"})
    second = again.cookies["chat_staff"]
    assert second != first
    assert app.state.signer.unsign("chat_staff", second) != app.state.signer.unsign(
        "chat_staff", first)
    assert agent.get("/api/staff/me").status_code == 200


def test_sign_out_revokes_the_session_on_the_server(app: App) -> None:
    """After sign-out, a replayed copy of the old cookie is refused, and its socket is closed."""
    agent = app.staff_client("agent")
    old = agent.cookies["chat_staff"]
    with agent.websocket_connect("/ws/agent") as ws:
        assert receive(ws)["type"] == "queue"
        assert agent.post("/api/staff/logout").status_code == 200
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                receive(ws)
        assert closed.value.code == 4401
    replay = app.client()
    replay.cookies.set("chat_staff", old)
    assert replay.get("/api/staff/me").status_code == 401


def test_idle_staff_sessions_end(app: App) -> None:
    """A sign-in unused for CHATSERVER_STAFF_IDLE_MINUTES ends; use within it keeps it."""
    agent = app.staff_client("agent")
    idle = timedelta(minutes=app.settings.staff_idle_minutes)
    app.clock.now += idle - timedelta(minutes=2)
    assert agent.get("/api/staff/me").status_code == 200  # used: the idle clock restarts
    app.clock.now += idle - timedelta(minutes=2)
    assert agent.get("/api/staff/me").status_code == 200
    app.clock.now += idle + timedelta(minutes=1)
    assert agent.get("/api/staff/me").status_code == 401
    with agent.websocket_connect("/ws/agent") as ws:
        assert receive(ws)["code"] == "not_signed_in"


def test_staff_sessions_have_an_absolute_lifetime(app: App) -> None:
    """Even in constant use, a sign-in ends after CHATSERVER_STAFF_SESSION_HOURS."""
    agent = app.staff_client("agent")
    lifetime = timedelta(hours=app.settings.staff_session_hours)
    used = timedelta()
    step = timedelta(minutes=30)
    while used + step < lifetime:
        app.clock.now += step
        used += step
        assert agent.get("/api/staff/me").status_code == 200, used
    app.clock.now += step
    assert agent.get("/api/staff/me").status_code == 401
