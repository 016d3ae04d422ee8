"""The widget's "Live updates are interrupted" notice, in Chromium: shown for as long as the
server's Redis connection is away, gone as soon as the server says it is back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
from playwright.async_api import Browser, expect

from .. import databases
from ..redis_support import REDIS_URL, fresh_redis_url, require_redis
from ..support import Server
from ..test_database_faults import Outage
from ..test_processes import _env, _until
from .test_widget_across_pages import _say, _start_chat


async def test_live_updates_notice_lasts_as_long_as_the_outage(
    make_server: Callable[..., Server], browser: Browser,
) -> None:
    """Redis cut off from the widget's server: the notice shows, and is still there after more
    than the five seconds an error notice lasts; once the server listens again it goes (the
    server's `broadcast_restored`), and the chat goes on."""
    databases.require_postgres()
    require_redis()
    relay = Outage(REDIS_URL)
    try:
        url = urlsplit(fresh_redis_url())._replace(netloc=f"127.0.0.1:{relay.port}").geturl()
        server = make_server(**_env(databases.create_database(), url))
        context = await browser.new_context()
        try:
            page = await context.new_page()
            widget = await _start_chat(page, server, "Nia Notice", "nia@example.com")
            await _say(widget, "Before the outage")
            notice = widget.locator("#toast")
            relay.cut()
            await expect(notice).to_contain_text("Live updates are interrupted", timeout=15000)
            await asyncio.sleep(6)  # past the 5 s an error notice shows for: this one stays
            await expect(notice).to_be_visible(timeout=1)
            await expect(notice).to_contain_text("Live updates are interrupted", timeout=1)
            relay.restore()

            async def healthy() -> bool:
                async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
                    return (await http.get("/healthz")).status_code == 200

            await _until(healthy, "the server's /healthz to answer ok again")
            await expect(notice).to_be_hidden(timeout=5000)
            await _say(widget, "After the outage")
        finally:
            await context.close()
    finally:
        relay.close()
