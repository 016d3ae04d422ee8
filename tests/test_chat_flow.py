"""The whole chat, end to end over real sockets: visitor to agent and back."""

from __future__ import annotations

import uuid

import httpx

from .support import Agent, Server, Visitor


def _id() -> str:
    return uuid.uuid4().hex


async def test_visitor_and_agent_chat_through_claim_and_close(
    server: Server, visitor: Visitor, agent: Agent
) -> None:
    """A visitor is welcomed into a queued conversation, an agent claims it, both talk, it closes."""
    vs = await visitor.socket()
    welcome = await vs.wait_type("welcome")
    assert welcome["status"] == "queued"
    assert welcome["last_seq"] == 0
    conversation_id = welcome["conversation_id"]

    sent = _id()
    await vs.send({"type": "message", "body": "Hello, my printer is on fire", "client_msg_id": sent})
    ack = await vs.wait_type("ack", client_msg_id=sent)
    assert ack["seq"] == 1
    echoed = await vs.wait_type("message", seq=1)
    assert echoed["sender"] == "visitor" and echoed["client_msg_id"] == sent

    ags = await agent.socket()
    queue = await ags.wait_for(
        lambda f: f["type"] == "queue"
        and any(c["conversation_id"] == conversation_id for c in f["conversations"])
    )
    item = next(c for c in queue["conversations"] if c["conversation_id"] == conversation_id)
    assert item["status"] == "queued"
    assert item["customer"]["email"].endswith("@example.com")
    assert item["last_message"]["body"] == "Hello, my printer is on fire"
    assert item["policy_version"] == "1.01"

    await ags.send({"type": "claim", "conversation_id": conversation_id})
    status = await ags.wait_type("status", conversation_id=conversation_id)
    # Staff learn who by id and sign-in name; customers only see the display name.
    assert status == {"type": "status", "conversation_id": conversation_id, "status": "active",
                      "agent": "Support agent", "agent_id": status["agent_id"],
                      "agent_name": "agent"}
    visitor_status = await vs.wait_type("status")
    assert visitor_status == {"type": "status", "conversation_id": conversation_id,
                              "status": "active", "agent": "Support agent"}
    joined = await vs.wait_type("message", sender="system")
    assert joined["seq"] == 2 and "joined" in joined["body"]

    await ags.send({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
    history = [await ags.wait_type("message", seq=1), await ags.wait_type("message", seq=2)]
    assert [m["seq"] for m in history] == [1, 2]

    await ags.send({"type": "typing", "conversation_id": conversation_id, "state": True})
    typing = await vs.wait_type("typing")
    assert typing["state"] is True and typing["sender"] == "agent"

    reply = _id()
    await ags.send({"type": "message", "conversation_id": conversation_id,
                    "body": "Please step away from it.", "client_msg_id": reply})
    agent_ack = await ags.wait_type("ack", client_msg_id=reply)
    assert agent_ack["seq"] == 3 and agent_ack["conversation_id"] == conversation_id
    got = await vs.wait_type("message", seq=3)
    assert got["sender"] == "agent" and got["author"] == "Support agent"
    assert got["body"] == "Please step away from it."

    await vs.send({"type": "typing", "state": True})
    agent_typing = await ags.wait_type("typing", conversation_id=conversation_id)
    assert agent_typing["sender"] == "visitor"

    await ags.send({"type": "close", "conversation_id": conversation_id})
    closed = await vs.wait_type("status", status="closed")
    assert closed["conversation_id"] == conversation_id and closed["closed_by"] == "agent"
    note = await vs.wait_type("message", sender="system", seq=4)
    assert "closed" in note["body"]
    await vs.send({"type": "message", "body": "one more thing", "client_msg_id": _id()})
    refused = await vs.wait_type("error")
    assert refused["code"] == "conversation_closed"
    await vs.close()
    await ags.close()

    # A new socket after the close opens a fresh conversation.
    again = await visitor.socket()
    new_welcome = await again.wait_type("welcome")
    assert new_welcome["conversation_id"] != conversation_id
    assert new_welcome["status"] == "queued" and new_welcome["last_seq"] == 0
    await again.close()


async def test_reconnecting_visitor_is_welcomed_back_and_resumes(server: Server, visitor: Visitor
                                                                 ) -> None:
    """A second socket joins the open conversation; resume replays exactly the missed messages."""
    first = await visitor.socket()
    welcome = await first.wait_type("welcome")
    for n in range(3):
        await first.send({"type": "message", "body": f"line {n}", "client_msg_id": f"m{n}"})
        await first.wait_type("ack", client_msg_id=f"m{n}")
    await first.close()

    second = await visitor.socket()
    back = await second.wait_type("welcome")
    assert back["conversation_id"] == welcome["conversation_id"]
    assert back["last_seq"] == 3
    await second.send({"type": "resume", "after_seq": 1})
    replayed = [await second.wait_type("message") for _ in range(2)]
    assert [m["seq"] for m in replayed] == [2, 3]
    assert [m["body"] for m in replayed] == ["line 1", "line 2"]
    await second.close()


async def test_repeated_client_msg_id_is_stored_once_and_acked_with_first_seq(
    server: Server, visitor: Visitor, admin: Agent
) -> None:
    """Resending the same client_msg_id (after a lost ack) stores nothing new and broadcasts nothing."""
    vs = await visitor.socket()
    welcome = await vs.wait_type("welcome")
    await vs.send({"type": "message", "body": "only once", "client_msg_id": "same"})
    first = await vs.wait_type("ack")
    await vs.close()

    again = await visitor.socket()
    await again.wait_type("welcome")
    await again.send({"type": "message", "body": "only once", "client_msg_id": "same"})
    second = await again.wait_type("ack")
    assert second["seq"] == first["seq"]
    await again.send({"type": "message", "body": "next", "client_msg_id": "other"})
    third = await again.wait_type("ack", client_msg_id="other")
    assert third["seq"] == first["seq"] + 1
    message_frames = [f for f in again.frames if f["type"] == "message"]
    assert [f["client_msg_id"] for f in message_frames] == ["other"]
    await again.close()

    detail = await admin.http.get(f"/api/admin/conversations/{welcome['conversation_id']}")
    bodies = [m["body"] for m in detail.json()["messages"]]
    assert bodies == ["only once", "next"]


async def test_second_claim_loses_cleanly(server: Server, visitor: Visitor, agent: Agent) -> None:
    """Two agents claim one conversation: one wins, the other gets already_claimed."""
    vs = await visitor.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    other = await Agent(server, "agent2").login()
    a, b = await agent.socket(), await other.socket()
    await a.wait_type("queue")
    await b.wait_type("queue")
    await a.send({"type": "claim", "conversation_id": conversation_id})
    await a.wait_type("status", conversation_id=conversation_id)
    await b.send({"type": "claim", "conversation_id": conversation_id})
    lost = await b.wait_type("error")
    assert lost["code"] == "already_claimed" and lost["conversation_id"] == conversation_id
    await b.send({"type": "message", "conversation_id": conversation_id, "body": "hi",
                  "client_msg_id": "x"})
    refused = await b.wait_type("error")
    assert refused["code"] == "not_claimed"
    await b.send({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
    forbidden = await b.wait_type("error")
    assert forbidden["code"] == "forbidden"
    for s in (vs, a, b):
        await s.close()
    await other.aclose()


async def test_agents_online_flag_in_welcome(server: Server, visitor: Visitor, agent: Agent
                                             ) -> None:
    """welcome.agents_online tells the widget whether to offer 'leave a message'."""
    ags = await agent.socket()
    await ags.wait_type("queue")
    vs = await visitor.socket()
    assert (await vs.wait_type("welcome"))["agents_online"] is True
    await vs.close()
    await ags.close()


async def test_visitor_socket_needs_cookie_consent_and_customer(server: Server) -> None:
    """No cookie closes 4401; consent without the pre-chat form closes 4403; forged cookie = none."""
    from .support import open_socket

    bare = await open_socket(server, "/ws/visitor")
    assert await bare.closed_code() == 4401

    forged = await open_socket(server, "/ws/visitor", "chat_session=InNvbWV0aGluZyI.forged.sig")
    assert await forged.closed_code() == 4401

    v = Visitor(server)
    assert (await v.consent()).status_code == 200
    half = await v.socket()
    assert await half.closed_code() == 4403
    assert half.frames[0]["code"] == "customer_required"
    await v.aclose()


async def test_health(server: Server) -> None:
    """/healthz answers ok while the database and broadcast answer."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/healthz")
    assert response.json() == {"status": "ok"}


async def test_every_tab_of_an_agent_follows_a_claim(server: Server, visitor: Visitor) -> None:
    """A conversation claimed in one tab reaches the agent's other tabs, opened before or after."""
    vs = await visitor.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    amy = await Agent(server, "agent2").login()
    before = await amy.socket()
    await before.wait_type("queue")
    claimer = await amy.socket()
    await claimer.wait_type("queue")
    await claimer.send({"type": "claim", "conversation_id": conversation_id})
    await claimer.wait_type("status", conversation_id=conversation_id)
    after = await amy.socket()
    await after.wait_type("queue")
    await vs.send({"type": "message", "body": "anyone?", "client_msg_id": "tabs"})
    for tab in (before, claimer, after):
        got = await tab.wait_type("message", conversation_id=conversation_id, body="anyone?")
        assert got["sender"] == "visitor"
    status = await before.wait_type("status", conversation_id=conversation_id)
    assert status["agent_name"] == "agent2"
    for s in (vs, before, claimer, after):
        await s.close()
    await amy.aclose()
