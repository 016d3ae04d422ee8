"""A reply mail's link, followed in a fresh Chromium, opens the conversation on /chat."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from ..mailbox import Mailbox, mail_server
from ..support import Agent, Visitor


async def test_reply_link_opens_the_chat_in_another_browser(browser: Browser, tmp_path: Path,
                                                            mailbox: Mailbox) -> None:
    """Written with no agent online, tab closed; the agent's reply comes by mail; its link in a
    fresh browser shows the conversation with the reply, and the customer writes on."""
    srv = mail_server(tmp_path, mailbox, CHATSERVER_REPLY_EMAIL_DELAY_SECONDS="1")
    srv.add_staff("bo", "agent")
    ada = await Visitor(srv).start(email="ada.browser@example.com")
    agent = await Agent(srv, "bo").login()
    try:
        vs = await ada.socket()
        conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
        await vs.send({"type": "message", "body": "Anyone there?", "client_msg_id": "m1"})
        await vs.wait_type("ack")
        await vs.close()
        ags = await agent.socket()
        await ags.wait_type("queue")
        await ags.send({"type": "claim", "conversation_id": conversation_id})
        await ags.wait_type("status", conversation_id=conversation_id)
        await ags.send({"type": "message", "conversation_id": conversation_id,
                        "body": "Yes! Your parcel left today.", "client_msg_id": "r1"})
        await ags.wait_type("ack")
        [mail] = await mailbox.wait_to("ada.browser@example.com",
                                       "New reply to your conversation")

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
        reply = await ags.wait_type("message", sender="visitor")
        assert reply["body"] == "Great, thanks!"
        await ags.close()
        await context.close()
    finally:
        await ada.aclose()
        await agent.aclose()
        srv.stop()
