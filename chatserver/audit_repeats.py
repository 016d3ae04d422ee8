"""Repeats of one audit event, folded into one entry with a count.

Anyone can fail a staff sign-in, and any visitor can ask for their own export, again and again:
one audit entry per try would let them grow the log without limit. So for the actions in
REPEATABLE, the first occurrence of an (actor, action, target, detail) is written at once, and
its repeats over the following window are counted and written as one entry when the window ends:
the same fields, with `repeats`, `first_at`, `last_at` and, when they came from several addresses,
`addresses` (their number; `ip` is then empty). While repeats keep coming, one entry per window
is written; a window without any ends the fold, and the next occurrence is written at once again.

Counts live in this process's memory until their window ends; they are written on shutdown too
(a hard kill loses only the count of the current window, never a first occurrence).
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

REPEATABLE = frozenset({"staff.login_failed", "customer.export"})
MAX_KEYS = 10_000  # distinct events folded at once; past it the oldest is written early
MAX_ADDRESSES = 1_000  # distinct addresses counted per fold

Key = tuple[str, str, str | None, str]
Write = Callable[[dict[str, Any]], Coroutine[Any, Any, Any]]


@dataclass
class _Fold:
    entry: dict[str, Any]
    count: int = 0
    first_at: str = ""
    last_at: str = ""
    ips: set[str | None] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


def _key(entry: dict[str, Any]) -> Key:
    detail = json.dumps(entry.get("detail") or {}, sort_keys=True)
    return (entry["actor"], entry["action"], entry.get("target"), detail)


def summary(fold: _Fold) -> dict[str, Any]:
    detail = {**(fold.entry.get("detail") or {}), "repeats": fold.count,
              "first_at": fold.first_at, "last_at": fold.last_at}
    ip = next(iter(fold.ips)) if len(fold.ips) == 1 else None
    if len(fold.ips) > 1:
        detail["addresses"] = len(fold.ips)
    return {**fold.entry, "ip": ip, "detail": detail}


class Repeats:
    def __init__(self, window: float, write: Write, now: Callable[[], str]) -> None:
        self.window = window
        self._write = write
        self._now = now
        self._folds: OrderedDict[Key, _Fold] = OrderedDict()
        self._writing: set[asyncio.Task[Any]] = set()

    def fold(self, entry: dict[str, Any]) -> bool:
        """True when `entry` was counted into a fold (write nothing now); False when it is the
        first of its kind in this window and must be written at once."""
        if entry["action"] not in REPEATABLE:
            return False
        key = _key(entry)
        fold = self._folds.get(key)
        if fold is None:
            self._folds[key] = _Fold(entry)
            self._arm(key)
            if len(self._folds) > MAX_KEYS:
                self._close(next(iter(self._folds)), again=False)
            return False
        fold.count += 1
        stamp = self._now()
        fold.first_at = fold.first_at or stamp
        fold.last_at = stamp
        if len(fold.ips) < MAX_ADDRESSES:
            fold.ips.add(entry.get("ip"))
        return True

    def _arm(self, key: Key) -> None:
        loop = asyncio.get_running_loop()
        self._folds[key].timer = loop.call_later(self.window, self._close, key, True)

    def _close(self, key: Key, again: bool) -> None:
        """The window of `key` ended: write its count, if any, and keep folding while busy."""
        fold = self._folds.pop(key, None)
        if fold is None:
            return
        if fold.timer is not None:
            fold.timer.cancel()
        if not fold.count:
            return
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(
            self._write(summary(fold)))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        if again:  # repeats are still coming: the next one is counted, not written at once
            self._folds[key] = _Fold(fold.entry, count=0)
            self._arm(key)

    def pending(self) -> int:
        """Events being folded now."""
        return len(self._folds)

    async def flush(self) -> None:
        """Write every pending count now (shutdown)."""
        for key in list(self._folds):
            self._close(key, again=False)
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)
