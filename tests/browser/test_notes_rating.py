"""Staff notes and the satisfaction rating in the real widget and dashboard (issue 12)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page, expect

from ..support import Server
from .axe import blocking_violations
from .pages import sign_in, start_widget_chat

NOTE = '<img src=x onerror="window.__pwned=1">VIP customer, be gentle'
COMMENT = "<script>window.__pwned=1</script>Quick and kind"


async def _pwned(page: Page) -> bool:
    return bool(await page.evaluate("() => Boolean(window.__pwned)"))


async def test_note_stays_with_staff_and_the_customer_rates_after_close(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    """An agent's note shows in the dashboard, marked, and never in the widget; after the close
    the widget asks for a rating, sends 4 stars once and the dashboard shows it; payloads in
    notes and comments stay text."""
    customer_ctx = await browser.new_context()
    customer = await customer_ctx.new_page()
    widget = await start_widget_chat(customer, server, "Rita Rater", "rita@example.com",
                                     "My invoice is wrong")
    await expect(widget.locator("#messages")).to_contain_text("My invoice is wrong")

    agent_ctx = await browser.new_context(viewport={"width": 1200, "height": 800})
    agent = await agent_ctx.new_page()
    await sign_in(agent, server, "agent", "/agent")
    await agent.locator("#list-queue").get_by_text("Rita Rater").first.click()
    await agent.get_by_role("button", name="Claim").click()
    await expect(agent.locator("#conv-name")).to_have_text("Rita Rater")

    await agent.locator("#composer-input").fill(NOTE)
    await agent.get_by_role("button", name="Add note").click()
    note = agent.locator("#conv-scroller .msg-note")
    await expect(note).to_contain_text("VIP customer, be gentle")
    await expect(note).to_contain_text("only staff see this")
    await expect(agent.locator("#composer-input")).to_have_value("")
    await agent.locator("#composer-input").fill("Let me check that invoice.")
    await agent.locator("#composer-input").press("Enter")
    await expect(widget.locator("#messages")).to_contain_text("Let me check that invoice.")
    await expect(widget.locator("#messages")).not_to_contain_text("VIP customer")
    await agent.screenshot(path=str(tmp_path / "agent-note.png"))

    agent.on("dialog", lambda d: d.accept())
    await agent.locator("#conv-close").click()
    rate = widget.locator("#rate")
    await expect(rate).to_be_visible()
    await expect(rate).to_contain_text("How was this conversation?")
    await widget.locator("#rate-send").click()  # nothing chosen: a clear word, nothing sent
    await expect(widget.locator("#rate-msg")).to_have_text("Please choose from 1 to 5 stars.")
    await widget.locator("label[for=rate-4]").click()
    await widget.locator("#rate-comment").fill(COMMENT)
    await customer.screenshot(path=str(tmp_path / "widget-rating-chosen.png"))
    frame = next(f for f in customer.frames if f.url.endswith("/widget") or "/widget?" in f.url)
    assert await blocking_violations(frame, "widget rating question") == []
    await widget.locator("#rate-send").click()
    await expect(widget.locator("#rate-msg")).to_have_text("Thank you for your rating (4 of 5).")
    await expect(widget.locator("#rate-send")).to_be_hidden()
    await customer.screenshot(path=str(tmp_path / "widget-rated.png"))

    rating = agent.locator("#conv-scroller .msg-rating")
    await expect(rating).to_contain_text("rated this conversation 4 of 5")
    await expect(rating).to_contain_text("Quick and kind")
    await agent.screenshot(path=str(tmp_path / "agent-rating.png"))

    assert await agent.locator("#conv-scroller img, #conv-scroller script").count() == 0
    assert not await _pwned(agent) and not await _pwned(customer)
    rows = server.query("SELECT score, comment FROM conversation_ratings r JOIN conversations c "
                        "ON c.id = r.conversation_id JOIN customers cu ON cu.id = c.customer_id "
                        "WHERE cu.email = ?", "rita@example.com")
    assert rows == [(4, COMMENT)]
    await customer_ctx.close()
    await agent_ctx.close()
