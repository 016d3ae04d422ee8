"""The agent's dashboard says whether the customer still has the chat open."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Browser, expect

from ..support import Server
from .pages import claim_waiting, sign_in, start_widget_chat


async def test_the_dashboard_shows_the_customer_leave_and_come_back(
        make_server: Callable[..., Server], browser: Browser, tmp_path: Path) -> None:
    """Claimed: "Online now". The customer closes the tab: "Offline" (this server
    sends no mail, so nothing is promised about email), and "Offline" beside them in the list.
    The customer opens the site again and the chat with it: on the chat again."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("sam", "agent")
    customer_ctx = await browser.new_context()
    agent_ctx = await browser.new_context()
    try:
        customer = await customer_ctx.new_page()
        await start_widget_chat(customer, server, "Robin Reader", "robin@example.com",
                                "Is my parcel lost?")
        agent = await agent_ctx.new_page()
        await sign_in(agent, server, "sam", "/agent")
        await claim_waiting(agent, "Robin Reader")
        presence = agent.locator("#conv-presence")
        await expect(presence).to_have_text("Online now")

        await customer.close()
        await expect(presence).to_have_text("Offline")
        left_tag = agent.locator("#list-mine .left-tag")
        await expect(left_tag).to_have_text("Offline")  # beside the name in "My conversations"
        await agent.screenshot(path=str(tmp_path / "dashboard-left.png"))

        again = await customer_ctx.new_page()
        await again.goto(server.url + "/")
        await again.get_by_role("button", name="Open chat").click()
        await expect(again.frame_locator("iframe").locator("#messages")).to_contain_text(
            "Is my parcel lost?")
        await expect(presence).to_have_text("Online now")
        await expect(left_tag).to_have_count(0)
    finally:
        await customer_ctx.close()
        await agent_ctx.close()
