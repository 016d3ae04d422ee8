"""The audit log's hash chain: intact logs verify, any edit is found at the entry edited."""

from __future__ import annotations

from chatserver import audit
from chatserver.storage import open_store

from .databases import query


async def test_chain_verifies_and_names_the_first_altered_entry(store_url: str) -> None:
    """Each entry chains to the previous; altering entry 3 breaks verification at 3."""
    store = await open_store(store_url)
    for n in range(5):
        await audit.record(store, actor="staff:1", action="transcript.download",
                           target=f"conversation:{n}", ip="127.0.0.1", detail={"format": "txt"})
    entries = await store.all_audit()
    assert [e["id"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[1]["prev_hash"] == entries[0]["hash"]
    assert audit.verify(entries) is None
    await store.close()

    query(store_url, "UPDATE audit_log SET target = 'conversation:x' WHERE id = 3")
    store = await open_store(store_url)
    broken = audit.verify(await store.all_audit())
    assert broken is not None and broken["id"] == 3
    await store.close()


def test_deleting_an_entry_breaks_the_chain() -> None:
    """Removing an entry from the middle is detected."""
    entries = []
    prev = ""
    for n in range(1, 4):
        entry = {"id": n, "at": "t", "actor": "a", "action": "x", "ip": None, "target": None,
                 "detail": {}}
        entry["hash"] = audit.entry_hash(prev, entry)
        entry["prev_hash"] = prev
        prev = entry["hash"]
        entries.append(entry)
    assert audit.verify(entries) is None
    assert audit.verify([entries[0], entries[2]]) == entries[2]
