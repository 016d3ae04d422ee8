"""The customer's rights over a running server: correct, export, withdraw, re-consent, erase."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import jsonschema

from . import databases
from .support import Agent, Server, Visitor, cookie_header, open_socket

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "export.schema.json").read_text())


def _marker(kind: str) -> str:
    return f"{kind}{uuid.uuid4().hex[:12]}"


async def test_account_corrections_are_validated_and_shown_everywhere(
    server: Server, visitor: Visitor, admin: Agent
) -> None:
    """PATCH /api/me corrects details with the pre-chat rules; queue and transcripts follow."""
    vs = await visitor.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    await vs.send({"type": "message", "body": "before the fix", "client_msg_id": "b"})
    await vs.wait_type("ack")

    bad = [({"email": "a@b.co, c@d.co"}, "cc_not_allowed"), ({"cc": "x@y.co"}, "cc_not_allowed"),
           ({"name": ""}, "invalid_name"), ({"phone": "1"}, "unknown_field"),
           ({"email": "nope"}, "invalid_email"), ({}, "invalid")]
    for body, code in bad:
        response = await visitor.http.patch("/api/me", json=body)
        assert response.status_code == 422 and response.json()["error"] == code, body
    malformed = await visitor.http.patch("/api/me", content=b"{not json",
                                         headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"] == "invalid_json"

    fixed = await visitor.http.patch("/api/me", json={"name": "Grace Hopper",
                                                       "company": "Navy"})
    assert fixed.status_code == 200
    me = (await visitor.http.get("/api/me")).json()
    assert me["customer"]["name"] == "Grace Hopper" and me["customer"]["company"] == "Navy"
    assert me["customer"]["email"].endswith("@example.com")  # untouched

    transcript = await admin.http.get(
        f"/api/admin/conversations/{conversation_id}/transcript?format=json")
    data = transcript.json()
    assert data["customer"]["name"] == "Grace Hopper"
    assert data["messages"][0]["author"] == "Grace Hopper"
    ags = await admin.socket()
    queue = await ags.wait_type("queue")
    item = next(c for c in queue["conversations"] if c["conversation_id"] == conversation_id)
    assert item["customer"]["name"] == "Grace Hopper"
    await ags.close()
    await vs.close()


async def test_corrections_need_a_session_and_an_account(server: Server) -> None:
    """Without a session PATCH is 401; a session that never gave details gets no_customer."""
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        assert (await anonymous.patch("/api/me", json={"name": "x"})).status_code == 401
        assert (await anonymous.get("/api/me/export")).status_code == 401
        assert (await anonymous.delete("/api/me")).status_code == 401
    v = Visitor(server)
    await v.consent()
    response = await v.http.patch("/api/me", json={"name": "x"})
    assert response.status_code == 404 and response.json()["error"] == "no_customer"
    # What is held for such a session (its consent and access records) is still exported.
    export = await v.http.get("/api/me/export")
    assert export.status_code == 200
    document = export.json()
    jsonschema.validate(document, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert document["account"] is None and len(document["consents"]) == 1
    assert document["access_records"][0]["kind"] == "session_start"
    await v.aclose()


async def test_export_holds_everything_and_matches_the_schema(server: Server, agent: Agent
                                                              ) -> None:
    """The export has the account, consents, conversations with messages, sessions, access."""
    v = Visitor(server)
    await v.start(name="Export Me", email="export@example.com", company="Exports Ltd")
    vs = await v.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    await vs.send({"type": "message", "body": "export this", "client_msg_id": "e1"})
    await vs.wait_type("ack")
    ags = await agent.socket()
    await ags.wait_type("queue")
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    await ags.send({"type": "message", "conversation_id": conversation_id, "body": "our reply",
                    "client_msg_id": "r1"})
    await ags.wait_type("ack", client_msg_id="r1")

    response = await v.http.get("/api/me/export")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    document = response.json()
    jsonschema.validate(document, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert document["account"]["email"] == "export@example.com"
    assert document["consents"][0]["policy_version"] == "1.01"
    [conversation] = document["conversations"]
    assert [m["body"] for m in conversation["messages"] if m["sender"] != "system"] == [
        "export this", "our reply"]
    assert {a["kind"] for a in document["access_records"]} == {"session_start", "socket"}
    assert len(document["sessions"]) == 1

    cli = server.cli("export", "--email", "EXPORT@example.com")
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout)
    jsonschema.validate(printed, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert printed["account"] == document["account"]
    # Read marks move as the reply reaches the still open chat; the rest is the same.
    assert [{k: v for k, v in c.items() if k != "read"} for c in printed["conversations"]] == [
        {k: v for k, v in c.items() if k != "read"} for c in document["conversations"]]
    assert server.cli("export", "--email", "nobody@example.com").returncode == 1
    await vs.close()
    await ags.close()
    await v.aclose()


async def test_withdrawal_stops_the_chat_until_consent_is_given_again(server: Server) -> None:
    """Withdrawing closes the socket with 4403; new sockets are refused; consenting reopens."""
    v = Visitor(server)
    await v.start()
    vs = await v.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    response = await v.http.post("/api/consent/withdraw", json={})
    assert response.status_code == 200 and response.json()["withdrawn"] == 1
    assert await vs.closed_code() == 4403
    refused = await v.socket()
    assert await refused.closed_code() == 4403
    me = (await v.http.get("/api/me")).json()
    assert me["consent"] is None
    assert me["consents"][0]["withdrawn_at"] is not None

    again = await v.http.post("/api/consent", json={"policy_version": "1.01",
                                                     "method": "account"})
    assert again.status_code == 200
    back = await v.socket()
    welcome = await back.wait_type("welcome")
    assert welcome["conversation_id"] == conversation_id  # customer and conversation kept
    me = (await v.http.get("/api/me")).json()
    assert [c["method"] for c in me["consents"]] == ["account", "widget"]
    await back.close()
    await v.aclose()


async def test_new_policy_stops_chats_until_accepted(make_server: Callable[..., Server],
                                                    tmp_path: Path) -> None:
    """Publishing a version closes consented sockets with 4403; old consent gets 409; new works."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("boss", "admin")
    boss = await Agent(server, "boss").login()
    v = await Visitor(server).start()
    vs = await v.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]

    published = await boss.http.post("/api/admin/policies", json={
        "version": "2.0", "effective_date": "2026-12-01", "summary": "We now keep less.",
        "text": "# Policy 2.0\n\nWe keep less.\n"})
    assert published.status_code == 200, published.text
    assert await vs.closed_code() == 4403
    assert any(f.get("code") == "consent_required" for f in vs.frames)
    refused = await v.socket()
    assert await refused.closed_code() == 4403
    stale = await v.consent("1.01")
    assert stale.status_code == 409 and stale.json()["error"] == "policy_outdated"
    policy = (await v.http.get("/api/policy")).json()
    assert policy["version"] == "2.0" and policy["summary"] == "We now keep less."
    fresh = await v.consent("2.0", policy_sha256=policy["sha256"])
    assert fresh.status_code == 200
    back = await v.socket()
    assert (await back.wait_type("welcome"))["conversation_id"] == conversation_id
    await back.close()

    page = await v.http.get("/policy")
    assert "We now keep less." in page.text and "1.01" in page.text  # history lists both
    old = await v.http.get("/policy/1.01")
    assert old.status_code == 200 and "no longer current" in old.text
    dup = await boss.http.post("/api/admin/policies", json={
        "version": "2.0", "effective_date": "2026-12-01", "summary": "x", "text": "y"})
    assert dup.status_code == 409 and dup.json()["error"] == "version_exists"

    source = tmp_path / "p3.md"
    source.write_text("# Policy 3\n")
    cli = server.cli("policy", "publish", str(source), "--version", "3.0", "--summary", "Third")
    assert cli.returncode == 0, cli.stderr
    await v.aclose()
    await boss.aclose()


async def test_erasure_leaves_no_trace_in_the_data_folder(make_server: Callable[..., Server]
                                                          ) -> None:
    """After DELETE /api/me no byte of name, email, company, IP, agent or message remains."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("helper", "agent")
    name, company, body, reply = (_marker("Name"), _marker("Co"), _marker("Body"),
                                  _marker("Reply"))
    email = _marker("mail") + "@example.com"
    ip, agent_string = "203.0.113.77", _marker("Browser")
    headers = {"X-Forwarded-For": ip, "User-Agent": agent_string}
    v = Visitor(server)
    v.http.headers.update(headers)
    await v.start(name=name, email=email, company=company)
    from websockets.asyncio.client import connect

    ws = await connect(server.ws_url + "/ws/visitor",
                       additional_headers={"Cookie": cookie_header(v.http), **headers})
    from .support import Socket

    vs = Socket(ws)
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    for n in range(20):
        await vs.send({"type": "message", "body": f"{body} {n}", "client_msg_id": f"m{n}"})
    await vs.wait_type("ack", client_msg_id="m19")
    helper = await Agent(server, "helper").login()
    ags = await helper.socket()
    await ags.wait_type("queue")
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    await ags.send({"type": "message", "conversation_id": conversation_id, "body": reply,
                    "client_msg_id": "r"})
    await ags.wait_type("ack", client_msg_id="r")
    await ags.send({"type": "typing", "conversation_id": conversation_id, "state": True})

    # The search index keeps words folded to lower case: look for those copies too.
    markers = [name, email, company, body, reply, ip, agent_string, body.lower(), reply.lower()]
    files = [p for p in server.data_dir.rglob("*") if p.is_file()]
    if server.on_postgres:  # the rows themselves: tests/test_storage_privacy.py checks pages
        assert databases.tables_holding(server.database_url, [body])  # the check can see them
    else:
        assert any(body.encode() in p.read_bytes() for p in files)  # the check can see them

    erased = await v.http.delete("/api/me")
    assert erased.status_code == 200 and erased.json()["erased"] is True
    assert "chat_session" in erased.headers["set-cookie"]
    assert await vs.closed_code() == 4401
    # The agent, mid-conversation, gets a clear answer and keeps its socket.
    await ags.send({"type": "message", "conversation_id": conversation_id, "body": "hello?",
                    "client_msg_id": "late"})
    assert (await ags.wait_type("error", conversation_id=conversation_id))["code"] == "not_found"
    await ags.send({"type": "ping"})
    await ags.wait_type("pong")

    again = await v.http.delete("/api/me")
    assert again.status_code == 401  # erasing twice: nothing left to erase, nothing half done
    for path in [p for p in server.data_dir.rglob("*") if p.is_file()]:
        content = path.read_bytes()
        for marker in markers:
            assert marker.encode() not in content, (marker, path.name)
    for marker in markers:
        assert marker not in server.log(), marker

    assert databases.tables_holding(server.database_url, markers) == []
    tombstone = server.query("SELECT reason, conversations, messages, policy_versions "
                             "FROM erasures")
    assert tombstone == [("request", 1, 22, '["1.01"]')]  # 20 + joined notice + reply
    actions = [r[0] for r in server.query("SELECT action FROM audit_log")]
    assert "customer.erase" in actions
    await ags.close()
    await helper.aclose()
    await v.aclose()


async def test_cli_erase_ends_an_open_chat_at_its_next_message(server: Server) -> None:
    """`chatserver erase` runs in another process; the server closes the socket with 4401 when
    the erased visitor next writes, and stores nothing."""
    email = _marker("cli") + "@example.com"
    v = await Visitor(server).start(name="Shell Erased", email=email)
    s = await v.socket()
    await s.wait_type("welcome")
    done = server.cli("erase", "--email", email)
    assert done.returncode == 0 and "erased er_" in done.stdout, done.stderr
    assert email not in done.stdout
    await s.send({"type": "message", "body": "still there?", "client_msg_id": "late"})
    assert await s.closed_code() == 4401
    assert any(f.get("code") == "not_signed_in" for f in s.frames)
    assert (await v.http.get("/api/me")).status_code == 401
    assert server.cli("erase", "--email", email).returncode == 1  # nothing left
    await v.aclose()


async def test_legal_hold_blocks_erasure_and_admin_erase_works_after_release(
    server: Server, admin: Agent
) -> None:
    """An admin's legal hold refuses erasure (409, nothing deleted); released, admin erases."""
    v = Visitor(server)
    email = _marker("hold") + "@example.com"
    await v.start(name="Held", email=email)
    found = await admin.http.get("/api/admin/customers", params={"q": email})
    [customer] = found.json()["customers"]
    held = await admin.http.post(f"/api/admin/customers/{customer['id']}/legal-hold",
                                 json={"hold": True})
    assert held.status_code == 200 and held.json()["customer"]["legal_hold"] is True
    refused = await v.http.delete("/api/me")
    assert refused.status_code == 409 and refused.json()["error"] == "legal_hold"
    assert (await v.http.get("/api/me")).json()["customer"]["email"] == email
    await admin.http.post(f"/api/admin/customers/{customer['id']}/legal-hold",
                          json={"hold": False})
    gone = await admin.http.delete(f"/api/admin/customers/{customer['id']}")
    assert gone.status_code == 200 and gone.json()["erased"] is True
    assert (await v.http.get("/api/me")).status_code == 401
    after = await admin.http.get("/api/admin/customers", params={"q": email})
    assert after.json()["total"] == 0
    await v.aclose()


async def test_agents_cannot_use_privacy_admin_routes(server: Server, agent: Agent) -> None:
    """Customers, legal hold, erase, purge and policy publishing are for admins only."""
    for method, path in [("GET", "/api/admin/customers"), ("POST", "/api/admin/purge"),
                         ("POST", "/api/admin/policies"), ("GET", "/api/admin/policies"),
                         ("DELETE", "/api/admin/customers/cu_x"),
                         ("POST", "/api/admin/customers/cu_x/legal-hold")]:
        response = await agent.http.request(method, path, json={})
        assert response.status_code == 403, (method, path)


async def test_retention_zero_wipes_accounts_with_nothing_open(
    make_server: Callable[..., Server],
) -> None:
    """With CHATSERVER_RETENTION_DAYS=0 a purge wipes closed accounts and keeps open ones."""
    server = make_server(CHATSERVER_RETENTION_DAYS="0", CHATSERVER_PURGE_INTERVAL_SECONDS="0")
    done = await Visitor(server).start(name="Done", email="done@example.com")
    busy = await Visitor(server).start(name="Busy", email="busy@example.com")
    for who in (done, busy):
        s = await who.socket()
        await s.wait_type("welcome")
        await s.send({"type": "message", "body": "hi", "client_msg_id": "1"})
        await s.wait_type("ack")
        if who is done:
            await s.send({"type": "close"})
            await s.wait_type("status", status="closed")
        await s.close()
    dry = server.cli("purge", "--dry-run")
    assert dry.returncode == 0 and "would wipe: 1 accounts" in dry.stdout, dry.stdout
    assert (await done.http.get("/api/me")).status_code == 200  # a dry run changes nothing
    real = server.cli("purge")
    assert real.returncode == 0 and "wiped: 1 accounts" in real.stdout, real.stdout
    assert "done@example.com" not in real.stdout
    assert (await done.http.get("/api/me")).status_code == 401
    assert (await busy.http.get("/api/me")).status_code == 200
    for v in (done, busy):
        await v.aclose()


async def test_pages_load_nothing_from_third_parties(server: Server) -> None:
    """Every page is same-origin only: a strict CSP and no element loading a foreign URL."""
    from html.parser import HTMLParser

    class Resources(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.urls: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            for key, value in attrs:
                if value and (key == "src" or (tag == "link" and key == "href")):
                    self.urls.append(value)

    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ("/", "/widget", "/policy", "/cookies", "/account", "/agent", "/admin"):
            response = await client.get(path)
            csp = response.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "object-src 'none'" in csp, path
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, path
            parser = Resources()
            parser.feed(response.text)
            foreign = [u for u in parser.urls if "//" in u and not u.startswith(server.url)]
            assert foreign == [], path


async def test_agent_socket_still_works_after_unrelated_erasure(server: Server) -> None:
    """Bad input around erasure: a forged cookie on export gets 401, never a 500."""
    forged = await open_socket(server, "/ws/visitor", "chat_session=forged")
    assert await forged.closed_code() == 4401
    async with httpx.AsyncClient(base_url=server.url,
                                 headers={"Cookie": "chat_session=forged.value.sig"}) as c:
        assert (await c.get("/api/me/export")).status_code == 401
        assert (await c.delete("/api/me")).status_code == 401


async def test_policy_page_states_practice_from_settings(
    make_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Retention periods, the contact address and the sub-processors file appear on /policy;
    the contact address is offered in the widget for when cookies are blocked."""
    tools = tmp_path / "subprocessors.json"
    tools.write_text(json.dumps([{"name": "MailRelay GmbH", "purpose": "sending replies by email",
                                  "data": "email address, message text", "country": "Germany"}]))
    server = make_server(CHATSERVER_RETENTION_DAYS="90", CHATSERVER_ACCESS_RETENTION_DAYS="7",
                         CHATSERVER_CONVERSATION_RETENTION_DAYS="30",
                         CHATSERVER_UNFINISHED_SESSION_HOURS="3",
                         CHATSERVER_CONTACT_EMAIL="privacy@shop.example",
                         CHATSERVER_SUBPROCESSORS_FILE=str(tools))
    async with httpx.AsyncClient(base_url=server.url) as client:
        text = (await client.get("/policy")).text
        widget = (await client.get("/widget")).text
    for expected in ("after\n        90 days", "deleted after\n        7 days", "30\n        days",
                     "deleted after 3 hours",
                     "privacy@shop.example", "MailRelay GmbH", "sending replies by email",
                     "Germany"):
        assert " ".join(expected.split()) in " ".join(text.split()), expected
    assert "privacy@shop.example" in widget


async def test_on_behalf_confirmation_is_kept_with_the_consent(server: Server) -> None:
    """Writing for one's own end-users is confirmed at consent and kept in the receipt."""
    v = Visitor(server)
    consent = await v.http.post("/api/consent", json={"policy_version": "1.01",
                                                       "on_behalf": True})
    assert consent.status_code == 200
    await v.register(name="Reseller", email="reseller@example.com")
    receipt = (await v.http.get("/api/me")).json()["consents"][0]
    assert receipt["on_behalf"] is True
    export = (await v.http.get("/api/me/export")).json()
    assert export["consents"][0]["on_behalf"] is True
    bad = await v.http.post("/api/consent", json={"policy_version": "1.01", "on_behalf": "yes"})
    assert bad.status_code == 422
    await v.aclose()


async def test_admin_corrects_a_customer_for_an_emailed_request(server: Server, admin: Agent
                                                                ) -> None:
    """An admin corrects details with the pre-chat rules; the audit names fields, not values."""
    email = _marker("fix") + "@example.com"
    v = await Visitor(server).start(name="Misspelt", email=email)
    [customer] = (await admin.http.get("/api/admin/customers",
                                       params={"q": email})).json()["customers"]
    bad = await admin.http.patch(f"/api/admin/customers/{customer['id']}",
                                 json={"email": "a@b.co, c@d.co"})
    assert bad.status_code == 422 and bad.json()["error"] == "cc_not_allowed"
    fixed = await admin.http.patch(f"/api/admin/customers/{customer['id']}",
                                   json={"name": "Spelt Right"})
    assert fixed.status_code == 200 and fixed.json()["customer"]["name"] == "Spelt Right"
    assert (await v.http.get("/api/me")).json()["customer"]["name"] == "Spelt Right"
    entries = (await admin.http.get("/api/admin/audit",
                                    params={"action": "customer.correct"})).json()["entries"]
    assert entries[0]["detail"] == {"fields": ["name"]}
    assert "Spelt Right" not in json.dumps(entries)
    missing = await admin.http.patch("/api/admin/customers/cu_missing", json={"name": "x"})
    assert missing.status_code == 404
    await v.aclose()
