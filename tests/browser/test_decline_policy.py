"""A customer chatting when a new privacy policy is published sees it at once, and may decline
it: end the chat (and read the policy again later), or delete the account there and then."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Browser, expect

from ..support import Agent, Server
from .pages import start_widget_chat


async def test_declining_a_changed_policy_ends_the_chat_or_deletes_the_account(
        make_server: Callable[..., Server], browser: Browser, tmp_path: Path) -> None:
    """The admin publishes 2.0 mid-chat: the widget shows that the policy changed. "Don't
    accept", "End this chat": the chat has ended, with a way back to the policy. Back, then
    "Delete my account" and its confirmation: everything of the customer is gone."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("boss", "admin")
    context = await browser.new_context()
    boss = await Agent(server, "boss").login()
    try:
        page = await context.new_page()
        widget = await start_widget_chat(page, server, "Robin Reader", "robin@example.com",
                                         "Hello, anyone there?")
        await expect(widget.locator("#messages .msg-visitor .meta")).to_contain_text("You")
        published = await boss.http.post("/api/admin/policies", json={
            "version": "2.0", "effective_date": "2026-12-01", "summary": "We now keep less.",
            "text": "# Privacy policy\n\nWe now keep less.\n"})
        assert published.status_code == 200, published.text

        await expect(widget.locator("#policy-why")).to_have_text("Our privacy policy changed.")
        await expect(widget.locator("#policy-version")).to_have_text("2.0")
        await widget.get_by_role("button", name="Don't accept").click()
        await widget.get_by_role("button", name="End this chat").click()
        await expect(widget.locator("#done-title")).to_have_text("This chat has ended")
        await expect(widget.locator("#done-text")).to_be_visible()
        await widget.get_by_role("button", name="Read the policy again").click()
        await expect(widget.locator("#policy-why")).to_have_text("Our privacy policy changed.")
        customers = (await boss.http.get("/api/admin/customers")).json()
        assert "robin@example.com" in str(customers)  # ending the chat deleted nothing

        await widget.get_by_role("button", name="Don't accept").click()
        await widget.get_by_role("button", name="Delete my account").click()
        await widget.get_by_role("button", name="Yes, delete everything").click()
        await expect(widget.locator("#done-title")).to_have_text(
            "Your account and data were deleted.")
        await expect(widget.locator("#done-text")).to_be_hidden()
        await expect(widget.locator("#done-back")).to_be_hidden()
        await page.screenshot(path=str(tmp_path / "deleted.png"))
        customers = (await boss.http.get("/api/admin/customers")).json()
        assert "robin@example.com" not in str(customers)
        session = await context.request.get(server.url + "/api/session")
        assert (await session.json())["session"] is False
    finally:
        await boss.aclose()
        await context.close()
