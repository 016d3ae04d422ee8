"""The mail part of the store, used directly against an injected clock: the outbox, one-time
links, carried consent, read state, and erasure taking unsent mail and unused links with it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from chatserver.consent import bundled_policy
from chatserver.errors import NotFound
from chatserver.storage import open_store
from chatserver.storage.base import Store, iso

from . import databases

START = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def iso(self, **delta: float) -> str:
        return iso(self.now + timedelta(**delta))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(store_url: str, clock: Clock) -> AsyncIterator[Store]:
    s = await open_store(store_url, clock)
    await s.publish_policy(bundled_policy())
    yield s
    await s.close()


async def _customer(store: Store, tag: str, email: str | None = None, *,
                    consent: bool = True) -> str:
    session = f"session-{tag}"
    await store.create_visitor_session(session)
    if consent:
        policy = bundled_policy()
        await store.add_consent(session, policy_version=policy.version,
                                policy_sha256=policy.sha256, ip="192.0.2.1", user_agent="B/1",
                                method="widget", on_behalf=False)
    customer = await store.save_customer(session, name=tag, email=email or f"{tag}@example.com",
                                         company="")
    return customer.id


def _rows(store_url: str, sql: str) -> list[tuple[object, ...]]:
    return databases.query(store_url, sql)


async def test_account_mail_is_queued_for_a_known_address_only(store: Store, store_url: str,
                                                               clock: Clock) -> None:
    """A known address (any case) queues one mail for its newest account; an unknown one
    queues nothing and stores nothing."""
    older = await _customer(store, "old", "Same@Example.com")
    clock.advance(minutes=1)
    newer = await _customer(store, "new", "same@example.com")
    await store.queue_account_mail("signin", "SAME@example.COM")
    await store.queue_account_mail("signin", "nobody@example.com")
    rows = _rows(store_url, "SELECT kind, customer_id, address FROM mail_outbox")
    assert rows == [("signin", newer, None)] and older != newer


async def test_claim_lease_retry_and_finish(store: Store, clock: Clock) -> None:
    """A claimed mail is not claimed again while its lease runs; a retry waits for its time;
    a finished mail keeps no address and is never claimed again."""
    customer = await _customer(store, "ada")
    mail_id = await store.queue_mail("transcript", customer_id=customer, conversation_id=None)
    first = await store.claim_mail(clock.iso(seconds=60))
    assert first is not None and first.id == mail_id and first.attempts == 1
    assert await store.claim_mail(clock.iso(seconds=60)) is None
    await store.finish_mail(mail_id, status="pending", error="ConnectionRefusedError",
                            retry_at=clock.iso(seconds=30))
    assert await store.claim_mail(clock.iso(seconds=60)) is None
    clock.advance(seconds=31)
    second = await store.claim_mail(clock.iso(seconds=60))
    assert second is not None and second.attempts == 2
    clock.advance(seconds=61)  # the sender died: its lease runs out and the mail comes back
    third = await store.claim_mail(clock.iso(seconds=60))
    assert third is not None and third.attempts == 3
    await store.finish_mail(mail_id, status="sent")
    assert await store.claim_mail(clock.iso(seconds=60)) is None
    [row], total = await store.list_mail(limit=10, offset=0)
    assert total == 1 and row["status"] == "sent" and row["attempts"] == 3
    assert row["last_error"] is None and row["sent_at"] == clock.iso()
    assert "address" not in row and "params" not in row


async def test_farewell_address_is_cleared_when_finished(store: Store, store_url: str) -> None:
    """The farewell is the one mail that keeps an address; finishing it overwrites it."""
    mail_id = await store.queue_mail("farewell", address="gone@example.com")
    claimed = await store.claim_mail(iso(datetime.now(UTC) + timedelta(days=1)))
    assert claimed is not None and claimed.address == "gone@example.com"
    await store.finish_mail(mail_id, status="failed", error="SMTPRecipientsRefused 550")
    assert _rows(store_url, "SELECT address, status FROM mail_outbox") == [(None, "failed")]


async def test_erasure_takes_unsent_mail_and_links_with_it(store: Store, store_url: str,
                                                          clock: Clock) -> None:
    """Erasing a customer deletes their queued mail, read state and links in that transaction;
    another customer's are kept."""
    gone = await _customer(store, "gone")
    kept = await _customer(store, "kept")
    conversation, _ = await store.open_conversation(gone)
    await store.mark_seen(conversation.id, 0, read=True)
    for customer in (gone, kept):
        await store.queue_mail("transcript", customer_id=customer)
        await store.create_mail_token(f"hash-{customer}", customer, "signin",
                                      clock.iso(minutes=15))
    await store.queue_mail("reply", customer_id=gone, conversation_id=conversation.id)
    await store.erase_customer(gone, reason="request")
    assert _rows(store_url, "SELECT customer_id FROM mail_outbox") == [(kept,)]
    assert _rows(store_url, "SELECT customer_id FROM mail_tokens") == [(kept,)]
    assert _rows(store_url, "SELECT * FROM conversation_reads") == []


async def test_links_are_single_use_expire_and_a_newer_one_voids_older(store: Store,
                                                                       clock: Clock) -> None:
    """A link works once, not after it expires, not after a newer link of the same purpose,
    and not for another purpose."""
    customer = await _customer(store, "ada")
    await store.create_mail_token("one", customer, "signin", clock.iso(minutes=15))
    await store.create_mail_token("two", customer, "signin", clock.iso(minutes=15))
    await store.create_mail_token("bye", customer, "terminate", clock.iso(minutes=15))
    assert await store.use_mail_token("one", "signin") is None  # voided by "two"
    assert await store.use_mail_token("two", "terminate") is None  # wrong purpose
    checked = await store.check_mail_token("two", "signin")
    assert checked is not None and checked.customer_id == customer
    spent = await store.use_mail_token("two", "signin")
    assert spent is not None and spent.customer_id == customer
    assert await store.use_mail_token("two", "signin") is None
    assert await store.check_mail_token("two", "signin") is None
    clock.advance(minutes=15)
    assert await store.use_mail_token("bye", "terminate") is None  # expired


async def test_linked_session_carries_the_standing_consent(store: Store) -> None:
    """A session opened by link is bound to the customer and carries their standing consent,
    with a receipt of its own; a customer who withdrew carries none."""
    consenting = await _customer(store, "yes")
    session = await store.create_linked_session("linked-1", consenting, ip="203.0.113.9",
                                                user_agent="Other/2")
    assert session.customer_id == consenting and session.consent_version == "1.01"
    assert (await store.get_visitor_session("linked-1")) == session
    receipts = await store.list_consents(consenting)
    assert [r["method"] for r in receipts] == ["email_link", "widget"]
    assert receipts[0]["ip"] == "203.0.113.9"
    kinds = [a["kind"] for a in await store.customer_access(consenting)]
    assert "email_link" in kinds

    withdrawn = await _customer(store, "no")
    await store.withdraw_consents("session-no")
    other = await store.create_linked_session("linked-2", withdrawn, ip=None, user_agent=None)
    assert other.consent_version is None
    with pytest.raises(NotFound):
        await store.create_linked_session("linked-3", "cu_missing", ip=None, user_agent=None)


async def test_read_state_is_clamped_and_only_rises(store: Store) -> None:
    """mark_seen clamps to the last seq and never lowers what was read or seen."""
    customer = await _customer(store, "ada")
    conversation, _ = await store.open_conversation(customer)
    for n in range(3):
        await store.append_message(conversation.id, sender="agent", sender_id="1",
                                   author="Bo", body=f"r{n}", client_msg_id=f"r{n}")
    assert await store.mark_seen(conversation.id, 99, read=False) == 3
    assert await store.mark_seen(conversation.id, 1, read=True) == 1
    assert await store.read_state(conversation.id) == {"read_seq": 1, "seen_seq": 3,
                                                       "mailed_seq": 0, "emailed_seq": 0}
    with pytest.raises(NotFound):
        await store.mark_seen("cv_missing", 1, read=True)


async def test_emailed_mark_only_rises_and_keeps_the_others(store: Store) -> None:
    """mark_emailed records how far emailed replies go, never lowers it, leaves the read marks
    as they were, and does nothing for a conversation that is gone."""
    customer = await _customer(store, "ada")
    conversation, _ = await store.open_conversation(customer)
    for n in range(3):
        await store.append_message(conversation.id, sender="agent", sender_id="1",
                                   author="Bo", body=f"r{n}", client_msg_id=f"r{n}")
    await store.mark_emailed(conversation.id, 2)  # before any read mark: the row is made
    await store.mark_seen(conversation.id, 1, read=True)
    await store.mark_emailed(conversation.id, 1)
    assert await store.read_state(conversation.id) == {"read_seq": 1, "seen_seq": 1,
                                                       "mailed_seq": 0, "emailed_seq": 2}
    await store.mark_emailed(conversation.id, 3)
    assert (await store.read_state(conversation.id))["emailed_seq"] == 3
    await store.mark_emailed("cv_missing", 1)
    assert (await store.read_state("cv_missing"))["emailed_seq"] == 0


async def test_unseen_replies_are_batched_per_conversation(store: Store, store_url: str,
                                                           clock: Clock) -> None:
    """Replies not seen by the cut-off make one mail per conversation covering all of them;
    seen replies, visitor messages and replies already mailed make none."""
    customer = await _customer(store, "ada")
    conversation, _ = await store.open_conversation(customer)

    async def post(sender: str, tag: str) -> None:
        await store.append_message(conversation.id, sender=sender, sender_id="1", author="Bo",
                                   body=tag, client_msg_id=tag)

    await post("visitor", "v1")
    await post("agent", "a1")  # seq 2
    await store.mark_seen(conversation.id, 2, read=False)
    clock.advance(seconds=10)
    await post("agent", "a2")  # seq 3, unseen
    clock.advance(seconds=100)
    await post("agent", "a3")  # seq 4, unseen but younger than the cut-off
    window = {"horizon": clock.iso(days=-3)}
    assert await store.queue_reply_mails(cutoff=clock.iso(seconds=-120), **window) == 0
    clock.advance(seconds=20)
    assert await store.queue_reply_mails(cutoff=clock.iso(seconds=-120), **window) == 1
    assert await store.queue_reply_mails(cutoff=clock.iso(seconds=-120), **window) == 0
    rows = _rows(store_url, "SELECT kind, customer_id, conversation_id, params FROM mail_outbox")
    assert rows == [("reply", customer, conversation.id, '{"from_seq": 3, "to_seq": 4}')]
    assert (await store.read_state(conversation.id))["mailed_seq"] == 4


async def test_several_senders_claim_and_queue_each_mail_once(store: Store, store_url: str,
                                                             clock: Clock) -> None:
    """Three stores on one database (three server processes) claiming at once take each due
    mail exactly once, and queueing reply mails at once queues one per conversation."""
    others = [await open_store(store_url, clock) for _ in range(2)]
    try:
        senders = [store, *others]
        customer = await _customer(store, "ada")
        queued = {await store.queue_mail("transcript", customer_id=customer)
                  for _ in range(30)}

        async def drain(sender: Store) -> list[int]:
            taken = []
            while (mail := await sender.claim_mail(clock.iso(seconds=60))) is not None:
                taken.append(mail.id)
            return taken

        claimed = [i for batch in await asyncio.gather(*[drain(s) for s in senders])
                   for i in batch]
        assert sorted(claimed) == sorted(queued)

        conversation, _ = await store.open_conversation(customer)
        await store.append_message(conversation.id, sender="agent", sender_id="1",
                                   author="Bo", body="hello", client_msg_id="a1")
        clock.advance(minutes=10)
        window = {"cutoff": clock.iso(minutes=-5), "horizon": clock.iso(days=-3)}
        made = await asyncio.gather(*[s.queue_reply_mails(**window) for s in senders])
        assert sum(made) == 1
        assert _rows(store_url, "SELECT COUNT(*) FROM mail_outbox WHERE kind = 'reply'") == [(1,)]
    finally:
        for other in others:
            await other.close()


async def test_export_holds_read_marks_outbox_rows_and_links(store: Store, clock: Clock) -> None:
    """The customer's export names what the mail part holds about them: each conversation's
    read marks, their outbox rows (kind, status, times; no address, no content) and the links
    sent to them (purpose, times); nothing of another customer."""
    ada = await _customer(store, "ada")
    bob = await _customer(store, "bob")
    conversation, _ = await store.open_conversation(ada)
    for n in range(2):
        await store.append_message(conversation.id, sender="agent", sender_id="1",
                                   author="Bo", body=f"r{n}", client_msg_id=f"r{n}")
    await store.mark_seen(conversation.id, 1, read=True)
    await store.queue_account_mail("signin", "ada@example.com")
    await store.queue_account_mail("signin", "bob@example.com")
    await store.queue_mail("transcript", customer_id=ada, conversation_id=conversation.id)
    await store.create_mail_token("h" * 64, ada, "signin", clock.iso(minutes=15))
    document = await store.export_customer(ada)
    [exported] = document["conversations"]
    assert exported["read"] == {"read_seq": 1, "seen_seq": 1, "mailed_seq": 0, "emailed_seq": 0}
    assert [(m["kind"], m["status"], m["conversation_id"]) for m in document["mail"]] == [
        ("signin", "pending", None), ("transcript", "pending", conversation.id)]
    assert set(document["mail"][0]) == {"kind", "status", "conversation_id", "attempts",
                                        "created_at", "next_attempt_at", "sent_at"}
    assert document["mail_links"] == [{"purpose": "signin", "created_at": clock.iso(),
                                       "expires_at": clock.iso(minutes=15), "used_at": None}]
    assert bob not in repr(document) and "bob@" not in repr(document)
    untouched = await store.export_customer(bob)
    assert [m["kind"] for m in untouched["mail"]] == ["signin"]
    assert untouched["mail_links"] == [] and untouched["conversations"] == []
