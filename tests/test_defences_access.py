"""Access rules: agents read queued conversations and their own, admins any; messages, typing
and close need the claim; a visitor socket is bound to its own conversation; admin routes need
an admin. Each is tried at the rule itself (the hub) and through the sockets and routes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatserver.errors import Forbidden, NotFound

from .inprocess import App, WebSocketTestSession, receive, running_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    with running_app(tmp_path) as running:
        yield running


def frame_until(ws: WebSocketTestSession, kind: str, **fields: Any) -> dict[str, Any]:
    """The next frame of this type (and these fields), skipping others."""
    for _ in range(50):
        frame: dict[str, Any] = receive(ws)
        if frame.get("type") == kind and all(frame.get(k) == v for k, v in fields.items()):
            return frame
    raise AssertionError(f"no {kind} frame")


def frames_until_pong(ws: WebSocketTestSession) -> list[dict[str, Any]]:
    """Everything the server sent before answering a ping sent now: what this socket got."""
    ws.send_json({"type": "ping"})
    seen = []
    for _ in range(50):
        frame: dict[str, Any] = receive(ws)
        if frame["type"] == "pong":
            return seen
        seen.append(frame)
    raise AssertionError("no pong")


def open_chat(app: App, name: str = "Ada") -> tuple[Any, str]:
    """A visitor with a conversation; returns (client, conversation id)."""
    visitor = app.visitor_client(name=name, email=f"{name.lower()}@example.com")
    with visitor.websocket_connect("/ws/visitor") as ws:
        welcome = receive(ws)
        ws.send_json({"type": "message", "body": f"{name} asks", "client_msg_id": "q1"})
        frame_until(ws, "ack")
    return visitor, welcome["conversation_id"]


def test_the_hub_rule_for_reading_a_conversation(app: App) -> None:
    """Queued: any agent. Claimed: its agent and admins only. Unknown: not found."""
    store, hub = app.state.store, app.state.hub
    first, second = app.add_staff("first"), app.add_staff("second")
    boss = app.add_staff("boss", "admin")
    _, conversation_id = open_chat(app)
    for staff in (first, second, boss):
        assert app.call(hub.check_agent_access, conversation_id, staff).id == conversation_id
    app.call(hub.claim, conversation_id, first)
    assert app.call(hub.check_agent_access, conversation_id, first).agent_id == first.id
    assert app.call(hub.check_agent_access, conversation_id, boss).id == conversation_id
    with pytest.raises(Forbidden):
        app.call(hub.check_agent_access, conversation_id, second)
    with pytest.raises(NotFound):
        app.call(hub.check_agent_access, "cv_nope", boss)
    app.call(store.close_conversation, conversation_id)
    with pytest.raises(Forbidden):  # closed is not queued: still the claimer's only
        app.call(hub.check_agent_access, conversation_id, second)


def test_another_agents_conversation_is_closed_to_every_frame(app: App) -> None:
    """Once one agent claimed it, another agent can neither resume, write, type, close nor
    claim it, and receives none of its messages."""
    _, conversation_id = open_chat(app)
    first = app.staff_client("first")
    second = app.staff_client("second")
    with first.websocket_connect("/ws/agent") as ws1, \
            second.websocket_connect("/ws/agent") as ws2:
        frame_until(ws1, "queue")
        frame_until(ws2, "queue")
        ws1.send_json({"type": "claim", "conversation_id": conversation_id})
        frame_until(ws1, "status", conversation_id=conversation_id, status="active")
        attempts = [
            ({"type": "resume", "conversation_id": conversation_id, "after_seq": 0},
             "forbidden"),
            ({"type": "message", "conversation_id": conversation_id, "body": "mine now",
              "client_msg_id": "x1"}, "not_claimed"),
            ({"type": "typing", "conversation_id": conversation_id, "state": True},
             "not_claimed"),
            ({"type": "close", "conversation_id": conversation_id}, "not_claimed"),
            ({"type": "claim", "conversation_id": conversation_id}, "already_claimed"),
        ]
        for frame, code in attempts:
            ws2.send_json(frame)
            error = frame_until(ws2, "error")
            assert error["code"] == code, (frame, error)
            assert error["conversation_id"] == conversation_id
        # The claimer's next message goes to the claimer, not to the other agent.
        ws1.send_json({"type": "message", "conversation_id": conversation_id,
                       "body": "secret reply", "client_msg_id": "r1"})
        frame_until(ws1, "ack")
        seen = frames_until_pong(ws2)
        assert not any(f.get("body") == "secret reply" for f in seen)
        assert not any(f.get("type") == "message" for f in seen)
    convo = app.call(app.state.store.get_conversation, conversation_id)
    assert convo.status == "active" and convo.agent_name == "first"


def test_a_failed_claim_leaves_no_subscription(app: App) -> None:
    """A claim that loses does not leave the loser listening to the conversation."""
    visitor, conversation_id = open_chat(app)
    first = app.staff_client("first")
    second = app.staff_client("second")
    with first.websocket_connect("/ws/agent") as ws1, \
            second.websocket_connect("/ws/agent") as ws2:
        frame_until(ws1, "queue")
        frame_until(ws2, "queue")
        ws1.send_json({"type": "claim", "conversation_id": conversation_id})
        frame_until(ws1, "status", conversation_id=conversation_id)
        ws2.send_json({"type": "claim", "conversation_id": conversation_id})
        assert frame_until(ws2, "error")["code"] == "already_claimed"
        with visitor.websocket_connect("/ws/visitor") as wv:
            frame_until(wv, "welcome")
            wv.send_json({"type": "message", "body": "for my agent only", "client_msg_id": "q2"})
            frame_until(wv, "ack")
        frame_until(ws1, "message", body="for my agent only")
        seen = frames_until_pong(ws2)
        assert not any(f.get("body") == "for my agent only" for f in seen)


def test_admins_may_resume_any_conversation(app: App) -> None:
    """An admin reads a conversation another agent holds; an agent reads a queued one."""
    _, conversation_id = open_chat(app)
    app.call(app.state.hub.claim, conversation_id, app.add_staff("first"))
    boss = app.staff_client("boss", "admin")
    with boss.websocket_connect("/ws/agent") as ws:
        frame_until(ws, "queue")
        ws.send_json({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
        assert frame_until(ws, "message", seq=1)["body"] == "Ada asks"
    _, queued = open_chat(app, "Bob")
    agent = app.staff_client("second")
    with agent.websocket_connect("/ws/agent") as ws:
        frame_until(ws, "queue")
        ws.send_json({"type": "resume", "conversation_id": queued, "after_seq": 0})
        assert frame_until(ws, "message", seq=1)["body"] == "Bob asks"


def test_reading_a_queued_conversation_does_not_subscribe_to_it(app: App) -> None:
    """Resuming a queued conversation replays it once, without following it: its next message
    reaches the agent only after a claim. Resuming one's own conversation follows it."""
    visitor, conversation_id = open_chat(app)
    agent = app.staff_client("first")
    with agent.websocket_connect("/ws/agent") as ws, \
            visitor.websocket_connect("/ws/visitor") as wv:
        frame_until(ws, "queue")
        frame_until(wv, "welcome")
        ws.send_json({"type": "resume", "conversation_id": conversation_id, "after_seq": 0})
        frame_until(ws, "message", seq=1)
        wv.send_json({"type": "message", "body": "still waiting", "client_msg_id": "q2"})
        frame_until(wv, "ack")
        assert not any(f.get("body") == "still waiting" for f in frames_until_pong(ws))
    app.call(app.state.hub.claim, conversation_id, app.call(app.state.store.get_staff_by_name,
                                                           "first"))
    with agent.websocket_connect("/ws/agent") as ws, \
            visitor.websocket_connect("/ws/visitor") as wv:
        frame_until(ws, "queue")
        frame_until(wv, "welcome")
        ws.send_json({"type": "resume", "conversation_id": conversation_id, "after_seq": 3})
        frames_until_pong(ws)
        wv.send_json({"type": "message", "body": "now answered", "client_msg_id": "q3"})
        frame_until(ws, "message", body="now answered")


def test_an_agent_may_close_a_queued_conversation_without_claiming(app: App) -> None:
    """Closing spam from the queue needs no claim; closing someone else's does."""
    _, conversation_id = open_chat(app)
    agent = app.staff_client("first")
    with agent.websocket_connect("/ws/agent") as ws:
        frame_until(ws, "queue")
        ws.send_json({"type": "close", "conversation_id": conversation_id})
        frames_until_pong(ws)
    assert app.call(app.state.store.get_conversation, conversation_id).status == "closed"


def test_a_visitor_socket_is_bound_to_its_own_conversation(app: App) -> None:
    """Ids in visitor frames are not taken: a visitor naming another conversation still writes
    to and reads from their own, and may not claim."""
    _, theirs = open_chat(app, "Ada")
    mallory, mine = open_chat(app, "Mallory")
    assert theirs != mine
    with mallory.websocket_connect("/ws/visitor") as ws:
        frame_until(ws, "welcome", conversation_id=mine)
        ws.send_json({"type": "resume", "after_seq": 0, "conversation_id": theirs})
        assert receive(ws)["code"] == "unknown_field"
        ws.send_json({"type": "claim", "conversation_id": theirs})
        assert frame_until(ws, "error")["code"] == "unknown_type"
        ws.send_json({"type": "resume", "after_seq": 0})
        replayed = frame_until(ws, "message", seq=1)
        assert replayed["conversation_id"] == mine and replayed["body"] == "Mallory asks"
    messages = app.call(app.state.store.messages_after, theirs, 0, 100)
    assert [m.body for m in messages] == ["Ada asks"]


def test_admin_routes_need_an_admin(app: App) -> None:
    """Anonymous: 401; an agent: 403 forbidden; an admin: 200."""
    anonymous = app.client()
    agent = app.staff_client("first")
    boss = app.staff_client("boss", "admin")
    for path in ("/api/admin/conversations", "/api/admin/audit", "/api/admin/staff"):
        assert anonymous.get(path).status_code == 401, path
        refused = agent.get(path)
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden", path
        assert boss.get(path).status_code == 200, path


def test_agent_socket_needs_a_staff_session(app: App) -> None:
    """No cookie, or a visitor's cookie, on the agent socket: not signed in (4401)."""
    visitor = app.visitor_client()
    for client in (app.client(), visitor):
        with client.websocket_connect("/ws/agent") as ws:
            assert receive(ws)["code"] == "not_signed_in"
