"""Policy Markdown to HTML that can carry no script: raw HTML escaped, links and images only to
places that are safe to follow.

The policy is written by an admin, but it is shown to every customer inside the widget and on
the policy page: a `javascript:` link there would run in the chat server's origin when clicked,
and a `data:` link would open a page of the author's choosing. Only http, https and mailto
links, and links within the site, keep their target; any other link becomes its plain text.
Images load only from the site itself (the pages load nothing from third parties).
"""

from __future__ import annotations

import functools
import html
import re
import xml.etree.ElementTree as ET  # noqa: S405 - builds markdown's own tree, parses nothing
from collections.abc import Callable

LINK_SCHEMES = {"http", "https", "mailto"}
# Browsers drop tabs and line breaks inside a URL and ignore leading blanks and controls, so
# "java\tscript:" is a javascript: URL: judge the scheme with those removed.
_IGNORED_IN_URL = re.compile(r"[\x00-\x20\x7f-\x9f]")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*):")


def _target(url: str) -> str:
    """The URL as a browser will judge it: character references decoded (the serializer keeps
    an entity it finds as it is), ignored characters removed."""
    for _ in range(3):
        url = html.unescape(url)
    return _IGNORED_IN_URL.sub("", url)


def _relative(target: str) -> bool:
    return _SCHEME.match(target) is None and ":" not in target.split("/", 1)[0]


def safe_link(url: str) -> bool:
    """A target within the site (a path, a query, a fragment) or with an allowed scheme."""
    target = _target(url)
    scheme = _SCHEME.match(target)
    return scheme.group(1).lower() in LINK_SCHEMES if scheme else _relative(target)


def local_image(url: str) -> bool:
    """An image from the site itself: a relative path, not another host (//host, /\\host)."""
    target = _target(url)
    return _relative(target) and not target.replace("\\", "/").startswith("//")


def _check_links(root: ET.Element) -> None:
    """Every <a> and <img> the Markdown produced: an unsafe target becomes plain text."""
    for parent in root.iter():
        for index, child in enumerate(list(parent)):
            if child.tag == "a" and not safe_link(child.get("href", "")):
                child.attrib.pop("href", None)
                child.tag = "span"
            elif child.tag == "img" and not local_image(child.get("src", "")):
                replacement = ET.Element("span")
                replacement.text = child.get("alt", "")
                replacement.tail = child.tail
                parent.remove(child)
                parent.insert(index, replacement)


@functools.cache
def _renderer() -> Callable[[str], str]:
    """markdown is imported on the first render, not at start-up: the server answers its first
    requests without it (bench/startup.py)."""
    import markdown
    from markdown.treeprocessors import Treeprocessor

    class SafeLinks(Treeprocessor):  # type: ignore[misc]  # markdown ships no types
        """Runs after inline parsing, so links made by inline patterns are seen."""

        def run(self, root: ET.Element) -> None:
            _check_links(root)

    class SafeLinksExtension(markdown.Extension):  # type: ignore[misc]
        def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 - markdown's name
            # Priority below the inline processor (20).
            md.treeprocessors.register(SafeLinks(md), "chatserver_safe_links", 1)

    def render(escaped: str) -> str:
        return str(markdown.markdown(escaped, extensions=["sane_lists", SafeLinksExtension()],
                                     output_format="html"))

    return render


def render(text: str) -> str:
    """Markdown to HTML with raw HTML neutralised and only safe link and image targets."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;")
    return _renderer()(escaped)
