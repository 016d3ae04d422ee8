"""Policy Markdown: what an admin publishes cannot put a script link in front of customers."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from chatserver.markup import render

from .support import Agent, Server

SCRIPT_LINKS = [
    "[refund](javascript:alert(document.cookie))",
    "[refund](JaVaScRiPt:alert(1))",
    "[refund](java\tscript:alert(1))",
    "[refund](&#106;avascript:alert(1))",
    "[refund](&#x6a;&#x61;vascript:alert(1))",
    "[refund](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[refund](vbscript:msgbox(1))",
    "[refund][1]\n\n[1]: javascript:alert(1)",
    "[refund](<javascript:alert(1)>)",
    "![x](data:image/svg+xml,<svg onload=alert(1)>)",
    "![x](https://tracker.example/pixel.png)",
]
HREF = re.compile(r"""(?:href|src)\s*=\s*["']?([^"' >]*)""", re.IGNORECASE)


def _targets(html: str) -> list[str]:
    return HREF.findall(html)


@pytest.mark.parametrize("source", SCRIPT_LINKS)
def test_script_and_data_links_lose_their_target(source: str) -> None:
    """javascript:, data:, vbscript: (however spelled) and remote images keep only their text."""
    html = render(source)
    assert _targets(html) == [], html
    assert "refund" in html or "x" in html


def test_ordinary_links_are_kept() -> None:
    """http, https, mailto and links within the site work as written."""
    html = render("[a](https://example.com/p) [b](mailto:dpo@example.com) [c](/cookies) "
                  "[d](#rights) ![logo](/static/logo.png)")
    assert _targets(html) == ["https://example.com/p", "mailto:dpo@example.com", "/cookies",
                              "#rights", "/static/logo.png"]


async def test_published_policy_carries_no_script_link(make_server: Callable[..., Server]
                                                       ) -> None:
    """A policy published with script links shows none, in /api/policy nor on /policy."""
    server = make_server()
    server.add_staff("boss", "admin")
    boss = await Agent(server, "boss").login()
    text = "# Policy\n\n" + "\n\n".join(SCRIPT_LINKS[:-4]) + "\n\n[ok](https://example.com)\n"
    published = await boss.http.post("/api/admin/policies", json={
        "version": "2.0", "effective_date": "2026-01-01", "summary": "links", "text": text})
    assert published.status_code == 200, published.text
    await boss.aclose()
    async with httpx.AsyncClient(base_url=server.url) as client:
        api = (await client.get("/api/policy")).json()
        page = (await client.get("/policy")).text
    assert api["version"] == "2.0"
    assert _targets(api["html"]) == ["https://example.com"]
    assert api["html"].count("refund") == len(SCRIPT_LINKS) - 4
    # The page's own favicon is the empty "data:," link; nothing else may use a script scheme.
    shown = [t.lower() for t in _targets(page) if t != "data:,"]
    assert "https://example.com" in shown
    assert not [t for t in shown if t.startswith(("javascript", "data:", "vbscript", "&#"))]
