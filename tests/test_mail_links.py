"""Sign-in and termination by email link, against a running server and a real SMTP server: the
mails are read as a mail client would and their links followed with fresh clients."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import jsonschema
import pytest
from itsdangerous import URLSafeTimedSerializer

from .mailbox import Mailbox, check_mail, csrf_of, follow_link, mail_server
from .support import Server, Visitor, open_socket

HTML = {"Accept": "text/html"}
SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "export.schema.json").read_text())
SIGNIN = "Your sign-in link"
TERMINATE = "Confirm the deletion of your account"
FAREWELL = "Your account has been deleted"


@pytest.fixture(scope="module")
def shared_box() -> Iterator[Mailbox]:
    box = Mailbox()
    box.controller.start()
    yield box
    box.controller.stop()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, shared_box: Mailbox) -> Iterator[Server]:
    """One server for the tests that use addresses of their own (limits exempt for its IP)."""
    server = mail_server(tmp_path_factory.mktemp("links"), shared_box,
                         CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    yield server
    server.stop()


@pytest.fixture
async def fresh(srv: Server) -> AsyncIterator[httpx.AsyncClient]:
    """A browser that never chatted: no cookie at all."""
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
        yield client


_open: list[Visitor] = []


@pytest.fixture(autouse=True)
async def _close_customers() -> AsyncIterator[None]:
    yield
    while _open:
        await _open.pop().aclose()


async def _customer(srv: Server, email: str, name: str = "Ada Lovelace") -> Visitor:
    """A customer who consented and gave name and email; closed after the test."""
    visitor = Visitor(srv)
    _open.append(visitor)
    return await visitor.start(name=name, email=email)


async def _ask(client: httpx.AsyncClient, path: str, email: str) -> httpx.Response:
    return await client.post(path, json={"email": email})


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def _outbox(srv: Server) -> list[tuple[object, ...]]:
    return srv.query("SELECT kind, customer_id, address FROM mail_outbox")


async def test_sign_in_link_signs_a_fresh_browser_in(srv: Server, shared_box: Mailbox,
                                                     fresh: httpx.AsyncClient) -> None:
    """A known address gets one mail with a link; a fresh browser that follows it is signed in
    to that customer at /account, with the customer's consent carried over, and can chat."""
    ada = await _customer(srv, "ada.link@example.com")
    response = await _ask(fresh, "/api/account/link", "Ada.Link@Example.com")
    assert response.status_code == 202
    [mail] = await shared_box.wait_to("ada.link@example.com", SIGNIN)
    check_mail(mail, srv.url, "ada.link@example.com")
    link = mail.link("/account/link?token=")
    assert link in mail.html

    async with httpx.AsyncClient(timeout=10) as browser:  # another browser altogether
        followed = await follow_link(browser, link, "/account/link")
        assert followed.status_code == 303
        assert followed.headers["location"] == "/account"
        assert followed.headers["referrer-policy"] == "no-referrer"
        assert "chat_session" in followed.cookies
        me = await browser.get(srv.url + "/api/me")
        assert me.status_code == 200
        body = me.json()
        assert body["customer"]["email"] == "ada.link@example.com"
        assert body["consent"] == {"policy_version": "1.01", "current": True}
        assert body["mail_enabled"] is True
        assert body["consents"][0]["method"] == "email_link"
        # The export names the carried consent and the access by link, and keeps its schema.
        export = (await browser.get(srv.url + "/api/me/export")).json()
        jsonschema.validate(export, SCHEMA)
        assert "email_link" in [r["kind"] for r in export["access_records"]]
        # The carried consent lets this browser chat in the customer's conversation.
        cookie = f"chat_session={browser.cookies['chat_session']}"
        sock = await open_socket(srv, "/ws/visitor", cookie)
        welcome = await sock.wait_type("welcome")
        await sock.close()
        original = await ada.socket()
        assert (await original.wait_type("welcome"))["conversation_id"] == welcome[
            "conversation_id"]
        await original.close()
        again = await browser.get(link)
        assert again.status_code == 400 and again.json()["error"] == "link_invalid"


async def test_opening_a_link_spends_nothing_until_its_button_is_pressed(
        srv: Server, shared_box: Mailbox, fresh: httpx.AsyncClient) -> None:
    """Mail scanners fetch links: any number of GETs of a sign-in link (and of the page it
    leads to) sign nobody in and leave the link working; the page's button, sent with its
    CSRF token from the browser that holds the link, signs that browser in, once."""
    await _customer(srv, "scanned@example.com")
    await _ask(fresh, "/api/account/link", "scanned@example.com")
    [mail] = await shared_box.wait_to("scanned@example.com", SIGNIN)
    link = mail.link("/account/link?token=")
    for _ in range(3):  # a scanner, with or without a cookie jar, following redirects
        async with httpx.AsyncClient(timeout=10, follow_redirects=True) as scanner:
            seen = await scanner.get(link, headers=HTML)
            assert seen.status_code == 200 and "Sign in" in seen.text
            assert "chat_session" not in scanner.cookies
            assert "scanned@" not in seen.text
            assert seen.history[0].headers["referrer-policy"] == "no-referrer"
            assert (await scanner.get(srv.url + "/api/me")).status_code == 401
    async with httpx.AsyncClient(timeout=10) as browser:
        held = await browser.get(link, headers=HTML)
        assert held.status_code == 303 and held.headers["location"] == "/account/link"
        assert "chat_session" not in held.cookies
        form = await browser.get(srv.url + "/account/link", headers=HTML)
        assert form.status_code == 200
        forged = await browser.post(srv.url + "/account/link", data={"csrf_token": "x"})
        assert forged.status_code == 403 and "chat_session" not in forged.cookies
        foreign = await browser.post(srv.url + "/account/link",
                                     data={"csrf_token": csrf_of(form.text)},
                                     headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403 and "chat_session" not in foreign.cookies
        done = await browser.post(srv.url + "/account/link",
                                  data={"csrf_token": csrf_of(form.text)})
        assert done.status_code == 303 and done.headers["location"] == "/account"
        assert (await browser.get(srv.url + "/api/me")).status_code == 200
        again = await browser.post(srv.url + "/account/link",
                                   data={"csrf_token": csrf_of(form.text)}, headers=HTML)
        assert again.status_code == 400 and "does not work" in again.text
    async with httpx.AsyncClient(timeout=10) as late:  # spent: a later GET is refused too
        assert (await late.get(link, headers=HTML)).status_code == 400


async def test_unknown_address_gets_the_same_answer_and_nothing_is_stored(
        srv: Server, shared_box: Mailbox, fresh: httpx.AsyncClient) -> None:
    """An unknown address gets the very same 202 body; no mail goes out, no row is stored."""
    await _customer(srv, "known@example.com")
    rows = len(_outbox(srv))
    known = await _ask(fresh, "/api/account/link", "known@example.com")
    unknown = await _ask(fresh, "/api/account/link", "nobody@example.com")
    terminate_unknown = await _ask(fresh, "/api/account/terminate-link", "nobody@example.com")
    assert known.status_code == unknown.status_code == terminate_unknown.status_code == 202
    assert known.json() == unknown.json() == terminate_unknown.json()
    assert known.headers.keys() == unknown.headers.keys()
    assert len(_outbox(srv)) == rows + 1  # the known address's mail only
    await shared_box.wait_to("known@example.com", SIGNIN)
    assert shared_box.to("nobody@example.com") == []


async def test_known_and_unknown_addresses_take_about_the_same_time(
        srv: Server, fresh: httpx.AsyncClient) -> None:
    """The answer's timing does not tell whether an address is known: every answer waits for the
    same floor (a known address's stored mail is a flushed write, which an unknown one does not
    cost: 16 ms apart under CI's load without it), and the medians of known and unknown
    addresses, asked in turn, are within a few milliseconds of each other."""
    from chatserver.web.mail import LINK_ANSWER_SECONDS

    known = []
    for n in range(12):
        await _customer(srv, f"timing{n}@example.com")
        known.append(f"timing{n}@example.com")
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    for n, address in enumerate(known):
        for kind, email in (("known", address), ("unknown", f"absent{n}@example.com")):
            started = time.perf_counter()
            response = await _ask(fresh, "/api/account/link", email)
            timings[kind].append(time.perf_counter() - started)
            assert response.status_code == 202
    assert min(timings["known"] + timings["unknown"]) >= LINK_ANSWER_SECONDS, timings
    gap = abs(statistics.median(timings["known"]) - statistics.median(timings["unknown"]))
    assert gap < 0.015, timings


@pytest.mark.parametrize("body", [
    {"email": "a@example.com, eve@example.com"},
    {"email": "a@example.com; eve@example.com"},
    {"email": "a@example.com eve@example.com"},
    {"email": "a@b@example.com"},
    {"email": ["a@example.com", "eve@example.com"]},
    {"email": "a@example.com", "cc": "eve@example.com"},
    {"email": "a@example.com", "Bcc": "eve@example.com"},
    {"email": "a@example.com", "reply_cc": ["eve@example.com"]},
    {"email": "a@example.com", "to": "eve@example.com"},
    {"email": "a@example.com\r\nBcc: eve@example.com"},
    {"email": "=?utf-8?q?eve=40example.com?="},
    {"email": "not an address"},
    {"email": ""},
    {},
    {"email": "a@example.com", "extra": 1},
])
async def test_bad_requests_are_refused_and_send_nothing(srv: Server, shared_box: Mailbox,
                                                         fresh: httpx.AsyncClient,
                                                         body: dict[str, object]) -> None:
    """Malformed or several addresses, CC in any form, another recipient, a header injection:
    422 with a code, for both link routes; no mail to anyone, nothing stored."""
    await _customer(srv, "a@example.com")
    rows = len(_outbox(srv))
    for path in ("/api/account/link", "/api/account/terminate-link"):
        response = await fresh.post(path, json=body)
        assert response.status_code == 422, response.text
        assert set(response.json()) >= {"error", "message"}
    assert len(_outbox(srv)) == rows
    assert [m for m in shared_box.mails if "eve@" in str(m.rcpt_tos) or "a@example.com" in
            str(m.rcpt_tos)] == []


async def test_tampered_foreign_expired_and_wrong_purpose_links_are_refused(
        srv: Server, shared_box: Mailbox, fresh: httpx.AsyncClient) -> None:
    """A link altered in any way, signed with another key, made for another purpose or of the
    wrong shape signs nobody in; the genuine link still works afterwards."""
    await _customer(srv, "tamper@example.com")
    await _ask(fresh, "/api/account/link", "tamper@example.com")
    [mail] = await shared_box.wait_to("tamper@example.com", SIGNIN)
    link = mail.link("/account/link?token=")
    token = _token(link)
    payload = token.split(".")[0]
    foreign = URLSafeTimedSerializer("another-secret", salt="chatserver.mail-link.signin")
    base = srv.url + "/account/link?token="
    attempts = [
        base + quote(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")),
        base + quote(foreign.dumps(payload)),
        srv.url + "/account/terminate?token=" + quote(token),  # another purpose
        srv.url + "/chat?token=" + quote(token),
        base, base + "x" * 600, srv.url + "/account/link",
    ]
    for url in attempts:
        async with httpx.AsyncClient(timeout=10) as browser:
            response = await browser.get(url, headers=HTML)
            assert response.status_code == 400, url
            assert response.headers["referrer-policy"] == "no-referrer"
            assert "chat_session" not in response.cookies and "chat_link" not in response.cookies
            assert "does not work" in response.text
    async with httpx.AsyncClient(timeout=10) as browser:
        assert (await browser.get(link)).status_code == 303


async def test_a_newer_link_voids_the_older(srv: Server, shared_box: Mailbox,
                                           fresh: httpx.AsyncClient) -> None:
    """Of two sign-in links, only the newer works."""
    await _customer(srv, "twice@example.com")
    await _ask(fresh, "/api/account/link", "twice@example.com")
    [first] = await shared_box.wait_to("twice@example.com", SIGNIN)
    await _ask(fresh, "/api/account/link", "twice@example.com")
    _, second = await shared_box.wait_to("twice@example.com", SIGNIN, count=2)
    async with httpx.AsyncClient(timeout=10) as browser:
        assert (await browser.get(first.link("/account/link"))).status_code == 400
        done = await follow_link(browser, second.link("/account/link"), "/account/link")
        assert done.status_code == 303


async def test_expired_link_is_refused(tmp_path: Path, mailbox: Mailbox) -> None:
    """A sign-in link signed more than 15 minutes ago is refused: the test signs the link's own
    id again with the server's key and a time 16 minutes back, so only the age can refuse it."""
    srv = mail_server(tmp_path, mailbox)
    try:
        await _customer(srv, "late@example.com")
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as fresh:
            await _ask(fresh, "/api/account/link", "late@example.com")
        [mail] = await mailbox.wait_to("late@example.com", SIGNIN)
        token = _token(mail.link("/account/link"))
    finally:
        srv.stop()
    secret = (srv.data_dir / "secret.key").read_text().strip()
    serializer = URLSafeTimedSerializer(secret, salt="chatserver.mail-link.signin")
    raw = serializer.loads(token)

    class Past(URLSafeTimedSerializer):
        def make_signer(self, salt=None):  # type: ignore[no-untyped-def]
            signer = super().make_signer(salt)
            signer.get_timestamp = lambda: int(time.time()) - 16 * 60  # type: ignore[attr-defined]
            return signer

    old = Past(secret, salt="chatserver.mail-link.signin").dumps(raw)
    srv.start()
    try:
        async with httpx.AsyncClient(timeout=10) as browser:
            refused = await browser.get(srv.url + "/account/link?token=" + quote(old))
            assert refused.status_code == 400
            fine = await browser.get(srv.url + "/account/link?token=" + quote(token))
            assert fine.status_code == 303  # the same id within its time still works
    finally:
        srv.stop()


async def test_link_floods_are_refused_per_address_and_per_ip(tmp_path: Path,
                                                               mailbox: Mailbox) -> None:
    """Three links per address per 15 minutes (known or not), ten requests per IP per hour;
    beyond that 429 and no mail; the address limit holds for exempt IPs too."""
    srv = mail_server(tmp_path, mailbox)
    exempt = mail_server(tmp_path, mailbox, CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    try:
        await _customer(srv, "flood@example.com")
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
            answers = [(await _ask(client, "/api/account/link", "flood@example.com")).status_code
                       for _ in range(5)]
            assert answers == [202, 202, 202, 429, 429]
            unknown = [(await _ask(client, "/api/account/terminate-link",
                                   "FLOOD2@example.com")).status_code for _ in range(4)]
            assert unknown == [202, 202, 202, 429]
            # Nine requests so far from this IP: the tenth passes, the eleventh does not.
            assert (await _ask(client, "/api/account/link", "x1@example.com")).status_code == 202
            refused = await _ask(client, "/api/account/link", "x2@example.com")
            assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
            assert "your address" in refused.json()["message"]
        await mailbox.wait_to("flood@example.com", SIGNIN, count=3)
        with pytest.raises(TimeoutError):
            await mailbox.wait_to("flood@example.com", SIGNIN, count=4, timeout=1.5)

        async with httpx.AsyncClient(base_url=exempt.url, timeout=10) as client:
            answers = [(await _ask(client, "/api/account/link", "y@example.com")).status_code
                       for _ in range(4)]
            assert answers == [202, 202, 202, 429]
    finally:
        srv.stop()
        exempt.stop()


async def test_termination_by_link_erases_and_says_goodbye(srv: Server, shared_box: Mailbox,
                                                           fresh: httpx.AsyncClient) -> None:
    """The link leads to a confirm form (the token leaves the URL at once); confirming with the
    form's CSRF token erases every account of the address as DELETE /api/me does, closes its
    chat, and sends one last mail with nothing of the conversation in it."""
    ada = await _customer(srv, "leaving@example.com", name="Secretive Name")
    sock = await ada.socket()
    await sock.wait_type("welcome")
    await sock.send({"type": "message", "body": "my secret words", "client_msg_id": "s1"})
    await sock.wait_type("ack")
    other = await _customer(srv, "staying@example.com")
    await _ask(fresh, "/api/account/terminate-link", "leaving@example.com")
    [mail] = await shared_box.wait_to("leaving@example.com", TERMINATE)
    check_mail(mail, srv.url, "leaving@example.com")
    link = mail.link("/account/terminate?token=")

    async with httpx.AsyncClient(timeout=10, headers=HTML) as browser:
        moved = await browser.get(link)
        assert moved.status_code == 303 and moved.headers["location"] == "/account/terminate"
        assert moved.headers["referrer-policy"] == "no-referrer"
        form = await browser.get(srv.url + "/account/terminate")
        assert form.status_code == 200 and "Delete my account now" in form.text
        assert "Secretive" not in form.text and "leaving@" not in form.text
        csrf = csrf_of(form.text)
        forged = await browser.post(srv.url + "/account/terminate", data={"csrf_token": "x"})
        assert forged.status_code == 403
        assert (await ada.http.get("/api/me")).status_code == 200  # nothing erased yet
        done = await browser.post(srv.url + "/account/terminate", data={"csrf_token": csrf})
        assert done.status_code == 200 and "Your account is deleted" in done.text
        assert await sock.closed_code() == 4401
        assert (await ada.http.get("/api/me")).status_code == 401
        assert (await other.http.get("/api/me")).status_code == 200
        again = await browser.post(srv.url + "/account/terminate", data={"csrf_token": csrf})
        assert again.status_code == 400

    [last] = await shared_box.wait_to("leaving@example.com", FAREWELL)
    check_mail(last, srv.url, "leaving@example.com")
    for forbidden in ("secret words", "Secretive"):
        assert forbidden not in last.raw.decode("utf-8", "replace")
    assert "/account/" not in last.text  # no link into an account that is gone
    await _wait_for_outbox_without_address(srv)


async def _wait_for_outbox_without_address(srv: Server) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while any(address for _, _, address in _outbox(srv)):
        assert loop.time() < deadline, "the farewell's address stayed in the outbox"
        await asyncio.sleep(0.05)


async def test_erased_data_leaves_no_trace_after_the_farewell(srv: Server, shared_box: Mailbox,
                                                              fresh: httpx.AsyncClient) -> None:
    """Once the farewell is sent, no file of the data folder holds the address any more."""
    await _customer(srv, "no.trace.at.all@example.com")
    await _ask(fresh, "/api/account/terminate-link", "no.trace.at.all@example.com")
    [mail] = await shared_box.wait_to("no.trace.at.all@example.com", TERMINATE)
    async with httpx.AsyncClient(timeout=10, headers=HTML) as browser:
        await browser.get(mail.link("/account/terminate"))
        form = await browser.get(srv.url + "/account/terminate")
        csrf = csrf_of(form.text)
        done = await browser.post(srv.url + "/account/terminate", data={"csrf_token": csrf})
        assert done.status_code == 200
    await shared_box.wait_to("no.trace.at.all@example.com", FAREWELL)
    # The address is overwritten once the mail is sent, and the files compacted right after.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        holding = [p.name for p in srv.data_dir.iterdir()
                   if p.is_file() and b"no.trace.at.all" in p.read_bytes()]
        if not holding:
            break
        assert loop.time() < deadline, f"the address stayed in {holding}"
        await asyncio.sleep(0.05)


async def test_mail_for_an_erased_customer_is_dropped_unsent(tmp_path: Path,
                                                            mailbox: Mailbox) -> None:
    """Mail queued while the SMTP server refuses it, for a customer then erased, never goes."""
    mailbox.refuse = ["451 4.3.0 try again later"] * 50
    srv = mail_server(tmp_path, mailbox, CHATSERVER_MAIL_RETRY_SECONDS="0.2")
    try:
        ada = await _customer(srv, "erase.me@example.com")
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as fresh:
            assert (await _ask(fresh, "/api/account/link", "erase.me@example.com")
                    ).status_code == 202
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not mailbox.refuse or len(mailbox.refuse) > 48:  # two attempts refused
            assert loop.time() < deadline
            await asyncio.sleep(0.05)
        assert (await ada.http.delete("/api/me")).status_code == 200
        assert _outbox(srv) == []
        mailbox.refuse = []
        with pytest.raises(TimeoutError):
            await mailbox.wait_to("erase.me@example.com", timeout=1.5)
    finally:
        srv.stop()
