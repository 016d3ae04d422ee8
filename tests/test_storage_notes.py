"""Notes and ratings on both stores: stored once, and gone with an erasure or a retention
purge of their conversation (no table holds their words after)."""

from __future__ import annotations

import pytest

from chatserver.errors import Conflict
from chatserver.storage.base import Store, iso, utc_now

from . import databases

NOTE = "quarrelsome-zebra-note"
COMMENT = "marmalade-comment-words"


async def _closed(store: Store, tag: str) -> tuple[str, str, int]:
    """A customer whose conversation has a note, is closed and rated 4."""
    session = "session-" + tag
    await store.create_visitor_session(session)
    await store.add_consent(session, policy_version="1.01", policy_sha256="0" * 64, ip=None,
                            user_agent=None, method="widget", on_behalf=False)
    customer = await store.save_customer(session, name="N " + tag, email=f"{tag}@example.com",
                                         company="")
    conversation, _ = await store.open_conversation(customer.id)
    staff = await store.add_staff("staff-" + tag, "agent", "h")
    await store.claim_conversation(conversation.id, staff.id)
    await store.append_message(conversation.id, sender="visitor", sender_id=customer.id,
                               author="N", body="hello", client_msg_id="1")
    note, new = await store.add_note(conversation.id, staff_id=staff.id, body=NOTE,
                                     client_msg_id="n1")
    assert new and note.after_seq == 1 and note.author == "Support agent"
    again, new = await store.add_note(conversation.id, staff_id=staff.id, body="other",
                                      client_msg_id="n1")
    assert not new and again.id == note.id and again.body == NOTE
    with pytest.raises(Conflict) as early:
        await store.rate_conversation(conversation.id, score=4, comment=COMMENT)
    assert early.value.code == "not_closed"
    await store.close_conversation(conversation.id)
    rating = await store.rate_conversation(conversation.id, score=4, comment=COMMENT)
    assert rating.score == 4
    with pytest.raises(Conflict) as twice:
        await store.rate_conversation(conversation.id, score=5, comment="")
    assert twice.value.code == "already_rated"
    got = await store.get_rating(conversation.id)
    assert got is not None and got.comment == COMMENT
    assert [n.body for n in await store.notes_after(conversation.id, 0)] == [NOTE]
    assert await store.notes_after(conversation.id, 2) == []
    return customer.id, conversation.id, staff.id


async def test_notes_and_rating_are_exported_then_erased(store: Store, store_url: str) -> None:
    """The export holds the conversation's notes and rating; an erasure leaves neither."""
    customer_id, conversation_id, _ = await _closed(store, "erase")
    export = await store.export_customer(customer_id)
    conv = export["conversations"][0]
    assert [n["body"] for n in conv["notes"]] == [NOTE]
    assert conv["rating"]["score"] == 4 and conv["rating"]["comment"] == COMMENT
    await store.erase_customer(customer_id, reason="request")
    assert databases.tables_holding(store_url, [NOTE, COMMENT]) == []
    assert await store.get_rating(conversation_id) is None


async def test_retention_purges_notes_and_rating_with_the_conversation(
    store: Store, store_url: str
) -> None:
    """A closed conversation purged by retention takes its notes and rating with it."""
    await _closed(store, "purge")
    now = iso(utc_now())
    far_past = "2000-01-01T00:00:00.000000Z"
    result = await store.purge(account_cutoff=far_past, access_cutoff=far_past,
                               conversation_cutoff=now, session_cutoff=far_past, dry_run=False)
    assert result["counts"]["closed_conversations"] == 1
    assert databases.tables_holding(store_url, [NOTE, COMMENT]) == []
