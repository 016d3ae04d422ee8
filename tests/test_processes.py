"""Two `chatserver serve` processes on one PostgreSQL database and one shared broadcast (Redis or
PostgreSQL LISTEN/NOTIFY): a visitor on one, an agent on the other, and the end of a session,
a new policy, presence and broadcast outages reaching every process at once."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from chatserver.hub import PRESENCE_TTL_SECONDS

from . import databases
from .redis_support import REDIS_URL, fresh_redis_url, kill_pubsub_clients, require_redis
from .support import Agent, Server, Socket, Visitor, cookie_header, free_port, open_socket
from .test_database_faults import Outage

BACKENDS = ["redis", "postgresql"]


def _broadcast_url(kind: str, database: str) -> str:
    if kind == "redis":
        require_redis()
        return fresh_redis_url()
    return f"{database}?channel=t{secrets.token_hex(6)}"


def _env(database: str, broadcast_url: str) -> dict[str, str]:
    return {"CHATSERVER_DATABASE_URL": database, "CHATSERVER_BROADCAST_URL": broadcast_url,
            "CHATSERVER_SECRET_KEY": secrets.token_hex(32),
            "CHATSERVER_LIMITS_EXEMPT": "127.0.0.1", "CHATSERVER_PURGE_INTERVAL_SECONDS": "0"}


@pytest.fixture
def database() -> str:
    databases.require_postgres()
    return databases.create_database()


def _pair(make_server: Callable[..., Server], env: dict[str, str],
          other: dict[str, str] | None = None) -> tuple[Server, Server]:
    first = make_server(**env)
    second = make_server(**{**env, **(other or {})})
    first.add_staff("agent", "agent")
    return first, second


async def _chat(visitor_server: Server, agent_server: Server
                ) -> tuple[Visitor, Socket, Agent, Socket, str]:
    """A visitor on one process, the agent on the other, the conversation claimed."""
    visitor = await Visitor(visitor_server).start()
    vs = await visitor.socket()
    conversation = (await vs.wait_type("welcome"))["conversation_id"]
    agent = await Agent(agent_server, "agent").login()
    ags = await agent.socket()
    await ags.wait_type("queue")
    await ags.send({"type": "claim", "conversation_id": conversation})
    await ags.wait_type("status", conversation_id=conversation, status="active")
    await vs.wait_type("status", status="active", timeout=10)
    return visitor, vs, agent, ags, conversation


def _message_seqs(socket: Socket) -> list[int]:
    return [f["seq"] for f in socket.frames if f.get("type") == "message"]


@pytest.mark.parametrize("kind", BACKENDS)
async def test_messages_flow_both_ways_between_processes(
    make_server: Callable[..., Server], database: str, kind: str,
) -> None:
    """Visitor on one process, agent on the other: the agent shows up as online, the claim,
    messages both ways (one too large for NOTIFY's 8000 bytes) and typing all cross, each
    message once."""
    a, b = _pair(make_server, _env(database, _broadcast_url(kind, database)))
    visitor = await Visitor(a).start()
    vs = await visitor.socket()
    welcome = await vs.wait_type("welcome")
    assert welcome["agents_online"] is False
    conversation = welcome["conversation_id"]
    agent = await Agent(b, "agent").login()
    ags = await agent.socket()
    await vs.wait_type("presence", agents_online=True, timeout=10)  # the other process's agent
    await vs.send({"type": "message", "body": "hello from A", "client_msg_id": "v1"})
    assert (await vs.wait_type("ack", client_msg_id="v1"))["seq"] == 1
    queue = await ags.wait_for(lambda f: f.get("type") == "queue" and any(
        c["last_message"] for c in f["conversations"]), timeout=10)
    assert [c["conversation_id"] for c in queue["conversations"]] == [conversation]
    await ags.send({"type": "claim", "conversation_id": conversation})
    await ags.wait_type("status", conversation_id=conversation, status="active")
    await vs.wait_type("status", status="active", timeout=10)
    await ags.send({"type": "message", "conversation_id": conversation, "body": "hi from B",
                    "client_msg_id": "a1"})
    reply = await vs.wait_type("message", sender="agent", timeout=10)
    assert reply["body"] == "hi from B"
    big = "é" * 4000  # 8000 bytes of UTF-8 before any JSON around it
    await vs.send({"type": "message", "body": big, "client_msg_id": "v2"})
    big_seq = (await vs.wait_type("ack", client_msg_id="v2"))["seq"]
    got = await ags.wait_type("message", conversation_id=conversation, seq=big_seq, timeout=10)
    assert got["body"] == big and got["sender"] == "visitor"
    await ags.send({"type": "typing", "conversation_id": conversation, "state": True})
    await vs.wait_type("typing", state=True, timeout=10)
    await asyncio.sleep(0.5)  # any repeat would have come by now
    assert _message_seqs(vs) == sorted(set(_message_seqs(vs)))
    agent_seqs = [f["seq"] for f in ags.frames if f.get("type") == "message"]
    assert agent_seqs == sorted(set(agent_seqs)) and big_seq in agent_seqs
    for s in (vs, ags):
        await s.close()
    await visitor.aclose()
    await agent.aclose()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_claim_reaches_the_agents_tab_on_another_process_whole(
    make_server: Callable[..., Server], database: str, kind: str,
) -> None:
    """An agent's second tab, on another process, follows a conversation claimed in the first
    from the claim on: the claim's notice and every visitor message sent meanwhile reach it
    once and in order, also those published while its process was still subscribing."""
    a, b = _pair(make_server, _env(database, _broadcast_url(kind, database)))
    visitor = await Visitor(b).start()
    vs = await visitor.socket()
    conversation = (await vs.wait_type("welcome"))["conversation_id"]
    first, second = await Agent(a, "agent").login(), await Agent(b, "agent").login()
    tab1, tab2 = await first.socket(), await second.socket()
    await tab1.wait_type("queue")
    await tab2.wait_type("queue")
    for i in range(5):
        await vs.send({"type": "message", "body": f"before {i}", "client_msg_id": f"b{i}"})
    await tab1.send({"type": "claim", "conversation_id": conversation})
    for i in range(20):
        await vs.send({"type": "message", "body": f"during {i}", "client_msg_id": f"d{i}"})
    joined = await tab1.wait_type("message", conversation_id=conversation, sender="system",
                                  timeout=10)
    await vs.wait_type("ack", client_msg_id="d19", timeout=10)
    await vs.send({"type": "message", "body": "after", "client_msg_id": "after"})
    last = (await vs.wait_type("ack", client_msg_id="after", timeout=10))["seq"]
    await tab2.wait_type("message", conversation_id=conversation, seq=last, timeout=10)
    await asyncio.sleep(0.5)  # any repeat would have come by now
    seqs = [f["seq"] for f in tab2.frames
            if f.get("type") == "message" and f.get("conversation_id") == conversation]
    assert seqs[0] <= joined["seq"]
    assert seqs == list(range(seqs[0], last + 1))
    for s in (vs, tab1, tab2):
        await s.close()
    await visitor.aclose()
    await first.aclose()
    await second.aclose()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_rename_on_one_process_reaches_the_agents_socket_on_another(
    make_server: Callable[..., Server], database: str, kind: str,
) -> None:
    """An admin on one process renames the agent whose socket is on the other: the customer
    hears it (with `renamed`), and the agent's next message, sent through the other process,
    carries the new name."""
    a, b = _pair(make_server, _env(database, _broadcast_url(kind, database)))
    a.add_staff("chief", "admin")
    visitor, vs, agent, ags, conversation = await _chat(a, b)
    chief = await Agent(a, "chief").login()
    await chief.rename("agent", "Ana from Support")
    status = await vs.wait_type("status", agent="Ana from Support", timeout=10)
    assert status["renamed"] is True
    await ags.wait_type("status", conversation_id=conversation, agent="Ana from Support",
                        timeout=10)
    await ags.send({"type": "message", "conversation_id": conversation, "body": "renamed",
                    "client_msg_id": "r1"})
    got = await vs.wait_type("message", sender="agent", timeout=10)
    assert got["author"] == "Ana from Support"
    for s in (vs, ags):
        await s.close()
    for client in (visitor, agent, chief):
        await client.aclose()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_the_customer_leaving_is_seen_across_processes(
    make_server: Callable[..., Server], database: str, kind: str,
) -> None:
    """The customer has tabs on both processes, the agent is on the second: with the tab on the
    first closed, the customer still counts as on the chat; with the last closed too, the agent
    hears they left; a tab on the first again, that they are back. (Two processes that see the
    last tab go at the same moment may both say so: the frame is a state, said twice.)"""
    a, b = _pair(make_server, _env(database, _broadcast_url(kind, database)))
    visitor, vs, agent, ags, conversation = await _chat(a, b)
    other = await open_socket(b, "/ws/visitor", cookie_header(visitor.http))
    await other.wait_type("welcome")
    await ags.send({"type": "resume", "conversation_id": conversation, "after_seq": 0})
    assert (await ags.wait_type("presence", conversation_id=conversation)
            )["visitor_online"] is True
    await vs.close()  # the tab on the first process
    await vs.ws.wait_closed()
    fresh = await agent.socket()  # a dashboard loaded now, on the second process
    await fresh.wait_type("queue")
    await fresh.send({"type": "resume", "conversation_id": conversation, "after_seq": 0})
    assert (await fresh.wait_type("presence", conversation_id=conversation)
            )["visitor_online"] is True
    await asyncio.sleep(0.5)  # time for a wrong "left" from the first process to arrive
    await ags.send({"type": "ping"})
    await ags.wait_type("pong")
    assert [f["visitor_online"] for f in ags.frames if f.get("type") == "presence"] == [True]
    await other.close()  # the last one, on the second
    await ags.wait_type("presence", conversation_id=conversation, visitor_online=False,
                        timeout=10)
    back = await visitor.socket()  # on the first process again
    await back.wait_type("welcome")
    await ags.wait_type("presence", conversation_id=conversation, visitor_online=True,
                        timeout=10)
    states = [f["visitor_online"] for f in ags.frames if f.get("type") == "presence"]
    assert [s for n, s in enumerate(states) if n == 0 or states[n - 1] != s] == [True, False,
                                                                                   True]
    for sock in (back, ags, fresh):
        await sock.close()
    for client in (visitor, agent):
        await client.aclose()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_cli_erase_closes_the_socket_on_another_process_at_once(
    make_server: Callable[..., Server], database: str, kind: str,
) -> None:
    """`chatserver erase` closes the customer's socket (4401) in a server process it never
    talked to, without waiting for the socket's next message."""
    a, b = _pair(make_server, _env(database, _broadcast_url(kind, database)))
    visitor = await Visitor(b).start(email="erase.me@example.com")
    vs = await visitor.socket()
    await vs.wait_type("welcome")
    started = time.monotonic()
    done = a.cli("erase", "--email", "erase.me@example.com")
    assert done.returncode == 0, done.stderr
    assert await vs.closed_code(timeout=5) == 4401
    assert time.monotonic() - started < 10
    await visitor.aclose()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_cli_policy_publish_pauses_chats_in_every_process_at_once(
    make_server: Callable[..., Server], database: str, kind: str, tmp_path: Path,
) -> None:
    """`chatserver policy publish` stops chats consented to the old version (an error frame,
    then 4403) in every process, before they send anything."""
    a, b = _pair(make_server, _env(database, _broadcast_url(kind, database)))
    visitors = [await Visitor(s).start(email=f"p{i}@example.com") for i, s in enumerate((a, b))]
    sockets = [await v.socket() for v in visitors]
    for s in sockets:
        await s.wait_type("welcome")
    policy = tmp_path / "policy.md"
    policy.write_text("# Policy 2\n\nWe changed things.\n", encoding="utf-8")
    done = a.cli("policy", "publish", str(policy), "--version", "2.0", "--summary", "changes")
    assert done.returncode == 0, done.stderr
    for s in sockets:
        assert await s.closed_code(timeout=5) == 4403
        assert any(f.get("code") == "consent_required" for f in s.frames)
    for v in visitors:
        await v.aclose()


async def test_forced_sign_out_closes_the_agents_socket_on_another_process(
    make_server: Callable[..., Server], database: str,
) -> None:
    """An admin on one process forces an agent's sign-out: the agent's dashboard socket on the
    other process closes with 4401 at once."""
    a, b = _pair(make_server, _env(database, _broadcast_url("postgresql", database)))
    a.add_staff("boss", "admin")
    agent = await Agent(b, "agent").login()
    ags = await agent.socket()
    await ags.wait_type("queue")
    admin = await Agent(a, "boss").login()
    staff = (await admin.http.get("/api/admin/staff")).json()["staff"]
    agent_id = next(s["id"] for s in staff if s["name"] == "agent")
    response = await admin.http.post(f"/api/admin/staff/{agent_id}/logout")
    assert response.status_code == 200, response.text
    assert await ags.closed_code(timeout=5) == 4401
    await agent.aclose()
    await admin.aclose()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_presence_goes_false_soon_after_the_agents_process_is_killed(
    make_server: Callable[..., Server], database: str, kind: str,
) -> None:
    """An agent's process killed with SIGKILL says nothing on its way out: its heartbeat
    expires, and visitors on the other process get presence false within seconds."""
    a, b = _pair(make_server, _env(database, _broadcast_url(kind, database)))
    visitor = await Visitor(a).start()
    vs = await visitor.socket()
    await vs.wait_type("welcome", agents_online=False)
    agent = await Agent(b, "agent").login()
    ags = await agent.socket()
    await ags.wait_type("queue")
    await vs.wait_type("presence", agents_online=True, timeout=10)
    b.kill9()
    killed = time.monotonic()
    await vs.wait_type("presence", agents_online=False, timeout=PRESENCE_TTL_SECONDS + 10)
    assert time.monotonic() - killed < PRESENCE_TTL_SECONDS + 3
    late = await visitor.socket()  # a new socket is welcomed with the shared answer too
    assert (await late.wait_type("welcome"))["agents_online"] is False
    for s in (vs, late, ags):
        await s.close()
    await visitor.aclose()
    await agent.aclose()


async def test_pubsub_killed_mid_conversation_loses_and_doubles_nothing(
    make_server: Callable[..., Server], database: str,
) -> None:
    """CLIENT KILL of both processes' Redis subscriptions while the agent writes: sockets are
    told live updates broke, then catch up from storage; the visitor ends with every message
    once, in order."""
    url = _broadcast_url("redis", database)
    a, b = _pair(make_server, _env(database, url))
    visitor, vs, agent, ags, conversation = await _chat(a, b)
    for n in range(40):
        await ags.send({"type": "message", "conversation_id": conversation, "body": f"m{n}",
                        "client_msg_id": f"a{n}"})
        await ags.wait_type("ack", client_msg_id=f"a{n}")
        if n == 15:
            assert kill_pubsub_clients(url) == 2
    last_seq = databases.query(database, "SELECT max(seq) FROM messages")[0][0]
    await vs.wait_type("message", seq=last_seq, timeout=15)
    await asyncio.sleep(0.5)
    assert _message_seqs(vs) == list(range(_message_seqs(vs)[0], last_seq + 1))
    bodies = [f["body"] for f in vs.frames if f.get("type") == "message" and
              f["sender"] == "agent"]
    assert bodies == [f"m{n}" for n in range(40)]
    assert any(f.get("code") == "broadcast_unavailable" for f in vs.frames)
    for s in (vs, ags):
        await s.close()
    await visitor.aclose()
    await agent.aclose()


@pytest.fixture
def redis_outage() -> Iterator[Outage]:
    require_redis()
    relay = Outage(REDIS_URL)
    yield relay
    relay.close()


async def _health(server: Server) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return await client.get("/healthz")


async def _until(predicate: Callable[[], Any], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_broadcast_away_while_running(
    make_server: Callable[..., Server], database: str, redis_outage: Outage,
) -> None:
    """One process loses Redis: its /healthz is 503 naming the broadcast and its sockets get an
    error frame, but still hear what is said in that process; what the other process's agent
    writes meanwhile is stored, and arrives once, in order, when Redis is reachable again, with
    no restart (the socket is told: `broadcast_restored`); what the cut-off process stored is
    announced to the other then."""
    url = fresh_redis_url()
    parts = urlsplit(url)
    relayed = parts._replace(netloc=f"127.0.0.1:{redis_outage.port}").geturl()
    env = _env(database, url)
    a, b = _pair(make_server, env, {"CHATSERVER_BROADCAST_URL": relayed})
    visitor, vs, agent, ags, conversation = await _chat(b, a)  # the visitor on the relayed one
    redis_outage.cut()
    error = await vs.wait_type("error", code="broadcast_unavailable", timeout=10)
    assert "Reconnecting" in error["message"]
    health = await _health(b)
    assert health.status_code == 503 and health.json()["failing"] == ["broadcast"]
    assert (await _health(a)).status_code == 200
    other = await Visitor(b).start(email="other@example.com")  # another chat on that process
    os_ = await other.socket()
    await os_.wait_type("welcome")
    await os_.send({"type": "message", "body": "still here", "client_msg_id": "o"})
    assert (await os_.wait_type("ack", client_msg_id="o"))["seq"] > 0  # stored and acked
    # Sockets of the cut-off process still hear one another: the visitor sees its own message.
    await vs.send({"type": "message", "body": "local", "client_msg_id": "local"})
    await vs.wait_type("ack", client_msg_id="local")
    await vs.wait_type("message", body="local", timeout=5)
    for n in range(5):  # the last words before the broadcast returns: no later message shows
        await ags.send({"type": "message", "conversation_id": conversation, "body": f"d{n}",
                        "client_msg_id": f"d{n}"})
        await ags.wait_type("ack", client_msg_id=f"d{n}")
    redis_outage.restore()

    async def healthy() -> bool:
        return (await _health(b)).status_code == 200

    await _until(healthy, "the relayed process's /healthz to answer ok again")
    await vs.wait_type("broadcast_restored", timeout=10)  # clients clear their notice on it
    for n in range(5):  # caught up from storage
        await vs.wait_type("message", body=f"d{n}", timeout=10)
    # What the cut-off process could not publish is announced once it is back: the agent's
    # queue on the other process shows the other chat's words.
    await ags.wait_for(lambda f: f.get("type") == "queue" and "still here" in str(f), timeout=10)
    await asyncio.sleep(0.5)
    assert _message_seqs(vs) == sorted(set(_message_seqs(vs)))
    assert "Traceback" not in b.log()
    for s in (vs, ags, os_):
        await s.close()
    for c in (visitor, other, agent):
        await c.aclose()


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:1/0", "cannot reach Redis at redis://127.0.0.1:1/0"),
    ("postgresql://postgres@127.0.0.1:1/postgres", "cannot reach PostgreSQL at "
     "postgresql://127.0.0.1:1/postgres"),
    ("kafka://127.0.0.1", "Unsupported broadcast URL scheme"),
])
def test_serve_stops_at_an_unreachable_broadcast(tmp_path: Path, url: str, expected: str
                                                 ) -> None:
    """A broadcast that does not answer at start: one line naming the setting, exit 2."""
    env = Server(tmp_path / "data", env={"CHATSERVER_BROADCAST_URL": url}).environ()
    done = subprocess.run(
        [sys.executable, "-m", "chatserver", "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("CHATSERVER_BROADCAST_URL") and expected in lines[0], lines[0]


async def test_per_ip_limits_hold_across_processes(
    make_server: Callable[..., Server], database: str,
) -> None:
    """A client spread over two processes gets each per-IP limit once, not once per process:
    new conversations per hour, and messages per window from all its sockets."""
    env = _env(database, _broadcast_url("redis", database))
    del env["CHATSERVER_LIMITS_EXEMPT"]
    env.update(CHATSERVER_NEW_CONVERSATIONS_PER_IP_HOUR="2", CHATSERVER_IP_RATE_MESSAGES="6",
               CHATSERVER_RATE_MESSAGES="100", CHATSERVER_RATE_WINDOW_SECONDS="60")
    a, b = _pair(make_server, env)
    first, second, third = [await Visitor(s).start(email=f"l{n}@example.com")
                            for n, s in enumerate((a, b, a))]
    fs, ss = await first.socket(), await second.socket()
    for s in (fs, ss):
        await s.wait_type("welcome")
    refused = await third.socket()  # the third new conversation from this address this hour
    assert await refused.closed_code() == 4429
    assert refused.frames[-1]["code"] == "rate_limited"

    for n in range(4):  # four messages through process A
        await fs.send({"type": "message", "body": f"a{n}", "client_msg_id": f"a{n}"})
        await fs.wait_type("ack", client_msg_id=f"a{n}")
    acked = 0
    for n in range(4):  # process B alone would allow six
        await ss.send({"type": "message", "body": f"b{n}", "client_msg_id": f"b{n}"})
        got = await ss.wait_for(lambda f: f.get("type") in {"ack", "error"}, timeout=5)
        if got["type"] == "error":
            assert got["code"] == "rate_limited"
            break
        acked += 1
    assert acked < 4
    assert await ss.closed_code() == 4429
    await fs.close()
    for v in (first, second, third):
        await v.aclose()


@pytest.mark.parametrize("kind", BACKENDS)
async def test_socket_counts_per_ip_hold_across_processes(
    make_server: Callable[..., Server], database: str, kind: str,
) -> None:
    """CHATSERVER_MAX_SOCKETS_PER_IP counts the address's open sockets in every process: the
    third of two allowed is refused (4429 too_many_sockets), and a closed one frees its place
    at once."""
    env = _env(database, _broadcast_url(kind, database))
    del env["CHATSERVER_LIMITS_EXEMPT"]
    env.update(CHATSERVER_MAX_SOCKETS_PER_IP="2")
    a, b = _pair(make_server, env)
    first, second, third = [await Visitor(s).start(email=f"s{n}@example.com")
                            for n, s in enumerate((a, b, a))]
    fs, ss = await first.socket(), await second.socket()
    for s in (fs, ss):
        await s.wait_type("welcome")
    refused = await third.socket()
    assert await refused.closed_code() == 4429
    assert refused.frames[-1]["code"] == "too_many_sockets"
    await ss.close()  # on the other process
    deadline = time.monotonic() + 5
    while True:  # its lease is given up as the server sees the close
        admitted = await third.socket()
        frame = await admitted.wait_for(lambda f: f.get("type") in {"welcome", "error"})
        if frame["type"] == "welcome":
            break
        assert time.monotonic() < deadline, "the closed socket still counts"
        await admitted.closed_code()
        await asyncio.sleep(0.1)
    await fs.close()
    await admitted.close()
    for v in (first, second, third):
        await v.aclose()
