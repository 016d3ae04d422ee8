"""The widget as a customer meets it across the pages of a site, in headless Chromium: the chat
reconnects on the next page behind the closed launcher and counts the replies that came
meanwhile, marks what the customer saw as read, says honestly how an answer will come when no
agent is online, mails a transcript on request, and fills the page at /chat."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from playwright.async_api import Browser, FrameLocator, Page, Request, expect

from ..mailbox import Mailbox, check_mail, mail_server
from ..support import Agent, Server, Socket
from .axe import blocking_violations

OFFLINE_NO_MAIL = "No agent is online. Leave a message; we'll answer here when one is back."


def _email() -> str:
    return f"c{uuid.uuid4().hex[:10]}@example.com"


async def _fill_in(widget: FrameLocator | Page, name: str, email: str) -> None:
    """From the policy screen to the chat: accept, then the pre-chat form."""
    await widget.locator("#accept").check()
    await widget.locator("#start").click()
    await widget.locator("#f-name").fill(name)
    await widget.locator("#f-email").fill(email)
    await widget.locator("#form-submit").click()
    await expect(widget.locator("#text")).to_be_visible()


async def _start_chat(page: Page, server: Server, name: str, email: str) -> FrameLocator:
    await page.goto(server.url + "/")
    await page.get_by_role("button", name="Open chat").click()
    widget = page.frame_locator("iframe")
    await _fill_in(widget, name, email)
    return widget


async def _say(widget: FrameLocator | Page, text: str) -> None:
    await widget.locator("#text").fill(text)
    await widget.locator("#text").press("Enter")
    await expect(widget.locator(".msg-visitor:not(.pending)").last).to_contain_text(text)


async def _conversation_of(ags: Socket, email: str) -> str:
    queue = await ags.wait_for(lambda f: f["type"] == "queue" and any(
        (c["customer"] or {}).get("email") == email for c in f["conversations"]))
    return next(c["conversation_id"] for c in queue["conversations"]
                if c["customer"]["email"] == email)


async def _reply(ags: Socket, conversation_id: str, body: str) -> int:
    """Claim (once) and answer; the reply's seq."""
    await ags.send({"type": "claim", "conversation_id": conversation_id})
    await ags.wait_type("status", conversation_id=conversation_id)
    client_msg_id = uuid.uuid4().hex
    await ags.send({"type": "message", "conversation_id": conversation_id, "body": body,
                    "client_msg_id": client_msg_id})
    return int((await ags.wait_type("ack", client_msg_id=client_msg_id))["seq"])


async def test_next_page_reconnects_counts_unread_and_marks_read_when_opened(
    make_server: Callable[..., Server], browser: Browser, tmp_path: Path
) -> None:
    """Customer writes, closes the panel and goes to a page without the widget; the agent
    replies. Back on a page with the widget the chat reconnects without opening: the launcher
    shows one unread message and a status region says so, and no read mark goes out. Opening the
    panel shows the reply, scrolled into view below a conversation longer than the panel, and the
    agent gets a read frame for it."""
    srv = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    srv.add_staff("bo", "agent")
    agent = await Agent(srv, "bo").login()
    context = await browser.new_context()
    try:
        page = await context.new_page()
        email = _email()
        widget = await _start_chat(page, srv, "Ada Pages", email)
        for n in range(12):  # more than the panel shows at once
            await _say(widget, f"Where is my parcel? ({n + 1})")
        ags = await agent.socket()
        conversation_id = await _conversation_of(ags, email)
        assert await page.evaluate("localStorage.getItem('chat-widget')") == "open"

        await page.get_by_role("button", name="Close chat").click()
        await page.goto(srv.url + "/cookies")  # another page of the site, no widget on it
        reply_seq = await _reply(ags, conversation_id, "It left our warehouse today.")

        await page.goto(srv.url + "/")
        launcher = page.get_by_role("button", name="Open chat (1 unread message)")
        await expect(launcher).to_be_visible()
        await expect(page.locator("#chat-widget-panel")).to_be_hidden()
        await expect(page.get_by_role("status")).to_have_text("1 unread message in the chat")
        await page.screenshot(path=str(tmp_path / "badge.png"))
        assert not [f for f in ags.frames if f["type"] == "read" and f["seq"] >= reply_seq]

        await launcher.click()
        widget = page.frame_locator("iframe")
        await expect(widget.locator(".msg-agent")).to_contain_text("It left our warehouse today.")
        await expect(widget.locator(".msg-agent").last).to_be_in_viewport()
        read = await ags.wait_for(lambda f: f["type"] == "read" and f["seq"] >= reply_seq)
        assert read == {"type": "read", "conversation_id": conversation_id, "seq": read["seq"],
                        "sender": "visitor"}
        await expect(page.get_by_role("button", name="Close chat")).to_be_visible()
        await ags.close()
    finally:
        await context.close()
        await agent.aclose()


async def test_fresh_page_asks_nothing_and_an_ended_chat_stays_closed(
    server: Server, browser: Browser
) -> None:
    """A first visit loads the embed and nothing more from the chat server (no frame, API call,
    socket or cookie) until the launcher is clicked. Once the chat is ended, the next page does
    not reconnect either: a socket would open a new conversation nobody asked for."""
    context = await browser.new_context()
    requests: list[str] = []

    def seen(request: Request) -> None:
        requests.append(urlsplit(request.url).path)

    try:
        page = await context.new_page()
        page.on("request", seen)
        await page.goto(server.url + "/", wait_until="networkidle")
        await expect(page.get_by_role("button", name="Open chat")).to_be_visible()
        chat_paths = [p for p in requests if p.startswith(("/widget?", "/api/", "/ws/"))
                      or p == "/widget"]
        assert chat_paths == [], requests
        assert await context.cookies() == []
        assert await page.evaluate("localStorage.length") == 0
        assert await page.locator("iframe").count() == 0

        await page.get_by_role("button", name="Open chat").click()
        widget = page.frame_locator("iframe")
        await _fill_in(widget, "Ended Ed", _email())
        await _say(widget, "Just a quick question")
        assert await page.evaluate("localStorage.getItem('chat-widget')") == "open"
        await widget.locator("#end").click()
        await widget.locator("#end").click()
        await expect(widget.locator("#ended")).to_be_visible()
        await page.wait_for_function("() => localStorage.getItem('chat-widget') === null", timeout=5000)

        requests.clear()
        await page.goto(server.url + "/", wait_until="networkidle")
        await expect(page.get_by_role("button", name="Open chat")).to_be_visible()
        assert [p for p in requests if p == "/widget" or p.startswith(("/api/", "/ws/"))] == []
        assert await page.locator("iframe").count() == 0
    finally:
        await context.close()


async def test_offline_wording_without_mail_follows_agents_live(
    make_server: Callable[..., Server], browser: Browser
) -> None:
    """No SMTP configured: with no agent online the widget promises an answer here, never by
    email; an agent coming online and leaving switches the banner live, both ways. An ended chat
    offers no transcript by mail."""
    srv = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    srv.add_staff("bo", "agent")
    agent = await Agent(srv, "bo").login()
    context = await browser.new_context()
    try:
        page = await context.new_page()
        widget = await _start_chat(page, srv, "Offline Olga", _email())
        banner = widget.locator("#banner")
        await expect(banner).to_have_text(OFFLINE_NO_MAIL)
        assert "mail" not in (await banner.text_content() or "")

        ags = await agent.socket()
        await ags.wait_type("queue")
        await expect(banner).to_have_text("Waiting for an agent…")
        await ags.close()
        await expect(banner).to_have_text(OFFLINE_NO_MAIL)

        await widget.locator("#end").click()
        await widget.locator("#end").click()
        await expect(widget.locator("#ended")).to_be_visible()
        await expect(widget.locator("#transcript-send")).to_be_hidden()
    finally:
        await context.close()
        await agent.aclose()


async def test_offline_wording_with_mail_names_the_address(
    browser: Browser, tmp_path: Path, mailbox: Mailbox
) -> None:
    """With SMTP configured and no agent online, the widget says the answer comes by email to
    the address the customer gave."""
    srv = mail_server(tmp_path, mailbox)
    context = await browser.new_context()
    try:
        page = await context.new_page()
        email = _email()
        widget = await _start_chat(page, srv, "Mailed Mia", email)
        await expect(widget.locator("#banner")).to_have_text(
            f"No agent is online. Leave a message: we'll answer by email to {email}.")
        await page.screenshot(path=str(tmp_path / "offline-with-mail.png"))
    finally:
        await context.close()
        srv.stop()


async def test_transcript_button_mails_the_customer_own_address(
    browser: Browser, tmp_path: Path, mailbox: Mailbox
) -> None:
    """At the end of a chat, "Email me this transcript" says it is on its way, and the mail
    reaches the customer's own address with the conversation in it."""
    srv = mail_server(tmp_path, mailbox)
    context = await browser.new_context()
    try:
        page = await context.new_page()
        email = _email()
        widget = await _start_chat(page, srv, "Transcript Tom", email)
        await _say(widget, "Please keep a record of this")
        await widget.locator("#end").click()
        await widget.locator("#end").click()
        button = widget.get_by_role("button", name="Email me this transcript")
        await expect(button).to_be_visible()
        await button.click()
        await expect(widget.locator("#transcript-msg")).to_have_text(
            "The transcript is on its way to the address on your account.")
        await page.screenshot(path=str(tmp_path / "transcript-sent.png"))
        [mail] = await mailbox.wait_to(email, "The transcript of your conversation")
        check_mail(mail, srv.url, email)
        assert "Please keep a record of this" in mail.text
        assert len(mailbox.mails) == 1
    finally:
        await context.close()
        srv.stop()


async def test_chat_page_fills_the_window_and_passes_axe(
    make_server: Callable[..., Server], browser: Browser, tmp_path: Path
) -> None:
    """/chat is the chat as a page: a centred column on a desktop window, the whole width of a
    phone; the conversation works there and axe finds nothing blocking. Screenshots of both are
    kept in the test's folder."""
    srv = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    srv.add_staff("bo", "agent")
    agent = await Agent(srv, "bo").login()
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = await context.new_page()
        await page.goto(srv.url + "/chat")
        assert await page.locator("iframe").count() == 0
        await expect(page.locator("#screen-policy")).to_be_visible()
        await page.screenshot(path=str(tmp_path / "chat-desktop-policy.png"))
        email = _email()
        await _fill_in(page, "Paige Full", email)
        await _say(page, "Hello from the full page")
        ags = await agent.socket()
        conversation_id = await _conversation_of(ags, email)
        await _reply(ags, conversation_id, "Hello! How can I help?")
        await expect(page.locator(".msg-agent")).to_contain_text("How can I help?")
        await ags.wait_for(lambda f: f["type"] == "read" and f["sender"] == "visitor"
                           and f["seq"] >= 3)

        column = await page.locator("#chat").bounding_box()
        assert column is not None
        assert column["width"] <= 760 and abs(column["x"] * 2 + column["width"] - 1280) < 2
        assert column["height"] > 650
        await page.screenshot(path=str(tmp_path / "chat-desktop.png"))
        assert await blocking_violations(page, "/chat desktop") == []

        await page.set_viewport_size({"width": 390, "height": 760})
        column = await page.locator("#chat").bounding_box()
        assert column is not None and column["width"] == 390 and column["x"] == 0
        composer = await page.locator("#composer").bounding_box()
        assert composer is not None and composer["y"] + composer["height"] <= 760
        await page.screenshot(path=str(tmp_path / "chat-mobile.png"))
        assert await blocking_violations(page, "/chat mobile") == []
        await ags.close()
    finally:
        await context.close()
        await agent.aclose()


async def test_chat_closed_while_away_is_not_reopened_behind_the_launcher(
    make_server: Callable[..., Server], browser: Browser
) -> None:
    """The agent closes the conversation while the customer is on another page: the next page
    loads the chat behind the launcher but opens no socket, so no new conversation appears in
    the queue, and the marker goes. A click on the launcher starts the new chat."""
    srv = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    srv.add_staff("bo", "agent")
    agent = await Agent(srv, "bo").login()
    context = await browser.new_context()
    try:
        page = await context.new_page()
        email = _email()
        widget = await _start_chat(page, srv, "Closed Cleo", email)
        await _say(widget, "Thanks, that's all")
        ags = await agent.socket()
        conversation_id = await _conversation_of(ags, email)
        await page.goto(srv.url + "/cookies")
        await _reply(ags, conversation_id, "Glad to help, bye!")
        await ags.send({"type": "close", "conversation_id": conversation_id})
        await ags.wait_type("status", conversation_id=conversation_id, status="closed")

        await page.goto(srv.url + "/")
        await page.wait_for_function("() => localStorage.getItem('chat-widget') === null", timeout=5000)
        await expect(page.locator("#chat-widget-panel")).to_be_hidden()
        assert srv.query("SELECT COUNT(*) FROM conversations") == [(1,)]

        await page.get_by_role("button", name="Open chat").click()
        await expect(page.frame_locator("iframe").locator("#text")).to_be_visible()
        await page.wait_for_function("() => localStorage.getItem('chat-widget') === 'open'",
                                     timeout=5000)
        assert srv.query("SELECT COUNT(*) FROM conversations") == [(2,)]
        await ags.close()
    finally:
        await context.close()
        await agent.aclose()


async def test_reply_to_a_closed_panel_counts_unread_and_still_goes_by_mail(
    browser: Browser, tmp_path: Path, mailbox: Mailbox
) -> None:
    """The panel is closed but the chat stays connected on the page: a reply shows on the badge
    at once, and since the customer did not see it, it is emailed after the delay all the same
    (a delivery to a closed panel is not a read)."""
    srv = mail_server(tmp_path, mailbox, CHATSERVER_REPLY_EMAIL_DELAY_SECONDS="1")
    srv.add_staff("bo", "agent")
    agent = await Agent(srv, "bo").login()
    context = await browser.new_context()
    try:
        page = await context.new_page()
        email = _email()
        widget = await _start_chat(page, srv, "Closed Panel Carl", email)
        await _say(widget, "I'll wait")
        ags = await agent.socket()
        conversation_id = await _conversation_of(ags, email)
        await page.get_by_role("button", name="Close chat").click()
        reply_seq = await _reply(ags, conversation_id, "Here is your answer.")
        await expect(page.get_by_role("button", name="Open chat (1 unread message)")).to_be_visible()
        [mail] = await mailbox.wait_to(email, "New reply to your conversation")
        assert "Here is your answer." in mail.text
        assert not [f for f in ags.frames if f["type"] == "read" and f["seq"] >= reply_seq]
        await ags.close()
    finally:
        await context.close()
        await agent.aclose()
        srv.stop()
