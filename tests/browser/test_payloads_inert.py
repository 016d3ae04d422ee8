"""Script payloads in every customer field stay inert text in every page that shows them."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Dialog, Page, expect

from ..support import Agent, Server, Visitor
from .pages import sign_in

NAME = '"><img src=x onerror=alert("name")><script>alert("name2")</script>'
EMAIL = "x'onfocus=alert`1`'autofocus'@example.com"
COMPANY = "<svg onload=alert('company')>"
BODY = "<img src=x onerror=alert('body')> javascript:alert(1) {{7*7}}"


def _watch(page: Page, seen: list[str]) -> None:
    async def on_dialog(dialog: Dialog) -> None:
        seen.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)


async def test_payloads_are_text_in_dashboard_console_and_account(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    """No dialog opens and no injected element appears in the dashboard, console or account."""
    visitor = await Visitor(server).start(name=NAME, email=EMAIL, company=COMPANY)
    socket = await visitor.socket()
    conversation_id = (await socket.wait_type("welcome"))["conversation_id"]
    await socket.send({"type": "message", "body": BODY, "client_msg_id": "xss"})
    await socket.wait_type("ack")
    agent = await Agent(server, "agent").login()
    ags = await agent.socket()
    await ags.wait_type("queue")
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    await ags.wait_type("status", conversation_id=conversation_id)
    await ags.close()
    await agent.aclose()

    seen: list[str] = []
    context = await browser.new_context()
    page = await context.new_page()
    _watch(page, seen)

    await sign_in(page, server, "agent", "/agent")
    await expect(page.locator("#list-mine")).to_contain_text('"><img', timeout=10000)
    await page.locator("#list-mine").get_by_text(NAME).first.click()
    await expect(page.locator("#conv-name")).to_have_text(NAME)
    await expect(page.locator("#conv-email")).to_contain_text(EMAIL)
    await expect(page.locator("#conv-company")).to_contain_text(COMPANY)
    await expect(page.locator("#conv-scroller")).to_contain_text("javascript:alert(1) {{7*7}}")
    assert await page.locator("#app img, #app svg[onload], #app script").count() == 0
    await page.screenshot(path=str(tmp_path / "dashboard.png"))

    admin = await browser.new_context()
    console = await admin.new_page()
    _watch(console, seen)
    await sign_in(console, server, "admin", "/admin")
    await console.locator("#search-q").fill(conversation_id)
    await console.locator("#search-q").press("Enter")
    await expect(console.locator("#conv-rows")).to_contain_text(EMAIL)
    await console.locator("#conv-rows tr").first.click()
    await expect(console.locator("#detail-messages")).to_contain_text("{{7*7}}")
    await expect(console.locator("#detail-name")).to_have_text(NAME)
    assert await console.locator("#detail-messages img, #conv-rows img").count() == 0
    await console.screenshot(path=str(tmp_path / "console.png"))

    account = await context.new_page()
    _watch(account, seen)
    await context.add_cookies([{"name": c.name, "value": c.value, "url": server.url}
                               for c in visitor.http.cookies.jar])
    await account.goto(server.url + "/account")
    await expect(account.locator("input[name=name], #name, #f-name").first).to_have_value(NAME)
    assert await account.locator("main img, main svg").count() == 0

    assert seen == []
    await socket.close()
    await visitor.aclose()
    await context.close()
    await admin.close()
