"""Memory of a streamed bulk export: how much the server's RSS grows while it sends N messages.

    python bench/export.py --messages 100000

Seeds a fresh data folder through the store itself (fast, the same code the server writes with),
starts `chatserver serve` on it, signs in an admin, downloads GET /api/admin/export as JSONL and
CSV while sampling the server's VmRSS every 20 ms, and prints the growth over the idle baseline.
Only 127.0.0.1 is contacted; the run is bounded by the message count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server import PASSWORD, chatserver  # noqa: E402  (bench/server.py, beside this file)

from chatserver.consent import bundled_policy  # noqa: E402
from chatserver.storage import open_store  # noqa: E402


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def seed(data: Path, messages: int, per_conversation: int) -> None:
    store = await open_store(f"sqlite://{data / 'chat.db'}")
    await store.publish_policy(bundled_policy())
    made = 0
    n = 0
    while made < messages:
        session = f"bench-{n}"
        await store.create_visitor_session(session)
        customer = await store.save_customer(session, name=f"Customer {n}",
                                             email=f"c{n}@example.com", company="Bench")
        conversation, _ = await store.open_conversation(customer.id)
        count = min(per_conversation, messages - made)
        await asyncio.gather(*[
            store.append_message(conversation.id, sender="visitor", sender_id=customer.id,
                                 author=customer.name,
                                 body=f"message {i} of a benchmark export, some text " * 2,
                                 client_msg_id=f"m{i}")
            for i in range(count)
        ])
        made += count
        n += 1
    await store.close()


def measure(url: str, pid: int, cookies: httpx.Cookies, fmt: str) -> dict[str, float]:
    baseline = rss_kb(pid)
    peak = baseline
    lines = 0
    started = time.perf_counter()
    with httpx.Client(base_url=url, cookies=cookies, timeout=300) as client, client.stream(
        "GET", "/api/admin/export", params={"format": fmt}
    ) as response:
        response.raise_for_status()
        last = 0.0
        for chunk in response.iter_lines():
            lines += 1 if chunk else 0
            now = time.perf_counter()
            if now - last > 0.02:
                peak = max(peak, rss_kb(pid))
                last = now
    elapsed = time.perf_counter() - started
    peak = max(peak, rss_kb(pid))
    return {"format": fmt, "rows": lines, "seconds": round(elapsed, 2),
            "rss_before_mb": round(baseline / 1024, 1), "rss_peak_mb": round(peak / 1024, 1),
            "growth_mb": round((peak - baseline) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--per-conversation", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        t0 = time.perf_counter()
        asyncio.run(seed(data, args.messages, args.per_conversation))
        print(f"seeded {args.messages} messages in {time.perf_counter() - t0:.1f}s", flush=True)
        # Seeded through the store, the folder has no secret key, which only `serve` makes and
        # every other command (`user add` here) now requires: give one.
        with chatserver(data, staff="benchadmin", role="admin",
                        CHATSERVER_SECRET_KEY=secrets.token_urlsafe(48)) as server:
            login = httpx.post(server.url + "/api/staff/login",
                               json={"username": "benchadmin", "password": PASSWORD})
            login.raise_for_status()
            results = [measure(server.url, server.pid, login.cookies, fmt)
                       for fmt in ("jsonl", "csv")]
    for r in results:
        print(f"{r['format']}: {r['rows']} rows in {r['seconds']}s, RSS {r['rss_before_mb']} MB "
              f"-> peak {r['rss_peak_mb']} MB (+{r['growth_mb']} MB)")
    print(json.dumps({"messages": args.messages, "results": results}))


if __name__ == "__main__":
    main()
