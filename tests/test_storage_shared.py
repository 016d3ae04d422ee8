"""What several processes share through the store, on both stores: a periodic job claimed by
exactly one of them per interval, and a visitor session started exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from chatserver.consent import bundled_policy
from chatserver.storage import open_store
from chatserver.storage.base import Store, iso


@pytest.fixture
async def stores(store_url: str) -> AsyncIterator[list[Store]]:
    """Three stores on one database, as three processes would open it."""
    opened = [await open_store(store_url) for _ in range(3)]
    await opened[0].publish_policy(bundled_policy())
    yield opened
    for s in opened:
        await s.close()


async def test_a_due_job_is_claimed_by_exactly_one_store(stores: list[Store]) -> None:
    """Of several stores claiming a due job at once, one wins; nobody wins again before the due
    time it set, and one wins once that time has passed."""
    later = iso(stores[0].clock() + timedelta(hours=1))
    won = await asyncio.gather(*(s.claim_job("retention.purge", later) for s in stores * 3))
    assert won.count(True) == 1
    assert not await stores[1].claim_job("retention.purge", later)
    assert await stores[1].claim_job("mail.replies", later)  # jobs are claimed separately
    past = iso(stores[0].clock() - timedelta(seconds=1))
    assert await stores[2].claim_job("overdue", past)  # due again at once
    won = await asyncio.gather(*(s.claim_job("overdue", later) for s in stores * 3))
    assert won.count(True) == 1


async def test_a_visitor_session_is_started_exactly_once(stores: list[Store]) -> None:
    """Several stores starting the same session at once: one records the session, its access
    record and its consent; the others write nothing and say so."""
    started = await asyncio.gather(*(s.start_visitor_session(
        "session-once", policy_version="1.01", policy_sha256=bundled_policy().sha256,
        ip="198.51.100.7", user_agent="Once/1.0", method="widget", on_behalf=True)
        for s in stores * 3))
    assert started.count(True) == 1
    session = await stores[0].get_visitor_session("session-once")
    assert session is not None and session.consent_version == "1.01"
    history = await stores[0].session_consents("session-once")
    assert len(history) == 1 and history[0]["on_behalf"] is True
    assert history[0]["ip"] == "198.51.100.7"
