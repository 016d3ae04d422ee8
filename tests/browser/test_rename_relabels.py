"""An agent's new display name goes on their earlier replies at once, in the customer's widget and
on the agent's own dashboard, without a reload (as a reload would show it), whether the agent or
an admin changed it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Browser, WebSocketRoute, expect

from ..support import Agent, Server
from .pages import claim_waiting, sign_in, start_widget_chat


async def test_a_new_display_name_relabels_earlier_replies_on_both_sides(
        make_server: Callable[..., Server], browser: Browser, tmp_path: Path) -> None:
    """Sam replies as "Sam from Support", then renames to "Sam S.": the customer's earlier reply
    and the dashboard's show the new name, each message still shown once; the next reply carries
    it too. Then an admin names Sam "Samuel" in the console: the same, and Sam's dashboard says
    whom customers now see."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("sam", "agent")
    server.add_staff("boss", "admin")
    customer_ctx = await browser.new_context()
    agent_ctx = await browser.new_context()
    try:
        customer = await customer_ctx.new_page()
        widget = await start_widget_chat(customer, server, "Robin Reader", "robin@example.com",
                                         "Where is my parcel?")
        agent = await agent_ctx.new_page()
        await sign_in(agent, server, "sam", "/agent")
        await agent.locator("#profile-open").click()
        await agent.locator("#profile-input").fill("Sam from Support")
        await agent.locator("#profile-save").click()
        await expect(agent.locator("#profile-name")).to_have_text("Sam from Support")
        await claim_waiting(agent, "Robin Reader")
        await agent.locator("#composer-input").fill("Let me look.")
        await agent.locator("#composer-input").press("Enter")
        replies = widget.locator("#messages .msg-agent")
        await expect(replies).to_have_count(1)
        await expect(replies.first.locator(".meta")).to_contain_text("Sam from Support")

        await agent.locator("#profile-open").click()
        await agent.locator("#profile-input").fill("Sam S.")
        await agent.locator("#profile-save").click()
        await expect(agent.locator("#profile-name")).to_have_text("Sam S.")

        await expect(replies.first.locator(".meta")).to_contain_text("Sam S.")
        mine = agent.locator("#conv-scroller .msg-agent")
        await expect(mine.first.locator(".msg-meta")).to_contain_text("Sam S.")
        await agent.locator("#composer-input").fill("Found it.")
        await agent.locator("#composer-input").press("Enter")
        await expect(replies).to_have_count(2)
        await expect(replies.nth(1).locator(".meta")).to_contain_text("Sam S.")
        await expect(widget.locator("#messages .msg-visitor")).to_have_count(1)
        await expect(mine).to_have_count(2)
        await expect(agent.locator("#conv-scroller .msg-visitor")).to_have_count(1)
        await customer.screenshot(path=str(tmp_path / "customer-after-rename.png"))

        boss = await Agent(server, "boss").login()
        try:
            await boss.rename("sam", "Samuel")
        finally:
            await boss.aclose()
        await expect(agent.locator("#profile-name")).to_have_text("Samuel")
        for n in range(2):
            await expect(replies.nth(n).locator(".meta")).to_contain_text("Samuel")
            await expect(mine.nth(n).locator(".msg-meta")).to_contain_text("Samuel")
        await expect(replies).to_have_count(2)
    finally:
        await customer_ctx.close()
        await agent_ctx.close()


async def test_a_widget_away_during_a_rename_relabels_when_it_is_back(
        make_server: Callable[..., Server], browser: Browser, tmp_path: Path) -> None:
    """The customer's widget hears nothing while Sam is renamed (its connection lost, as on a
    train): once it reconnects, Sam's earlier reply carries the new name, still shown once."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("sam", "agent")
    server.add_staff("boss", "admin")
    customer_ctx = await browser.new_context()
    away = False
    sockets: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        # Between the widget and the server; while away, the server's frames are lost.
        upstream = ws.connect_to_server()
        sockets.append(ws)
        ws.on_message(upstream.send)
        upstream.on_message(lambda frame: None if away else ws.send(frame))

    await customer_ctx.route_web_socket("**/ws/visitor", route)
    sam = await Agent(server, "sam").login()
    boss = await Agent(server, "boss").login()
    try:
        customer = await customer_ctx.new_page()
        widget = await start_widget_chat(customer, server, "Robin Reader", "robin@example.com",
                                         "Where is my parcel?")
        await expect(widget.locator("#messages .msg-visitor .meta")).to_contain_text("You")
        await boss.rename("sam", "Sam from Support")
        desk = await sam.socket()
        queued = await desk.wait_for(lambda f: f["type"] == "queue" and bool(f["conversations"]))
        conversation_id = queued["conversations"][0]["conversation_id"]
        await desk.send({"type": "claim", "conversation_id": conversation_id})
        await desk.send({"type": "message", "conversation_id": conversation_id,
                         "body": "Let me look.", "client_msg_id": "r1"})
        await desk.wait_type("ack", client_msg_id="r1")
        replies = widget.locator("#messages .msg-agent")
        await expect(replies.first.locator(".meta")).to_contain_text("Sam from Support")

        away = True
        await boss.rename("sam", "Samuel")
        await expect(widget.locator("#subtitle")).to_contain_text("Sam from Support")
        away = False
        await sockets[-1].close(code=1006)  # the connection drops; the widget reconnects
        await expect(widget.locator("#subtitle")).to_contain_text("Samuel")
        await expect(replies.first.locator(".meta")).to_contain_text("Samuel")
        await expect(replies).to_have_count(1)
        await expect(widget.locator("#messages .msg-visitor")).to_have_count(1)
        assert len(sockets) == 2
        await customer.screenshot(path=str(tmp_path / "customer-back-after-rename.png"))
        await desk.close()
    finally:
        await sam.aclose()
        await boss.aclose()
        await customer_ctx.close()
