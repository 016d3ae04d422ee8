"""A newcomer's first minutes in the widget, in headless Chromium: nothing in the host site's
console before the visitor decides anything."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, ConsoleMessage, Page, Response, expect

from ..support import Server, Visitor
from .pages import sign_in, start_widget_chat


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


async def test_publishing_a_policy_starts_from_the_current_text_previews_and_asks(
    make_server: Callable[..., Server], browser: Browser, tmp_path: Path
) -> None:
    """The console's form holds the current text; Preview shows the rendering and how many open
    chats will pause, publishes nothing; only the confirmation publishes."""
    server = make_server()
    server.add_staff("boss", "admin")
    visitor = await Visitor(server).start()
    sock = await visitor.socket()
    await sock.wait_type("welcome")
    page = await browser.new_page()
    try:
        await sign_in(page, server, "boss", "/admin")
        await page.goto(server.url + "/admin#/policies")
        text = page.locator("#p-text")
        await expect(text).to_have_value(re.compile(r"^# EmergencySupport Technical Support"))
        await expect(page.locator("#p-bundled")).to_be_visible()

        await page.locator("#p-version").fill("2.0")
        await page.locator("#p-summary").fill("Our own policy")
        await text.fill("# Acme privacy policy\n\nWe keep **little**.\n")
        await page.get_by_role("button", name="Preview").click()
        preview = page.locator("#p-preview")
        await expect(preview).to_be_visible()
        await expect(page.locator("#p-preview-html h1")).to_have_text("Acme privacy policy")
        await expect(page.locator("#p-preview-html strong")).to_have_text("little")
        await expect(page.locator("#p-impact")).to_contain_text("pauses 1 open chat")
        await page.screenshot(path=str(tmp_path / "policy-preview.png"), full_page=True)
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/api/policy")).json()["version"] == "1.01"

        await page.get_by_role("button", name="Keep editing").click()
        await expect(preview).to_be_hidden()
        await page.get_by_role("button", name="Preview").click()
        await page.get_by_role("button", name="Publish version 2.0").click()
        await expect(page.locator("#p-msg")).to_contain_text("Published version 2.0")
        assert await sock.closed_code() == 4403
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/api/policy")).json()["version"] == "2.0"
        await expect(text).to_have_value(re.compile(r"^# Acme privacy policy"))
        await expect(page.locator("#p-bundled")).to_be_hidden()
    finally:
        await page.close()
        await sock.close()
        await visitor.aclose()


async def test_widget_and_dashboard_show_a_message_time_alike(
    server: Server, browser: Browser
) -> None:
    """The same message carries the same time text in the widget and on the agent dashboard."""
    options: dict[str, Any] = {"locale": "en-US", "timezone_id": "Europe/Berlin"}
    customer_ctx = await browser.new_context(**options)
    agent_ctx = await browser.new_context(**options)
    try:
        customer = await customer_ctx.new_page()
        name = f"Timely {uuid.uuid4().hex[:8]}"
        widget = await start_widget_chat(customer, server, name, f"{uuid.uuid4().hex[:8]}@example.com",
                                         "What time is it?")
        meta = widget.locator(".msg-visitor .meta").last
        await expect(meta).to_contain_text("You · ")

        agent = await agent_ctx.new_page()
        await sign_in(agent, server, "agent", "/agent")
        await agent.locator("#list-queue").get_by_text(name).first.click()
        await agent.get_by_role("button", name="Claim").click()
        agent_meta = agent.locator(".msg-visitor .msg-meta").first
        await expect(agent_meta).to_contain_text(name)
        widget_time = (await meta.text_content() or "").split(" · ", 1)[1]
        agent_time = (await agent_meta.text_content() or "").split(" · ", 1)[1]
        assert widget_time == agent_time, (widget_time, agent_time)
        assert re.fullmatch(r"\d\d:\d\d [AP]M", widget_time), widget_time
    finally:
        await customer_ctx.close()
        await agent_ctx.close()
