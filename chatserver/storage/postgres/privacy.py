"""The customer's rights on PostgreSQL: export, erasure, and the retention purge.

Erasure and purge are each one transaction with the same scope as on SQLite. They lock what they
delete first (the customer's row, then their conversations' rows), so a message being stored at
that moment either lands before and is erased too, or finds its conversation gone. Deleted rows
stay in the table files as dead row versions until VACUUM, which the store runs right after (it
cannot run inside a transaction); docs/privacy.md says what can remain elsewhere.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from ...errors import LegalHold, NotFound
from .conversations import COLUMNS, FROM, MESSAGE_SELECT, to_conversation, to_message
from .engine import Connection
from .visitors import CONSENT, customer, rowcount, to_consent

# The tables an erasure or purge deletes from: vacuumed afterwards.
TOUCHED = ("messages", "conversations", "consents", "access_events", "visitor_sessions",
           "customers", "login_events")


class DryRun(Exception):
    """Raised to roll a purge back while handing out what it would have done."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("dry run")
        self.result = result


async def export_customer(c: Connection, customer_id: str) -> dict[str, Any]:
    found = await customer(c, customer_id)
    conversations = []
    for row in await c.fetch(
        f"SELECT {COLUMNS} FROM {FROM} WHERE c.customer_id = $1 ORDER BY c.created_at",
        customer_id,
    ):
        conv = to_conversation(row)
        messages = [
            to_message(m).frame() for m in await c.fetch(
                MESSAGE_SELECT + " WHERE m.conversation_id = $1 ORDER BY m.seq", conv.id)
        ]
        conversations.append({
            "id": conv.id, "status": conv.status, "created_at": conv.created_at,
            "claimed_at": conv.claimed_at, "closed_at": conv.closed_at,
            "agent": conv.agent_display_name, "messages": messages,
        })
    sessions = [
        {"ref": sid[:12], "created_at": created, "last_seen_at": seen, "revoked_at": revoked}
        for sid, created, seen, revoked in await c.fetch(
            "SELECT id, created_at, last_seen_at, revoked_at FROM visitor_sessions "
            "WHERE customer_id = $1 ORDER BY created_at", customer_id)
    ]
    access = [
        {"session_ref": sid[:12], "at": at, "kind": kind, "ip": ip, "user_agent": agent}
        for sid, at, kind, ip, agent in await c.fetch(
            """SELECT a.session_id, a.at, a.kind, a.ip, a.user_agent
               FROM access_events a JOIN visitor_sessions s ON s.id = a.session_id
               WHERE s.customer_id = $1 ORDER BY a.id""", customer_id)
    ]
    consents = [to_consent(r) for r in await c.fetch(
        CONSENT + " WHERE customer_id = $1 ORDER BY id", customer_id)]
    return {
        "account": {**found.public(), "id": found.id, "created_at": found.created_at,
                    "updated_at": found.updated_at, "last_active_at": found.last_active_at,
                    "legal_hold": found.legal_hold},
        "consents": consents,
        "conversations": conversations,
        "sessions": sessions,
        "access_records": access,
    }


async def export_session(c: Connection, session_id: str) -> dict[str, Any]:
    row = await c.fetchrow("SELECT created_at, last_seen_at, revoked_at FROM visitor_sessions "
                           "WHERE id = $1", session_id)
    if row is None:
        raise NotFound("That session has ended.")
    return {
        "account": None,
        "consents": [to_consent(r) for r in await c.fetch(
            CONSENT + " WHERE session_id = $1 ORDER BY id", session_id)],
        "conversations": [],
        "sessions": [{"ref": session_id[:12], "created_at": row[0], "last_seen_at": row[1],
                      "revoked_at": row[2]}],
        "access_records": [
            {"session_ref": session_id[:12], "at": at, "kind": kind, "ip": ip,
             "user_agent": agent}
            for at, kind, ip, agent in await c.fetch(
                "SELECT at, kind, ip, user_agent FROM access_events WHERE session_id = $1 "
                "ORDER BY id", session_id)],
    }


async def _tombstone(c: Connection, now: str, reason: str, conversations: int, messages: int,
                     sessions: int, consents: int, access: int, versions: list[str]
                     ) -> dict[str, Any]:
    tombstone = {
        "id": "er_" + secrets.token_hex(10), "at": now, "reason": reason,
        "conversations": conversations, "messages": messages, "sessions": sessions,
        "consents": consents, "access_events": access, "policy_versions": versions,
    }
    await c.execute(
        "INSERT INTO erasures (id, at, reason, conversations, messages, sessions, consents, "
        "access_events, policy_versions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        tombstone["id"], now, reason, conversations, messages, sessions, consents, access,
        json.dumps(versions),
    )
    return tombstone


_CONVERSATIONS = "SELECT id FROM conversations WHERE customer_id = $1 ORDER BY created_at FOR UPDATE"
_SESSIONS = "SELECT id FROM visitor_sessions WHERE customer_id = $1 ORDER BY id FOR UPDATE"


async def erase(c: Connection, customer_id: str, reason: str, now: str) -> dict[str, Any]:
    """Delete the customer and everything of theirs; keep a tombstone without PII.

    Rows are locked children first, the customer last, the order every other write takes them
    in (a message locks its conversation, then touches the customer; an access record its
    session, then the customer), so an erasure and a write never wait for each other in a
    circle. Locking the conversations waits for messages being stored in them; later ones find
    them gone."""
    await c.fetch(_CONVERSATIONS, customer_id)
    await c.fetch(_SESSIONS, customer_id)
    held = await c.fetchval("SELECT legal_hold FROM customers WHERE id = $1 FOR UPDATE",
                            customer_id)
    if held is None:
        await customer(c, customer_id)  # raises NotFound
    if held:
        raise LegalHold()
    # Again, now that nothing new can be opened for the customer (that takes its row first).
    conversations = [r[0] for r in await c.fetch(_CONVERSATIONS, customer_id)]
    sessions = [r[0] for r in await c.fetch(_SESSIONS, customer_id)]
    messages = int(await c.fetchval(
        "SELECT COUNT(*) FROM messages WHERE conversation_id = ANY($1::text[])", conversations))
    versions = sorted({r[0] for r in await c.fetch(
        "SELECT policy_version FROM consents WHERE customer_id = $1", customer_id)})
    consents = rowcount(await c.execute(
        "DELETE FROM consents WHERE customer_id = $1 OR session_id = ANY($2::text[])",
        customer_id, sessions))
    access = rowcount(await c.execute(
        "DELETE FROM access_events WHERE session_id = ANY($1::text[])", sessions))
    await c.execute("DELETE FROM messages WHERE conversation_id = ANY($1::text[])", conversations)
    await c.execute("DELETE FROM conversations WHERE id = ANY($1::text[])", conversations)
    await c.execute("DELETE FROM visitor_sessions WHERE customer_id = $1", customer_id)
    await c.execute("DELETE FROM customers WHERE id = $1", customer_id)
    tombstone = await _tombstone(c, now, reason, len(conversations), messages, len(sessions),
                                 consents, access, versions)
    return {**tombstone, "session_ids": sessions, "conversation_ids": conversations}


async def erase_bare_session(c: Connection, session_id: str, reason: str, now: str
                             ) -> dict[str, Any]:
    """Erase a session that never became a customer: its consents and access records."""
    versions = sorted({r[0] for r in await c.fetch(
        "SELECT policy_version FROM consents WHERE session_id = $1", session_id)})
    consents = rowcount(await c.execute("DELETE FROM consents WHERE session_id = $1", session_id))
    access = rowcount(await c.execute("DELETE FROM access_events WHERE session_id = $1",
                                      session_id))
    await c.execute("DELETE FROM visitor_sessions WHERE id = $1", session_id)
    tombstone = await _tombstone(c, now, reason, 0, 0, 1, consents, access, versions)
    return {**tombstone, "session_ids": [session_id], "conversation_ids": []}


async def erase_session(c: Connection, session_id: str, reason: str, now: str) -> dict[str, Any]:
    row = await c.fetchrow("SELECT customer_id FROM visitor_sessions WHERE id = $1 FOR UPDATE",
                           session_id)
    if row is None:
        raise NotFound("That session has ended.")
    if row[0] is not None:
        return await erase(c, row[0], reason, now)
    return await erase_bare_session(c, session_id, reason, now)


async def purge(c: Connection, *, account_cutoff: str, access_cutoff: str,
                conversation_cutoff: str, dry_run: bool, now: str) -> dict[str, Any]:
    held = "SELECT id FROM customers WHERE legal_hold"
    access = rowcount(await c.execute(
        f"""DELETE FROM access_events WHERE at <= $1 AND session_id NOT IN (
            SELECT id FROM visitor_sessions WHERE customer_id IN ({held}))""",
        access_cutoff))
    old = [r[0] for r in await c.fetch(
        f"""SELECT id FROM conversations WHERE status = 'closed' AND closed_at <= $1
            AND customer_id NOT IN ({held}) ORDER BY closed_at FOR UPDATE""",
        conversation_cutoff)]
    closed_messages = rowcount(await c.execute(
        "DELETE FROM messages WHERE conversation_id = ANY($1::text[])", old))
    await c.execute("DELETE FROM conversations WHERE id = ANY($1::text[])", old)
    stale = [r[0] for r in await c.fetch(
        """SELECT id FROM customers cu WHERE NOT legal_hold AND last_active_at <= $1
           AND NOT EXISTS (SELECT 1 FROM conversations WHERE customer_id = cu.id
                           AND status <> 'closed')
           ORDER BY last_active_at""", account_cutoff)]
    erased = [await erase(c, customer_id, "retention", now) for customer_id in stale]
    # Sessions that consented but never gave details: kept no longer than accounts.
    bare = [r[0] for r in await c.fetch(
        "SELECT id FROM visitor_sessions WHERE customer_id IS NULL AND last_seen_at <= $1",
        account_cutoff)]
    erased += [await erase_bare_session(c, sid, "retention", now) for sid in bare]
    # Staff sign-in records hold addresses too: kept as long as access records.
    logins = rowcount(await c.execute("DELETE FROM login_events WHERE at <= $1", access_cutoff))
    result = {
        "counts": {"accounts": len(stale), "sessions_without_details": len(bare),
                   "closed_conversations": len(old), "access_events": access,
                   "staff_sign_ins": logins,
                   "messages": closed_messages + sum(e["messages"] for e in erased)},
        "session_ids": [s for e in erased for s in e["session_ids"]],
        "conversation_ids": old + [x for e in erased for x in e["conversation_ids"]],
    }
    if dry_run:
        raise DryRun(result)
    return result
