"""Canned responses in Chromium: an admin adds one in the console's tab, an agent inserts it
by typing "/" and the shortcut, placeholders filled, script payloads inert (issue 12)."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.async_api import Browser, expect

from ..support import Server
from .pages import sign_in, start_widget_chat

BODY = ('<img src=x onerror="window.__pwned=1">Hi {customer_first_name}, '
        "{agent_name} here. <script>window.__pwned=1</script>")


async def test_admin_adds_a_canned_response_and_the_agent_inserts_it_with_a_slash(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    """The console's Canned responses tab adds one (a bad placeholder is refused first); the
    agent's "/gre" offers it, Enter inserts it with the customer's first name and the agent's
    display name, and it reaches the customer as plain text."""
    admin_ctx = await browser.new_context(viewport={"width": 1200, "height": 800})
    admin = await admin_ctx.new_page()
    await sign_in(admin, server, "admin", "/admin")
    await admin.get_by_role("link", name="Canned responses").click()
    await admin.locator("#cf-shortcut").fill("greet")
    await admin.locator("#cf-body").fill("Hello {first_name}")
    await admin.locator("#cf-submit").click()
    await expect(admin.locator("#cfe-body")).to_contain_text("Unknown placeholder {first_name}")
    await admin.locator("#cf-body").fill(BODY)
    await admin.locator("#cf-submit").click()
    await expect(admin.locator("#cf-msg")).to_have_text("Added /greet.")
    await expect(admin.locator("#canned-rows")).to_contain_text("/greet")
    await expect(admin.locator("#canned-rows")).to_contain_text("{customer_first_name}")
    await admin.screenshot(path=str(tmp_path / "admin-canned.png"))

    customer_ctx = await browser.new_context()
    customer = await customer_ctx.new_page()
    # A surname of its own: other tests on the shared server leave a "Grace Hopper" queued.
    name = f"Grace Canned{uuid.uuid4().hex[:6]}"
    widget = await start_widget_chat(customer, server, name, "grace@example.com",
                                     "Hello?")

    agent_ctx = await browser.new_context(viewport={"width": 1200, "height": 800})
    agent = await agent_ctx.new_page()
    await sign_in(agent, server, "agent", "/agent")
    await agent.locator("#list-queue").get_by_text(name).first.click()
    await agent.get_by_role("button", name="Claim").click()
    await expect(agent.locator("#conv-name")).to_have_text(name)

    box = agent.locator("#composer-input")
    await box.press_sequentially("/gre")
    menu = agent.locator("#canned-menu")
    await expect(menu).to_be_visible()
    await expect(menu.locator("[role=option]").first).to_contain_text("/greet")
    await agent.screenshot(path=str(tmp_path / "agent-canned-menu.png"))
    await box.press("Enter")  # inserts, does not send
    await expect(menu).to_be_hidden()
    expected = BODY.replace("{customer_first_name}", "Grace").replace(
        "{agent_name}", "Support agent")
    await expect(box).to_have_value(expected)
    await box.press("Enter")  # now it sends
    await expect(widget.locator("#messages")).to_contain_text("Hi Grace, Support agent here.")
    await expect(agent.locator("#conv-scroller")).to_contain_text("Hi Grace, Support agent here.")

    # An unknown shortcut offers nothing; Escape closes the menu and keeps the text.
    await box.fill("")
    await box.press_sequentially("/zz")
    await expect(menu).to_be_hidden()
    await box.fill("")

    for page in (admin, agent, customer):
        assert not await page.evaluate("() => Boolean(window.__pwned)")
    assert await agent.locator("#conv-scroller img").count() == 0
    assert await admin.locator("#canned-rows img").count() == 0
    for ctx in (admin_ctx, customer_ctx, agent_ctx):
        await ctx.close()
