"""Slow, idle and too many HTTP connections, against a running server with raw sockets.

The attacks pace themselves (a header byte now and then) as a slowloris does; every wait for the
server is a poll with a deadline."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from chatserver.logfilter import RepeatFilter
from chatserver.serving import Capacity

from .support import Server, Socket

OTHER_ADDRESS = "127.0.0.2"  # loopback too, but not a trusted proxy: per-address caps apply


@pytest.fixture
def opened() -> Iterator[list[socket.socket]]:
    """Raw sockets a test opens, all closed when it ends, passed or failed."""
    sockets: list[socket.socket] = []
    yield sockets
    for s in sockets:
        s.close()


def _dial(server: Server, opened: list[socket.socket], source: str = "127.0.0.1"
          ) -> socket.socket:
    s = socket.socket()
    opened.append(s)
    s.bind((source, 0))
    s.connect(("127.0.0.1", server.port))
    s.setblocking(False)
    return s


def _ended(s: socket.socket, got: dict[socket.socket, bytes]) -> bool:
    """True once the server closed `s`; what it said first is kept in `got`."""
    try:
        data = s.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    if data:
        got[s] = got.get(s, b"") + data
        return False
    return True


def _log_lines(server: Server) -> int:
    return len(server.log().splitlines())


def test_slow_headers_are_dropped_in_time_while_others_are_served(
        make_server: Callable[..., Server], opened: list[socket.socket]) -> None:
    """150 connections that trickle their headers a byte at a time are closed (408) within the
    header timeout, while a normal client is served throughout; the log gains a few lines, not
    one per connection."""
    server = make_server(CHATSERVER_HEADER_TIMEOUT_SECONDS="2")
    before = _log_lines(server)
    started = time.monotonic()
    slow = [_dial(server, opened) for _ in range(150)]
    for s in slow:
        s.send(b"GET /api/policy HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: ")
    got: dict[socket.socket, bytes] = {}
    open_ = set(slow)
    served = []
    while open_ and time.monotonic() - started < 8:
        for s in list(open_):
            if _ended(s, got):
                open_.discard(s)
                continue
            try:
                s.send(b"a")  # one more byte, never the end of the headers
            except OSError:
                open_.discard(s)
        if time.monotonic() - started < 1.5:  # while all of them are held
            began = time.monotonic()
            response = httpx.get(server.url + "/api/policy", timeout=5)
            served.append((response.status_code, time.monotonic() - began))
        time.sleep(0.2)  # the attacker's pace
    elapsed = time.monotonic() - started
    assert not open_, f"{len(open_)} slow connections still open after {elapsed:.1f} s"
    assert elapsed < 2 + 4
    assert served and all(status == 200 and took < 1.5 for status, took in served), served
    assert sum(b"408 Request Timeout" in data for data in got.values()) >= 140
    assert _log_lines(server) - before < 30
    for s in slow:
        s.close()


def test_idle_connections_are_closed(make_server: Callable[..., Server],
                                     opened: list[socket.socket]) -> None:
    """A connection that never sends a byte closes at the header timeout, without a word; an
    idle keep-alive after a response closes at the keep-alive timeout."""
    server = make_server(CHATSERVER_HEADER_TIMEOUT_SECONDS="1.5",
                         CHATSERVER_KEEPALIVE_SECONDS="0.5")
    silent = _dial(server, opened)
    kept = _dial(server, opened)
    kept.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    got: dict[socket.socket, bytes] = {}
    closed_at: dict[socket.socket, float] = {}
    started = time.monotonic()
    while len(closed_at) < 2 and time.monotonic() - started < 6:
        for s in (silent, kept):
            if s not in closed_at and _ended(s, got):
                closed_at[s] = time.monotonic() - started
        time.sleep(0.05)
    assert set(closed_at) == {silent, kept}
    assert b"200 OK" in got[kept] and kept not in got or got[kept].count(b"HTTP/1.1") == 1
    assert closed_at[kept] < 1.4  # the keep-alive timeout, well before the header one
    assert 1.4 <= closed_at[silent] < 3.5
    assert silent not in got  # an unused connection is closed quietly
    for s in (silent, kept):
        s.close()


def test_a_slow_body_is_dropped_quietly(make_server: Callable[..., Server],
                                        opened: list[socket.socket]) -> None:
    """A body that stops arriving is cut at the body timeout with 408; the handler waiting for
    it ends without an error in the log."""
    server = make_server(CHATSERVER_BODY_TIMEOUT_SECONDS="1")
    s = _dial(server, opened)
    s.send(b"POST /api/consent HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
           b"\r\nContent-Length: 100\r\n\r\n{\"policy_")
    got: dict[socket.socket, bytes] = {}
    started = time.monotonic()
    while not _ended(s, got) and time.monotonic() - started < 5:
        time.sleep(0.05)
    assert time.monotonic() - started < 3
    assert b"408 Request Timeout" in got.get(s, b"")
    s.close()
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert "unhandled" not in server.log() and "Traceback" not in server.log()


async def test_connection_caps(make_server: Callable[..., Server],
                               opened: list[socket.socket]) -> None:
    """Past CHATSERVER_MAX_CONNECTIONS_PER_IP one address gets 503 at once while others are
    served; closed connections (WebSocket handshakes included) free their places; past
    CHATSERVER_MAX_CONNECTIONS everyone gets 503; refusals log a few lines, not one each."""
    server = make_server(CHATSERVER_MAX_CONNECTIONS_PER_IP="10", CHATSERVER_MAX_CONNECTIONS="40")
    before = _log_lines(server)
    held = [_dial(server, opened, OTHER_ADDRESS) for _ in range(25)]
    got: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + 5
    while sum(s in got for s in held) < 15 and time.monotonic() < deadline:
        for s in held:
            _ended(s, got)
        await asyncio.sleep(0.05)
    refused = [s for s in held if s in got]
    assert len(refused) == 15
    answer = got[refused[0]]
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "too_many_connections"
    async with httpx.AsyncClient() as client:  # another address is served meanwhile
        assert (await client.get(server.url + "/api/policy")).status_code == 200
    for s in held:
        s.close()

    # Places are given back: WebSockets (no cookie: closed 4401 once open), then requests.
    for _ in range(12):
        ws = await connect(server.ws_url + "/ws/visitor", open_timeout=5,
                           local_addr=(OTHER_ADDRESS, 0))
        assert await Socket(ws).closed_code() == 4401
    transport = httpx.AsyncHTTPTransport(local_address=OTHER_ADDRESS)
    async with httpx.AsyncClient(transport=transport) as other:
        for _ in range(12):
            response = await other.get(server.url + "/api/policy",
                                       headers={"Connection": "close"})
            assert response.status_code == 200

    everyone = [_dial(server, opened) for _ in range(45)]
    deadline = time.monotonic() + 5
    while sum(s in got for s in everyone) < 5 and time.monotonic() < deadline:
        for s in everyone:
            _ended(s, got)
        await asyncio.sleep(0.05)
    assert sum(s in got and got[s].startswith(b"HTTP/1.1 503") for s in everyone) == 5
    for s in everyone:
        s.close()
    assert _log_lines(server) - before < 30


def test_a_flood_past_the_open_file_limit_neither_stops_nor_floods_the_server(
        make_server: Callable[..., Server], monkeypatch: pytest.MonkeyPatch,
        opened: list[socket.socket]) -> None:
    """With only 256 file descriptors, 400 silent connections used to stop the server accepting
    and write a traceback per failed accept. Now the excess gets 503 at once and the rest time
    out: a request is answered during the flood and served after it, and the log gains a few
    lines, not one (or a traceback) per connection."""
    original = subprocess.Popen

    def limited(*args: Any, **kwargs: Any) -> Any:
        kwargs["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        return original(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", limited)
    server = make_server(CHATSERVER_HEADER_TIMEOUT_SECONDS="3")
    monkeypatch.undo()
    before = _log_lines(server)
    flood = []
    for _ in range(400):
        s = socket.socket()
        opened.append(s)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", server.port))
        flood.append(s)
    began = time.monotonic()
    answer = httpx.get(server.url + "/healthz", timeout=5)  # answered, not left hanging
    assert answer.status_code in {200, 503} and time.monotonic() - began < 5
    got: dict[socket.socket, bytes] = {}
    # Those the server accepted end within the header timeout. (Any the kernel's full accept
    # queue never handed over stay half-open on the client's side until the kernel gives up.)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        for s in flood:
            _ended(s, got)
        time.sleep(0.1)
    assert any(data.startswith(b"HTTP/1.1 503 ") for data in got.values())
    began = time.monotonic()
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    assert time.monotonic() - began < 2
    assert _log_lines(server) - before < 40, server.log()[-3000:]
    assert "Traceback" not in server.log()
    for s in flood:
        s.close()


def test_repeated_log_lines_are_counted_not_written() -> None:
    """A line repeated within the window passes `burst` times; the next one after the window
    says how many were dropped. Other lines are not held back."""
    now = [0.0]
    repeat = RepeatFilter(burst=3, window=60, clock=lambda: now[0])

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("chatserver.connections", logging.WARNING, __file__, 1, msg,
                                 args, None)

    passed = [repeat.filter(record("refused a connection: it would exceed %s", "x"))
              for _ in range(1000)]
    assert passed.count(True) == 3
    assert repeat.filter(record("another line"))
    access = [repeat.filter(logging.LogRecord("chatserver.access", logging.INFO, __file__, 1,
                                              "%s %s %s %.1fms", ("GET", "/", 200, 1.0), None))
              for _ in range(100)]
    assert all(access)  # one line per request answered, always
    now[0] = 61
    later = record("refused a connection: it would exceed %s", "x")
    assert repeat.filter(later)
    assert "997 more like this were not logged" in later.getMessage()


def test_connection_cap_fits_the_open_file_limit() -> None:
    """The cap leaves descriptors for files and a burst of accepts; without a limit it is the
    setting."""
    assert Capacity.fit(4096, 1024) == Capacity(768, 128)
    assert Capacity.fit(4096, 256) == Capacity(128, 64)
    assert Capacity.fit(4096, 1 << 20) == Capacity(4096, 2048)
    assert Capacity.fit(100, 20000) == Capacity(100, 2048)
    assert Capacity.fit(4096, None) == Capacity(4096, 2048)
