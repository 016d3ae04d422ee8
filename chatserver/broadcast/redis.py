"""Fan-out across processes and hosts through Redis pub/sub (redis.asyncio).

Each process subscribes to the channels it has listeners for and no others (SUBSCRIBE and
UNSUBSCRIBE as sockets come and go), so a conversation's frames reach only the processes where
one of its sockets is; `settled()` waits until the subscriptions made so far are in force. What
this process publishes reaches its own listeners at once, without the round trip through Redis:
every payload travels behind this process's origin tag (ORIGIN_LENGTH characters), and the copy
that comes back with our own tag is skipped (see `envelope`). The subscribing connection never
reconnects behind our back: when it drops, listeners hear "down" on
CONNECTION_CHANNEL, and "up" once a new subscription stands, so every socket catches up from
storage what was published meanwhile. Presence is a sorted set of process ids scored by their
expiry (Redis's own clock), so a killed process's agents drop out by themselves, and a hash of
each live process's roster (which agents, away or not). Every publication carries the
publisher's wall time, so receivers measure the broadcast's lag.

URL: redis://[user:password@]host:port/db[?prefix=name:] (prefix default `chatserver:`), so
several installations or test runs can share one Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from .. import metrics
from .base import (
    CONNECTION_CHANNEL,
    DOWN,
    UP,
    BroadcastUnavailable,
    Listener,
    dump_roster,
    load_roster,
    merge_rosters,
)
from .batch import Batches
from .channels import ChannelSync
from .local import Listeners, LocalSubscription

log = logging.getLogger("chatserver.broadcast")
DEFAULT_PREFIX = "chatserver:"
TIMEOUT_SECONDS = 3.0
HEALTH_CHECK_SECONDS = 2.0
RETRY_MAX_SECONDS = 2.0

# Hold (ARGV[2] > 0), drop (= 0) or only read (< 0) one member's lease; prune the expired; the
# number of members left. TIME is the server's, so hosts' clocks may differ.
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local agents = tonumber(ARGV[2])
if agents > 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  -- the set itself goes once its last member would have run out
  redis.call('PEXPIRE', KEYS[1], math.floor((tonumber(ARGV[3]) + 1) * 1000))
elseif agents == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""

# A batch of publications in one command with one reply. A pipeline of PUBLISH commands gets a
# reply per publication, and reading each through redis-py cost more CPU than sending it.
# ARGV: channel, payload, channel, payload, ...
_PUBLISH_MANY = """
for i = 1, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
"""

# Presence: KEYS[1] the processes scored by expiry, KEYS[2] their rosters. ARGV: process id,
# "set" (with ARGV[3] the ttl and ARGV[4] the roster), "drop" or "read". Prunes the expired;
# the rosters of the live processes.
_PRESENCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[2] == 'set' then
  local ms = math.floor((tonumber(ARGV[3]) + 1) * 1000)
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
  -- both go once their last member would have run out
  redis.call('PEXPIRE', KEYS[1], ms)
  redis.call('PEXPIRE', KEYS[2], ms)
elseif ARGV[2] == 'drop' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('HDEL', KEYS[2], unpack(gone))
end
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
if #live == 0 then
  return {}
end
return redis.call('HMGET', KEYS[2], unpack(live))
"""


# A fixed-window counter: the window starts with the first addition.
_COUNT = """
local total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return total
"""


# Subscribed always: a subscribing connection must hold a subscription to read, and this process
# may have no listeners yet. Nothing is published on it.
KEEPALIVE_CHANNEL = "@keepalive"
ORIGIN_LENGTH = 16  # hex characters of a process's origin tag, ahead of every payload


def new_origin() -> str:
    return secrets.token_hex(ORIGIN_LENGTH // 2)


def envelope(origin: str, payload: str) -> str:
    """A payload as published: behind the publishing process's origin tag, so that process can
    skip its own copy (its listeners heard it when it was published)."""
    return origin + payload


def opened(origin: str, data: str) -> str | None:
    """The payload of a published envelope; None for our own (heard already)."""
    if data.startswith(origin):
        return None
    return data[ORIGIN_LENGTH:]

# A publication is `STAMP <publisher's wall time> STAMP <payload>`: receivers observe the lag.
STAMP = "\x00"


def stamp(payload: str) -> str:
    return f"{STAMP}{time.time():.6f}{STAMP}{payload}"


def unstamp(data: str) -> str:
    """The payload; the lag since its stamp observed. Unstamped data (a process of an older
    version) passes as it is."""
    if not data.startswith(STAMP):
        return data
    sent, sep, payload = data[1:].partition(STAMP)
    try:
        metrics.broadcast_lag(time.time() - float(sent))
    except ValueError:
        return data
    return payload if sep else data


def split_prefix(url: str) -> tuple[str, str]:
    """The URL for redis-py, and the key and channel prefix taken out of its query."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), DEFAULT_PREFIX)
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def subscriber_name(prefix: str) -> str:
    """CLIENT SETNAME takes no spaces; the prefix is the installation's own."""
    return "chatserver-sub-" + "".join(ch if ch.isalnum() else "-" for ch in prefix)


def describe(url: str) -> str:
    """Host, port and db, without a password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path}"


async def _add_channels(pubsub: PubSub, channels: set[str]) -> None:
    await pubsub.subscribe(*channels)


async def _drop_channels(pubsub: PubSub, channels: set[str]) -> None:
    await pubsub.unsubscribe(*channels)


class RedisBroadcast:
    shared = True
    max_payload: int | None = None
    per_channel = True

    def __init__(self, url: str) -> None:
        plain, self.prefix = split_prefix(url)
        self.where = describe(plain)
        options: dict[str, Any] = {"decode_responses": True,
                                   "socket_connect_timeout": TIMEOUT_SECONDS}
        self._client = Redis.from_url(plain, socket_timeout=TIMEOUT_SECONDS, **options)
        # The subscriber must fail loudly: a silent reconnect would skip the catch-up. Its name
        # lets an operator (or a test) find this installation's subscribers in CLIENT LIST.
        self._sub_client = Redis.from_url(plain, retry=Retry(NoBackoff(), 0),
                                          health_check_interval=HEALTH_CHECK_SECONDS,
                                          client_name=subscriber_name(self.prefix), **options)
        # The subscribing connection in use (a PubSub). Writes to it (SUBSCRIBE, UNSUBSCRIBE,
        # PING) take the sync's lock, so a PING answered means every SUBSCRIBE before it is in
        # force.
        self._sync = ChannelSync(self._wanted, _add_channels, _drop_channels, (RedisError, OSError))
        self._listeners = Listeners(self._sync.changed)
        self._origin = new_origin()
        self._task: asyncio.Task[None] | None = None
        self._listening = False
        self._pongs: dict[str, asyncio.Future[None]] = {}
        self._pings = 0
        self._batches = Batches(self._send)
        self._publish_many = self._client.register_script(_PUBLISH_MANY)

    async def connect(self) -> None:
        try:
            await self._client.ping()
            pubsub = await self._subscribe()
        except (RedisError, OSError) as exc:
            raise BroadcastUnavailable(
                f"cannot reach Redis at {self.where} ({type(exc).__name__}: {exc})") from None
        self._task = asyncio.get_running_loop().create_task(self._listen(pubsub))

    def _wanted(self) -> set[str]:
        """The Redis channels this process has listeners for (local-only ones aside), and one
        that keeps the connection subscribed when there are none."""
        wanted = {self.prefix + channel for channel in self._listeners.channels()
                  if not channel.startswith("@")}
        wanted.add(self.prefix + KEEPALIVE_CHANNEL)
        return wanted

    async def _subscribe(self) -> PubSub:
        pubsub = self._sub_client.pubsub(ignore_subscribe_messages=True)
        try:
            await self._sync.start(pubsub)
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        self._listening = True
        return pubsub

    async def settled(self) -> None:
        await self._sync.apply()
        async with self._sync.lock:
            pubsub: PubSub | None = self._sync.connection
            if pubsub is None:
                return  # down: listeners catch up when it is back
            self._pings += 1
            token = f"settled-{self._pings}"
            pong = self._pongs[token] = asyncio.get_running_loop().create_future()
            try:
                await pubsub.ping(token)
            except (RedisError, OSError):
                self._pongs.pop(token, None)
                return
        try:
            await asyncio.wait_for(pong, TIMEOUT_SECONDS)
        except TimeoutError:
            pass
        finally:
            self._pongs.pop(token, None)

    def _lost(self) -> None:
        """The subscribing connection is gone: nobody waits for its answers any more."""
        self._sync.lost()
        pongs, self._pongs = self._pongs, {}
        for pong in pongs.values():
            if not pong.done():
                pong.set_result(None)

    async def _listen(self, pubsub: PubSub | None) -> None:
        delay = 0.1
        while True:
            try:
                if pubsub is None:
                    pubsub = await self._subscribe()
                    log.warning("broadcast: Redis at %s answers again; catching up", self.where)
                    self._listeners.deliver(CONNECTION_CHANNEL, UP)
                    delay = 0.1
                await self._pump(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: start over with a new connection
                self._lost()
                if self._listening:
                    self._listening = False
                    log.warning("broadcast: lost Redis at %s (%s); retrying", self.where,
                                type(exc).__name__)
                    self._listeners.deliver(CONNECTION_CHANNEL, DOWN)
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                    pubsub = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _pump(self, pubsub: PubSub) -> None:
        skip = len(self.prefix)
        origin = self._origin
        deliver = self._listeners.deliver
        while True:
            message = await pubsub.get_message(timeout=HEALTH_CHECK_SECONDS)
            if message is None:
                continue
            kind = message.get("type")
            if kind == "message":
                payload = opened(origin, message["data"])
                if payload is not None:
                    deliver(message["channel"][skip:], unstamp(payload))
            elif kind == "pong":
                pong = self._pongs.pop(message.get("data") or "", None)
                if pong is not None and not pong.done():
                    pong.set_result(None)

    async def disconnect(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._batches.cancel()
        self._listeners.clear()
        for client in (self._sub_client, self._client):
            with contextlib.suppress(Exception):
                await client.aclose()

    async def ping(self) -> None:
        if not self._listening:
            raise BroadcastUnavailable("the Redis subscription is down")
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise BroadcastUnavailable(f"Redis does not answer ({type(exc).__name__})") from None

    async def publish(self, channel: str, payload: str) -> None:
        # Ours first, in publish order; Redis carries it to the others (and back, skipped).
        self._listeners.deliver(channel, payload)
        try:
            await self._batches.publish(self.prefix + channel,
                                        envelope(self._origin, stamp(payload)))
        except (RedisError, OSError) as exc:
            raise BroadcastUnavailable(f"Redis does not answer ({type(exc).__name__})") from None

    async def _send(self, items: list[tuple[str, str]]) -> None:
        if len(items) == 1:
            await self._client.publish(*items[0])
            return
        await self._publish_many(args=[part for item in items for part in item])

    def subscribe(self, channel: str, listener: Listener) -> LocalSubscription:
        return self._listeners.add(channel, listener)

    async def _presence(self, process_id: str, mode: str, ttl: float = 0,
                        roster: str = "") -> dict[int, bool]:
        try:
            rosters = await self._client.eval(_PRESENCE, 2, self.prefix + "presence",
                                              self.prefix + "presence:agents", process_id, mode,
                                              ttl, roster)
        except (RedisError, OSError) as exc:
            raise BroadcastUnavailable(f"Redis does not answer ({type(exc).__name__})") from None
        return merge_rosters([load_roster(r) for r in rosters or ()])

    async def heartbeat(self, process_id: str, agents: Mapping[int, bool], ttl: float) -> None:
        if agents:
            await self._presence(process_id, "set", ttl, dump_roster(agents))
        else:
            await self._presence(process_id, "drop")

    async def present_agents(self) -> dict[int, bool]:
        return await self._presence("", "read")

    async def lease(self, key: str, member: str, ttl: float, hold: bool) -> int:
        try:
            count = await self._client.eval(_LEASE, 1, self.prefix + "lease:" + key, member,
                                            1 if hold else 0, ttl)
        except (RedisError, OSError) as exc:
            raise BroadcastUnavailable(f"Redis does not answer ({type(exc).__name__})") from None
        return int(count)

    async def agents_online(self) -> bool:
        return not all((await self.present_agents()).values())

    async def count(self, key: str, amount: float, window: float) -> float:
        try:
            total = await self._client.eval(_COUNT, 1, self.prefix + "count:" + key,
                                            str(amount), max(1, int(window * 1000)))
        except (RedisError, OSError) as exc:
            raise BroadcastUnavailable(f"Redis does not answer ({type(exc).__name__})") from None
        return float(total)
