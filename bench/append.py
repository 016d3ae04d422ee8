"""The store's append path alone: messages appended per second, flat out, no sockets.

    python bench/append.py [--url sqlite:///tmp/x.db | postgresql://...] [--conversations 50]
                           [--messages 20000] [--in-flight 400]

Opens a fresh store (a temporary SQLite file unless --url names one), makes N conversations and
keeps --in-flight appends outstanding across them (each a visitor message with a client_msg_id,
as the sockets send), so the writer's group commit sees full batches. Prints wall time, this
process's CPU time per message (the figure to compare on a shared machine) and messages/s. Search
index upkeep that the store leaves to the background is flushed at the end and timed apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatserver.consent import bundled_policy  # noqa: E402
from chatserver.storage import open_store  # noqa: E402


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def run(url: str, conversations: int, messages: int, in_flight: int) -> None:
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
    counter = iter(range(messages))

    async def sender(k: int) -> None:
        for i in counter:
            conversation_id, customer_id = targets[(k + i) % conversations]
            await store.append_message(
                conversation_id, sender="visitor", sender_id=customer_id, author="Customer",
                body=f"message {i}: the printer on floor {k % 7} jams when it prints duplex",
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.url or f"sqlite://{Path(folder) / 'chat.db'}"
        asyncio.run(run(url, args.conversations, args.messages, args.in_flight))


if __name__ == "__main__":
    main()
