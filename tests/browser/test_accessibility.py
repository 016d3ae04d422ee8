"""axe-core over every page and widget screen, signed out and in: no serious or critical
violation. Each test walks the screens a real user reaches, then asks axe about each."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.async_api import Browser, Frame, Page, expect

from ..support import Server, Visitor
from .axe import blocking_violations
from .pages import sign_in


async def _widget_frame(page: Page) -> Frame:
    handle = await page.wait_for_selector("iframe")
    frame = await handle.content_frame() if handle else None
    assert frame is not None
    return frame


async def test_public_pages_pass_axe(server: Server, browser: Browser) -> None:
    """The demo page (launcher closed and open), /policy, /cookies, /account, the sign-in page
    (/login and /agent signed out), the widget page on its own and the full-page chat."""
    page = await browser.new_page()
    found: list[str] = []
    try:
        for path in ("/", "/policy", "/policy/1.01", "/cookies", "/account", "/login", "/agent",
                     "/admin", "/widget", "/chat"):
            await page.goto(server.url + path)
            await page.wait_for_load_state("networkidle")
            found += await blocking_violations(page, path)
        await page.goto(server.url + "/")
        await page.get_by_role("button", name="Open chat").click()
        await expect(page.frame_locator("iframe").locator("#screen-policy")).to_be_visible()
        found += await blocking_violations(page, "/ with the widget open")
    finally:
        await page.close()
    assert found == [], "\n".join(found)


async def test_widget_screens_pass_axe(server: Server, browser: Browser) -> None:
    """Consent screen, pre-chat form with an error shown, chat with messages, the account page
    inside the widget."""
    context = await browser.new_context()
    page = await context.new_page()
    found: list[str] = []
    try:
        await page.goto(server.url + "/")
        await page.get_by_role("button", name="Open chat").click()
        widget = page.frame_locator("iframe")
        frame = await _widget_frame(page)
        await expect(widget.locator("#screen-policy")).to_be_visible()
        found += await blocking_violations(frame, "widget consent screen")

        await widget.locator("#accept").check()
        await widget.locator("#start").click()
        await expect(widget.locator("#screen-form")).to_be_visible()
        await widget.locator("#form-submit").click()  # empty: the field errors show
        await expect(widget.locator("#e-name")).not_to_be_empty()
        found += await blocking_violations(frame, "widget pre-chat form")

        await widget.locator("#f-name").fill("Axe Visitor")
        await widget.locator("#f-email").fill(f"axe{uuid.uuid4().hex[:8]}@example.com")
        await widget.locator("#form-submit").click()
        await widget.locator("#text").fill("Hello, is anyone there?")
        await widget.locator("#text").press("Enter")
        await expect(widget.locator(".msg-visitor:not(.pending)")).to_have_count(1)
        found += await blocking_violations(frame, "widget chat")

        await widget.get_by_role("link", name="Your data").click()
        await expect(widget.locator("#acct-main")).to_be_visible()
        found += await blocking_violations(await _widget_frame(page), "account in the widget")
    finally:
        await context.close()
    assert found == [], "\n".join(found)


async def test_staff_pages_pass_axe(server: Server, browser: Browser) -> None:
    """The agent dashboard with a claimed conversation (system messages included) and every tab
    of the admin console, the transcript view and the publish preview included."""
    name = f"Axe Customer {uuid.uuid4().hex[:6]}"
    visitor = await Visitor(server).start(name=name, email=f"{uuid.uuid4().hex[:8]}@example.com")
    sock = await visitor.socket()
    await sock.wait_type("welcome")
    await sock.send({"type": "message", "body": "Help me, please.", "client_msg_id": "axe-1"})
    await sock.wait_type("ack")
    context = await browser.new_context()
    page = await context.new_page()
    found: list[str] = []
    try:
        await sign_in(page, server, "admin", "/agent")
        found += await blocking_violations(page, "/agent, nothing selected")
        await page.locator("#list-queue").get_by_text(name).first.click()
        found += await blocking_violations(page, "/agent, queued conversation preview")
        await page.get_by_role("button", name="Claim").click()
        await expect(page.locator("#conv-scroller .msg-system")).not_to_have_count(0)
        found += await blocking_violations(page, "/agent, claimed conversation")
        await page.locator("#composer-input").fill("A staff note")
        await page.get_by_role("button", name="Add note").click()
        await expect(page.locator("#conv-scroller .msg-note")).to_have_count(1)
        found += await blocking_violations(page, "/agent, with a staff note")
        await page.get_by_role("button", name="Earlier conversations").click()
        await expect(page.locator("#history-msg")).to_have_text("No earlier conversations.")
        found += await blocking_violations(page, "/agent, customer history dialog")
        await page.locator("#history-close").click()
        await page.get_by_role("button", name="Block visitor").click()
        found += await blocking_violations(page, "/agent, block dialog")
        await page.locator("#block-cancel").click()

        await page.goto(server.url + "/admin")
        for tab in ("conversations", "customers", "staff", "policies", "retention", "audit",
                    "mail", "canned", "reports"):
            await page.locator(f"#tab-{tab}").click()
            await expect(page.locator(f"#view-{tab}")).to_be_visible()
            await page.wait_for_load_state("networkidle")
            found += await blocking_violations(page, f"/admin#{tab}")
        await page.locator("#tab-policies").click()
        await page.locator("#p-submit").click()  # no version yet: the field errors show
        await page.locator("#p-version").fill("9.99")
        await page.locator("#p-summary").fill("Preview only")
        await page.locator("#p-submit").click()
        await expect(page.locator("#p-preview")).to_be_visible()
        found += await blocking_violations(page, "/admin#policies with a preview")

        await page.locator("#tab-conversations").click()
        await page.locator("#search-q").fill(name)
        await page.locator("#search-q").press("Enter")
        await page.locator("#conv-rows a", has_text=name).first.click()
        await expect(page.locator("#detail-messages .msg-system")).not_to_have_count(0)
        found += await blocking_violations(page, "/admin transcript view")
    finally:
        await context.close()
        await sock.close()
        await visitor.aclose()
    assert found == [], "\n".join(found)


# -- by hand, in Chromium: what axe cannot see ---------------------------------------------------


async def test_staff_pages_have_a_skip_link_to_their_main_region(server: Server,
                                                                 browser: Browser) -> None:
    """The first Tab on /agent and /admin reaches a visible "Skip to ..." link; following it moves
    focus to the main landmark."""
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await sign_in(page, server, "admin", "/agent")
        for path, main_id in (("/agent", "pane"), ("/admin", "main")):
            await page.goto(server.url + path)
            await expect(page.locator("h1")).to_have_count(1)
            await page.keyboard.press("Tab")
            skip = page.locator(":focus")
            await expect(skip).to_have_text(re.compile(r"^Skip to "))
            box = await skip.bounding_box()
            assert box is not None and box["y"] >= 0, f"{path}: the skip link stays off screen"
            await page.keyboard.press("Enter")
            await expect(page.locator(":focus")).to_have_attribute("id", main_id)
            assert await page.evaluate("document.activeElement.tagName") == "MAIN"
    finally:
        await context.close()


async def _open_chat(page: Page, server: Server) -> Frame:
    await page.goto(server.url + "/")
    await page.get_by_role("button", name="Open chat").click()
    widget = page.frame_locator("iframe")
    await widget.locator("#accept").check()
    await widget.locator("#start").click()
    await widget.locator("#f-name").fill("Zoomed Visitor")
    await widget.locator("#f-email").fill(f"zoom{uuid.uuid4().hex[:8]}@example.com")
    await widget.locator("#form-submit").click()
    await expect(widget.locator("#text")).to_be_visible()
    for n in range(3):
        await widget.locator("#text").fill(f"Line {n} of a question")
        await widget.locator("#text").press("Enter")
    await expect(widget.locator(".msg-visitor:not(.pending)")).to_have_count(3)
    return await _widget_frame(page)


@pytest.mark.parametrize(("zoom", "width", "height"), [(200, 640, 360), (400, 320, 180)])
async def test_zoomed_window_keeps_room_for_the_messages(
    server: Server, browser: Browser, tmp_path: Path, zoom: int, width: int, height: int
) -> None:
    """A 1280x720 window at 200% and 400% zoom: the widget takes the whole window and its message
    area keeps more than half of the window's height."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    try:
        frame = await _open_chat(page, server)
        panel = await page.locator("#chat-widget-panel").bounding_box()
        assert panel is not None
        assert (panel["width"], panel["height"]) == (width, height), panel
        room = await frame.evaluate("document.getElementById('scroller').clientHeight")
        await page.screenshot(path=str(tmp_path / f"zoom-{zoom}.png"))
        assert room > height / 2, f"the message area is {room}px of {height}px"
        # The composer and the end-chat button stay reachable.
        await frame.locator("#text").focus()
        assert await frame.locator("#text").is_visible()
    finally:
        await context.close()


async def test_full_screen_widget_keeps_focus_inside(server: Server, browser: Browser) -> None:
    """On a phone-sized window the open widget covers the page: Tab and Shift+Tab cycle inside
    it and never reach the links of the page behind."""
    context = await browser.new_context(viewport={"width": 390, "height": 760})
    page = await context.new_page()
    try:
        await page.goto(server.url + "/")
        await page.get_by_role("button", name="Open chat").click()
        widget = page.frame_locator("iframe")
        await expect(widget.locator("#screen-policy")).to_be_visible()
        assert await page.locator("#chat-widget-panel").get_attribute("aria-modal") == "true"
        frame = await _widget_frame(page)
        for key in ["Tab"] * 14 + ["Shift+Tab"] * 14:
            await page.keyboard.press(key)
            host = await page.evaluate("document.activeElement && document.activeElement.tagName")
            assert host == "IFRAME", f"after {key}, focus is on the page behind: {host}"
            inside = await frame.evaluate("document.activeElement.id || document.activeElement.tagName")
            assert inside != "BODY", f"after {key}, nothing in the chat has focus"
        await page.keyboard.press("Escape")
        await expect(page.locator("#chat-widget-panel")).to_be_hidden()
    finally:
        await context.close()


async def test_escape_on_the_launcher_closes_the_widget(server: Server, browser: Browser) -> None:
    """With the chat open, Escape while the launcher has focus closes it."""
    page = await browser.new_page()
    try:
        await page.goto(server.url + "/")
        launcher = page.get_by_role("button", name="Open chat")
        await launcher.click()
        await expect(page.locator("#chat-widget-panel")).to_be_visible()
        close = page.get_by_role("button", name="Close chat")
        await close.focus()
        await page.keyboard.press("Escape")
        await expect(page.locator("#chat-widget-panel")).to_be_hidden()
        await expect(launcher).to_be_focused()
        assert await launcher.get_attribute("aria-expanded") == "false"
    finally:
        await page.close()


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours, computed here from the definition."""

    def luminance(color: str) -> float:
        r, g, b = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _rgb_hex(css: str) -> str:
    """'rgb(35, 87, 217)' -> '#2357d9'."""
    found = re.findall(r"\d+", css)
    assert len(found) >= 3, css
    return "#" + "".join(f"{int(n):02x}" for n in found[:3])


class _HostSite:
    """Another website on its own origin (a real loopback server), embedding the widget."""

    def __init__(self) -> None:
        self.html = b""
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(site.html)))
                self.end_headers()
                self.wfile.write(site.html)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


# (given, expected accent): kept with dark text, kept with white text, refused (neither white nor
# dark text reaches 4.5:1 on mid grey), kept with dark text (white is 2.8:1 on coral).
BRAND_COLOURS = [("#ffeb3b", "#ffeb3b"), ("#0a7d5a", "#0a7d5a"), ("#777777", "#2357d9"),
                 ("#ff6b6b", "#ff6b6b")]


async def test_brand_colour_keeps_the_widget_readable(
    make_server: Callable[..., Server], browser: Browser
) -> None:
    """A site embeds the widget with data-color: the launcher, the header and the links reach
    4.5:1 contrast; a colour that cannot is replaced by the default, with a console warning."""
    shop = _HostSite()
    server = make_server(CHATSERVER_ALLOWED_ORIGINS=shop.origin)
    try:
        for given, accent in BRAND_COLOURS:
            await _check_brand_colour(browser, shop, server, given, accent)
    finally:
        shop.close()


async def _check_brand_colour(browser: Browser, shop: _HostSite, server: Server, given: str,
                              accent: str) -> None:
    shop.html = (f'<!doctype html><html lang="en"><title>Shop</title><h1>Shop</h1><main>Hi</main>'
                 f'<script src="{server.url}/widget.js" data-color="{given}" async></script>'
                 f'</html>').encode()
    page = await browser.new_page()
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    try:
        await page.goto(shop.origin + "/")
        launcher = page.locator("button[aria-controls=chat-widget-panel]")
        await launcher.click()
        styles = await launcher.evaluate(
            "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).color]")
        background, ink = (_rgb_hex(c) for c in styles)
        assert background == accent, given
        assert contrast(background, ink) >= 4.5, (given, background, ink)

        frame = await _widget_frame(page)
        await expect(frame.locator("#screen-policy")).to_be_visible()
        header = await frame.locator(".top").evaluate(
            "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).color]")
        top_bg, top_ink = (_rgb_hex(c) for c in header)
        assert top_bg == accent and contrast(top_bg, top_ink) >= 4.5, (given, top_bg, top_ink)
        link = _rgb_hex(await frame.locator(".screen a").first.evaluate(
            "e => getComputedStyle(e).color"))
        assert contrast(link, "#ffffff") >= 4.5, (given, link)
        found = await blocking_violations(frame, f"widget in {given}")
        assert found == [], "\n".join(found)
        refused = [w for w in warnings if "data-color" in w]
        assert bool(refused) == (accent != given), (given, warnings)
    finally:
        await page.close()


@pytest.mark.parametrize(("zoom", "width", "height"), [(200, 640, 360), (400, 320, 180)])
async def test_zoomed_dashboard_keeps_room_for_the_messages(
    server: Server, browser: Browser, tmp_path: Path, zoom: int, width: int, height: int
) -> None:
    """The agent dashboard in a 1280x720 window at 200% and 400% zoom: the open conversation's
    message area keeps more than half of the window's height, and the reply box is reachable."""
    name = f"Zoom Customer {uuid.uuid4().hex[:6]}"
    visitor = await Visitor(server).start(name=name, email=f"{uuid.uuid4().hex[:8]}@example.com")
    sock = await visitor.socket()
    await sock.wait_type("welcome")
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    try:
        await sign_in(page, server, "admin", "/agent")
        await page.locator("#list-queue").get_by_text(name).first.click()
        await page.get_by_role("button", name="Claim").click()
        scroller = page.locator("#conv-scroller")
        await expect(scroller.locator(".msg-system")).not_to_have_count(0)
        room = await scroller.evaluate("e => e.clientHeight")
        await page.screenshot(path=str(tmp_path / f"agent-{zoom}.png"))
        assert room > height / 2, f"the message area is {room}px of {height}px"
        await page.locator("#composer-input").fill("Still here.")
        await page.locator("#composer-input").press("Enter")
        await sock.wait_type("message", body="Still here.")
    finally:
        await context.close()
        await sock.close()
        await visitor.aclose()
