"""A log filter that lets a repeated line through a few times a minute, then counts it.

An attack repeats itself: a refused or timed-out connection, a malformed request, an accept
that failed for want of file descriptors each log the same line, and thousands of them a second
would fill the disk and bury everything else. Lines are grouped by logger, level and message
template (not the filled-in text); past `burst` lines of a group within `window` seconds the rest
are dropped and counted, and the group's next line after the window says how many were. Only the
first line of a group in a window keeps its traceback.

The access log is exempt: each of its lines is one request answered, and every one is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Group:
    started: float
    passed: int = 0
    dropped: int = 0


EXEMPT = frozenset({"chatserver.access"})


class RepeatFilter(logging.Filter):
    def __init__(self, burst: int = 10, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 exempt: frozenset[str] = EXEMPT) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.clock = clock
        self.exempt = exempt
        self.groups: dict[tuple[str, int, str], _Group] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name in self.exempt:
            return True
        if record.name == "asyncio" and record.exc_info and record.exc_info[1] is not None:
            # asyncio's own errors (an accept that ran out of descriptors under a flood) are
            # about the machine, not our code: one line naming the error says all there is.
            record.msg = f"{record.getMessage()}: {record.exc_info[1]!r}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        group = self.groups.get(key)
        if group is None or now - group.started >= self.window:
            dropped = group.dropped if group is not None else 0
            self.groups[key] = _Group(now, passed=1)
            if dropped:
                record.msg = (f"{record.getMessage()} ({dropped} more like this were not logged "
                              f"in the {self.window:.0f} s before)")
                record.args = ()
            if len(self.groups) > 10_000:  # bounded memory, whatever varies in the templates
                self.groups = {key: self.groups[key]}
            return True
        if group.passed < self.burst:
            group.passed += 1
            # The first of a window keeps its traceback; the same one again says nothing new.
            record.exc_info = None
            record.exc_text = None
            return True
        group.dropped += 1
        return False


def install(handler: logging.Handler, burst: int = 10, window: float = 60.0) -> RepeatFilter:
    repeat = RepeatFilter(burst, window)
    handler.addFilter(repeat)
    return repeat
