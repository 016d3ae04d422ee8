"""The store's append path alone: messages appended per second, flat out, no sockets.

    python bench/append.py [--url sqlite:///tmp/x.db | postgresql://...] [--conversations 50]
                           [--messages 20000] [--in-flight 400]
    python bench/append.py --rate 2000 [--seconds 10] [--conversations 100]

Opens a fresh store (a temporary SQLite file unless --url names one), makes N conversations and
keeps --in-flight appends outstanding across them (each a visitor message with a client_msg_id,
as the sockets send), so the writer's group commit sees full batches. Prints wall time, this
process's CPU time per message (the figure to compare on a shared machine) and messages/s. Search
index upkeep that the store leaves to the background is flushed at the end and timed apart.

With --rate, paced instead of flat out: each conversation appends on a fixed schedule (--rate
messages a second across all of them, one at a time per conversation, as a visitor's socket
does) for --seconds, with the search indexer and checkpoints running as in the server. Latency is
counted from each append's scheduled time (a late start counts against the store), and the WAL's
size is read at the end: the store's part of target 2 of issue 13 without sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# bench/load.py, beside this file: percentiles as target 2 counts them
from load import percentile  # noqa: E402

from chatserver.consent import bundled_policy  # noqa: E402
from chatserver.storage import open_store, sqlite_path  # noqa: E402


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def open_with_conversations(url: str, conversations: int) -> tuple[Any, list[Any]]:
    store = await open_store(url)
    await store.publish_policy(bundled_policy())
    targets = []
    for n in range(conversations):
        session = f"bench-{n}"
        await store.create_visitor_session(session)
        customer = await store.save_customer(session, name=f"Customer {n}",
                                             email=f"c{n}@example.com", company="Bench")
        conversation, _ = await store.open_conversation(customer.id)
        targets.append((conversation.id, customer.id))
    return store, targets


def body(i: int, k: int) -> str:
    return f"message {i}: the printer on floor {k % 7} jams when it prints duplex"


def wal_size_mb(url: str) -> float | None:
    """The SQLite store's WAL file size now (None on PostgreSQL or without a WAL)."""
    if not url.startswith("sqlite:"):
        return None
    database = sqlite_path(url)
    wal = database.with_name(database.name + "-wal")
    return wal.stat().st_size / 1e6 if wal.exists() else None


async def paced(url: str, conversations: int, rate: float, seconds: float) -> None:
    store, targets = await open_with_conversations(url, conversations)
    period = conversations / rate  # each conversation's interval
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1

    async def conversation(k: int) -> None:
        conversation_id, customer_id = targets[k]
        due = start + period * k / conversations  # spread evenly over one period
        i = 0
        while due < start + seconds:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await store.append_message(conversation_id, sender="visitor", sender_id=customer_id,
                                       author="Customer", body=body(i, k), client_msg_id=f"m{i}")
            latencies.append(loop.time() - due)
            i += 1
            due += period

    used = cpu()
    await asyncio.gather(*[conversation(k) for k in range(conversations)])
    used = cpu() - used
    wal_mb = wal_size_mb(url)
    await store.close()
    latencies.sort()
    p50, p90, p99, top = (percentile(latencies, q) for q in (50, 90, 99, 100))
    print(f"{len(latencies)} appends paced at {rate:g}/s over {conversations} conversations, "
          f"{seconds:g} s")
    print(f"  latency from the scheduled time: p50 {p50} ms, p90 {p90} ms, p99 {p99} ms, "
          f"max {top} ms")
    print(f"  cpu  {used * 1e6 / len(latencies):.1f} us/message (this process, all threads)")
    if wal_mb is not None:
        print(f"  WAL at the end: {wal_mb:.1f} MB")
    print(f"  load average {os.getloadavg()[0]:.2f}")


async def run(url: str, conversations: int, messages: int, in_flight: int) -> None:
    store, targets = await open_with_conversations(url, conversations)
    counter = iter(range(messages))

    async def sender(k: int) -> None:
        for i in counter:
            conversation_id, customer_id = targets[(k + i) % conversations]
            await store.append_message(
                conversation_id, sender="visitor", sender_id=customer_id, author="Customer",
                body=body(i, k),
                client_msg_id=f"m{i}")

    wall, used = time.perf_counter(), cpu()
    await asyncio.gather(*[sender(k) for k in range(in_flight)])
    wall, used = time.perf_counter() - wall, cpu() - used
    flush = getattr(store, "flush_search_index", None)
    index_wall, index_cpu = time.perf_counter(), cpu()
    if flush is not None:
        await flush()
    index_wall, index_cpu = time.perf_counter() - index_wall, cpu() - index_cpu
    await store.close()
    print(f"{messages} appends over {conversations} conversations, {in_flight} in flight")
    print(f"  wall {wall:.2f} s, {messages / wall:,.0f} msgs/s")
    print(f"  cpu  {used * 1e6 / messages:.1f} us/message (this process, all threads)")
    if flush is not None:
        print(f"  search index flush after: {index_wall:.2f} s wall, "
              f"{index_cpu * 1e6 / messages:.1f} us/message cpu")
    print(f"  load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=None)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--in-flight", type=int, default=400)
    parser.add_argument("--rate", type=float, default=None,
                        help="messages a second across all conversations, paced (see above)")
    parser.add_argument("--seconds", type=float, default=10.0, help="with --rate: how long")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.url or f"sqlite://{Path(folder) / 'chat.db'}"
        if args.rate:
            asyncio.run(paced(url, args.conversations, args.rate, args.seconds))
        else:
            asyncio.run(run(url, args.conversations, args.messages, args.in_flight))


if __name__ == "__main__":
    main()
