"""A flood from one address does not cost ordinary conversations a single message.

The timing side (p99 delivery under the flood) is measured by bench/flood.py, not here."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import httpx
from websockets.asyncio.client import ClientConnection, connect

from .support import Agent, Server, Socket, Visitor, cookie_header

FLOOD_IP = "198.51.100.66"
FLOOD_SOCKETS = 200
ORDINARY = 20
MESSAGES = 15


async def _visitor_socket(server: Server, visitor: Visitor, ip: str) -> ClientConnection:
    return await connect(server.ws_url + "/ws/visitor",
                         additional_headers={"Cookie": cookie_header(visitor.http),
                                             "X-Forwarded-For": ip})


async def _flood_socket(server: Server, transport: httpx.AsyncHTTPTransport
                        ) -> ClientConnection | None:
    """One flooding visitor's socket, or None when a cap refused it (the defence working)."""
    async with httpx.AsyncClient(base_url=server.url, transport=transport,
                                 headers={"X-Forwarded-For": FLOOD_IP}) as client:
        await client.post("/api/consent", json={"policy_version": "1.01"})
        await client.post("/api/visitor", json={"name": "Flood", "email": "flood@example.com",
                                                "company": ""})
        cookies = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)
    try:
        ws = await connect(server.ws_url + "/ws/visitor",
                           additional_headers={"Cookie": cookies, "X-Forwarded-For": FLOOD_IP})
    except Exception:
        return None
    return ws


async def _flood(ws: ClientConnection, stop: asyncio.Event, sent: list[int]) -> None:
    n = 0
    with contextlib.suppress(Exception):
        while not stop.is_set():
            await ws.send(json.dumps({"type": "message", "body": "flood " * 50,
                                      "client_msg_id": f"f{n}"}))
            await ws.send("{garbage")
            n += 1
            if n % 20 == 0:
                await asyncio.sleep(0)
    sent.append(n)
    with contextlib.suppress(Exception):
        await ws.close()
    # A close the busy server did not answer in time leaves the socket open: let it go at once
    # (ResourceWarning: unclosed socket, seen under load).
    ws.transport.abort()


async def test_ordinary_conversations_lose_nothing_under_a_flood(
    make_server: Callable[..., Server],
) -> None:
    """200 flooding sockets from one IP; 20 ordinary conversations deliver every message."""
    server = make_server(CHATSERVER_STAFF_RATE_MESSAGES="10000")  # one agent answers all 20
    server.add_staff("calm", "agent")
    agent = await Agent(server, "calm").login()
    ags = await agent.socket()
    await ags.wait_type("queue")
    ordinary: list[tuple[Visitor, Socket, str]] = []
    for n in range(ORDINARY):
        v = Visitor(server)
        v.http.headers["X-Forwarded-For"] = f"203.0.113.{n + 1}"
        await v.start(name=f"Ordinary {n}", email=f"ordinary{n}@example.com")
        s = Socket(await _visitor_socket(server, v, f"203.0.113.{n + 1}"))
        conversation_id = (await s.wait_type("welcome"))["conversation_id"]
        await ags.send({"type": "claim", "conversation_id": conversation_id})
        await ags.wait_type("status", conversation_id=conversation_id)
        ordinary.append((v, s, conversation_id))

    # One transport for all flooders: a client each, but not 200 TLS contexts to build.
    transport = httpx.AsyncHTTPTransport()
    opened = [await _flood_socket(server, transport) for _ in range(FLOOD_SOCKETS)]
    await transport.aclose()
    flooders = [ws for ws in opened if ws is not None]
    assert flooders  # some got through the caps, and will flood
    stop = asyncio.Event()
    sent: list[int] = []
    flood = [asyncio.create_task(_flood(ws, stop, sent)) for ws in flooders]

    async def talk(v: Visitor, s: Socket, conversation_id: str) -> None:
        for m in range(MESSAGES):
            await s.send({"type": "message", "body": f"{conversation_id} {m}",
                          "client_msg_id": f"o{m}"})
            await s.wait_type("ack", client_msg_id=f"o{m}", timeout=20)
            await ags.send({"type": "message", "conversation_id": conversation_id,
                            "body": f"reply {m}", "client_msg_id": f"{conversation_id}-{m}"})
            await s.wait_type("message", body=f"reply {m}", timeout=20)

    await asyncio.gather(*(talk(*o) for o in ordinary))
    stop.set()
    await asyncio.gather(*flood)
    for _, _, conversation_id in ordinary:
        for m in range(MESSAGES):
            await ags.wait_type("message", conversation_id=conversation_id,
                                body=f"{conversation_id} {m}", timeout=20)
    assert sum(sent) > 0  # the flood did happen
    for v, s, _ in ordinary:
        await s.close()
        await v.aclose()
    await ags.close()
    await agent.aclose()
