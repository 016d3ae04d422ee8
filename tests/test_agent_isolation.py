"""Agents read queued conversations and their own; of other agents' conversations they learn only
that they exist, the customer's name and who handles them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from .support import Agent, Server, Socket, Visitor


def _item(frame: dict[str, Any], conversation_id: str) -> dict[str, Any] | None:
    return next((c for c in frame["conversations"] if c["conversation_id"] == conversation_id),
                None)


async def _claimed(server: Server, owner: Agent) -> tuple[Visitor, Socket, Socket, str]:
    """A visitor whose conversation `owner` has claimed: visitor socket, owner socket, id."""
    v = await Visitor(server).start(name="Isolated Customer",
                                    email=f"iso{uuid.uuid4().hex[:8]}@example.com")
    vs = await v.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    own = await owner.socket()
    await own.wait_type("queue")
    await own.send({"type": "claim", "conversation_id": conversation_id})
    await own.wait_type("status", conversation_id=conversation_id, status="active")
    return v, vs, own, conversation_id


async def test_queue_frames_hide_another_agents_conversation_text(server: Server) -> None:
    """Another agent's queue frames name an active conversation and its customer but carry no
    message text and no contact details; the owner's carry both."""
    owner = await Agent(server, "agent").login()
    other = await Agent(server, "agent2").login()
    v, vs, own, conversation_id = await _claimed(server, owner)
    secret = f"my account number is {uuid.uuid4().hex}"
    await vs.send({"type": "message", "body": secret, "client_msg_id": "s1"})
    await vs.wait_type("ack", client_msg_id="s1")

    watcher = await other.socket()
    first = await watcher.wait_type("queue")
    # A newcomer changes the queue, so a frame is published to every agent.
    newcomer = await Visitor(server).start(name="Newcomer", email="new@example.com")
    ns = await newcomer.socket()
    newcomer_id = (await ns.wait_type("welcome"))["conversation_id"]

    def has_newcomer(f: dict[str, Any]) -> bool:
        return f["type"] == "queue" and _item(f, newcomer_id) is not None

    published = await watcher.wait_for(has_newcomer)
    for frame in (first, published):
        item = _item(frame, conversation_id)
        assert item is not None and item["status"] == "active"
        assert item["agent"] == "agent" and item["customer"]["name"] == "Isolated Customer"
        assert item["last_message"] is None and item["restricted"] is True
        assert item["customer"]["email"] is None and item["customer"]["company"] is None
    assert secret not in str(watcher.frames)
    # The owner still sees their own conversation in full, and everyone sees the queued one.
    mine = _item(await own.wait_for(has_newcomer), conversation_id)
    assert mine is not None and mine["last_message"]["body"] == secret
    assert _item(published, newcomer_id)["customer"]["email"] == "new@example.com"  # type: ignore[index]
    for s in (vs, own, watcher, ns):
        await s.close()
    for c in (v, newcomer, owner, other):
        await c.aclose()


async def test_a_failing_claim_hears_nothing_of_that_conversation(server: Server) -> None:
    """A stream of claims that lose never lets the loser's socket hear the conversation, while
    the customer and the owner go on talking."""
    owner = await Agent(server, "agent").login()
    other = await Agent(server, "agent2").login()
    v, vs, own, conversation_id = await _claimed(server, owner)
    snoop = await other.socket()
    await snoop.wait_type("queue")

    async def claims() -> None:
        for _ in range(150):
            await snoop.send({"type": "claim", "conversation_id": conversation_id})

    async def chat() -> None:
        for n in range(30):
            await vs.send({"type": "message", "body": f"private {n}", "client_msg_id": f"p{n}"})
            await own.send({"type": "typing", "conversation_id": conversation_id, "state": True})
            await vs.wait_type("ack", client_msg_id=f"p{n}")

    await asyncio.gather(claims(), chat())
    for _ in range(150):
        error = await snoop.wait_type("error", conversation_id=conversation_id)
        assert error["code"] == "already_claimed"
    # Everything the owner's side produced has been published by now; give stray frames a
    # moment to arrive, then look.
    await own.send({"type": "ping"})
    await own.wait_type("pong")
    await snoop.send({"type": "ping"})
    await snoop.wait_type("pong")
    leaked = [f for f in snoop.frames
              if f.get("conversation_id") == conversation_id and f["type"] != "error"]
    assert leaked == []
    for s in (vs, own, snoop):
        await s.close()
    for c in (v, owner, other):
        await c.aclose()
