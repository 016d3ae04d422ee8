"""The two WebSocket endpoints: origin, identity, consent, then the receive and send loops.

Each socket gets a `Peer`: a bounded queue drained by its own sender task, so a slow reader only
ever delays itself; when its queue is full it is disconnected (close 1013) and resumes later from
storage. Replays are sent directly, under the same lock, so a large history exerts backpressure on
the socket that asked for it instead of overflowing its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from . import consent, protocol
from .broadcast import Subscription
from .errors import ChatError, ConsentRequired, Forbidden
from .hub import POLICY_CHANNEL, QUEUE_CHANNEL, conversation_channel, session_channel
from .ratelimit import TokenBucket
from .storage.base import Staff
from .web.common import (
    app_state,
    client_ip,
    origin_allowed,
    staff_session_hash,
    user_agent,
    visitor_session_hash,
)

log = logging.getLogger("chatserver.sockets")
REPLAY_CHUNK = 200
CLOSE_TOO_SLOW = 1013
CLOSE_NO_CONSENT = 4403
_OUTDATED = "The privacy policy changed; please read and accept it to go on chatting."
# Frames that are not stored cost less than messages against the same bucket.
CHEAP_FRAME_COST = 0.25


class Peer:
    """One open socket's outgoing side."""

    def __init__(self, ws: WebSocket, queue_size: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self.lock = asyncio.Lock()
        self.closing = False
        self.close_code: int | None = None
        self._sender = asyncio.get_running_loop().create_task(self._send_loop())
        self._closer: asyncio.Task[None] | None = None

    def send(self, text: str) -> None:
        """Queue a frame without waiting; safe to call from broadcast listeners."""
        if self.closing:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.info("dropping a socket whose send queue is full")
            self.close(CLOSE_TOO_SLOW, "too far behind; reconnect and resume")

    def send_frame(self, frame: dict[str, Any]) -> None:
        self.send(protocol.dump(frame))

    async def replay(self, frames: list[dict[str, Any]]) -> None:
        async with self.lock:
            for frame in frames:
                await self.ws.send_text(protocol.dump(frame))

    def close(self, code: int, reason: str = "") -> None:
        if self.closing:
            return
        self.closing = True
        self.close_code = code
        self._closer = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        # Let what is queued go out first (an error frame before a 4429, say), briefly.
        if not self._sender.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), 1.0)
        self._sender.cancel()
        try:
            async with self.lock:
                await self.ws.close(code, reason)
        except Exception:  # already closed by the other side
            log.debug("close after disconnect", exc_info=True)

    async def _send_loop(self) -> None:
        try:
            while True:
                text = await self.queue.get()
                try:
                    async with self.lock:
                        await self.ws.send_text(text)
                finally:
                    self.queue.task_done()
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away; the receive loop notices and cleans up
            log.debug("send failed", exc_info=True)
            self.closing = True

    async def finish(self) -> None:
        """After the receive loop: let a close we started complete, then stop sending."""
        self.closing = True
        if self._closer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._closer, 5)
        self._sender.cancel()


async def _refuse(ws: WebSocket, exc: ChatError) -> None:
    """Accept only to explain: an error frame and a close code the client can act on."""
    await ws.accept()
    await ws.send_text(protocol.dump(protocol.error(exc.code, exc.message)))
    await ws.close(exc.close_code or 1008, exc.code)


async def _frames(ws: WebSocket) -> Any:
    """Yield each text frame; binary frames come as bytes. Ends on disconnect."""
    while True:
        try:
            message = await ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        yield text if text is not None else (message.get("bytes") or b"")


class Limiter:
    def __init__(self, ws: WebSocket, peer: Peer) -> None:
        state = app_state(ws)
        self.peer = peer
        self.exempt = state.settings.is_exempt(client_ip(ws))
        self.bucket = TokenBucket(state.settings.rate_messages, state.settings.rate_window_seconds)

    def allow(self, frame: protocol.Frame | None) -> bool:
        """Charge one frame (None: one that failed to parse); False once over the limit."""
        if self.exempt:
            return True
        cost = 1.0 if isinstance(frame, protocol.Message) else CHEAP_FRAME_COST
        if self.bucket.take(cost):
            return True
        self.peer.send_frame(protocol.error("rate_limited", "Too many messages; slow down."))
        self.peer.close(4429, "rate limited")
        return False


def _listener(peer: Peer, skip_typing_from: str) -> Callable[[str], None]:
    own_typing = f'"sender":"{skip_typing_from}"'

    def listen(payload: str) -> None:
        if payload.startswith('{"type":"typing"') and own_typing in payload:
            return  # nobody needs to see their own typing
        peer.send(payload)

    return listen


def _ender(peer: Peer) -> Callable[[str], None]:
    return lambda code: peer.close(int(code), "session ended")


async def visitor_socket(ws: WebSocket) -> None:
    state = app_state(ws)
    if not origin_allowed(ws, ws.headers.get("origin")):
        await ws.close(1008)  # before accept: the handshake is answered with HTTP 403
        return
    session_hash = visitor_session_hash(ws)
    session = await state.store.get_visitor_session(session_hash) if session_hash else None
    if session is None:
        from .errors import NotSignedIn

        await _refuse(ws, NotSignedIn("No chat session: accept the privacy policy first."))
        return
    try:
        customer_id = consent.require_chat_consent(session, await state.policies.current())
    except ConsentRequired as exc:
        await _refuse(ws, exc)
        return
    customer = await state.store.get_customer(customer_id)
    if customer is None:
        await _refuse(ws, ConsentRequired(code="customer_required"))
        return
    await ws.accept()
    await state.store.record_access(session.id, "socket", client_ip(ws), user_agent(ws))
    conversation, created = await state.store.open_conversation(customer_id)
    if created:
        state.hub.queue_changed()
    conversation_id = conversation.id
    peer = Peer(ws, state.settings.send_queue_size)
    consented = session.consent_version

    def on_policy(version: str) -> None:
        if version != consented:
            peer.send_frame(protocol.error("consent_required", _OUTDATED))
            peer.close(CLOSE_NO_CONSENT, "policy changed")

    subs: list[Subscription] = [
        state.hub.subscribe(conversation_channel(conversation_id), _listener(peer, "visitor")),
        state.hub.subscribe(session_channel(session.id), _ender(peer)),
        state.hub.subscribe(POLICY_CHANNEL, on_policy),
    ]
    log.info("visitor socket open conversation=%s", conversation_id)
    peer.send_frame({
        "type": "welcome",
        "conversation_id": conversation_id,
        "status": conversation.status,
        "agents_online": state.hub.agents_online(),
        "last_seq": conversation.last_seq,
        "agent": conversation.agent_name,
    })
    limiter = Limiter(ws, peer)
    try:
        async for text in _frames(ws):
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
            if isinstance(frame, protocol.Message) and (
                await state.policies.current()
            ).version != consented:
                # A policy published in another process: found within the cache's few seconds.
                on_policy("")
                continue
            try:
                await _visitor_frame(ws, peer, frame, conversation_id, customer.id, customer.name)
            except ChatError as exc:
                peer.send_frame(protocol.error(exc.code, exc.message))
    finally:
        for sub in subs:
            sub.cancel()
        await peer.finish()
        log.info("visitor socket closed conversation=%s", conversation_id)


async def _visitor_frame(
    ws: WebSocket, peer: Peer, frame: protocol.Frame, conversation_id: str, customer_id: str,
    author: str,
) -> None:
    state = app_state(ws)
    hub = state.hub
    if isinstance(frame, protocol.Message):
        message = await hub.post(
            conversation_id, sender="visitor", sender_id=customer_id, author=author,
            body=frame.body, client_msg_id=frame.client_msg_id,
        )
        peer.send_frame({"type": "ack", "client_msg_id": frame.client_msg_id, "seq": message.seq})
    elif isinstance(frame, protocol.Resume):
        await _replay(state, peer, conversation_id, frame.after_seq)
    elif isinstance(frame, protocol.Typing):
        await hub.typing(conversation_id, sender="visitor", author=author, state=frame.state)
    elif isinstance(frame, protocol.Close):
        await hub.close(conversation_id, by="the customer", by_kind="visitor")
    elif isinstance(frame, protocol.Ping):
        peer.send_frame({"type": "pong"})


async def _replay(state: Any, peer: Peer, conversation_id: str, after_seq: int) -> None:
    while True:
        chunk = await state.store.messages_after(conversation_id, after_seq, REPLAY_CHUNK)
        await peer.replay([m.frame() for m in chunk])
        if len(chunk) < REPLAY_CHUNK:
            return
        after_seq = chunk[-1].seq


async def agent_socket(ws: WebSocket) -> None:
    state = app_state(ws)
    if not origin_allowed(ws, ws.headers.get("origin")):
        await ws.close(1008)
        return
    session_hash = staff_session_hash(ws)
    staff = await state.store.get_staff_session(session_hash) if session_hash else None
    if staff is None or session_hash is None:
        from .errors import NotSignedIn

        await _refuse(ws, NotSignedIn())
        return
    await ws.accept()
    hub = state.hub
    peer = Peer(ws, state.settings.send_queue_size)
    listen = _listener(peer, "agent")
    watched: dict[str, Subscription] = {}

    def watch(conversation_id: str) -> None:
        if conversation_id not in watched:
            watched[conversation_id] = hub.subscribe(conversation_channel(conversation_id), listen)

    subs = [
        hub.subscribe(QUEUE_CHANNEL, peer.send),
        hub.subscribe(session_channel(session_hash), _ender(peer)),
    ]
    hub.agent_connected(staff.id)
    log.info("agent socket open staff=%s", staff.id)
    try:
        queue = await hub.queue_frame()
        for item in queue["conversations"]:
            if item["status"] == "active" and item["agent_id"] == staff.id:
                watch(item["conversation_id"])
        peer.send_frame(queue)
        limiter = Limiter(ws, peer)
        async for text in _frames(ws):
            if peer.closing:
                continue  # we are closing: read on until the close handshake completes
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
        hub.agent_disconnected(staff.id)
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
        fresh = conversation_id not in watched
        watch(conversation_id)  # before the claim publishes, so we hear our own status frame
        try:
            conversation, claimed_now = await hub.claim(conversation_id, staff)
        except ChatError:
            if fresh:
                watched.pop(conversation_id).cancel()
            raise
        if not claimed_now:  # ours already (another tab, say): nothing was published
            peer.send_frame({"type": "status", "conversation_id": conversation_id,
                             "status": conversation.status, "agent": conversation.agent_name})
        return
    if isinstance(frame, protocol.Resume):
        conversation = await hub.check_agent_access(conversation_id, staff)
        if conversation.agent_id == staff.id:
            watch(conversation_id)
        await _replay(state, peer, conversation_id, frame.after_seq)
        return
    if conversation_id not in watched:
        found = await state.store.get_conversation(conversation_id)
        if found is None or found.agent_id != staff.id:
            if isinstance(frame, protocol.Close) and found and found.status == "queued":
                await hub.close(conversation_id, by=staff.name, by_kind="agent")
                return
            raise Forbidden("Claim the conversation first.", code="not_claimed")
        watch(conversation_id)
    if isinstance(frame, protocol.Message):
        message = await hub.post(
            conversation_id, sender="agent", sender_id=str(staff.id), author=staff.name,
            body=frame.body, client_msg_id=frame.client_msg_id,
        )
        peer.send_frame({"type": "ack", "conversation_id": conversation_id,
                         "client_msg_id": frame.client_msg_id, "seq": message.seq})
    elif isinstance(frame, protocol.Typing):
        await hub.typing(conversation_id, sender="agent", author=staff.name, state=frame.state)
    elif isinstance(frame, protocol.Close):
        await hub.close(conversation_id, by=staff.name, by_kind="agent")
