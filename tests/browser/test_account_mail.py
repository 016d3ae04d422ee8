"""The account page, the console and the dashboard around mail, in Chromium against a real server
and a real SMTP server: sign in to /account by a mailed link in a fresh browser, download the
data, delete the account by a mailed link; the console's Mail tab; "Seen" on the dashboard."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from playwright.async_api import Browser, Page, expect

from ..mailbox import Mailbox, mail_server
from ..support import Server, Visitor
from .axe import blocking_violations
from .pages import sign_in

SHOTS = Path(os.environ.get("CHATSERVER_SCREENSHOTS", "/tmp/chatserver-shots"))
NEUTRAL = "If an account uses this address, a link is on its way to it."


async def _shot(page: Page, name: str) -> None:
    await asyncio.to_thread(SHOTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_account_by_mail_sign_in_export_and_delete(browser: Browser, tmp_path: Path,
                                                         mailbox: Mailbox) -> None:
    """A browser that never chatted asks /account for a sign-in link (a malformed address is
    refused on the page; a known and an unknown address get the same words), follows the
    mailed link, presses the page's button and lands on the account; it mails itself a
    transcript and downloads the export. A third browser asks for a deletion link and confirms:
    the account is gone."""
    srv = mail_server(tmp_path, mailbox, CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    ada = await Visitor(srv).start(name="Ada Mailer", email="ada.account@example.com")
    found: list[str] = []
    try:
        vs = await ada.socket()
        conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
        await vs.send({"type": "message", "body": "Where is my parcel?", "client_msg_id": "m1"})
        await vs.wait_type("ack")
        await vs.close()

        second = await browser.new_context(accept_downloads=True)
        page = await second.new_page()
        await page.goto(srv.url + "/account")
        await expect(page.locator("#acct-none")).to_be_visible()
        await expect(page.locator("#acct-mail")).to_be_visible()
        found += await blocking_violations(page, "/account without a session, mail on")
        await page.locator("#signin-email").fill("ada.account@example")
        await page.locator("#signin-send").click()
        await expect(page.locator("#signin-error")).to_contain_text("valid email address")
        await expect(page.locator("#signin-email")).to_have_attribute("aria-invalid", "true")
        await expect(page.locator("#signin-email")).to_be_focused()
        found += await blocking_violations(page, "/account, a malformed address")
        await _shot(page, "account-no-session-error")
        await page.locator("#signin-email").fill("nobody.here@example.com")
        await page.locator("#signin-send").click()
        await expect(page.locator("#signin-msg")).to_contain_text(NEUTRAL)
        unknown = await page.locator("#signin-msg").text_content()
        await expect(page.locator("#signin-error")).to_be_empty()
        await page.locator("#signin-email").fill("ada.account@example.com")
        await page.locator("#signin-send").click()
        await expect(page.locator("#signin-msg")).to_contain_text(NEUTRAL)
        assert await page.locator("#signin-msg").text_content() == unknown
        await _shot(page, "account-no-session-sent")
        [mail] = await mailbox.wait_to("ada.account@example.com", "Your sign-in link")

        await page.goto(mail.link("/account/link?token="))
        assert page.url == srv.url + "/account/link"  # the token left the address bar
        await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        found += await blocking_violations(page, "/account/link")
        await _shot(page, "account-link-confirm")
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(srv.url + "/account")
        await expect(page.locator("#acct-main")).to_be_visible()
        await expect(page.locator("#f-email")).to_have_value("ada.account@example.com")
        await expect(page.locator("#transcripts")).to_be_visible()
        await page.get_by_role("button", name="Email me a transcript").click()
        await expect(page.locator("#transcript-msg")).to_contain_text("on its way")
        [copy] = await mailbox.wait_to("ada.account@example.com",
                                       "The transcript of your conversation")
        assert "Where is my parcel?" in copy.text

        async with page.expect_download() as download_info:
            await page.locator("#export").click()
        download = await download_info.value
        document = json.loads(await asyncio.to_thread(Path(await download.path()).read_text))
        assert document["account"]["email"] == "ada.account@example.com"
        assert [c["id"] for c in document["conversations"]] == [conversation_id]
        assert {"kind": "signin", "status": "sent"}.items() <= document["mail"][0].items()
        assert [link["purpose"] for link in document["mail_links"]] == ["signin"]
        assert document["mail_links"][0]["used_at"] is not None
        await expect(page.locator("#export-msg")).to_contain_text("my-chat-data.json")
        found += await blocking_violations(page, "/account signed in by link")
        await _shot(page, "account-signed-in")
        await second.close()

        third = await browser.new_context()
        page = await third.new_page()
        await page.goto(srv.url + "/account")
        await page.locator("#terminate-email").fill("ada.account@example.com")
        await page.locator("#terminate-send").click()
        await expect(page.locator("#terminate-msg")).to_contain_text(NEUTRAL)
        [bye] = await mailbox.wait_to("ada.account@example.com",
                                      "Confirm the deletion of your account")
        await page.goto(bye.link("/account/terminate?token="))
        assert page.url == srv.url + "/account/terminate"
        await _shot(page, "account-terminate-confirm")
        await page.get_by_role("button", name="Delete my account now").click()
        await expect(page.locator("h1")).to_have_text("Your account is deleted")
        assert (await ada.http.get("/api/me")).status_code == 401
        await mailbox.wait_to("ada.account@example.com", "Your account has been deleted")
        await third.close()
    finally:
        await ada.aclose()
        srv.stop()
    assert found == [], "\n".join(found)


async def test_console_mail_tab_lists_the_outbox(browser: Browser, tmp_path: Path,
                                                 mailbox: Mailbox, server: Server) -> None:
    """The Mail tab shows each mail's kind, status and attempts, and no address; on a server
    without SMTP it says plainly that mail is not configured."""
    srv = mail_server(tmp_path, mailbox, CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    srv.add_staff("root", "admin")
    ada = await Visitor(srv).start(name="Ada Outbox", email="ada.outbox@example.com")
    context = await browser.new_context()
    page = await context.new_page()
    found: list[str] = []
    try:
        assert (await ada.http.post("/api/account/link",
                                    json={"email": "ada.outbox@example.com"})).status_code == 202
        await mailbox.wait_to("ada.outbox@example.com", "Your sign-in link")
        await sign_in(page, srv, "root", "/admin")
        await page.locator("#tab-mail").click()
        rows = page.locator("#mail-rows tr")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("Sign-in link")
        await expect(rows.first.locator(".status-tag")).to_have_text("Sent")
        await expect(page.locator("#mail-off")).to_be_hidden()
        text = await page.locator("#view-mail").inner_text()
        assert "ada.outbox" not in text and "Ada Outbox" not in text
        found += await blocking_violations(page, "/admin#mail")
        await _shot(page, "console-mail")

        await sign_in(page, server, "admin", "/admin")  # the shared server: no SMTP
        await page.goto(server.url + "/admin#/mail")
        await expect(page.locator("#mail-off")).to_be_visible()
        await expect(page.locator("#mail-off")).to_contain_text("Mail is not configured")
        await expect(page.locator("#mail-rows")).to_contain_text("No mail")
        found += await blocking_violations(page, "/admin#mail without SMTP")
        await _shot(page, "console-mail-off")
    finally:
        await context.close()
        await ada.aclose()
        srv.stop()
    assert found == [], "\n".join(found)


async def test_dashboard_shows_new_and_seen_and_sends_read(browser: Browser,
                                                           server: Server) -> None:
    """A queued visitor message shows "New" until the agent looks at it; once claimed, the
    agent's open conversation sends `read` for the visitor's messages, and the visitor's `read`
    frame puts "Seen" under the agent's reply, which a reload of the dashboard keeps."""
    cy = await Visitor(server).start(name="Cy Seen", email="cy.seen@example.com")
    context = await browser.new_context()
    page = await context.new_page()
    try:
        vs = await cy.socket()
        conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
        await vs.send({"type": "message", "body": "Hello, seen test", "client_msg_id": "c1"})
        first = (await vs.wait_type("ack"))["seq"]
        await sign_in(page, server, "agent", "/agent")
        item = page.locator(f'#list-queue button[data-id="{conversation_id}"]')
        await expect(item.locator(".new-tag")).to_have_text("New")
        await _shot(page, "dashboard-queue-new")
        await item.click()
        await expect(item.locator(".new-tag")).to_have_count(0)
        await page.get_by_role("button", name="Claim").click()
        await expect(page.locator("#conv-scroller")).to_contain_text("Hello, seen test")
        read = await vs.wait_type("read", sender="agent")
        assert read["seq"] >= first  # the agent's dashboard said it saw the message

        await page.locator("#composer-input").fill("Hi Cy, here to help.")
        await page.locator("#composer-input").press("Enter")
        reply = await vs.wait_type("message", sender="agent")
        await expect(page.locator("#conv-scroller .msg-seen")).to_have_count(0)
        await vs.send({"type": "read", "seq": reply["seq"]})
        mine = page.locator(f'#conv-scroller li[data-seq="{reply["seq"]}"]')
        await expect(mine.locator(".msg-seen")).to_have_text("Seen")
        await _shot(page, "dashboard-seen")
        await vs.send({"type": "message", "body": "Thanks!", "client_msg_id": "c2"})
        later = (await vs.wait_type("ack"))["seq"]
        assert (await vs.wait_type("read", sender="agent", seq=later))["seq"] == later

        await page.reload()
        await page.locator(f'#list-mine button[data-id="{conversation_id}"]').click()
        await expect(mine.locator(".msg-seen")).to_have_text("Seen")
        await vs.send({"type": "close"})  # leave the shared server's queue as it was
        await vs.wait_type("status", status="closed")
        await vs.close()
    finally:
        await context.close()
        await cy.aclose()
