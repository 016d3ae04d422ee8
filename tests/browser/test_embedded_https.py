"""The widget embedded on another site over HTTPS, as customers meet it: a shop page on one host,
the chat server behind the documented nginx on another host and a port other than 443.

Chromium resolves both names to 127.0.0.1 and accepts the test's self-signed certificate; the
shop's page is a static file served by the same nginx. Cookies are therefore third-party and
partitioned, exactly as on a real customer's site.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, FrameLocator, Page, async_playwright, expect

from ..proxy import Nginx, make_certificate
from ..support import STAFF_PASSWORD, Server, free_port
from .conftest import ARGS, CHROMIUM, HAVE_CHROMIUM

TITLE = "Ask the shop"
COLOR = "#0a7d5a"


@dataclass
class Sites:
    server: Server
    nginx: Nginx
    shop: str  # the embedding page
    chat: str  # the chat server's public origin

    def rows(self, table: str) -> int:
        return int(self.server.query(f"SELECT count(*) FROM {table}")[0][0])


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Sites]:
    chat_port, shop_port = free_port(), free_port()
    shop = f"https://shop.test:{shop_port}"
    chat = f"https://chat.test:{chat_port}"
    hosts = "chat.test,127.0.0.1,localhost"  # the browser's name for us, and the tests' own
    server = Server(tmp_path / "data", env={"CHATSERVER_ALLOWED_ORIGINS": shop,
                                            "CHATSERVER_ALLOWED_HOSTS": hosts}).start()
    try:
        server.add_staff("agent", "agent")
        folder = tmp_path / "nginx"
        folder.mkdir()
        cert, key = make_certificate(folder, ["chat.test", "shop.test"])
        site = tmp_path / "shop"
        site.mkdir()
        (site / "index.html").write_text(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>The shop</title>'
            '</head><body><main><h1>The shop</h1><p>Things for sale.</p></main>'
            f'<script src="{chat}/widget.js" async data-title="{TITLE}" data-color="{COLOR}">'
            "</script></body></html>", encoding="utf-8")
        shop_server = f"""
    server {{
        listen 127.0.0.1:{shop_port} ssl;
        server_name shop.test;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {site};
    }}"""
        nginx = Nginx(folder, upstream_port=server.port, port=chat_port, cert=cert,
                      extra_servers=shop_server).start()
        try:
            yield Sites(server, nginx, shop, chat)
        finally:
            nginx.stop()
    finally:
        server.stop()


@pytest.fixture
async def chromium() -> AsyncIterator[tuple[Browser, list[str]]]:
    """Chromium that resolves shop.test and chat.test to this machine and accepts the test's
    certificate; also yields its arguments, for a persistent profile of its own."""
    if not HAVE_CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("/usr/bin/chromium is missing: .ci/run installs it with apt-get")
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium)")
    args = [*ARGS, "--host-resolver-rules=MAP shop.test 127.0.0.1, MAP chat.test 127.0.0.1",
            "--ignore-certificate-errors"]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
        yield browser, args
        await browser.close()


async def _open_widget(page: Page, sites: Sites) -> FrameLocator:
    await page.goto(sites.shop + "/")
    await page.get_by_role("button", name="Open chat").click()
    return page.frame_locator("iframe")


async def _consent(widget: FrameLocator) -> None:
    await expect(widget.locator("#policy-html")).to_contain_text("Privacy Policy")
    await widget.locator("#accept").check()
    await widget.locator("#start").click()


async def _agent_replies(context: BrowserContext, sites: Sites, name: str, text: str) -> Page:
    agent = await context.new_page()
    await agent.goto(sites.chat + "/agent")
    await agent.locator("input[name=username]").fill("agent")
    await agent.locator("input[name=password]").fill(STAFF_PASSWORD)
    await agent.locator("button[type=submit]").click()
    await expect(agent.locator("#list-queue")).to_contain_text(name, timeout=10000)
    await agent.locator("#list-queue").get_by_text(name).first.click()
    await agent.get_by_role("button", name="Claim").click()
    await agent.locator("#composer-input").fill(text)
    await agent.locator("#composer-input").press("Enter")
    return agent


async def test_widget_embedded_cross_site_over_https(
    sites: Sites, chromium: tuple[Browser, list[str]], tmp_path: Path
) -> None:
    """On another site over HTTPS: chat with an agent, open "Your data", read the policy and the
    cookies page in a new tab, download the export, and go back to the chat with its look."""
    browser, _ = chromium
    customer_ctx = await browser.new_context(ignore_https_errors=True, accept_downloads=True)
    shop = await customer_ctx.new_page()
    widget = await _open_widget(shop, sites)
    await expect(widget.locator("#w-title")).to_have_text(TITLE)
    await _consent(widget)
    await widget.locator("#f-name").fill("Nora Shopper")
    await widget.locator("#f-email").fill("nora@example.com")
    await widget.locator("#form-submit").click()
    composer = widget.locator("#text")
    await expect(composer).to_be_visible()
    await composer.fill("Is the blue one in stock?")
    await composer.press("Enter")

    agent_ctx = await browser.new_context(ignore_https_errors=True)
    agent = await _agent_replies(agent_ctx, sites, "Nora Shopper", "Yes, two left.")
    await expect(widget.locator("#messages")).to_contain_text("Yes, two left.")
    await expect(agent.locator("#conv-scroller")).to_contain_text("Is the blue one in stock?")
    await shop.screenshot(path=str(tmp_path / "1-chat.png"))

    # The account page opens inside the widget's frame, where the partitioned cookie is.
    await widget.get_by_role("link", name="Your data").click()
    await expect(widget.locator("#f-name")).to_have_value("Nora Shopper")
    await shop.screenshot(path=str(tmp_path / "2-account.png"))

    # Public pages refuse framing: their links open a readable tab instead.
    for name, path, title in (("Privacy policy", "/policy", "privacy policy"),
                              ("Cookies", "/cookies", "cookies"),
                              ("Version 1.01", "/policy/1.01", "privacy policy 1.01")):
        async with customer_ctx.expect_page() as opened:
            await widget.get_by_role("link", name=name).first.click()
        tab = await opened.value
        await expect(tab).to_have_url(sites.chat + path)
        await expect(tab).to_have_title(re.compile(title, re.IGNORECASE))
        await expect(tab.get_by_role("heading", level=1)).to_be_visible()
        await tab.close()
    await expect(widget.locator("#acct-title")).to_be_visible()  # the frame stayed where it was

    # The export is fetched with the frame's cookie and saved; it holds the conversation.
    async with shop.expect_download() as started:
        await widget.locator("#export").click()
    download = await started.value
    assert download.suggested_filename.endswith(".json")
    saved = tmp_path / "export.json"
    await download.save_as(saved)
    document = json.loads(saved.read_text(encoding="utf-8"))
    assert document["account"]["email"] == "nora@example.com"
    bodies = [m["body"] for c in document["conversations"] for m in c["messages"]]
    assert "Yes, two left." in bodies
    await expect(widget.locator("#export-msg")).to_contain_text("my-chat-data.json")
    await widget.locator("#export").scroll_into_view_if_needed()
    await shop.screenshot(path=str(tmp_path / "2b-export.png"))

    # Back in the chat, the embed's title and colour are kept.
    await widget.get_by_role("link", name="Back to the chat").click()
    await expect(widget.locator("#messages")).to_contain_text("Yes, two left.")
    await expect(widget.locator("#w-title")).to_have_text(TITLE)
    accent = await widget.locator("#chat").evaluate(
        "el => getComputedStyle(el).getPropertyValue('--accent').trim()")
    assert accent.lower() == COLOR
    await shop.screenshot(path=str(tmp_path / "3-back.png"))
    await customer_ctx.close()
    await agent_ctx.close()


async def test_export_failures_inside_the_widget_are_shown(
    sites: Sites, chromium: tuple[Browser, list[str]], tmp_path: Path
) -> None:
    """An export that cannot be fetched says so: unreachable, or the session ended meanwhile.
    A link in the policy text opens in a tab, not in the widget's frame."""
    browser, _ = chromium
    policy = tmp_path / "policy.md"
    policy.write_text(f"# Privacy Policy\n\nQuestions? See [our help page]({sites.shop}/).\n",
                      encoding="utf-8")
    published = sites.server.cli("policy", "publish", str(policy), "--version", "2.0",
                                 "--summary", "A link to our help page.")
    assert published.returncode == 0, published.stderr
    deadline = time.monotonic() + 10
    async with httpx.AsyncClient(base_url=sites.server.url) as direct:
        while (await direct.get("/api/policy")).json().get("version") != "2.0":
            assert time.monotonic() < deadline, "the server did not take up the new policy"
            await asyncio.sleep(0.1)

    context = await browser.new_context(ignore_https_errors=True, accept_downloads=True)
    shop = await context.new_page()
    widget = await _open_widget(shop, sites)
    link = widget.locator("#policy-html a")
    await expect(link).to_have_attribute("target", "_blank")
    async with context.expect_page() as opened:
        await link.click()
    tab = await opened.value
    await expect(tab).to_have_url(sites.shop + "/")
    await tab.close()
    await _consent(widget)
    await widget.locator("#f-name").fill("Otto Gone")
    await widget.locator("#f-email").fill("otto@example.com")
    await widget.locator("#form-submit").click()
    await expect(widget.locator("#text")).to_be_visible()
    await widget.get_by_role("link", name="Your data").click()
    await expect(widget.locator("#f-name")).to_have_value("Otto Gone")

    # The network drops the request.
    await shop.route("**/api/me/export", lambda route: route.abort())
    await widget.locator("#export").click()
    await expect(widget.locator("#export-error")).to_contain_text("Can't reach")
    await shop.unroute("**/api/me/export")

    # The operator erases the account from the shell while the page is open.
    done = sites.server.cli("erase", "--email", "otto@example.com")
    assert done.returncode == 0, done.stderr
    await widget.locator("#export").click()
    await expect(widget.locator("#acct-none")).to_contain_text("no chat session")
    await context.close()


async def test_a_browser_that_blocks_cookies_leaves_no_row(
    sites: Sites, chromium: tuple[Browser, list[str]], tmp_path: Path
) -> None:
    """Chromium set to block all cookies: "Start chat" says the cookie is blocked, every time,
    and the server stores no session, consent or access record for it."""
    _, args = chromium
    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    (profile / "Default" / "Preferences").write_text(json.dumps(
        {"profile": {"default_content_setting_values": {"cookies": 2}}}), encoding="utf-8")
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=args, headless=True,
            ignore_https_errors=True)
        try:
            shop = await context.new_page()
            widget = await _open_widget(shop, sites)
            for attempt in range(2):
                await _consent(widget)
                await expect(widget.locator("#blocked-title")).to_be_visible()
                await shop.screenshot(path=str(tmp_path / f"blocked-{attempt}.png"))
                await widget.locator("#blocked-retry").click()
        finally:
            await context.close()
    assert {t: sites.rows(t) for t in ("visitor_sessions", "consents", "access_events")} == {
        "visitor_sessions": 0, "consents": 0, "access_events": 0}
