"""Live status both ways, over real sockets: agents see a withdrawn consent pause the
conversation (and sending refused) and an erasure clear it off every dashboard; customers see
agents come, go away and leave; an agent's display name and away state."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from .support import Agent, Server, Visitor
from .test_handover import claimed, dashboard, reply

_tags = itertools.count(1)


@pytest.fixture(scope="module")
def lserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own, so that which agents are online is this module's."""
    srv = Server(tmp_path_factory.mktemp("live") / "data",
                 env={"CHATSERVER_LIMITS_EXEMPT": "127.0.0.1"})
    srv.start()
    for name in ("liv", "max"):
        srv.add_staff(name, "agent")
    srv.add_staff("chief", "admin")
    yield srv
    srv.stop()


@pytest.fixture
async def liv(lserver: Server) -> AsyncIterator[Agent]:
    a = await Agent(lserver, "liv").login()
    yield a
    await a.aclose()


@pytest.fixture
async def max_(lserver: Server) -> AsyncIterator[Agent]:
    a = await Agent(lserver, "max").login()
    yield a
    await a.aclose()


@pytest.fixture
async def customer(lserver: Server) -> AsyncIterator[Visitor]:
    tag = next(_tags)
    v = Visitor(lserver)
    await v.start(name=f"Live Customer {tag}", email=f"live{tag}@example.com")
    yield v
    await v.aclose()


async def test_withdrawn_consent_pauses_the_conversation_for_its_agent(
        lserver: Server, liv: Agent, customer: Visitor) -> None:
    """The agent sees the conversation paused at once and cannot send to it, with a reason;
    consenting again resumes it."""
    vs = await customer.socket()
    ws = await dashboard(liv)
    cid = await claimed(vs, ws)
    withdrawn = await customer.http.post("/api/consent/withdraw", json={})
    assert withdrawn.status_code == 200
    assert await vs.closed_code() == 4403
    status = await ws.wait_type("status", conversation_id=cid, paused=True)
    assert status["status"] == "active"
    await ws.wait_for(lambda f: f["type"] == "queue" and any(
        c["conversation_id"] == cid and c["paused"] for c in f["conversations"]))
    refused = await reply(ws, cid, "hello?")
    assert refused["type"] == "error" and refused["code"] == "consent_withdrawn"
    assert "withdrew" in refused["message"]
    assert lserver.query("SELECT COUNT(*) FROM messages WHERE conversation_id = ? AND "
                         "sender = 'agent'", cid) == [(0,)]

    assert (await customer.consent()).status_code == 200
    await ws.wait_type("status", conversation_id=cid, paused=False)
    assert (await reply(ws, cid, "welcome back"))["type"] == "ack"
    await ws.close()


async def test_erasure_clears_the_conversation_off_every_dashboard(
        lserver: Server, liv: Agent, max_: Agent, customer: Visitor) -> None:
    """Every open dashboard is told at once which conversation went; the queue no longer
    holds it."""
    vs = await customer.socket()
    mine = await dashboard(liv)
    cid = await claimed(vs, mine)
    other = await dashboard(max_)
    assert (await customer.http.delete("/api/me")).status_code == 200
    for ws in (mine, other):
        erased = await ws.wait_type("erased")
        assert erased == {"type": "erased", "conversation_ids": [cid]}
        await ws.wait_for(lambda f: f["type"] == "queue" and all(
            c["conversation_id"] != cid for c in f["conversations"]))
    await mine.close()
    await other.close()


async def test_customers_see_agents_come_go_away_and_leave(
        lserver: Server, liv: Agent, customer: Visitor) -> None:
    """`presence` follows whether any agent has a dashboard open and is not away."""
    await asyncio.sleep(0.3)  # sockets of earlier tests are gone
    vs = await customer.socket()
    assert (await vs.wait_type("welcome"))["agents_online"] is False
    ws = await dashboard(liv)
    await vs.wait_type("presence", agents_online=True)
    assert (await liv.http.patch("/api/staff/me", json={"away": True})).status_code == 200
    await vs.wait_type("presence", agents_online=False)
    assert (await liv.http.get("/api/staff/me")).json()["staff"]["away"] is True
    assert (await liv.http.patch("/api/staff/me", json={"away": False})).status_code == 200
    await vs.wait_type("presence", agents_online=True)
    await ws.close()
    await vs.wait_type("presence", agents_online=False)
    await vs.close()


async def test_an_agent_sets_the_display_name_customers_see(
        lserver: Server, liv: Agent, customer: Visitor) -> None:
    """The new name reaches the customer in an open conversation at once and goes on every
    later message; a sign-in name or a bad value is refused and changes nothing."""
    vs = await customer.socket()
    ws = await dashboard(liv)
    cid = await claimed(vs, ws)
    for bad, code in (({"display_name": "max"}, "display_name_is_sign_in_name"),
                      ({"display_name": ""}, "invalid_display_name"),
                      ({"away": "yes"}, "invalid_away"), ({"role": "admin"}, "invalid"),
                      # null is no value: refused, not taken as "leave it as it is"
                      ({"away": None}, "invalid_away"),
                      ({"display_name": None}, "invalid_display_name")):
        refused = await liv.http.patch("/api/staff/me", json=bad)
        assert refused.status_code == 422 and refused.json()["error"] == code, refused.text
    changed = await liv.http.patch("/api/staff/me", json={"display_name": "Olivia"})
    assert changed.status_code == 200 and changed.json()["staff"]["display_name"] == "Olivia"
    assert await vs.wait_type("status", agent="Olivia") == {
        "type": "status", "conversation_id": cid, "status": "active", "agent": "Olivia",
        "renamed": True}
    msg_id = uuid.uuid4().hex
    await ws.send({"type": "message", "conversation_id": cid, "body": "hi",
                   "client_msg_id": msg_id})
    got = await vs.wait_type("message", sender="agent")
    assert got["author"] == "Olivia"
    colleagues = (await liv.http.get("/api/staff/colleagues")).json()["staff"]
    me = next(c for c in colleagues if c["name"] == "liv")
    assert me == {"name": "liv", "display_name": "Olivia", "role": "agent", "away": False,
                  "online": True}
    for s in (vs, ws):
        await s.close()


async def test_a_display_name_an_admin_sets_reaches_customers_and_the_next_message(
        lserver: Server, liv: Agent, customer: Visitor) -> None:
    """An admin renames the agent in the console: the customer's open conversation hears it at
    once (with `renamed`, so earlier replies are relabelled), and the agent's next message, from
    the socket that was already open, carries the new name."""
    vs = await customer.socket()
    ws = await dashboard(liv)
    cid = await claimed(vs, ws)
    chief = await Agent(lserver, "chief").login()
    try:
        await chief.rename("liv", "Liv from Sales")
        status = await vs.wait_type("status", agent="Liv from Sales")
        assert status["renamed"] is True and status["conversation_id"] == cid
        await ws.wait_type("status", conversation_id=cid, agent="Liv from Sales")
        acked = await reply(ws, cid, "still here")
        assert acked["type"] == "ack"
        got = await vs.wait_for(lambda f: f["type"] == "message" and f["body"] == "still here")
        assert got["author"] == "Liv from Sales"
        # The same name again tells nobody: the next message is the next thing the customer
        # hears, and no second status frame came before it.
        await chief.rename("liv", "Liv from Sales")
        assert (await reply(ws, cid, "and again"))["type"] == "ack"
        await vs.wait_for(lambda f: f["type"] == "message" and f["body"] == "and again")
        assert [f for f in vs.frames if f.get("renamed")] == [status]
    finally:
        await chief.aclose()
    for s in (vs, ws):
        await s.close()
