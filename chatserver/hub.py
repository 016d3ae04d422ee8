"""Conversations, presence and fan-out.

Every change is stored first and published second: `post()` returns only after the message is
durably stored, and the broadcast merely tells listening sockets about it. A socket that misses a
publication catches up with `resume`, which reads storage.

Channels: `conv:<id>` carries a conversation's message, typing and status frames; `queue` tells
agents the set of open conversations changed; `session:<hash>` ends a signed-in session's sockets;
`policy` announces a newly published policy version; `presence` says some process's agents came
or went (then every process re-reads the shared presence), or that an agent set themselves away
or back (the process holding their dashboards applies it).

Presence with a shared broadcast: each process's heartbeat carries its roster (staff id -> away)
with a ttl, said every second and at once on a change; each process keeps every roster as last
read, so "is this agent there" (takeover, the queue's `agent_online`, colleagues) is answered for
all processes, and a killed process's agents drop out when its ttl runs out.

Queue and presence frames are built by each process for its own sockets (from storage, and from
the broadcast's shared presence): across processes only a short "changed" travels, so no frame
outgrows a backend's payload limit (PostgreSQL's NOTIFY takes 8000 bytes) and a process that
missed one during an outage rebuilds both when its broadcast comes back.
`erased` tells every dashboard which conversations were erased (a JSON list of ids) so that
nothing of them stays on screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from . import audit, metrics, protocol, queue_page
from .broadcast import CONNECTION_CHANNEL as CONNECTION_CHANNEL
from .broadcast import UP, Broadcast, BroadcastUnavailable, Subscription
from .broadcast.local import Listeners
from .errors import Forbidden, NotFound, Unavailable
from .follow import reference
from .storage.base import (
    Conversation,
    ConversationSummary,
    Message,
    Note,
    Rating,
    Staff,
    Store,
)
from .visitor_presence import VisitorPresence

log = logging.getLogger("chatserver.hub")
QUEUE_DEBOUNCE_SECONDS = 0.05
# A process says every HEARTBEAT_SECONDS that its agents are online, for PRESENCE_TTL_SECONDS:
# a process killed outright stops saying so, and its agents count as gone within the ttl.
HEARTBEAT_SECONDS = 1.0
PRESENCE_TTL_SECONDS = 4.0
MAX_UNSENT = 10_000  # channels remembered while the broadcast is away (then: next message)


def conversation_channel(conversation_id: str) -> str:
    return f"conv:{conversation_id}"


def session_channel(session_hash: str) -> str:
    return f"session:{session_hash}"


def staff_channel(staff_id: int) -> str:
    """Tells all of one agent's sockets (tabs) which conversations they now follow (payload:
    `staff_notice`), or their new display name (`profile_notice`)."""
    return f"staff:{staff_id}"


PROFILE_PREFIX = "profile:"  # no conversation id starts so


def profile_notice(display_name: str) -> str:
    """Tells an agent's sockets their new display name. It travels in the notice, not read back
    from storage, so that it is in place before the status frames published after it come back
    to the same sockets, and the agent's next message carries it."""
    return PROFILE_PREFIX + display_name


def read_profile_notice(payload: str) -> str | None:
    """The display name of a `profile_notice`; None for a `staff_notice`."""
    return payload[len(PROFILE_PREFIX):] if payload.startswith(PROFILE_PREFIX) else None


def staff_notice(conversation_id: str, last_seq: int) -> str:
    """Tells an agent's sockets to follow a conversation from `last_seq` on (what was stored
    before the notice): what follows it reaches every tab even when a tab's process subscribes to
    the conversation only now (see follow.py)."""
    return f"{conversation_id} {last_seq}"


def read_staff_notice(payload: str) -> tuple[str, int | None]:
    conversation_id, _, last_seq = payload.partition(" ")
    return conversation_id, int(last_seq) if last_seq else None


QUEUE_CHANNEL = "queue"
POLICY_CHANNEL = "policy"  # payload: the version just published
PRESENCE_CHANNEL = "presence"  # payload: "changed", or AWAY_PREFIX + "<staff id>:<0|1>"
AWAY_PREFIX = "away:"
ERASED_CHANNEL = "erased"  # payload: a JSON list of erased conversation ids
# Channels whose frames each process builds for its own sockets (see the module's docstring).
LOCAL_CHANNELS = frozenset({QUEUE_CHANNEL, PRESENCE_CHANNEL})


class Coalesced:
    """Runs `job` in a task when triggered; triggers during a run make one more run after it."""

    def __init__(self, job: Callable[[], Awaitable[None]]) -> None:
        self.job = job
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def trigger(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._again = False
            await self.job()
            if not self._again:
                return

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


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
    """The queue frame as one staff member may see it, cut to a page (queue_page.py)."""
    return {**frame, **queue_page.cut([
        item if visible_to(item, staff_id) else restricted_item(item)
        for item in frame["conversations"]
    ], staff_id)}


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
_STAFF_ONLY_PREFIXES = (protocol.NOTE_PREFIX, protocol.MAILED_PREFIX,
                        protocol.VISITOR_PRESENCE_PREFIX)


def for_visitor(payload: str) -> str | None:
    """A conversation-channel frame as the visitor may see it: staff notes, mail marks and the
    customer's own presence not at all (None); status frames lose the staff-only fields (the
    agent's id and sign-in name); every other frame passes as it is."""
    if payload.startswith(_STAFF_ONLY_PREFIXES):
        return None
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


MARK_DELAY_SECONDS = 0.5


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class DeliveredReplies:
    """Agent replies delivered to one visitor socket count as seen, so they are not emailed.

    Marks are coalesced: a write at most every MARK_DELAY_SECONDS, carrying the highest seq so
    far (a mark only has to land before the reply email's delay, minutes, and one write per
    delivered reply cost the writer as much as the replies). When the socket closes, what is
    pending is written at once. A client that sends `read` frames says itself what was seen;
    from its first, deliveries stop counting.
    """

    def __init__(self, store: Store, conversation_id: str) -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.reads = False
        self._pending = 0
        self._written = 0
        self._task: asyncio.Task[None] | None = None
        # The wait before a write, cut short by close; a future and a timer rather than
        # wait_for on an Event, which makes a task per wait (3% of the event loop's time with
        # 100 visitors at 2,000 msgs/s).
        self._delay: asyncio.Future[None] | None = None
        self._closed = False

    def on_sent(self, text: str) -> None:
        if self.reads or not text.startswith('{"type":"message"'):
            return
        _, seq, sender = protocol.message_head(text)
        if sender != "agent" or seq <= self._pending:
            return
        self._pending = seq
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._written < self._pending:
            if not self._closed:
                loop = asyncio.get_running_loop()
                delay = self._delay = loop.create_future()
                timer = loop.call_later(MARK_DELAY_SECONDS, _resolve, delay)
                try:
                    await delay
                finally:
                    timer.cancel()
                    self._delay = None
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
        self._closed = True
        if self._delay is not None:
            _resolve(self._delay)
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 5)


class Hub:
    def __init__(self, store: Store, broadcast: Broadcast) -> None:
        self.store = store
        self.broadcast = broadcast
        self.process_id = secrets.token_hex(8)
        self._agents: dict[int, int] = {}  # staff id -> open agent sockets in this process
        self._agents_elsewhere = False  # a shared broadcast's word on the other processes
        # ... and on their agents: staff id -> away, every process's roster (ours too) as last
        # read; refreshed each heartbeat and at once when a process says its agents changed.
        self._elsewhere: dict[int, bool] = {}
        self._beat_lock = asyncio.Lock()
        self._told: bool | None = None  # the presence visitors of this process were last told
        self._local = Listeners()  # queue and presence frames, built here for our sockets
        self._away: set[int] = set()  # of this process's agents, the ones who said they are away
        self._queue_task: asyncio.Task[None] | None = None
        self._queue_parsed: tuple[str, dict[str, Any]] | None = None
        self._queue = Coalesced(self._refresh_queue)
        self._presence = Coalesced(self._check_presence)
        self._beat_task: asyncio.Task[None] | None = None
        # What could not be published while the broadcast was away, by channel: said again
        # once it is back (a message as a reference to its seq), so other processes catch up.
        self._unsent: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # held, or the loop may drop them midway
        self.visitors = VisitorPresence(
            broadcast, self.process_id,
            lambda conversation_id, payload: self._publish(conversation_channel(conversation_id),
                                                           payload))
        self._own = [
            broadcast.subscribe(QUEUE_CHANNEL, lambda _payload: self._queue.trigger()),
            broadcast.subscribe(PRESENCE_CHANNEL, self._on_presence),
            broadcast.subscribe(CONNECTION_CHANNEL, self._on_connection),
        ]

    def start(self) -> None:
        """Begin the presence heartbeat (shared broadcasts only)."""
        if self.broadcast.shared and self._beat_task is None:
            self._beat_task = asyncio.get_running_loop().create_task(self._heartbeats())

    def _background(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, channel: str, payload: str) -> bool:
        """Publish; False when the broadcast is away. What was stored stays stored, and sockets
        catch up from storage once the broadcast is back."""
        try:
            await self.broadcast.publish(channel, payload)
        except BroadcastUnavailable:
            log.warning("broadcast unavailable: a %s notice was not sent; sockets catch up "
                        "from storage when it returns", channel.split(":", 1)[0])
            self._keep_unsent(channel, payload)
            return False
        return True

    def _keep_unsent(self, channel: str, payload: str) -> None:
        if channel.startswith("conv:"):
            if payload.startswith(protocol.NOTE_PREFIX) or not payload.startswith(
                    ('{"type":"message"', '{"type":"message_ref"')):
                return  # typing, read marks, status, notes: fleeting, or read again from storage
            frame = json.loads(payload)
            payload = reference(frame["conversation_id"], frame["seq"])
        if len(self._unsent) < MAX_UNSENT or channel in self._unsent:
            self._unsent[channel] = payload

    def _on_connection(self, state: str) -> None:
        if state == UP:  # what was missed meanwhile: rebuilt from storage and presence
            metrics.broadcast_reconnected()  # the operator's only trace of an outage that healed
            self._queue.trigger()
            self._presence.trigger()
            self._background(self._resend())

    async def _resend(self) -> None:
        """Back after an outage: tell the other processes what they could not hear."""
        unsent, self._unsent = self._unsent, {}
        for channel, payload in unsent.items():
            await self._publish(channel, payload)
        await self._publish(QUEUE_CHANNEL, "changed")
        if self._agents:
            await self._announce_agents()

    # -- presence ---------------------------------------------------------------------------

    async def agent_connected(self, staff_id: int, *, away: bool = False) -> None:
        first = staff_id not in self._agents
        self._agents[staff_id] = self._agents.get(staff_id, 0) + 1
        if away:
            self._away.add(staff_id)
        if first:
            self._local_agents_changed()

    async def agent_disconnected(self, staff_id: int) -> None:
        left = self._agents.get(staff_id, 0) - 1
        if left > 0:
            self._agents[staff_id] = left
            return
        self._agents.pop(staff_id, None)
        self._away.discard(staff_id)
        self._local_agents_changed()

    async def set_away(self, staff_id: int, away: bool) -> None:
        """An agent said they are away (or back): customers and colleagues see it at once, in
        every process (the request may reach a process where the agent has no dashboard)."""
        self._apply_away(staff_id, away)
        if self.broadcast.shared:
            await self._publish(PRESENCE_CHANNEL, f"{AWAY_PREFIX}{staff_id}:{int(away)}")

    def _apply_away(self, staff_id: int, away: bool) -> None:
        if away:
            if staff_id in self._agents:
                self._away.add(staff_id)
        else:
            self._away.discard(staff_id)
        self._local_agents_changed()

    def _on_presence(self, payload: str) -> None:
        """Another process's agents changed (re-read the shared roster), or an agent went away
        or came back (applied here too when their dashboard is open here)."""
        if payload.startswith(AWAY_PREFIX):
            staff_id, _, away = payload[len(AWAY_PREFIX):].partition(":")
            if staff_id.isdigit() and int(staff_id) in self._agents and (
                    int(staff_id) in self._away) != (away == "1"):
                self._apply_away(int(staff_id), away == "1")
            return
        self._presence.trigger()

    def agents_online(self) -> bool:
        """Whether an agent who is not away has a dashboard open in this process or, with a
        shared broadcast, in any."""
        return any(s not in self._away for s in self._agents) or self._agents_elsewhere

    def agent_present(self, staff_id: int) -> bool:
        """This agent has a dashboard open (away or not) in this process or, with a shared
        broadcast, in any (as last heard: within about a second)."""
        return staff_id in self._agents or staff_id in self._elsewhere

    def agent_available(self, staff_id: int) -> bool:
        """This agent has a dashboard open and is not away, in this process or, with a shared
        broadcast, in any. When not, colleagues may take over their conversations."""
        if staff_id in self._agents:
            return staff_id not in self._away
        return self._elsewhere.get(staff_id) is False

    async def agent_available_now(self, staff_id: int) -> bool:
        """agent_available, with the other processes' word read afresh rather than as last
        heard: for decisions (a takeover) that must not act on a stale view."""
        if staff_id not in self._agents and self.broadcast.shared:
            await self._check_presence()
        return self.agent_available(staff_id)

    def _roster(self) -> dict[int, bool]:
        """This process's agents with a dashboard open: staff id -> away."""
        return {staff_id: staff_id in self._away for staff_id in self._agents}

    def _local_agents_changed(self) -> None:
        """An agent came, went or changed away state here: visitors hear whether anyone is online,
        and agents get a fresh queue (it marks whose conversations may be taken over)."""
        self.queue_changed()
        self._tell_presence()
        if self.broadcast.shared:
            self._background(self._announce_agents())

    async def _beat(self) -> None:
        """Tell the broadcast this process's roster. One at a time, each reading the roster once
        it is its turn, so the last word stored is the latest."""
        async with self._beat_lock:
            await self.broadcast.heartbeat(self.process_id, self._roster(),
                                           PRESENCE_TTL_SECONDS)

    async def _announce_agents(self) -> None:
        try:
            await self._beat()
        except BroadcastUnavailable:
            return  # the heartbeat loop says it again once the broadcast is back
        await self._publish(PRESENCE_CHANNEL, "changed")

    async def _check_presence(self) -> None:
        if self.broadcast.shared:
            try:
                elsewhere = await self.broadcast.present_agents()
            except BroadcastUnavailable:
                return
            changed = elsewhere != self._elsewhere
            self._elsewhere = elsewhere
            self._agents_elsewhere = not all(elsewhere.values())
            if changed:  # this process's dashboards: whose conversations may be taken over
                self._queue.trigger()
        self._tell_presence()

    def _tell_presence(self) -> None:
        online = self.agents_online()
        if online != self._told:
            self._told = online
            self._local.deliver(PRESENCE_CHANNEL, protocol.dump(protocol.presence_frame(online)))

    async def _heartbeats(self) -> None:
        while True:
            try:
                if self._agents:
                    await self._beat()
                await self._check_presence()
            except BroadcastUnavailable:
                pass
            except Exception:  # the next beat tries again
                log.exception("presence heartbeat failed")
            await asyncio.sleep(HEARTBEAT_SECONDS)

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, channel: str, listener: Callable[[str], None]) -> Subscription:
        if channel in LOCAL_CHANNELS:
            return self._local.add(channel, listener)
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
        unless_paused: bool = False,
    ) -> Message:
        """Store a message, then publish it; a repeat of a client_msg_id is not published again.
        `unless_paused`: an agent's, refused (ConsentWithdrawn) when the customer withdrew."""
        started = time.perf_counter()
        message, new, status = await self.store.append_message(
            conversation_id, sender=sender, sender_id=sender_id, author=author, body=body,
            client_msg_id=client_msg_id, unless_paused=unless_paused,
        )
        if new:
            metrics.message_stored(sender, time.perf_counter() - started)
            payload = protocol.dump(message.frame())
            limit = self.broadcast.max_payload
            if limit is not None and len(payload.encode()) > limit:
                payload = reference(conversation_id, message.seq)  # receivers read storage
            await self._publish(conversation_channel(conversation_id), payload)
            if status == "queued":  # the waiting list shows the latest words
                self.queue_changed()
        return message

    async def claim(self, conversation_id: str, staff: Staff) -> tuple[Conversation, bool]:
        """Claim for this agent; True when this call claimed it (False: it was theirs already)."""
        claimed, now_claimed = await self.store.claim_conversation(conversation_id, staff.id)
        if now_claimed:
            # First, so every tab of this agent follows the conversation before its news.
            await self._publish(staff_channel(staff.id), staff_notice(conversation_id,
                                                                     claimed.last_seq))
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

    async def renamed(self, staff: Staff) -> None:
        """A staff member's display name changed (their own choice or an admin's): their sockets
        put it on the next messages, and customers in their open conversations see it at once,
        on earlier replies too (`renamed`: authors are read from the staff row, so a replay
        relabels them). Called after the new name is stored, so the summaries carry it."""
        await self._publish(staff_channel(staff.id), profile_notice(staff.display_name))
        for summary in await self.store.open_conversations():
            if summary.conversation.agent_id == staff.id:
                await self.publish_status(summary.conversation, renamed=True)

    async def publish_status(self, conversation: Conversation, closed_by: str | None = None,
                      **extra: Any) -> None:
        frame = status_frame(conversation)
        if closed_by:
            frame["closed_by"] = closed_by
        frame.update(extra)
        await self._publish(conversation_channel(conversation.id), protocol.dump(frame))

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

    async def erased(self, conversation_ids: list[str]) -> None:
        """Every dashboard drops these conversations at once."""
        if conversation_ids:
            await self._publish(ERASED_CHANNEL, json.dumps(conversation_ids))
        self.queue_changed()

    async def typing(self, conversation_id: str, *, sender: str, author: str, state: bool) -> None:
        frame = {
            "type": "typing",
            "conversation_id": conversation_id,
            "sender": sender,
            "author": author,
            "state": state,
        }
        await self._publish(conversation_channel(conversation_id), protocol.dump(frame))

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
        await self._publish(conversation_channel(conversation_id),
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
            await self._publish(conversation_channel(conversation_id),
                                protocol.dump(protocol.note_frame(note)))
        return note

    async def rate(self, conversation_id: str, *, score: int, comment: str) -> Rating:
        """Store the customer's rating of their closed conversation (once), then tell the
        conversation's listeners: the agent's dashboard and the visitor's own sockets."""
        rating = await self.store.rate_conversation(conversation_id, score=score,
                                                    comment=comment)
        await self._publish(conversation_channel(conversation_id),
                            protocol.dump(protocol.rating_frame(rating)))
        return rating

    async def emailed(self, conversation_id: str, seq: int) -> None:
        """Agent replies up to `seq` went to the customer by email: stored, and the staff on the
        conversation see "Emailed" under that reply."""
        await self.store.mark_emailed(conversation_id, seq)
        await self._publish(conversation_channel(conversation_id),
                            protocol.dump(protocol.mailed_frame(conversation_id, seq)))

    async def stored_marks(self, conversation_id: str) -> list[dict[str, Any]]:
        """The customer's stored read mark (`read`) and how far replies were emailed (`mailed`),
        for an agent that (re)loads the conversation and so missed the live ones; each only
        once set."""
        marks = await self.store.read_state(conversation_id)
        frames = []
        if marks["read_seq"]:
            frames.append(protocol.read_frame(conversation_id, marks["read_seq"], "visitor"))
        if marks["emailed_seq"]:
            frames.append(protocol.mailed_frame(conversation_id, marks["emailed_seq"]))
        return frames

    async def policy_published(self, version: str) -> None:
        """Visitors whose consent is to an older version stop chatting until they accept."""
        await self._publish(POLICY_CHANNEL, version)

    async def end_session(self, session_hash: str, code: int) -> None:
        """Close every socket of a signed-in session, in every process."""
        await self._publish(session_channel(session_hash), str(code))

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
        items = [queue_item(s, paused=s.conversation.id in paused,
                            agent_online=s.conversation.agent_id is not None
                            and self.agent_available(s.conversation.agent_id))
                 for s in summaries]
        return {"type": "queue", "conversations": items, **queue_page.counts(items)}

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
        items = frame["conversations"]
        if len(items) <= queue_page.PAGE_SIZE and all(visible_to(i, staff_id) for i in items):
            return payload
        return protocol.dump(queue_for(frame, staff_id))

    def queue_changed(self) -> None:
        """Tell agents the queue changed, coalescing bursts into one read and one frame."""
        if self._queue_task is None or self._queue_task.done():
            self._queue_task = asyncio.get_running_loop().create_task(self._publish_queue())

    async def _publish_queue(self) -> None:
        await asyncio.sleep(QUEUE_DEBOUNCE_SECONDS)
        await self._publish(QUEUE_CHANNEL, "changed")

    async def flush(self) -> None:
        """Wait for a queue notice still due (a command that exits right after a change)."""
        if self._queue_task is not None:
            with contextlib.suppress(Exception):
                await self._queue_task

    async def _refresh_queue(self) -> None:
        """Build the queue frame once for this process's agent sockets."""
        try:
            frame = await self.queue_frame()
            metrics.queue_length(sum(1 for c in frame["conversations"] if c["status"] == "queued"))
            payload = protocol.dump(frame)
            # Cut per socket without parsing it again; let go once delivered (listeners run
            # within deliver): with thousands open it is megabytes, kept for nobody.
            self._queue_parsed = (payload, frame)
            try:
                self._local.deliver(QUEUE_CHANNEL, payload)
            finally:
                self._queue_parsed = None
        except Unavailable:  # the database is away: said once per change, without a trace
            log.warning("queue refresh failed: the database does not answer")
        except Exception:  # a failed refresh must not break the caller; the next change retries
            log.exception("queue refresh failed")

    async def shutdown(self) -> None:
        await self.visitors.stop()
        if self._queue_task is not None:
            self._queue_task.cancel()
        self._queue.cancel()
        self._presence.cancel()
        if self._beat_task is not None:
            self._beat_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        for sub in self._own:
            sub.cancel()
        if self.broadcast.shared and self._agents:
            with contextlib.suppress(Exception):  # the ttl ends it otherwise
                await self.broadcast.heartbeat(self.process_id, {}, PRESENCE_TTL_SECONDS)
