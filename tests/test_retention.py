"""Retention rules against an injected clock: each cut-off is crossed from both sides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chatserver import audit, privacy
from chatserver.consent import bundled_policy
from chatserver.settings import Settings, load
from chatserver.storage import open_store
from chatserver.storage.base import Store

START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(store_url: str, clock: Clock, tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(store_url, clock)
    await audit.attach(s, _settings(tmp_path))
    await s.publish_policy(bundled_policy())
    yield s
    await audit.detach(s)
    await s.close()


def _settings(tmp_path: Path, **env: str) -> Settings:
    return load(environ={"CHATSERVER_DATA_DIR": str(tmp_path / "settings"), **env})


async def _customer_with_conversation(store: Store, tag: str, *, close: bool) -> str:
    session = f"session-{tag}"
    await store.create_visitor_session(session)
    await store.record_access(session, "session_start", "198.51.100.7", "Browser/1")
    customer = await store.save_customer(session, name=tag, email=f"{tag}@example.com",
                                         company="")
    conversation, _ = await store.open_conversation(customer.id)
    await store.append_message(conversation.id, sender="visitor", sender_id=customer.id,
                               author=tag, body="hello", client_msg_id="1")
    if close:
        await store.close_conversation(conversation.id)
    return customer.id


async def _purge(store: Store, settings: Settings) -> dict[str, int]:
    result = await privacy.purge(store, None, settings, dry_run=False, actor="test")
    counts: dict[str, int] = result["counts"]
    return counts


async def test_access_records_expire_after_their_own_period(store: Store, clock: Clock,
                                                            tmp_path: Path) -> None:
    """Access records go at 30 days (default) while the account they belong to stays."""
    settings = _settings(tmp_path)
    customer = await _customer_with_conversation(store, "ada", close=False)
    clock.advance(days=29, hours=23)
    assert (await _purge(store, settings))["access_events"] == 0
    clock.advance(hours=2)
    assert (await _purge(store, settings))["access_events"] == 1
    assert (await store.export_customer(customer))["access_records"] == []
    assert await store.get_customer(customer) is not None


async def test_closed_conversations_expire_open_ones_do_not(store: Store, clock: Clock,
                                                            tmp_path: Path) -> None:
    """A conversation closed N days ago is deleted with its messages; an open one is kept."""
    settings = _settings(tmp_path, CHATSERVER_CONVERSATION_RETENTION_DAYS="10",
                         CHATSERVER_RETENTION_DAYS="1000")
    closed = await _customer_with_conversation(store, "closed", close=True)
    still_open = await _customer_with_conversation(store, "open", close=False)
    clock.advance(days=9)
    assert (await _purge(store, settings))["closed_conversations"] == 0
    clock.advance(days=2)
    assert (await _purge(store, settings))["closed_conversations"] == 1
    assert (await store.export_customer(closed))["conversations"] == []
    assert len((await store.export_customer(still_open))["conversations"]) == 1


async def test_inactive_accounts_are_wiped_unless_open_or_held(store: Store, clock: Clock,
                                                               tmp_path: Path) -> None:
    """Past the inactivity limit an account is erased, unless it has an open conversation or a
    legal hold; activity resets the clock."""
    settings = _settings(tmp_path, CHATSERVER_RETENTION_DAYS="365")
    idle = await _customer_with_conversation(store, "idle", close=True)
    talking = await _customer_with_conversation(store, "talking", close=False)
    held = await _customer_with_conversation(store, "held", close=True)
    active = await _customer_with_conversation(store, "active", close=True)
    await store.set_legal_hold(held, True)
    clock.advance(days=200)
    await store.record_access("session-active", "socket", None, None)  # activity
    clock.advance(days=165, hours=-1)
    assert (await _purge(store, settings))["accounts"] == 0
    clock.advance(hours=2)
    dry = await privacy.purge(store, None, settings, dry_run=True, actor="test")
    assert dry["counts"]["accounts"] == 1 and await store.get_customer(idle) is not None
    counts = await _purge(store, settings)
    assert counts["accounts"] == 1 and counts["closed_conversations"] == 2  # held one kept
    assert await store.get_customer(idle) is None
    for kept in (talking, held, active):
        assert await store.get_customer(kept) is not None
    clock.advance(days=200)
    assert (await _purge(store, settings))["accounts"] == 1  # "active" now idle too
    await store.set_legal_hold(held, False)
    assert (await _purge(store, settings))["accounts"] == 1
    assert await store.get_customer(talking) is not None  # open conversation: never


async def test_purge_runs_are_audited_with_counts_only(store: Store, tmp_path: Path) -> None:
    """A real purge writes an audit entry with counts; a dry run writes nothing."""
    settings = _settings(tmp_path, CHATSERVER_RETENTION_DAYS="0")
    await _customer_with_conversation(store, "gone", close=True)
    await privacy.purge(store, None, settings, dry_run=True, actor="test")
    assert [e["action"] for e in await store.all_audit()] == ["audit.chain_keyed"]
    await _purge(store, settings)
    entry = (await store.all_audit())[-1]
    assert entry["action"] == "retention.purge" and entry["detail"]["accounts"] == 1
    assert "gone" not in str(entry)


async def test_unfinished_sessions_expire_within_hours(store: Store, clock: Clock,
                                                      tmp_path: Path) -> None:
    """A session that consented but never gave details is deleted with its consents and access
    records after CHATSERVER_UNFINISHED_SESSION_HOURS (default 4), long before an account
    would be; a session that reached the pre-chat form is kept."""
    settings = _settings(tmp_path)
    assert settings.unfinished_session_hours == 4
    await store.create_visitor_session("bare")
    await store.add_consent("bare", policy_version="1.01", policy_sha256="0" * 64,
                            ip="192.0.2.9", user_agent="UA", method="widget", on_behalf=False)
    await store.record_access("bare", "session_start", "192.0.2.9", "UA")
    kept = await _customer_with_conversation(store, "kept", close=True)
    clock.advance(hours=3, minutes=59)
    assert (await _purge(store, settings))["sessions_without_details"] == 0
    assert await store.get_visitor_session("bare") is not None
    clock.advance(minutes=2)
    dry = await privacy.purge(store, None, settings, dry_run=True, actor="test")
    assert dry["counts"]["sessions_without_details"] == 1
    counts = await _purge(store, settings)
    assert counts["sessions_without_details"] == 1
    assert await store.get_visitor_session("bare") is None
    assert await store.session_consents("bare") == []
    assert await store.get_customer(kept) is not None


async def test_staff_sign_ins_expire_with_access_records(store: Store, clock: Clock,
                                                         tmp_path: Path) -> None:
    """Staff sign-in records (IP address, user agent) go at CHATSERVER_ACCESS_RETENTION_DAYS."""
    settings = _settings(tmp_path, CHATSERVER_ACCESS_RETENTION_DAYS="5")
    staff = await store.add_staff("sam", "agent", "hash")
    await store.record_login(staff.id, "192.0.2.10", "UA", "success")
    clock.advance(days=4, hours=23)
    assert (await _purge(store, settings))["staff_sign_ins"] == 0
    clock.advance(hours=2)
    assert (await _purge(store, settings))["staff_sign_ins"] == 1
    assert await store.login_events(staff.id) == []


async def test_a_large_purge_runs_in_batches_and_counts_as_its_dry_run(
        store: Store, clock: Clock, tmp_path: Path) -> None:
    """Hundreds of accounts, conversations and sessions past their time (more than one batch
    each) are all purged, in several short transactions, and the dry run counted the same."""
    from chatserver.storage.sqlite import PURGE_BATCH

    settings = _settings(tmp_path, CHATSERVER_RETENTION_DAYS="30",
                         CHATSERVER_CONVERSATION_RETENTION_DAYS="10")
    n = PURGE_BATCH + 30
    for k in range(n):
        await _customer_with_conversation(store, f"c{k}", close=True)
        await store.create_visitor_session(f"bare{k}")
    keep = await _customer_with_conversation(store, "open", close=False)
    clock.advance(days=31)
    dry = await privacy.purge(store, None, settings, dry_run=True, actor="test")
    counts = await _purge(store, settings)
    assert counts == dry["counts"]
    assert counts["accounts"] == n and counts["closed_conversations"] == n
    assert counts["sessions_without_details"] == n and counts["messages"] == n
    assert counts["access_events"] == n + 1
    assert await store.get_customer(keep) is not None
    again = await _purge(store, settings)
    assert again["accounts"] == again["sessions_without_details"] == 0
