"""The audit log: append-only and hash-chained. Appends run on the one writer, one after the
other, so the chain stays one line (ids 1, 2, 3, ... each naming its predecessor's hash)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..base import AuditHasher, chain_entry
from ..rows import AUDIT, like, to_entry

# Always a prefix of the chain: up to the newest entry older than `before`.
_UPTO = "SELECT MAX(id) FROM audit_log WHERE at < ?"


def append(c: sqlite3.Connection, entry: dict[str, Any], hasher: AuditHasher, now: str,
           prev: tuple[int, str] | None = None) -> dict[str, Any]:
    """Append after `prev` (id, hash), by default the newest entry."""
    if prev is None:
        last = c.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        prev = (last[0], last[1]) if last else (0, "")
    full = chain_entry(prev, entry, hasher, now)
    prev_hash, digest = full["prev_hash"], full["hash"]
    c.execute(
        "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (full["id"], now, full["actor"], full["action"], full["ip"], full["target"],
         json.dumps(full["detail"], sort_keys=True), prev_hash, digest),
    )
    return full


def count_cut(c: sqlite3.Connection, before: str) -> dict[str, Any]:
    """What a cut at `before` would delete: {"cut": n}."""
    (n,) = c.execute(f"SELECT COUNT(*) FROM audit_log WHERE id <= ({_UPTO})",
                     (before,)).fetchone()
    return {"cut": n}


def cut(c: sqlite3.Connection, before: str, entry: dict[str, Any], hasher: AuditHasher,
        now: str) -> dict[str, Any] | None:
    """Delete the oldest entries up to the newest one before `before`, and append `entry`
    after the newest, its detail saying where the chain now starts (base.Store.cut_audit)."""
    last = c.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    if last is None:
        return None
    removed = c.execute(f"DELETE FROM audit_log WHERE id <= ({_UPTO})", (before,)).rowcount
    if not removed:
        return None
    first = c.execute("SELECT id, prev_hash FROM audit_log ORDER BY id LIMIT 1").fetchone()
    first_kept, first_prev = first if first else (last[0] + 1, last[1])
    detail = {**(entry.get("detail") or {}), "cut": removed, "first_kept": first_kept,
              "first_kept_prev_hash": first_prev}
    return append(c, {**entry, "detail": detail}, hasher, now, (last[0], last[1]))


def list_entries(
    c: sqlite3.Connection, limit: int, offset: int, *, actor: str | None, action: str | None,
    target: str | None, since: str | None, before: str | None,
) -> list[dict[str, Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, value, op in (("actor", actor, "="), ("target", target, "="),
                              ("at", since, ">="), ("at", before, "<")):
        if value:
            where.append(f"{column} {op} ?")
            args.append(value)
    if action:  # "transcript" matches transcript.view and transcript.download
        where.append("(action = ? OR action LIKE ? ESCAPE '\\')")
        args += [action, like(action + ".")[1:]]
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    rows = c.execute(
        AUDIT + clause + " ORDER BY id DESC LIMIT ? OFFSET ?",
        (*args, limit, offset),
    ).fetchall()
    return [to_entry(r) for r in rows]


def all_entries(c: sqlite3.Connection) -> list[dict[str, Any]]:
    return [to_entry(r) for r in c.execute("SELECT * FROM audit_log ORDER BY id").fetchall()]
