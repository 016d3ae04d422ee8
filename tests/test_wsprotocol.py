"""The WebSocket guards below Starlette: protocol pings on the socket's budget, unparseable
opening requests refused at once, invalid UTF-8 closed without a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import struct
import time
from collections.abc import Callable

from .support import Server, Socket, Visitor, open_socket


async def _round_trip(s: Socket, tag: str) -> None:
    await s.send({"type": "message", "body": tag, "client_msg_id": tag})
    await s.wait_type("ack", client_msg_id=tag, timeout=10)


async def test_ping_flood_is_closed_4429_and_a_neighbour_loses_nothing(
    make_server: Callable[..., Server],
) -> None:
    """Protocol-level pings draw on the socket's frame budget: a flood of them ends in 4429,
    and another conversation's messages are all acknowledged and stored, in order, meanwhile.

    How quickly the neighbour's messages go through during such a flood is measured by
    `bench/flood.py --pings`, not here (a wall-clock bound failed on a busy CI machine)."""
    server = make_server()
    flooder_v, calm_v = await Visitor(server).start(), await Visitor(server).start(
        name="Calm", email="calm@example.com")
    flooder, calm = await flooder_v.socket(), await calm_v.socket()
    try:
        await flooder.wait_type("welcome")
        welcome = await calm.wait_type("welcome")
        await _round_trip(calm, "before")

        async def flood() -> None:
            try:
                for _ in range(20_000):
                    await flooder.ws.ping()  # not awaiting the pong: a flood
            except Exception:  # noqa: BLE001 - the server closed us, as it should
                return

        flooding = asyncio.get_running_loop().create_task(flood())
        for n in range(3):
            await _round_trip(calm, f"during{n}")
        assert await flooder.closed_code(timeout=10) == 4429
        await flooding
        await _round_trip(calm, "after")
        stored = server.query("SELECT body FROM messages WHERE conversation_id = ? AND "
                              "sender = 'visitor' ORDER BY seq", welcome["conversation_id"])
        assert [body for (body,) in stored] == ["before", "during0", "during1", "during2", "after"]
    finally:
        await calm.close()
        await flooder.close()
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


def _opening_request(server: Server, extra_headers: str) -> bytes:
    """A visitor socket's opening request, with `extra_headers` (each ending in CRLF)."""
    return (
        f"GET /ws/visitor HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra_headers}\r\n"
    ).encode()


def _raw_handshake(server: Server, extra_header: str) -> tuple[bytes, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(_opening_request(server, extra_header))
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


async def test_the_longest_message_comes_back_whole(server: Server) -> None:
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


# -- frames as a client may cut them: read by the server's own read path or by websockets' ----


def _client_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    """A client frame as RFC 6455 (5.2) lays it out, with a random mask."""
    length = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode,))
    bit = 0x80 if masked else 0
    if length < 126:
        head += bytes((bit | length,))
    elif length < 65536:
        head += bytes((bit | 126,)) + struct.pack("!H", length)
    else:
        head += bytes((bit | 127,)) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _message(tag: str, body: str | None = None) -> bytes:
    return json.dumps({"type": "message", "body": body or f"said {tag}",
                       "client_msg_id": tag}).encode()


class RawSocket:
    """A visitor's socket spoken byte by byte: the server's frames read as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: Server, v: Visitor) -> RawSocket:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(_opening_request(server, f"Cookie: {_cookies(v)}\r\n"))
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        raw = cls(reader, writer)
        assert (await raw.frame())[1]["type"] == "welcome"
        return raw

    async def frame(self) -> tuple[int, dict[str, object]]:
        """The server's next frame: its opcode and, for text, the JSON in it ({} otherwise)."""
        head = await asyncio.wait_for(self.reader.readexactly(2), 5)
        length = head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        payload = await self.reader.readexactly(length)
        opcode = head[0] & 0x0F
        return opcode, json.loads(payload) if opcode == 1 else {"data": payload}

    async def until(self, opcode: int, **fields: object) -> dict[str, object]:
        while True:
            got, frame = await self.frame()
            if got == opcode and all(frame.get(k) == v for k, v in fields.items()):
                return frame

    async def close_code(self) -> int:
        """Read to the server's close frame; the code in it."""
        frame = await self.until(8)
        data = frame["data"]
        assert isinstance(data, bytes)
        return int(struct.unpack("!H", data[:2])[0])

    async def send(self, data: bytes, *, pieces: list[int] | None = None) -> None:
        """Write `data` whole, or cut at `pieces` (offsets), each piece its own write."""
        cuts = [0, *(pieces or []), len(data)]
        for start, stop in zip(cuts, cuts[1:], strict=False):
            self.writer.write(data[start:stop])
            await self.writer.drain()
            if pieces:
                await asyncio.sleep(0.002)  # so that each piece arrives on its own

    async def aclose(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_frames_cut_and_joined_anywhere_read_the_same(server: Server) -> None:
    """Three messages and a ping between them, written in one piece, a byte at a time, and cut
    at random places: each time every message is acked in order and the ping answered, the
    16-bit length form included."""
    v = await Visitor(server).start()
    cutter = random.Random(13)
    for way in ("whole", "bytes", "random"):
        raw = await RawSocket.open(server, v)
        tags = [f"{way}-{i}" for i in range(3)]
        data = (_client_frame(1, _message(tags[0])) + _client_frame(9, b"are you there")
                + _client_frame(1, _message(tags[1], "x" * 300))
                + _client_frame(1, _message(tags[2])))
        pieces = {"whole": None, "bytes": list(range(1, len(data))),
                  "random": sorted(cutter.sample(range(1, len(data)), 12))}[way]
        await raw.send(data, pieces=pieces)
        acks = []
        pong = None
        while len(acks) < 3 or pong is None:
            opcode, frame = await raw.frame()
            if opcode == 10:
                pong = frame["data"]
            elif frame.get("type") == "ack":
                acks.append(frame["client_msg_id"])
        assert acks == tags and pong == b"are you there"
        await raw.aclose()
    await v.aclose()


async def test_a_message_in_fragments_is_read_whole_and_later_ones_too(server: Server) -> None:
    """A message sent as a text frame and a continuation is acked as one; so is the next,
    after websockets' parser has taken over reading the socket."""
    v = await Visitor(server).start()
    raw = await RawSocket.open(server, v)
    await raw.send(_client_frame(1, _message("before")))
    await raw.until(1, type="ack", client_msg_id="before")
    whole = _message("parts", "in two parts")
    await raw.send(_client_frame(1, whole[:20], fin=False) + _client_frame(0, whole[20:]))
    echoed = await raw.until(1, type="message", client_msg_id="parts")
    assert echoed["body"] == "in two parts"
    await raw.send(_client_frame(1, _message("after")))
    await raw.until(1, type="ack", client_msg_id="after")
    await raw.aclose()
    await v.aclose()


async def test_an_unmasked_client_frame_closes_1002(server: Server) -> None:
    """Clients must mask their frames (RFC 6455 5.1): an unmasked one ends the socket with a
    protocol error, whether it comes on its own or in one write after a good one."""
    v = await Visitor(server).start()
    raw = await RawSocket.open(server, v)
    await raw.send(_client_frame(1, _message("good")))
    await raw.until(1, type="ack", client_msg_id="good")
    await raw.send(_client_frame(1, _message("bad"), masked=False))
    assert await raw.close_code() == 1002
    await raw.aclose()
    raw = await RawSocket.open(server, v)
    await raw.send(_client_frame(1, _message("fine")) + _client_frame(1, _message("bad"),
                                                                       masked=False))
    assert await raw.close_code() == 1002
    await raw.aclose()
    await v.aclose()
