"""Redis for tests: the server at CHATSERVER_TEST_REDIS (default redis://127.0.0.1:6379/0), with a
key and channel prefix of each test's own, so parallel runs never hear each other."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time

import pytest

from . import databases

REDIS_URL = os.environ.get("CHATSERVER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_problem() -> str | None:
    try:
        import redis
    except ImportError:
        return "the redis package is not installed (pip install '.[test]')"

    async def ping() -> None:
        client = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        databases.run(ping)
    except Exception as exc:  # noqa: BLE001 - any failure means: no Redis here
        return f"no Redis at {REDIS_URL}: {type(exc).__name__}: {exc}"
    return None


def require_redis() -> None:
    """Skip without Redis, or fail when the environment variable CI is set."""
    problem = redis_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the Redis tests, but: {problem}")
    pytest.skip(problem)


def fresh_redis_url() -> str:
    """The test Redis with a prefix nobody else uses."""
    return f"{REDIS_URL}?prefix=test{secrets.token_hex(5)}:"


def kill_pubsub_clients(url: str) -> int:
    """Drop the subscribing connections of the broadcast at `url` (CLIENT KILL, as a Redis
    restart or a network cut would), and only those: other test runs share this Redis.
    How many were dropped."""
    import redis

    from chatserver.broadcast.redis import split_prefix, subscriber_name

    name = subscriber_name(split_prefix(url)[1])

    async def kill() -> int:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            ids = [c["id"] for c in await client.client_list(_type="pubsub")
                   if c.get("name") == name]
            for client_id in ids:
                await client.execute_command("CLIENT", "KILL", "ID", client_id)
            return len(ids)
        finally:
            await client.aclose()

    return databases.run(kill)


class PrivateRedis:
    """A `redis-server` of the test's own on a free port, a child process with nothing on disk,
    so a test can kill it and start it again on the same port (a Redis restart) without
    touching the machine's shared Redis."""

    def __init__(self) -> None:
        import shutil

        from .support import free_port

        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is missing: .ci/run installs it with apt-get")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # answering PING, not only listening
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.process.returncode})")
            with socket.socket() as probe:
                probe.settimeout(1)
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    probe.sendall(b"PING\r\n")
                    try:
                        if probe.recv(16).startswith(b"+PONG"):
                            return self
                    except OSError:
                        pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: gone at once, with everything it held (nothing is saved)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        self.kill()
        self.start()
