"""Staff authentication: the password policy, argon2id, the growing delay after failures, the
same answer for every failure, every attempt recorded, and the one-time first-admin link.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from chatserver import passwords
from chatserver.sessions import hash_id, new_id
from chatserver.storage.base import iso

from .inprocess import STAFF_PASSWORD, App, running_app

STRONG_12 = "vq7#Lm2!pX9z"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with running_app(tmp_path) as running:
        yield running


# -- the policy and the hash: pure -------------------------------------------------------------


def test_the_password_policy() -> None:
    """12 to 128 characters, not common, not mostly one character, not holding the name."""
    assert passwords.check_policy(STRONG_12) is None
    assert passwords.check_policy(STRONG_12[:11]) == "Passwords need at least 12 characters."
    assert passwords.check_policy((STRONG_12 * 11)[:128]) is None
    assert passwords.check_policy((STRONG_12 * 11)[:129]) == (
        "Passwords may have at most 128 characters.")
    common = sorted(p for p in passwords.common_passwords() if len(p) >= 12)[0]
    assert passwords.check_policy(common) == "That password is too common; choose another."
    assert passwords.check_policy(common.upper()) == (
        "That password is too common; choose another.")
    assert passwords.check_policy("abcabcabcabcabc") == (
        "That password is too common; choose another.")
    assert passwords.check_policy("abcdabcdabcdabcd") is not None  # a repeat: too easy to guess
    assert passwords.check_policy("zzTomHanks77!q", "tomhanks") == (
        "The password must not contain the account name.")
    assert passwords.check_policy("zzTomHanks77!q", None) is None
    assert len(passwords.common_passwords()) > 10_000


def test_hashes_are_argon2id_and_verify_only_their_password() -> None:
    """argon2id; the right password verifies, a wrong one or a missing hash does not."""
    hashed = passwords.hash_password(STRONG_12)
    assert hashed.startswith("$argon2id$")
    assert passwords.verify(hashed, STRONG_12)
    assert not passwords.verify(hashed, STRONG_12 + "x")
    assert not passwords.verify(None, STRONG_12)
    # Unknown users are checked against a dummy hash (for timing): its password opens nothing.
    assert not passwords.verify(None, "not a real password, only for timing")
    assert not passwords.verify("not a hash", STRONG_12)


def test_the_delay_after_failures() -> None:
    """None for the first five failures, then 1 s doubling, capped at 15 minutes."""
    assert [passwords.login_delay(n) for n in range(5)] == [0.0] * 5
    assert [passwords.login_delay(n) for n in range(5, 10)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert passwords.login_delay(14) == 512.0
    assert passwords.login_delay(15) == 900.0
    assert passwords.login_delay(1000) == 900.0


# -- through the application -------------------------------------------------------------------


def login(client: object, name: str, password: str) -> tuple[int, str]:
    response = client.post("/api/staff/login",  # type: ignore[attr-defined]
                           json={"username": name, "password": password})
    return response.status_code, response.text


def test_every_failure_gets_the_same_answer(app: App) -> None:
    """Unknown name, wrong password, a disabled account and a throttled one all answer the
    same 401 body."""
    app.add_staff("agent")
    app.add_staff("boss", "admin")  # so that disabling another account is allowed
    gone = app.add_staff("gone")
    app.call(app.state.store.update_staff, gone.id, state="disabled")
    client = app.client()
    answers = {
        login(client, "nobody", STAFF_PASSWORD),
        login(client, "agent", "wrong password here"),
        login(client, "gone", STAFF_PASSWORD),
        login(client, "x" * 101, STAFF_PASSWORD),
    }
    for _ in range(5):
        login(client, "agent", "wrong password here")
    answers.add(login(client, "agent", STAFF_PASSWORD))  # throttled now
    assert len(answers) == 1
    status, body = answers.pop()
    assert status == 401 and '"invalid_credentials"' in body


def test_failures_slow_down_sign_in_without_lengthening_the_delay(app: App) -> None:
    """From the fifth failure on the right password waits out a delay (one second at first);
    an attempt during the delay does not lengthen it; success resets the count."""
    staff = app.add_staff("agent")
    client = app.client()
    for _ in range(4):
        assert login(client, "agent", "wrong password here")[0] == 401
    assert login(client, "agent", STAFF_PASSWORD)[0] == 200  # four: no delay
    # That browser is now known to the account and judged by its own failures; the account's
    # delay concerns every other browser, such as a stranger's:
    client = app.client()
    for _ in range(5):
        login(client, "agent", "wrong password here")
    assert login(client, "agent", STAFF_PASSWORD)[0] == 401  # five: one second
    app.clock.now += timedelta(seconds=0.5)
    assert login(client, "agent", "wrong password here")[0] == 401  # inside: not counted
    app.clock.now += timedelta(seconds=0.6)
    assert login(client, "agent", STAFF_PASSWORD)[0] == 200
    assert app.call(app.state.store.get_staff, staff.id).failed_logins == 0


def test_every_attempt_is_recorded_and_audited(app: App) -> None:
    """Each attempt is a login event with its outcome, and an audit entry without the name
    typed or the password."""
    app.add_staff("agent")
    client = app.client(headers={"User-Agent": "probe/1"})
    login(client, "agent", "wrong password here")
    login(client, "nobody-typed-this", STAFF_PASSWORD)
    login(client, "agent", STAFF_PASSWORD)
    events = app.call(app.state.store.login_events)
    assert [e["outcome"] for e in events][:3] == ["success", "unknown_user", "bad_password"]
    assert all(e["user_agent"] == "probe/1" and e["ip"] == "testclient" for e in events[:3])
    audit = app.call(app.state.store.all_audit)
    actions = [(e["action"], e["detail"].get("outcome")) for e in audit
               if e["action"].startswith("staff.login")]
    assert actions == [("staff.login_failed", "bad_password"),
                       ("staff.login_failed", "unknown_user"), ("staff.login", None)]
    assert "nobody-typed-this" not in str(audit) and "wrong password" not in str(audit)


def test_the_first_admin_link_is_hashed_spent_once_and_expires(app: App) -> None:
    """The link's token is stored as a hash, works once, and dies after an hour or once an
    admin exists."""
    store = app.state.store
    raw = new_id()
    app.call(store.create_setup_token, hash_id(raw), iso(app.clock.now + timedelta(hours=1)))
    assert app.call(store.setup_token_valid, hash_id(raw))
    assert not app.call(store.setup_token_valid, raw)
    client = app.client()
    page = client.get(f"/setup?token={raw}")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    form = {"token": raw, "csrf_token": csrf.group(1), "username": "boss",
            "password": STRONG_12, "password2": STRONG_12}
    done = client.post("/setup", data=form, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/admin"
    assert client.get(f"/setup?token={raw}").status_code == 404
    again = app.client()
    again.get("/setup")
    assert again.post("/setup", data={**form, "username": "boss2"}).status_code in {403, 404}
    assert [s.name for s in app.call(store.list_staff)] == ["boss"]

    late = new_id()
    app.call(store.create_setup_token, hash_id(late), iso(app.clock.now + timedelta(hours=1)))
    app.clock.now += timedelta(hours=1, seconds=1)
    assert not app.call(store.setup_token_valid, hash_id(late))


def test_an_expired_first_admin_link_creates_nobody(app: App) -> None:
    """Past its hour the link shows nothing and a submitted form creates no admin."""
    raw = new_id()
    app.call(app.state.store.create_setup_token, hash_id(raw),
             iso(app.clock.now + timedelta(hours=1)))
    client = app.client()
    page = client.get(f"/setup?token={raw}")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    app.clock.now += timedelta(hours=2)
    assert client.get(f"/setup?token={raw}").status_code == 404
    form = {"token": raw, "csrf_token": csrf.group(1), "username": "boss",
            "password": STRONG_12, "password2": STRONG_12}
    assert client.post("/setup", data=form, follow_redirects=False).status_code == 404
    assert app.call(app.state.store.count_admins) == 0


def test_forms_need_their_csrf_token(app: App) -> None:
    """The sign-in form without the token, or with another form's, is 403 and signs nobody
    in; with it, it signs in."""
    app.add_staff("agent")
    client = app.client()

    def fresh_token() -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/agent").text)
        assert found is not None
        return found.group(1)

    creds = {"username": "agent", "password": STAFF_PASSWORD, "next": "/agent"}
    for bad in ("", "tampered", app.state.signer.new_csrf()):
        token = fresh_token()
        if bad == "tampered":
            bad = token[:-2] + ("xx" if token[-2:] != "xx" else "yy")
        response = client.post("/staff/login", data={**creds, "csrf_token": bad},
                               follow_redirects=False)
        assert response.status_code == 403 and "chat_staff" not in response.headers.get(
            "set-cookie", "")
    ok = client.post("/staff/login", data={**creds, "csrf_token": fresh_token()},
                     follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/agent"


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example",
                                    "http:/evil.example", "evil", "/%5Cevil.example"])
def test_sign_in_never_redirects_off_site(app: App, target: str) -> None:
    """`next` must be a local path; anything else goes to the dashboard."""
    app.add_staff("agent")
    client = app.client()
    page = client.get("/agent")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post("/staff/login", data={
        "username": "agent", "password": STAFF_PASSWORD, "next": target,
        "csrf_token": token.group(1)}, follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith("/") and not location.startswith("//") and "\\" not in location
    assert location in {"/agent", target}
