"""Shared by the fuzz tests: reading a server's log for crashes, and the server bugs fuzzing found.

A fuzz run fails on any 5xx or crash in the log. Each bug fuzzing found (and that was then fixed)
is kept below with the request or frame that triggered it; tests/test_fuzz.py replays each one as
a regression test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .support import Server

# What the server writes when a request or socket handler raises: our own edge handler logs
# "unhandled <Error> on <METHOD> <path> at ...", uvicorn a traceback for a socket.
PROBLEM = re.compile(r"unhandled|Traceback|Exception in ASGI application")


class LogWatch:
    """The problem lines a server has logged since the last look."""

    def __init__(self, server: Server) -> None:
        assert server.log_path is not None
        self.path: Path = server.log_path
        self.offset = self.path.stat().st_size

    def new_problems(self) -> list[str]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        self.offset += len(data)
        return [line for line in data.decode(errors="replace").splitlines()
                if PROBLEM.search(line)]


@dataclass(frozen=True)
class FoundBug:
    name: str
    signature: str  # a regex for the server's "unhandled ..." log line
    role: str  # who sends the request: anonymous, visitor or admin
    method: str
    path: str
    body: str | None  # the raw JSON text; "{version}" is the current policy version


FOUND_BUGS: list[FoundBug] = [
    # A filter beyond SQLite's 64-bit integers reaches the database: OverflowError.
    FoundBug("agent filter beyond int64", r"unhandled OverflowError on GET /api/admin/conversations",
             "admin", "GET", "/api/admin/conversations?agent=9223372036854775808", None),
    # A time that leaves datetime's range when moved to UTC: OverflowError.
    FoundBug("audit since at year 1", r"unhandled OverflowError on GET /api/admin/audit",
             "admin", "GET", "/api/admin/audit?since=0001-01-01T00:00:00%2B01:00", None),
    # `value not in {...}` with a list or object value: TypeError (unhashable).
    FoundBug("consent method a list", r"unhandled TypeError on POST /api/consent",
             "anonymous", "POST", "/api/consent", '{"policy_version": "{version}", "method": []}'),
    FoundBug("staff role a list", r"unhandled TypeError on POST /api/admin/staff",
             "admin", "POST", "/api/admin/staff",
             '{"name": "bob", "role": [], "password": "x"}'),
    FoundBug("staff state an object", r"unhandled TypeError on PATCH /api/admin/staff/",
             "admin", "PATCH", "/api/admin/staff/1", '{"state": {}}'),
    # JSON may escape a lone surrogate ("\ud800"), which Python decodes and cannot encode again
    # for SQLite, argon2, sha256 or the error response: UnicodeEncodeError.
    FoundBug("lone surrogate in a customer field", r"unhandled UnicodeEncodeError on POST /api/visitor",
             "visitor", "POST", "/api/visitor", '{"name": "\\ud800", "email": "a@example.com"}'),
    FoundBug("lone surrogate in a sign-in", r"unhandled UnicodeEncodeError on POST /api/staff/login",
             "anonymous", "POST", "/api/staff/login", '{"username": "\\ud800", "password": "x"}'),
    FoundBug("lone surrogate as a field name", r"unhandled UnicodeEncodeError on POST /api/consent",
             "anonymous", "POST", "/api/consent", '{"policy_version": "{version}", "\\ud800": 1}'),
    FoundBug("lone surrogate in a policy", r"unhandled UnicodeEncodeError on POST /api/admin/policies",
             "admin", "POST", "/api/admin/policies",
             '{"version": "9.9", "effective_date": "2026-01-01", "summary": "s", '
             '"text": "\\ud800"}'),
]

# Frames that crashed a socket handler (uvicorn logged a traceback, the client saw 1006).
FOUND_SOCKET_BUGS: dict[str, str] = {
    "after_seq beyond int64": '{"type": "resume", "after_seq": 9223372036854775808}',
    "an integer of 5000 digits": '{"type": "ping", "n": ' + "1" * 5000 + "}",
    "lone surrogate in a body": '{"type": "message", "body": "\\ud800", "client_msg_id": "a"}',
    "lone surrogate in a client_msg_id":
        '{"type": "message", "body": "hi", "client_msg_id": "\\ud800"}',
}


def unexplained(lines: list[str]) -> list[str]:
    """Every problem line: none is excused any more."""
    return list(lines)
