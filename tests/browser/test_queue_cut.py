"""More customers waiting than the queue frame lists: the dashboard says how many more."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Browser, expect

from ..support import Server, Socket, Visitor
from .pages import sign_in

WAITING = 205  # the queue frame lists 200 (chatserver/queue_page.py)


async def test_a_cut_queue_counts_everyone_and_says_how_many_more_wait(
    make_server: Callable[..., Server], browser: Browser, tmp_path: Path
) -> None:
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("ann", "agent")
    visitors: list[Visitor] = []
    sockets: list[Socket] = []

    async def arrive(n: int) -> None:
        v = await Visitor(server).start(name=f"Customer {n:03d}", email=f"c{n}@example.com")
        visitors.append(v)
        s = await v.socket()
        sockets.append(s)
        await s.wait_type("welcome")
        await s.send({"type": "message", "body": f"hello {n}", "client_msg_id": "m1"})
        await s.wait_type("ack")

    for start in range(0, WAITING, 41):
        await asyncio.gather(*(arrive(n) for n in range(start, min(start + 41, WAITING))))
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await sign_in(page, server, "ann", "/agent")
    await expect(page.locator("#list-queue li")).to_have_count(200, timeout=15000)
    await expect(page).to_have_title(f"{WAITING} waiting · Agent dashboard")
    more = page.locator("#more-queue")
    await expect(more).to_have_text(f"{WAITING - 200} more waiting; the 200 who have waited "
                                    "longest are listed.")
    await more.scroll_into_view_if_needed()
    await page.screenshot(path=str(tmp_path / "queue-cut.png"))
    for s in sockets:
        await s.close()
    for v in visitors:
        await v.aclose()
