"""Steps the browser tests share: a member of staff signing in through the real login page."""

from __future__ import annotations

from playwright.async_api import FrameLocator, Page

from ..support import STAFF_PASSWORD, Server


async def sign_in(page: Page, server: Server, name: str, path: str) -> None:
    """Open `path` by way of the login page, as a bookmarked link would, and wait until it shows."""
    await page.goto(f"{server.url}/login?next={path}")
    await page.locator("#username").fill(name)
    await page.locator("#password").fill(STAFF_PASSWORD)
    await page.locator("button[type=submit]").click()
    await page.wait_for_url(server.url + path)


async def claim_waiting(page: Page, customer: str) -> None:
    """On the dashboard: open the waiting conversation of `customer` from the queue and claim it."""
    await page.locator("#list-queue").get_by_text(customer).click()
    await page.get_by_role("button", name="Claim").click()


async def start_widget_chat(page: Page, server: Server, name: str, email: str,
                            first_message: str) -> FrameLocator:
    """A customer on the site's home page: opens the widget, consents, fills the pre-chat form
    and sends a first message. Returns the widget's frame."""
    await page.goto(server.url + "/")
    await page.get_by_role("button", name="Open chat").click()
    widget = page.frame_locator("iframe")
    await widget.locator("#accept").check()
    await widget.locator("#start").click()
    await widget.locator("#f-name").fill(name)
    await widget.locator("#f-email").fill(email)
    await widget.locator("#form-submit").click()
    await widget.locator("#text").fill(first_message)
    await widget.locator("#text").press("Enter")
    return widget
