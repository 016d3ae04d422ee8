"""The widget's pages keep the embed's look and open public pages where they can be read."""

from __future__ import annotations

import html
import re

import httpx

from .support import Server


def _hrefs(page: str, text: str) -> list[str]:
    """The href of every link whose text starts with `text`."""
    pattern = r'<a href="([^"]*)"[^>]*>\s*(?:&larr;\s*)?' + re.escape(text)
    return [html.unescape(h) for h in re.findall(pattern, page)]


async def test_account_page_returns_to_the_chat_with_its_title_and_colour(server: Server) -> None:
    """/widget hands title and colour to "Your data", and /account hands them back."""
    async with httpx.AsyncClient(base_url=server.url, headers={"Accept": "text/html"}) as client:
        widget = await client.get("/widget", params={"title": 'Ask "us" <now>', "color": "#0a7d5a"})
        [account_url] = set(_hrefs(widget.text, "Your data"))
        assert account_url == "/account?in=widget&title=Ask+%22us%22+%3Cnow%3E&color=%230a7d5a"
        account = await client.get(account_url)
        [back] = _hrefs(account.text, "Back to the chat")
        assert back == "/widget?title=Ask+%22us%22+%3Cnow%3E&color=%230a7d5a"
        again = await client.get(back)
        assert '<h1 id="w-title">Ask &#34;us&#34; &lt;now&gt;</h1>' in again.text
        assert 'data-color="#0a7d5a"' in again.text

        # A colour that is not one falls back to the default, on the way there and back.
        odd = await client.get("/account", params={"in": "widget", "color": "red;x"})
        [back] = _hrefs(odd.text, "Back to the chat")
        assert back == "/widget?title=Chat+with+us&color=%232357d9"
        # Opened on its own, the account page has no way back to a chat.
        assert _hrefs((await client.get("/account")).text, "Back to the chat") == []


async def test_chat_page_is_laid_out_as_a_page_and_its_account_link_comes_back(
    server: Server,
) -> None:
    """/chat is the chat laid out as a page of its own (not the embed's frame as it is); its
    "Your data" leads to /account, whose way back is /chat."""
    async with httpx.AsyncClient(base_url=server.url, headers={"Accept": "text/html"}) as client:
        chat = await client.get("/chat")
        assert '<body class="widget chat-page">' in chat.text
        assert '<body class="widget">' in (await client.get("/widget")).text
        [account_url] = set(_hrefs(chat.text, "Your data"))
        assert account_url == "/account?in=chat"
        assert _hrefs((await client.get(account_url)).text, "Back to the chat") == ["/chat"]


async def test_account_page_opens_public_pages_in_a_new_tab(server: Server) -> None:
    """The policy and cookies pages refuse framing, so the account page opens them in a tab."""
    async with httpx.AsyncClient(base_url=server.url, headers={"Accept": "text/html"}) as client:
        page = (await client.get("/account", params={"in": "widget"})).text
        links = re.findall(r'<a href="/(?:policy|cookies)"[^>]*>', page)
        assert len(links) == 4, links
        for link in links:
            assert 'target="_blank"' in link and 'rel="noopener"' in link, link
        policy = await client.get("/policy")
        assert policy.headers["x-frame-options"] == "DENY"  # why they cannot open in the frame
