"""An admin sets the name customers see for a staff member from the console's Staff tab."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.async_api import Browser, expect

from ..support import STAFF_PASSWORD, Server
from .pages import sign_in


async def test_admin_sets_a_display_name_in_the_staff_tab(server: Server, browser: Browser,
                                                          tmp_path: Path) -> None:
    """Add staff with a display name, then change it inline: the table and the API agree, and
    a display name that is the sign-in name is refused with the reason shown."""
    login_name = f"sky{uuid.uuid4().hex[:6]}"
    page = await browser.new_page()
    await sign_in(page, server, "admin", "/admin")
    await page.locator("#tab-staff").click()
    await page.locator("#sa-name").fill(login_name)
    await page.locator("#sa-display_name").fill("Skyler")
    await page.locator("#sa-password").fill(STAFF_PASSWORD)
    await page.locator("#sa-submit").click()
    row = page.locator("#staff-rows tr", has_text=login_name)
    await expect(row).to_contain_text("Skyler")

    await row.get_by_role("button", name="Change").click()
    editor = page.locator("#staff-rows tr.sub-display")
    field = editor.get_by_role("textbox", name=f"Name customers see for {login_name}")
    await field.fill(login_name.upper())
    await editor.get_by_role("button", name="Save").click()
    await expect(editor.locator(".field-error")).to_contain_text("sign-in name")
    await field.fill("Sky from Support")
    await editor.get_by_role("button", name="Save").click()
    await expect(page.locator("#staff-rows tr[data-id]", has_text=login_name)).to_contain_text(
        "Sky from Support")
    await page.screenshot(path=str(tmp_path / "staff.png"))
    staff = await page.evaluate("fetch('/api/admin/staff').then(r => r.json())")
    assert {s["display_name"] for s in staff["staff"] if s["name"] == login_name} == {
        "Sky from Support"}
    await page.close()
