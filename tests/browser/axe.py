"""axe-core (bundled by the axe-playwright-python package) run on a page or a frame.

Serious and critical violations fail the tests, and so do three moderate rules every page must
keep: one level-one heading, one main landmark, and a way past repeated blocks. Other moderate and
minor findings are left to judgement. Frames are checked on their own (`iframes: False`): axe
would otherwise wait for a copy of itself inside each frame.
"""

from __future__ import annotations

from typing import Any

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Frame, Page

AXE = Axe()
BLOCKING = {"serious", "critical"}
REQUIRED_RULES = {"page-has-heading-one", "landmark-one-main", "bypass"}
OPTIONS = {"resultTypes": ["violations"], "iframes": False}


async def blocking_violations(target: Page | Frame, where: str) -> list[str]:
    """One line per failing violation: where, rule, impact, and the elements."""
    results = await AXE.run(target, options=OPTIONS)  # type: ignore[arg-type]
    found: list[dict[str, Any]] = results.response["violations"]
    lines = []
    for violation in found:
        if violation.get("impact") not in BLOCKING and violation["id"] not in REQUIRED_RULES:
            continue
        nodes = "; ".join(
            " ".join(node["target"]) + (
                f" ({node['any'][0]['message']})" if node.get("any") else "")
            for node in violation["nodes"][:5]
        )
        lines.append(f"{where}: {violation['id']} ({violation['impact']}): {nodes}")
    return lines
