"""Test helpers: a real server in a subprocess, and clients that speak to it as browsers would."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from . import databases

STAFF_PASSWORD = "correct horse battery staple"
PYCACHE = Path(tempfile.gettempdir()) / f"chatserver-tests-pycache-{os.getuid()}"


# Ports handed out by free_port, claimed with a lock file each so that no other test process
# (the other pytest-xdist worker, the other pass of .ci/run) is handed the same one while its
# server starts: the kernel may give one just-released port to two processes in turn, and a test
# whose own server then failed to bind talked to the other process's server, which had answered
# its /healthz (seen in CI: a widget on a server with no agent said one was online). A claim needs
# to outlast only the server's start, so the oldest are let go.
PORT_CLAIMS = Path(tempfile.gettempdir()) / f"chatserver-tests-ports-{os.getuid()}"
_claimed: list[int] = []  # lock files' descriptors, oldest first
CLAIMS_KEPT = 100


def claim_port(port: int) -> bool:
    """Claim `port` for this process's next server; False if another test process holds it."""
    PORT_CLAIMS.mkdir(exist_ok=True)
    claim = os.open(PORT_CLAIMS / str(port), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(claim)
        return False
    _claimed.append(claim)
    if len(_claimed) > CLAIMS_KEPT:
        os.close(_claimed.pop(0))
    return True


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if claim_port(port):  # else another test process was handed it and starts a server on it
            return port


@dataclass
class Server:
    """`chatserver serve` in its own process, on a free port, with its own data folder."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    _log_file: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        return self.url

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHATSERVER_")}
        # Each server would otherwise compile every module of the worktree again when bytecode
        # is not written (PYTHONDONTWRITEBYTECODE): a third of a second of CPU per start, times
        # hundreds of servers. The cache lives outside the worktree.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))
        # The tests stand in for a browser behind a proxy on loopback (X-Forwarded-For and
        # -Proto): loopback is trusted unless a test says otherwise.
        env.update({"CHATSERVER_DATA_DIR": str(self.data_dir),
                    "CHATSERVER_TRUSTED_PROXIES": "127.0.0.1,::1", **self.env})
        if "CHATSERVER_DATABASE_URL" not in self.env:
            env.update(databases.database_env(self.data_dir))
        return env

    @property
    def database_url(self) -> str:
        return self.environ().get("CHATSERVER_DATABASE_URL") or f"sqlite://{self.data_dir / 'chat.db'}"

    @property
    def on_postgres(self) -> bool:
        return not self.database_url.startswith("sqlite:")

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run SQL on the server's database behind its back (`?` marks parameters)."""
        return databases.query(self.database_url, sql, *args)

    def start(self) -> Server:
        if not self.port:
            self.port = free_port()
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        if self._log_file is None:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatserver", "serve", "--port", str(self.port)],
            env=self.environ(), stdout=self._log_file, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n" + self.log())
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not start:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chatserver", *args], env=self.environ(), input=stdin,
            capture_output=True, text=True, timeout=60,
        )

    def add_staff(self, name: str, role: str = "agent") -> None:
        done = self.cli("user", "add", name, "--role", role, "--password-stdin",
                        stdin=STAFF_PASSWORD + "\n")
        assert done.returncode == 0, done.stderr


def cookie_header(client: httpx.AsyncClient) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)


class Socket:
    """A WebSocket client that keeps every frame it receives.

    `wait_for` returns the first received frame, not taken before, that matches; frames that did
    not match stay available, so the order in which a test asks does not matter.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._taken: set[int] = set()

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def _receive(self, timeout: float) -> None:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        self.frames.append(json.loads(raw))

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        checked = 0
        while True:
            for index in range(checked, len(self.frames)):
                if index not in self._taken and predicate(self.frames[index]):
                    self._taken.add(index)
                    return self.frames[index]
            checked = 0
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame; got {self.frames[-5:]}")
            await self._receive(remaining)

    async def wait_type(self, kind: str, timeout: float = 5, **fields: Any) -> dict[str, Any]:
        return await self.wait_for(
            lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items()),
            timeout,
        )

    async def closed_code(self, timeout: float = 5) -> int | None:
        """Read until the server closes; the close code it sent."""
        try:
            async with asyncio.timeout(timeout):
                async for raw in self.ws:
                    self.frames.append(json.loads(raw))
        except Exception:  # noqa: BLE001 - a ConnectionClosedError still carries the code
            pass
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        # A close the server did not answer in time leaves the socket open, to be found by the
        # garbage collector in some later test (ResourceWarning: unclosed socket): let it go now.
        self.ws.transport.abort()


async def open_socket(server: Server, path: str, cookies: str = "", origin: str | None = None
                      ) -> Socket:
    headers = {"Cookie": cookies} if cookies else {}
    ws = await connect(server.ws_url + path, additional_headers=headers,
                       origin=origin, open_timeout=5)  # type: ignore[arg-type]
    return Socket(ws)


# The test clients give up an idle pooled connection well before the server closes it
# (CHATSERVER_KEEPALIVE_SECONDS, 5 s): with both at 5 s, a request sent as the server closed
# the connection failed with "Server disconnected without sending a response".
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=2.0)


class Visitor:
    """A customer: consents, fills the pre-chat form, chats."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.url, timeout=10, limits=CLIENT_LIMITS)

    async def consent(self, version: str = "1.01", **extra: Any) -> httpx.Response:
        return await self.http.post("/api/consent", json={"policy_version": version, **extra})

    async def register(self, name: str = "Ada Lovelace", email: str = "ada@example.com",
                       company: str = "Analytical Engines") -> httpx.Response:
        return await self.http.post("/api/visitor",
                                    json={"name": name, "email": email, "company": company})

    async def start(self, **who: str) -> Visitor:
        assert (await self.consent()).status_code == 200
        response = await self.register(**who)
        assert response.status_code == 200, response.text
        return self

    async def socket(self, origin: str | None = None) -> Socket:
        return await open_socket(self.server, "/ws/visitor", cookie_header(self.http), origin)

    async def aclose(self) -> None:
        await self.http.aclose()


class Agent:
    def __init__(self, server: Server, name: str) -> None:
        self.server = server
        self.name = name
        self.http = httpx.AsyncClient(base_url=server.url, timeout=10, limits=CLIENT_LIMITS)

    async def login(self) -> Agent:
        response = await self.http.post(
            "/api/staff/login", json={"username": self.name, "password": STAFF_PASSWORD}
        )
        assert response.status_code == 200, response.text
        return self

    async def socket(self, origin: str | None = None) -> Socket:
        return await open_socket(self.server, "/ws/agent", cookie_header(self.http), origin)

    async def rename(self, name: str, display_name: str) -> None:
        """As an admin in the console's Staff tab: give the account `name` a display name."""
        staff = (await self.http.get("/api/admin/staff")).json()["staff"]
        staff_id = next(s["id"] for s in staff if s["name"] == name)
        changed = await self.http.patch(f"/api/admin/staff/{staff_id}",
                                        json={"display_name": display_name})
        assert changed.status_code == 200, changed.text

    async def aclose(self) -> None:
        await self.http.aclose()
