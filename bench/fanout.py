"""CPU per relayed message through a shared broadcast, in one process, without a server.

Two broadcast connections (`a`, `b`) to the same backend, in this process; `a` has a listener on
each of 50 conversation channels. Phase "own": `a` publishes N message frames from 50 coroutines
at once (its own sockets hear them; the backend echoes them back). Phase "other": `b` publishes
them (another process's frames arriving at `a`). The figure is this process's CPU time
(`time.process_time`) per message until every frame was heard, both connections included, so a
backend that makes `b` hear frames it has no listener for shows it.

    python bench/fanout.py [--messages 5000] [--url redis://127.0.0.1:6379/9] [--repeat 3]

A `?prefix=` (Redis) or `?channel=` (PostgreSQL) of the run's own is added to the URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from typing import Any

from chatserver import broadcast

FRAME = {"type": "message", "conversation_id": "cv_0123456789abcdef0123", "seq": 1,
         "sender": "visitor", "author": "Visitor 1", "body": "x" * 120,
         "sent_at": "2026-12-01T03:00:00.000000Z", "client_msg_id": "m1"}
CONVERSATIONS = 50


def own_url(url: str) -> str:
    key = "prefix" if url.startswith("redis") else "channel"
    value = f"fanout{secrets.token_hex(4)}" + (":" if key == "prefix" else "")
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


async def settle(b: Any) -> None:
    if hasattr(b, "settled"):
        await b.settled()
    else:  # an older Broadcast without settled(): its subscriptions were in force at once
        await asyncio.sleep(0.2)


async def phase(publisher: Any, payloads: list[str], heard: dict[str, Any]) -> float:
    heard["count"], heard["target"] = 0, len(payloads)
    heard["done"] = asyncio.Event()
    started = time.process_time()

    async def worker(k: int) -> None:
        for i in range(k, len(payloads), CONVERSATIONS):
            await publisher.publish(f"conv:{i % CONVERSATIONS}", payloads[i])

    await asyncio.wait_for(asyncio.gather(*(worker(k) for k in range(CONVERSATIONS))), 120)
    try:
        await asyncio.wait_for(heard["done"].wait(), 120)
    except TimeoutError:
        raise SystemExit(f"stalled: heard {heard['count']} of {heard['target']}") from None
    await asyncio.sleep(0.3)  # echoes still on their way are read (and skipped) too
    return (time.process_time() - started) / len(payloads) * 1e6


async def run(url: str, messages: int) -> dict[str, float]:
    url = own_url(url)
    a, b = broadcast.create(url), broadcast.create(url)
    await a.connect()
    await b.connect()
    heard: dict[str, Any] = {}

    def listen(_payload: str) -> None:
        heard["count"] += 1
        if heard["count"] == heard["target"]:
            heard["done"].set()

    for i in range(CONVERSATIONS):
        a.subscribe(f"conv:{i}", listen)
    await asyncio.wait_for(settle(a), 30)
    payloads = [json.dumps({**FRAME, "seq": i}) for i in range(messages)]
    try:
        return {"own": await phase(a, payloads, heard), "other": await phase(b, payloads, heard)}
    finally:
        await asyncio.wait_for(a.disconnect(), 30)
        await asyncio.wait_for(b.disconnect(), 30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--url", default="redis://127.0.0.1:6379/9", help="a shared broadcast URL")
    p.add_argument("--repeat", type=int, default=3, help="runs; the median is printed last")
    args = p.parse_args()
    runs = [asyncio.run(run(args.url, args.messages)) for _ in range(args.repeat)]
    for r in runs:
        print(f"own {r['own']:.0f} us/msg, other {r['other']:.0f} us/msg")
    print(json.dumps({"bench": "fanout", "url": args.url.split("?")[0], "messages": args.messages,
                      "own_us": round(statistics.median(r["own"] for r in runs)),
                      "other_us": round(statistics.median(r["other"] for r in runs))}))


if __name__ == "__main__":
    main()
