"""Canned responses over HTTP: admins manage them (audited), staff read them, bad input is
refused with the field named and nothing changed (issue 12, step 6)."""

from __future__ import annotations

import httpx

from .support import Agent, Server

SCRIPT = '<script>alert(1)</script>Hi {customer_first_name}, {agent_name} here.'


async def test_admins_manage_canned_responses_and_agents_read_them(
    server: Server, admin: Agent, agent: Agent
) -> None:
    """Create, list, change and delete; each change is in the audit log; agents read the list
    but may not change it."""
    made = await admin.http.post("/api/admin/canned",
                                 json={"shortcut": "Hello", "body": SCRIPT})
    assert made.status_code == 200, made.text
    item = made.json()["canned"]
    assert item["shortcut"] == "hello" and item["body"] == SCRIPT

    listed = (await agent.http.get("/api/agent/canned")).json()["canned"]
    assert any(c["id"] == item["id"] and c["body"] == SCRIPT for c in listed)
    assert (await agent.http.get("/api/admin/canned")).status_code == 403
    refused = await agent.http.post("/api/admin/canned", json={"shortcut": "x", "body": "y"})
    assert refused.status_code == 403

    changed = await admin.http.patch(f"/api/admin/canned/{item['id']}",
                                     json={"body": "Bye {customer_first_name}"})
    assert changed.status_code == 200 and changed.json()["canned"]["shortcut"] == "hello"
    assert changed.json()["canned"]["body"] == "Bye {customer_first_name}"

    gone = await admin.http.delete(f"/api/admin/canned/{item['id']}")
    assert gone.status_code == 200 and gone.json() == {"deleted": item["id"]}
    assert (await admin.http.delete(f"/api/admin/canned/{item['id']}")).status_code == 404

    log = (await admin.http.get("/api/admin/audit", params={"target": f"canned:{item['id']}"}))
    actions = [e["action"] for e in log.json()["entries"]]
    assert {"canned.create", "canned.update", "canned.delete"} <= set(actions)


async def test_bad_canned_responses_are_refused_and_change_nothing(
    server: Server, admin: Agent
) -> None:
    """Bad shortcuts, empty or overlong bodies, unknown placeholders and taken shortcuts get
    422/409 naming the problem; nothing is stored."""
    before = (await admin.http.get("/api/admin/canned")).json()["canned"]
    cases = [
        ({"shortcut": "", "body": "x"}, 422, "invalid_shortcut"),
        ({"shortcut": "has space", "body": "x"}, 422, "invalid_shortcut"),
        ({"shortcut": "/slash", "body": "x"}, 422, "invalid_shortcut"),
        ({"shortcut": "a" * 33, "body": "x"}, 422, "invalid_shortcut"),
        ({"shortcut": "ok", "body": "   "}, 422, "invalid_body"),
        ({"shortcut": "ok", "body": "x" * 4001}, 422, "invalid_body"),
        ({"shortcut": "ok", "body": "Hi {first_name}"}, 422, "unknown_placeholder"),
        ({"shortcut": "ok", "body": "x", "extra": 1}, 422, "invalid"),
    ]
    for payload, status, code in cases:
        response = await admin.http.post("/api/admin/canned", json=payload)
        assert (response.status_code, response.json()["error"]) == (status, code), payload
    first = await admin.http.post("/api/admin/canned", json={"shortcut": "dup", "body": "one"})
    assert first.status_code == 200
    again = await admin.http.post("/api/admin/canned", json={"shortcut": "DUP", "body": "two"})
    assert (again.status_code, again.json()["error"]) == (409, "shortcut_taken")
    other = await admin.http.post("/api/admin/canned", json={"shortcut": "dup2", "body": "x"})
    clash = await admin.http.patch(f"/api/admin/canned/{other.json()['canned']['id']}",
                                   json={"shortcut": "dup"})
    assert (clash.status_code, clash.json()["error"]) == (409, "shortcut_taken")
    assert (await admin.http.patch("/api/admin/canned/999999", json={"body": "x"})
            ).status_code == 404
    after = {c["shortcut"]: c["body"] for c in
             (await admin.http.get("/api/admin/canned")).json()["canned"]}
    assert after == {**{c["shortcut"]: c["body"] for c in before}, "dup": "one", "dup2": "x"}
    for item in (first, other):
        await admin.http.delete(f"/api/admin/canned/{item.json()['canned']['id']}")


async def test_canned_routes_need_a_staff_sign_in(server: Server) -> None:
    """Without a staff cookie every canned route answers 401."""
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        assert (await anonymous.get("/api/agent/canned")).status_code == 401
        assert (await anonymous.get("/api/admin/canned")).status_code == 401
