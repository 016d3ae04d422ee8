"""Failover without loss: two and three `chatserver serve` processes on one PostgreSQL database
and one Redis of the test's own (a child `redis-server`, so it can really be restarted). The
visitor's process killed with SIGKILL mid-conversation, Redis restarted mid-conversation, and two
agents on different processes claiming the same conversation at the same instant."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from . import databases
from .redis_support import PrivateRedis
from .support import Agent, Server, Socket, Visitor
from .test_metrics import _samples, _value
from .test_processes import _chat, _env, _health, _until

MESSAGES = 30  # each side's, per test


@pytest.fixture
def database() -> str:
    """A fresh PostgreSQL database: the processes must share one (fails under CI=1 without)."""
    databases.require_postgres()
    return databases.create_database()


@pytest.fixture
def redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.kill()


def _servers(make_server: Callable[..., Server], database: str, redis: PrivateRedis,
             count: int) -> list[Server]:
    env = _env(database, redis.url)  # one secret key: a cookie of one process is good at all
    servers = [make_server(**env) for _ in range(count)]
    servers[0].add_staff("agent", "agent")
    return servers


class ResumingVisitor:
    """A visitor's socket client that does what the widget does: it keeps each message until
    it is acked, and when the socket is lost it connects again (here: to the process it is
    given, as the proxy would pick one), sends `resume` after the highest seq it holds without a
    gap, then sends its unacked messages again under the same client_msg_id."""

    def __init__(self, visitor: Visitor, fallback: Server) -> None:
        self.visitor = visitor
        self.fallback = fallback
        self.sockets: list[Socket] = []
        self.outbox: dict[str, str] = {}  # client_msg_id -> body, in the order first sent
        self.acks: dict[str, int] = {}
        self.messages: list[dict[str, Any]] = []  # every message frame, every socket, in order
        self.shown: dict[int, dict[str, Any]] = {}  # seq -> message, as the widget keeps them
        self.resumed_after: list[int] = []  # each socket's resume
        self.errors: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    def contiguous(self) -> int:
        seqs = {m["seq"] for m in self.messages}
        n = 0
        while n + 1 in seqs:
            n += 1
        return n

    async def connect(self, server: Server) -> dict[str, Any]:
        self.visitor.server = server
        socket = await self.visitor.socket()
        welcome = await socket.wait_type("welcome", timeout=10)
        self.sockets.append(socket)
        self._lost = asyncio.Event()
        self._reader = asyncio.create_task(self._read(socket))
        self.resumed_after.append(self.contiguous())
        await socket.send({"type": "resume", "after_seq": self.resumed_after[-1]})
        for msg_id, body in list(self.outbox.items()):
            await socket.send({"type": "message", "body": body, "client_msg_id": msg_id})
        return welcome

    async def _read(self, socket: Socket) -> None:
        try:
            async for raw in socket.ws:
                frame = json.loads(raw)
                socket.frames.append(frame)
                if frame["type"] == "message":
                    frame["_socket"] = len(self.sockets) - 1
                    self.messages.append(frame)
                    self.shown.setdefault(frame["seq"], frame)
                elif frame["type"] == "ack":
                    self.acks[frame["client_msg_id"]] = frame["seq"]
                    self.outbox.pop(frame["client_msg_id"], None)
                elif frame["type"] == "error":
                    self.errors.append(frame)
        except ConnectionClosed:
            pass
        self._lost.set()

    async def say(self, msg_id: str, body: str) -> None:
        self.outbox[msg_id] = body
        if not self._lost.is_set():
            try:
                await self.sockets[-1].send({"type": "message", "body": body,
                                             "client_msg_id": msg_id})
            except ConnectionClosed:
                pass  # sent again after the reconnect

    async def until(self, condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
        """Wait for `condition`, reconnecting to the fallback process whenever the socket is
        lost on the way."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not condition():
            if self._lost.is_set():
                await self.connect(self.fallback)
                continue
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        for socket in self.sockets:
            await socket.close()
        if self._reader is not None:
            await self._reader
        await self.visitor.aclose()


async def _agent_writes(ags: Socket, conversation: str, prefix: str, count: int,
                        sent: list[int], gates: dict[int, asyncio.Event]) -> None:
    """The agent's side: one message after another, each acked before the next; before message
    n it waits for gates[n] (so some are surely written after the fault, however fast)."""
    for n in range(count):
        if n in gates:
            await gates[n].wait()
        await ags.send({"type": "message", "conversation_id": conversation,
                        "body": f"{prefix}{n}", "client_msg_id": f"{prefix}{n}"})
        await ags.wait_type("ack", client_msg_id=f"{prefix}{n}", timeout=10)
        sent.append(n)


async def _visitor_writes(client: ResumingVisitor, prefix: str, count: int,
                          gates: dict[int, asyncio.Event]) -> None:
    """The visitor's side: up to three messages in flight (sent, not yet acked); gates as for
    the agent."""
    for n in range(count):
        if n in gates:
            await client.until(gates[n].is_set, f"the gate before {prefix}{n}")
        await client.say(f"{prefix}{n}", f"{prefix}{n}")
        await client.until(lambda n=n: len(client.acks) >= n - 2, f"the ack of {prefix}{n - 2}")
    await client.until(lambda: not client.outbox, "every visitor message acked")


def _stored(database: str, conversation: str) -> list[tuple[int, str, str, str | None]]:
    return [tuple(r) for r in databases.query(  # type: ignore[misc]
        database, "SELECT seq, sender, body, client_msg_id FROM messages "
        "WHERE conversation_id = ? ORDER BY seq", conversation)]


def _assert_nothing_lost_or_doubled(database: str, conversation: str,
                                    client: ResumingVisitor, agent_seqs: list[int],
                                    prefixes: tuple[str, str]) -> None:
    stored = _stored(database, conversation)
    seqs = [r[0] for r in stored]
    assert seqs == list(range(1, len(seqs) + 1)), "stored seqs have a gap or a repeat"
    visitor_prefix, agent_prefix = prefixes
    visitor_bodies = [r[2] for r in stored if r[1] == "visitor"]
    agent_bodies = [r[2] for r in stored if r[1] == "agent"]
    assert visitor_bodies == [f"{visitor_prefix}{n}" for n in range(MESSAGES)]  # once, in order
    assert agent_bodies == [f"{agent_prefix}{n}" for n in range(MESSAGES)]
    by_id = {r[3]: r[0] for r in stored if r[3]}
    assert all(by_id[i] == seq for i, seq in client.acks.items()), "an ack named another seq"
    # The visitor holds every stored message once (by seq, as the widget keeps them).
    assert sorted(client.shown) == seqs
    assert [client.shown[seq]["body"] for seq in seqs] == [r[2] for r in stored]
    for index, after in enumerate(client.resumed_after):
        _assert_one_socket_in_order(
            [m["seq"] for m in client.messages if m["_socket"] == index], after,
            seqs[-1] if index == len(client.resumed_after) - 1 else None)
    assert agent_seqs == list(range(agent_seqs[0], seqs[-1] + 1))


def _assert_one_socket_in_order(got: list[int], after: int, last: int | None) -> None:
    """What one visitor socket was sent: live messages stored after its welcome (they may come
    before the client's `resume` is read), then the replay from `after` on, in order, then live
    ones. The replay repeats the early live ones it finds stored when it reads; one stored while
    it reads came live before it and is not repeated (docs/protocol.md#seq-ack-resume). Together
    they leave no gap, and nothing else repeats or comes out of order."""
    start = got.index(after + 1) if after + 1 in got else len(got)
    early, rest = got[:start], got[start:]
    assert early == sorted(set(early)), got
    assert rest == sorted(set(rest)), got
    held = sorted(set(early) | set(rest))
    assert held == list(range(after + 1, after + 1 + len(held))), got
    assert all(seq in early for seq in held if seq not in rest), got
    if last is not None:
        assert held[-1] == last, got


@pytest.mark.parametrize("count", [2, 3])
async def test_visitors_process_killed_mid_conversation_loses_and_doubles_nothing(
    make_server: Callable[..., Server], database: str, redis: PrivateRedis, count: int,
) -> None:
    """The visitor on process A, the agent on B, both writing; A is killed with SIGKILL while
    messages are in flight both ways. The visitor reconnects to another process (B with two,
    C with three), resumes after its last seq and sends its unacked messages again: every
    message is stored once, in order, with gapless seqs; the visitor sees each once, including
    those the agent wrote while it was away."""
    servers = _servers(make_server, database, redis, count)
    a, b, target = servers[0], servers[1], servers[-1]
    visitor, vs, agent, ags, conversation = await _chat(a, b)
    await vs.close()
    client = ResumingVisitor(visitor, fallback=target)
    await client.connect(a)
    agent_sent: list[int] = []
    killed = asyncio.Event()
    gates = {15: killed}
    agent_task = asyncio.create_task(
        _agent_writes(ags, conversation, "a", MESSAGES, agent_sent, gates))
    visitor_task = asyncio.create_task(_visitor_writes(client, "v", MESSAGES, gates))
    await client.until(lambda: len(client.acks) >= 8 and len(agent_sent) >= 8, "a conversation")
    await asyncio.to_thread(a.kill9)  # both sides keep writing meanwhile
    killed.set()
    await asyncio.wait_for(asyncio.gather(agent_task, visitor_task), 60)
    last = _stored(database, conversation)[-1][0]
    await client.until(lambda: client.contiguous() >= last, "the visitor to catch up")
    await ags.wait_type("message", conversation_id=conversation, seq=last, timeout=10)
    await asyncio.sleep(0.5)  # a repeat would have come by now
    assert len(client.sockets) == 2, "the visitor reconnected once"
    agent_seqs = [f["seq"] for f in ags.frames if f.get("type") == "message"]
    _assert_nothing_lost_or_doubled(database, conversation, client, agent_seqs, ("v", "a"))
    for server in servers[1:]:
        assert "Traceback" not in server.log()
    await ags.close()
    await client.aclose()
    await agent.aclose()


async def test_redis_restarted_mid_conversation_loses_and_doubles_nothing(
    make_server: Callable[..., Server], database: str, redis: PrivateRedis,
) -> None:
    """The private redis-server is killed and started again on its port while the visitor (A)
    and the agent (B) write: both processes answer /healthz 503 naming the broadcast while it
    is down and 200 after, without a restart; both sockets get `broadcast_unavailable`; every
    message is stored once and reaches both sides once, in order; presence, lost with Redis's
    memory, comes back."""
    a, b = _servers(make_server, database, redis, 2)
    visitor, vs, agent, ags, conversation = await _chat(a, b)
    await vs.close()
    client = ResumingVisitor(visitor, fallback=a)
    await client.connect(a)
    agent_sent: list[int] = []
    down_seen, restarted = asyncio.Event(), asyncio.Event()
    gates = {15: down_seen, 22: restarted}  # messages before, during and after the outage
    agent_task = asyncio.create_task(
        _agent_writes(ags, conversation, "a", MESSAGES, agent_sent, gates))
    visitor_task = asyncio.create_task(_visitor_writes(client, "v", MESSAGES, gates))
    await client.until(lambda: len(client.acks) >= 8 and len(agent_sent) >= 8, "a conversation")
    await asyncio.to_thread(redis.kill)

    async def down(server: Server) -> bool:
        health = await _health(server)
        return health.status_code == 503 and health.json()["failing"] == ["broadcast"]

    for server in (a, b):
        await _until(lambda server=server: down(server), "/healthz to name the broadcast", 10)
    await ags.wait_type("error", code="broadcast_unavailable", timeout=10)
    await client.until(lambda: any(e["code"] == "broadcast_unavailable" for e in client.errors),
                       "the visitor's broadcast_unavailable frame", 10)
    down_seen.set()
    await client.until(lambda: len(client.acks) >= 20 and len(agent_sent) >= 20,
                       "messages written while Redis is down")
    await asyncio.to_thread(redis.start)
    restarted.set()

    async def up(server: Server) -> bool:
        return (await _health(server)).status_code == 200

    async def reconnected(server: Server) -> bool:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            samples = _samples((await http.get("/metrics")).text)
        return _value(samples, "chatserver_broadcast_reconnects_total") == 1

    for server in (a, b):
        await _until(lambda server=server: up(server), "/healthz to answer ok again")
        await _until(lambda server=server: reconnected(server),
                     "/metrics to count the broadcast's reconnect", 10)
    await asyncio.wait_for(asyncio.gather(agent_task, visitor_task), 60)
    last = _stored(database, conversation)[-1][0]
    await client.until(lambda: client.contiguous() >= last, "the visitor to catch up")
    await ags.wait_type("message", conversation_id=conversation, seq=last, timeout=10)
    await asyncio.sleep(0.5)  # a repeat would have come by now
    assert len(client.sockets) == 1, "the visitor's socket stayed open"
    agent_seqs = [f["seq"] for f in ags.frames if f.get("type") == "message"]
    _assert_nothing_lost_or_doubled(database, conversation, client, agent_seqs, ("v", "a"))

    async def agent_online_again() -> bool:  # a new socket on A is told B's agent is there
        probe = await Visitor(a).start(email="probe@example.com")
        try:
            socket = await probe.socket()
            welcome = await socket.wait_type("welcome")
            await socket.close()
            return bool(welcome["agents_online"])
        finally:
            await probe.aclose()

    await _until(agent_online_again, "presence to come back", 10)
    for server in (a, b):
        assert "Traceback" not in server.log()
    await ags.close()
    await client.aclose()
    await agent.aclose()


async def test_rival_claims_on_two_processes_have_one_winner(
    make_server: Callable[..., Server], database: str, redis: PrivateRedis,
) -> None:
    """Two agents on different processes claim the same queued conversation at the same
    instant, six times over: each time exactly one wins and the other gets `already_claimed`;
    the database names the winner."""
    a, b, c = _servers(make_server, database, redis, 3)
    a.add_staff("rival", "agent")
    agent = await Agent(a, "agent").login()
    rival = await Agent(b, "rival").login()
    ags, rvs = await agent.socket(), await rival.socket()
    for s in (ags, rvs):
        await s.wait_type("queue")
    staff = dict(databases.query(database, "SELECT name, id FROM staff"))  # type: ignore[arg-type]
    wins = {"agent": 0, "rival": 0}
    for n in range(6):
        visitor = await Visitor(c).start(email=f"race{n}@example.com")
        vs = await visitor.socket()
        conversation = (await vs.wait_type("welcome"))["conversation_id"]
        claim = {"type": "claim", "conversation_id": conversation}
        await asyncio.gather(ags.send(claim), rvs.send(claim))

        def outcome(f: dict[str, Any], conversation: str = conversation) -> bool:
            return f.get("conversation_id") == conversation and (
                (f.get("type") == "status" and f.get("status") == "active")
                or f.get("type") == "error")

        results = {name: await s.wait_for(outcome, timeout=10)
                   for name, s in (("agent", ags), ("rival", rvs))}
        winners = [name for name, f in results.items() if f["type"] == "status"]
        assert len(winners) == 1, results
        loser = "rival" if winners == ["agent"] else "agent"
        assert results[loser]["code"] == "already_claimed", results
        wins[winners[0]] += 1
        owner = databases.query(database, "SELECT agent_id FROM conversations WHERE id = ?",
                                conversation)[0][0]
        assert owner == staff[winners[0]]
        await vs.wait_type("status", status="active", timeout=10)
        await vs.close()
        await visitor.aclose()
    for s in (ags, rvs):
        await s.close()
    await agent.aclose()
    await rival.aclose()
