"""Log lines: one line per event, as text or JSON (CHATSERVER_LOG_FORMAT), with the process id and
the id of the request being served.

A request id is made per HTTP request and per WebSocket (random, so it says nothing about who
sent it) and is carried by a context variable into every line logged while serving it; the
response names it in `X-Request-ID`, so an operator can find the lines of one request a user
reports. A trusted proxy's own id (nginx's `$request_id` in `X-Request-ID`) is kept when it is a
plain token, so the proxy's log and ours share it.

A traceback stays on its event's line (JSON escapes its newlines, text shows them as `\\n`), so
a line-oriented collector never splits one event into several or takes a forged line from one.
What the lines say is still the code's business: no names, emails or message bodies (and
logfilter.py keeps a flood of one line from filling the disk).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import logfilter

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_TOKEN = re.compile(r"[A-Za-z0-9._-]{8,64}")
TEXT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", "")
        if rid:
            line += f" request={rid}"
        return line.replace("\r", "\\r").replace("\n", "\\n")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        rid = getattr(record, "request_id", "")
        if rid:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """The root logger writes one line per event to stderr, in `fmt` (text or json)."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestId())
    logfilter.install(handler)  # a flood of one line is counted, not written
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class RequestIds:
    """ASGI middleware: a request id for each request and socket, in the logs and the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        rid = ""
        if scope.get("chatserver.proxied"):  # only a trusted proxy may name it
            given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
            text = given.decode("latin-1")
            rid = text if _TOKEN.fullmatch(text) else ""
        rid = rid or secrets.token_hex(8)
        token = request_id.set(rid)

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id if scope["type"] == "http" else send)
        finally:
            request_id.reset(token)
