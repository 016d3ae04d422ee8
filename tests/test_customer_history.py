"""Customer history (issue 12, step 4): the agent handling a conversation sees the customer's
earlier conversations read-only; each opening is in the audit log; nobody else gets them."""

from __future__ import annotations

import uuid

from .support import Agent, Server, Socket, Visitor


def _id() -> str:
    return uuid.uuid4().hex


async def _chat(visitor: Visitor, ags: Socket, body: str) -> str:
    """A new conversation of this visitor, with one message, claimed by the agent's socket."""
    vs = await visitor.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    await vs.send({"type": "message", "body": body, "client_msg_id": _id()})
    await vs.wait_type("ack")
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    await ags.wait_type("status", conversation_id=conversation_id, status="active")
    await vs.close()
    return conversation_id


async def test_the_handling_agent_sees_earlier_conversations_and_openings_are_audited(
    server: Server, visitor: Visitor, agent: Agent, admin: Agent
) -> None:
    """The list names the earlier conversation without its text; opening it returns its
    messages (notes and rating too) after an audit entry; other agents and foreign ids fail."""
    ags = await agent.socket()
    await ags.wait_type("queue")
    first = await _chat(visitor, ags, "my first problem")
    await ags.send({"type": "note", "conversation_id": first, "body": "first note",
                    "client_msg_id": _id()})
    await ags.wait_type("ack")
    await ags.send({"type": "close", "conversation_id": first})
    await ags.wait_type("status", conversation_id=first, status="closed")
    second = await _chat(visitor, ags, "my second problem")

    listed = await agent.http.get(f"/api/agent/conversations/{second}/history")
    assert listed.status_code == 200, listed.text
    items = listed.json()["conversations"]
    assert [i["id"] for i in items] == [first]
    assert items[0]["status"] == "closed" and items[0]["message_count"] == 3
    assert "my first problem" not in listed.text

    opened = await agent.http.get(f"/api/agent/conversations/{second}/history/{first}")
    assert opened.status_code == 200
    data = opened.json()
    assert [m["body"] for m in data["messages"]][0] == "my first problem"
    assert [n["body"] for n in data["notes"]] == ["first note"]
    log = (await admin.http.get("/api/admin/audit", params={
        "target": f"conversation:{first}", "action": "transcript.view"})).json()["entries"]
    assert any(e["detail"].get("via") == "history" and e["detail"].get("from") == second
               for e in log)

    # Another agent, an unknown or foreign earlier id, and the current one itself: refused.
    other = await Agent(server, "agent2").login()
    try:
        assert (await other.http.get(
            f"/api/agent/conversations/{second}/history")).status_code == 403
        assert (await other.http.get(
            f"/api/agent/conversations/{second}/history/{first}")).status_code == 403
    finally:
        await other.aclose()
    stranger = Visitor(server)
    await stranger.start(name="Stranger", email=f"s{_id()[:8]}@example.com")
    try:
        theirs = await _chat(stranger, ags, "not yours")
    finally:
        await stranger.aclose()
    for earlier in (theirs, second, "cv_nope"):
        response = await agent.http.get(f"/api/agent/conversations/{second}/history/{earlier}")
        assert response.status_code == 404, earlier
    assert (await agent.http.get("/api/agent/conversations/cv_nope/history")).status_code == 404
    # Admins may look from any conversation.
    assert (await admin.http.get(f"/api/agent/conversations/{second}/history")).status_code == 200
    await ags.close()


async def test_history_is_not_offered_for_queued_conversations(
    server: Server, visitor: Visitor, agent: Agent
) -> None:
    """A queued conversation has no handling agent yet: its history stays closed to agents."""
    vs = await visitor.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    response = await agent.http.get(f"/api/agent/conversations/{conversation_id}/history")
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    await vs.close()
