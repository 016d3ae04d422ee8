"""The stores' cheap timestamp: the same text datetime gives, at the same moment."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from chatserver.storage.base import iso, iso_now, stamp, utc_now


def test_iso_now_reads_as_iso_and_lies_between_two_datetime_readings() -> None:
    # Over more than a second, so the cached date and time of day must move on at least once.
    seconds = set()
    deadline = time.monotonic() + 1.2
    while time.monotonic() < deadline:
        before = iso(utc_now())
        now = iso_now()
        after = iso(utc_now())
        assert before <= now <= after
        assert len(now) == len(before) and now.endswith("Z")
        assert datetime.fromisoformat(now.replace("Z", "+00:00")).tzinfo == UTC
        seconds.add(now[:19])
        time.sleep(0.01)
    assert len(seconds) >= 2


def test_stamp_keeps_an_injected_clock() -> None:
    fixed = datetime(2031, 5, 6, 7, 8, 9, 12, tzinfo=UTC)
    assert stamp(lambda: fixed) == "2031-05-06T07:08:09.000012Z"
    assert stamp(utc_now)[:4] == iso(utc_now())[:4]
