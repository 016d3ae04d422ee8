"""Whether the customer has their conversation open: the agent sees "Online now" or "Offline".

An agent answering someone who closed the tab should know that the answer goes by email (after
CHATSERVER_REPLY_EMAIL_DELAY_SECONDS), and write it so. A process counts its own visitor sockets
per conversation and, while it has any, holds a lease for the conversation in the broadcast (one
member per process), renewed every third of its lifetime. The broadcast's count of members says
whether the customer is there in any process; the process that takes it from 0 to 1, or back,
publishes a staff-only `presence` frame on the conversation's channel. With the in-process
broadcast this is the process's own count. A process killed outright stops counting once its
leases run out; its sockets' customers, if still there, come back through another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from . import protocol
from .broadcast import Broadcast, BroadcastUnavailable

log = logging.getLogger("chatserver.presence")

LEASE_SECONDS = 30.0
PEEK = "-"  # a member nobody holds: a lease call with it only counts

Publish = Callable[[str, str], Awaitable[object]]  # conversation id, payload


def _key(conversation_id: str) -> str:
    return "visitor:" + conversation_id


class VisitorPresence:
    def __init__(self, broadcast: Broadcast, process_id: str, publish: Publish) -> None:
        self._broadcast = broadcast
        self._member = process_id
        self._publish = publish
        self._sockets: dict[str, int] = {}  # conversation id -> this process's visitor sockets
        self._renewer: asyncio.Task[None] | None = None

    async def arrived(self, conversation_id: str) -> None:
        """A visitor socket of the conversation opened in this process."""
        count = self._sockets.get(conversation_id, 0) + 1
        self._sockets[conversation_id] = count
        if count == 1:
            await self._changed(conversation_id, hold=True)
            if self._renewer is None or self._renewer.done():
                self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def left(self, conversation_id: str) -> None:
        """A visitor socket of the conversation closed in this process."""
        count = self._sockets.get(conversation_id, 0) - 1
        if count > 0:
            self._sockets[conversation_id] = count
            return
        self._sockets.pop(conversation_id, None)
        await self._changed(conversation_id, hold=False)

    async def online(self, conversation_id: str) -> bool | None:
        """Whether a visitor socket of the conversation is open in any process; None when the
        broadcast is away and this process has none (unknown, rather than a wrong "left")."""
        if conversation_id in self._sockets:
            return True
        try:
            return await self._broadcast.lease(_key(conversation_id), PEEK, LEASE_SECONDS,
                                               False) > 0
        except BroadcastUnavailable:
            return None

    async def _changed(self, conversation_id: str, *, hold: bool) -> None:
        try:
            held = await self._broadcast.lease(_key(conversation_id), self._member,
                                               LEASE_SECONDS, hold)
        except BroadcastUnavailable:  # said by what this process knows alone
            held = 1 if hold else 0
        if held == (1 if hold else 0):  # the first process in, or the last one out
            frame = protocol.visitor_presence_frame(conversation_id, hold)
            await self._publish(conversation_id, protocol.dump(frame))

    async def _renew(self) -> None:
        while self._sockets:
            await asyncio.sleep(LEASE_SECONDS / 3)
            for conversation_id in list(self._sockets):
                try:
                    await self._broadcast.lease(_key(conversation_id), self._member,
                                                LEASE_SECONDS, True)
                except BroadcastUnavailable:
                    break  # the next round tries again
                except Exception:  # one failed renewal must not end the others'
                    log.exception("renewing a visitor presence lease failed")

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
