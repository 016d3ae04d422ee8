"""Conversations, presence and fan-out.

Every change is stored first and published second: `post()` returns only after the message is
durably stored, and the broadcast merely tells listening sockets about it. A socket that misses a
publication catches up with `resume`, which reads storage.

Channels: `conv:<id>` carries a conversation's message, typing and status frames; `queue` tells
agents the set of open conversations changed; `session:<hash>` ends a signed-in session's sockets;
`policy` announces a newly published policy version; `presence` tells visitor sockets that
whether an agent is online may have changed (each socket then says what its process sees);
`erased` tells every dashboard which conversations were erased (a JSON list of ids) so that
nothing of them stays on screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from . import audit, protocol
from .broadcast import Broadcast, Subscription
from .errors import ConsentWithdrawn, Forbidden, NotFound, Unavailable
from .storage.base import Conversation, ConversationSummary, Message, Staff, Store

log = logging.getLogger("chatserver.hub")
QUEUE_DEBOUNCE_SECONDS = 0.05


def conversation_channel(conversation_id: str) -> str:
    return f"conv:{conversation_id}"


def session_channel(session_hash: str) -> str:
    return f"session:{session_hash}"


def staff_channel(staff_id: int) -> str:
    """Tells all of one agent's sockets (tabs) which conversations they now follow (payload:
    the conversation id), or that their profile changed (PROFILE_CHANGED)."""
    return f"staff:{staff_id}"


PROFILE_CHANGED = "profile"


QUEUE_CHANNEL = "queue"
POLICY_CHANNEL = "policy"  # payload: the version just published
PRESENCE_CHANNEL = "presence"  # payload: "1" or "0", what the publishing process sees
ERASED_CHANNEL = "erased"  # payload: a JSON list of erased conversation ids


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


STAFF_ONLY_FIELDS = ("agent_id", "agent_name", "paused", "previous_agent_id")


def for_visitor(payload: str) -> str:
    """A conversation-channel frame as the visitor may see it: status frames lose the staff-only
    fields (the agent's id and sign-in name); every other frame passes as it is."""
    if not payload.startswith('{"type":"status"'):
        return payload
    frame = json.loads(payload)
    for name in STAFF_ONLY_FIELDS:
        frame.pop(name, None)
    return protocol.dump(frame)


def erased_frame(conversation_ids: list[str]) -> dict[str, Any]:
    """Tells a dashboard to drop every trace of these conversations (their customer is gone)."""
    return {"type": "erased", "conversation_ids": conversation_ids}


def queue_item(summary: ConversationSummary, *, paused: bool = False,
               agent_online: bool = False) -> dict[str, Any]:
    """`paused`: the customer withdrew consent; `agent_online`: the handling agent has a
    dashboard open and is not away (when not, any agent may take the conversation over)."""
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
        "paused": paused,
        "agent_online": agent_online,
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
        self._away: set[int] = set()  # of those, the ones who said they are away
        self._queue_task: asyncio.Task[None] | None = None
        self._queue_parsed: tuple[str, dict[str, Any]] | None = None

    # -- presence ---------------------------------------------------------------------------

    async def agent_connected(self, staff_id: int, *, away: bool = False) -> None:
        before = self.agents_online()
        first = staff_id not in self._agents
        self._agents[staff_id] = self._agents.get(staff_id, 0) + 1
        if away:
            self._away.add(staff_id)
        await self._presence_changed(before, queue=first)

    async def agent_disconnected(self, staff_id: int) -> None:
        before = self.agents_online()
        left = self._agents.get(staff_id, 0) - 1
        if left > 0:
            self._agents[staff_id] = left
            return
        self._agents.pop(staff_id, None)
        self._away.discard(staff_id)
        await self._presence_changed(before, queue=True)

    async def set_away(self, staff_id: int, away: bool) -> None:
        """An agent said they are away (or back): customers and colleagues see it at once."""
        before = self.agents_online()
        if away:
            if staff_id in self._agents:
                self._away.add(staff_id)
        else:
            self._away.discard(staff_id)
        await self._presence_changed(before, queue=True)

    async def _presence_changed(self, before: bool, *, queue: bool) -> None:
        """When `agents_online` flipped, visitors' sockets tell their widgets, which switch
        between "waiting for an agent" and the offline wording. With `queue`, agents get a
        fresh queue too: it marks whose conversations may be taken over (`agent_online`)."""
        if queue:
            self.queue_changed()
        online = self.agents_online()
        if online == before:
            return
        try:
            await self.broadcast.publish(PRESENCE_CHANNEL, "1" if online else "0")
        except Exception:  # a lost notice must not break an agent's socket; welcome is exact
            log.exception("presence notice failed")

    def agents_online(self) -> bool:
        """At least one agent has a dashboard open in this process and is not away."""
        return any(staff_id not in self._away for staff_id in self._agents)

    def agent_present(self, staff_id: int) -> bool:
        """This agent has a dashboard open (away or not)."""
        return staff_id in self._agents

    def agent_available(self, staff_id: int) -> bool:
        """This agent has a dashboard open and is not away. When not, colleagues may take
        over their conversations."""
        return staff_id in self._agents and staff_id not in self._away

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
        message, new, status = await self.store.append_message(
            conversation_id, sender=sender, sender_id=sender_id, author=author, body=body,
            client_msg_id=client_msg_id,
        )
        if new:
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
            await self.publish_status(claimed)
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
        await self.publish_status(closed, closed_by=by_kind)
        self.queue_changed()
        return closed

    async def publish_status(self, conversation: Conversation, closed_by: str | None = None,
                      **extra: Any) -> None:
        frame = status_frame(conversation)
        if closed_by:
            frame["closed_by"] = closed_by
        frame.update(extra)
        await self.broadcast.publish(conversation_channel(conversation.id), protocol.dump(frame))

    async def consent_changed(self, customer_id: str) -> None:
        """The customer withdrew or gave consent: the agent handling their open conversation
        sees at once whether it is paused (staff only: the visitor's sockets are closed)."""
        try:
            conversation, _ = await self.store.open_conversation(customer_id, create=False)
        except NotFound:
            return
        paused = await self.store.conversation_paused(conversation.id)
        await self.publish_status(conversation, paused=paused)
        self.queue_changed()

    async def refuse_if_paused(self, conversation_id: str) -> None:
        """Agents send nothing to a customer who withdrew consent."""
        if await self.store.conversation_paused(conversation_id):
            raise ConsentWithdrawn()

    async def erased(self, conversation_ids: list[str]) -> None:
        """Every dashboard drops these conversations at once."""
        if conversation_ids:
            await self.broadcast.publish(ERASED_CHANNEL, json.dumps(conversation_ids))
        self.queue_changed()

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
        paused = await self.store.paused_conversations() if summaries else set()
        return {"type": "queue", "conversations": [
            queue_item(s, paused=s.conversation.id in paused,
                       agent_online=s.conversation.agent_id is not None
                       and self.agent_available(s.conversation.agent_id))
            for s in summaries]}

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
            await self.broadcast.publish(QUEUE_CHANNEL, protocol.dump(frame))
        except Unavailable:  # the database is away: said once per change, without a trace
            log.warning("queue refresh failed: the database does not answer")
        except Exception:  # a failed refresh must not break the caller; the next change retries
            log.exception("queue refresh failed")

    async def shutdown(self) -> None:
        if self._queue_task is not None:
            self._queue_task.cancel()

