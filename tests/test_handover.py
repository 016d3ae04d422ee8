"""Release, transfer and take over, over real sockets: one system message, the customer sees the
new agent's display name, the giving agent's dashboard stops hearing the conversation, one winner
among rivals, every refusal changes nothing, and each move is audited."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from .support import Agent, Server, Socket, Visitor

# Sign-in name -> display name (what customers see).
PEOPLE = {"ann": "Ann A.", "bob": "Bob B.", "cat": "Cat C.", "dan": "Dan D.", "eve": "Eve E."}
_tags = itertools.count(1)


@pytest.fixture(scope="module")
def hserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: its agents' away and disabled states stay here."""
    srv = Server(tmp_path_factory.mktemp("handover") / "data",
                 env={"CHATSERVER_LIMITS_EXEMPT": "127.0.0.1"})
    srv.start()
    for name in PEOPLE:
        srv.add_staff(name, "agent")
    srv.add_staff("boss", "admin")
    yield srv
    srv.stop()


async def signed_in(server: Server, name: str) -> Agent:
    agent = await Agent(server, name).login()
    if name in PEOPLE:
        done = await agent.http.patch("/api/staff/me", json={"display_name": PEOPLE[name]})
        assert done.status_code == 200, done.text
    return agent


@pytest.fixture
async def people(hserver: Server) -> AsyncIterator[dict[str, Agent]]:
    signed = {name: await signed_in(hserver, name) for name in [*PEOPLE, "boss"]}
    yield signed
    for agent in signed.values():
        await agent.aclose()


@pytest.fixture
async def customer(hserver: Server) -> AsyncIterator[Visitor]:
    tag = next(_tags)
    v = Visitor(hserver)
    await v.start(name=f"Handover Customer {tag}", email=f"handover{tag}@example.com")
    yield v
    await v.aclose()


async def dashboard(agent: Agent) -> Socket:
    ws = await agent.socket()
    await ws.wait_type("queue")
    return ws


async def claimed(vs: Socket, ws: Socket) -> str:
    """The visitor's conversation, claimed through `ws`."""
    cid: str = (await vs.wait_type("welcome"))["conversation_id"]
    await ws.send({"type": "claim", "conversation_id": cid})
    await ws.wait_type("status", conversation_id=cid, status="active")
    await vs.wait_type("status", status="active")
    return cid


async def say(vs: Socket, body: str) -> None:
    msg_id = uuid.uuid4().hex
    await vs.send({"type": "message", "body": body, "client_msg_id": msg_id})
    await vs.wait_type("ack", client_msg_id=msg_id)


async def reply(ws: Socket, cid: str, body: str) -> dict[str, Any]:
    """Send as an agent; the ack or the error that answered it."""
    msg_id = uuid.uuid4().hex
    await ws.send({"type": "message", "conversation_id": cid, "body": body,
                   "client_msg_id": msg_id})
    return await ws.wait_for(lambda f: (f.get("type") == "ack" and f.get("client_msg_id")
                                        == msg_id) or (f.get("type") == "error"
                                                       and f.get("conversation_id") == cid))


async def transfer(ws: Socket, cid: str, to: str | None) -> None:
    await ws.send({"type": "transfer", "conversation_id": cid, "to": to})


async def audit_actions(boss: Agent, cid: str) -> list[str]:
    entries = (await boss.http.get("/api/admin/audit",
                                   params={"target": f"conversation:{cid}"})).json()["entries"]
    return [e["action"] for e in entries]


def last_seq(server: Server, cid: str) -> int:
    return int(server.query("SELECT last_seq FROM conversations WHERE id = ?", cid)[0][0])


async def test_take_over_after_the_agent_signs_out(
        hserver: Server, people: dict[str, Agent], customer: Visitor) -> None:
    """Ann claims and signs out; Bob takes over; the customer sees Bob's display name (never a
    sign-in name) and one system message; Bob gets the customer's next words."""
    vs = await customer.socket()
    ann = await dashboard(people["ann"])
    cid = await claimed(vs, ann)
    bob = await dashboard(people["bob"])

    await transfer(bob, cid, "bob")  # Ann's dashboard is open: not yet
    refused = await bob.wait_type("error", conversation_id=cid)
    assert refused["code"] == "agent_present"

    assert (await people["ann"].http.post("/api/staff/logout")).status_code == 200
    assert await ann.closed_code() == 4401
    queue = await bob.wait_for(lambda f: f["type"] == "queue" and any(
        c["conversation_id"] == cid and c["agent_online"] is False for c in f["conversations"]))
    assert queue
    await transfer(bob, cid, "bob")
    status = await bob.wait_type("status", conversation_id=cid, status="active")
    assert status["agent_name"] == "bob" and status["agent"] == "Bob B."
    seen = await vs.wait_for(lambda f: f["type"] == "status" and f["agent"] == "Bob B.")
    assert seen == {"type": "status", "conversation_id": cid, "status": "active",
                    "agent": "Bob B."}
    notice = await vs.wait_type("message", sender="system", body="Bob B. took over the "
                                "conversation.")
    assert "bob" not in notice["body"] and "ann" not in notice["body"]

    await say(vs, "is anyone there?")
    heard = await bob.wait_type("message", conversation_id=cid, body="is anyone there?")
    assert heard["sender"] == "visitor"
    assert (await reply(bob, cid, "Bob here."))["type"] == "ack"
    assert "conversation.takeover" in await audit_actions(people["boss"], cid)
    for s in (vs, bob):
        await s.close()


async def test_transfer_to_a_named_agent_moves_the_dashboards(
        hserver: Server, people: dict[str, Agent], customer: Visitor) -> None:
    """Ann hands over to Cat: Cat's dashboard (every tab) follows it, Ann's gets the status
    frame and then nothing more, and Ann can no longer write to it."""
    vs = await customer.socket()
    ann = await dashboard(people["ann"])
    cid = await claimed(vs, ann)
    cat, cat_tab = await dashboard(people["cat"]), await dashboard(people["cat"])

    await transfer(ann, cid, "cat")
    gone = await ann.wait_type("status", conversation_id=cid, agent_name="cat")
    assert gone["previous_agent_id"] is not None and gone["agent"] == "Cat C."
    for tab in (cat, cat_tab):
        await tab.wait_type("status", conversation_id=cid, agent_name="cat")
    await vs.wait_type("message", sender="system",
                       body="Ann A. handed the conversation over to Cat C.")
    assert (await vs.wait_for(lambda f: f["type"] == "status" and f["agent"] == "Cat C."))

    await say(vs, "after the transfer")
    for tab in (cat, cat_tab):
        await tab.wait_type("message", conversation_id=cid, body="after the transfer")
    await asyncio.sleep(0.3)  # let anything misrouted arrive before looking
    assert not [f for f in ann.frames if f.get("type") == "message"
                and f.get("body") == "after the transfer"]
    refused = await reply(ann, cid, "still mine?")
    assert refused["type"] == "error" and refused["code"] == "not_claimed"
    assert (await reply(cat, cid, "Cat here."))["type"] == "ack"
    assert "conversation.transfer" in await audit_actions(people["boss"], cid)
    for s in (vs, ann, cat, cat_tab):
        await s.close()


async def test_release_to_the_queue(
        hserver: Server, people: dict[str, Agent], customer: Visitor) -> None:
    """`to: null` puts the conversation back in the queue; the customer is told nobody has it
    yet, and any agent can claim it."""
    vs = await customer.socket()
    ann = await dashboard(people["ann"])
    cid = await claimed(vs, ann)
    await transfer(ann, cid, None)
    await ann.wait_type("status", conversation_id=cid, status="queued")
    assert await vs.wait_type("status", status="queued") == {
        "type": "status", "conversation_id": cid, "status": "queued", "agent": None}
    await vs.wait_for(lambda f: f["type"] == "message" and f["sender"] == "system"
                      and "left the conversation" in f["body"])
    bob = await dashboard(people["bob"])
    await bob.send({"type": "claim", "conversation_id": cid})
    await bob.wait_type("status", conversation_id=cid, agent_name="bob")
    assert "conversation.release" in await audit_actions(people["boss"], cid)
    for s in (vs, ann, bob):
        await s.close()


async def test_simultaneous_takeovers_have_one_winner(
        hserver: Server, people: dict[str, Agent], customer: Visitor) -> None:
    """Three agents take over an orphaned conversation at the same instant: one wins, the others
    are told, and only one system message is stored."""
    vs = await customer.socket()
    ann = await dashboard(people["ann"])
    cid = await claimed(vs, ann)
    await ann.close()  # no open dashboard left
    rivals = {name: await dashboard(people[name]) for name in ("bob", "cat", "dan")}
    await asyncio.sleep(0.2)
    before = last_seq(hserver, cid)
    await asyncio.gather(*(transfer(ws, cid, name) for name, ws in rivals.items()))
    outcomes = {}
    for name, ws in rivals.items():
        outcomes[name] = await ws.wait_for(
            lambda f: f.get("conversation_id") == cid and f["type"] in ("status", "error"))
    winners = [n for n, f in outcomes.items() if f["type"] == "status"
               and f.get("agent_name") == n]
    assert len(winners) == 1, outcomes
    losers = [f["code"] for n, f in outcomes.items() if n not in winners]
    assert set(losers) <= {"already_claimed", "agent_present"}, outcomes
    holder = hserver.query("SELECT s.name FROM conversations c JOIN staff s ON s.id = c.agent_id "
                           "WHERE c.id = ?", cid)
    assert holder == [(winners[0],)]
    assert last_seq(hserver, cid) == before + 1
    for s in (vs, *rivals.values()):
        await s.close()


async def test_bad_transfers_are_refused_and_change_nothing(
        hserver: Server, people: dict[str, Agent], customer: Visitor) -> None:
    """To an unknown, disabled or away agent, to oneself, of a foreign conversation (by a
    non-admin), of a queued one to oneself, of a closed one: clear errors, nothing stored."""
    boss = people["boss"]
    staff = {s["name"]: s["id"] for s in (await boss.http.get("/api/admin/staff")).json()["staff"]}
    assert (await boss.http.patch(f"/api/admin/staff/{staff['eve']}",
                                  json={"state": "disabled"})).status_code == 200
    assert (await people["dan"].http.patch("/api/staff/me", json={"away": True})).json()[
        "staff"]["away"] is True
    vs = await customer.socket()
    ann = await dashboard(people["ann"])
    bob = await dashboard(people["bob"])
    cid: str = (await vs.wait_type("welcome"))["conversation_id"]

    await transfer(bob, cid, "bob")  # queued: a claim is the way
    assert (await bob.wait_type("error", conversation_id=cid))["code"] == "not_claimed"
    await ann.send({"type": "claim", "conversation_id": cid})
    await ann.wait_type("status", conversation_id=cid, status="active")
    before = last_seq(hserver, cid)
    cases = [(ann, "nobody-by-that-name", "unknown_agent"), (ann, "eve", "agent_disabled"),
             (ann, "dan", "agent_away"), (ann, "ann", "transfer_to_self"),
             (ann, "ANN", "transfer_to_self"), (bob, "cat", "not_yours"),
             (bob, None, "not_yours")]
    for ws, to, code in cases:
        await transfer(ws, cid, to)
        error = await ws.wait_type("error", conversation_id=cid)
        assert error["code"] == code, (to, error)
        assert error["message"]
    await transfer(ann, "cv_does_not_exist", "bob")
    assert (await ann.wait_type("error", conversation_id="cv_does_not_exist"))["code"] == \
        "not_found"
    await ann.send({"type": "transfer", "conversation_id": cid})
    assert (await ann.wait_type("error"))["code"] == "invalid_field"
    assert last_seq(hserver, cid) == before
    assert hserver.query("SELECT s.name FROM conversations c JOIN staff s ON s.id = c.agent_id "
                         "WHERE c.id = ?", cid) == [("ann",)]

    await ann.send({"type": "close", "conversation_id": cid})
    await ann.wait_type("status", conversation_id=cid, status="closed")
    await transfer(ann, cid, "bob")
    assert (await ann.wait_type("error", conversation_id=cid))["code"] == "conversation_closed"
    assert not [a for a in await audit_actions(boss, cid) if a.startswith("conversation.")]

    assert (await people["dan"].http.patch("/api/staff/me", json={"away": False})).status_code \
        == 200
    assert (await boss.http.patch(f"/api/admin/staff/{staff['eve']}",
                                  json={"state": "active"})).status_code == 200
    for s in (vs, ann, bob):
        await s.close()


async def test_admin_reassigns_a_conversation_whose_agent_is_present(
        hserver: Server, people: dict[str, Agent], customer: Visitor) -> None:
    """An admin may hand anyone's conversation to another agent, even while its agent is
    there; the audit log names the admin."""
    vs = await customer.socket()
    ann = await dashboard(people["ann"])
    cid = await claimed(vs, ann)
    boss = await dashboard(people["boss"])
    await transfer(boss, cid, "bob")
    await ann.wait_type("status", conversation_id=cid, agent_name="bob")
    await vs.wait_type("message", sender="system",
                       body="The conversation was handed over to Bob B.")
    entries = (await people["boss"].http.get(
        "/api/admin/audit", params={"action": "conversation.reassign",
                                    "target": f"conversation:{cid}"})).json()["entries"]
    assert entries[0]["actor"].startswith("staff:") and entries[0]["detail"]["to"]
    for s in (vs, ann, boss):
        await s.close()
