"""A new operator follows the printed setup link in a real browser and lands in the console."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.async_api import Browser, expect

from ..support import Server


async def test_setup_link_creates_the_first_admin(make_server: Callable[..., Server],
                                                  browser: Browser) -> None:
    """The one-time link's form, posted by the browser itself, creates the admin and signs in."""
    server = make_server()
    link = re.search(r"/setup\?token=(\S+)", server.log())
    assert link is not None
    page = await browser.new_page()
    await page.goto(server.url + link.group(0))
    await page.locator("#username").fill("owner")
    await page.locator("#password").fill("owner")  # too short: the form says so
    await page.locator("#password2").fill("owner")
    await page.locator("#password").evaluate("e => e.removeAttribute('minlength')")
    await page.locator("#password2").evaluate("e => e.removeAttribute('minlength')")
    await page.locator("button[type=submit]").click()
    await expect(page.get_by_role("alert")).to_contain_text("12")
    await page.locator("#password").fill("a long passphrase for the boss")
    await page.locator("#password2").fill("a long passphrase for the boss")
    await page.locator("button[type=submit]").click()
    await page.wait_for_url(server.url + "/admin")
    await expect(page.locator("#tab-conversations")).to_be_visible()
    await page.goto(server.url + link.group(0))
    await expect(page.locator("h1")).to_contain_text("not valid")
    await page.close()
