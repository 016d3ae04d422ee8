"""Erasure on both stores: one transaction, the same scope, and nothing left that a SELECT on any
table can find. On PostgreSQL also: no dead row version and no search-index key left behind."""

from __future__ import annotations

import pytest

from chatserver.consent import bundled_policy
from chatserver.errors import LegalHold
from chatserver.storage import open_store
from chatserver.storage.base import Store

from . import databases

MARKERS = ["Zelda Quixotic", "zelda.q@example.org", "Quixotic Widgets", "xylophonist",
           "198.51.100.77", "MarkerBrowser/9.9"]


async def _customer(store: Store, tag: str, name: str, email: str, company: str, body: str,
                    ip: str, agent: str) -> tuple[str, str]:
    session = "session-" + tag
    await store.create_visitor_session(session)
    await store.add_consent(session, policy_version="1.01", policy_sha256="0" * 64, ip=ip,
                            user_agent=agent, method="widget", on_behalf=False)
    await store.record_access(session, "socket", ip, agent)
    customer = await store.save_customer(session, name=name, email=email, company=company)
    conversation, _ = await store.open_conversation(customer.id)
    staff = await store.add_staff("helper-" + tag, "agent", "h")
    await store.claim_conversation(conversation.id, staff.id)
    for n in range(3):
        await store.append_message(conversation.id, sender="visitor", sender_id=customer.id,
                                   author=name, body=f"{body} number {n}", client_msg_id=str(n))
    await store.append_message(conversation.id, sender="agent", sender_id=str(staff.id),
                               author="helper", body=f"re: {body}", client_msg_id="r")
    return customer.id, conversation.id


async def test_erasure_leaves_nothing_any_select_finds(store: Store, store_url: str) -> None:
    """After erase_customer, no column of any table holds the customer's name, email, company,
    words, IP or user agent; another customer's data is untouched; the tombstone counts."""
    gone, conversation = await _customer(store, "gone", *MARKERS)
    kept, _ = await _customer(store, "kept", "Kept Person", "kept@example.com", "Kept Co",
                              "keepsake", "192.0.2.1", "KeptBrowser/1")
    assert {m for _, _, m in databases.tables_holding(store_url, MARKERS)} == set(MARKERS)

    result = await store.erase_customer(gone, reason="request")
    assert (result["conversations"], result["messages"], result["sessions"],
            result["consents"], result["access_events"]) == (1, 4, 1, 1, 1)
    assert result["conversation_ids"] == [conversation]
    assert databases.tables_holding(store_url, MARKERS) == []
    assert await store.get_conversation(conversation) is None
    assert len((await store.export_customer(kept))["conversations"][0]["messages"]) == 4


async def test_a_held_customer_is_not_erased(store: Store) -> None:
    """Legal hold: erasure refused, nothing deleted."""
    held, conversation = await _customer(store, "held", *MARKERS)
    await store.set_legal_hold(held, True)
    with pytest.raises(LegalHold):
        await store.erase_customer(held, reason="request")
    assert len(await store.messages_after(conversation, 0)) == 4


async def test_postgres_erasure_leaves_no_row_version_or_index_key(postgres_url: str) -> None:
    """PostgreSQL keeps deleted rows as dead versions until VACUUM, and a GIN index keeps a word
    as a key after its rows are gone: the store's erasure vacuums and rebuilds the search index,
    so neither the tables' row versions (read with pageinspect, which sees dead ones too) nor
    the search index's pages hold the erased words. Without that step both do: checked first."""
    from chatserver.storage.postgres import privacy

    url = postgres_url
    databases.empty_database(url)
    databases.query(url, "CREATE EXTENSION IF NOT EXISTS pageinspect")
    store = await open_store(url)
    try:
        await store.publish_policy(bundled_policy())
        customer, _ = await _customer(store, "gone", *MARKERS)
        engine = store.engine  # type: ignore[attr-defined]

        async def erase_without_compacting() -> None:
            async def job(c: object) -> None:
                await privacy.erase(c, customer, "request", "2026-01-01T00:00:00.000000Z")
            await engine.write(job)

        def row_versions() -> set[str]:
            found = set()
            for table in privacy.TOUCHED:
                pages = databases.query(url, f"SELECT pg_relation_size('{table}') / 8192")[0][0]
                for page in range(pages):
                    for (data,) in databases.query(
                            url, f"SELECT t_data FROM heap_page_items(get_raw_page('{table}', "
                            f"{page})) WHERE t_data IS NOT NULL"):
                        found |= {m for m in MARKERS if m.encode() in bytes(data)}
            return found

        def index_pages() -> set[str]:
            pages = databases.query(url, "SELECT pg_relation_size('messages_search') / 8192")
            found = set()
            for page in range(pages[0][0]):
                data = databases.query(url, f"SELECT get_raw_page('messages_search', {page})")
                found |= {w for w in ("xylophonist",) if w.encode() in bytes(data[0][0])}
            return found

        await erase_without_compacting()
        assert databases.tables_holding(url, MARKERS) == []  # no SELECT finds them...
        assert row_versions() == set(MARKERS)  # ...but their dead row versions are there
        assert index_pages() == {"xylophonist"}
        await store.compact()
        assert row_versions() == set()
        assert index_pages() == set()
    finally:
        await store.close()
