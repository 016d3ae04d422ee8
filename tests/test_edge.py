"""The HTTP edge against a running server: what reaches the log, which hosts are served, and
what a redirect may say."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from .support import Server

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+\[\d+\]: ")


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


def test_a_foreign_host_is_refused_and_never_reflected(server: Server) -> None:
    """A Host not allowed gets 400 host_not_allowed on pages, JSON routes and the WebSocket
    handshake; an allowed one is served, and its redirects carry no host at all."""
    evil = {"Host": "evil.example"}
    for path in ("/admin/", "/api/policy", "/", "/agent"):
        response = httpx.get(server.url + path, headers=evil)
        assert response.status_code == 400, path
        assert response.json()["error"] == "host_not_allowed"
        assert "evil" not in response.headers.get("location", "")
    posted = httpx.post(server.url + "/api/consent", json={"policy_version": "1.01"},
                        headers=evil)
    assert posted.status_code == 400 and "set-cookie" not in posted.headers
    for host in ("evil.example:80", "127.0.0.1.evil.example", "localhost@evil.example",
                 "[::2]", "127.0.0.1 evil.example"):
        assert httpx.get(server.url + "/", headers={"Host": host}).status_code == 400, host
    assert httpx.get(server.url + "/healthz", headers=evil).status_code == 200  # load balancers
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"[::1]:{server.port}"):
        redirect = httpx.get(server.url + "/admin/", headers={"Host": host})
        assert redirect.status_code == 307, host
        assert redirect.headers["location"] == "/admin"


async def test_a_foreign_host_cannot_open_a_socket(server: Server) -> None:
    """The WebSocket handshake with a foreign Host is refused before anything is opened."""
    with pytest.raises(InvalidStatus) as refused:
        # Dial the server but name another host, as a forged Host header would.
        await connect("ws://evil.example/ws/visitor", host="127.0.0.1", port=server.port,
                      open_timeout=5)
    assert refused.value.response.status_code == 403


def test_allowed_hosts_setting_and_its_default(make_server: Callable[..., Server]) -> None:
    """CHATSERVER_ALLOWED_HOSTS names the hosts (a leading dot: a domain and its subdomains);
    left empty, the hosts of CHATSERVER_ALLOWED_ORIGINS join the loopback names."""
    listed = make_server(CHATSERVER_ALLOWED_HOSTS="chat.example.com,.corp.example")
    for host, status in [("chat.example.com", 200), ("chat.example.com:8443", 200),
                         ("CHAT.EXAMPLE.COM", 200), ("corp.example", 200),
                         ("help.corp.example", 200), ("evilcorp.example", 400),
                         ("chat.example.com.evil.example", 400), ("127.0.0.1", 400)]:
        assert httpx.get(listed.url + "/api/policy", headers={"Host": host}).status_code == \
            status, host
    derived = make_server(CHATSERVER_ALLOWED_ORIGINS="https://shop.example")
    for host, status in [("shop.example", 200), ("localhost", 200), ("www.shop.example", 400)]:
        assert httpx.get(derived.url + "/api/policy", headers={"Host": host}).status_code == \
            status, host
    assert "Answering for hosts: 127.0.0.1, ::1, localhost, shop.example" in derived.log()
