"""Every read of a transcript or of customers' details by staff is written to the audit log, by
whatever path, with ids and counts only."""

from __future__ import annotations

import json
import uuid
from typing import Any

from .support import Agent, Server, Visitor


async def _entries(admin: Agent, **params: str) -> list[dict[str, Any]]:
    response = await admin.http.get("/api/admin/audit", params=params)
    assert response.status_code == 200
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


async def _me(client: Agent) -> int:
    return int((await client.http.get("/api/staff/me")).json()["staff"]["id"])


async def test_admin_reading_another_agents_conversation_by_socket_is_audited(
    server: Server, admin: Agent, agent: Agent
) -> None:
    """An admin's socket `resume` of a conversation another agent handles leaves an audit row
    before the messages go out; the handling agent's own resume leaves none."""
    v = await Visitor(server).start(name="Audited", email=f"a{uuid.uuid4().hex[:8]}@example.com")
    vs = await v.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    own = await agent.socket()
    await own.wait_type("queue")
    await own.send({"type": "claim", "conversation_id": conversation_id})
    await own.wait_type("status", conversation_id=conversation_id, status="active")
    await vs.send({"type": "message", "body": "between me and my agent", "client_msg_id": "m"})
    await vs.wait_type("ack", client_msg_id="m")
    await own.send({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
    await own.wait_type("message", conversation_id=conversation_id, seq=2)

    target = f"conversation:{conversation_id}"
    assert await _entries(admin, target=target, action="transcript") == []
    boss = await admin.socket()
    await boss.wait_type("queue")
    await boss.send({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
    await boss.wait_type("message", conversation_id=conversation_id, seq=2)
    [entry] = await _entries(admin, target=target, action="transcript")
    assert entry["action"] == "transcript.view" and entry["actor"] == f"staff:{await _me(admin)}"
    assert entry["detail"] == {"via": "socket", "after_seq": 0, "messages": 2}
    for s in (vs, own, boss):
        await s.close()
    await v.aclose()


async def test_console_search_and_customer_list_are_audited_without_personal_data(
    server: Server, admin: Agent
) -> None:
    """The console's conversation search and customer list show customers' details: each is
    audited with the ids shown and the names of the filters used, never the search terms."""
    email = f"listed{uuid.uuid4().hex[:8]}@example.com"
    v = await Visitor(server).start(name="Listed Person", email=email)
    vs = await v.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    me = f"staff:{await _me(admin)}"

    found = await admin.http.get("/api/admin/conversations", params={"q": email})
    assert [c["id"] for c in found.json()["conversations"]] == [conversation_id]
    search = (await _entries(admin, actor=me, action="conversation.search"))[0]
    assert search["detail"] == {"results": 1, "total": 1, "filters": ["q"],
                                "conversations": [conversation_id]}

    listed = await admin.http.get("/api/admin/customers", params={"q": email})
    [customer] = listed.json()["customers"]
    entry = (await _entries(admin, actor=me, action="customer.list"))[0]
    assert entry["detail"] == {"results": 1, "total": 1, "filters": ["q"],
                               "customers": [customer["id"]]}

    everything = json.dumps(await _entries(admin, limit="1000"))
    assert email not in everything and "Listed Person" not in everything
    await vs.close()
    await v.aclose()
