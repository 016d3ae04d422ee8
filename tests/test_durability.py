"""Nothing acknowledged is lost: kill -9 the server, restart it, and every acked message is there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from .support import Server, Visitor


async def test_acked_messages_survive_kill_9_and_replay_once_in_order(
    make_server: Callable[..., Server],
) -> None:
    """Acked messages written just before SIGKILL are replayed after restart, once and in order."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    visitor = await Visitor(server).start()
    vs = await visitor.socket()
    welcome = await vs.wait_type("welcome")
    acked: dict[str, int] = {}
    for n in range(50):
        await vs.send({"type": "message", "body": f"durable {n}", "client_msg_id": f"d{n}"})
    for n in range(50):
        acked[f"d{n}"] = (await vs.wait_type("ack", client_msg_id=f"d{n}"))["seq"]
    server.kill9()  # no shutdown hook runs: only what was committed survives

    server.start()  # same port, same data folder
    back = await visitor.socket()
    again = await back.wait_type("welcome")
    assert again["conversation_id"] == welcome["conversation_id"]
    assert again["last_seq"] == 50
    await back.send({"type": "resume", "after_seq": 0})
    replayed = [await back.wait_type("message") for _ in range(50)]
    assert [m["seq"] for m in replayed] == list(range(1, 51))
    assert {m["client_msg_id"]: m["seq"] for m in replayed} == acked
    assert [m["body"] for m in replayed] == [f"durable {n}" for n in range(50)]

    # Resending an acked message after the crash (its ack "lost") is not stored twice.
    await back.send({"type": "message", "body": "durable 7", "client_msg_id": "d7"})
    assert (await back.wait_type("ack", client_msg_id="d7"))["seq"] == acked["d7"]
    await back.send({"type": "message", "body": "after", "client_msg_id": "after"})
    assert (await back.wait_type("ack", client_msg_id="after"))["seq"] == 51
    await back.close()
    await visitor.aclose()


async def test_no_ack_precedes_its_commit_under_pipelining(
    make_server: Callable[..., Server],
) -> None:
    """Several sockets each send 150 messages without waiting; once 200 acks have been read, with
    hundreds still in flight, the server is killed -9. Every acked message is stored under the
    seq of its ack, and each conversation holds a gapless prefix of what its socket sent, in
    the order sent."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    visitors = [await Visitor(server).start(name=f"Piper {n}", email=f"p{n}@example.com")
                for n in range(4)]
    sockets = [await v.socket() for v in visitors]
    conversations = [(await s.wait_type("welcome"))["conversation_id"] for s in sockets]
    per_socket = 150
    acked: dict[tuple[int, str], int] = {}
    killed = asyncio.Event()

    async def read_acks(n: int) -> None:
        while not killed.is_set():
            try:
                frame = json.loads(await sockets[n].ws.recv())
            except Exception:  # noqa: BLE001 - the socket dies with the server
                return
            if frame.get("type") == "ack" and not killed.is_set():
                acked[(n, frame["client_msg_id"])] = frame["seq"]
                if len(acked) >= 200:
                    server.kill9()  # synchronous: no frame is read between the ack and the kill
                    killed.set()

    readers = [asyncio.create_task(read_acks(n)) for n in range(len(sockets))]
    for i in range(per_socket):
        for n, socket in enumerate(sockets):
            if killed.is_set():
                break
            await socket.send({"type": "message", "body": f"{n}:{i}", "client_msg_id": f"m{i}"})
    await asyncio.wait_for(killed.wait(), 30)
    await asyncio.gather(*readers)
    assert 200 <= len(acked) < len(sockets) * per_socket  # the kill came mid-stream

    server.start()
    try:
        for n, conversation_id in enumerate(conversations):
            stored = server.query(
                "SELECT seq, body, client_msg_id FROM messages WHERE conversation_id = ? "
                "AND sender = 'visitor' ORDER BY seq", conversation_id)
            mine = {cid: seq for (k, cid), seq in acked.items() if k == n}
            by_id = {cid: seq for seq, _, cid in stored}
            for cid, seq in mine.items():
                assert by_id.get(cid) == seq, f"acked {cid} as seq {seq}, stored {by_id.get(cid)}"
            # Only visitor messages were sent: seqs 1..k, bodies in the order the socket sent.
            assert [seq for seq, _, _ in stored] == list(range(1, len(stored) + 1))
            assert [body for _, body, _ in stored] == [f"{n}:{i}" for i in range(len(stored))]
    finally:
        for v in visitors:
            await v.aclose()
