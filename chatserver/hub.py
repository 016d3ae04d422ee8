"""Conversations, presence and fan-out.

Every change is stored first and published second: `post()` returns only after the message is
durably stored, and the broadcast merely tells listening sockets about it. A socket that misses a
publication catches up with `resume`, which reads storage.

Channels: `conv:<id>` carries a conversation's message, typing and status frames; `queue` tells
agents the set of open conversations changed; `session:<hash>` ends a signed-in session's sockets;
`policy` announces a newly published policy version; `presence` tells visitor sockets that
whether an agent is online may have changed (each socket then says what its process sees).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from . import audit, metrics, protocol
from .broadcast import Broadcast, Subscription
from .errors import Forbidden, NotFound, Unavailable
from .storage.base import (
    Conversation,
    ConversationSummary,
    Message,
    Note,
    Rating,
    Staff,
    Store,
)

log = logging.getLogger("chatserver.hub")
QUEUE_DEBOUNCE_SECONDS = 0.05


def conversation_channel(conversation_id: str) -> str:
    return f"conv:{conversation_id}"


def session_channel(session_hash: str) -> str:
    return f"session:{session_hash}"


def staff_channel(staff_id: int) -> str:
    """Tells all of one agent's sockets (tabs) which conversations they now follow."""
    return f"staff:{staff_id}"


QUEUE_CHANNEL = "queue"
POLICY_CHANNEL = "policy"  # payload: the version just published
PRESENCE_CHANNEL = "presence"  # payload: "1" or "0", what the publishing process sees


def restricted_item(item: dict[str, Any]) -> dict[str, Any]:
    """Someone else's active conversation as another agent sees it: that it exists, the
    customer's name and who handles it; no message text and no contact details."""
    customer = item.get("customer") or {}
    return {
        **item,
        "customer": {"name": customer.get("name"), "email": None, "company": None},
        "last_message": None,
        "policy_version": None,
        "restricted": True,
    }


def visible_to(item: dict[str, Any], staff_id: int) -> bool:
    """Agents (admins too) see queued conversations and their own in full."""
    return item.get("status") != "active" or item.get("agent_id") == staff_id


def queue_for(frame: dict[str, Any], staff_id: int) -> dict[str, Any]:
    """The queue frame as one staff member may see it."""
    return {**frame, "conversations": [
        item if visible_to(item, staff_id) else restricted_item(item)
        for item in frame["conversations"]
    ]}


def status_frame(conversation: Conversation) -> dict[str, Any]:
    """A conversation's status for both sides: `agent` is the display name customers see;
    `agent_id` and `agent_name` (the sign-in name) are for staff, and visitors' sockets drop
    them (see `for_visitor`)."""
    return {
        "type": "status",
        "conversation_id": conversation.id,
        "status": conversation.status,
        "agent": conversation.agent_display_name,
        "agent_id": conversation.agent_id,
        "agent_name": conversation.agent_name,
    }


STAFF_ONLY_FIELDS = ("agent_id", "agent_name")


def for_visitor(payload: str) -> str | None:
    """A conversation-channel frame as the visitor may see it: staff notes not at all (None);
    status frames lose the staff-only fields (the agent's id and sign-in name); every other
    frame passes as it is."""
    if payload.startswith(protocol.NOTE_PREFIX):
        return None
    if not payload.startswith('{"type":"status"'):
        return payload
    frame = json.loads(payload)
    for name in STAFF_ONLY_FIELDS:
        frame.pop(name, None)
    return protocol.dump(frame)


def queue_item(summary: ConversationSummary) -> dict[str, Any]:
    c = summary.conversation
    return {
        "conversation_id": c.id,
        "status": c.status,
        "customer": summary.customer,
        "waiting_since": c.created_at,
        "last_message": summary.last_message,
        "agent": c.agent_name,
        "agent_id": c.agent_id,
        "policy_version": summary.policy_version,
        "last_seq": c.last_seq,
    }


class DeliveredReplies:
    """Agent replies delivered to one visitor socket count as seen, so they are not emailed.

    Marks are coalesced: one write at a time, carrying the highest seq so far. A client that
    sends `read` frames says itself what was seen; from its first, deliveries stop counting.
    """

    def __init__(self, store: Store, conversation_id: str) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.reads = False
        self._pending = 0
        self._written = 0
        self._task: asyncio.Task[None] | None = None

    def on_sent(self, text: str) -> None:
        if self.reads or not text.startswith('{"type":"message"'):
            return
        frame = json.loads(text)
        if frame.get("sender") != "agent" or frame.get("seq", 0) <= self._pending:
            return
        self._pending = frame["seq"]
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._written < self._pending:
            target = self._pending
            try:
                await self.store.mark_seen(self.conversation_id, target, read=False)
            except NotFound:  # erased meanwhile: nothing left to mark
                return
            except Exception:  # the reply may be emailed after all; that is the safe side
                log.exception("marking delivered replies failed")
                return
            self._written = target

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 5)


class Hub:
    def __init__(self, store: Store, broadcast: Broadcast) -> None:
        self.store = store
        self.broadcast = broadcast
        self._agents: dict[int, int] = {}  # staff id -> open agent sockets in this process
        self._queue_task: asyncio.Task[None] | None = None
        self._queue_parsed: tuple[str, dict[str, Any]] | None = None

    # -- presence ---------------------------------------------------------------------------

    async def agent_connected(self, staff_id: int) -> None:
        first = not self._agents
        self._agents[staff_id] = self._agents.get(staff_id, 0) + 1
        if first:
            await self._presence_changed()

    async def agent_disconnected(self, staff_id: int) -> None:
        left = self._agents.get(staff_id, 0) - 1
        if left > 0:
            self._agents[staff_id] = left
        else:
            self._agents.pop(staff_id, None)
            if not self._agents:
                await self._presence_changed()

    async def _presence_changed(self) -> None:
        """The first agent came or the last left: visitors' sockets tell their widgets, which
        switch between "waiting for an agent" and the offline wording."""
        try:
            await self.broadcast.publish(PRESENCE_CHANNEL, "1" if self._agents else "0")
        except Exception:  # a lost notice must not break an agent's socket; welcome is exact
            log.exception("presence notice failed")

    def agents_online(self) -> bool:
        return bool(self._agents)

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, channel: str, listener: Callable[[str], None]) -> Subscription:
        return self.broadcast.subscribe(channel, listener)

    # -- conversation changes ---------------------------------------------------------------

    async def post(
        self,
        conversation_id: str,
        *,
        sender: str,
        sender_id: str,
        author: str,
        body: str,
        client_msg_id: str | None,
    ) -> Message:
        """Store a message, then publish it; a repeat of a client_msg_id is not published again."""
        started = time.perf_counter()
        message, new, status = await self.store.append_message(
            conversation_id, sender=sender, sender_id=sender_id, author=author, body=body,
            client_msg_id=client_msg_id,
        )
        if new:
            metrics.message_stored(sender, time.perf_counter() - started)
            await self.broadcast.publish(
                conversation_channel(conversation_id), protocol.dump(message.frame())
            )
            if status == "queued":  # the waiting list shows the latest words
                self.queue_changed()
        return message

    async def claim(self, conversation_id: str, staff: Staff) -> tuple[Conversation, bool]:
        """Claim for this agent; True when this call claimed it (False: it was theirs already)."""
        claimed, now_claimed = await self.store.claim_conversation(conversation_id, staff.id)
        if now_claimed:
            # First, so every tab of this agent follows the conversation before its news.
            await self.broadcast.publish(staff_channel(staff.id), conversation_id)
            await self.post(
                conversation_id, sender="system", sender_id="system", author="system",
                body=f"{staff.display_name} joined the conversation.", client_msg_id=None,
            )
            await self._status(claimed)
            self.queue_changed()
        return claimed, now_claimed

    async def close(self, conversation_id: str, *, by: str, by_kind: str) -> Conversation | None:
        """Close it; `by` names who did for the notice (customers read it: an agent's display
        name), `by_kind` is visitor or agent."""
        closed = await self.store.close_conversation(conversation_id)
        if closed is None:
            return None
        await self.post(
            conversation_id, sender="system", sender_id="system", author="system",
            body=f"The conversation was closed by {by}.", client_msg_id=None,
        )
        await self._status(closed, closed_by=by_kind)
        self.queue_changed()
        return closed

    async def _status(self, conversation: Conversation, closed_by: str | None = None) -> None:
        frame = status_frame(conversation)
        if closed_by:
            frame["closed_by"] = closed_by
        await self.broadcast.publish(conversation_channel(conversation.id), protocol.dump(frame))

    async def typing(self, conversation_id: str, *, sender: str, author: str, state: bool) -> None:
        frame = {
            "type": "typing",
            "conversation_id": conversation_id,
            "sender": sender,
            "author": author,
            "state": state,
        }
        await self.broadcast.publish(conversation_channel(conversation_id), protocol.dump(frame))

    async def read(self, conversation_id: str, seq: int, *, sender: str) -> int:
        """`sender` saw everything up to `seq` (clamped to the last seq): a visitor's mark is
        stored (it decides which replies are emailed); both are relayed to the other side."""
        if sender == "visitor":
            upto = await self.store.mark_seen(conversation_id, seq, read=True)
        else:
            conversation = await self.store.get_conversation(conversation_id)
            if conversation is None:
                raise NotFound("No such conversation.")
            upto = min(seq, conversation.last_seq)
        await self.broadcast.publish(conversation_channel(conversation_id),
                                     protocol.dump(protocol.read_frame(conversation_id, upto,
                                                                       sender)))
        return upto

    # -- notes and ratings (issue 12) -------------------------------------------------------

    async def note(self, conversation_id: str, staff: Staff, *, body: str,
                   client_msg_id: str) -> Note:
        """Store a staff-only note, then publish it to staff: the agent handling the
        conversation (any agent while it is queued) or an admin. Visitors' sockets drop it."""
        await self.check_agent_access(conversation_id, staff)
        note, new = await self.store.add_note(conversation_id, staff_id=staff.id, body=body,
                                              client_msg_id=client_msg_id)
        if new:
            await self.broadcast.publish(conversation_channel(conversation_id),
                                         protocol.dump(protocol.note_frame(note)))
        return note

    async def rate(self, conversation_id: str, *, score: int, comment: str) -> Rating:
        """Store the customer's rating of their closed conversation (once), then tell the
        conversation's listeners: the agent's dashboard and the visitor's own sockets."""
        rating = await self.store.rate_conversation(conversation_id, score=score,
                                                    comment=comment)
        await self.broadcast.publish(conversation_channel(conversation_id),
                                     protocol.dump(protocol.rating_frame(rating)))
        return rating

    async def visitor_read_frame(self, conversation_id: str) -> dict[str, Any] | None:
        """The customer's stored read mark as a `read` frame, for an agent that (re)loads the
        conversation and so missed the live ones; None before the customer read anything."""
        read_seq = (await self.store.read_state(conversation_id))["read_seq"]
        return protocol.read_frame(conversation_id, read_seq, "visitor") if read_seq else None

    async def policy_published(self, version: str) -> None:
        """Visitors whose consent is to an older version stop chatting until they accept."""
        await self.broadcast.publish(POLICY_CHANNEL, version)

    async def end_session(self, session_hash: str, code: int) -> None:
        """Close every socket of a signed-in session, in every process."""
        await self.broadcast.publish(session_channel(session_hash), str(code))

    async def check_agent_access(self, conversation_id: str, staff: Staff) -> Conversation:
        """Agents read queued conversations and their own; admins read any."""
        conversation = await self.store.get_conversation(conversation_id)
        if conversation is None:
            raise NotFound("No such conversation.")
        if (
            staff.role != "admin"
            and conversation.status != "queued"
            and conversation.agent_id != staff.id
        ):
            raise Forbidden("That conversation belongs to another agent.")
        return conversation

    async def open_for_reading(self, conversation_id: str, staff: Staff, *, after_seq: int,
                               ip: str | None) -> Conversation:
        """check_agent_access, and an audit row when the reader is an admin reading a
        conversation that is neither queued (offered to every agent) nor theirs. Recorded
        before anything is read: a read that is not in the log does not happen."""
        conversation = await self.check_agent_access(conversation_id, staff)
        if conversation.status != "queued" and conversation.agent_id != staff.id:
            await audit.record(
                self.store, actor=f"staff:{staff.id}", action="transcript.view", ip=ip,
                target=f"conversation:{conversation.id}",
                detail={"via": "socket", "after_seq": after_seq,
                        "messages": max(0, conversation.last_seq - after_seq)},
            )
        return conversation

    # -- the agents' queue ------------------------------------------------------------------

    async def queue_frame(self) -> dict[str, Any]:
        """Every open conversation in full: published once, then cut per socket (QueueView)."""
        summaries = await self.store.open_conversations()
        return {"type": "queue", "conversations": [queue_item(s) for s in summaries]}

    async def queue_frame_for(self, staff: Staff) -> dict[str, Any]:
        return queue_for(await self.queue_frame(), staff.id)

    def queue_payload_for(self, payload: str, staff_id: int) -> str:
        """A published queue frame as one staff member may see it. The frame is parsed once per
        publication, not once per socket."""
        if self._queue_parsed is not None and self._queue_parsed[0] == payload:
            frame = self._queue_parsed[1]
        else:
            frame = json.loads(payload)
            self._queue_parsed = (payload, frame)
        if all(visible_to(item, staff_id) for item in frame["conversations"]):
            return payload
        return protocol.dump(queue_for(frame, staff_id))

    def queue_changed(self) -> None:
        """Tell agents the queue changed, coalescing bursts into one read and one frame."""
        if self._queue_task is None or self._queue_task.done():
            self._queue_task = asyncio.get_running_loop().create_task(self._publish_queue())

    async def _publish_queue(self) -> None:
        await asyncio.sleep(QUEUE_DEBOUNCE_SECONDS)
        try:
            frame = await self.queue_frame()
            metrics.queue_length(sum(1 for c in frame["conversations"] if c["status"] == "queued"))
            await self.broadcast.publish(QUEUE_CHANNEL, protocol.dump(frame))
        except Unavailable:  # the database is away: said once per change, without a trace
            log.warning("queue refresh failed: the database does not answer")
        except Exception:  # a failed refresh must not break the caller; the next change retries
            log.exception("queue refresh failed")

    async def shutdown(self) -> None:
        if self._queue_task is not None:
            self._queue_task.cancel()
