"""A customer and an agent chat through the real widget and dashboard in headless Chromium."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Dialog, Page, expect

from ..support import Server
from .pages import sign_in

XSS_NAME = '<img src=x onerror="alert(1)">Mallory'
XSS_BODY = "<script>alert('body')</script><img src=x onerror=alert(2)> is my printer on fire?"


def _watch_dialogs(page: Page, seen: list[str], confirms: list[str]) -> None:
    """Record every dialog; accept only the confirmations the test expects."""

    async def on_dialog(dialog: Dialog) -> None:
        if dialog.type == "confirm" and confirms:
            confirms.pop()
            await dialog.accept()
            return
        seen.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    page.on("dialog", on_dialog)


async def test_customer_and_agent_chat_through_widget_and_dashboard(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    """Consent, pre-chat form, claim, both directions, close; script payloads stay inert text."""
    dialogs: list[str] = []
    confirms: list[str] = []
    customer_ctx = await browser.new_context()
    customer = await customer_ctx.new_page()
    _watch_dialogs(customer, dialogs, confirms)
    await customer.goto(server.url + "/")
    assert await customer_ctx.cookies() == []  # nothing before consent

    await customer.get_by_role("button", name="Open chat").click()
    widget = customer.frame_locator("iframe")
    start = widget.locator("#start")
    await expect(start).to_be_disabled()
    await expect(widget.locator("#policy-html")).to_contain_text("Privacy Policy")
    assert await customer_ctx.cookies() == []
    await widget.locator("#accept").check()
    await expect(start).to_be_enabled()
    await start.click()

    await widget.locator("#f-name").fill(XSS_NAME)
    await widget.locator("#f-email").fill("mallory@example.com")
    await widget.locator("#f-company").fill("Acme <b>Corp</b>")
    await widget.locator("#form-submit").click()
    cookies = await customer_ctx.cookies()
    assert [c["name"] for c in cookies] == ["chat_session"]

    composer = widget.locator("#text")
    await expect(composer).to_be_visible()
    await composer.fill(XSS_BODY)
    await composer.press("Enter")
    await expect(widget.locator("#messages")).to_contain_text("is my printer on fire?")

    agent_ctx = await browser.new_context()
    agent = await agent_ctx.new_page()
    _watch_dialogs(agent, dialogs, confirms)
    await sign_in(agent, server, "agent", "/agent")
    await expect(agent.locator("#list-queue")).to_contain_text("Mallory", timeout=10000)
    await agent.locator("#list-queue").get_by_text(XSS_NAME).first.click()
    await agent.get_by_role("button", name="Claim").click()
    await expect(agent.locator("#conv-name")).to_have_text(XSS_NAME)
    await expect(agent.locator("#conv-email")).to_contain_text("mallory@example.com")
    await expect(agent.locator("#conv-consent")).to_contain_text("1.01")
    await expect(agent.locator("#conv-scroller")).to_contain_text("is my printer on fire?")
    await expect(widget.locator("#messages")).to_contain_text("joined")

    await agent.locator("#composer-input").fill("Unplug it, please.")
    await agent.locator("#composer-input").press("Enter")
    await expect(widget.locator("#messages")).to_contain_text("Unplug it, please.")
    await customer.screenshot(path=str(tmp_path / "customer.png"))
    await agent.screenshot(path=str(tmp_path / "agent.png"))

    await composer.fill("Done, thanks!")
    await composer.press("Enter")
    await expect(agent.locator("#conv-scroller")).to_contain_text("Done, thanks!")

    # The payloads arrived as text, nowhere as markup.
    assert await agent.locator("#conv-scroller img").count() == 0
    assert await agent.locator("#conv-scroller script").count() == 0
    assert await widget.locator("#messages img").count() == 0
    assert dialogs == []

    # "Your data" opens the account page inside the widget's frame, with the widget's session.
    await widget.get_by_role("link", name="Your data").click()
    await expect(widget.locator("#acct-title")).to_be_visible()
    await expect(widget.locator("#f-name, input[name=name]").first).to_have_value(XSS_NAME)
    await widget.get_by_role("link", name="Back to the chat").click()
    await expect(widget.locator("#messages")).to_contain_text("Done, thanks!")

    confirms.append("close")  # the dashboard asks before closing
    await agent.locator("#conv-close").click()
    await expect(widget.locator("#ended")).to_be_visible()
    assert confirms == [] and dialogs == []
    await customer_ctx.close()
    await agent_ctx.close()
