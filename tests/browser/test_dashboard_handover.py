"""The dashboard's handover tools in headless Chromium: the queue count in the tab title, the
display-name dialog, transfer to a colleague, take over of an unattended conversation, the away
switch, and a paused then erased customer vanishing from the screen."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page, expect

from ..support import Server, Visitor
from .pages import claim_waiting, sign_in


async def _dashboard(browser: Browser, server: Server, name: str) -> tuple[BrowserContext, Page]:
    ctx = await browser.new_context()
    page = await ctx.new_page()
    await sign_in(page, server, name, "/agent")
    await expect(page.locator("#conn-text")).to_have_text("Connected", timeout=10000)
    return ctx, page


async def _set_display_name(page: Page, name: str, shot: Path | None = None) -> None:
    await page.locator("#profile-open").click()
    await expect(page.locator("#profile-dialog")).to_be_visible()
    await page.locator("#profile-input").fill(name)
    if shot is not None:
        await page.screenshot(path=str(shot))
    await page.locator("#profile-save").click()
    await expect(page.locator("#profile-dialog")).to_be_hidden()
    await expect(page.locator("#profile-name")).to_have_text(name)
    said = f"Customers now see you as {name}" + ("" if name.endswith(".") else ".")
    await expect(page.locator("#toasts .toast").last).to_have_text(said)


async def test_transfer_take_over_and_the_title_count(
        make_server: Callable[..., Server], browser: Browser, tmp_path: Path) -> None:
    """Ann sees '1 waiting' in the tab title, claims, transfers to Bob; Bob leaves; Cat takes
    the unattended conversation over and the customer is told Cat's display name; a withdrawn
    consent pauses it on Cat's screen and the erasure leaves nothing of it there."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    for name in ("ann", "bob", "cat"):
        server.add_staff(name, "agent")
    server.add_staff("boss", "admin")
    customer = await Visitor(server).start(name="Quinn Customer", email="quinn@example.com")
    vs = await customer.socket()
    await vs.wait_type("welcome")
    await vs.send({"type": "message", "body": "my order is late", "client_msg_id": "q1"})
    await vs.wait_type("ack")

    ann_ctx, ann = await _dashboard(browser, server, "ann")
    await expect(ann).to_have_title("1 waiting · Agent dashboard")
    await _set_display_name(ann, "Ann Archer")
    await claim_waiting(ann, "Quinn Customer")
    await expect(ann.locator("#conv-name")).to_have_text("Quinn Customer")
    await expect(ann).to_have_title("Agent dashboard")
    assert (await vs.wait_type("status", status="active"))["agent"] == "Ann Archer"

    bob_ctx, bob = await _dashboard(browser, server, "bob")
    await _set_display_name(bob, "Bob B.")
    await ann.locator("#conv-transfer").click()
    await expect(ann.locator("#transfer-form")).to_be_visible()
    await expect(ann.locator("#transfer-to option", has_text="Bob B.")).to_have_count(1)
    await ann.locator("#transfer-to").select_option("bob")
    await ann.screenshot(path=str(tmp_path / "transfer-form.png"))
    await ann.locator("#transfer-send").click()
    await expect(ann.locator("#conv-status")).to_have_text("Handed over")
    await expect(ann.locator("#conv-closed-note")).to_contain_text("now handled by bob")
    await expect(ann.locator("#composer")).to_be_hidden()
    await expect(bob.locator("#list-mine")).to_contain_text("Quinn Customer")
    assert (await vs.wait_for(lambda f: f["type"] == "status"
                              and f["agent"] == "Bob B."))["status"] == "active"

    await bob_ctx.close()  # Bob goes home without handing it on
    cat_ctx, cat = await _dashboard(browser, server, "cat")
    await _set_display_name(cat, "Cat Carter", tmp_path / "profile.png")
    others = cat.locator("#list-others")
    await expect(others).to_contain_text("Unattended")
    await others.get_by_text("Quinn Customer").click()
    await expect(cat.get_by_role("button", name="Take over")).to_be_visible()
    await cat.screenshot(path=str(tmp_path / "take-over.png"))
    await cat.get_by_role("button", name="Take over").click()
    await expect(cat.locator("#conv-name")).to_have_text("Quinn Customer")
    await expect(cat.locator("#conv-scroller")).to_contain_text("my order is late")
    await expect(cat.locator("#conv-scroller")).to_contain_text("Cat Carter took over")
    assert (await vs.wait_for(lambda f: f["type"] == "status"
                              and f["agent"] == "Cat Carter"))["status"] == "active"
    await cat.locator("#composer-input").fill("Cat here, looking into it.")
    await cat.locator("#composer-input").press("Enter")
    reply = await vs.wait_type("message", sender="agent")
    assert reply["author"] == "Cat Carter"

    # A second customer arrives: the count comes back in the title of every dashboard.
    second = await Visitor(server).start(name="Rae Second", email="rae@example.com")
    vs2 = await second.socket()
    await vs2.wait_type("welcome")
    await expect(cat).to_have_title(re.compile(r"1 waiting · Agent dashboard$"))
    await expect(cat.locator("#announcer")).to_have_text("A new conversation is waiting.")

    await cat.locator("#away-toggle").click()
    await expect(cat.locator("#away-toggle")).to_have_text("Away")
    await expect(cat.locator("#away-toggle")).to_have_attribute("aria-pressed", "true")
    await cat.locator("#away-toggle").click()
    await expect(cat.locator("#away-toggle")).to_have_text("Available")

    # The customer withdraws consent: paused on Cat's screen, nothing can be sent.
    assert (await customer.http.post("/api/consent/withdraw", json={})).status_code == 200
    await expect(cat.locator("#conv-paused-note")).to_be_visible()
    await expect(cat.locator("#conv-status")).to_have_text("Paused")
    await expect(cat.locator("#composer")).to_be_hidden()
    await cat.screenshot(path=str(tmp_path / "paused.png"))

    # Erased: nothing of the customer stays on either dashboard.
    assert (await customer.http.delete("/api/me")).status_code == 200
    for page in (cat, ann):
        await expect(page.locator("#app")).not_to_contain_text("Quinn Customer")
        await expect(page.locator("#app")).not_to_contain_text("my order is late")
    await expect(cat.locator("#pane-empty")).to_be_visible()
    await cat.screenshot(path=str(tmp_path / "erased.png"))

    for ctx in (ann_ctx, cat_ctx):
        await ctx.close()
    await vs2.close()
    for v in (customer, second):
        await v.aclose()
