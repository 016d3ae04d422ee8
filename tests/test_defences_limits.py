"""Rate and count limits: token buckets per socket and per IP, socket caps per session and per
IP, new conversations per IP per hour, and the exempt networks. Unit tests of chatserver.limits
(time moved by hand, no sleeping), then the same limits through the sockets in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from chatserver import limits as limits_module
from chatserver.limits import Limits, TokenBucket
from chatserver.settings import Settings, load

from .inprocess import App, WebSocketTestSession, receive, running_app


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load(environ={
        "CHATSERVER_DATA_DIR": str(tmp_path),
        "CHATSERVER_RATE_MESSAGES": "5", "CHATSERVER_STAFF_RATE_MESSAGES": "7",
        "CHATSERVER_IP_RATE_MESSAGES": "9", "CHATSERVER_RATE_WINDOW_SECONDS": "10",
        "CHATSERVER_MAX_SOCKETS_PER_SESSION": "2", "CHATSERVER_MAX_SOCKETS_PER_IP": "3",
        "CHATSERVER_NEW_CONVERSATIONS_PER_IP_HOUR": "2",
        "CHATSERVER_LIMITS_EXEMPT": "10.0.0.0/8",
    })


def age(bucket: TokenBucket, seconds: float) -> None:
    """Pretend `seconds` passed since the bucket last refilled."""
    bucket.stamp -= seconds


def take_all(bucket: TokenBucket, cost: float = 1.0) -> int:
    taken = 0
    while bucket.take(cost):
        taken += 1
        assert taken < 10_000
    return taken


def pongs_without_refusal(ws: WebSocketTestSession, count: int) -> None:
    """Reads until `count` pongs came. A fresh queue or presence frame may come among them (an
    agent coming online refreshes the queue); what matters is every pong and no refusal."""
    got: list[dict[str, Any]] = []
    while sum(f["type"] == "pong" for f in got) < count:
        got.append(receive(ws))
    assert {f["type"] for f in got} <= {"pong", "queue", "presence"}, got


def test_a_bucket_gives_its_capacity_then_refuses() -> None:
    """A full bucket of 5 gives 5 messages, then none."""
    bucket = TokenBucket(5, 10)
    assert all(bucket.take() for _ in range(5))  # one token each by default
    assert not bucket.take()
    assert take_all(TokenBucket(5, 10)) == 5


def test_a_bucket_refills_evenly_and_never_past_its_capacity() -> None:
    """5 per 10 s: 2 s give one token back, 4 s two; an hour gives no more than 5."""
    bucket = TokenBucket(5, 10)
    take_all(bucket)
    age(bucket, 2.0)
    assert take_all(bucket) == 1
    age(bucket, 4.0)
    assert take_all(bucket) == 2
    age(bucket, 3600)
    assert take_all(bucket) == 5


def test_cheap_frames_cost_a_fraction() -> None:
    """A quarter-cost frame takes a quarter token: 20 of them from a bucket of 5."""
    bucket = TokenBucket(5, 10)
    assert take_all(bucket, 0.25) == 20
    fresh = TokenBucket(1, 10)
    assert fresh.take(1.0) and not fresh.take(0.25)


def test_socket_buckets_by_audience(settings: Settings) -> None:
    """Visitors' sockets get CHATSERVER_RATE_MESSAGES, staff sockets the staff rate."""
    limits = Limits(settings)
    assert take_all(limits.socket_bucket(staff=False)) == 5
    assert take_all(limits.socket_bucket(staff=True)) == 7
    bucket = limits.socket_bucket(staff=False)
    take_all(bucket)
    age(bucket, 2.0)  # the window is the setting's 10 s: 2 s give back one of 5
    assert take_all(bucket) == 1


def test_an_ip_shares_one_bucket_across_its_sockets(settings: Settings) -> None:
    """All sockets of one address draw on one bucket; another address has its own; unknown
    addresses and exempt ones are not limited."""
    limits = Limits(settings)
    taken = 0
    while limits.allow_from_ip("192.0.2.1", 1.0):
        taken += 1
        assert taken < 100
    assert taken == 9
    assert limits.allow_from_ip("192.0.2.2", 1.0)
    assert all(limits.allow_from_ip("10.1.2.3", 1.0) for _ in range(50))
    assert all(limits.allow_from_ip(None, 1.0) for _ in range(50))
    assert not limits.allow_from_ip("192.0.2.1", 0.25)  # still empty: it was not reset


def test_the_ip_table_is_bounded(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flood of addresses cannot grow memory: the least recently seen are forgotten."""
    monkeypatch.setattr(limits_module, "MAX_TRACKED_IPS", 3)
    limits = Limits(settings)
    for n in range(5):
        limits.allow_from_ip(f"192.0.2.{n}", 1.0)
        limits.allow_new_conversation(f"192.0.2.{n}")
    assert list(limits._ip_buckets) == ["192.0.2.2", "192.0.2.3", "192.0.2.4"]
    assert list(limits._conversations) == ["192.0.2.2", "192.0.2.3", "192.0.2.4"]
    limits.allow_from_ip("192.0.2.2", 1.0)  # seen again: now the most recent
    limits.allow_from_ip("192.0.2.9", 1.0)
    assert list(limits._ip_buckets) == ["192.0.2.4", "192.0.2.2", "192.0.2.9"]


def test_socket_caps_per_session_and_per_ip(settings: Settings) -> None:
    """At most 2 sockets per session and 3 per address; closing one frees its place."""
    limits = Limits(settings)
    ip = "192.0.2.1"
    assert limits.open_socket(ip, "s1") is None
    assert limits.open_socket(ip, "s1") is None
    assert limits.open_socket(ip, "s1") == "Too many open chat windows for this session."
    assert limits.open_socket(ip, "s2") is None
    assert limits.open_socket(ip, "s3") == "Too many open connections from your address."
    limits.close_socket(ip, "s1")
    assert limits.open_socket(ip, "s3") is None
    assert limits.open_socket("192.0.2.9", "s1") is None  # s1 has one socket left open
    assert limits.open_socket("192.0.2.9", "s1") == "Too many open chat windows for this session."


def test_closing_sockets_frees_their_counts_entirely(settings: Settings) -> None:
    """Counters go back to nothing when the sockets close, so tables do not grow."""
    limits = Limits(settings)
    for _ in range(2):
        limits.open_socket("192.0.2.1", "s1")
    limits.open_socket(None, "s2")
    for _ in range(2):
        limits.close_socket("192.0.2.1", "s1")
    limits.close_socket(None, "s2")
    assert not limits._session_sockets and not limits._ip_sockets
    limits.close_socket("192.0.2.1", "s1")  # one close too many does not go negative
    assert not limits._session_sockets and not limits._ip_sockets


def test_exempt_addresses_pass_every_count(settings: Settings) -> None:
    """Listed networks are not capped (load tests, relays); they are still counted."""
    limits = Limits(settings)
    for _ in range(10):
        assert limits.open_socket("10.0.0.5", "s1") is None
        assert limits.allow_new_conversation("10.0.0.5")
    assert limits.exempt("10.0.0.5") and not limits.exempt("192.0.2.1")
    assert not limits.exempt(None)


def test_new_conversations_per_ip_per_hour(settings: Settings,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Two new conversations an hour per address; the hour slides."""
    now = [1000.0]
    monkeypatch.setattr(limits_module.time, "monotonic", lambda: now[0])
    limits = Limits(settings)
    assert limits.allow_new_conversation("192.0.2.1")
    now[0] += 1800
    assert limits.allow_new_conversation("192.0.2.1")
    assert not limits.allow_new_conversation("192.0.2.1")
    assert limits.allow_new_conversation("192.0.2.2")  # another address
    assert limits.allow_new_conversation(None)
    now[0] += 1800  # exactly an hour after the first: still inside the hour
    assert not limits.allow_new_conversation("192.0.2.1")
    now[0] += 1  # the first one left the hour
    assert limits.allow_new_conversation("192.0.2.1")
    assert not limits.allow_new_conversation("192.0.2.1")


# -- through the sockets -----------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    # Every test client connects from the one address "testclient".
    with running_app(tmp_path, CHATSERVER_RATE_MESSAGES="4", CHATSERVER_RATE_WINDOW_SECONDS="600",
                     CHATSERVER_MAX_SOCKETS_PER_SESSION="2") as running:
        yield running


def test_a_message_flood_gets_an_error_then_4429(app: App) -> None:
    """Past the socket's bucket: a rate_limited error frame, then close 4429; what was acked
    before is stored."""
    visitor = app.visitor_client()
    with visitor.websocket_connect("/ws/visitor") as ws:
        conversation_id = receive(ws)["conversation_id"]
        for n in range(6):
            ws.send_json({"type": "message", "body": f"m{n}", "client_msg_id": f"c{n}"})
        frames = []
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                frames.append(receive(ws))
        assert closed.value.code == 4429
    assert [f["type"] for f in frames].count("ack") == 4
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "rate_limited"
    stored = app.call(app.state.store.messages_after, conversation_id, 0, 100)
    assert [m.body for m in stored] == ["m0", "m1", "m2", "m3"]


def test_bad_frames_count_against_the_bucket(app: App) -> None:
    """Garbage is charged too (at a quarter), or errors could be flooded without limit."""
    visitor = app.visitor_client()
    with visitor.websocket_connect("/ws/visitor") as ws:
        receive(ws)
        for _ in range(20):
            ws.send_text("not json")
        codes = []
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                codes.append(receive(ws)["code"])
        assert closed.value.code == 4429
    assert codes.count("invalid_json") == 16 and codes[-1] == "rate_limited"


def test_sockets_per_session_are_capped(app: App) -> None:
    """A third socket of one session is refused with too_many_sockets and 4429."""
    visitor = app.visitor_client()
    with visitor.websocket_connect("/ws/visitor") as one, \
            visitor.websocket_connect("/ws/visitor") as two:
        receive(one)
        receive(two)
        with visitor.websocket_connect("/ws/visitor") as three:
            assert receive(three)["code"] == "too_many_sockets"
            with pytest.raises(WebSocketDisconnect) as closed:
                receive(three)
            assert closed.value.code == 4429
    with visitor.websocket_connect("/ws/visitor") as again:  # the others closed: room again
        assert receive(again)["type"] == "welcome"


def test_visitors_of_one_address_share_its_bucket_and_staff_do_not(tmp_path: Path) -> None:
    """Two visitors from one address together get CHATSERVER_IP_RATE_MESSAGES; an agent from
    the same address (an office) is limited by its own socket's bucket only."""
    with running_app(tmp_path, CHATSERVER_RATE_MESSAGES="100", CHATSERVER_IP_RATE_MESSAGES="3",
                     CHATSERVER_RATE_WINDOW_SECONDS="600") as app:
        agent = app.staff_client("agent")
        with agent.websocket_connect("/ws/agent") as staff_ws:
            receive(staff_ws)
            for _ in range(40):  # 10 tokens of pings: far past the address's 3
                staff_ws.send_json({"type": "ping"})
            pongs_without_refusal(staff_ws, 40)
        first = app.visitor_client("Ada", "ada@example.com")
        second = app.visitor_client("Bob", "bob@example.com")
        with first.websocket_connect("/ws/visitor") as one, \
                second.websocket_connect("/ws/visitor") as two:
            receive(one)
            receive(two)
            acked = 0
            for n in range(2):
                for ws in (one, two):
                    ws.send_json({"type": "message", "body": "x", "client_msg_id": f"m{n}"})
                    frame = receive(ws)
                    while frame["type"] not in {"ack", "error"}:
                        frame = receive(ws)
                    acked += frame["type"] == "ack"
            assert acked == 3


def test_exempt_addresses_are_not_rate_limited_and_others_are(tmp_path: Path) -> None:
    """A client in CHATSERVER_LIMITS_EXEMPT may flood past every bucket; a client from any
    other address is closed with 4429; a staff socket gets the staff rate, not the visitors'."""
    with running_app(tmp_path, CHATSERVER_RATE_MESSAGES="2", CHATSERVER_STAFF_RATE_MESSAGES="50",
                     CHATSERVER_LIMITS_EXEMPT="10.0.0.0/8") as app:
        relay = app.visitor_client(client=("10.1.2.3", 40000))
        with relay.websocket_connect("/ws/visitor") as ws:
            receive(ws)
            for _ in range(12):
                ws.send_json({"type": "ping"})
            assert [receive(ws)["type"] for _ in range(12)] == ["pong"] * 12
        stranger = app.visitor_client("Eve", "eve@example.com", client=("192.0.2.7", 40000))
        with stranger.websocket_connect("/ws/visitor") as ws:
            receive(ws)
            for _ in range(12):
                ws.send_json({"type": "ping"})
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    receive(ws)
            assert closed.value.code == 4429
        agent = app.staff_client("agent", client=("192.0.2.8", 40000))
        with agent.websocket_connect("/ws/agent") as ws:
            receive(ws)
            for _ in range(40):  # 10 tokens: past a visitor's 2, inside the staff's 50
                ws.send_json({"type": "ping"})
            pongs_without_refusal(ws, 40)
