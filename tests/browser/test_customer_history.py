"""Customer history in Chromium: the agent opens a returning customer's earlier conversation,
read-only, from the dashboard (issue 12)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from ..support import Server
from .pages import sign_in, start_widget_chat


async def test_agent_reads_a_returning_customers_earlier_conversation(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    """After a first chat is closed and a second claimed, "Earlier conversations" lists the
    first and opens its messages; the opening is in the audit log."""
    customer_ctx = await browser.new_context()
    customer = await customer_ctx.new_page()
    widget = await start_widget_chat(customer, server, "Hedy Lamarr", "hedy@example.com",
                                     "First time: <b>frequency</b> hopping")

    agent_ctx = await browser.new_context(viewport={"width": 1200, "height": 800})
    agent = await agent_ctx.new_page()
    agent.on("dialog", lambda d: d.accept())
    await sign_in(agent, server, "agent", "/agent")
    await agent.locator("#list-queue").get_by_text("Hedy Lamarr").first.click()
    await agent.get_by_role("button", name="Claim").click()
    await expect(agent.locator("#conv-scroller")).to_contain_text("frequency")
    await agent.locator("#conv-close").click()
    await expect(widget.locator("#ended")).to_be_visible()

    await widget.locator("#new-chat").click()
    await widget.locator("#text").fill("Back again")
    await widget.locator("#text").press("Enter")
    await agent.locator("#list-queue").get_by_text("Hedy Lamarr").first.click()
    await agent.get_by_role("button", name="Claim").click()
    await expect(agent.locator("#conv-scroller")).to_contain_text("Back again")

    await agent.get_by_role("button", name="Earlier conversations").click()
    dialog = agent.locator("#history-dialog")
    await expect(dialog).to_be_visible()
    items = dialog.locator(".history-item")
    await expect(items).to_have_count(1)
    await expect(items.first).to_contain_text("closed")
    await items.first.click()
    await expect(dialog.locator("#history-messages")).to_contain_text(
        "First time: <b>frequency</b> hopping")
    assert await dialog.locator("#history-messages b").count() == 0
    await agent.screenshot(path=str(tmp_path / "agent-history.png"))
    await dialog.get_by_role("button", name="Close", exact=True).click()
    await expect(dialog).to_be_hidden()

    rows = server.query("SELECT COUNT(*) FROM audit_log WHERE action = 'transcript.view' "
                        "AND detail LIKE '%history%'")
    assert rows[0][0] >= 1
    await customer_ctx.close()
    await agent_ctx.close()
