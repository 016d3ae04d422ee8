"""A reply mail's link, followed in a fresh Chromium, opens the conversation on /chat; the
agent's dashboard says which reply went by email, then that the customer saw it."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from ..mailbox import Mailbox, mail_server
from ..support import Visitor
from .pages import claim_waiting, sign_in


async def test_reply_link_opens_the_chat_in_another_browser(browser: Browser, tmp_path: Path,
                                                            mailbox: Mailbox) -> None:
    """Written with no agent online, tab closed; the agent's reply (from the dashboard) comes by
    mail, and the dashboard says so under it; the mail's link in a fresh browser shows the
    conversation with the reply, the customer writes on, and the dashboard shows "Seen"."""
    srv = mail_server(tmp_path, mailbox, CHATSERVER_REPLY_EMAIL_DELAY_SECONDS="1")
    srv.add_staff("bo", "agent")
    ada = await Visitor(srv).start(email="ada.browser@example.com")
    try:
        vs = await ada.socket()
        await vs.wait_type("welcome")
        await vs.send({"type": "message", "body": "Anyone there?", "client_msg_id": "m1"})
        await vs.wait_type("ack")
        await vs.close()
        desk_context = await browser.new_context()
        desk = await desk_context.new_page()
        await sign_in(desk, srv, "bo", "/agent")
        await claim_waiting(desk, "Ada Lovelace")
        await expect(desk.locator("#conv-presence")).to_have_text(
            "Offline: replies they do not see are emailed to them")
        await desk.locator("#composer-input").fill("Yes! Your parcel left today.")
        await desk.locator("#composer-input").press("Enter")
        [mail] = await mailbox.wait_to("ada.browser@example.com",
                                       "New reply to your conversation")
        reply_node = desk.locator("#conv-scroller .msg-agent").last
        await expect(reply_node.locator(".msg-emailed")).to_have_text("Emailed to the customer")
        await desk.screenshot(path=str(tmp_path / "dashboard-emailed.png"))

        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(mail.link("/chat?token="))
        assert page.url == srv.url + "/chat/link"  # the token left the address bar
        # Opening the link spent nothing (mail scanners open links too): the button does.
        await page.get_by_role("button", name="Open the conversation").click()
        await page.wait_for_url(srv.url + "/chat")
        await expect(page.locator("#messages")).to_contain_text("Yes! Your parcel left today.")
        await expect(page.locator("#messages")).to_contain_text("Anyone there?")
        await page.locator("#text").fill("Great, thanks!")
        await page.locator("#send").click()
        await expect(desk.locator("#conv-scroller .msg-visitor").last).to_contain_text(
            "Great, thanks!")
        # Read on /chat: "Seen" under the reply, and "Emailed" gone with it.
        await expect(reply_node.locator(".msg-seen")).to_have_text("Seen")
        await expect(desk.locator(".msg-emailed")).to_have_count(0)
        await context.close()
        await desk_context.close()
    finally:
        await ada.aclose()
        srv.stop()
