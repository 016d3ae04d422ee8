"""Issue 10's "done when", as an operator would try it: the documented nginx in front of two
processes on PostgreSQL and a private Redis; a customer chats through the widget in Chromium with
an agent on the other process; the process serving the widget's socket is killed with SIGKILL and
the chat goes on after the widget reconnects through nginx; Redis is restarted and the chat goes
on; /metrics shows it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, FrameLocator, expect

from .. import databases
from ..proxy import Nginx
from ..redis_support import PrivateRedis
from ..support import Agent, Server
from ..test_metrics import _samples, _value
from ..test_nginx import DOCUMENTED
from ..test_processes import _env, _until
from .test_widget_across_pages import _fill_in


@pytest.fixture
def redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis().start()
    yield server
    server.kill()


async def _metrics(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The process's own /metrics, asked from loopback as Prometheus would."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.get("/metrics")
        assert response.status_code == 200
        return _samples(response.text)


async def _serving_the_widget(servers: list[Server]) -> Server:
    """The process holding the widget's one visitor socket, by its open_sockets gauge."""
    found: list[Server] = []

    async def one_has_it() -> bool:
        found.clear()
        for server in servers:
            samples = await _metrics(server)
            if _value(samples, "chatserver_open_sockets", kind="visitor") == 1:
                found.append(server)
        return len(found) == 1

    await _until(one_has_it, "the widget's socket on one process", 10)
    return found[0]


async def _say(widget: FrameLocator, text: str) -> None:
    composer = widget.locator("#text")
    await composer.fill(text)
    await composer.press("Enter")


async def _once(widget: FrameLocator, text: str) -> None:
    """On screen exactly once, and sent (no longer pending)."""
    bubble = widget.locator("#messages .msg", has_text=text)
    await expect(bubble).to_have_count(1, timeout=15000)
    await expect(bubble).not_to_have_class("pending", timeout=15000)


async def test_widget_chat_survives_a_killed_process_and_a_redis_restart(
    make_server: Callable[..., Server], browser: Browser, redis: PrivateRedis, tmp_path: Path,
) -> None:
    databases.require_postgres()
    env = {**_env(databases.create_database(), redis.url), **DOCUMENTED}
    servers = [make_server(**env) for _ in range(2)]
    servers[0].add_staff("agent", "agent")
    nginx = Nginx(tmp_path / "nginx", upstream_port=servers[0].port,
                  more_upstream_ports=[servers[1].port]).start()
    context = await browser.new_context(ignore_https_errors=True)  # the test's own certificate
    try:
        page = await context.new_page()
        await page.goto(f"https://localhost:{nginx.port}/")
        await page.get_by_role("button", name="Open chat").click()
        widget = page.frame_locator("iframe")
        await _fill_in(widget, "Fay Failover", "fay@example.com")
        await _say(widget, "Hello, is anyone there?")
        await _once(widget, "Hello, is anyone there?")

        first = await _serving_the_widget(servers)
        other = next(s for s in servers if s is not first)
        agent = await Agent(other, "agent").login()  # the agent on the other process
        ags = await agent.socket()
        queue = await ags.wait_for(lambda f: f.get("type") == "queue" and f["conversations"])
        conversation = queue["conversations"][0]["conversation_id"]
        await ags.send({"type": "claim", "conversation_id": conversation})
        await ags.wait_type("status", conversation_id=conversation, status="active")
        await ags.send({"type": "message", "conversation_id": conversation,
                        "body": "Yes, Gus here. How can I help?", "client_msg_id": "r1"})
        await _once(widget, "Gus here")
        stored_before = _value(await _metrics(first), "chatserver_messages_stored_total",
                               sender="visitor")
        assert stored_before >= 1

        await asyncio.to_thread(first.kill9)  # the widget's process, mid-conversation
        await ags.send({"type": "message", "conversation_id": conversation,
                        "body": "Said while your server was down.", "client_msg_id": "r2"})
        await ags.wait_type("ack", client_msg_id="r2")
        await _say(widget, "My printer is on fire.")  # kept until a socket takes it
        await _once(widget, "Said while your server was down.")
        await _once(widget, "My printer is on fire.")
        got = await ags.wait_type("message", conversation_id=conversation,
                                  body="My printer is on fire.", timeout=10)
        await ags.send({"type": "message", "conversation_id": conversation,
                        "body": "Unplug it, please.", "client_msg_id": "r3"})
        await _once(widget, "Unplug it, please.")
        assert _value(await _metrics(other), "chatserver_open_sockets", kind="visitor") == 1
        shot = tmp_path / "after-failover.png"
        await page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")

        # systemd starts the killed process again; then Redis restarts under both.
        await asyncio.to_thread(first.start)
        await asyncio.to_thread(redis.restart)

        async def healthy_and_reconnected() -> bool:
            for server in servers:
                async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
                    if (await http.get("/healthz")).status_code != 200:
                        return False
                samples = await _metrics(server)
                if _value(samples, "chatserver_broadcast_reconnects_total") < 1:
                    return False
            return True

        await _until(healthy_and_reconnected, "both processes back on Redis", 15)
        await _say(widget, "It stopped. Thanks!")
        await _once(widget, "It stopped. Thanks!")
        await ags.wait_type("message", conversation_id=conversation,
                            body="It stopped. Thanks!", timeout=15)
        await ags.send({"type": "message", "conversation_id": conversation,
                        "body": "Glad to help.", "client_msg_id": "r4"})
        await _once(widget, "Glad to help.")
        for text in ("Hello, is anyone there?", "Gus here", "Said while your server was down.",
                     "My printer is on fire.", "Unplug it, please."):
            await expect(widget.locator("#messages .msg", has_text=text)).to_have_count(1)
        assert got["seq"] > 0

        other_samples = await _metrics(other)
        assert _value(other_samples, "chatserver_messages_stored_total", sender="agent") == 4
        assert _value(other_samples, "chatserver_messages_stored_total", sender="visitor") >= 2
        shot = tmp_path / "after-redis-restart.png"
        await page.screenshot(path=str(shot))
        print(f"screenshot: {shot}")
        await ags.close()
        await agent.aclose()
    finally:
        await context.close()
        nginx.stop()
    assert "Traceback" not in other.log()
