"""The HTTP edge against a running server: what reaches the log, which hosts are served, and
what a redirect may say."""

from __future__ import annotations

import re
import time

import httpx

from .support import Server

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")


def _wait_for_log(server: Server, needle: str, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = server.log()
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_a_newline_in_the_path_cannot_forge_a_log_line(server: Server) -> None:
    """A %0A or %0D in the request path is logged encoded, on the request's own line: it cannot
    start a line that looks like another request."""
    forged = "2026-01-01 00:00:00,000 INFO chatserver.access: GET /admin 200 1.0ms"
    marker = f"forge{time.monotonic_ns()}"
    for raw in (f"/{marker}%0A{forged}", f"/{marker}%0D%0A{forged}", f"/{marker}%E2%80%A8x"):
        response = httpx.get(server.url + raw.replace(" ", "%20"))
        assert response.status_code == 404
    text = _wait_for_log(server, f"/{marker}%E2%80%A8x")
    assert "2026-01-01 00:00:00,000 INFO" not in [line[:28] for line in text.splitlines()]
    mine = [line for line in text.splitlines() if marker in line]
    assert len(mine) == 3, mine
    for line in mine:
        assert LOG_LINE.match(line), line
        assert "\r" not in line and "\u2028" not in line
    assert f"/{marker}%0A2026-01-01%2000:00:00" in mine[0]
