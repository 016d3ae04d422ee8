"""The admin console searches customers and conversations without putting a customer's email
or the words searched into any URL: not the page's, not any request's."""

from __future__ import annotations

import uuid
from urllib.parse import unquote

from playwright.async_api import Browser, Request, expect

from ..support import Server, Visitor
from .pages import sign_in


async def test_console_searches_keep_personal_data_out_of_urls(server: Server,
                                                              browser: Browser) -> None:
    """Search customers by email and conversations by words and email, page, open a transcript
    and come back: each search works, and neither the email nor the words appear in a URL."""
    word = "zz" + uuid.uuid4().hex[:8]
    email = f"{word}@example.com"
    visitor = await Visitor(server).start(name=f"Private {word}", email=email)
    socket = await visitor.socket()
    await socket.wait_type("welcome")
    await socket.send({"type": "message", "body": f"my {word}kettle sings", "client_msg_id": "1"})
    await socket.wait_type("ack")

    page = await browser.new_page()
    urls: list[str] = []

    def seen(request: Request) -> None:
        urls.append(request.url)

    page.on("request", seen)
    page.on("framenavigated", lambda frame: urls.append(frame.url))
    await sign_in(page, server, "admin", "/admin")

    await page.locator("#tab-customers").click()
    await page.locator("#cust-q").fill(email)
    await page.locator("#cust-q").press("Enter")
    await expect(page.locator("#cust-rows tr", has_text=email)).to_have_count(1)
    urls.append(page.url)

    await page.locator("#tab-conversations").click()
    await page.locator("#search-q").fill(f"{word}kettle")
    await page.locator("#search-email").fill(email)
    await page.locator("#search-q").press("Enter")
    row = page.locator("#conv-rows tr", has_text=f"Private {word}")
    await expect(row).to_have_count(1)
    urls.append(page.url)
    await row.click()
    await expect(page.locator("#detail-messages")).to_contain_text(f"{word}kettle")
    urls.append(page.url)
    await page.go_back()
    await expect(page.locator("#conv-rows tr", has_text=f"Private {word}")).to_have_count(1)
    await expect(page.locator("#search-q")).to_have_value(f"{word}kettle")
    urls.append(page.url)

    # A link from before (a bookmark with ?q=) is taken in and the hash rewritten without it.
    await page.goto(f"{server.url}/admin#/customers?q={email}")
    await expect(page.locator("#cust-rows tr", has_text=email)).to_have_count(1)
    assert "q=" not in page.url
    history = await page.evaluate("() => location.href")
    assert word not in history

    leaked = [u for u in urls if word in unquote(u) and not u.endswith(f"#/customers?q={email}")]
    assert leaked == [], leaked
    assert any("/api/admin/search/customers" in u for u in urls)
    assert any("/api/admin/search/conversations" in u for u in urls)
    await page.close()
    await socket.close()
    await visitor.aclose()
