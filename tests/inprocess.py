"""The whole application in the test's own process: the real Starlette app, store and hub, with
a real SQLite file in a temp folder, driven through Starlette's TestClient (HTTP and WebSocket).

The server-level tests (tests/support.py) prove the same defences through uvicorn; these run in
milliseconds and in-process, so mutation testing sees every line they reach.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect

from chatserver import passwords
from chatserver.app import create_app
from chatserver.settings import Settings, load
from chatserver.storage.base import Staff

with warnings.catch_warnings():
    # The test client announces, on import, that it prefers another HTTP package; the one we
    # have works the same for these tests.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketTestSession

STAFF_PASSWORD = "correct horse battery staple"
ALLOWED = "https://shop.example"
OWN = "http://testserver"
__all__ = ["App", "TestClient", "WebSocketTestSession", "receive", "running_app"]


@functools.cache
def _password_hash() -> str:
    return passwords.hash_password(STAFF_PASSWORD)  # argon2 is slow: once per test run


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class App:
    """One application, one lifespan; `client()` gives another browser (its own cookie jar)."""

    def __init__(self, main: TestClient, settings: Settings, clock: Clock) -> None:
        self.main = main
        self.settings = settings
        self.clock = clock

    @property
    def state(self) -> Any:
        return self.main.app.state.chat  # type: ignore[attr-defined]

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a coroutine function on the app's own event loop."""
        return self.main.portal.call(functools.partial(fn, *args, **kwargs))  # type: ignore[union-attr]

    def client(self, **kwargs: Any) -> TestClient:
        other = TestClient(self.main.app, **kwargs)
        other.portal = self.main.portal  # share the running loop and lifespan
        return other

    def add_staff(self, name: str, role: str = "agent") -> Staff:
        staff: Staff = self.call(self.state.store.add_staff, name, role, _password_hash())
        return staff

    def staff_client(self, name: str, role: str = "agent", **kwargs: Any) -> TestClient:
        self.add_staff(name, role)
        client = self.client(**kwargs)
        response = client.post("/api/staff/login",
                               json={"username": name, "password": STAFF_PASSWORD})
        assert response.status_code == 200, response.text
        return client

    def visitor_client(self, name: str = "Ada", email: str = "ada@example.com",
                       **kwargs: Any) -> TestClient:
        client = self.client(**kwargs)
        assert client.post("/api/consent", json={"policy_version": "1.01"}).status_code == 200
        response = client.post("/api/visitor",
                               json={"name": name, "email": email, "company": ""})
        assert response.status_code == 200, response.text
        return client


def receive(ws: WebSocketTestSession, timeout: float = 5.0) -> dict[str, Any]:
    """The socket's next frame; WebSocketDisconnect when the server closed it, TimeoutError
    when nothing comes (the test client's own receive would wait for ever)."""

    async def next_message() -> Any:
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()

    message = ws.portal.call(next_message)
    if message["type"] == "websocket.close":
        raise WebSocketDisconnect(code=message.get("code", 1000), reason=message.get("reason"))
    frame: dict[str, Any] = json.loads(message["text"])
    return frame


@contextmanager
def running_app(tmp_path: Path, **env: str) -> Iterator[App]:
    environ = {
        "CHATSERVER_DATA_DIR": str(tmp_path / "data"),
        "CHATSERVER_PURGE_INTERVAL_SECONDS": "0",
        "CHATSERVER_ALLOWED_ORIGINS": ALLOWED,
        "CHATSERVER_ALLOWED_HOSTS": "testserver",  # the name Starlette's TestClient sends
        **env,
    }
    settings = load(environ=environ)
    clock = Clock()
    with TestClient(create_app(settings, clock=clock)) as main:
        yield App(main, settings, clock)
