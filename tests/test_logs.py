"""CHATSERVER_LOG_FORMAT=json: every log line is one JSON object with the process id (and the
request id while serving a request), and a chat's names and emails appear in none of them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import httpx

from .support import Agent, Server, Visitor

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Printed to standard output for whoever started the server, not logged.
PRINTED = ("chatserver ", "Answering for hosts", "The privacy policy in force", "No admin yet",
           "  http://")


async def test_json_logs_parse_and_hold_no_pii(make_server: Callable[..., Server]) -> None:
    """A whole chat logged as JSON: each line parses, names its process and level, access lines
    carry the request id the response named, and no line holds an email or a name."""
    server = make_server(CHATSERVER_LOG_FORMAT="json", CHATSERVER_LOG_LEVEL="debug")
    server.add_staff("agent", "agent")
    visitor = await Visitor(server).start(name="Logan Loggins", email="logan.loggins@example.com")
    agent = await Agent(server, "agent").login()
    vs = await visitor.socket()
    welcome = await vs.wait_type("welcome")
    await vs.send({"type": "message", "body": "My email is logan.loggins@example.com",
                   "client_msg_id": "l1"})
    await vs.wait_type("ack", client_msg_id="l1")
    ags = await agent.socket()
    await ags.send({"type": "claim", "conversation_id": welcome["conversation_id"]})
    await ags.wait_type("status", status="active")
    await vs.close()
    await ags.close()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        bad = await http.post("/api/visitor", content=b"{not json",
                              headers={"Content-Type": "application/json"})
        assert bad.status_code in {400, 401, 403, 422}
        marked = await http.get("/healthz")
    request_id = marked.headers["x-request-id"]
    export = await visitor.http.get("/api/me/export")
    assert export.status_code == 200
    await visitor.aclose()
    await agent.aclose()
    server.stop()

    entries = []
    for line in server.log().splitlines():
        if line.startswith(PRINTED) or not line.strip():
            continue
        entry = json.loads(line)  # anything else is a JSON object on one line
        assert isinstance(entry, dict)
        assert {"time", "level", "logger", "message", "pid"} <= set(entry), entry
        assert isinstance(entry["pid"], int)
        entries.append(entry)
    assert entries
    text = "\n".join(json.dumps(e) for e in entries)
    assert not EMAIL.search(text), EMAIL.search(text)
    assert "Logan" not in text and "Loggins" not in text
    access = [e for e in entries if e["logger"] == "chatserver.access"]
    assert access and all(re.fullmatch(r"[0-9a-f]{16}", e["request_id"]) for e in access)
    assert any(e["request_id"] == request_id and "/healthz" in e["message"] for e in access)
    assert len({e["pid"] for e in entries}) == 1


def test_a_traceback_stays_on_its_events_line() -> None:
    """In both formats an event with a traceback is one line, and a newline in a message cannot
    start a forged line."""
    import logging
    import sys

    from chatserver.logformat import JsonFormatter, TextFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("chatserver", logging.ERROR, __file__, 1,
                                   "failed\n2026-01-01 INFO forged", (), sys.exc_info())
    text = TextFormatter().format(record)
    assert "\n" not in text and "Traceback" in text and "ValueError" in text
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert "ValueError: boom" in entry["exception"] and entry["level"] == "error"
