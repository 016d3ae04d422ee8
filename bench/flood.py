"""Ordinary conversations' delivery latency while one address floods the server.

    python bench/flood.py --flooders 200 --conversations 20 --duration 15
    python bench/flood.py --pings --flooders 1 --conversations 20 --duration 15

Starts `chatserver serve` on a fresh data folder. 200 sockets from one address (198.51.100.66,
given through X-Forwarded-For, which the server trusts from 127.0.0.1) send messages and garbage
as fast as they can; meanwhile 20 ordinary conversations (each its own address, one agent
answering all of them) exchange a message per second per side. Reports, for the ordinary
conversations, the delivery latency (sent by one side -> received by the other) p50/p99/max and
any message lost, and what became of the flood. With --pings the flooding sockets send WebSocket
pings (never waiting for the pong) instead of messages and garbage. Talks to 127.0.0.1 only;
bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import PASSWORD, chatserver  # noqa: E402  (bench/server.py, beside this file)

FLOOD_IP = "198.51.100.66"


def cookie_header(client: httpx.AsyncClient) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)


async def visitor(url: str, ws_url: str, ip: str, n: int,
                  transport: httpx.AsyncHTTPTransport) -> ClientConnection | None:
    async with httpx.AsyncClient(base_url=url, transport=transport,
                                 headers={"X-Forwarded-For": ip}) as client:
        await client.post("/api/consent", json={"policy_version": "1.01"})
        await client.post("/api/visitor", json={"name": f"V{n}", "email": f"v{n}@example.com",
                                                "company": ""})
        cookies = cookie_header(client)
    try:
        return await connect(ws_url + "/ws/visitor",
                             additional_headers={"Cookie": cookies, "X-Forwarded-For": ip})
    except Exception:  # refused by a cap
        return None


async def flood(ws: ClientConnection, stop: asyncio.Event, stats: dict[str, Any],
                pings: bool) -> None:
    started = time.perf_counter()
    frames = 0
    with contextlib.suppress(Exception):
        while not stop.is_set():
            if pings:
                await ws.ping()  # the pong is never awaited: a flood
                frames += 1
            else:
                await ws.send(json.dumps({"type": "message", "body": "flood " * 50,
                                          "client_msg_id": f"f{frames}"}))
                await ws.send("{garbage")
                frames += 2
            if frames % 40 == 0:
                await asyncio.sleep(0)
    stats["flood_frames"] += frames
    stats["flood_seconds"] = max(stats["flood_seconds"], round(time.perf_counter() - started, 2))
    code = f"flood_sockets_closed_{ws.close_code}"  # 4429 rate limited, 1008 refused, ...
    stats[code] = stats.get(code, 0) + 1
    with contextlib.suppress(Exception):
        await ws.close()


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    ws_url = url.replace("http://", "ws://")
    transport = httpx.AsyncHTTPTransport()
    async with httpx.AsyncClient(base_url=url) as staff:
        login = await staff.post("/api/staff/login",
                                 json={"username": "benchagent", "password": PASSWORD})
        login.raise_for_status()
        agent = await connect(ws_url + "/ws/agent",
                              additional_headers={"Cookie": cookie_header(staff)},
                              max_size=2**24)
    sent_at: dict[str, float] = {}
    done_talking, all_in = asyncio.Event(), asyncio.Event()
    latencies: list[float] = []
    received: set[str] = set()
    conversations: dict[str, ClientConnection] = {}
    for n in range(args.conversations):
        ws = await visitor(url, ws_url, f"203.0.113.{n + 1}", n, transport)
        assert ws is not None
        welcome = json.loads(await ws.recv())
        conversations[welcome["conversation_id"]] = ws
        await agent.send(json.dumps({"type": "claim",
                                     "conversation_id": welcome["conversation_id"]}))

    def arrived(frame: dict[str, Any]) -> None:
        if frame.get("type") == "message" and frame.get("client_msg_id") in sent_at:
            key = frame["client_msg_id"]
            if key not in received:
                received.add(key)
                latencies.append(time.perf_counter() - sent_at[key])
                if done_talking.is_set() and len(received) == len(sent_at):
                    all_in.set()

    async def read(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                arrived(json.loads(raw))

    readers = [asyncio.create_task(read(ws)) for ws in [agent, *conversations.values()]]
    stats: dict[str, Any] = {"flood_frames": 0, "flood_seconds": 0.0}
    opened = [await visitor(url, ws_url, FLOOD_IP, 10_000 + i, transport)
              for i in range(args.flooders)]
    flooders = [ws for ws in opened if ws is not None]
    stop = asyncio.Event()
    flood_tasks = [asyncio.create_task(flood(ws, stop, stats, args.pings)) for ws in flooders]

    async def talk(conversation_id: str, ws: ClientConnection) -> None:
        n = 0
        deadline = time.perf_counter() + args.duration
        while time.perf_counter() < deadline:
            for side, sock, frame in (
                ("v", ws, {"type": "message", "body": "hello", "client_msg_id": ""}),
                ("a", agent, {"type": "message", "conversation_id": conversation_id,
                              "body": "hi", "client_msg_id": ""}),
            ):
                key = f"{conversation_id}-{side}{n}"
                frame["client_msg_id"] = key
                sent_at[key] = time.perf_counter()
                await sock.send(json.dumps(frame))
            n += 1
            await asyncio.sleep(1.0)

    await asyncio.gather(*(talk(c, ws) for c, ws in conversations.items()))
    done_talking.set()
    if len(received) == len(sent_at):
        all_in.set()
    stop.set()
    await asyncio.gather(*flood_tasks)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), 10)  # stragglers: up to ten seconds
    for task in readers:
        task.cancel()
    for ws in [agent, *conversations.values()]:
        with contextlib.suppress(Exception):
            await ws.close()
    await transport.aclose()
    ordered = sorted(latencies)
    return {
        "ordinary_conversations": args.conversations,
        "ordinary_messages": len(sent_at),
        "ordinary_lost": len(sent_at) - len(received),
        "delivery_ms_p50": round(statistics.median(ordered) * 1000, 1),
        "delivery_ms_p99": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 1),
        "delivery_ms_max": round(ordered[-1] * 1000, 1),
        "flood_sockets_tried": args.flooders,
        "flood_handshakes_completed": len(flooders),  # refusals complete, then close 4429
        **stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flooders", type=int, default=200)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--pings", action="store_true",
                        help="flood with WebSocket pings instead of messages and garbage")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, chatserver(
        Path(tmp) / "data", staff="benchagent", role="agent",
        CHATSERVER_STAFF_RATE_MESSAGES="100000",
        CHATSERVER_TRUSTED_PROXIES="127.0.0.1",  # so that X-Forwarded-For gives each its address
    ) as server:
        result = asyncio.run(run(args, server.url))
    for key, value in result.items():
        print(f"{key}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
