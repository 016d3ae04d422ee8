"""The two WebSocket endpoints: origin, identity, consent and limits, then the receive loop.

The socket plumbing (send queue, idle timeout, rate limits) is in connection.py; what a frame
does is decided here and carried out by the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from . import consent, handover, metrics, protocol
from .broadcast import CONNECTION_CHANNEL, DOWN, UP, Subscription
from .connection import Limiter, Peer, Pipeline, ender, frames, listener, refuse
from .errors import (
    CLOSE_NO_CONSENT,
    CLOSE_SESSION_ENDED,
    Blocked,
    ChatError,
    ConsentRequired,
    Forbidden,
    NotFound,
    NotSignedIn,
    RateLimited,
    Unavailable,
)
from .follow import Follower
from .hub import (
    ERASED_CHANNEL,
    POLICY_CHANNEL,
    PRESENCE_CHANNEL,
    QUEUE_CHANNEL,
    DeliveredReplies,
    conversation_channel,
    erased_frame,
    for_visitor,
    read_profile_notice,
    read_staff_notice,
    session_channel,
    staff_channel,
    status_frame,
)
from .storage.base import Staff
from .web.common import (
    AppState,
    app_state,
    client_ip,
    origin_allowed,
    staff_for_session,
    staff_session_hash,
    user_agent,
    visitor_session_hash,
)

log = logging.getLogger("chatserver.sockets")
REPLAY_CHUNK = 200
# An agent socket's messages in flight at once (connection.Pipeline): one agent answering many
# conversations fills a group commit instead of waiting out one commit per message. Each
# conversation's messages are stored one after another, so a bound below what the agent keeps
# outstanding fills with a few conversations' queues and each commit carries one message of each:
# at 64, one socket carrying 50 conversations (8 outstanding in each) sent 0.6x what its visitors
# did (bench/RESULTS.md, section 20). It still bounds what one socket holds in memory (512 frames
# of at most 64 KiB), and the default staff rate limit refuses a burst that large anyway.
AGENT_IN_FLIGHT = 512
SESSION_RECHECK_SECONDS = 60.0
_OUTDATED = "The privacy policy changed; please read and accept it to go on chatting."
_BROADCAST_DOWN = ("Live updates are interrupted; what you send is still stored. Reconnecting "
                   "by itself.")


def _conversation_listener(peer: Peer, follower: Follower, side: str) -> Callable[[str], None]:
    """Messages through the follower (gap-free, no repeats), other frames as they come."""
    others = listener(peer, side)

    def listen(payload: str) -> None:
        # A staff note shares the message frame's shape but takes no seq of its own: it goes
        # past the follower (agents see it, visitors never: `listener` drops it for them).
        if payload.startswith(protocol.NOTE_PREFIX) or not follower.live(payload):
            others(payload)

    return listen


def _settled(state: Any) -> Callable[[], Awaitable[None]] | None:
    """What a Follower waits on before it reads what its new subscriptions could not hear."""
    broadcast = state.hub.broadcast
    return broadcast.settled if broadcast.per_channel else None


def _once_settled(state: Any, check: Callable[[], Awaitable[None]]
                  ) -> asyncio.Task[None] | None:
    """With a broadcast that subscribes per channel, a new socket hears its channels only once
    the subscription is in force: run `check` then, for what was published before."""
    settled = _settled(state)
    if settled is None:
        return None

    async def run() -> None:
        await settled()
        await check()

    return asyncio.get_running_loop().create_task(run())


def _on_connection(peer: Peer, follower: Follower, recheck: Callable[[], Any]
                   ) -> Callable[[str], None]:
    """The broadcast went away: say so rather than fall silent. It is back: catch up every
    followed conversation from storage, and check the session (ended meanwhile?) again."""
    tasks: set[Any] = set()

    def on_change(state: str) -> None:
        if state == DOWN:
            peer.send_frame(protocol.error("broadcast_unavailable", _BROADCAST_DOWN))
        elif state == UP:
            peer.send_frame(protocol.broadcast_restored_frame())
            follower.catch_up_all()
            task = asyncio.get_running_loop().create_task(recheck())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    return on_change


CLOSE_TRY_LATER = 1013


async def _database_away(ws: WebSocket, exc: Unavailable) -> None:
    """The database did not answer while a socket was being set up: say so, and close with
    1013 (try again later); the clients reconnect and resume."""
    log.warning("socket closed: the database does not answer")
    if ws.application_state == WebSocketState.CONNECTING:
        await ws.accept()
    with contextlib.suppress(Exception):
        await ws.send_text(protocol.dump(protocol.error(exc.code, exc.message)))
        await ws.close(CLOSE_TRY_LATER, exc.code)


async def visitor_socket(ws: WebSocket) -> None:
    try:
        await _visitor_socket(ws)
    except Unavailable as exc:
        await _database_away(ws, exc)


async def agent_socket(ws: WebSocket) -> None:
    try:
        await _agent_socket(ws)
    except Unavailable as exc:
        await _database_away(ws, exc)


async def _visitor_socket(ws: WebSocket) -> None:
    state = app_state(ws)
    if not origin_allowed(ws, ws.headers.get("origin")):
        await ws.close(1008)  # before accept: the handshake is answered with HTTP 403
        return
    session_hash = visitor_session_hash(ws)
    session = await state.store.get_visitor_session(session_hash) if session_hash else None
    if session is None:
        await refuse(ws, NotSignedIn("No chat session: accept the privacy policy first."))
        return
    try:
        customer_id = consent.require_chat_consent(session, await state.policies.current())
    except ConsentRequired as exc:
        await refuse(ws, exc)
        return
    customer = await state.store.get_customer(customer_id)
    if customer is None:
        await refuse(ws, ConsentRequired(code="customer_required"))
        return
    ip = client_ip(ws)
    if await state.store.active_block(customer_id, ip) is not None:
        await refuse(ws, Blocked())  # neutral: no reason, no agent, no end time
        return
    try:
        conversation, _ = await state.store.open_conversation(customer_id, create=False)
    except NotFound:
        if not await state.limits.admit_conversation(ip):
            await refuse(ws, RateLimited("Too many new conversations from your address; "
                                         "please try again later."))
            return
        conversation, _ = await state.store.open_conversation(customer_id)
        state.hub.queue_changed()
    ticket = await state.limits.admit_socket(ip, session.id)
    if ticket.refused:
        await refuse(ws, RateLimited(ticket.refused, code="too_many_sockets"))
        return
    try:
        await _visitor_session(ws, session, customer, conversation)
    finally:
        await state.limits.release_socket(ticket)


async def _visitor_session(ws: WebSocket, session: Any, customer: Any, conversation: Any
                           ) -> None:
    state = app_state(ws)
    await ws.accept()
    metrics.socket_opened("visitor")
    try:
        await _visitor_chat(ws, state, session, customer, conversation)
    finally:
        metrics.socket_closed("visitor")


async def _visitor_chat(ws: WebSocket, state: Any, session: Any, customer: Any,
                        conversation: Any) -> None:
    await state.store.record_access(session.id, "socket", client_ip(ws), user_agent(ws))
    conversation_id = conversation.id
    peer = Peer(ws, state.settings.send_queue_size)
    delivered = DeliveredReplies(state.store, conversation_id)
    peer.on_sent = delivered.on_sent
    consented = session.consent_version
    follower = Follower(state.store, peer.send, for_visitor, settled=_settled(state))
    follower.follow(conversation_id, conversation.last_seq)

    def on_policy(version: str) -> None:
        if version != consented:
            peer.send_frame(protocol.error("consent_required", _OUTDATED))
            peer.close(CLOSE_NO_CONSENT, "policy changed")

    async def recheck(forget_policy: bool = True) -> None:
        """After a broadcast outage, or before this socket's subscriptions were in force: an
        erasure, a sign-out or a new policy published by another process may have gone unheard."""
        with contextlib.suppress(Exception):
            if await state.store.get_visitor_session(session.id) is None:
                peer.send_frame(protocol.error("not_signed_in", "Your session has ended."))
                peer.close(CLOSE_SESSION_ENDED, "session ended")
                return
            if forget_policy:  # else the process's own policy listener kept the cache right
                state.policies.forget()
            on_policy((await state.policies.current()).version)

    online = state.hub.agents_online()

    def on_presence(_: str) -> None:
        # This process's own view, as in welcome; sent only when it changed for this socket.
        nonlocal online
        now = state.hub.agents_online()
        if now != online:
            online = now
            peer.send_frame(protocol.presence_frame(now))

    subs: list[Subscription] = [
        state.hub.subscribe(conversation_channel(conversation_id),
                            _conversation_listener(peer, follower, "visitor")),
        state.hub.subscribe(session_channel(session.id), ender(peer)),
        state.hub.subscribe(POLICY_CHANNEL, on_policy),
        state.hub.subscribe(PRESENCE_CHANNEL, on_presence),
        state.hub.subscribe(CONNECTION_CHANNEL, _on_connection(peer, follower, recheck)),
    ]
    settling = _once_settled(state, partial(recheck, forget_policy=False))
    log.info("visitor socket open conversation=%s", conversation_id)
    peer.send_frame({
        "type": "welcome",
        "conversation_id": conversation_id,
        "status": conversation.status,
        "agents_online": online,
        "last_seq": conversation.last_seq,
        "agent": conversation.agent_display_name,
        # What the customer has read, by any browser: the widget counts newer replies unread.
        "read_seq": (await state.store.read_state(conversation_id))["read_seq"],
    })
    limiter = Limiter(ws, peer, state.limits)
    try:
        await state.hub.visitors.arrived(conversation_id)  # the agent sees the customer is here
        async for text in frames(ws, peer, state.settings.socket_idle_seconds):
            if peer.closing:
                continue  # we are closing: read on until the close handshake completes
            try:
                frame = protocol.parse(text, "visitor")
            except protocol.ProtocolError as exc:
                if limiter.allow(None):  # bad frames count too, or errors could be flooded
                    peer.send_frame(exc.frame())
                continue
            if not limiter.allow(frame):
                continue
            if isinstance(frame, protocol.Read):
                delivered.reads = True  # this client says itself what was seen
            try:
                if isinstance(frame, protocol.Message) and (
                    await state.policies.current()
                ).version != consented:
                    # A policy published in another process: found within the cache's seconds.
                    on_policy("")
                    continue
                await _visitor_frame(state, peer, frame, conversation_id, customer.id,
                                     customer.name, follower)
            except NotFound:
                # Erased from another process (`chatserver erase`, a purge): the session is gone.
                if await state.store.get_visitor_session(session.id) is None:
                    peer.send_frame(protocol.error("not_signed_in", "Your session has ended."))
                    peer.close(CLOSE_SESSION_ENDED, "session ended")
                else:
                    peer.send_frame(protocol.error("not_found", "Nothing is here."))
            except ChatError as exc:
                peer.send_frame(protocol.error(exc.code, exc.message))
    finally:
        for sub in subs:
            sub.cancel()
        if settling is not None:
            settling.cancel()
        follower.stop()
        await peer.finish()
        await delivered.close()
        await state.hub.visitors.left(conversation_id)
        log.info("visitor socket closed conversation=%s", conversation_id)


async def _visitor_frame(
    state: AppState, peer: Peer, frame: protocol.Frame, conversation_id: str,
    customer_id: str, author: str, follower: Follower,
) -> None:
    # `state` is handed down: looking it up from the socket per frame cost 2% of the loop.
    hub = state.hub
    if isinstance(frame, protocol.Message):
        started = time.perf_counter()
        message = await hub.post(
            conversation_id, sender="visitor", sender_id=customer_id, author=author,
            body=frame.body, client_msg_id=frame.client_msg_id,
        )
        peer.send_frame({"type": "ack", "client_msg_id": frame.client_msg_id, "seq": message.seq})
        metrics.ack_sent(time.perf_counter() - started)
    elif isinstance(frame, protocol.Resume):
        await _replay(state, peer, conversation_id, frame.after_seq, follower)
    elif isinstance(frame, protocol.Typing):
        await hub.typing(conversation_id, sender="visitor", author=author, state=frame.state)
    elif isinstance(frame, protocol.Close):
        await hub.close(conversation_id, by="the customer", by_kind="visitor")
    elif isinstance(frame, protocol.Read):
        await hub.read(conversation_id, frame.seq, sender="visitor")
    elif isinstance(frame, protocol.Rating):
        await hub.rate(conversation_id, score=frame.score, comment=frame.comment)
    elif isinstance(frame, protocol.Ping):
        peer.send_frame({"type": "pong"})


async def _replay(state: Any, peer: Peer, conversation_id: str, after_seq: int,
                  follower: Follower) -> None:
    first = True
    while True:
        chunk = await state.store.messages_after(conversation_id, after_seq, REPLAY_CHUNK)
        # The first chunk repeats, in its place, what came live before the replay; later ones
        # leave out what came live after the chunk before (already sent, in order).
        floor = after_seq if first else follower.sent.get(conversation_id, after_seq)
        if chunk:  # before the write: a live frame or catch-up meanwhile must not repeat these
            follower.replayed(conversation_id, chunk[-1].seq)
        await peer.replay([m.frame() for m in chunk if m.seq > floor])
        if len(chunk) < REPLAY_CHUNK:
            return
        after_seq, first = chunk[-1].seq, False


async def _agent_socket(ws: WebSocket) -> None:
    state = app_state(ws)
    if not origin_allowed(ws, ws.headers.get("origin")):
        await ws.close(1008)
        return
    session_hash = staff_session_hash(ws)
    staff = await staff_for_session(ws, session_hash) if session_hash else None
    if staff is None or session_hash is None:
        await refuse(ws, NotSignedIn())
        return
    ip = client_ip(ws)
    ticket = await state.limits.admit_socket(ip, session_hash)
    if ticket.refused:
        await refuse(ws, RateLimited(ticket.refused, code="too_many_sockets"))
        return
    try:
        await _agent_session(ws, staff, session_hash)
    finally:
        await state.limits.release_socket(ticket)


class Following:
    """The conversations one agent socket follows (`watched`) and those it knows are its
    agent's own (`own`), where a message needs no look-up. A `status` frame saying someone
    else has a conversation now (a transfer, a takeover) ends both: the frame goes out first,
    then the socket stops hearing the conversation. Admins go on following what they gave
    away, but no longer write to it without a fresh look-up."""

    def __init__(self, hub: Any, peer: Peer, staff: Staff, follower: Follower) -> None:
        self.hub = hub
        self.staff = staff
        self.follower = follower
        self.listen = _conversation_listener(peer, follower, "agent")
        self.watched: dict[str, Subscription] = {}
        self.own: set[str] = set()

    def watch(self, conversation_id: str, last_seq: int | None = None) -> None:
        if conversation_id not in self.watched:
            self.follower.follow(conversation_id, last_seq)
            self.watched[conversation_id] = self.hub.subscribe(
                conversation_channel(conversation_id),
                lambda payload: self._heard(conversation_id, payload))

    def _heard(self, conversation_id: str, payload: str) -> None:
        self.listen(payload)
        if not payload.startswith('{"type":"status"'):
            return
        frame = json.loads(payload)
        if frame.get("status") == "closed" or frame.get("agent_id") == self.staff.id:
            return
        self.own.discard(conversation_id)
        if self.staff.role != "admin":
            self.unwatch(conversation_id)

    def unwatch(self, conversation_id: str) -> None:
        self.own.discard(conversation_id)
        self.follower.unfollow(conversation_id)
        sub = self.watched.pop(conversation_id, None)
        if sub is not None:
            sub.cancel()

    def cancel(self) -> None:
        for sub in self.watched.values():
            sub.cancel()
        self.watched.clear()


async def _agent_session(ws: WebSocket, staff: Staff, session_hash: str) -> None:
    await ws.accept()
    metrics.socket_opened("agent")
    try:
        await _agent_chat(ws, staff, session_hash)
    finally:
        metrics.socket_closed("agent")


async def _agent_chat(ws: WebSocket, staff: Staff, session_hash: str) -> None:
    state = app_state(ws)
    hub = state.hub
    peer = Peer(ws, state.settings.send_queue_size)
    follower = Follower(state.store, peer.send, settled=_settled(state))
    following = Following(hub, peer, staff, follower)
    watch = following.watch
    pipeline = Pipeline(peer, AGENT_IN_FLIGHT)

    async def recheck() -> None:
        """After a broadcast outage: a sign-out may have gone unheard, and the queue moved."""
        with contextlib.suppress(Exception):
            if await staff_for_session(ws, session_hash) is None:
                peer.close(CLOSE_SESSION_ENDED, "session ended")

    def on_queue(payload: str) -> None:
        peer.send(hub.queue_payload_for(payload, staff.id))

    def on_erased(payload: str) -> None:
        ids = json.loads(payload)
        for conversation_id in ids:
            following.unwatch(conversation_id)
        peer.send_frame(erased_frame(ids))

    def on_staff(payload: str) -> None:
        display_name = read_profile_notice(payload)
        if display_name is not None:  # on the next messages and notices
            following.staff = dataclasses.replace(following.staff, display_name=display_name)
        else:
            watch(*read_staff_notice(payload))

    subs = [
        hub.subscribe(QUEUE_CHANNEL, on_queue),
        hub.subscribe(session_channel(session_hash), ender(peer)),
        hub.subscribe(staff_channel(staff.id), on_staff),
        hub.subscribe(ERASED_CHANNEL, on_erased),
        hub.subscribe(CONNECTION_CHANNEL, _on_connection(peer, follower, recheck)),
    ]
    await hub.agent_connected(staff.id, away=staff.id in await state.store.away_staff())
    # A claim or transfer (staff channel) is heard from here on, before the queue is read.
    await hub.broadcast.settled()
    if hub.broadcast.per_channel:  # a sign-out published before they were in force went unheard
        await recheck()
    log.info("agent socket open staff=%s", staff.id)
    try:
        queue = await hub.queue_frame_for(staff)
        for item in queue["conversations"]:
            if item["status"] == "active" and item["agent_id"] == staff.id:
                watch(item["conversation_id"], item["last_seq"])
        peer.send_frame(queue)
        limiter = Limiter(ws, peer, state.limits, staff=True)
        checked = time.monotonic()
        async for text in frames(ws, peer, state.settings.socket_idle_seconds):
            if peer.closing:
                continue  # we are closing: read on until the close handshake completes
            if time.monotonic() - checked > SESSION_RECHECK_SECONDS:
                # An open dashboard keeps its sign-in alive, within its absolute lifetime.
                checked = time.monotonic()
                if await staff_for_session(ws, session_hash) is None:
                    peer.close(CLOSE_SESSION_ENDED, "session ended")
                    continue
            try:
                frame = protocol.parse(text, "agent")
            except protocol.ProtocolError as exc:
                if limiter.allow(None):
                    peer.send_frame(exc.frame())
                continue
            if not limiter.allow(frame):
                continue
            if isinstance(frame, protocol.Message):  # read on while it is stored
                await pipeline.add(frame.conversation_id or "", partial(
                    _agent_frame_or_error, ws, state, peer, frame, following))
                continue
            await pipeline.drain()  # a claim, close, transfer... follows every message before it
            await _agent_frame_or_error(ws, state, peer, frame, following)
    finally:
        await pipeline.drain()
        await hub.agent_disconnected(staff.id)
        for sub in subs:
            sub.cancel()
        following.cancel()
        follower.stop()
        await peer.finish()
        log.info("agent socket closed staff=%s", staff.id)


async def _agent_frame_or_error(ws: WebSocket, state: AppState, peer: Peer, frame: protocol.Frame,
                                following: Following) -> None:
    try:
        await _agent_frame(ws, state, peer, frame, following.staff, following)
    except ChatError as exc:
        error = protocol.error(exc.code, exc.message)
        conversation_id = getattr(frame, "conversation_id", None)
        if conversation_id:
            error["conversation_id"] = conversation_id
        peer.send_frame(error)


async def _agent_frame(
    ws: WebSocket,
    state: AppState,  # handed down: looking it up from the socket per frame cost 2% of the loop
    peer: Peer,
    frame: protocol.Frame,
    staff: Staff,
    following: Following,
) -> None:
    hub = state.hub
    watch = following.watch
    if isinstance(frame, protocol.Ping):
        peer.send_frame({"type": "pong"})
        return
    conversation_id = getattr(frame, "conversation_id", None)
    assert conversation_id is not None
    if isinstance(frame, protocol.Claim):
        # Only once the claim is decided and ours: a socket that subscribed first would hear
        # another agent's conversation for as long as a losing claim takes. A won claim tells
        # this agent's sockets (this one too) to follow it before its status frame goes out.
        conversation, claimed_now = await hub.claim(conversation_id, staff)
        watch(conversation_id, conversation.last_seq)
        if not claimed_now:  # ours already (another tab, say): nothing was published
            peer.send_frame(status_frame(conversation))
        return
    if isinstance(frame, protocol.Transfer):
        # The receiving agent's sockets (this one, for a takeover) follow it through their
        # staff channel; the giving agent's stop on seeing the status frame (Following).
        await handover.transfer(hub, staff, conversation_id, frame.to, ip=client_ip(ws))
        return
    if isinstance(frame, protocol.Resume):
        conversation = await hub.open_for_reading(conversation_id, staff,
                                                  after_seq=frame.after_seq, ip=client_ip(ws))
        if conversation.agent_id == staff.id:
            watch(conversation_id, conversation.last_seq)
        await _replay(state, peer, conversation_id, frame.after_seq, following.follower)
        await _replay_notes(state, peer, conversation_id, frame.after_seq)
        for mark in await hub.stored_marks(conversation_id):  # "Seen" survives a reload
            peer.send_frame(mark)
        here = await hub.visitors.online(conversation_id)
        if here is not None:
            peer.send_frame(protocol.visitor_presence_frame(conversation_id, here))
        return
    if isinstance(frame, protocol.Note):
        await _agent_note(peer, hub, frame, staff)
        return
    if conversation_id not in following.own:
        found = await state.store.get_conversation(conversation_id)
        if found is None:  # erased, or never was
            raise NotFound("No such conversation.")
        if found.agent_id != staff.id:
            if isinstance(frame, protocol.Close) and found.status == "queued":
                await hub.close(conversation_id, by=staff.display_name, by_kind="agent")
                return
            raise Forbidden("Claim the conversation first.", code="not_claimed")
        watch(conversation_id, found.last_seq)
        following.own.add(conversation_id)
    if isinstance(frame, protocol.Message):
        started = time.perf_counter()
        message = await hub.post(  # agents send nothing to a customer who withdrew consent
            conversation_id, sender="agent", sender_id=str(staff.id), author=staff.display_name,
            body=frame.body, client_msg_id=frame.client_msg_id, unless_paused=True,
        )
        peer.send_frame({"type": "ack", "conversation_id": conversation_id,
                         "client_msg_id": frame.client_msg_id, "seq": message.seq})
        metrics.ack_sent(time.perf_counter() - started)
    elif isinstance(frame, protocol.Typing):
        await hub.typing(conversation_id, sender="agent", author=staff.display_name,
                         state=frame.state)
    elif isinstance(frame, protocol.Close):
        await hub.close(conversation_id, by=staff.display_name, by_kind="agent")
    elif isinstance(frame, protocol.Read):
        await hub.read(conversation_id, frame.seq, sender="agent")


async def _replay_notes(state: Any, peer: Peer, conversation_id: str, after_seq: int) -> None:
    """Staff replays carry the notes written since `after_seq` (from the message at that seq
    on: a note written after it shares its seq); clients tell notes apart by note_id."""
    notes = await state.store.notes_after(conversation_id, after_seq)
    if notes:
        await peer.replay([protocol.note_frame(n) for n in notes])


async def _agent_note(peer: Peer, hub: Any, frame: protocol.Note, staff: Staff) -> None:
    """A staff-only note: stored, acked like a message (its seq is the message it follows,
    note_id names it), relayed to staff only."""
    note = await hub.note(frame.conversation_id, staff, body=frame.body,
                          client_msg_id=frame.client_msg_id)
    peer.send_frame({"type": "ack", "conversation_id": frame.conversation_id,
                     "client_msg_id": frame.client_msg_id, "seq": note.after_seq,
                     "note_id": note.id})
