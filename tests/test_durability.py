"""Nothing acknowledged is lost: kill -9 the server, restart it, and every acked message is there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from .support import Agent, Server, Visitor


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
    await vs.close()  # died with the server; closed here, not by the garbage collector later
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
    """Four visitors, and one agent socket answering all four conversations, each send 150
    messages without waiting (the agent socket keeps many in flight at once); once 300 acks have
    been read, with hundreds still in flight, the server is killed -9. Every acked message is
    stored under the seq of its ack, and each sender's messages in each conversation are a
    gapless prefix of what it sent, in the order sent."""
    server = make_server(CHATSERVER_LIMITS_EXEMPT="127.0.0.1")
    server.add_staff("pipe")
    visitors = [await Visitor(server).start(name=f"Piper {n}", email=f"p{n}@example.com")
                for n in range(4)]
    sockets = [await v.socket() for v in visitors]
    conversations = [(await s.wait_type("welcome"))["conversation_id"] for s in sockets]
    agent = await Agent(server, "pipe").login()
    agent_socket = await agent.socket()
    for conversation_id in conversations:
        await agent_socket.send({"type": "claim", "conversation_id": conversation_id})
        await agent_socket.wait_type("status", conversation_id=conversation_id)
    everyone = [*sockets, agent_socket]
    per_socket = 150
    acked: dict[tuple[str, str], int] = {}  # (conversation, client_msg_id) -> seq
    killed = asyncio.Event()

    async def read_acks(n: int) -> None:
        while not killed.is_set():
            try:
                frame = json.loads(await everyone[n].ws.recv())
            except Exception:  # noqa: BLE001 - the socket dies with the server
                return
            if frame.get("type") == "ack" and not killed.is_set():
                conversation_id = frame.get("conversation_id", conversations[min(n, 3)])
                acked[(conversation_id, frame["client_msg_id"])] = frame["seq"]
                if len(acked) >= 300:
                    server.kill9()  # synchronous: no frame is read between the ack and the kill
                    killed.set()

    readers = [asyncio.create_task(read_acks(n)) for n in range(len(everyone))]
    for i in range(per_socket):
        if killed.is_set():
            break
        for n, socket in enumerate(sockets):
            await socket.send({"type": "message", "body": f"v:{i}", "client_msg_id": f"v{i}"})
            await agent_socket.send({"type": "message", "conversation_id": conversations[n],
                                     "body": f"a:{i}", "client_msg_id": f"a{i}"})
    await asyncio.wait_for(killed.wait(), 30)
    await asyncio.gather(*readers)
    assert 300 <= len(acked) < 2 * len(sockets) * per_socket  # the kill came mid-stream
    assert any(cid.startswith("a") for _, cid in acked)  # the agent socket's acks among them

    server.start()
    try:
        for conversation_id in conversations:
            stored = server.query(
                "SELECT seq, sender, body, client_msg_id FROM messages "
                "WHERE conversation_id = ? ORDER BY seq", conversation_id)
            by_id = {cid: seq for seq, _, _, cid in stored if cid is not None}
            for (conv, cid), seq in acked.items():
                if conv == conversation_id:
                    assert by_id.get(cid) == seq, f"acked {cid} as {seq}, stored {by_id.get(cid)}"
            assert [row[0] for row in stored] == list(range(1, len(stored) + 1))  # gapless
            for sender, mark in (("visitor", "v"), ("agent", "a")):
                bodies = [body for _, who, body, _ in stored if who == sender]
                assert bodies == [f"{mark}:{i}" for i in range(len(bodies))]  # in order sent
    finally:
        for socket in everyone:  # died with the server; closed here, not by the collector later
            await socket.close()
        await agent.aclose()
        for v in visitors:
            await v.aclose()
