"""The audit log: append-only and hash-chained.

Appends are serialized by a transaction-level advisory lock: the next appender, in this process
or any other, waits until the previous entry is committed and then chains to it, so the log stays
one line (ids 1, 2, 3, ... each naming its predecessor's hash). The primary key on id would refuse
a fork even without the lock.
"""

from __future__ import annotations

import json
from typing import Any

from ..base import AuditHasher, chain_entry
from ..rows import AUDIT, like, to_entry
from .engine import Connection
from .visitors import rowcount

AUDIT_LOCK = 0x63686174_617564  # "chat" "aud": names the audit chain among advisory locks


async def append(c: Connection, entry: dict[str, Any], hasher: AuditHasher, now: str,
                 prev: tuple[int, str] | None = None) -> dict[str, Any]:
    """Append after `prev` (id, hash), by default the newest entry; `prev` only under the
    lock (cut below takes it)."""
    if prev is None:
        await c.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)
        last = await c.fetchrow("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
        prev = (last[0], last[1]) if last else (0, "")
    full = chain_entry(prev, entry, hasher, now)
    prev_hash, digest = full["prev_hash"], full["hash"]
    await c.execute(
        "INSERT INTO audit_log (id, at, actor, action, ip, target, detail, prev_hash, hash) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        full["id"], now, full["actor"], full["action"], full["ip"], full["target"],
        json.dumps(full["detail"], sort_keys=True), prev_hash, digest,
    )
    return full


# Always a prefix of the chain: up to the newest entry older than `before`.
_UPTO = "SELECT MAX(id) FROM audit_log WHERE at < $1"


async def count_cut(c: Connection, before: str) -> dict[str, Any]:
    """What a cut at `before` would delete: {"cut": n}."""
    n = await c.fetchval(f"SELECT COUNT(*) FROM audit_log WHERE id <= ({_UPTO})", before)
    return {"cut": int(n)}


async def cut(c: Connection, before: str, entry: dict[str, Any], hasher: AuditHasher, now: str
              ) -> dict[str, Any] | None:
    """Delete the oldest entries up to the newest one before `before`, and append `entry`
    after the newest, its detail saying where the chain now starts (base.Store.cut_audit)."""
    await c.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)
    last = await c.fetchrow("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
    if last is None:
        return None
    removed = rowcount(await c.execute(f"DELETE FROM audit_log WHERE id <= ({_UPTO})", before))
    if not removed:
        return None
    first = await c.fetchrow("SELECT id, prev_hash FROM audit_log ORDER BY id LIMIT 1")
    first_kept, first_prev = (first[0], first[1]) if first else (last[0] + 1, last[1])
    detail = {**(entry.get("detail") or {}), "cut": removed, "first_kept": first_kept,
              "first_kept_prev_hash": first_prev}
    return await append(c, {**entry, "detail": detail}, hasher, now, (last[0], last[1]))


async def list_entries(
    c: Connection, limit: int, offset: int, *, actor: str | None, action: str | None,
    target: str | None, since: str | None, before: str | None,
) -> list[dict[str, Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, value, op in (("actor", actor, "="), ("target", target, "="),
                              ("at", since, ">="), ("at", before, "<")):
        if value:
            args.append(value)
            where.append(f"{column} {op} ${len(args)}")
    if action:  # "transcript" matches transcript.view and transcript.download
        args += [action, like(action + ".")[1:]]
        where.append(f"(action = ${len(args) - 1} OR action ILIKE ${len(args)})")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    rows = await c.fetch(
        AUDIT + clause + f" ORDER BY id DESC LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
        *args, limit, offset,
    )
    return [to_entry(r) for r in rows]


async def all_entries(c: Connection) -> list[dict[str, Any]]:
    return [to_entry(r) for r in await c.fetch(AUDIT + " ORDER BY id")]
