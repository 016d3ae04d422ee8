"""The database as a fault: unusable at start (one line naming the setting, no traceback), and
gone while serving (/healthz 503 naming it, an error frame for a write that failed, nothing acked
lost, service back when it returns)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from chatserver.storage import open_store

from . import databases
from .support import Server, Visitor, free_port

ROOT = Path(__file__).resolve().parent.parent


def _serve(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = Server(tmp_path / "data", env={"CHATSERVER_DATABASE_URL": url}).environ()
    return subprocess.run(
        [sys.executable, "-m", "chatserver", "serve", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )


def _one_clear_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("CHATSERVER_DATABASE_URL") and expected in lines[0], lines[0]


@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://db.example/chat", "must start with sqlite:/// or postgresql://"),
    ("postgresql://postgres@127.0.0.1:1/chat", "cannot reach postgresql://postgres@127.0.0.1:1"),
    ("postgresql://nobody_here:pw@127.0.0.1:5432/postgres", "refused the credentials"),
])
def test_serve_stops_at_an_unusable_database_url(tmp_path: Path, url: str, expected: str,
                                                 postgres_url: str) -> None:
    """An unknown scheme, an unreachable server, credentials refused: exit 2 with one line that
    names the setting and the problem (never the password)."""
    done = _serve(tmp_path, url)
    _one_clear_line(done, expected)
    assert ":pw@" not in done.stderr


async def test_serve_stops_at_a_newer_schema(tmp_path: Path, postgres_url: str) -> None:
    """A database (SQLite or PostgreSQL) migrated by a newer version of the code stops the
    start: exit 2, one line naming the versions."""
    sqlite_file = tmp_path / "newer.db"
    pg = databases.create_database()
    for url in (f"sqlite://{sqlite_file}", pg):
        await (await open_store(url)).close()
    with closing(sqlite3.connect(sqlite_file)) as db:
        db.execute("INSERT INTO schema_migrations VALUES (999, 'later')")
        db.commit()
    databases.query(pg, "INSERT INTO schema_migrations VALUES (999, 'later')")
    for url in (f"sqlite://{sqlite_file}", pg):
        _one_clear_line(_serve(tmp_path, url), "schema version 999, newer")


class Outage:
    """A TCP relay between the server and PostgreSQL, in a thread of its own: `cut()` drops
    every connection and refuses new ones, as a database that went away; `restore()` lets
    connections through again."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.target_port = parts.hostname or "127.0.0.1", parts.port or 5432
        self.port = free_port()
        self.up = True
        self.loop = asyncio.new_event_loop()
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._accepted, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Called as the connection is made: its socket is known to be aborted at close() even
        # when the relay task is cancelled before its first step.
        self.writers.add(writer)
        task = self.loop.create_task(self._relay(reader, writer))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        self.writers.add(up_writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def url(self, database_url: str) -> str:
        return urlsplit(database_url)._replace(netloc=f"postgres@127.0.0.1:{self.port}").geturl()

    def _call(self, job: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            job()
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(5)

    def cut(self) -> None:
        def job() -> None:
            self.up = False
            for writer in self.writers:
                writer.transport.abort()
        self._call(job)

    def restore(self) -> None:
        def job() -> None:
            self.up = True
        self._call(job)

    def close(self) -> None:
        self.cut()

        async def stop() -> None:
            # A connection accepted but not yet made into a transport is finished by a task of
            # the loop's own (_accept_connection2). Once the server is closed, that task fails
            # before the transport is whole and nothing closes the socket; cancelled before its
            # first step, it never closes it either (Python 3.11's asyncio; ResourceWarning in a
            # later test). So: stop accepting, let those tasks finish (with the relay cut, each
            # new connection is aborted), and only then close the server and cancel our tasks.
            for listening in self.server.sockets:
                self.loop.remove_reader(listening.fileno())
            await asyncio.sleep(0.05)
            self.server.close()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for writer in self.writers:
                writer.transport.abort()
            await self.server.wait_closed()
            # The transports' close callbacks: a socket whose callback has not run when the
            # loop closes stays open (ResourceWarning).
            await asyncio.sleep(0.05)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def outage(postgres_url: str) -> Iterator[Outage]:
    relay = Outage(postgres_url)
    yield relay
    relay.close()


async def _health(server: Server) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return await client.get("/healthz")


async def _until(predicate: Callable[[], object], what: str, seconds: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        if await predicate():  # type: ignore[misc]
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_the_database_going_away_and_coming_back(
    make_server: Callable[..., Server], outage: Outage,
) -> None:
    """While PostgreSQL is unreachable: /healthz answers 503 naming the database, a message
    gets an error frame (no ack) and the socket stays open; when it is back, /healthz is ok,
    the same message is acked once, and every message acked before is still there."""
    database = databases.create_database()
    server = make_server(CHATSERVER_DATABASE_URL=outage.url(database),
                         CHATSERVER_LIMITS_EXEMPT="127.0.0.1", CHATSERVER_PURGE_INTERVAL_SECONDS="0")
    visitor = await Visitor(server).start()
    vs = await visitor.socket()
    await vs.wait_type("welcome")
    for n in range(3):
        await vs.send({"type": "message", "body": f"before {n}", "client_msg_id": f"b{n}"})
        assert (await vs.wait_type("ack", client_msg_id=f"b{n}"))["seq"] == n + 1

    outage.cut()
    health = await _health(server)
    assert health.status_code == 503
    assert health.json()["failing"] == ["database"] and "database" in health.json()["message"]
    # Past the policy cache's second, so the message's own policy check reads the database too.
    await asyncio.sleep(1.1)
    await vs.send({"type": "message", "body": "during", "client_msg_id": "d"})
    error = await vs.wait_type("error", timeout=30)
    assert error["code"] == "unavailable"
    assert not [f for f in vs.frames if f.get("type") == "ack" and f["client_msg_id"] == "d"]
    late = await visitor.socket()  # a socket opened now is told why, and to come back later
    assert await late.closed_code() == 1013
    assert late.frames[-1]["code"] == "unavailable"
    await late.close()

    outage.restore()

    async def healthy() -> bool:
        return (await _health(server)).status_code == 200

    await _until(healthy, "/healthz to answer ok again")
    await vs.send({"type": "message", "body": "during", "client_msg_id": "d"})  # the retry
    assert (await vs.wait_type("ack", client_msg_id="d"))["seq"] == 4
    await vs.send({"type": "resume", "after_seq": 0})
    replayed = [await vs.wait_type("message", seq=n) for n in range(1, 5)]
    assert [m["body"] for m in replayed] == ["before 0", "before 1", "before 2", "during"]
    assert "Traceback" not in server.log()
    await vs.close()
    await visitor.aclose()
