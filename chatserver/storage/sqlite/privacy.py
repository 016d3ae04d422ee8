"""The customer's rights on SQLite: export, erasure, and the retention purge.

An erasure is one job (one savepoint in the writer's transaction), a purge a series of short
jobs (a batch of rows or accounts each, so it never holds chat writes up). Deleting conversations
notes that the search index must be scrubbed (upkeep.py), which the store then does.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from typing import Any

from ...errors import LegalHold, NotFound
from ..base import EXPORTED_LINKS, EXPORTED_MAIL
from ..rows import (
    BLOCK,
    BLOCK_KEYS,
    COLUMNS,
    CONSENT,
    FROM,
    to_consent,
    to_conversation,
    to_message,
)
from . import notes
from .conversations import MESSAGE_SELECT
from .mail import read_state
from .upkeep import note_scrub_needed
from .visitors import customer


def export_customer(c: sqlite3.Connection, customer_id: str) -> dict[str, Any]:
    found = customer(c, customer_id)
    conversations = []
    for row in c.execute(
        f"SELECT {COLUMNS} FROM {FROM} "
        "WHERE c.customer_id = ? ORDER BY c.created_at", (customer_id,)
    ).fetchall():
        conv = to_conversation(row)
        messages = [
            to_message(m).frame() for m in c.execute(
                MESSAGE_SELECT + " WHERE m.conversation_id = ? ORDER BY m.seq",
                (conv.id,)).fetchall()
        ]
        conversations.append({
            "id": conv.id, "status": conv.status, "created_at": conv.created_at,
            "claimed_at": conv.claimed_at, "closed_at": conv.closed_at,
            "agent": conv.agent_display_name, "messages": messages,
            "read": read_state(c, conv.id),
            **conversation_extras(c, conv.id),
        })
    mail = [dict(zip(EXPORTED_MAIL, r, strict=True)) for r in c.execute(
        f"SELECT {', '.join(EXPORTED_MAIL)} FROM mail_outbox WHERE customer_id = ? ORDER BY id",
        (customer_id,)).fetchall()]
    mail_links = [dict(zip(EXPORTED_LINKS, r, strict=True)) for r in c.execute(
        f"SELECT {', '.join(EXPORTED_LINKS)} FROM mail_tokens WHERE customer_id = ? "
        "ORDER BY created_at", (customer_id,)).fetchall()]
    sessions = [
        {"ref": sid[:12], "created_at": created, "last_seen_at": seen,
         "revoked_at": revoked}
        for sid, created, seen, revoked in c.execute(
            "SELECT id, created_at, last_seen_at, revoked_at FROM visitor_sessions "
            "WHERE customer_id = ? ORDER BY created_at", (customer_id,)).fetchall()
    ]
    access = [
        {"session_ref": sid[:12], "at": at, "kind": kind, "ip": ip,
         "user_agent": agent}
        for sid, at, kind, ip, agent in c.execute(
            """SELECT a.session_id, a.at, a.kind, a.ip, a.user_agent
               FROM access_events a JOIN visitor_sessions s ON s.id = a.session_id
               WHERE s.customer_id = ? ORDER BY a.id""", (customer_id,)).fetchall()
    ]
    consents = [to_consent(r) for r in c.execute(
        CONSENT + " WHERE customer_id = ? ORDER BY id", (customer_id,)).fetchall()]
    return {
        "account": {**found.public(), "id": found.id,
                    "created_at": found.created_at,
                    "updated_at": found.updated_at,
                    "last_active_at": found.last_active_at,
                    "legal_hold": found.legal_hold},
        "consents": consents,
        "conversations": conversations,
        "sessions": sessions,
        "access_records": access,
        "mail": mail,
        "mail_links": mail_links,
    }


def conversation_extras(c: sqlite3.Connection, conversation_id: str) -> dict[str, Any]:
    """What a customer's export adds to each conversation: its notes and its rating."""
    rating = notes.get_rating(c, conversation_id)
    return {"notes": [n.public() for n in notes.after(c, conversation_id, 0)],
            "rating": rating.public() if rating else None}


def customer_blocks(c: sqlite3.Connection, customer_id: str) -> list[dict[str, Any]]:
    """Every block of the customer, for their export (an erasure takes them: ON DELETE
    CASCADE)."""
    return [dict(zip(BLOCK_KEYS, row, strict=True)) for row in c.execute(
        BLOCK + " WHERE customer_id = ? ORDER BY id", (customer_id,))]


def export_session(c: sqlite3.Connection, session_id: str) -> dict[str, Any]:
    row = c.execute("SELECT created_at, last_seen_at, revoked_at FROM visitor_sessions "
                    "WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise NotFound("That session has ended.")
    return {
        "account": None,
        "consents": [to_consent(r) for r in c.execute(
            CONSENT + " WHERE session_id = ? ORDER BY id", (session_id,))],
        "conversations": [],
        "sessions": [{"ref": session_id[:12], "created_at": row[0],
                      "last_seen_at": row[1], "revoked_at": row[2]}],
        "access_records": [
            {"session_ref": session_id[:12], "at": at, "kind": kind, "ip": ip,
             "user_agent": agent}
            for at, kind, ip, agent in c.execute(
                "SELECT at, kind, ip, user_agent FROM access_events WHERE session_id = ? "
                "ORDER BY id", (session_id,))],
    }


def erase(c: sqlite3.Connection, customer_id: str, reason: str, now: str) -> dict[str, Any]:
    """Delete the customer and everything of theirs; keep a tombstone without PII."""
    found = customer(c, customer_id)
    if found.legal_hold:
        raise LegalHold()
    sessions = [r[0] for r in c.execute(
        "SELECT id FROM visitor_sessions WHERE customer_id = ?", (customer_id,))]
    conversations = [r[0] for r in c.execute(
        "SELECT id FROM conversations WHERE customer_id = ?", (customer_id,))]
    marks = ",".join("?" * len(conversations))
    (messages,) = c.execute(
        f"SELECT COUNT(*) FROM messages WHERE conversation_id IN ({marks})", conversations
    ).fetchone() if conversations else (0,)
    versions = sorted({r[0] for r in c.execute(
        "SELECT policy_version FROM consents WHERE customer_id = ?", (customer_id,))})
    smarks = ",".join("?" * len(sessions))
    consents = c.execute(
        f"DELETE FROM consents WHERE customer_id = ? OR session_id IN ({smarks})",
        (customer_id, *sessions)).rowcount
    access = c.execute(
        f"DELETE FROM access_events WHERE session_id IN ({smarks})", sessions
    ).rowcount if sessions else 0
    if conversations:
        c.execute(f"DELETE FROM messages WHERE conversation_id IN ({marks})", conversations)
        c.execute(f"DELETE FROM conversations WHERE id IN ({marks})", conversations)
        note_scrub_needed(c, now)
    c.execute("DELETE FROM visitor_sessions WHERE customer_id = ?", (customer_id,))
    c.execute("DELETE FROM customers WHERE id = ?", (customer_id,))
    tombstone = {
        "id": "er_" + secrets.token_hex(10), "at": now, "reason": reason,
        "conversations": len(conversations), "messages": messages,
        "sessions": len(sessions), "consents": consents, "access_events": access,
        "policy_versions": versions,
    }
    c.execute(
        "INSERT INTO erasures VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (tombstone["id"], now, reason, len(conversations), messages, len(sessions),
         consents, access, json.dumps(versions)),
    )
    return {**tombstone, "session_ids": sessions, "conversation_ids": conversations}


def erase_bare_session(c: sqlite3.Connection, session_id: str, reason: str, now: str
                       ) -> dict[str, Any]:
    """Erase a session that never became a customer: its consents and access records."""
    versions = sorted({r[0] for r in c.execute(
        "SELECT policy_version FROM consents WHERE session_id = ?", (session_id,))})
    consents = c.execute("DELETE FROM consents WHERE session_id = ?", (session_id,)).rowcount
    access = c.execute("DELETE FROM access_events WHERE session_id = ?",
                       (session_id,)).rowcount
    c.execute("DELETE FROM visitor_sessions WHERE id = ?", (session_id,))
    tombstone = {"id": "er_" + secrets.token_hex(10), "at": now, "reason": reason,
                 "conversations": 0, "messages": 0, "sessions": 1, "consents": consents,
                 "access_events": access, "policy_versions": versions}
    c.execute("INSERT INTO erasures VALUES (?, ?, ?, 0, 0, 1, ?, ?, ?)",
              (tombstone["id"], now, reason, consents, access, json.dumps(versions)))
    return {**tombstone, "session_ids": [session_id], "conversation_ids": []}


def erase_session(c: sqlite3.Connection, session_id: str, reason: str, now: str
                  ) -> dict[str, Any]:
    row = c.execute("SELECT customer_id FROM visitor_sessions WHERE id = ?",
                    (session_id,)).fetchone()
    if row is None:
        raise NotFound("That session has ended.")
    if row[0] is not None:
        return erase(c, row[0], reason, now)
    return erase_bare_session(c, session_id, reason, now)


PURGE_BATCH = 100  # rows or accounts per purge transaction: each stays short
PURGE_COUNTS = ("accounts", "sessions_without_details", "closed_conversations", "access_events",
                "staff_sign_ins", "messages")
_HELD = "SELECT id FROM customers WHERE legal_hold = 1"
_HELD_SESSIONS = f"SELECT id FROM visitor_sessions WHERE customer_id IN ({_HELD})"
_STALE_ACCOUNTS = """SELECT id FROM customers cu WHERE legal_hold = 0 AND last_active_at <= ?
    AND NOT EXISTS (SELECT 1 FROM conversations WHERE customer_id = cu.id AND status != 'closed')"""


def purge_counts(c: sqlite3.Connection, *, account_cutoff: str, access_cutoff: str,
                 conversation_cutoff: str, session_cutoff: str) -> dict[str, int]:
    """What a purge would delete now, counted as the real run counts it, rule by rule."""
    def one(sql: str, *args: Any) -> int:
        return int(c.execute(sql, args).fetchone()[0])

    old = (f"SELECT id FROM conversations WHERE status = 'closed' AND closed_at <= ? "
           f"AND customer_id NOT IN ({_HELD})")
    return {
        "access_events": one(f"SELECT COUNT(*) FROM access_events WHERE at <= ? "
                             f"AND session_id NOT IN ({_HELD_SESSIONS})", access_cutoff),
        "closed_conversations": one(f"SELECT COUNT(*) FROM ({old})", conversation_cutoff),
        "accounts": one(f"SELECT COUNT(*) FROM ({_STALE_ACCOUNTS})", account_cutoff),
        "sessions_without_details": one(
            "SELECT COUNT(*) FROM visitor_sessions WHERE customer_id IS NULL AND created_at <= ?",
            session_cutoff),
        "staff_sign_ins": one("SELECT COUNT(*) FROM login_events WHERE at <= ?", access_cutoff),
        # The old closed conversations go first; the stale accounts' erasure takes the rest.
        "messages": one(f"SELECT COUNT(*) FROM messages WHERE conversation_id IN ({old})",
                        conversation_cutoff)
        + one(f"""SELECT COUNT(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id
                  WHERE c.customer_id IN ({_STALE_ACCOUNTS})
                  AND c.id NOT IN ({old})""", account_cutoff, conversation_cutoff),
    }


# One purge step: (rows or accounts done, counts, session ids, conversation ids). A step that
# did a whole batch is run again; one that did less has finished its rule.
Step = tuple[int, dict[str, int], list[str], list[str]]


def purge_access(c: sqlite3.Connection, cutoff: str) -> Step:
    n = c.execute(
        f"""DELETE FROM access_events WHERE id IN (SELECT id FROM access_events
            WHERE at <= ? AND session_id NOT IN ({_HELD_SESSIONS}) LIMIT ?)""",
        (cutoff, PURGE_BATCH)).rowcount
    return n, {"access_events": n}, [], []


def purge_conversations(c: sqlite3.Connection, cutoff: str, now: str) -> Step:
    old = [r[0] for r in c.execute(
        f"""SELECT id FROM conversations WHERE status = 'closed' AND closed_at <= ?
            AND customer_id NOT IN ({_HELD}) LIMIT ?""",
        (cutoff, PURGE_BATCH))]
    messages = 0
    for conversation_id in old:
        messages += c.execute(
            "DELETE FROM messages WHERE conversation_id = ?", (conversation_id,)).rowcount
        c.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
    if old:
        note_scrub_needed(c, now)
    return len(old), {"closed_conversations": len(old), "messages": messages}, [], old


def purge_accounts(c: sqlite3.Connection, cutoff: str, now: str) -> Step:
    stale = [r[0] for r in c.execute(f"{_STALE_ACCOUNTS} LIMIT ?", (cutoff, PURGE_BATCH))]
    erased = [erase(c, customer_id, "retention", now) for customer_id in stale]
    return (len(stale),
            {"accounts": len(stale), "messages": sum(e["messages"] for e in erased)},
            [s for e in erased for s in e["session_ids"]],
            [x for e in erased for x in e["conversation_ids"]])


def purge_unfinished(c: sqlite3.Connection, cutoff: str) -> Step:
    # Sessions that consented but never gave details expire within hours: anyone can make
    # them, so they must not pile up. No tombstone each (they hold no account); the purge's
    # audit entry counts them. They never had a chat socket to close.
    ids = [r[0] for r in c.execute(
        "SELECT id FROM visitor_sessions WHERE customer_id IS NULL AND created_at <= ? "
        "LIMIT ?", (cutoff, PURGE_BATCH))]
    marks = ",".join("?" * len(ids))
    if ids:
        c.execute(f"DELETE FROM consents WHERE session_id IN ({marks})", ids)
        c.execute(f"DELETE FROM access_events WHERE session_id IN ({marks})", ids)
        c.execute(f"DELETE FROM visitor_sessions WHERE id IN ({marks})", ids)
    return len(ids), {"sessions_without_details": len(ids)}, [], []


def purge_logins(c: sqlite3.Connection, cutoff: str) -> Step:
    # Staff sign-in records hold addresses too: kept as long as access records.
    n = c.execute(
        "DELETE FROM login_events WHERE id IN (SELECT id FROM login_events WHERE at <= ? "
        "LIMIT ?)", (cutoff, PURGE_BATCH)).rowcount
    return n, {"staff_sign_ins": n}, [], []


def purge_blocks(c: sqlite3.Connection, now: str, dry_run: bool) -> int:
    """Delete (or count) the blocks that have expired: kept no longer than they act."""
    if dry_run:
        return int(c.execute("SELECT COUNT(*) FROM blocks WHERE expires_at <= ?",
                             (now,)).fetchone()[0])
    return c.execute("DELETE FROM blocks WHERE expires_at <= ?", (now,)).rowcount
