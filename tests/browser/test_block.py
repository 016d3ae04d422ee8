"""Blocking abuse in Chromium: the agent blocks the visitor from the dashboard with a reason,
and the widget shows a plain notice (issue 12)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from ..support import Server
from .pages import sign_in, start_widget_chat


async def test_agent_blocks_from_dashboard_and_widget_shows_a_neutral_notice(
    make_server, browser: Browser, tmp_path: Path
) -> None:
    """An empty reason is refused in the dialog; with one, the conversation closes and the
    widget says only that the chat is not available; reloading keeps it refused."""
    server: Server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("ann", "agent")
    customer_ctx = await browser.new_context()
    customer = await customer_ctx.new_page()
    widget = await start_widget_chat(customer, server, "Troll", "troll@example.com",
                                     "you are all useless")

    agent_ctx = await browser.new_context(viewport={"width": 1200, "height": 800})
    agent = await agent_ctx.new_page()
    await sign_in(agent, server, "ann", "/agent")
    await agent.locator("#list-queue").get_by_text("Troll").first.click()
    await agent.get_by_role("button", name="Claim").click()
    await expect(agent.locator("#conv-scroller")).to_contain_text("useless")

    await agent.get_by_role("button", name="Block visitor").click()
    dialog = agent.locator("#block-dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Block", exact=True).click()
    await expect(agent.locator("#block-error")).to_have_text("Give a reason for the block.")
    await agent.locator("#block-reason").fill("Insults <b>staff</b>")
    await agent.locator("#block-ip").check()
    await agent.screenshot(path=str(tmp_path / "agent-block.png"))
    await dialog.get_by_role("button", name="Block", exact=True).click()
    await expect(dialog).to_be_hidden()
    await expect(agent.locator("#conv-status")).to_have_text("Closed")

    await expect(widget.locator("#done-title")).to_have_text("Chat is not available")
    await customer.screenshot(path=str(tmp_path / "widget-blocked.png"))
    await customer.reload()
    await customer.get_by_role("button", name="Open chat").click()
    await expect(customer.frame_locator("iframe").locator("#done-title")).to_have_text(
        "Chat is not available")
    assert server.query("SELECT reason FROM blocks") == [("Insults <b>staff</b>",)]
    await customer_ctx.close()
    await agent_ctx.close()
