"""Whether the customer has the chat open reaches the staff on the conversation: when the first
of their sockets opens and the last one closes, and on a resume; never the customer's own
sockets."""

from __future__ import annotations

from .support import Agent, Server, Visitor


def _presence(frames: list[dict[str, object]]) -> list[bool]:
    return [bool(f["visitor_online"]) for f in frames
            if f.get("type") == "presence" and "conversation_id" in f]


async def test_the_agent_sees_the_customer_come_and_go(server: Server) -> None:
    """Claimed and resumed: the customer is on the chat. A second tab says nothing; closing one
    of two says nothing; closing the last says they left; coming back says so again. The
    customer's sockets never get these frames (theirs are about agents)."""
    visitor = await Visitor(server).start(email="dee.here@example.com")
    agent = await Agent(server, "agent").login()
    first = await visitor.socket()
    conversation_id = (await first.wait_type("welcome"))["conversation_id"]
    ags = await agent.socket()
    try:
        await ags.wait_type("queue")
        await ags.send({"type": "claim", "conversation_id": conversation_id})
        await ags.wait_type("status", conversation_id=conversation_id)
        await ags.send({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
        here = await ags.wait_type("presence", conversation_id=conversation_id)
        assert here == {"type": "presence", "conversation_id": conversation_id,
                        "visitor_online": True}

        second = await visitor.socket()
        await second.wait_type("welcome")
        await second.close()
        await first.close()
        gone = await ags.wait_type("presence", conversation_id=conversation_id)
        assert gone["visitor_online"] is False
        back = await visitor.socket()
        await back.wait_type("welcome")
        again = await ags.wait_type("presence", conversation_id=conversation_id)
        assert again["visitor_online"] is True
        await ags.send({"type": "ping"})
        await ags.wait_type("pong")
        assert _presence(ags.frames) == [True, False, True]  # the second tab changed nothing

        await back.send({"type": "ping"})
        await back.wait_type("pong")
        for sock in (first, second, back):
            assert _presence(sock.frames) == []
        await back.close()
        assert (await ags.wait_type("presence", conversation_id=conversation_id)
                )["visitor_online"] is False

        fresh = await agent.socket()  # a dashboard loaded now: the customer is away
        await fresh.wait_type("queue")
        await fresh.send({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
        assert (await fresh.wait_type("presence", conversation_id=conversation_id)
                )["visitor_online"] is False
        await fresh.close()
    finally:
        await ags.close()
        await visitor.aclose()
        await agent.aclose()
