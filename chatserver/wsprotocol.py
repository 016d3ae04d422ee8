"""The WebSocket connection below Starlette: uvicorn's sans-I/O protocol, with three guards.

uvicorn handles protocol-level frames before the application sees anything, so these live here,
at the one depth where they can be enforced:

- Pings are answered without limit by uvicorn, and each answer is a write: a flood of them from
  one client costs every other connection its share of the loop. Here each ping is charged to the
  socket's own rate budget, the one its frames draw on (the application hangs its charge function
  on a `PingGate` in the scope); over the budget pings go unanswered and the application closes
  the socket with 4429.
- An opening request that websockets cannot parse (a header line over 8 KiB, more than 128
  headers, a request line too long) gets its prepared HTTP error answer (431, 414) and the
  connection closes at once, where uvicorn left it hanging.
- A text frame that is not UTF-8 closes the socket with 1007 and one log line, not a traceback.

And once the handshake is answered, the opening request and its answer are let go (memory).

The protocol also hangs itself in the scope (`LINK`) so the socket handlers can write a frame and
read the next one directly, where the ASGI path goes through Starlette's state checks, its
exception wrapper and an await per frame; frames written that way in one turn of the event loop
leave in one write (bench/RESULTS.md section 13 has what each bought). The ASGI path stays for
everything but text frames.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State
from websockets.server import ServerProtocol

log = logging.getLogger("chatserver.sockets")

PING_GATE = "chatserver.ping_gate"  # the key of the gate in scope["extensions"]
LINK = "chatserver.link"  # the key of the protocol itself, for its direct text path
CLOSE_INVALID_DATA = 1007
try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

# The fast read path relies on websockets' sans-I/O attributes as of version 15; with another
# release that lacks them, every frame takes websockets' own path.
FAST_READS = all(hasattr(ServerProtocol(), name) for name in (
    "current_size", "max_message_size", "reader", "state"))


class PingGate:
    """Set `charge` to a function that takes one ping from the socket's budget: True while
    within it. Until it is set (the socket is not yet accepted) pings are answered."""

    __slots__ = ("charge",)

    def __init__(self) -> None:
        self.charge: Callable[[], bool] | None = None


class Inbox:
    """uvicorn's receive queue (put_nowait, get, empty) without asyncio.Queue's three deques:
    an idle socket holds no deque, only the one future its reader waits on. One reader: the
    socket's receive loop."""

    __slots__ = ("_items", "_waiter", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop  # asked for once: get_running_loop() costs a getpid call on 3.11
        self._items: deque[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0


class Writable:
    """uvicorn's `writable` flag (set, clear, is_set, wait) without asyncio.Event's deque:
    set nearly always, so waiters are rare and their list is made only for them."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter
        return True


def text_header(length: int) -> bytes:
    """The header of a final, unmasked text frame of `length` bytes (RFC 6455, 5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


class GuardedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol with the guards described above; pass the class
    to uvicorn as `ws=`."""

    conn: ServerProtocol

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.ping_gate = PingGate()
        # Lighter stand-ins for uvicorn's asyncio.Queue and asyncio.Event: about 3 KiB less
        # per open socket (bench/sockets.py).
        self.queue = Inbox(self.loop)  # type: ignore[assignment]
        self.writable = Writable()  # type: ignore[assignment]
        self.flush_due = False  # a drain of the direct text path's frames is scheduled
        # Reading frames here: None while not, else the start of a frame that has not fully
        # arrived (b"" for none).
        self.fast: bytes | None = None
        # Until the handshake completes: the last bytes received ended an HTTP request. Cleared
        # for good when frames are left to websockets.
        self.clean_end = False

    def data_received(self, data: bytes) -> None:
        if self.fast is None and self._may_read_fast():
            self.fast = b""
        if self.fast is not None:
            self._receive_fast(data)
            return
        super().data_received(data)
        if not self.handshake_complete:
            self.clean_end = data.endswith(b"\r\n\r\n")
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            self._refuse_handshake()

    def _may_read_fast(self) -> bool:
        """Whether websockets' parser is known to wait at the start of a frame: the opening
        request, answered, took every byte received (clients send nothing more before the
        answer, RFC 6455 4.1), and frames have not been left to websockets for good."""
        return (FAST_READS and self.handshake_complete and self.clean_end
                and not self.conn.reader.buffer and self.conn.state is State.OPEN)

    # -- the fast read path --------------------------------------------------------------

    def _receive_fast(self, data: bytes) -> None:
        """Read complete, final, masked text frames here; hand every other frame to websockets
        whole, so that its parser always waits at a frame boundary; keep a frame that has not
        fully arrived until it has. websockets' parser and uvicorn's events cost 8% of the
        event loop's time for what is, nearly always, one short text frame."""
        if self.fast:
            data = self.fast + data
            self.fast = b""
        conn, end = self.conn, len(data)
        limit = conn.max_message_size
        pos = 0
        while pos < end:
            if conn.state is not State.OPEN or self.close_sent or conn.current_size is not None:
                break  # closing, or a message in fragments: websockets' to handle
            second = data[pos + 1] if end - pos > 1 else 0
            length, head = second & 0x7F, 2
            if length == 126:
                head = 4
            elif length == 127:
                head = 10
            if end - pos >= head > 2:
                length = int.from_bytes(data[pos + 2:pos + head], "big")
            if second & 0x80:
                head += 4
            if limit is not None and length > limit:
                break  # websockets refuses it (1009)
            stop = pos + head + length
            if stop > end:  # the rest of this frame (or of its header) is on its way
                self.fast = data[pos:]
                return
            first = data[pos]
            if first != 0x81 or not second & 0x80:  # not a final masked text frame
                super().data_received(data[pos:stop])
                pos = stop
                continue
            payload = apply_mask(data[pos + head:stop], data[pos + head - 4:pos + head])
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                break  # websockets' path closes it (1007)
            pos = stop
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
            if not self.read_paused:  # as uvicorn does: read on once the app took it
                self.read_paused = True
                self.transport.pause_reading()
        if pos < end:  # anything unusual: websockets from here on, for good
            self.fast, self.clean_end = None, False
            super().data_received(data[pos:])

    def _refuse_handshake(self) -> None:
        # websockets has prepared the answer (431, 414, or an end of stream for garbage).
        self.handshake_initiated = True
        self.handshake_complete = True
        self.close_sent = True
        reason = type(self.conn.handshake_exc).__name__
        log.info("refused a WebSocket opening request that could not be parsed (%s)", reason)
        output = b"".join(self.conn.data_to_send())
        if output and not self.transport.is_closing():
            self.transport.write(output)
        self.transport.close()

    def handle_connect(self, event: object) -> None:
        super().handle_connect(event)  # type: ignore[arg-type]
        scope = getattr(self, "scope", None)
        if scope is not None:  # the app task is created but has not run yet
            scope["extensions"][PING_GATE] = self.ping_gate
            scope["extensions"][LINK] = self

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # The opening request and the 101 answer (their headers parsed twice over) are
            # done with: with 10,000 open sockets they were about 4 KiB each (bench/sockets.py).
            # websockets' parser keeps the request object itself: its headers are emptied.
            self.request.headers.clear()
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]

    # -- the direct text path (LINK) ---------------------------------------------------------

    def send_text_now(self, text: str) -> bool:
        """Write a text frame now, without awaiting; False when it cannot go out this way (not
        accepted yet, closing or closed, or the transport's buffer over its high-water mark):
        then the caller takes the ASGI path, which waits or raises as it should."""
        if (self.close_sent or self.disconnected or not self.handshake_complete
                or self.response is not None or not self.writable.is_set()):
            return False
        conn = self.conn
        if conn.state is not State.OPEN:  # the client's close came first
            return False
        data = text.encode()
        if conn.extensions or conn.expect_continuation_frame:
            try:
                conn.send_text(data)
            except InvalidState:
                return False
        else:
            # The frame as websockets would write it (FIN, text, unmasked from a server, no
            # extension), its header made here: websockets' Frame and its checks and BytesIO
            # cost about 1 us a frame, three frames a message (an ack, two copies).
            conn.writes.append(text_header(len(data)))
            conn.writes.append(data)
        # The frame waits in the connection's output until the end of this turn of the loop, so
        # that the frames one socket gets in a turn (acks and messages of a committed batch) go
        # out in one write system call. Every other send drains that same output first, in order.
        if not self.flush_due:
            self.flush_due = True
            self.loop.call_soon(self._flush_output)
        return True

    def _flush_output(self) -> None:
        self.flush_due = False
        output = self.conn.data_to_send()
        if output and not self.transport.is_closing():
            self.transport.write(b"".join(output))

    def hang_up(self) -> None:
        """End the application's receive loop as a lost connection would (a close the client
        never answered); uvicorn closes the transport once the application returns."""
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})

    def handle_ping(self) -> None:
        charge = self.ping_gate.charge
        if self.close_sent or (charge is not None and not charge()):
            # websockets queued the pong already: drop it. The application is closing the
            # socket (4429); anything else queued now goes out with the close.
            self.conn.data_to_send()
            return
        super().handle_ping()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError:
                self.frames = []
                log.info("closed a socket that sent a text frame that is not UTF-8 (1007)")
                if self.conn.state is State.OPEN:
                    self.conn.send_close(CLOSE_INVALID_DATA, "invalid UTF-8")
                    self.handle_parser_exception()
                return
        super().send_receive_event_to_app()
