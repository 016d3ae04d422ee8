"""Conversation search, the same on SQLite (FTS5) and PostgreSQL (tsvector, GIN): words, prefixes,
"quoted phrases", case and diacritics, operators typed by users, filters and paging."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from chatserver.consent import bundled_policy
from chatserver.storage import open_store
from chatserver.storage.base import ConversationSearch, Store


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)  # every write a second later: a clear order
        return self.now


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await open_store(store_url, Clock())
    await s.publish_policy(bundled_policy())
    yield s
    await s.close()


async def _chat(store: Store, tag: str, *bodies: str, company: str = "") -> str:
    await store.create_visitor_session("s-" + tag)
    customer = await store.save_customer("s-" + tag, name=f"Name {tag}",
                                         email=f"{tag}@example.com", company=company)
    conversation, _ = await store.open_conversation(customer.id)
    for n, body in enumerate(bodies):
        await store.append_message(conversation.id, sender="visitor", sender_id=customer.id,
                                   author=tag, body=body, client_msg_id=str(n))
    return conversation.id


async def _ids(store: Store, query: str | None = None, **filters: object) -> list[str]:
    found, total = await store.search_conversations(ConversationSearch(query=query, **filters))
    assert total == len(found)
    return [s.conversation.id for s in found]


async def test_words_prefixes_and_phrases(store: Store) -> None:
    """Every word must appear, each as a word or a word's start; a quoted phrase must appear
    as written, its words adjacent and in order."""
    broken = await _chat(store, "a", "The printer is broken again")
    reversed_ = await _chat(store, "b", "Broken, then the printer: fixed")
    apart = await _chat(store, "c", "broken old printer")
    await _chat(store, "d", "Nothing to see here")
    assert sorted(await _ids(store, "printer broken")) == sorted([broken, reversed_, apart])
    assert sorted(await _ids(store, "print brok")) == sorted([broken, reversed_, apart])
    assert await _ids(store, "rinter") == []  # a prefix, not any substring
    assert await _ids(store, "printer cheese") == []
    assert await _ids(store, '"printer is broken"') == [broken]
    assert await _ids(store, '"broken printer"') == []
    assert await _ids(store, '"broken old printer"') == [apart]


async def test_case_and_diacritics_do_not_matter(store: Store) -> None:
    """"CAFE" finds "Café"; "crème" finds "creme". The words must meet in one message."""
    first = await _chat(store, "a", "Un café, s'il vous plaît", "merci")
    second = await _chat(store, "b", "creme brulee please")
    assert await _ids(store, "CAFE") == [first]
    assert await _ids(store, "merci") == [first]
    assert await _ids(store, "café merci") == []  # in two different messages
    assert await _ids(store, "crème brûlée") == [second]
    assert await _ids(store, '"creme BRULEE"') == [second]


@pytest.mark.parametrize("query", [
    "printer OR cheese", "printer AND NOT x", "NEAR(printer cheese)", "printer*", "-printer",
    "printer & !cheese", "printer | cheese", "printer:*", "'printer'", '"printer', 'printer"',
    "(printer", "printer <-> cheese", "body:printer", "*", '""', "\\", "printer\x00",
])
async def test_operators_typed_by_users_are_plain_text(store: Store, query: str) -> None:
    """Query syntax of either engine typed into the box is neither an error nor an operator:
    "printer OR cheese" needs the words printer, or(...) and cheese, so it finds nothing here."""
    await _chat(store, "a", "the printer works")
    found = await _ids(store, query)
    assert len(found) <= 1
    if "cheese" in query or query.startswith("NEAR") or query.startswith("body"):
        assert found == []


async def test_customer_fields_and_id_match_literally(store: Store) -> None:
    """Name, email and company match as substrings in any case; the id matches exactly; % and
    _ are characters, not wildcards."""
    acme = await _chat(store, "ann", "hi", company="ACME_Widgets 100%")
    other = await _chat(store, "bob", "hello", company="Other Co")
    assert await _ids(store, "acme_widg") == [acme]
    assert await _ids(store, "100%") == [acme]
    assert await _ids(store, "%") == [acme]
    assert await _ids(store, "_") == [acme]
    assert await _ids(store, "BOB@EXAMPLE") == [other]
    assert await _ids(store, other) == [other]
    assert await _ids(store, other[:-2]) == []


async def test_filters_combine_and_pages_are_newest_first(store: Store) -> None:
    """Status, exact email (any case), agent and a created range narrow the list; limit and
    offset page it, newest first, with the total of all matches."""
    agent = await store.add_staff("sam", "agent", "h")
    ids = [await _chat(store, f"c{n}", f"invoice number {n}") for n in range(5)]
    await store.claim_conversation(ids[1], agent.id)
    await store.claim_conversation(ids[2], agent.id)
    await store.close_conversation(ids[2])
    assert await _ids(store, "invoice") == ids[::-1]
    assert await _ids(store, "invoice", status="active") == [ids[1]]
    assert await _ids(store, None, status="closed") == [ids[2]]
    assert await _ids(store, None, email="C3@Example.com") == [ids[3]]
    assert await _ids(store, "invoice", agent_id=agent.id) == [ids[2], ids[1]]
    created = {s.conversation.id: s.conversation.created_at for s in
               (await store.search_conversations(ConversationSearch()))[0]}
    assert await _ids(store, None, created_from=created[ids[1]],
                      created_before=created[ids[3]]) == [ids[2], ids[1]]
    page, total = await store.search_conversations(ConversationSearch(query="invoice"),
                                                   limit=2, offset=2)
    assert total == 5 and [s.conversation.id for s in page] == [ids[2], ids[1]]
    summary = page[0]
    assert summary.message_count == 1
    assert summary.last_message is not None and summary.last_message["body"] == "invoice number 2"


async def test_erased_words_are_not_found(store: Store) -> None:
    """After an erasure, its words find nothing."""
    gone = await _chat(store, "gone", "zebra crossing")
    kept = await _chat(store, "kept", "zebra stripes")
    conversation = await store.get_conversation(gone)
    assert conversation is not None
    await store.erase_customer(conversation.customer_id, reason="test")
    assert await _ids(store, "zebra") == [kept]
    assert await _ids(store, "crossing") == []
