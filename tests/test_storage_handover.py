"""Handing over on both stores: a move is one conditional UPDATE (one winner among rivals), away
marks, and which open conversations are paused by a withdrawn consent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatserver.errors import ConsentWithdrawn, NotFound
from chatserver.storage.base import Store


async def _conversation(store: Store, tag: str) -> tuple[str, str]:
    session = "session-" + tag
    await store.create_visitor_session(session)
    await store.add_consent(session, policy_version="1.01", policy_sha256="0" * 64, ip=None,
                            user_agent=None, method="widget", on_behalf=False)
    customer = await store.save_customer(session, name="Ann " + tag, email=f"{tag}@example.com",
                                         company="")
    conversation, _ = await store.open_conversation(customer.id)
    return session, conversation.id


async def test_move_hands_over_requeues_and_refuses_a_stale_expectation(store: Store) -> None:
    """A move names who holds the conversation now; it changes the row only when that is still
    so, and reports the conversation as it then is."""
    a = await store.add_staff("mover-a", "agent", "h", "Ann")
    b = await store.add_staff("mover-b", "agent", "h", "Bea")
    _, cid = await _conversation(store, "move")
    await store.claim_conversation(cid, a.id)

    moved, won = await store.move_conversation(cid, expect_agent_id=a.id, to_agent_id=b.id)
    assert won and moved.status == "active" and moved.agent_id == b.id
    assert moved.agent_display_name == "Bea" and moved.agent_name == "mover-b"

    stale, won = await store.move_conversation(cid, expect_agent_id=a.id, to_agent_id=a.id)
    assert not won and stale.agent_id == b.id

    queued, won = await store.move_conversation(cid, expect_agent_id=b.id, to_agent_id=None)
    assert won and queued.status == "queued" and queued.agent_id is None
    assert queued.claimed_at is None

    back, won = await store.move_conversation(cid, expect_agent_id=None, to_agent_id=a.id)
    assert won and back.status == "active" and back.agent_id == a.id

    await store.close_conversation(cid)
    closed, won = await store.move_conversation(cid, expect_agent_id=a.id, to_agent_id=b.id)
    assert not won and closed.status == "closed" and closed.agent_id == a.id
    with pytest.raises(NotFound):
        await store.move_conversation("cv_missing", expect_agent_id=None, to_agent_id=a.id)


async def test_simultaneous_moves_have_one_winner(store: Store) -> None:
    """Several agents taking over the same conversation at once: exactly one changes it."""
    holder = await store.add_staff("race-holder", "agent", "h")
    rivals = [await store.add_staff(f"race-{n}", "agent", "h") for n in range(5)]
    _, cid = await _conversation(store, "race")
    await store.claim_conversation(cid, holder.id)
    results = await asyncio.gather(*(
        store.move_conversation(cid, expect_agent_id=holder.id, to_agent_id=r.id)
        for r in rivals))
    winners = [conv.agent_id for conv, won in results if won]
    assert len(winners) == 1
    final = await store.get_conversation(cid)
    assert final is not None and final.agent_id == winners[0]


async def test_away_marks(store: Store) -> None:
    """Away is stored per staff member and read back as a set; unknown ids are NotFound."""
    a = await store.add_staff("away-a", "agent", "h")
    b = await store.add_staff("away-b", "agent", "h")
    assert await store.away_staff() == set()
    await store.set_staff_away(a.id, True)
    await store.set_staff_away(b.id, True)
    await store.set_staff_away(b.id, False)
    assert await store.away_staff() == {a.id}
    with pytest.raises(NotFound):
        await store.set_staff_away(10**9, True)


async def test_withdrawn_consent_pauses_the_open_conversation(store: Store) -> None:
    """With every consent withdrawn the customer's open conversation is paused; consenting
    again resumes it; closed conversations are never listed."""
    session, cid = await _conversation(store, "paused")
    _, other = await _conversation(store, "unpaused")
    assert await store.paused_conversations() == set()
    assert not await store.conversation_paused(cid)
    await store.withdraw_consents(session)
    assert await store.paused_conversations() == {cid}
    assert await store.conversation_paused(cid) and not await store.conversation_paused(other)
    await store.add_consent(session, policy_version="1.01", policy_sha256="0" * 64, ip=None,
                            user_agent=None, method="widget", on_behalf=False)
    assert await store.paused_conversations() == set()
    await store.withdraw_consents(session)
    await store.close_conversation(cid)
    assert await store.paused_conversations() == set()


async def test_an_agents_message_to_a_paused_conversation_is_refused_in_its_batch(store: Store
                                                                               ) -> None:
    """An agent's message (`unless_paused`) to a customer who withdrew consent is refused with
    ConsentWithdrawn, before its repeat check, while appends beside it in the same batch (one
    to another conversation, a visitor's and a system message to the paused one) are stored."""
    session, paused = await _conversation(store, "gone")
    _, other = await _conversation(store, "here")
    first, _, _ = await store.append_message(paused, sender="agent", sender_id="7", author="Ann",
                                             body="before", client_msg_id="a1",
                                             unless_paused=True)
    await store.withdraw_consents(session)

    def agent(conversation: str, msg_id: str) -> Any:
        return store.append_message(conversation, sender="agent", sender_id="7", author="Ann",
                                    body="hello", client_msg_id=msg_id, unless_paused=True)

    refused, repeat, fine, system = await asyncio.gather(
        agent(paused, "a2"), agent(paused, "a1"), agent(other, "b1"),
        store.append_message(paused, sender="system", sender_id="system", author="system",
                             body="note", client_msg_id=None),
        return_exceptions=True)
    assert isinstance(refused, ConsentWithdrawn) and isinstance(repeat, ConsentWithdrawn)
    assert fine[0].seq == 1 and fine[1]
    assert system[0].seq == first.seq + 1
    assert [m.body for m in await store.messages_after(paused, 0)] == ["before", "note"]
