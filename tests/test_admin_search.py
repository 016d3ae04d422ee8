"""Admin searches and filters: the validation agrees with the OpenAPI document, a control
character is never a wildcard, and the searches can travel in a body instead of a URL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from .support import Agent, Server, Visitor


async def _conversation(server: Server, body: str, email: str) -> str:
    v = Visitor(server)
    await v.start(name="Searcher", email=email)
    s = await v.socket()
    conversation_id = (await s.wait_type("welcome"))["conversation_id"]
    await s.send({"type": "message", "body": body, "client_msg_id": "1"})
    await s.wait_type("ack")
    await s.close()
    await v.aclose()
    return str(conversation_id)


async def test_a_nul_or_other_control_character_is_refused_not_a_wildcard(
        server: Server, admin: Agent) -> None:
    """A search for NUL (which SQLite's LIKE reads as the end of the pattern, so it matched
    everyone) is 422 naming the field, in every search and filter of the console."""
    await _conversation(server, "anything", f"n{uuid.uuid4().hex[:8]}@example.com")
    for value in ("\x00", "a\x00", "\x1b[2J", "x\ny"):
        for path, name in [("/api/admin/conversations", "q"), ("/api/admin/conversations", "email"),
                           ("/api/admin/customers", "q"), ("/api/admin/audit", "action"),
                           ("/api/admin/audit", "actor"), ("/api/admin/audit", "target")]:
            response = await admin.http.get(path, params={name: value})
            assert response.status_code == 422, (path, name, value, response.text[:200])
            assert response.json()["field"] == name
        for path in ("/api/admin/search/conversations", "/api/admin/search/customers"):
            response = await admin.http.post(path, json={"q": value})
            assert response.status_code == 422 and response.json()["field"] == "q"


async def test_filters_the_document_forbids_are_refused(server: Server, admin: Agent) -> None:
    """Empty dates, statuses and agents, and a q over 200 characters, are 422 as the OpenAPI
    document says, not silently taken as no filter or cut short."""
    cases = [("/api/admin/conversations", {"from": ""}), ("/api/admin/conversations", {"to": ""}),
             ("/api/admin/conversations", {"status": ""}),
             ("/api/admin/conversations", {"agent": ""}),
             ("/api/admin/conversations", {"q": "x" * 201}),
             ("/api/admin/conversations", {"email": "x" * 255}),
             ("/api/admin/customers", {"q": "x" * 201}),
             ("/api/admin/export", {"from": ""}), ("/api/admin/export", {"to": ""}),
             ("/api/admin/audit", {"since": ""}), ("/api/admin/audit", {"before": ""})]
    for path, params in cases:
        response = await admin.http.get(path, params=params)
        assert response.status_code == 422, (path, params, response.status_code)
        assert response.json()["field"] == next(iter(params))
    ok = await admin.http.get("/api/admin/conversations", params={"q": "x" * 200, "email": ""})
    assert ok.status_code == 200


async def test_post_search_answers_as_the_get_list_does(server: Server, admin: Agent) -> None:
    """POST /api/admin/search/conversations and /customers take the same filters in a body and
    answer exactly as the GET lists do; unknown fields and wrong types are 422."""
    word = "ps" + uuid.uuid4().hex[:8]
    email = f"{word}@example.com"
    target = await _conversation(server, f"my {word}kettle sings", email)
    today = str(datetime.now(UTC).date())
    filters = {"q": f"{word}kettle", "email": email, "status": "queued", "from": today,
               "to": today}
    by_get = await admin.http.get("/api/admin/conversations", params=filters)
    by_post = await admin.http.post("/api/admin/search/conversations",
                                    json={**filters, "limit": 50, "offset": 0})
    assert by_post.status_code == 200, by_post.text
    assert by_post.json() == by_get.json()
    assert [c["id"] for c in by_post.json()["conversations"]] == [target]
    customers = await admin.http.post("/api/admin/search/customers", json={"q": email})
    assert [c["email"] for c in customers.json()["customers"]] == [email]
    assert customers.json() == (await admin.http.get("/api/admin/customers",
                                                     params={"q": email})).json()
    for path, body in [("/api/admin/search/conversations", {"query": "x"}),
                       ("/api/admin/search/conversations", {"limit": "5"}),
                       ("/api/admin/search/conversations", {"agent": True}),
                       ("/api/admin/search/conversations", {"to": "tomorrow"}),
                       ("/api/admin/search/customers", {"q": 5}),
                       ("/api/admin/search/customers", {"offset": -1})]:
        response = await admin.http.post(path, json=body)
        assert response.status_code == 422, (path, body)
    agent = await Agent(server, "agent").login()
    refused = await agent.http.post("/api/admin/search/customers", json={"q": email})
    assert refused.status_code == 403
    await agent.aclose()


async def test_policy_effective_date_must_be_a_near_real_day(make_server: Callable[..., Server]
                                                             ) -> None:
    """An effective date centuries ahead, before 2000 or not on the calendar is 422; a date
    within a year is taken, from the console and from `chatserver policy publish`."""
    server = make_server()
    server.add_staff("boss", "admin")
    boss = await Agent(server, "boss").login()
    today = datetime.now(UTC).date()
    for day in ("2999-01-01", "9999-12-31", "0001-01-01", "1999-12-31", "2026-02-31",
                str(today + timedelta(days=400))):
        response = await boss.http.post("/api/admin/policies", json={
            "version": "3." + uuid.uuid4().hex[:4], "effective_date": day, "summary": "s",
            "text": "t"})
        assert response.status_code == 422, (day, response.text)
        assert response.json()["field"] == "effective_date"
    soon = await boss.http.post("/api/admin/policies", json={
        "version": "3.0", "effective_date": str(today + timedelta(days=30)), "summary": "s",
        "text": "t"})
    assert soon.status_code == 200, soon.text
    policy = server.data_dir.parent / "policy.md"
    policy.write_text("# Policy\n")
    done = server.cli("policy", "publish", str(policy), "--version", "3.1", "--summary", "s",
                      "--effective-date", "2999-01-01")
    assert done.returncode != 0 and "effective date" in done.stderr
    await boss.aclose()
