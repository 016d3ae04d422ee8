"""A newcomer's first minutes in the widget, in headless Chromium: nothing in the host site's
console before the visitor decides anything."""

from __future__ import annotations

from playwright.async_api import Browser, ConsoleMessage, Page, Response, expect

from ..support import Server


def _watch(page: Page, problems: list[str]) -> None:
    """Collect console errors and failed responses of the page and every frame in it."""

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"{response.status} {response.request.method} {response.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))


async def test_opening_the_widget_logs_no_error_before_or_after_consent(
    server: Server, browser: Browser
) -> None:
    """Opening the widget, reading the policy, consenting and filling the form: no failed
    request and no console error on the host page."""
    context = await browser.new_context()
    page = await context.new_page()
    problems: list[str] = []
    _watch(page, problems)
    await page.goto(server.url + "/")
    await page.get_by_role("button", name="Open chat").click()
    widget = page.frame_locator("iframe")
    await expect(widget.locator("#screen-policy")).to_be_visible()
    await expect(widget.locator("#start")).to_be_disabled()
    assert problems == []
    assert await context.cookies() == []

    await widget.locator("#accept").check()
    await widget.locator("#start").click()
    await expect(widget.locator("#screen-form")).to_be_visible()
    await widget.locator("#f-name").fill("Grace Hopper")
    await widget.locator("#f-email").fill("grace@example.com")
    await widget.locator("#form-submit").click()
    await expect(widget.locator("#text")).to_be_visible()
    await expect(widget.locator("#banner")).to_be_visible()
    assert problems == []
    await context.close()
