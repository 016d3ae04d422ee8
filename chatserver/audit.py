"""The append-only, hash-chained audit log and its verifier.

Each entry's hash is SHA-256 over the previous entry's hash and a canonical JSON encoding of the
entry, so changing, removing or reordering any row breaks every hash after it. Entries name actors
and targets by opaque ids only, never by a customer's name, email or message.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .storage.base import Store

_HASHED = ("id", "at", "actor", "action", "ip", "target", "detail")


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    canonical = json.dumps(
        {k: entry.get(k) for k in _HASHED}, sort_keys=True, separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + "\n" + canonical).encode()).hexdigest()


async def record(
    store: Store,
    *,
    actor: str,
    action: str,
    ip: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return await store.append_audit(
        {"actor": actor, "action": action, "ip": ip, "target": target, "detail": detail or {}},
        entry_hash,
    )


def verify(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first entry whose chain is broken, or None when the whole log is intact."""
    prev = ""
    expected_id = 1
    for entry in entries:
        if (
            entry["id"] != expected_id
            or entry["prev_hash"] != prev
            or entry["hash"] != entry_hash(prev, entry)
        ):
            return entry
        prev = entry["hash"]
        expected_id += 1
    return None
