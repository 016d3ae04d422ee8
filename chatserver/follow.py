"""What one socket has been sent of each conversation it follows, so that live frames, replays
and catch-ups after a broadcast outage never double a message nor skip one.

The broadcast may drop publications (a Redis or PostgreSQL connection cut, a frame too large for
NOTIFY sent as a reference); storage may not. Each socket remembers the highest seq it was sent
per conversation. A live message with the next seq goes out; one already sent is dropped; one
past a gap, or a reference, makes the socket read the gap from storage and send it in order. When
the broadcast comes back after an outage, every followed conversation is read the same way, so
the tail published during the outage arrives too. A shared broadcast subscribes a process to a
conversation's channel only when a socket starts following it, which takes a round trip: once the
subscription is in force (`settled`), the conversation is read from its starting point, so what
other processes published meanwhile arrives too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from . import protocol
from .errors import NotFound
from .storage.base import Store

log = logging.getLogger("chatserver.sockets")
CHUNK = 200
MESSAGE = '{"type":"message"'
REFERENCE = '{"type":"message_ref"'


def reference(conversation_id: str, seq: int) -> str:
    """Stands for a stored message too large for the broadcast: receivers read it from storage."""
    return protocol.dump({"type": "message_ref", "conversation_id": conversation_id, "seq": seq})


class Follower:
    """Message frames for one socket, gap-free and without repeats, per conversation."""

    def __init__(self, store: Store, send: Callable[[str], None],
                 shape: Callable[[str], str | None] = lambda text: text,
                 settled: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.send = send
        self.shape = shape  # what this socket may see of a frame (visitors lose staff fields)
        # The broadcast's `settled` when it subscribes per channel (None: subscriptions are in
        # force at once, as with memory://).
        self.settled = settled
        self.sent: dict[str, int] = {}  # conversation id -> highest seq sent
        self._reading: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._unsettled: set[str] = set()
        self._settling: asyncio.Task[None] | None = None

    def follow(self, conversation_id: str, last_seq: int | None) -> None:
        """Start from `last_seq` (what the client was told exists); None: from the first live
        message this socket hears. Subscribe to the conversation's channel right after (before
        the next await): the catch-up once subscriptions are settled counts on it."""
        if last_seq is not None and conversation_id not in self.sent:
            self.sent[conversation_id] = last_seq
            if self.settled is not None:
                self._unsettled.add(conversation_id)
                if self._settling is None or self._settling.done():
                    self._settling = asyncio.get_running_loop().create_task(self._settle())

    async def _settle(self) -> None:
        """Once this socket's new subscriptions are in force, read what was published before
        they were (by another process, unheard here)."""
        assert self.settled is not None
        while self._unsettled:
            batch, self._unsettled = self._unsettled, set()
            await self.settled()
            for conversation_id in batch:
                if conversation_id in self.sent:
                    self.catch_up(conversation_id)

    def unfollow(self, conversation_id: str) -> None:
        """The socket no longer hears this conversation: a catch-up after an outage skips it."""
        self.sent.pop(conversation_id, None)
        task = self._reading.pop(conversation_id, None)
        if task is not None:
            task.cancel()

    def replayed(self, conversation_id: str, seq: int) -> None:
        """The client asked for, and got, everything up to `seq`."""
        self.sent[conversation_id] = max(self.sent.get(conversation_id, 0), seq)

    def live(self, payload: str) -> bool:
        """Handle a published message frame or reference; False for any other frame."""
        is_reference = payload.startswith(REFERENCE)
        if not is_reference and not payload.startswith(MESSAGE):
            return False
        conversation_id, seq, _ = protocol.message_head(payload)
        sent = self.sent.get(conversation_id)
        if sent is None:  # no starting point yet: this message is the first
            sent = self.sent[conversation_id] = seq - 1
        if seq <= sent:
            return True  # sent already (by a catch-up, or the broadcast repeated it)
        if seq == sent + 1 and not is_reference:
            self.sent[conversation_id] = seq
            self._send(payload)
            return True
        self.catch_up(conversation_id)
        return True

    def _send(self, payload: str) -> None:
        text = self.shape(payload)
        if text is not None:  # None: not for this socket's eyes
            self.send(text)

    def catch_up(self, conversation_id: str) -> None:
        """Read from storage what this socket lacks of the conversation, and send it."""
        if conversation_id in self._reading:
            self._again.add(conversation_id)  # the read under way may have begun too early
            return
        self._reading[conversation_id] = asyncio.get_running_loop().create_task(
            self._read(conversation_id))

    def catch_up_all(self) -> None:
        for conversation_id in list(self.sent):
            self.catch_up(conversation_id)

    async def _read(self, conversation_id: str) -> None:
        try:
            while True:
                self._again.discard(conversation_id)
                after = self.sent.get(conversation_id, 0)
                chunk = await self.store.messages_after(conversation_id, after, CHUNK)
                for message in chunk:
                    if message.seq > self.sent.get(conversation_id, 0):
                        self.sent[conversation_id] = message.seq
                        self._send(protocol.dump(message.frame()))
                if len(chunk) < CHUNK and conversation_id not in self._again:
                    return
        except NotFound:  # erased meanwhile: nothing left to send
            return
        except Exception:  # the next live message or reconnect tries again
            log.warning("catching up a conversation from storage failed", exc_info=True)
        finally:
            self._reading.pop(conversation_id, None)

    def stop(self) -> None:
        for task in self._reading.values():
            task.cancel()
        if self._settling is not None:
            self._settling.cancel()
