"""The Broadcast backends (memory, Redis, PostgreSQL LISTEN/NOTIFY) against one suite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chatserver import broadcast, visitor_presence
from chatserver.broadcast import CONNECTION_CHANNEL, DOWN, UP, BroadcastUnavailable
from chatserver.broadcast.postgres import listen_name
from chatserver.visitor_presence import VisitorPresence

from . import databases
from .redis_support import fresh_redis_url, kill_pubsub_clients, require_redis

BACKENDS = ["memory", "redis", "postgresql"]


@pytest.fixture(params=BACKENDS)
def broadcast_url(request: pytest.FixtureRequest) -> str:
    """A URL of each backend, unshared with other tests."""
    if request.param == "memory":
        return "memory://"
    if request.param == "redis":
        require_redis()
        return fresh_redis_url()
    databases.require_postgres()
    channel = "t" + request.node.name.encode().hex()[:20]
    url: str = request.getfixturevalue("postgres_url")
    return f"{url}?channel={channel}"


@pytest.fixture
async def opened(broadcast_url: str) -> AsyncIterator[Callable[[], Any]]:
    """Connects backends on `broadcast_url` on demand; disconnects them all at the end."""
    made: list[Any] = []

    async def make() -> Any:
        b = broadcast.create(broadcast_url)
        await b.connect()
        made.append(b)
        return b

    yield make
    for b in made:
        await b.disconnect()


class Heard:
    """Collects payloads; `wait(n)` until n have come."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, payload: str) -> None:
        self.items.append(payload)
        self._changed.set()

    async def wait(self, n: int, timeout: float = 5) -> list[str]:
        async with asyncio.timeout(timeout):
            while len(self.items) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.items


async def test_publish_reaches_subscribers_in_order(opened: Callable[[], Any]) -> None:
    """Every subscriber of a channel hears each payload once, in order; others hear nothing."""
    b = await opened()
    first, second, other = Heard(), Heard(), Heard()
    b.subscribe("conv:a", first)
    b.subscribe("conv:a", second)
    b.subscribe("conv:b", other)
    await b.settled()
    for i in range(20):
        await b.publish("conv:a", json.dumps({"n": i, "text": "é ✓"}))
    expected = [json.dumps({"n": i, "text": "é ✓"}) for i in range(20)]
    assert await first.wait(20) == expected
    assert await second.wait(20) == expected
    await asyncio.sleep(0.1)
    assert other.items == []
    assert len(first.items) == 20


async def test_cancelled_subscription_hears_nothing(opened: Callable[[], Any]) -> None:
    """After cancel() a listener is not called again; the channel's others still are."""
    b = await opened()
    gone, kept = Heard(), Heard()
    sub = b.subscribe("queue", gone)
    b.subscribe("queue", kept)
    sub.cancel()
    await b.publish("queue", "x")
    await kept.wait(1)
    await asyncio.sleep(0.05)
    assert gone.items == []


async def test_shared_backends_reach_other_processes(opened: Callable[[], Any]) -> None:
    """What one connection publishes, another (a second process) hears; memory stays local."""
    a, b = await opened(), await opened()
    heard = Heard()
    b.subscribe("session:s1", heard)
    await b.settled()
    await a.publish("session:s1", "4401")
    if not a.shared:
        await asyncio.sleep(0.05)
        assert heard.items == []
        return
    assert await heard.wait(1) == ["4401"]


async def test_a_customers_presence_is_renewed_while_held_and_runs_out_after(
        opened: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """One process holds a customer's presence (chatserver/visitor_presence.py): another keeps
    seeing them there past the lease's life, as it is renewed; once the first stops renewing
    without letting go (killed), the presence runs out. Only the first process in speaks."""
    monkeypatch.setattr(visitor_presence, "LEASE_SECONDS", 1.0)
    first = await opened()
    second = await opened() if first.shared else first  # memory: one process's two views
    said: list[str] = []

    async def publish(conversation_id: str, payload: str) -> None:
        said.append(payload)

    here = VisitorPresence(first, "process-a", publish)
    there = VisitorPresence(second, "process-b", publish)
    await here.arrived("cv_presence")
    await there.arrived("cv_presence")  # a second tab, on the other process: nothing said
    await there.left("cv_presence")
    await asyncio.sleep(2.2)  # over two lives of a lease: renewed meanwhile
    assert await there.online("cv_presence") is True
    await here.stop()  # no more renewals, and no release: as if killed
    await asyncio.sleep(1.3)
    assert await there.online("cv_presence") is False
    assert said == ['{"type":"presence","conversation_id":"cv_presence","visitor_online":true}']


async def test_each_process_hears_every_publication_once_in_its_order(
        opened: Callable[[], Any]) -> None:
    """A process hears its own publications at once and not again when the backend echoes them
    back; another process hears them once too, each publisher's in the order published."""
    a, b = await opened(), await opened()
    heard_a, heard_b = Heard(), Heard()
    a.subscribe("conv:x", heard_a)
    b.subscribe("conv:x", heard_b)
    await a.settled()
    await b.settled()
    await a.publish("conv:x", "a0")
    assert heard_a.items == ["a0"]  # before any round trip
    for i in range(1, 10):
        await a.publish("conv:x", f"a{i}")
        await b.publish("conv:x", f"b{i}")
    own_a = [f"a{i}" for i in range(10)]
    own_b = [f"b{i}" for i in range(1, 10)]
    if not a.shared:  # memory://: each process hears itself only
        assert (heard_a.items, heard_b.items) == (own_a, own_b)
        return
    await heard_a.wait(19)
    await heard_b.wait(19)
    await asyncio.sleep(0.2)  # room for a doubled copy to arrive
    for items in (heard_a.items, heard_b.items):
        assert len(items) == 19
        assert [x for x in items if x.startswith("a")] == own_a
        assert [x for x in items if x.startswith("b")] == own_b


async def test_concurrent_publishers_are_each_heard_once_in_order(
        opened: Callable[[], Any]) -> None:
    """Many coroutines publishing at once (sent in batches): another process hears every
    publication once, each coroutine's in the order it published them."""
    a, b = await opened(), await opened()
    heard = Heard()
    (b if b.shared else a).subscribe("conv:many", heard)
    await b.settled()

    async def publisher(k: int) -> None:
        for i in range(10):
            await a.publish("conv:many", f"{k}:{i}")

    await asyncio.gather(*(publisher(k) for k in range(30)))
    items = await heard.wait(300)
    await asyncio.sleep(0.1)
    assert len(heard.items) == 300
    for k in range(30):
        assert [x for x in items if x.startswith(f"{k}:")] == [f"{k}:{i}" for i in range(10)]


async def test_each_process_listens_only_on_the_channels_it_has_listeners_for(
        opened: Callable[[], Any]) -> None:
    """Shared backends subscribe a process to a channel with its first listener and drop it
    with its last, so others' frames of a conversation reach only the processes that have one
    of its sockets."""
    b = await opened()
    if not b.shared:
        pytest.skip("memory:// has one process")

    async def listened() -> bool:
        if b.max_payload is None:  # Redis: how many subscribers the channel has
            channel = b.prefix + "conv:only"
            return int(dict(await b._client.pubsub_numsub(channel))[channel]) == 1
        async with b._sync.lock:  # PostgreSQL: what the listening session LISTENs on
            names = await b._sync.connection.fetch("SELECT pg_listening_channels() AS name")
        return listen_name(b.channel, "conv:only") in {r["name"] for r in names}

    assert not await listened()
    first = b.subscribe("conv:only", Heard())
    second = b.subscribe("conv:only", Heard())
    await b.settled()
    assert await listened()
    first.cancel()
    await b.settled()
    assert await listened()
    second.cancel()
    await b.settled()
    assert not await listened()


async def test_publications_of_an_older_version_still_arrive(opened: Callable[[], Any]
                                                            ) -> None:
    """A publication without the sender's time stamp reaches listeners as it was sent, and so
    does one with a stamp (the stamp only measures the lag)."""
    a, b = await opened(), await opened()
    if not a.shared:
        pytest.skip("memory:// has no other processes")
    heard = Heard()
    b.subscribe("queue", heard)
    await b.settled()
    foreign = "f" * 16  # another process's origin tag
    if hasattr(a, "prefix"):  # Redis: the bare payload on the channel
        await a._client.publish(a.prefix + "queue", foreign + "changed")
    else:  # PostgreSQL: [origin, channel, payload] without the time, on the channel's name
        await a._fetchval("SELECT pg_notify($1, $2)", listen_name(a.channel, "queue"),
                          json.dumps([foreign, "queue", "changed"]))
    await a.publish("queue", "4401 \x00 {}")
    assert await heard.wait(2) == ["changed", "4401 \x00 {}"]


async def test_presence_expires(opened: Callable[[], Any]) -> None:
    """A heartbeat counts until its ttl runs out, or until the process says it has none."""
    a, b = await opened(), await opened()
    assert not await b.agents_online()
    await a.heartbeat("p1", {7: False, 8: True}, 0.6)
    assert await b.agents_online() is a.shared or await a.agents_online()
    assert await a.agents_online()
    await a.heartbeat("p1", {}, 0.6)
    assert not await a.agents_online()
    await a.heartbeat("p2", {9: False}, 0.6)
    deadline = asyncio.get_running_loop().time() + 5
    while await a.agents_online():  # polled with a deadline: expiry has no event to wait on
        assert asyncio.get_running_loop().time() < deadline, "the heartbeat never expired"
        await asyncio.sleep(0.1)


async def test_rosters_name_every_processes_agents_until_they_expire(
        opened: Callable[[], Any]) -> None:
    """Which agents have a dashboard open, and whether each is away, is what every process's
    latest heartbeat said (seen from another connection on shared backends): an agent away in
    one process and not in another counts as available; an away agent alone is not online; a
    process that says it has none, or stops beating, drops out."""
    a, b = await opened(), await opened()
    reader = b if a.shared else a
    assert await reader.present_agents() == {}
    await a.heartbeat("p1", {7: True}, 30)
    assert await reader.present_agents() == {7: True}
    assert not await reader.agents_online()  # away is not online
    await a.heartbeat("p2", {7: False, 8: True}, 0.6)
    assert await reader.present_agents() == {7: False, 8: True}
    assert await reader.agents_online()
    await a.heartbeat("p1", {}, 30)
    assert await reader.present_agents() == {7: False, 8: True}
    deadline = asyncio.get_running_loop().time() + 5
    while await reader.present_agents():  # p2 stopped beating: polled, expiry has no event
        assert asyncio.get_running_loop().time() < deadline, "the roster never expired"
        await asyncio.sleep(0.1)


async def test_counters_add_up_across_connections_and_expire(opened: Callable[[], Any]
                                                          ) -> None:
    """A counter sums what every connection adds (every process, for shared backends) within
    its window, and starts again from 0 after it."""
    a, b = await opened(), await opened()
    assert await a.count("rate:k1", 1, 0.8) == 1
    assert await a.count("rate:k1", 0.25, 0.8) == 1.25
    assert await b.count("rate:k1", 1, 0.8) == (2.25 if b.shared else 1)
    assert await a.count("rate:k2", 1, 0.8) == 1  # another key
    await asyncio.sleep(1.0)
    assert await a.count("rate:k1", 1, 0.8) == 1


async def test_leases_count_holders_until_they_give_up_or_run_out(
        opened: Callable[[], Any]) -> None:
    """A lease set counts the members holding a lease (from every connection, for shared
    backends); a given-up lease stops counting at once, an unrenewed one when it runs out."""
    a, b = await opened(), await opened()
    assert await a.lease("sockets:k", "p1:1", 0.8, True) == 1
    assert await a.lease("sockets:k", "p1:2", 30, True) == 2
    assert await b.lease("sockets:k", "p2:1", 30, True) == (3 if b.shared else 1)
    others = 1 if a.shared else 0  # b's lease, where a can see it
    assert await a.lease("sockets:k", "p1:2", 30, False) == 1 + others
    assert await a.lease("sockets:other", "p1:1", 30, True) == 1
    await asyncio.sleep(1.0)
    assert await a.lease("sockets:k", "p1:3", 30, True) == 1 + others  # p1:1 ran out


async def test_ping_answers(opened: Callable[[], Any]) -> None:
    """ping() returns when the backend answers."""
    await (await opened()).ping()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0",
                                 "postgresql://postgres@127.0.0.1:1/postgres"])
async def test_unreachable_backend_is_one_clear_error(url: str) -> None:
    """connect() to nothing raises BroadcastUnavailable naming where it looked."""
    b = broadcast.create(url)
    with pytest.raises(BroadcastUnavailable, match="127.0.0.1:1"):
        await b.connect()


def test_unknown_scheme_is_refused() -> None:
    """A broadcast URL of another kind is refused with the kinds there are."""
    with pytest.raises(ValueError, match="redis://"):
        broadcast.create("kafka://x")


async def test_notify_payload_limit_is_stated(opened: Callable[[], Any]) -> None:
    """Backends state the largest payload they carry; PostgreSQL's is under NOTIFY's 8000 bytes,
    and a publish over it is refused rather than lost."""
    b = await opened()
    if b.max_payload is None:
        heard = Heard()
        b.subscribe("big", heard)
        await b.publish("big", "x" * 100_000)
        assert len((await heard.wait(1))[0]) == 100_000
        return
    assert b.max_payload < 8000
    heard = Heard()
    b.subscribe("big", heard)
    await b.publish("big", "é" * (b.max_payload // 2))
    assert len((await heard.wait(1))[0]) == b.max_payload // 2
    with pytest.raises(ValueError, match="limit"):
        await b.publish("big", "x" * 9000)


async def _drop_connections(b: Any, url: str) -> None:
    if b.max_payload is None:
        assert kill_pubsub_clients(url) >= 1
        return
    pid = b._sync.connection.get_server_pid()
    await b._fetchval("SELECT pg_terminate_backend($1)", pid)


async def test_dropped_connection_says_down_then_up(opened: Callable[[], Any],
                                                   broadcast_url: str) -> None:
    """When the listening connection is cut, listeners hear "down", ping fails, then "up" once
    it listens again, and publications reach them again."""
    a, b = await opened(), await opened()
    if not b.shared:
        pytest.skip("memory:// has no connection to lose")
    events, heard = Heard(), Heard()
    b.subscribe(CONNECTION_CHANNEL, events)
    b.subscribe("conv:x", heard)
    await _drop_connections(b, broadcast_url)
    assert (await events.wait(1, timeout=10))[0] == DOWN
    assert (await events.wait(2, timeout=10))[1] == UP
    await b.ping()
    await a.publish("conv:x", "after")
    assert await heard.wait(1) == ["after"]


async def test_presence_table_of_an_earlier_version_gains_the_roster() -> None:
    """A database whose chatserver_presence was made before rosters existed: the first start of
    this version adds the column, and rosters are kept and read."""
    databases.require_postgres()
    url = databases.create_database()
    databases.query(url, "CREATE UNLOGGED TABLE chatserver_presence (process TEXT PRIMARY KEY, "
                         "agents INTEGER NOT NULL, expires_at TIMESTAMPTZ NOT NULL)")
    b = broadcast.create(url)
    await b.connect()
    try:
        await b.heartbeat("p1", {5: False}, 30)
        assert await b.present_agents() == {5: False}
        assert await b.agents_online()
    finally:
        await b.disconnect()
