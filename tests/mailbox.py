"""A real SMTP server for tests (aiosmtpd on a free port) that keeps every mail it is given, and
helpers to read those mails as a mail client would."""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .support import Server, free_port

LINK_RE = re.compile(r"https?://[^\s<>\"']+")


@dataclass
class Caught:
    """One mail as the SMTP server took it: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "no text/plain part"
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        assert part is not None, "no text/html part"
        return str(part.get_content())

    def links(self) -> list[str]:
        return LINK_RE.findall(self.text)

    def link(self, path: str) -> str:
        found = [u for u in self.links() if path in u]
        assert len(found) == 1, f"expected one {path} link in:\n{self.text}"
        return found[0]


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        with self.box.lock:
            if self.box.refuse:
                return self.box.refuse.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = message_from_bytes(raw, policy=default)
        assert isinstance(parsed, EmailMessage)
        with self.box.lock:
            self.box.mails.append(Caught(str(envelope.mail_from), list(envelope.rcpt_tos), raw,
                                         parsed))
        return "250 Message accepted for delivery"


class Mailbox:
    """Every mail aiosmtpd took; `refuse` holds answers to give RCPT instead of accepting.

    With `users` it demands AUTH; with `tls` ("starttls" or "implicit") and a certificate it
    speaks TLS as a real mail server would."""

    def __init__(self, *, users: dict[str, str] | None = None, tls: str | None = None,
                 cert: tuple[Path, Path] | None = None) -> None:
        self.lock = threading.Lock()
        self.mails: list[Caught] = []
        self.refuse: list[str] = []
        self.logins: list[str] = []
        self.port = free_port()
        self.tls = tls
        options: dict[str, Any] = {}
        if users is not None:
            options.update(authenticator=self._authenticator(users), auth_required=True,
                           auth_require_tls=tls is not None)
        if tls is not None:
            assert cert is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
            if tls == "implicit":
                options["ssl_context"] = context
            else:
                options.update(tls_context=context, require_starttls=True)
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port,
                                     **options)

    def _authenticator(self, users: dict[str, str]) -> Callable[..., AuthResult]:
        def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                  data: Any) -> AuthResult:
            ok = (isinstance(data, LoginPassword)
                  and users.get(data.login.decode()) == data.password.decode())
            if ok:
                self.logins.append(data.login.decode())
            return AuthResult(success=ok)

        return check

    @property
    def url(self) -> str:
        scheme = {None: "smtp", "starttls": "smtp+starttls", "implicit": "smtps"}[self.tls]
        host = "127.0.0.1" if self.tls is None else "localhost"
        return f"{scheme}://{host}:{self.port}"

    def to(self, address: str) -> list[Caught]:
        with self.lock:
            return [m for m in self.mails if address.lower() in
                    [r.lower() for r in m.rcpt_tos] or address.lower() in str(m.message["To"])]

    async def wait_for(self, predicate: Callable[[Caught], bool], timeout: float = 10,
                       count: int = 1) -> list[Caught]:
        """The first `count` mails matching, waiting for them up to `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self.lock:
                found = [m for m in self.mails if predicate(m)]
            if len(found) >= count:
                return found[:count]
            if loop.time() > deadline:
                raise TimeoutError(f"{len(found)} of {count} mails came; all: "
                                   f"{[(m.rcpt_tos, m.message['Subject']) for m in self.mails]}")
            await asyncio.sleep(0.05)

    async def wait_to(self, address: str, subject: str | None = None, timeout: float = 10,
                      count: int = 1) -> list[Caught]:
        return await self.wait_for(
            lambda m: m.rcpt_tos == [address]
            and (subject is None or m.message["Subject"] == subject), timeout, count)


def mail_server(tmp_path: Path, box: Mailbox, smtp_url: str | None = None, **env: str
                ) -> Server:
    """A chat server that sends its mail to `box`, links starting with its own URL."""
    port = free_port()
    srv = Server(tmp_path / f"data-{port}", port=port, env={
        "CHATSERVER_SMTP_URL": smtp_url or box.url,
        "CHATSERVER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CHATSERVER_MAIL_FROM": "Example Support <support@example.com>",
        **env,
    })
    return srv.start()


class _Tags(HTMLParser):
    """Every tag and attribute of an HTML part."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, Any]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def check_mail(mail: Caught, public_url: str, recipient: str) -> None:
    """What every mail must be: one recipient (the one given), From our address, a text and an
    HTML part, no remote resources or images, every link on our own public URL."""
    assert mail.rcpt_tos == [recipient]
    assert mail.mail_from == "support@example.com"
    message = mail.message
    for header in ("Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc"):
        assert message[header] is None, header
    assert message.get_all("To") == [recipient]
    assert message["From"] == "Example Support <support@example.com>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    parser = _Tags()
    parser.feed(mail.html)
    for tag, attrs in parser.tags:
        assert tag not in {"img", "script", "iframe", "object", "embed", "link", "video",
                           "audio", "picture", "source", "form"}, tag
        assert "src" not in attrs and "background" not in attrs, (tag, attrs)
        style = attrs.get("style") or ""
        assert "url(" not in style, style
        href = attrs.get("href")
        if href is not None:
            assert href.startswith((public_url + "/", "mailto:")), href
    for url in mail.links():
        assert url.startswith(public_url + "/"), url


CSRF_FIELD = 'name="csrf_token" value="'


def csrf_of(page: str) -> str:
    """The CSRF token of the one form on a confirm page."""
    return page.split(CSRF_FIELD)[1].split('"')[0]


async def follow_link(client: httpx.AsyncClient, link: str, confirm_path: str
                      ) -> httpx.Response:
    """Follow a link from a mail as a person does: open it (the token moves into a cookie and
    the browser lands on `confirm_path`), then press the page's button. The button's answer."""
    base = link.split("/", 3)[:3]
    origin = "/".join(base)
    held = await client.get(link, headers={"Accept": "text/html"})
    assert held.status_code == 303, held.text
    assert held.headers["location"] == confirm_path
    assert held.headers["referrer-policy"] == "no-referrer"
    form = await client.get(origin + confirm_path, headers={"Accept": "text/html"})
    assert form.status_code == 200, form.text
    return await client.post(origin + confirm_path, data={"csrf_token": csrf_of(form.text)},
                             headers={"Accept": "text/html"})
