"""Staff password policy: a real strength estimate, not only length and a list."""

from __future__ import annotations

import uuid

import pytest

from chatserver import passwords

from .support import Agent, Server

# Each of these passed the old rule (12-128 characters, not in the common list, four distinct
# characters): keyboard rows, repeats, a word with the usual decorations, a NUL inside.
WEAK = [
    "Password123!",
    "qwertyuiopasdfgh",
    "asdfghjkl;asdf",
    "zxcvbnmasdfghjkl",
    "abcdabcdabcd",
    "passwordpassword",
    "Qwerty123456!",
    "12345678abcd",
]
CONTROL = ["correct horse\x00battery staple", "correct horse\tbattery staple",
           "correct horse battery staple\n"]
STRONG = ["correct horse battery staple", "a much better passphrase 42", "Kettle-Opera-42",
          "zq8!Kp2#vL9m"]


@pytest.mark.parametrize("password", WEAK)
def test_guessable_passwords_are_refused(password: str) -> None:
    """Keyboard rows, repeats and decorated common words are refused with a reason."""
    reason = passwords.check_policy(password, "sam")
    assert reason is not None and "easy to guess" in reason


@pytest.mark.parametrize("password", CONTROL)
def test_control_characters_are_refused(password: str) -> None:
    """NUL, tab and line breaks are refused: nobody can type them into the sign-in form."""
    reason = passwords.check_policy(password, "sam")
    assert reason is not None and "control characters" in reason


@pytest.mark.parametrize("password", STRONG)
def test_strong_passwords_pass(password: str) -> None:
    """Passphrases and random strings pass; no composition rule is needed for that."""
    assert passwords.check_policy(password, "sam") is None


def test_length_limits_and_name_still_apply() -> None:
    """The length range and the account name rule stay, whatever the estimate says."""
    assert passwords.check_policy("Zq8!Kp2#vL9") is not None  # 11 characters
    assert passwords.check_policy("zq8!Kp2#vL9m" * 11) is not None  # 132 characters
    assert passwords.check_policy("violet-kettle-margaret-91", "margaret") is not None


def test_a_long_password_is_estimated_quickly() -> None:
    """The estimate reads a bounded prefix, so 128 characters cost no more than 40."""
    import time

    worst = "".join(chr(33 + i % 90) for i in range(128))  # a sequence: zxcvbn's slowest case
    started = time.perf_counter()
    passwords.check_policy(worst)
    assert time.perf_counter() - started < 2


async def test_server_refuses_weak_staff_passwords(server: Server, admin: Agent) -> None:
    """The console's add and reset routes, and `chatserver user add`, refuse each weak password
    with 422 weak_password (or a non-zero exit) and create nothing."""
    name = "weak" + uuid.uuid4().hex[:6]
    for password in [*WEAK[:4], CONTROL[0]]:
        added = await admin.http.post("/api/admin/staff", json={"name": name, "role": "agent",
                                                                "password": password})
        assert added.status_code == 422, (password, added.text)
        assert added.json()["error"] == "weak_password"
    me = (await admin.http.get("/api/staff/me")).json()["staff"]
    reset = await admin.http.post(f"/api/admin/staff/{me['id']}/password",
                                  json={"password": "Password123!"})
    assert reset.status_code == 422 and reset.json()["error"] == "weak_password"
    done = server.cli("user", "add", name, "--role", "agent", "--password-stdin",
                      stdin="qwertyuiopasdfgh\n")
    assert done.returncode != 0 and "easy to guess" in done.stderr
    staff = (await admin.http.get("/api/admin/staff")).json()["staff"]
    assert name not in {s["name"] for s in staff}
