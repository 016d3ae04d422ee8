"""The widget follows `presence` frames: its banner says whether an agent is online, live."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Browser, expect

from ..support import Agent, Server

NOBODY = "No agent is online right now"
WAITING = "Waiting for an agent"


async def test_widget_banner_follows_agents_coming_and_going(
    make_server: Callable[..., Server], browser: Browser, tmp_path: Path
) -> None:
    """Queued with no agent online the banner says so; when an agent's dashboard connects it
    says an agent is coming, and when it disconnects it says no one is online again, without a
    reload."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("agent", "agent")
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(server.url + "/")
    await page.get_by_role("button", name="Open chat").click()
    widget = page.frame_locator("iframe")
    await widget.locator("#accept").check()
    await widget.locator("#start").click()
    await widget.locator("#f-name").fill("Grace Hopper")
    await widget.locator("#f-email").fill("grace@example.com")
    await widget.locator("#form-submit").click()
    banner = widget.locator("#banner")
    await expect(banner).to_contain_text(NOBODY)

    agent = await Agent(server, "agent").login()
    socket = await agent.socket()
    await socket.wait_type("queue")
    await expect(banner).to_contain_text(WAITING)
    await page.screenshot(path=str(tmp_path / "presence-online.png"))
    await socket.close()
    await expect(banner).to_contain_text(NOBODY)
    await page.screenshot(path=str(tmp_path / "presence-offline.png"))
    await agent.aclose()
    await context.close()
