"""What the widget learns live over its socket: agents coming and going, and what was read."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from .support import Agent, Server, Visitor


async def test_presence_follows_agents_both_ways(make_server: Callable[..., Server]) -> None:
    """The first agent online and the last one leaving each send the visitor a presence frame;
    a second agent's socket sends none."""
    srv = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    srv.add_staff("bo", "agent")
    visitor = await Visitor(srv).start()
    agent = await Agent(srv, "bo").login()
    try:
        vs = await visitor.socket()
        assert (await vs.wait_type("welcome"))["agents_online"] is False
        first = await agent.socket()
        await first.wait_type("queue")
        assert await vs.wait_type("presence") == {"type": "presence", "agents_online": True}
        second = await agent.socket()
        await second.wait_type("queue")
        await first.close()
        await vs.send({"type": "ping"})
        await vs.wait_type("pong")  # the first socket's end was handled: no frame came
        await second.close()
        assert await vs.wait_type("presence") == {"type": "presence", "agents_online": False}
        assert [f["type"] for f in vs.frames].count("presence") == 2
        await vs.close()
    finally:
        await visitor.aclose()
        await agent.aclose()


async def test_welcome_names_what_the_customer_read(server: Server, visitor: Visitor,
                                                    agent: Agent) -> None:
    """welcome.read_seq is the customer's stored read mark, so a widget on a new page counts the
    replies after it as unread; it is 0 before any read."""
    vs = await visitor.socket()
    welcome = await vs.wait_type("welcome")
    assert welcome["read_seq"] == 0
    conversation_id = welcome["conversation_id"]
    await vs.send({"type": "message", "body": "Hello", "client_msg_id": "h1"})
    await vs.wait_type("ack")
    ags = await agent.socket()
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    await ags.wait_type("status", conversation_id=conversation_id)
    await ags.send({"type": "message", "conversation_id": conversation_id, "body": "Hi!",
                    "client_msg_id": "r1"})
    reply = (await ags.wait_type("ack"))["seq"]
    await vs.send({"type": "read", "seq": reply - 1})
    read = await ags.wait_type("read", sender="visitor")
    assert read["seq"] == reply - 1
    await vs.close()
    again = await visitor.socket()
    assert (await again.wait_type("welcome"))["read_seq"] == reply - 1
    await again.close()
    await ags.close()


async def test_session_says_whether_a_conversation_is_open(server: Server, visitor: Visitor
                                                           ) -> None:
    """GET /api/session names open_conversation, so that a widget loaded behind a closed panel
    reconnects only to an open conversation and never opens a new one by itself."""
    assert (await visitor.http.get("/api/session")).json()["open_conversation"] is False
    vs = await visitor.socket()
    await vs.wait_type("welcome")
    assert (await visitor.http.get("/api/session")).json()["open_conversation"] is True
    await vs.send({"type": "close"})
    await vs.wait_type("status", status="closed")
    assert (await visitor.http.get("/api/session")).json()["open_conversation"] is False
    await vs.close()
    async with httpx.AsyncClient(base_url=server.url) as stranger:
        assert (await stranger.get("/api/session")).json() == {"session": False}
