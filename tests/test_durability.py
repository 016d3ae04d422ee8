"""Nothing acknowledged is lost: kill -9 the server, restart it, and every acked message is there."""

from __future__ import annotations

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
