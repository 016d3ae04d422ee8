"""Two `chatserver serve` processes on one PostgreSQL database and one shared broadcast: which
named agents are online and away is shared (takeover, transfer, queue, colleagues, visitors'
presence), and so are the staff sign-in limits; the broadcast's lag is measured; `chatserver
erase` clears the erased conversation off dashboards in every process at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from chatserver.hub import PRESENCE_TTL_SECONDS

from . import databases
from .support import STAFF_PASSWORD, Agent, Server, Socket, Visitor
from .test_metrics import _samples, _value
from .test_processes import BACKENDS, _broadcast_url, _env


@pytest.fixture
def database() -> str:
    databases.require_postgres()
    return databases.create_database()


def _servers(make_server: Callable[..., Server], env: dict[str, str]) -> tuple[Server, Server]:
    a, b = make_server(**env), make_server(**env)
    for name in ("ann", "bob"):
        a.add_staff(name, "agent")
    return a, b


async def _dashboard(server: Server, name: str) -> tuple[Agent, Socket]:
    agent = await Agent(server, name).login()
    ws = await agent.socket()
    await ws.wait_type("queue")
    return agent, ws


async def _claimed(visitor_server: Server, agent_ws: Socket) -> tuple[Visitor, Socket, str]:
    """A visitor's conversation, claimed on `agent_ws`."""
    visitor = await Visitor(visitor_server).start()
    vs = await visitor.socket()
    conversation = (await vs.wait_type("welcome"))["conversation_id"]
    await agent_ws.send({"type": "claim", "conversation_id": conversation})
    await agent_ws.wait_type("status", conversation_id=conversation, status="active")
    return visitor, vs, conversation


def _item(frame: dict[str, Any], conversation: str) -> dict[str, Any] | None:
    return next((c for c in frame.get("conversations", ())
                 if c["conversation_id"] == conversation), None)


async def _queue_says(ws: Socket, conversation: str, agent_online: bool) -> None:
    """Wait for a queue frame marking the conversation's agent online (or not)."""
    await ws.wait_for(lambda f: f.get("type") == "queue" and (
        _item(f, conversation) or {}).get("agent_online") is agent_online, timeout=15)


async def _transfer(ws: Socket, conversation: str, to: str) -> dict[str, Any]:
    """Send a transfer; the refusal (error) or the status frame naming the new agent."""
    await ws.send({"type": "transfer", "conversation_id": conversation, "to": to})
    return await ws.wait_for(lambda f: f.get("type") == "error" or (
        f.get("type") == "status" and f.get("conversation_id") == conversation
        and f.get("agent_name") == to), timeout=10)


async def _take_over_within(ws: Socket, conversation: str, name: str, seconds: float) -> None:
    """Ask to take over until it is accepted; fail when still refused after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        got = await _transfer(ws, conversation, name)
        if got["type"] == "status":
            return
        assert got["code"] == "agent_present", got
        assert time.monotonic() < deadline, "the takeover was still refused"
        await asyncio.sleep(0.2)


async def _held_by_ann_on_a(a: Server, b: Server
                            ) -> tuple[Agent, Socket, Visitor, Socket, str, Agent, Socket]:
    """Ann's dashboard on process A claims a conversation; Bob's on process B sees her online
    and is refused a takeover. Ann, her socket, the visitor, its socket, the conversation, Bob
    and his socket."""
    ann, ann_ws = await _dashboard(a, "ann")
    visitor, vs, conversation = await _claimed(b, ann_ws)
    bob, bob_ws = await _dashboard(b, "bob")
    await _queue_says(bob_ws, conversation, True)
    refused = await _transfer(bob_ws, conversation, "bob")
    assert refused.get("code") == "agent_present", refused
    return ann, ann_ws, visitor, vs, conversation, bob, bob_ws


@pytest.mark.parametrize("kind", BACKENDS)
async def test_takeover_is_refused_while_the_agent_is_on_another_process(
    make_server: Callable[..., Server], database: str, kind: str,
) -> None:
    """Ann's dashboard on process A holds the conversation: Bob on process B sees her online in
    his queue and may not take it over; once her dashboard closes, his queue says so and his
    takeover is accepted."""
    a, b = _servers(make_server, _env(database, _broadcast_url(kind, database)))
    ann, ann_ws, visitor, vs, conversation, bob, bob_ws = await _held_by_ann_on_a(a, b)
    colleagues = (await bob.http.get("/api/staff/colleagues")).json()["staff"]
    assert {c["name"]: c["online"] for c in colleagues} == {"ann": True, "bob": True}
    await ann_ws.close()
    await _queue_says(bob_ws, conversation, False)
    await _take_over_within(bob_ws, conversation, "bob", 10)
    await vs.wait_type("status", status="active", timeout=10)
    for s in (vs, bob_ws):
        await s.close()
    for c in (visitor, ann, bob):
        await c.aclose()


async def test_takeover_is_accepted_once_the_agents_process_is_killed(
    make_server: Callable[..., Server], database: str,
) -> None:
    """Process A, with Ann's dashboard, is killed with SIGKILL and says nothing on its way out:
    Bob's takeover on process B, refused before, is accepted once A's heartbeat expires."""
    a, b = _servers(make_server, _env(database, _broadcast_url("redis", database)))
    ann, ann_ws, visitor, vs, conversation, bob, bob_ws = await _held_by_ann_on_a(a, b)
    a.kill9()
    await _take_over_within(bob_ws, conversation, "bob", PRESENCE_TTL_SECONDS + 10)
    for s in (vs, bob_ws, ann_ws):
        await s.close()
    for c in (visitor, ann, bob):
        await c.aclose()


async def test_away_set_on_one_process_counts_in_every_process(
    make_server: Callable[..., Server], database: str,
) -> None:
    """Ann's only dashboard is on process A; she says she is away through process B (the proxy
    sent her request there): visitors on A hear no agent is online, colleagues on B see her away,
    and Bob on B may not transfer to her; back, she is online again and Bob's transfer from B
    reaches her dashboard on A."""
    a, b = _servers(make_server, _env(database, _broadcast_url("redis", database)))
    ann, ann_ws = await _dashboard(a, "ann")
    visitor = await Visitor(a).start()
    vs = await visitor.socket()
    welcome = await vs.wait_type("welcome")
    conversation = welcome["conversation_id"]
    if not welcome["agents_online"]:
        await vs.wait_type("presence", agents_online=True, timeout=10)
    ann_on_b = await Agent(b, "ann").login()
    response = await ann_on_b.http.patch("/api/staff/me", json={"away": True})
    assert response.status_code == 200, response.text
    await vs.wait_type("presence", agents_online=False, timeout=10)
    bob, bob_ws = await _dashboard(b, "bob")
    colleagues = (await bob.http.get("/api/staff/colleagues")).json()["staff"]
    assert {c["name"]: (c["online"], c["away"]) for c in colleagues}["ann"] == (True, True)
    await bob_ws.send({"type": "claim", "conversation_id": conversation})
    await bob_ws.wait_type("status", conversation_id=conversation, status="active")
    refused = await _transfer(bob_ws, conversation, "ann")
    assert refused.get("code") == "agent_away", refused
    response = await ann_on_b.http.patch("/api/staff/me", json={"away": False})
    assert response.status_code == 200, response.text
    moved = await _transfer(bob_ws, conversation, "ann")
    assert moved["type"] == "status", moved
    await ann_ws.wait_type("status", conversation_id=conversation, agent_name="ann", timeout=10)
    await _queue_says(bob_ws, conversation, True)  # Ann, on A, is there for it
    for s in (vs, ann_ws, bob_ws):
        await s.close()
    for c in (visitor, ann, ann_on_b, bob):
        await c.aclose()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_broadcast_lag_is_measured_where_a_message_arrives(
    make_server: Callable[..., Server], database: str, kind: str,
) -> None:
    """A visitor's message on process A reaches the agent on process B, and B's /metrics shows
    chatserver_broadcast_lag_seconds observed (never negative)."""
    a, b = _servers(make_server, _env(database, _broadcast_url(kind, database)))
    ann, ann_ws = await _dashboard(b, "ann")
    visitor, vs, conversation = await _claimed(a, ann_ws)
    await vs.send({"type": "message", "body": "over the broadcast", "client_msg_id": "v1"})
    await ann_ws.wait_type("message", conversation_id=conversation, body="over the broadcast",
                           timeout=10)
    async with httpx.AsyncClient(base_url=b.url, timeout=10) as http:
        samples = _samples((await http.get("/metrics")).text)
    assert _value(samples, "chatserver_broadcast_lag_seconds_count") > 0
    assert _value(samples, "chatserver_broadcast_lag_seconds_sum") >= 0
    for s in (vs, ann_ws):
        await s.close()
    for c in (visitor, ann):
        await c.aclose()


async def test_cli_erase_clears_dashboards_on_every_process_at_once(
    make_server: Callable[..., Server], database: str,
) -> None:
    """`chatserver erase`, run beside two servers on Redis: the agent's dashboard on A (holding
    the conversation) and a colleague's on B get `erased` with the conversation's id, and the
    visitor's socket on B closes with 4401, without waiting for anyone's next frame."""
    a, b = _servers(make_server, _env(database, _broadcast_url("redis", database)))
    ann, ann_ws = await _dashboard(a, "ann")
    visitor = await Visitor(b).start(email="erase.me@example.com")
    vs = await visitor.socket()
    conversation = (await vs.wait_type("welcome"))["conversation_id"]
    await ann_ws.send({"type": "claim", "conversation_id": conversation})
    await ann_ws.wait_type("status", conversation_id=conversation, status="active")
    bob, bob_ws = await _dashboard(b, "bob")
    done = a.cli("erase", "--email", "erase.me@example.com")
    assert done.returncode == 0, done.stderr
    for ws in (ann_ws, bob_ws):
        erased = await ws.wait_type("erased", timeout=5)
        assert erased["conversation_ids"] == [conversation]
    assert await vs.closed_code(timeout=5) == 4401
    for s in (ann_ws, bob_ws):
        await s.close()
    for c in (visitor, ann, bob):
        await c.aclose()


async def test_staff_sign_in_limit_per_address_holds_across_processes(
    make_server: Callable[..., Server], database: str,
) -> None:
    """CHATSERVER_STAFF_SIGN_INS_PER_IP counts an address's attempts (from browsers the
    account does not know) in every process: spread over two processes it gets the limit once,
    and the next attempt is refused (429) on either."""
    env = _env(database, _broadcast_url("redis", database))
    del env["CHATSERVER_LIMITS_EXEMPT"]
    env["CHATSERVER_STAFF_SIGN_INS_PER_IP"] = "3"
    a, b = _servers(make_server, env)
    codes = []
    for server in (a, b, a, b):  # a fresh browser each time: no known-device cookie
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            response = await http.post("/api/staff/login",
                                       json={"username": "ann", "password": "wrong " * 3})
            codes.append(response.status_code)
    assert codes == [401, 401, 401, 429], codes
    async with httpx.AsyncClient(base_url=b.url, timeout=30) as http:  # the right password too
        response = await http.post("/api/staff/login",
                                   json={"username": "ann", "password": STAFF_PASSWORD})
        assert response.status_code == 429, response.text
