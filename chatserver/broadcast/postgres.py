"""Fan-out across processes through PostgreSQL LISTEN/NOTIFY (asyncpg), for teams without Redis.

Each process LISTENs on the PostgreSQL channels of the channels it has listeners for, and no
others (`<channel>_<hash of the channel>`: PostgreSQL's names take 63 bytes), so a conversation's
notifications reach only the processes with one of its sockets; each carries `[origin, channel,
payload, sent]` as JSON (`sent`: the publisher's wall time, from which receivers measure the
lag). What this process publishes reaches its own listeners at once; the copy that comes back
with its own origin is skipped. NOTIFY takes payloads under 8000 bytes: `max_payload` tells the
hub, which sends larger frames as references that receivers read from storage. One dedicated
connection listens; when it drops, listeners hear "down" on CONNECTION_CHANNEL, and "up" once it
listens again, so every socket catches up from storage. Presence is a small UNLOGGED table with
an expiry per process (the database's clock) and its roster (which agents, away or not), so a
killed process's agents drop out by themselves; the per-IP limits' windowed counters are another
(keys are keyed hashes, never an address).

URL: postgresql://user[:password]@host:port/database[?channel=name] (channel default
`chatserver`), usually the same database as CHATSERVER_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

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
from .channels import ChannelSync
from .local import Listeners, LocalSubscription

log = logging.getLogger("chatserver.broadcast")
DEFAULT_CHANNEL = "chatserver"
NOTIFY_LIMIT = 8000  # bytes, PostgreSQL's
MAX_PAYLOAD = 7500  # the frame's share, leaving room for the channel name and JSON around it
TIMEOUT_SECONDS = 3.0
HEALTH_CHECK_SECONDS = 1.0
RETRY_MAX_SECONDS = 2.0
_CHANNEL_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError)

_CREATE_PRESENCE = """
CREATE UNLOGGED TABLE IF NOT EXISTS chatserver_presence (
    process TEXT PRIMARY KEY,
    agents INTEGER NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    roster TEXT NOT NULL DEFAULT '{}'
)"""
# A table made by an earlier version lacks the roster (staff id -> away, as JSON). Altered only
# then: ALTER TABLE takes a lock and needs the table's owner, which a later start may not be.
_HAS_ROSTER = ("SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = "
               "current_schema() AND table_name = 'chatserver_presence' AND "
               "column_name = 'roster')")
_ADD_ROSTER = ("ALTER TABLE chatserver_presence ADD COLUMN IF NOT EXISTS roster TEXT NOT NULL "
               "DEFAULT '{}'")
_CREATE_LEASES = """
CREATE UNLOGGED TABLE IF NOT EXISTS chatserver_leases (
    key TEXT NOT NULL,
    member TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key, member)
)"""
_CREATE_COUNTERS = """
CREATE UNLOGGED TABLE IF NOT EXISTS chatserver_counters (
    key TEXT PRIMARY KEY,
    total DOUBLE PRECISION NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
)"""


def split_channel(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    channel = next((v for k, v in query if k == "channel"), DEFAULT_CHANNEL)
    if not _CHANNEL_RE.match(channel):
        raise ValueError("CHATSERVER_BROADCAST_URL: channel= takes lower-case letters, digits "
                         "and _ (at most 41)")
    rest = urlencode([(k, v) for k, v in query if k != "channel"])
    return urlunsplit(parts._replace(query=rest)), channel


def listen_name(base: str, channel: str) -> str:
    """The PostgreSQL channel that carries `channel`: lower-case, at most 41 + 17 characters."""
    return f"{base}_{hashlib.blake2b(channel.encode(), digest_size=8).hexdigest()}"


def describe(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def _unavailable(exc: BaseException) -> BroadcastUnavailable:
    return BroadcastUnavailable(f"PostgreSQL does not answer ({type(exc).__name__})")


class PostgresBroadcast:
    shared = True
    max_payload: int | None = MAX_PAYLOAD
    per_channel = True

    def __init__(self, url: str) -> None:
        self.url, self.channel = split_channel(url)
        self.where = describe(self.url)
        # The listening connection in use: LISTEN, UNLISTEN and the health check take turns
        # on it under the sync's lock.
        self._sync = ChannelSync(self._wanted, self._add_channels, self._drop_channels, _ERRORS)
        self._listeners = Listeners(self._sync.changed)
        self._origin = secrets.token_hex(8)
        self._pool: asyncpg.Pool | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4,
                                                   timeout=TIMEOUT_SECONDS)
            await self._create_presence()
            await self._listen()
        except (*_ERRORS, ValueError) as exc:
            await self._close_all()
            raise BroadcastUnavailable(
                f"cannot reach PostgreSQL at {self.where} ({type(exc).__name__}: {exc})"
            ) from None
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def _create_presence(self) -> None:
        assert self._pool is not None
        for statement in (_CREATE_PRESENCE, _CREATE_COUNTERS, _CREATE_LEASES):
            try:
                await self._pool.execute(statement)
            except asyncpg.UniqueViolationError:  # another process created it at that moment
                pass
        if not await self._pool.fetchval(_HAS_ROSTER):
            with contextlib.suppress(asyncpg.UniqueViolationError, asyncpg.DuplicateColumnError):
                await self._pool.execute(_ADD_ROSTER)

    def _wanted(self) -> set[str]:
        return {listen_name(self.channel, channel) for channel in self._listeners.channels()
                if not channel.startswith("@")}

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=TIMEOUT_SECONDS)
        try:
            self._lost.clear()
            conn.add_termination_listener(lambda _conn: self._lost.set())
            await self._sync.start(conn)
        except BaseException:
            conn.terminate()
            raise

    async def _add_channels(self, conn: asyncpg.Connection, names: set[str]) -> None:
        for name in names:
            await conn.add_listener(name, self._on_notify)

    async def _drop_channels(self, conn: asyncpg.Connection, names: set[str]) -> None:
        for name in names:
            await conn.remove_listener(name, self._on_notify)

    async def settled(self) -> None:
        await self._sync.apply()  # a LISTEN is in force once it returns

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, data: str) -> None:
        try:
            origin, channel, payload, *sent = json.loads(data)
        except (ValueError, TypeError):
            log.warning("broadcast: ignored a notification that is not ours")
            return
        if origin == self._origin:  # our own was heard when it was published
            return
        if sent and isinstance(sent[0], float):
            metrics.broadcast_lag(time.time() - sent[0])
        self._listeners.deliver(channel, payload)

    async def _supervise(self) -> None:
        """Check the listening connection every second; replace it when it is gone."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), HEALTH_CHECK_SECONDS)
            conn = self._sync.connection
            try:
                if conn is None or conn.is_closed() or self._lost.is_set():
                    raise ConnectionError("the listening connection closed")
                async with self._sync.lock:
                    await conn.fetchval("SELECT 1", timeout=TIMEOUT_SECONDS)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: listen anew
                log.warning("broadcast: lost PostgreSQL at %s (%s); retrying", self.where,
                            type(exc).__name__)
            self._sync.lost()
            if conn is not None:
                conn.terminate()
            self._listeners.deliver(CONNECTION_CHANNEL, DOWN)
            await self._relisten()

    async def _relisten(self) -> None:
        delay = 0.1
        while True:
            await asyncio.sleep(delay)
            try:
                await self._listen()
            except _ERRORS:
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            log.warning("broadcast: PostgreSQL at %s answers again; catching up", self.where)
            self._listeners.deliver(CONNECTION_CHANNEL, UP)
            return

    async def _close_all(self) -> None:
        if self._sync.connection is not None:
            self._sync.connection.terminate()
            self._sync.lost()
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    async def disconnect(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._listeners.clear()
        if self._sync.connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._sync.connection.close(), TIMEOUT_SECONDS)
            self._sync.lost()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), TIMEOUT_SECONDS)
            self._pool = None

    async def ping(self) -> None:
        conn = self._sync.connection
        if conn is None or conn.is_closed():
            raise BroadcastUnavailable("the PostgreSQL listening connection is down")
        await self._fetchval("SELECT 1")

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        if self._pool is None:
            raise BroadcastUnavailable("not connected")
        try:
            return await self._pool.fetchval(sql, *args, timeout=TIMEOUT_SECONDS)
        except _ERRORS as exc:
            raise _unavailable(exc) from None

    async def publish(self, channel: str, payload: str) -> None:
        data = json.dumps([self._origin, channel, payload, round(time.time(), 6)],
                          ensure_ascii=False,
                          separators=(",", ":"))
        if len(data.encode()) >= NOTIFY_LIMIT:
            raise ValueError(f"a payload of {len(data.encode())} bytes is over NOTIFY's limit; "
                             "publish a reference instead")
        # Ours first, in publish order; PostgreSQL carries it to the others (and back, skipped).
        self._listeners.deliver(channel, payload)
        await self._fetchval("SELECT pg_notify($1, $2)", listen_name(self.channel, channel),
                             data)

    def subscribe(self, channel: str, listener: Listener) -> LocalSubscription:
        return self._listeners.add(channel, listener)

    async def heartbeat(self, process_id: str, agents: Mapping[int, bool], ttl: float) -> None:
        if agents:
            # `agents` counts those who are not away: what agents_online asks.
            await self._fetchval(
                "INSERT INTO chatserver_presence (process, agents, expires_at, roster) "
                "VALUES ($1, $2, now() + make_interval(secs => $3), $4) ON CONFLICT (process) "
                "DO UPDATE SET agents = excluded.agents, expires_at = excluded.expires_at, "
                "roster = excluded.roster",
                process_id, sum(1 for away in agents.values() if not away), ttl,
                dump_roster(agents))
        else:
            await self._fetchval("DELETE FROM chatserver_presence WHERE process = $1 "
                                 "OR expires_at < now() - interval '1 minute'", process_id)

    async def agents_online(self) -> bool:
        return bool(await self._fetchval(
            "SELECT EXISTS (SELECT 1 FROM chatserver_presence WHERE agents > 0 "
            "AND expires_at > now())"))

    async def present_agents(self) -> dict[int, bool]:
        if self._pool is None:
            raise BroadcastUnavailable("not connected")
        try:
            rows = await self._pool.fetch("SELECT roster FROM chatserver_presence "
                                          "WHERE expires_at > now()", timeout=TIMEOUT_SECONDS)
        except _ERRORS as exc:
            raise _unavailable(exc) from None
        return merge_rosters([load_roster(row["roster"]) for row in rows])

    async def lease(self, key: str, member: str, ttl: float, hold: bool) -> int:
        if hold:
            await self._fetchval(
                "INSERT INTO chatserver_leases (key, member, expires_at) "
                "VALUES ($1, $2, now() + make_interval(secs => $3)) ON CONFLICT (key, member) "
                "DO UPDATE SET expires_at = excluded.expires_at", key, member, ttl)
        else:
            await self._fetchval("DELETE FROM chatserver_leases WHERE key = $1 AND member = $2",
                                 key, member)
        if secrets.randbelow(1000) == 0:  # now and then, forget the expired
            await self._fetchval("DELETE FROM chatserver_leases WHERE expires_at < now()")
        return int(await self._fetchval(
            "SELECT count(*) FROM chatserver_leases WHERE key = $1 AND expires_at > now()", key))

    async def count(self, key: str, amount: float, window: float) -> float:
        total = await self._fetchval(
            "INSERT INTO chatserver_counters AS c (key, total, expires_at) "
            "VALUES ($1, $2, now() + make_interval(secs => $3)) ON CONFLICT (key) DO UPDATE SET "
            "total = CASE WHEN c.expires_at <= now() THEN excluded.total "
            "ELSE c.total + excluded.total END, "
            "expires_at = CASE WHEN c.expires_at <= now() THEN excluded.expires_at "
            "ELSE c.expires_at END RETURNING total", key, amount, window)
        if secrets.randbelow(1000) == 0:  # now and then, forget the expired
            await self._fetchval("DELETE FROM chatserver_counters WHERE expires_at < now()")
        return float(total)
