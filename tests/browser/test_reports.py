"""The Reports tab in Chromium: figures, server-drawn SVG charts as images, the CSV link and a
bad range (issue 12)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, expect

from ..support import Agent, Server, Visitor
from .pages import sign_in


async def _rated_conversation(server: Server, score: int) -> None:
    """A conversation the agent answered and closed, rated `score` by the customer."""
    visitor = await Visitor(server).start(name="Reporter", email="reporter@example.com")
    agent = await Agent(server, "agent").login()
    try:
        vs = await visitor.socket()
        conversation_id = (await vs.wait_type("welcome"))["conversation_id"]
        await vs.send({"type": "message", "body": "hello", "client_msg_id": "r1"})
        await vs.wait_type("ack")
        ags = await agent.socket()
        await ags.wait_type("queue")
        await ags.send({"type": "claim", "conversation_id": conversation_id})
        await ags.wait_type("status", conversation_id=conversation_id, status="active")
        await ags.send({"type": "message", "conversation_id": conversation_id, "body": "hi",
                        "client_msg_id": "r2"})
        await ags.wait_type("ack")
        await ags.send({"type": "close", "conversation_id": conversation_id})
        await vs.wait_type("status", status="closed")
        await vs.send({"type": "rating", "score": score})
        await vs.wait_type("rating")
        await vs.close()
        await ags.close()
    finally:
        await visitor.aclose()
        await agent.aclose()


async def test_reports_tab_shows_figures_charts_and_csv(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    """The tab loads the last 30 days: six figures, three chart images that decode (drawn by
    this server, no other host), a per-agent table and a CSV link for the same range; a range
    the wrong way round is refused next to the field."""
    await _rated_conversation(server, 4)
    ctx = await browser.new_context(viewport={"width": 1200, "height": 1400})
    page = await ctx.new_page()
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
    await sign_in(page, server, "admin", "/admin")
    await page.get_by_role("link", name="Reports").click()
    await expect(page.locator(".report-figure")).to_have_count(6)
    await expect(page.locator(".report-figure").first).to_contain_text("Conversations")
    await expect(page.locator("#rp-agents")).to_contain_text("agent")
    await expect(page.locator(".report-figure").last).to_contain_text("of 5")
    charts = page.locator("img.report-chart")
    await expect(charts).to_have_count(3)
    for i in range(3):  # each image decoded: the browser rendered the server's SVG
        await charts.nth(i).evaluate(
            "img => img.decode ? img.decode() : null")
        assert await charts.nth(i).evaluate("img => img.naturalWidth") > 0
    to = await page.locator("#rp-to").input_value()
    assert to and await page.locator("#rp-csv").get_attribute("href") == (
        f"/api/admin/reports/csv?from={await page.locator('#rp-from').input_value()}&to={to}")
    async with page.expect_download() as info:
        await page.locator("#rp-csv").click()
    download = await info.value
    path = tmp_path / "report.csv"
    await download.save_as(path)
    assert path.read_text().startswith("section,key,metric,value")
    await page.screenshot(path=str(tmp_path / "reports.png"), full_page=True)

    await page.locator("#rp-from").fill("2026-03-02")
    await page.locator("#rp-to").fill("2026-03-01")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator("#rpe-from")).to_contain_text("from must not be after to")
    assert hosts == {server.url.split("/")[2]}
    await ctx.close()
