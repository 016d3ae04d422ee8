"""An admin corrects a customer's details from the console, as asked by email."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.async_api import Browser, expect

from ..support import Server, Visitor
from .pages import sign_in


async def test_admin_corrects_a_customer_in_the_console(server: Server, browser: Browser,
                                                        tmp_path: Path) -> None:
    """Customers tab, Correct, save: the row and the customer's own view show the new name."""
    email = f"typo{uuid.uuid4().hex[:8]}@example.com"
    visitor = await Visitor(server).start(name="Jonh Smith", email=email)
    page = await browser.new_page()
    await sign_in(page, server, "admin", "/admin")
    await page.locator("#tab-customers").click()
    await page.locator("#cust-q").fill(email)
    await page.locator("#cust-q").press("Enter")
    row = page.locator("#cust-rows tr", has_text=email)
    await expect(row).to_contain_text("Jonh Smith")
    await row.get_by_role("button", name="Correct").click()
    form = page.locator("form.correct-box")
    await form.get_by_label("Name").fill("John Smith")
    await page.screenshot(path=str(tmp_path / "form.png"))
    await form.get_by_role("button", name="Save").click()
    await expect(page.locator("#cust-rows tr", has_text=email)).to_contain_text("John Smith")
    await page.screenshot(path=str(tmp_path / "corrected.png"))
    me = (await visitor.http.get("/api/me")).json()
    assert me["customer"]["name"] == "John Smith"
    await page.close()
    await visitor.aclose()
