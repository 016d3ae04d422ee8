"""The outbox and its sender against real SMTP servers: retries with backoff, permanent
refusals, what admins see, SMTP with AUTH, STARTTLS and TLS, and a server with no mail at all."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatserver.settings import SettingsError, SmtpTarget, load

from .mailbox import Mailbox, check_mail, mail_server
from .support import Agent, Server, Visitor

SIGNIN = "Your sign-in link"


async def _ask_link(srv: Server, email: str) -> None:
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
        response = await client.post("/api/account/link", json={"email": email})
        assert response.status_code == 202, response.text


async def _customer(srv: Server, email: str) -> Visitor:
    return await Visitor(srv).start(email=email)


async def _admin_mail(admin: Agent) -> dict[str, Any]:
    response = await admin.http.get("/api/admin/mail")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _outbox(srv: Server) -> list[tuple[Any, ...]]:
    return srv.query("SELECT status, attempts, last_error FROM mail_outbox")


async def _until(check: Any, timeout: float = 10) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_temporary_failures_are_retried_with_backoff(tmp_path: Path,
                                                           mailbox: Mailbox) -> None:
    """Two 451 answers, then success: the mail arrives on the third attempt; meanwhile admins
    see the attempts and a short error code, never the address or a word of the mail."""
    mailbox.refuse = ["451 4.3.0 <retry.me@example.com> mailbox busy"] * 2
    srv = mail_server(tmp_path, mailbox, CHATSERVER_MAIL_RETRY_SECONDS="0.3")
    srv.add_staff("boss", "admin")
    ada = await _customer(srv, "retry.me@example.com")
    admin = await Agent(srv, "boss").login()
    try:
        await _ask_link(srv, "retry.me@example.com")

        async def failed_once() -> dict[str, Any] | None:
            mails = (await _admin_mail(admin))["mails"]
            return mails[0] if mails and mails[0]["attempts"] >= 1 and mails[0][
                "last_error"] else None

        seen = await failed_once() or await _until(failed_once)
        assert seen["last_error"] == "SMTPRecipientsRefused 451"
        [mail] = await mailbox.wait_to("retry.me@example.com", SIGNIN)
        check_mail(mail, srv.url, "retry.me@example.com")

        async def sent() -> dict[str, Any] | None:
            listing = await _admin_mail(admin)
            return listing if listing["mails"][0]["status"] == "sent" else None

        listing = await _until(sent)
        [row] = listing["mails"]
        assert row["attempts"] == 3 and row["kind"] == "signin" and row["sent_at"]
        assert set(row) == {"id", "kind", "status", "attempts", "last_error",
                            "conversation_id", "created_at", "next_attempt_at", "sent_at"}
        assert "retry.me" not in str(listing) and "@" not in str(listing)
        assert "retry.me" not in srv.log()  # nor in the log
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as anonymous:
            assert (await anonymous.get("/api/admin/mail")).status_code == 401
    finally:
        await ada.aclose()
        await admin.aclose()
        srv.stop()


async def test_permanent_refusal_fails_at_once(tmp_path: Path, mailbox: Mailbox) -> None:
    """A 550 is not retried: the mail is marked failed after one attempt."""
    mailbox.refuse = ["550 5.1.1 <gone.box@example.com> no such user"]
    srv = mail_server(tmp_path, mailbox)
    ada = await _customer(srv, "gone.box@example.com")
    try:
        await _ask_link(srv, "gone.box@example.com")

        async def failed() -> list[tuple[Any, ...]] | None:
            rows = _outbox(srv)
            return rows if rows and rows[0][0] == "failed" else None

        assert await _until(failed) == [("failed", 1, "SMTPRecipientsRefused 550")]
        assert mailbox.mails == []
    finally:
        await ada.aclose()
        srv.stop()


def _certificate(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_tls_transports_check_the_certificate_and_log_in(tmp_path: Path, tls: str) -> None:
    """smtp+starttls:// (with AUTH by the URL's percent-decoded user and password) and smtps://
    deliver over TLS with the certificate checked (the test's own certificate is trusted
    through SSL_CERT_FILE); the password never reaches the log. (aiosmtpd offers AUTH only
    after STARTTLS, so AUTH is tested there.)"""
    cert = _certificate(tmp_path)
    users = {"mailer@example.com": "p@ss:word/1"} if tls == "starttls" else None
    box = Mailbox(users=users, tls=tls, cert=cert)
    box.controller.start()
    scheme, rest = box.url.split("://")
    credentials = "mailer%40example.com:p%40ss%3Aword%2F1@" if users else ""
    srv = mail_server(tmp_path, box, smtp_url=f"{scheme}://{credentials}{rest}",
                      SSL_CERT_FILE=str(cert[0]))
    ada = await _customer(srv, "auth.user@example.com")
    try:
        await _ask_link(srv, "auth.user@example.com")
        [mail] = await box.wait_to("auth.user@example.com", SIGNIN)
        check_mail(mail, srv.url, "auth.user@example.com")
        assert box.logins == (["mailer@example.com"] if users else [])
        assert "p@ss" not in srv.log() and "ss%3A" not in srv.log()
        assert f"mail: on, through localhost:{box.port} ({tls})" in srv.log()
    finally:
        await ada.aclose()
        srv.stop()
        box.controller.stop()


async def test_without_smtp_no_mail_is_promised_or_stored(make_server: Any) -> None:
    """No CHATSERVER_SMTP_URL: the log says mail is off, /api/mail and /api/me say so, mail
    routes answer 404 mail_disabled, and unseen replies queue nothing."""
    srv = make_server(CHATSERVER_REPLY_EMAIL_DELAY_SECONDS="0",
                      CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    assert "mail: off (no CHATSERVER_SMTP_URL)" in srv.log()
    srv.add_staff("bo", "agent")
    ada = await _customer(srv, "no.mail@example.com")
    agent = await Agent(srv, "bo").login()
    try:
        assert (await ada.http.get("/api/mail")).json() == {"enabled": False}
        assert (await ada.http.get("/api/me")).json()["mail_enabled"] is False
        policy = " ".join((await ada.http.get("/policy")).text.split())
        assert "this chat service sends no email" in policy
        assert "Replies you have not seen" not in policy
        for path, body in (("/api/account/link", {"email": "no.mail@example.com"}),
                           ("/api/account/terminate-link", {"email": "no.mail@example.com"}),
                           ("/api/me/transcript-email", {"conversation_id": "cv_x"})):
            response = await ada.http.post(path, json=body)
            assert response.status_code == 404 and response.json()["error"] == "mail_disabled"
        vs = await ada.socket()
        conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
        await vs.close()
        ags = await agent.socket()
        await ags.wait_type("queue")
        await ags.send({"type": "claim", "conversation_id": conversation_id})
        await ags.wait_type("status", conversation_id=conversation_id)
        await ags.send({"type": "message", "conversation_id": conversation_id,
                        "body": "Unseen", "client_msg_id": "u1"})
        await ags.wait_type("ack")
        await ags.close()
        await asyncio.sleep(1.0)  # a mailer would have queued it at once (delay 0)
        assert srv.query("SELECT COUNT(*) FROM mail_outbox") == [(0,)]
    finally:
        await ada.aclose()
        await agent.aclose()


@pytest.mark.parametrize(("name", "value"), [
    ("CHATSERVER_SMTP_URL", "http://mail.example.com"),
    ("CHATSERVER_SMTP_URL", "smtp://"),
    ("CHATSERVER_SMTP_URL", "smtp://mail.example.com:99999"),
    ("CHATSERVER_SMTP_URL", "smtp://user@mail.example.com"),
    ("CHATSERVER_SMTP_URL", "smtp://mail.example.com/path"),
    ("CHATSERVER_MAIL_FROM", "a@example.com, b@example.com"),
    ("CHATSERVER_MAIL_FROM", "not an address"),
    ("CHATSERVER_MAIL_FROM", "a@example.com\nBcc: b@example.com"),
    ("CHATSERVER_PUBLIC_URL", "ftp://chat.example.com"),
    ("CHATSERVER_PUBLIC_URL", "https://chat.example.com/?x=1"),
    ("CHATSERVER_REPLY_EMAIL_DELAY_SECONDS", "soon"),
    ("CHATSERVER_MAIL_RETRY_SECONDS", "0"),
])
def test_bad_mail_settings_are_refused_by_name(tmp_path: Path, name: str, value: str) -> None:
    """Each bad mail setting raises an error naming the variable, never echoing a password."""
    with pytest.raises(SettingsError, match=name) as err:
        load(environ={"CHATSERVER_DATA_DIR": str(tmp_path), name: value})
    assert "\n" not in str(err.value)


def test_a_bad_smtp_url_stops_the_server_with_one_line(tmp_path: Path) -> None:
    """`chatserver serve` with a bad CHATSERVER_SMTP_URL exits 2 with one line naming it, and
    the password in the URL is not printed."""
    srv = Server(tmp_path / "data", env={"CHATSERVER_SMTP_URL": "smtp://u:hunter2@h:0x"})
    done = srv.cli("serve", "--port", "1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CHATSERVER_SMTP_URL" in lines[0], done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_mail_settings_are_read(tmp_path: Path) -> None:
    """The URL's parts, a From with a name, the public URL without its slash and the delay."""
    settings = load(environ={
        "CHATSERVER_DATA_DIR": str(tmp_path),
        "CHATSERVER_SMTP_URL": "smtp+starttls://me%40x.example:p%3Aw@mail.example.com",
        "CHATSERVER_MAIL_FROM": "Help Desk <help@example.com>",
        "CHATSERVER_PUBLIC_URL": "https://chat.example.com/",
        "CHATSERVER_REPLY_EMAIL_DELAY_SECONDS": "300"})
    assert settings.smtp == SmtpTarget("mail.example.com", 587, "starttls", "me@x.example", "p:w")
    assert "p:w" not in repr(settings.smtp)
    assert settings.mail_from == "Help Desk <help@example.com>"
    assert settings.public_url == "https://chat.example.com"
    assert settings.reply_email_delay_seconds == 300
    defaults = load(environ={"CHATSERVER_DATA_DIR": str(tmp_path)})
    assert defaults.smtp is None and defaults.reply_email_delay_seconds == 120
    assert (defaults.mail_from, defaults.public_url) == ("", "")
