"""An agent who signs out mid-chat: the customer is told that nobody is online and that the
answer comes later, and the notice goes once an agent is back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Browser, expect

from ..support import Server
from .pages import claim_waiting, sign_in, start_widget_chat

NOBODY = "No agent is online. Leave a message; we'll answer here when one is back."


async def test_the_customer_hears_when_the_only_agent_signs_out_mid_chat(
        make_server: Callable[..., Server], browser: Browser, tmp_path: Path) -> None:
    """Sam claims and replies, then signs out: the widget shows the offline notice above the
    chat (this server sends no mail, so it promises an answer here). Sam signs in again: the
    notice goes, and the chat is as it was."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("sam", "agent")
    customer_ctx = await browser.new_context()
    agent_ctx = await browser.new_context()
    try:
        customer = await customer_ctx.new_page()
        widget = await start_widget_chat(customer, server, "Robin Reader", "robin@example.com",
                                         "Where is my parcel?")
        agent = await agent_ctx.new_page()
        await sign_in(agent, server, "sam", "/agent")
        await claim_waiting(agent, "Robin Reader")
        await agent.locator("#composer-input").fill("Looking into it.")
        await agent.locator("#composer-input").press("Enter")
        await expect(widget.locator("#messages .msg-agent")).to_have_count(1)
        banner = widget.locator("#banner")
        await expect(banner).to_be_hidden()

        await agent.get_by_role("button", name="Sign out").click()
        await expect(banner).to_have_text(NOBODY)
        await expect(banner).to_be_visible()
        await customer.screenshot(path=str(tmp_path / "agent-gone.png"))

        await sign_in(agent, server, "sam", "/agent")
        await expect(banner).to_be_hidden()
        await expect(widget.locator("#messages .msg-agent")).to_have_count(1)
    finally:
        await customer_ctx.close()
        await agent_ctx.close()
