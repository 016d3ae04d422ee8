"""A minimal WebSocket client on a bare asyncio Protocol, cheap per message, for the load generator.

`websockets` costs the client tens of microseconds per frame (a reader task, frame objects,
assembler queues, an await per send); on a 2-core machine that client competes with the server it
measures. This one does the opening handshake itself, masks each outgoing text frame with one XOR
of two integers and hands each incoming text frame to a plain callback straight from
`data_received`: no task, no await and no object per frame. It speaks only what the benchmark
needs (RFC 6455 text frames, ping/pong, close; no extensions, no subprotocols, 127.0.0.1 only) and
offers the part of `websockets`' ClientConnection that bench/load.py uses: `send`, `recv`,
`close`, `close_code`, and `on_text` to take frames by callback instead of `recv`.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import os
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
MAX_HEADER_BYTES = 16 * 1024


class RawClosed(Exception):
    """The connection is closed (as websockets' ConnectionClosed, for the callers' except)."""


class RawWebSocket(asyncio.Protocol):
    def __init__(self, request: bytes, key: bytes, max_size: int) -> None:
        self.request = request
        self.accept = base64.b64encode(hashlib.sha1(key + GUID).digest())  # noqa: S324 - RFC 6455
        self.max_size = max_size
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # a handshake that failed after its caller gave up: not worth a warning at exit
        self.opened.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.inbox: collections.deque[str] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.handler: Callable[[str], None] | None = None
        self.fragments: list[bytes] = []
        self.writable: asyncio.Future[None] | None = None
        self.outbox: list[bytes] = []  # frames written in this turn of the loop, sent together
        mask = os.urandom(4)
        self.mask = mask
        self.masks: dict[int, int] = {}  # payload length -> the mask repeated to it, as an int

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    self._fail(RuntimeError("handshake response too long"))
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[:end + 4]
            status = head[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in head[1:])}
            if len(status) < 2 or status[1] != "101":
                self._fail(RuntimeError(f"handshake refused: {head[0]}"))
                return
            if headers.get("sec-websocket-accept", "").encode() != self.accept:
                self._fail(RuntimeError("handshake: wrong Sec-WebSocket-Accept"))
                return
            self.upgraded = True
            if not self.opened.done():
                self.opened.set_result(None)
        at, size = 0, len(buf)
        while size - at >= 2:
            b0, b1 = buf[at], buf[at + 1]
            length, skip = b1 & 0x7F, 2
            if length == 126:
                if size - at < 4:
                    break
                length, skip = struct.unpack_from("!H", buf, at + 2)[0], 4
            elif length == 127:
                if size - at < 10:
                    break
                length, skip = struct.unpack_from("!Q", buf, at + 2)[0], 10
            if b1 & 0x80 or length > self.max_size:
                self._fail(RuntimeError("server frame masked or too big"))
                return
            if size - at < skip + length:
                break
            payload = bytes(buf[at + skip:at + skip + length])
            at += skip + length
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
        if at:
            del buf[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = 1006
        self._fail(RawClosed(f"closed {self.close_code}"))
        if not self.closed.done():
            self.closed.set_result(None)
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    # -- frames -------------------------------------------------------------------------------

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == 0x1 or opcode == 0x0:  # text, or the continuation of one
            if not fin:
                self.fragments.append(payload)
                return
            if self.fragments:
                payload = b"".join([*self.fragments, payload])
                self.fragments.clear()
            text = payload.decode()
            if self.handler is not None:
                self.handler(text)
            else:
                self.inbox.append(text)
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)
        elif opcode == 0x9:  # ping
            with contextlib.suppress(RawClosed):
                self._write(0xA, payload)
        elif opcode == 0x8:  # close: echo it, then the server closes the TCP connection
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            with contextlib.suppress(RawClosed):
                self._write(0x8, payload[:2])
        # pong and binary frames: nothing the benchmark uses

    def _write(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise RawClosed(f"closed {self.close_code}")
        n = len(payload)
        mask = self.masks.get(n)
        if mask is None:
            mask = int.from_bytes((self.mask * (n // 4 + 1))[:n], "big")
            if len(self.masks) < 4096:
                self.masks[n] = mask
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
        if not self.outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self.outbox += (head, self.mask, (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big"))

    def _flush(self) -> None:
        """One write (one system call) for every frame of this turn of the event loop: the
        kernel call is most of a small frame's cost to the client."""
        if self.outbox and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.outbox))
        self.outbox.clear()

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
            if self.transport is not None:
                self.transport.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- what bench/load.py calls -------------------------------------------------------------

    def write_text(self, text: str) -> None:
        """Queue a text frame for this turn's write, without waiting for the kernel's buffer."""
        self._write(0x1, text.encode())

    async def send(self, text: str) -> None:
        self._write(0x1, text.encode())
        if self.writable is not None:  # the kernel's buffer is full: wait as websockets would
            await self.writable

    async def recv(self) -> str:
        while not self.inbox:
            if self.closed.done():
                raise RawClosed(f"closed {self.close_code}")
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None
        return self.inbox.popleft()

    def on_text(self, handler: Callable[[str], None]) -> None:
        """Take every text frame by callback from now on, those already received first."""
        while self.inbox:
            handler(self.inbox.popleft())
        self.handler = handler

    async def wait_closed(self) -> None:
        await asyncio.shield(self.closed)

    async def close(self, wait_seconds: float = 2) -> None:
        if self.closed.done():
            return
        if self.close_code is None:
            try:
                self._write(0x8, struct.pack("!H", 1000))
            except RawClosed:
                pass
            else:
                self._flush()
                self.close_code = 1000
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), wait_seconds)
        except TimeoutError:
            pass
        if self.transport is not None:
            self.transport.close()


async def connect_raw(url: str, cookie: str = "", open_seconds: float = 30,
                      max_size: int = 2**20) -> RawWebSocket:
    """Open a ws://127.0.0.1:PORT/path connection; returns once the server answered 101."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname or not parts.port:
        raise ValueError(f"ws://host:port/path expected, not {url!r}")
    key = base64.b64encode(os.urandom(16))
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key.decode()}",
             "Sec-WebSocket-Version: 13"]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(loop.create_connection(
        lambda: RawWebSocket(request, key, max_size), parts.hostname, parts.port), open_seconds)
    try:
        await asyncio.wait_for(asyncio.shield(protocol.opened), open_seconds)
    except BaseException:
        if protocol.transport is not None:
            protocol.transport.close()
        raise
    return protocol
