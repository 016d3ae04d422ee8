"""Bad input on sockets gets a clear error or a close, and a neighbouring conversation never notices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable

import pytest
from websockets.exceptions import InvalidStatus

from .support import Agent, Server, Socket, Visitor, open_socket


async def _pair(server: Server) -> tuple[Visitor, Socket, str]:
    v = await Visitor(server).start()
    s = await v.socket()
    welcome = await s.wait_type("welcome")
    return v, s, welcome["conversation_id"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json at all", "invalid_json"),
        ("[1, 2, 3]", "invalid_frame"),
        ('{"no": "type"}', "unknown_type"),
        ('{"type": "explode"}', "unknown_type"),
        ('{"type": "message", "body": 5, "client_msg_id": "a"}', "invalid_field"),
        ('{"type": "message", "body": "  ", "client_msg_id": "a"}', "invalid_field"),
        ('{"type": "message", "body": "hi"}', "invalid_field"),
        ('{"type": "message", "body": "hi", "client_msg_id": "a", "cc": "x"}', "unknown_field"),
        ('{"type": "resume", "after_seq": -1}', "invalid_field"),
        ('{"type": "resume", "after_seq": "3"}', "invalid_field"),
        ('{"type": "typing", "state": "yes"}', "invalid_field"),
        ('{"type": "claim", "conversation_id": "x"}', "unknown_type"),
        (json.dumps({"type": "message", "body": "x" * 4001, "client_msg_id": "a"}),
         "body_too_long"),
        ("[" * 5000 + "]" * 5000, "invalid_json"),
    ],
)
async def test_bad_visitor_frames_get_error_frames_and_the_socket_stays(
    server: Server, frame: str, code: str
) -> None:
    """Each malformed frame is answered with an error frame naming it; the socket keeps working."""
    v, s, _ = await _pair(server)
    await s.send(frame)
    error = await s.wait_type("error")
    assert error["code"] == code
    await s.send({"type": "message", "body": "still here", "client_msg_id": "ok"})
    assert (await s.wait_type("ack", client_msg_id="ok"))["seq"] == 1
    await s.close()
    await v.aclose()


async def test_binary_frame_is_refused_with_an_error(server: Server) -> None:
    """Binary frames are not part of the protocol: error frame, socket open."""
    v, s, _ = await _pair(server)
    await s.send(b"\x00\x01binary")
    assert (await s.wait_type("error"))["code"] == "binary_not_supported"
    await s.send({"type": "ping"})
    await s.wait_type("pong")
    await s.close()
    await v.aclose()


async def test_oversized_frame_closes_1009_and_neighbour_keeps_flowing(server: Server) -> None:
    """A frame over 64 KiB closes that socket with 1009; another conversation is unaffected."""
    v1, bad, _ = await _pair(server)
    v2, good, _ = await _pair(server)
    await bad.send(json.dumps({"type": "message", "body": "x" * 70000, "client_msg_id": "big"}))
    assert await bad.closed_code() == 1009
    for n in range(5):
        await good.send({"type": "message", "body": f"fine {n}", "client_msg_id": f"g{n}"})
        assert (await good.wait_type("ack", client_msg_id=f"g{n}"))["seq"] == n + 1
    await good.close()
    await v1.aclose()
    await v2.aclose()


async def test_invalid_utf8_closes_1007(server: Server) -> None:
    """A text frame that is not UTF-8 closes the socket with 1007."""
    v, s, _ = await _pair(server)
    # Raw bytes as a TEXT frame through the protocol object, bypassing the client's encoding.
    s.ws.protocol.send_text(b"\xff\xfe\xfd")
    s.ws.send_data()
    assert await s.closed_code() == 1007
    await v.aclose()


async def test_garbage_flood_on_one_socket_does_not_disturb_a_neighbour(server: Server) -> None:
    """While one socket sends hundreds of bad frames, another conversation's messages all arrive."""
    v1, noisy, _ = await _pair(server)
    v2, calm, calm_id = await _pair(server)
    agent = await Agent(server, "agent2").login()
    ags = await agent.socket()
    await ags.wait_type("queue")
    await ags.send({"type": "claim", "conversation_id": calm_id})
    await ags.wait_type("status", conversation_id=calm_id)

    async def flood() -> None:
        for n in range(300):
            await noisy.send("{broken" if n % 2 else b"\x00")

    async def talk() -> None:
        for n in range(20):
            await calm.send({"type": "message", "body": f"calm {n}", "client_msg_id": f"c{n}"})
            await calm.wait_type("ack", client_msg_id=f"c{n}")

    await asyncio.gather(flood(), talk())
    got = [await ags.wait_type("message", conversation_id=calm_id, sender="visitor")
           for _ in range(20)]
    assert [m["body"] for m in got] == [f"calm {n}" for n in range(20)]
    for s in (noisy, calm, ags):
        await s.close()
    for c in (v1, v2, agent):
        await c.aclose()


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1.evil.example",
                                    "http://127.0.0.1:1"])
async def test_foreign_origin_is_refused_at_the_handshake(server: Server, visitor: Visitor,
                                                          origin: str) -> None:
    """A browser socket from a foreign origin, a look-alike or another port gets HTTP 403."""
    with pytest.raises(InvalidStatus) as refused:
        await visitor.socket(origin=origin)
    assert refused.value.response.status_code == 403


async def test_own_origin_and_allowed_origin_are_accepted(
    make_server: Callable[..., Server],
) -> None:
    """The server's own origin and one listed in CHATSERVER_ALLOWED_ORIGINS may connect."""
    server = make_server(CHATSERVER_ALLOWED_ORIGINS="https://shop.example")
    v = await Visitor(server).start()
    for origin in (server.origin, "https://shop.example"):
        s = await v.socket(origin=origin)
        assert (await s.wait_type("welcome"))["type"] == "welcome"
        await s.close()
    with pytest.raises(InvalidStatus):
        await v.socket(origin="https://shop.example.evil")
    await v.aclose()


async def test_agent_socket_needs_a_staff_cookie(server: Server, visitor: Visitor) -> None:
    """No staff cookie, or a visitor's cookie on the agent socket, closes 4401."""
    bare = await open_socket(server, "/ws/agent")
    assert await bare.closed_code() == 4401
    from .support import cookie_header

    wrong = await open_socket(server, "/ws/agent", cookie_header(visitor.http))
    assert await wrong.closed_code() == 4401


async def test_message_flood_is_rate_limited_with_4429(make_server: Callable[..., Server]) -> None:
    """Past the per-socket message rate the sender gets rate_limited and close 4429."""
    server = make_server(CHATSERVER_RATE_MESSAGES="5", CHATSERVER_RATE_WINDOW_SECONDS="60")
    v = await Visitor(server).start()
    s = await v.socket()
    await s.wait_type("welcome")
    for n in range(8):
        await s.send({"type": "message", "body": f"m{n}", "client_msg_id": f"m{n}"})
    assert await s.closed_code() == 4429
    assert any(f.get("code") == "rate_limited" for f in s.frames)
    acks = [f for f in s.frames if f["type"] == "ack"]
    assert len(acks) == 5
    await v.aclose()


async def test_slow_reader_is_disconnected_and_others_do_not_wait(
    make_server: Callable[..., Server],
) -> None:
    """A socket that never reads is dropped once its queue fills; the sender never stalls."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1", CHATSERVER_SEND_QUEUE_SIZE="8")
    v = await Visitor(server).start()
    sender = await v.socket()
    await sender.wait_type("welcome")
    from websockets.asyncio.client import connect

    from .support import cookie_header

    # A second tab of the same visitor that reads nothing, with a tiny receive buffer.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    slow = await connect(server.ws_url + "/ws/visitor", sock=raw,
                         additional_headers={"Cookie": cookie_header(v.http)}, max_queue=1)
    body = "y" * 3000
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    n = 0
    while "send queue is full" not in server.log():
        assert loop.time() < deadline, "the slow socket was never dropped"
        for _ in range(25):
            await sender.send({"type": "message", "body": body, "client_msg_id": f"s{n}"})
            n += 1
        # The sender is never held up by the slow tab: each batch is acked promptly.
        await sender.wait_type("ack", client_msg_id=f"s{n - 1}", timeout=5)
    # Now the slow tab reads: what it was sent, then the close that dropped it.
    received = 0
    with contextlib.suppress(Exception):
        async for _ in slow:
            received += 1
    assert slow.close_code == 1013
    assert received < n
    await sender.close()
    await v.aclose()
