"""One open socket's plumbing: its bounded send queue, its receive loop with an idle timeout,
its rate limits, and the polite refusal.

Each socket gets a `Peer`: a bounded queue drained by its own sender task, so a slow reader only
ever delays itself; when its queue is full it is disconnected (close 1013) and resumes later from
storage. Replays are sent directly, under the same lock, so a large history exerts backpressure on
the socket that asked for it instead of overflowing its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from . import metrics, protocol
from .errors import ChatError
from .hub import for_visitor
from .limits import Limits
from .web.common import client_ip
from .wsprotocol import LINK, PING_GATE, GuardedWebSocketProtocol

log = logging.getLogger("chatserver.sockets")
CLOSE_TOO_SLOW = 1013
CLOSE_IDLE = 1001
CLOSE_RATE_LIMITED = 4429
# Frames that are not stored cost less than messages against the same buckets.
CHEAP_FRAME_COST = 0.25


class Peer:
    """One open socket's outgoing side.

    An idle socket holds no task and no queue object: the sender task is started by the first
    frame queued and ends when the queue is empty (with 10,000 open sockets, a parked task, an
    asyncio.Queue and their futures each cost a few KiB per socket; bench/sockets.py)."""

    __slots__ = ("ws", "link", "queue_size", "queue", "lock", "closing", "close_code",
                 "_sender", "_closer", "on_sent")

    def __init__(self, ws: WebSocket, queue_size: int) -> None:
        self.ws = ws
        # The protocol's direct text path, when served by ours (serving.py): a frame with
        # nothing queued before it is written at once, without a task, a lock or an await.
        self.link: GuardedWebSocketProtocol | None = ws.scope.get("extensions", {}).get(LINK)
        self.queue_size = queue_size
        self.queue: deque[str] | None = None  # made by the first frame queued
        self.lock = asyncio.Lock()
        self.closing = False
        self.close_code: int | None = None
        self._sender: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None
        # Told of each frame once the socket took it (a visitor's delivered replies count as
        # seen); must not raise or block.
        self.on_sent: Callable[[str], None] | None = None

    def send(self, text: str) -> None:
        """Queue a frame without waiting; safe to call from broadcast listeners."""
        if self.closing:
            return
        if self.queue is None:
            link = self.link
            if link is not None and not self.lock.locked() and link.send_text_now(text):
                if self.on_sent is not None:
                    self.on_sent(text)
                return
            self.queue = deque()
        elif len(self.queue) >= self.queue_size:
            log.info("dropping a socket whose send queue is full")
            self.close(CLOSE_TOO_SLOW, "too far behind; reconnect and resume")
            return
        self.queue.append(text)
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    def send_frame(self, frame: dict[str, Any]) -> None:
        self.send(protocol.dump(frame))

    async def replay(self, frames: list[dict[str, Any]]) -> None:
        async with self.lock:
            # What was queued before the replay was decided on goes out before it: a client
            # must never see a live frame that the replay already passed (a repeat out of order).
            queue = self.queue
            while queue:
                await self._write(queue.popleft())
            for frame in frames:
                await self._write(protocol.dump(frame))

    async def _write(self, text: str) -> None:
        link = self.link
        if link is None or not link.send_text_now(text):
            await self.ws.send_text(text)
        if self.on_sent is not None:
            self.on_sent(text)

    def close(self, code: int, reason: str = "") -> None:
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        self._closer = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        # Let what is queued go out first (an error frame before a 4429, say), briefly.
        sender = self._sender
        if sender is not None:
            await asyncio.wait({sender}, timeout=1.0)
            sender.cancel()
        try:
            async with self.lock:
                await self.ws.close(code, reason)
        except Exception:  # already closed by the other side
            log.debug("close after disconnect", exc_info=True)

    async def _send_loop(self) -> None:
        queue = self.queue
        assert queue is not None
        try:
            while queue:
                async with self.lock:
                    if not queue:  # a replay took the lock and sent what was left
                        break
                    await self._write(queue.popleft())
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away; the receive loop notices and cleans up
            log.debug("send failed", exc_info=True)
            self.closing = True
        finally:
            self._sender = None  # the next frame starts a new one, and a new queue
            self.queue = None

    async def finish(self) -> None:
        """After the receive loop: let a close we started complete, then stop sending."""
        self.closing = True
        if self._closer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._closer, 5)
        if self._sender is not None:
            self._sender.cancel()


class Pipeline:
    """Messages of one socket in flight at once: one queue per conversation, worked through in
    order by a task of its own, so each conversation's messages are stored (and acked) in the
    order they were sent while messages for different conversations share a group commit instead
    of waiting one after another. At most `limit` in flight: past it, the socket reads no further
    (backpressure). Each job answers its own errors; one that raises anyway closes the socket
    (1011), as an error in the receive loop would."""

    def __init__(self, peer: Peer, limit: int) -> None:
        self.peer = peer
        self.limit = limit
        self._queues: dict[str, deque[Callable[[], Awaitable[None]]]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._count = 0
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def add(self, key: str, job: Callable[[], Awaitable[None]]) -> None:
        while self._count >= self.limit:
            self._room.clear()
            await self._room.wait()
        self._count += 1
        self._idle.clear()
        queue = self._queues.get(key)
        if queue is not None:  # its worker is running: it takes this one in turn
            queue.append(job)
            return
        self._queues[key] = deque((job,))
        worker = asyncio.get_running_loop().create_task(self._work(key))
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    async def _work(self, key: str) -> None:
        queue = self._queues[key]
        try:
            while queue:
                try:
                    await queue[0]()  # left in the queue while it runs: add() goes behind it
                except Exception:
                    log.exception("a pipelined frame failed")
                    self.peer.close(1011, "internal error")
                queue.popleft()
                self._done(1)
        finally:  # cancelled (shutdown): what is left will not run, and nobody may wait on it
            self._done(len(queue))
            queue.clear()
            del self._queues[key]

    def _done(self, count: int) -> None:
        self._count -= count
        self._room.set()
        if not self._count:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until nothing is in flight (before a frame that must follow them all)."""
        await self._idle.wait()


async def refuse(ws: WebSocket, exc: ChatError) -> None:
    """Accept only to explain: an error frame and a close code the client can act on."""
    if exc.status == 429:
        metrics.rate_limited(exc.code)
    await ws.accept()
    await ws.send_text(protocol.dump(protocol.error(exc.code, exc.message)))
    await ws.close(exc.close_code or 1008, exc.code)


async def frames(ws: WebSocket, peer: Peer, idle_seconds: float) -> AsyncIterator[str | bytes]:
    """Yield each text frame; binary frames come as bytes. Ends on disconnect; a socket silent
    for `idle_seconds` (clients ping every 25) is closed with 1001, and one whose close goes
    unanswered for as long again ends too."""
    link = peer.link
    if link is None:  # another server than ours: through ASGI, a timeout per frame
        async for frame in _frames_via_asgi(ws, peer, idle_seconds):
            yield frame
        return
    idle = IdleTimer(idle_seconds, lambda: _on_idle(peer, link))
    try:
        while True:
            message = await link.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            received = text if isinstance(text, str) else message.get("bytes") or b""
            # Silence is counted only while waiting for the client, as around each receive
            # before: not while a frame is handled (backpressure from a slow store, say).
            idle.busy = True
            yield received  # type: ignore[misc]
            idle.busy = False
            idle.touch()
    finally:
        idle.cancel()


def _on_idle(peer: Peer, link: GuardedWebSocketProtocol) -> None:
    if peer.closing:  # our close went unanswered for a whole idle period
        link.hang_up()
    else:
        peer.close(CLOSE_IDLE, "idle")


class IdleTimer:
    """Calls `on_idle` once `seconds` pass without a `touch`, and again after each further such
    period. One timer per socket, re-armed only when it fires: touching it costs a clock read,
    where a timeout around each receive cost a timer and three loop look-ups per frame."""

    __slots__ = ("seconds", "on_idle", "last", "busy", "_loop", "_handle")

    def __init__(self, seconds: float, on_idle: Callable[[], None]) -> None:
        self.seconds = seconds
        self.on_idle = on_idle
        self.busy = False  # while set, the clock does not run out
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self.last + seconds,
                                                                      self._check)

    def touch(self) -> None:
        self.last = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        if self.busy:
            self.last = now
        if self.last + self.seconds <= now:
            self.last = now
            self.on_idle()
        if self._handle is not None:  # on_idle may have cancelled it
            self._handle = self._loop.call_at(self.last + self.seconds, self._check)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


async def _frames_via_asgi(ws: WebSocket, peer: Peer, idle_seconds: float
                           ) -> AsyncIterator[str | bytes]:
    while True:
        try:
            # asyncio.timeout, not wait_for: wait_for wraps each wait in a task of its own, a
            # few hundred bytes more on every idle socket.
            async with asyncio.timeout(idle_seconds):
                message = await ws.receive()
        except TimeoutError:
            if peer.closing:
                return
            peer.close(CLOSE_IDLE, "idle")
            continue
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        yield text if text is not None else (message.get("bytes") or b"")


class Limiter:
    """A socket's own bucket and, for visitors, its IP's shared one; over either: an error
    frame, then 4429."""

    def __init__(self, ws: WebSocket, peer: Peer, limits: Limits, *, staff: bool = False
                 ) -> None:
        self.peer = peer
        self.limits = limits
        self.staff = staff
        self.ip = client_ip(ws)
        self.exempt = limits.exempt(self.ip)
        self.bucket = limits.socket_bucket(staff)
        # Protocol-level pings (answered below Starlette) draw on the same budget as frames.
        gate = ws.scope.get("extensions", {}).get(PING_GATE)
        if gate is not None:
            gate.charge = self.allow_ping

    def allow(self, frame: protocol.Frame | None) -> bool:
        """Charge one frame (None: one that failed to parse); False once over a limit.

        Visitors also draw on their IP's shared bucket; signed-in staff, who may share an
        office address with many others, only on their socket's own."""
        if self.exempt:
            return True
        # Stored frames cost a full message: notes, ratings and transfers (audited) are writes too.
        stored = (protocol.Message, protocol.Note, protocol.Rating, protocol.Transfer)
        cost = 1.0 if isinstance(frame, stored) else CHEAP_FRAME_COST
        if self.bucket.take(cost) and (self.staff or self.limits.allow_from_ip(self.ip, cost)):
            return True
        metrics.rate_limited("rate_limited")
        self.peer.send_frame(protocol.error("rate_limited", "Too many messages; slow down."))
        self.peer.close(CLOSE_RATE_LIMITED, "rate limited")
        return False

    def allow_ping(self) -> bool:
        """Charge one protocol-level ping, as much as a `ping` frame costs."""
        return self.allow(_PING)


_PING = protocol.Ping()


def listener(peer: Peer, skip_typing_from: str) -> Callable[[str], None]:
    own_typing = f'"sender":"{skip_typing_from}"'
    visitor = skip_typing_from == "visitor"

    def listen(payload: str) -> None:
        if payload.startswith(('{"type":"typing"', '{"type":"read"')) and own_typing in payload:
            return  # nobody needs to see their own typing or read marks
        text = for_visitor(payload) if visitor else payload
        if text is not None:  # None: a staff note, which never reaches a visitor
            peer.send(text)

    return listen


def ender(peer: Peer) -> Callable[[str], None]:
    return lambda code: peer.close(int(code), "session ended")


