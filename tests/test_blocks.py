"""Blocking abuse (issue 12, step 9): the handling agent blocks a visitor (and optionally the
IP address) with a reason; the visitor is refused plainly; blocks are audited, exported,
erased, and purged once expired; nobody else can block."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from .support import Agent, Server, Socket, Visitor


def _id() -> str:
    return uuid.uuid4().hex


async def _claimed(visitor: Visitor, ags: Socket) -> tuple[Socket, str]:
    vs = await visitor.socket()
    conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
    await vs.send({"type": "message", "body": "abuse", "client_msg_id": _id()})
    await vs.wait_type("ack")
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    await ags.wait_type("status", conversation_id=conversation_id, status="active")
    return vs, conversation_id


async def test_agent_blocks_own_visitor_who_is_refused_until_it_expires(
    make_server: Callable[..., Server]
) -> None:
    """The block closes the conversation and the visitor's socket (4423); a new socket of the
    customer, or of another customer from the blocked IP, is refused with `blocked`; the audit
    entry holds no reason; the export lists it; the purge removes it once expired."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("boss", "admin")
    server.add_staff("ann", "agent")
    server.add_staff("bob", "agent")
    admin = await Agent(server, "boss").login()
    ann = await Agent(server, "ann").login()
    bob = await Agent(server, "bob").login()
    troll = await Visitor(server).start(name="Troll", email="troll@example.com")
    neighbour = await Visitor(server).start(name="Neighbour", email="n@example.com")
    try:
        ags = await ann.socket()
        await ags.wait_type("queue")
        vs, conversation_id = await _claimed(troll, ags)
        url = f"/api/agent/conversations/{conversation_id}/block"

        # Bad input and other agents change nothing.
        for payload, field in (({"reason": " "}, "reason"), ({"reason": "x" * 501}, "reason"),
                               ({"reason": "spam", "hours": 0}, "hours"),
                               ({"reason": "spam", "hours": 721}, "hours"),
                               ({"reason": "spam", "block_ip": "yes"}, "block_ip")):
            bad = await ann.http.post(url, json=payload)
            assert bad.status_code == 422 and bad.json()["field"] == field, payload
        refused = await bob.http.post(url, json={"reason": "not mine"})
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
        missing = await ann.http.post("/api/agent/conversations/cv_nope/block",
                                      json={"reason": "x"})
        assert missing.status_code == 404
        assert server.query("SELECT COUNT(*) FROM blocks")[0][0] == 0

        done = await ann.http.post(url, json={"reason": "insults <script>", "block_ip": True,
                                              "hours": 2})
        assert done.status_code == 200, done.text
        assert done.json()["block"]["ip_blocked"] is True
        assert await vs.closed_code() == 4423
        await ags.wait_type("status", conversation_id=conversation_id, status="closed")

        again = await troll.socket()
        error = await again.wait_type("error")
        assert error == {"type": "error", "code": "blocked",
                         "message": "This chat is not available to you at the moment."}
        assert await again.closed_code() == 4423
        other = await neighbour.socket()  # same address (127.0.0.1): blocked too
        assert (await other.wait_type("error"))["code"] == "blocked"

        log = (await admin.http.get("/api/admin/audit", params={"action": "visitor.block"})
               ).json()["entries"]
        assert log and log[0]["detail"]["hours"] == 2 and log[0]["detail"]["ip"] is True
        assert "insults" not in str(log)

        export = (await troll.http.get("/api/me/export")).json()
        assert [b["reason"] for b in export["blocks"]] == ["insults <script>"]

        # Expired: the purge deletes it and the visitor may chat again.
        server.query("UPDATE blocks SET expires_at = '2000-01-01T00:00:00.000000Z'")
        purged = await admin.http.post("/api/admin/purge", json={"dry_run": False})
        assert purged.json()["counts"]["expired_blocks"] == 1
        assert server.query("SELECT COUNT(*) FROM blocks")[0][0] == 0
        fresh = await troll.socket()
        assert (await fresh.wait_type("welcome"))["status"] == "queued"
        await fresh.close()
        await ags.close()
    finally:
        for client in (admin, ann, bob, troll, neighbour):
            await client.aclose()


async def test_erasure_takes_the_customers_blocks(
    make_server: Callable[..., Server]
) -> None:
    """A block is data about the customer: erasing the account deletes it."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("ann", "agent")
    ann = await Agent(server, "ann").login()
    troll = await Visitor(server).start(name="Troll", email="troll@example.com")
    try:
        ags = await ann.socket()
        await ags.wait_type("queue")
        _, conversation_id = await _claimed(troll, ags)
        done = await ann.http.post(f"/api/agent/conversations/{conversation_id}/block",
                                   json={"reason": "spam"})
        assert done.status_code == 200 and done.json()["block"]["ip_blocked"] is False
        assert (await troll.http.delete("/api/me")).status_code in (200, 204)
        assert server.query("SELECT COUNT(*) FROM blocks")[0][0] == 0
        await ags.close()
    finally:
        await ann.aclose()
        await troll.aclose()
