"""The WebSocket guards below Starlette: protocol pings on the socket's budget, unparseable
opening requests refused at once, invalid UTF-8 closed without a traceback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from .support import Server, Socket, Visitor, open_socket


async def _round_trip(s: Socket, tag: str) -> float:
    started = time.perf_counter()
    await s.send({"type": "message", "body": tag, "client_msg_id": tag})
    await s.wait_type("ack", client_msg_id=tag, timeout=10)
    return time.perf_counter() - started


async def test_ping_flood_is_closed_4429_and_a_neighbour_keeps_its_pace(
    make_server: Callable[..., Server],
) -> None:
    """Protocol-level pings draw on the socket's frame budget: a flood of them ends in 4429
    within moments, and another conversation's round trip stays quick meanwhile."""
    server = make_server()
    flooder_v, calm_v = await Visitor(server).start(), await Visitor(server).start(
        name="Calm", email="calm@example.com")
    flooder, calm = await flooder_v.socket(), await calm_v.socket()
    await flooder.wait_type("welcome")
    await calm.wait_type("welcome")
    baseline = await _round_trip(calm, "before")

    async def flood() -> None:
        try:
            for _ in range(20_000):
                await flooder.ws.ping()  # not awaiting the pong: a flood
        except Exception:  # noqa: BLE001 - the server closed us, as it should
            return

    flooding = asyncio.get_running_loop().create_task(flood())
    during = [await _round_trip(calm, f"during{n}") for n in range(3)]
    code = await flooder.closed_code(timeout=10)
    await flooding
    assert code == 4429
    assert max(during) < max(2.0, baseline * 20), (baseline, during)
    await calm.close()
    for v in (flooder_v, calm_v):
        await v.aclose()


async def test_ordinary_pings_are_answered(make_server: Callable[..., Server]) -> None:
    """A client's keepalive pings, well within the budget, get their pongs."""
    server = make_server()
    v = await Visitor(server).start()
    s = await v.socket()
    await s.wait_type("welcome")
    for _ in range(5):
        latency = await asyncio.wait_for(await s.ws.ping(), 5)
        assert latency >= 0
    await s.close()
    await v.aclose()


def _raw_handshake(server: Server, extra_header: str) -> tuple[bytes, float]:
    request = (
        f"GET /ws/visitor HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra_header}\r\n"
    )
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(request.encode())
        answer = b""
        try:
            while chunk := conn.recv(4096):
                answer += chunk
        except TimeoutError:
            pass
    return answer, time.monotonic() - started


def test_overlong_header_line_is_refused_at_once(server: Server) -> None:
    """A header line over 8 KiB in a WebSocket opening request gets 431 and the connection
    closes, instead of hanging until the client gives up."""
    answer, took = _raw_handshake(server, "X-Long: " + "a" * 10_000 + "\r\n")
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert took < 2


def test_too_many_headers_are_refused_at_once(server: Server) -> None:
    """More headers than websockets accepts: 431 at once."""
    answer, took = _raw_handshake(server, "".join(f"X-H{n}: v\r\n" for n in range(150)))
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert took < 2


async def test_invalid_utf8_closes_1007_with_one_log_line(make_server: Callable[..., Server]
                                                          ) -> None:
    """A text frame that is not UTF-8 closes the socket with 1007; the log gets one line saying
    so, no traceback."""
    server = make_server()
    v = await Visitor(server).start()
    s = await open_socket(server, "/ws/visitor", _cookies(v))
    await s.wait_type("welcome")
    s.ws.protocol.send_text(b"\xff\xfe\xfd")
    s.ws.send_data()
    assert await s.closed_code() == 1007
    await v.aclose()
    log = server.log()
    assert "Traceback" not in log and "UnicodeDecodeError" not in log
    assert log.count("not UTF-8 (1007)") == 1


def _cookies(v: Visitor) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in v.http.cookies.jar)


def test_text_headers_are_the_ones_websockets_writes() -> None:
    """The direct text path writes frame headers itself: each length form (7-bit, 16-bit,
    64-bit) as websockets' own serializer writes it for a server."""
    from websockets.frames import Frame, Opcode

    from chatserver.wsprotocol import text_header

    for length in (0, 1, 125, 126, 127, 4000, 65535, 65536, 200_000):
        data = b"x" * length
        assert text_header(length) + data == Frame(Opcode.TEXT, data).serialize(mask=False)


async def test_the_longest_message_arrives_whole_on_both_sides(server: Server) -> None:
    """A body of the most characters allowed, four bytes each in UTF-8 (a frame of 16 KB, the
    16-bit length form), is acked and reaches the visitor's own socket intact."""
    v = await Visitor(server).start()
    s = await v.socket()
    await s.wait_type("welcome")
    body = "\U0001F600" * 4000
    await s.send({"type": "message", "body": body, "client_msg_id": "long"})
    await s.wait_type("ack", client_msg_id="long")
    echoed = await s.wait_type("message", client_msg_id="long")
    await s.close()
    await v.aclose()
    assert echoed["body"] == body
