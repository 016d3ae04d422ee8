"""The two WebSocket endpoints: origin, identity, consent and limits, then the receive loop.

The socket plumbing (send queue, idle timeout, rate limits) is in connection.py; what a frame
does is decided here and carried out by the hub.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from . import consent, metrics, protocol
from .broadcast import Subscription
from .connection import Limiter, Peer, ender, frames, listener, refuse
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
from .hub import (
    POLICY_CHANNEL,
    PRESENCE_CHANNEL,
    QUEUE_CHANNEL,
    DeliveredReplies,
    conversation_channel,
    session_channel,
    staff_channel,
    status_frame,
)
from .storage.base import Staff
from .web.common import (
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
SESSION_RECHECK_SECONDS = 60.0
_OUTDATED = "The privacy policy changed; please read and accept it to go on chatting."


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
        if not state.limits.allow_new_conversation(ip):
            await refuse(ws, RateLimited("Too many new conversations from your address; "
                                         "please try again later."))
            return
        conversation, _ = await state.store.open_conversation(customer_id)
        state.hub.queue_changed()
    refused = state.limits.open_socket(ip, session.id)
    if refused:
        await refuse(ws, RateLimited(refused, code="too_many_sockets"))
        return
    try:
        await _visitor_session(ws, session, customer, conversation)
    finally:
        state.limits.close_socket(ip, session.id)


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

    def on_policy(version: str) -> None:
        if version != consented:
            peer.send_frame(protocol.error("consent_required", _OUTDATED))
            peer.close(CLOSE_NO_CONSENT, "policy changed")

    online = state.hub.agents_online()

    def on_presence(_: str) -> None:
        # This process's own view, as in welcome; sent only when it changed for this socket.
        nonlocal online
        now = state.hub.agents_online()
        if now != online:
            online = now
            peer.send_frame(protocol.presence_frame(now))

    subs: list[Subscription] = [
        state.hub.subscribe(conversation_channel(conversation_id), listener(peer, "visitor")),
        state.hub.subscribe(session_channel(session.id), ender(peer)),
        state.hub.subscribe(POLICY_CHANNEL, on_policy),
        state.hub.subscribe(PRESENCE_CHANNEL, on_presence),
    ]
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
                await _visitor_frame(ws, peer, frame, conversation_id, customer.id, customer.name)
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
        await peer.finish()
        await delivered.close()
        log.info("visitor socket closed conversation=%s", conversation_id)


async def _visitor_frame(
    ws: WebSocket, peer: Peer, frame: protocol.Frame, conversation_id: str, customer_id: str,
    author: str,
) -> None:
    state = app_state(ws)
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
        await _replay(state, peer, conversation_id, frame.after_seq)
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


async def _replay(state: Any, peer: Peer, conversation_id: str, after_seq: int) -> None:
    while True:
        chunk = await state.store.messages_after(conversation_id, after_seq, REPLAY_CHUNK)
        await peer.replay([m.frame() for m in chunk])
        if len(chunk) < REPLAY_CHUNK:
            return
        after_seq = chunk[-1].seq


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
    refused = state.limits.open_socket(ip, session_hash)
    if refused:
        await refuse(ws, RateLimited(refused, code="too_many_sockets"))
        return
    try:
        await _agent_session(ws, staff, session_hash)
    finally:
        state.limits.close_socket(ip, session_hash)


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
    listen = listener(peer, "agent")
    watched: dict[str, Subscription] = {}

    def watch(conversation_id: str) -> None:
        if conversation_id not in watched:
            watched[conversation_id] = hub.subscribe(conversation_channel(conversation_id), listen)

    def on_queue(payload: str) -> None:
        peer.send(hub.queue_payload_for(payload, staff.id))

    subs = [
        hub.subscribe(QUEUE_CHANNEL, on_queue),
        hub.subscribe(session_channel(session_hash), ender(peer)),
        hub.subscribe(staff_channel(staff.id), watch),
    ]
    await hub.agent_connected(staff.id)
    log.info("agent socket open staff=%s", staff.id)
    try:
        queue = await hub.queue_frame_for(staff)
        for item in queue["conversations"]:
            if item["status"] == "active" and item["agent_id"] == staff.id:
                watch(item["conversation_id"])
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
            try:
                await _agent_frame(ws, peer, frame, staff, watched, watch)
            except ChatError as exc:
                error = protocol.error(exc.code, exc.message)
                conversation_id = getattr(frame, "conversation_id", None)
                if conversation_id:
                    error["conversation_id"] = conversation_id
                peer.send_frame(error)
    finally:
        await hub.agent_disconnected(staff.id)
        for sub in [*subs, *watched.values()]:
            sub.cancel()
        await peer.finish()
        log.info("agent socket closed staff=%s", staff.id)


async def _agent_frame(
    ws: WebSocket,
    peer: Peer,
    frame: protocol.Frame,
    staff: Staff,
    watched: dict[str, Subscription],
    watch: Callable[[str], None],
) -> None:
    state = app_state(ws)
    hub = state.hub
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
        watch(conversation_id)
        if not claimed_now:  # ours already (another tab, say): nothing was published
            peer.send_frame(status_frame(conversation))
        return
    if isinstance(frame, protocol.Resume):
        conversation = await hub.open_for_reading(conversation_id, staff,
                                                  after_seq=frame.after_seq, ip=client_ip(ws))
        if conversation.agent_id == staff.id:
            watch(conversation_id)
        await _replay(state, peer, conversation_id, frame.after_seq)
        await _replay_notes(state, peer, conversation_id, frame.after_seq)
        mark = await hub.visitor_read_frame(conversation_id)
        if mark is not None:  # "seen" survives a reload of the dashboard
            peer.send_frame(mark)
        return
    if isinstance(frame, protocol.Note):
        await _agent_note(peer, hub, frame, staff)
        return
    if conversation_id not in watched:
        found = await state.store.get_conversation(conversation_id)
        if found is None or found.agent_id != staff.id:
            if isinstance(frame, protocol.Close) and found and found.status == "queued":
                await hub.close(conversation_id, by=staff.display_name, by_kind="agent")
                return
            raise Forbidden("Claim the conversation first.", code="not_claimed")
        watch(conversation_id)
    if isinstance(frame, protocol.Message):
        started = time.perf_counter()
        message = await hub.post(
            conversation_id, sender="agent", sender_id=str(staff.id), author=staff.display_name,
            body=frame.body, client_msg_id=frame.client_msg_id,
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
